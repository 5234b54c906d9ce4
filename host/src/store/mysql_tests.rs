//! The MySQL store's rules that need no server: how a failed statement is handled, the
//! pause between attempts, the sums MySQL returns as text. The store against a server is
//! the conformance suite's (`store/conformance.rs`). Written against cargo-mutants'
//! survivors (docs/TESTING.md).

use super::*;

fn server_error(code: u16) -> anyhow::Error {
    anyhow::Error::new(mysql::Error::MySqlError(mysql::error::MySqlError {
        state: "HY000".into(),
        message: format!("error {code}"),
        code,
    }))
}

/// A lock conflict (deadlock, lock wait timeout, snapshot conflict) and a duplicate key
/// run the batch again; a Galera node that is not ready and a broken connection reconnect;
/// any other server error fails the request, as does an error that is no MySQL error. The
/// cause is found however deep in the context chain it sits.
#[test]
fn each_failure_is_handled_as_its_kind_says() {
    for code in [1205, 1213, 1020, 1062] {
        assert_eq!(classify(&server_error(code)), Failure::Conflict, "{code}");
        assert_eq!(
            classify(&server_error(code).context("running the batch")),
            Failure::Conflict,
            "{code} under a context"
        );
    }
    assert_eq!(classify(&server_error(1047)), Failure::Connection);
    // Syntax, no such table, a CHECK constraint, data too long, unknown column, and the
    // codes next to the retried ones.
    for code in [
        1064, 1146, 4025, 1406, 1054, 1061, 1063, 1046, 1048, 1204, 1206, 1212, 1214,
    ] {
        assert_eq!(classify(&server_error(code)), Failure::Other, "{code}");
    }
    let connection_errors = [
        mysql::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        mysql::Error::DriverError(mysql::DriverError::ConnectTimeout),
        // (A `CodecError` cannot be made here: its type is not exported without the
        // driver's `derive` feature.)
    ];
    for error in connection_errors {
        let shown = error.to_string();
        let error = anyhow::Error::new(error).context("committing");
        assert_eq!(classify(&error), Failure::Connection, "{shown}");
    }
    assert_eq!(
        classify(&anyhow::Error::new(AbortedByCluster).context("checking")),
        Failure::Conflict
    );
    assert_eq!(
        classify(&anyhow!("the balance of alice changed")),
        Failure::Other
    );
    assert_eq!(
        classify(
            &anyhow::Error::new(mysql::Error::DriverError(
                mysql::DriverError::ConnectTimeout
            ))
            .context(AbortedByCluster.to_string())
        ),
        Failure::Connection,
        "a message is no cause"
    );
}

/// The pause before attempt `n + 1` is 1 ms up to 2^n ms, at most 0.5 s: random within
/// that, and reaching near its ceiling.
#[test]
fn the_pause_between_attempts_grows_to_half_a_second_and_stays_random() {
    for attempt in 0..=20 {
        let ceiling = (1u64 << attempt.min(9)).min(500);
        let pauses: Vec<u64> = (0..300)
            .map(|_| backoff(attempt).as_millis() as u64)
            .collect();
        let (low, high) = (pauses.iter().min().unwrap(), pauses.iter().max().unwrap());
        assert!(*low >= 1, "attempt {attempt}: {low} ms");
        assert!(
            *high <= ceiling,
            "attempt {attempt}: {high} ms over {ceiling}"
        );
        if ceiling >= 8 {
            assert!(*high > ceiling / 2, "attempt {attempt}: at most {high} ms");
            assert!(low < high, "attempt {attempt}: always {low} ms");
        }
    }
    assert_eq!(backoff(0), Duration::from_millis(1));
}

/// MySQL returns sums as decimal text: a sum beyond `i64` is read exactly, no sum (an
/// empty group) is zero, and anything that is not a number is an error that shows it.
#[test]
fn sums_are_read_exactly_and_garbage_is_an_error() {
    assert_eq!(big(None).unwrap(), 0);
    assert_eq!(big(Some("0".into())).unwrap(), 0);
    assert_eq!(
        big(Some("170141183460469231731687303715884105727".into())).unwrap(),
        i128::MAX
    );
    assert_eq!(big(Some("-42".into())).unwrap(), -42);
    let e = big(Some("12.5".into())).unwrap_err().to_string();
    assert!(e.contains("\"12.5\""), "{e}");
}

/// The brute-force abort says what happened, for the log.
#[test]
fn a_cluster_abort_says_so() {
    assert_eq!(
        AbortedByCluster.to_string(),
        "the transaction was rolled back by the cluster (brute-force abort)"
    );
}
