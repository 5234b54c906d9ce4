//! Settings precedence: command-line flag, then `TXSOCK_*` environment variable, then
//! `txsock.toml`, then the built-in default. The server, the admin commands and the client
//! all read it; `mitm`, `demo` and `stress` take flags only.
//!
//! One file holds both sides: keys under `[serve]` are the server's (the admin commands
//! read its storage keys, `data-dir`, `db` and `min-iterations`), keys under `[client]` are
//! the client's. Keys outside any section are the server's too: that is the older flat
//! format, still read. Keys are long option names (`max-connections`, or
//! `max_connections`).
//!
//! clap handles flags, environment and defaults. The settings file is applied by turning
//! each of its keys into a `--key=value` argument for every option whose value would
//! otherwise be a default, and parsing again, so the file gets exactly the same validation
//! and error messages as the command line, prefixed with the file and the key.

use crate::Cli;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::path::Path;

/// Parses the command line, applying the settings file; exits with clap's message on error.
pub fn parse() -> Cli {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

/// Parses a number of seconds, or a duration such as `90s`, `5m`, `1h 30m` (humantime), as
/// whole seconds: the `--idle-timeout` family of flags and settings.
pub fn seconds(text: &str) -> Result<u64, String> {
    if let Ok(n) = text.trim().parse::<u64>() {
        return Ok(n);
    }
    let duration = duration(text, "seconds")?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("`{text}` is not a whole number of seconds"));
    }
    Ok(duration.as_secs())
}

/// Parses a number of milliseconds, or a duration such as `500ms`, `2s`, as whole
/// milliseconds (`--lockout-base-ms`).
pub fn millis(text: &str) -> Result<u64, String> {
    if let Ok(n) = text.trim().parse::<u64>() {
        return Ok(n);
    }
    let duration = duration(text, "milliseconds")?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("`{text}` is not a whole number of milliseconds"));
    }
    u64::try_from(duration.as_millis()).map_err(|_| format!("`{text}` is too long"))
}

fn duration(text: &str, unit: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is neither a number of {unit} nor a duration such as 90s, 5m or 1h ({e})")
    })
}

/// Every option the invoked (sub)command takes, its own and its parents', as its id and
/// whether it takes a value (`--json` takes none).
fn options(command: &clap::Command, matches: &ArgMatches) -> Vec<(String, bool)> {
    let mut ids: Vec<(String, bool)> = command
        .get_arguments()
        .map(|a| {
            (
                a.get_id().as_str().to_string(),
                a.get_action().takes_values(),
            )
        })
        .collect();
    if let Some((name, sub_matches)) = matches.subcommand() {
        if let Some(sub) = command.find_subcommand(name) {
            ids.extend(options(sub, sub_matches));
        }
    }
    ids
}

fn leaf(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => leaf(sub),
        None => matches,
    }
}

/// Which part of the settings file a command reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `serve`: `[serve]` and the flat keys; an unknown key is an error.
    Serve,
    /// `user`, `account`, `ledger`: the keys of `[serve]` and the flat keys they take.
    Admin,
    /// `client`: `[client]`; an unknown key is an error.
    Client,
}

/// One setting from the file: its key, where it was (`[client] ` or empty) and its value
/// as command-line text.
struct Setting {
    key: String,
    section: &'static str,
    value: String,
}

/// The settings of the file that apply to `side`, section keys after flat ones.
fn settings(table: &toml::Table, side: Side, path: &Path) -> Result<Vec<Setting>, String> {
    let mut flat = Vec::new();
    let mut sections: Vec<(&'static str, &toml::Table)> = Vec::new();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("serve", toml::Value::Table(t)) => sections.push(("serve", t)),
            ("client", toml::Value::Table(t)) => sections.push(("client", t)),
            (_, toml::Value::Table(_)) => {
                return Err(format!(
                    "{}: unknown section [{key}] (the sections are [serve] and [client])",
                    path.display()
                ))
            }
            _ => flat.push((key, value)),
        }
    }
    let mut out = Vec::new();
    let mut add = |section: &'static str, key: &String, value: &toml::Value| {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(format!(
                    "{}: {section}`{key}` must be a string, number or boolean, not {other}",
                    path.display()
                ))
            }
        };
        out.push(Setting {
            key: key.clone(),
            section,
            value: text,
        });
        Ok(())
    };
    if side != Side::Client {
        for (key, value) in flat {
            add("", key, value)?;
        }
    }
    for (name, section) in sections {
        let wanted = match side {
            Side::Client => name == "client",
            Side::Serve | Side::Admin => name == "serve",
        };
        if wanted {
            let label = if name == "client" {
                "[client] "
            } else {
                "[serve] "
            };
            for (key, value) in section {
                add(label, key, value)?;
            }
        }
    }
    Ok(out)
}

