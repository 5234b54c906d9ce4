//! Settings precedence: command-line flag, then `TXSOCK_*` environment variable, then
//! `txsock.toml`, then the built-in default.
//!
//! clap handles flags, environment and defaults. The settings file is applied by turning
//! each of its keys into a `--key=value` argument for every option whose value would
//! otherwise be a default, and parsing again, so the file gets exactly the same validation
//! and error messages as the command line.

use crate::Cli;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::ffi::OsString;

/// Parses the command line, applying the settings file; exits with clap's message on error.
pub fn parse() -> Cli {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

fn leaf(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => leaf(sub),
        None => matches,
    }
}

/// The definition of the subcommand that `matches` selected.
fn leaf_command<'a>(command: &'a clap::Command, matches: &ArgMatches) -> &'a clap::Command {
    match matches.subcommand() {
        Some((name, sub)) => command
            .find_subcommand(name)
            .map_or(command, |c| leaf_command(c, sub)),
        None => command,
    }
}

/// Parses `argv` with the settings file named by `--config` (default `txsock.toml`, which
/// may be absent; a file named explicitly must exist).
pub fn parse_from(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(argv.clone())?;
    let path = Cli::from_arg_matches(&matches)?.config;
    // The file configures the server and the admin commands. The tools (client, mitm, demo)
    // would otherwise pick up server keys that share a name with theirs (`listen`,
    // `min-iterations`) and mean something else.
    if matches!(matches.subcommand_name(), Some("client" | "mitm" | "demo")) {
        return Cli::from_arg_matches(&matches);
    }
    let explicit = matches!(
        matches.value_source("config"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Cli::from_arg_matches(&matches);
        }
        Err(e) => {
            return Err(command.error(
                clap::error::ErrorKind::Io,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    let table: toml::Table = text.parse().map_err(|e| {
        command.error(
            clap::error::ErrorKind::InvalidValue,
            format!("{}: {e}", path.display()),
        )
    })?;
    let sub = leaf(&matches);
    // Every option the subcommand defines, including those without a default (absent from
    // its matches), such as `db` and `tls-cert`.
    let known: Vec<String> = leaf_command(&command, &matches)
        .get_arguments()
        .map(|arg| arg.get_id().as_str().to_string())
        .collect();
    let serving = matches!(matches.subcommand_name(), Some("serve"));
    let mut extra = argv;
    for (key, value) in &table {
        let id = key.replace('-', "_");
        if !known.contains(&id) {
            if serving {
                return Err(command.error(
                    clap::error::ErrorKind::UnknownArgument,
                    format!("{}: unknown setting `{key}`", path.display()),
                ));
            }
            // Admin commands take only the storage settings; the rest is for `serve`.
            continue;
        }
        if matches!(
            sub.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(command.error(
                    clap::error::ErrorKind::InvalidValue,
                    format!(
                        "{}: `{key}` must be a string, number or boolean, not {other}",
                        path.display()
                    ),
                ))
            }
        };
        extra.push(format!("--{}={text}", key.replace('_', "-")).into());
    }
    let matches = command.try_get_matches_from_mut(extra)?;
    Cli::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_fills_defaults_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "max-connections = 7\nlisten = \"127.0.0.1:9\"\nidle_timeout = 5\n",
        )
        .unwrap();
        let cli = parse_from(args(&[
            "txsock",
            "--config",
            file.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:1",
        ]))
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.max_connections, 7);
        assert_eq!(s.idle_timeout, 5);
        assert_eq!(s.listen.port(), 1);
    }

    #[test]
    fn unknown_setting_is_an_error_for_serve() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "max-conections = 7\n").unwrap();
        let err = parse_from(args(&[
            "txsock",
            "--config",
            file.to_str().unwrap(),
            "serve",
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown setting `max-conections`"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_in_file_is_reported_like_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "max-frame = 5\n").unwrap();
        assert!(parse_from(args(&[
            "txsock",
            "--config",
            file.to_str().unwrap(),
            "serve"
        ]))
        .is_err());
    }

    #[test]
    fn missing_default_file_is_fine_but_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        assert!(parse_from(args(&[
            "txsock",
            "--config",
            missing.to_str().unwrap(),
            "serve"
        ]))
        .is_err());
    }
}
