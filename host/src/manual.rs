//! `txsock completions SHELL` and `txsock man`: shell completion scripts and a man page,
//! generated from the same clap definitions as `--help`, so they never disagree with it.

use crate::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "txsock", &mut script);
    emit(&script)
}

/// Writes the man page `txsock(1)` (roff) to stdout: the command, then a section per
/// subcommand with its description and options (as `txsock SUBCOMMAND --help` has them).
pub fn man() -> Result<()> {
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        writeln!(page, ".SH \"TXSOCK {}\"", sub.get_name().to_uppercase())?;
        let man = clap_mangen::Man::new(sub.clone());
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        if sub.has_subcommands() {
            man.render_subcommands_section(&mut page)?;
        }
    }
    emit(&page)
}

/// Writes `bytes` to stdout; a reader that stopped early (`| head`) is not an error.
fn emit(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}