/// Parses `argv` with the settings file named by `--config` (default `txsock.toml`, which
/// may be absent; a file named explicitly must exist).
pub fn parse_from(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(argv.clone())?;
    let path = Cli::from_arg_matches(&matches)?.config;
    let side = match matches.subcommand_name() {
        Some("serve") => Side::Serve,
        Some("user" | "account" | "ledger") => Side::Admin,
        Some("client") => Side::Client,
        // The tools (mitm, demo, stress) take flags only: server keys that share a name
        // with theirs (`listen`, `min-iterations`) mean something else there.
        _ => return Cli::from_arg_matches(&matches),
    };
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
    let settings = settings(&table, side, &path)
        .map_err(|message| command.error(clap::error::ErrorKind::InvalidValue, message))?;
    let sub = leaf(&matches);
    let known = options(&command, &matches);
    // Client options are global to its subcommands, so they go right after `client`
    // (before a `transfer`'s open-ended TO AMOUNT list); the others go last.
    let insert_at = match side {
        Side::Client => argv
            .iter()
            .skip(1)
            .position(|a| a == "client")
            .map_or(argv.len(), |i| i + 2),
        Side::Serve | Side::Admin => argv.len(),
    };
    let mut chosen: Vec<(&Setting, OsString)> = Vec::new();
    for setting in &settings {
        let id = setting.key.replace('-', "_");
        let Some(&(_, takes_value)) = known.iter().find(|(known, _)| *known == id) else {
            if side != Side::Admin {
                return Err(command.error(
                    clap::error::ErrorKind::UnknownArgument,
                    format!(
                        "{}: unknown setting {}`{}`",
                        path.display(),
                        setting.section,
                        setting.key
                    ),
                ));
            }
            // Admin commands take only the storage settings; the rest is for `serve`.
            continue;
        };
        if matches!(
            sub.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        // A later one (a section's) replaces an earlier one (a flat key) of the same name.
        chosen.retain(|(s, _)| s.key.replace('-', "_") != id);
        let flag = setting.key.replace('_', "-");
        let arg = if takes_value {
            format!("--{flag}={}", setting.value)
        } else {
            // A switch such as `json = true`: present when true, absent when false.
            match setting.value.as_str() {
                "true" => format!("--{flag}"),
                "false" => continue,
                other => {
                    return Err(command.error(
                        clap::error::ErrorKind::InvalidValue,
                        format!(
                            "{}: {}`{}` = {other:?}: must be true or false",
                            path.display(),
                            setting.section,
                            setting.key
                        ),
                    ))
                }
            }
        };
        chosen.push((setting, arg.into()));
    }
    let with = |args: &[&OsString]| -> Vec<OsString> {
        let mut all = argv.clone();
        for (i, arg) in args.iter().enumerate() {
            all.insert(insert_at + i, (*arg).clone());
        }
        all
    };
    let all: Vec<&OsString> = chosen.iter().map(|(_, a)| a).collect();
    match command.try_get_matches_from_mut(with(&all)) {
        Ok(matches) => Cli::from_arg_matches(&matches),
        Err(e) => {
            // Name the file and the key whose value clap refused.
            for (setting, arg) in &chosen {
                if let Err(one) = command.try_get_matches_from_mut(with(&[arg])) {
                    let reason = one.to_string();
                    let reason = reason
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim_start_matches("error: ");
                    return Err(command.error(
                        one.kind(),
                        format!(
                            "{}: {}`{}` = {:?}: {reason}",
                            path.display(),
                            setting.section,
                            setting.key,
                            setting.value
                        ),
                    ));
                }
            }
            Err(e)
        }
    }
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

    fn write(dir: &tempfile::TempDir, text: &str) -> String {
        let file = dir.path().join("t.toml");
        std::fs::write(&file, text).unwrap();
        file.to_str().unwrap().to_string()
    }

    #[test]
    fn sections_split_one_file_between_server_and_client() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "max-connections = 7\n[serve]\nidle-timeout = \"5m\"\nmax-connections = 9\n\
             [client]\nuser = \"alice\"\ntimeout = \"1m\"\njson = true\n",
        );
        let cli = parse_from(args(&["txsock", "--config", &file, "serve"])).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        assert_eq!((s.max_connections, s.idle_timeout), (9, 300));
        let cli = parse_from(args(&["txsock", "--config", &file, "client", "balance"])).unwrap();
        let Command::Client(c) = cli.command else {
            panic!()
        };
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.timeout, 60);
        assert!(c.json);
    }

    #[test]
    fn a_bad_value_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "[client]\ntimeout = \"soon\"\n");
        let err = parse_from(args(&["txsock", "--config", &file, "client", "balance"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{file}: [client] `timeout`")) && err.contains("soon"),
            "{err}"
        );
        let file = write(&dir, "[tls]\nx = 1\n");
        let err = parse_from(args(&["txsock", "--config", &file, "serve"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown section [tls]"), "{err}");
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(seconds("90"), Ok(90));
        assert_eq!(seconds("5m"), Ok(300));
        assert_eq!(seconds("1h 30m"), Ok(5400));
        assert!(seconds("1500ms").is_err());
        assert_eq!(millis("250"), Ok(250));
        assert_eq!(millis("2s"), Ok(2000));
        assert!(seconds("soon").is_err());
    }
}
