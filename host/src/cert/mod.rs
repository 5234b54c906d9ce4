//! `txsock cert`: certificates for trying TLS. The machinery is [`crate::tls`]'s; this module
//! only reads the options and says what to run next.

use crate::tls::{dev_certificate, write_dev_certificate, DevFiles};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// The `txsock cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// For development and tests: a throwaway CA and a server certificate it signed. Writes
    /// `ca.pem` (what clients trust, `--ca`), `cert.pem` and `key.pem` (for `serve
    /// --tls-cert/--tls-key`), and prints the commands that use them. The CA's key is not
    /// kept, so the CA can sign nothing else. In production, use a certificate from your CA.
    SelfSigned(SelfSignedArgs),
}

/// Options of `txsock cert self-signed`.
#[derive(Debug, Args)]
pub struct SelfSignedArgs {
    /// A host name or IP address clients will connect by (repeatable: `--name localhost
    /// --name 127.0.0.1`).
    #[arg(long = "name", value_name = "HOST", required = true)]
    pub names: Vec<String>,

    /// Directory to write `ca.pem`, `cert.pem` and `key.pem` to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Days the certificate is valid from now.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,

    /// Replace the files if they exist (renewal: then SIGHUP the server to load them).
    #[arg(long)]
    pub force: bool,
}

/// Runs `txsock cert`.
pub fn run(command: CertCommand) -> Result<()> {
    let CertCommand::SelfSigned(args) = command;
    let files = DevFiles::in_dir(&args.out);
    if !args.force {
        for path in [&files.ca, &files.cert, &files.key] {
            if path.exists() {
                bail!(
                    "{} exists: choose another --out, or --force to replace it",
                    path.display()
                );
            }
        }
    }
    let certificate = dev_certificate(&args.names, args.days)?;
    let files = write_dev_certificate(&args.out, &certificate)?;
    let host = &args.names[0];
    // An IPv6 address needs brackets before the port.
    let server = if host.contains(':') {
        format!("[{host}]:11002")
    } else {
        format!("{host}:11002")
    };
    println!(
        "wrote {} (the CA that clients trust), {} and {} (owner-only), valid {} days for {}",
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
        args.days,
        args.names.join(", ")
    );
    println!(
        "serve:  txsock serve --listen {server} --tls-cert {} --tls-key {}",
        files.cert.display(),
        files.key.display()
    );
    println!(
        "client: txsock client --server {server} --tls --ca {} --user alice balance",
        files.ca.display()
    );
    println!(
        "python: python3 examples/python/txsock_client.py --server {server} --tls --ca {} --user alice balance",
        files.ca.display()
    );
    Ok(())
}
