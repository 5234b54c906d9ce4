//! Power cuts at every flash write and erase of a transfer scenario: the flash ledger never
//! loses an acknowledged transfer, never half-applies one, conserves money, and answers a
//! re-sent id with its original outcome (see `txsock_firmware_sim::power_cut`).

use txsock_firmware_sim::power_cut::{exhaustive, random, small_scenario, Tear};

/// Every step of the small scenario, cut three ways: not done, torn at a word, torn in a word.
#[test]
fn a_cut_at_any_write_or_erase_loses_and_duplicates_nothing() {
    let report = exhaustive(&small_scenario()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.steps > 20, "{report}");
    assert!(
        report.erases > 0,
        "the scenario must make the store reuse a sector: {report}"
    );
    assert_eq!(report.cuts, 3 * report.steps, "{report}");
    println!("{report}");
}

/// A few random runs with several torn cuts each, both tear models (longer ones:
/// `txsock-firmware-sim --power-cuts N --seed S [--torn-bits]`).
#[test]
fn random_torn_cuts_in_longer_runs() {
    let report = random(6, 30, 1, Tear::Words).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.cuts > 0, "{report}");
    println!("{report}");
    let report = random(6, 30, 2, Tear::Bits).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.cuts > 0, "{report}");
    println!("{report}");
}
