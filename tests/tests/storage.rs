//! Storage errors in words (issue 19, "A service a supervisor can run"): every command names
//! the database, says what failed and what to do, and exits with the same status for the
//! same failure: 2 when the database is missing, damaged, not writable or on a full disk
//! (nothing was done), 3 when the ledger refused a valid admin request. `ledger check`
//! alone answers a damaged database with its verdict, 1, since finding damage is its job.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use txsock_e2e::*;

const ITERS: &str = "4096";

/// Every command that uses an existing data directory `data`, as (name, args, stdin).
fn every_command(data: &str) -> Vec<(&'static str, Vec<String>, &'static str)> {
    let args = |list: &[&str]| -> Vec<String> {
        list.iter()
            .map(|s| s.to_string())
            .chain(["--data-dir".to_string(), data.to_string()])
            .collect()
    };
    vec![
        ("user list", args(&["user", "list"]), ""),
        ("ledger check", args(&["ledger", "check"]), ""),
        ("user lock", args(&["user", "lock", "alice"]), ""),
        ("user unlock", args(&["user", "unlock", "alice"]), ""),
        (
            "account deposit",
            args(&["account", "deposit", "alice", "1"]),
            "",
        ),
        (
            "user add",
            args(&[
                "user",
                "add",
                "bob",
                "--password-stdin",
                "--iterations",
                ITERS,
                "--min-iterations",
                ITERS,
            ]),
            "bob-password\n",
        ),
        (
            "serve",
            args(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--min-iterations",
                ITERS,
            ]),
            "",
        ),
    ]
}

/// Checks that `out` is a storage failure of `database`, explained with `advice`.
fn assert_storage_failure(name: &str, out: &Output, database: &str, advice: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert!(
        err.contains(database),
        "{name} does not name {database}: {err}"
    );
    assert!(
        err.contains("what to do:") && err.contains(advice),
        "{name} does not say what to do ({advice:?}): {err}"
    );
}

#[test]
fn a_file_that_is_not_a_database_fails_every_command_alike() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let db = data.join("txsock.db");
    std::fs::write(&db, vec![0xa5u8; 8192]).expect("write garbage");
    let db_text = db.to_str().expect("utf-8").to_string();
    for (name, args, stdin) in every_command(data.to_str().expect("utf-8")) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = txsock_in_with_stdin(temp.path(), &args, stdin);
        if name == "ledger check" {
            // Finding damage is what the check is for: its verdict (exit 1), not a failure.
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{stdout}{}", stderr(&out));
            assert!(
                stdout.contains("ledger CORRUPT") && stdout.contains("restore"),
                "{stdout}"
            );
            continue;
        }
        assert_storage_failure(name, &out, &format!("database {db_text}"), "restore");
    }
    assert_eq!(
        std::fs::read(&db).expect("read"),
        vec![0xa5u8; 8192],
        "a command changed the damaged file"
    );
}

#[test]
fn a_missing_data_directory_fails_every_reading_command_alike() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("txsock-dta");
    for (name, args, stdin) in every_command(data.to_str().expect("utf-8")) {
        if matches!(name, "user add" | "serve") {
            continue; // these create a new ledger
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = txsock_in_with_stdin(temp.path(), &args, stdin);
        assert_storage_failure(name, &out, "does not exist", "--data-dir");
        assert!(!data.exists(), "{name} created the data directory");
    }
}

#[test]
fn refusals_exit_3_and_invalid_input_exits_2() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let data_arg = data.to_str().expect("utf-8");
    let add = |user: &str, iterations: &str| {
        txsock_in_with_stdin(
            temp.path(),
            &[
                "user",
                "add",
                user,
                "--password-stdin",
                "--iterations",
                iterations,
                "--min-iterations",
                ITERS,
                "--data-dir",
                data_arg,
            ],
            "a-long-password\n",
        )
    };
    assert!(add("alice", ITERS).status.success());
    let again = add("alice", ITERS);
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    assert!(stderr(&again).contains("already exists"));
    let weak = add("carol", "10");
    assert_eq!(weak.status.code(), Some(2), "{}", stderr(&weak));
    for args in [
        &["account", "deposit", "nobody", "1"][..],
        &["user", "lock", "nobody"][..],
    ] {
        let mut args = args.to_vec();
        args.extend(["--data-dir", data_arg]);
        let out = txsock_in_with_stdin(temp.path(), &args, "");
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("no user named nobody"));
        assert!(
            !stderr(&out).contains("what to do"),
            "a refusal is not a failure"
        );
    }
}

/// Whether this process may run a command in a private mount namespace (root, unshare).
fn can_mount() -> bool {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A ledger on a 400 KiB tmpfs (in a mount namespace of its own, gone when the shell
/// exits) that a file then fills: writing commands and `serve` say the disk is full.
#[test]
fn a_full_disk_is_named_with_what_to_do() {
    if !can_mount() {
        eprintln!("skipped: cannot create a mount namespace (needs root and unshare)");
        return;
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let mount = temp.path().join("disk");
    std::fs::create_dir(&mount).expect("mkdir");
    let bin = txsock_bin();
    let bin = bin.to_str().expect("utf-8");
    // Each command's stderr and status are written outside the small disk.
    let script = format!(
        "set -u
mount -t tmpfs -o size=400k tmpfs disk || exit 99
echo a-long-password | {bin} user add alice --password-stdin --iterations {ITERS} \
  --min-iterations {ITERS} --data-dir disk/data || exit 98
head -c 10M /dev/zero > disk/fill 2>/dev/null
{bin} account deposit alice 5 --data-dir disk/data 2> deposit.err; echo $? > deposit.status
echo a-long-password | {bin} user add bob --password-stdin --iterations {ITERS} \
  --min-iterations {ITERS} --data-dir disk/data 2> add.err; echo $? > add.status
{bin} serve --listen 127.0.0.1:0 --data-dir disk/data 2> serve.err > /dev/null; echo $? > serve.status
"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .current_dir(temp.path())
        .env_remove("TXSOCK_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run the script");
    assert!(
        out.status.success(),
        "setting up the full disk failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["deposit", "add", "serve"] {
        let read = |ext| std::fs::read_to_string(temp.path().join(format!("{name}.{ext}")));
        let status = read("status").expect("status written");
        let err = read("err").expect("stderr written");
        assert_eq!(status.trim(), "2", "{name}: {err}");
        assert!(err.contains("disk/data"), "{name} names nothing: {err}");
        assert!(
            err.contains("what to do: the disk is full"),
            "{name} does not say the disk is full: {err}"
        );
    }
}

#[test]
fn a_data_directory_this_user_cannot_write_is_named_with_what_to_do() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let data_arg = data.to_str().expect("utf-8");
    let add = txsock_in_with_stdin(
        temp.path(),
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--iterations",
            ITERS,
            "--min-iterations",
            ITERS,
            "--data-dir",
            data_arg,
        ],
        "a-long-password\n",
    );
    assert!(add.status.success(), "{}", stderr(&add));
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if let Err(why) = nobody_can_run_txsock(temp.path()) {
        eprintln!("skipped: {why}");
        return;
    }
    let out = as_nobody(
        temp.path(),
        &["account", "deposit", "alice", "5", "--data-dir", data_arg],
    )
    .expect("ran");
    assert_storage_failure(
        "account deposit as nobody",
        &out,
        &format!("database {}", data.join("txsock.db").display()),
        "not writable by this user",
    );
    // Reading needs no write permission.
    let out = as_nobody(temp.path(), &["user", "list", "--data-dir", data_arg]).expect("ran");
    assert!(out.status.success(), "{}", stderr(&out));
}
