//! `cargo xtask bench`: core's criterion benches, and a one-line summary read from
//! criterion's `estimates.json` files.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cargo;
use crate::util::{repo_root, run, Error};

/// The bench group of `core/benches/session.rs`.
const GROUP: &str = "session";
/// Frames per second the core should reach, as a fraction of raw HMAC-SHA256 over the same
/// bytes.
const TARGET_RATIO: f64 = 0.33;

/// Runs `cargo bench -p txsock-core --bench session` and prints the transfer-frame rate,
/// the raw HMAC-SHA256 rate over one frame's bytes, and their ratio.
pub fn bench() -> Result<(), Error> {
    let root = repo_root();
    let started = SystemTime::now();
    run(cargo(&root).args(["bench", "-p", "txsock-core", "--bench", GROUP]))?;

    let group = criterion_dir(&root).join(GROUP);
    let frames = rate(&group.join("transfer_frame"), started)?;
    let (bytes, hmacs) = hmac_rate(&group.join("hmac_sha256"), started)?;
    let ratio = frames / hmacs;
    println!(
        "core: {frames:.0} transfer frames/s; raw HMAC-SHA256 ({bytes} bytes): {hmacs:.0}/s; \
         ratio {ratio:.2} (target >= {TARGET_RATIO:.2})"
    );
    Ok(())
}

/// Where criterion writes: `$CARGO_TARGET_DIR/criterion`, or `target/criterion`.
fn criterion_dir(root: &Path) -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    root.join(target).join("criterion")
}

/// Elements per second of the benchmark in `dir`, which must have run since `since`.
fn rate(dir: &Path, since: SystemTime) -> Result<f64, Error> {
    let path = dir.join("new").join("estimates.json");
    let fresh = fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .is_ok_and(|modified| modified >= since);
    if !fresh {
        return Err(Error::new(format!(
            "{} was not written by this run",
            path.display()
        )));
    }
    let json = fs::read_to_string(&path)
        .map_err(|error| Error::new(format!("cannot read {}: {error}", path.display())))?;
    let nanos = time_per_iteration(&json)
        .ok_or_else(|| Error::new(format!("no estimate in {}", path.display())))?;
    Ok(1e9 / nanos)
}

/// The HMAC bench is `hmac_sha256/<bytes>`: the newest one this run wrote, and its rate.
fn hmac_rate(dir: &Path, since: SystemTime) -> Result<(usize, f64), Error> {
    let entries = fs::read_dir(dir)
        .map_err(|error| Error::new(format!("cannot read {}: {error}", dir.display())))?;
    let mut best: Option<(SystemTime, usize, PathBuf)> = None;
    for entry in entries.flatten() {
        let Some(bytes) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let estimates = entry.path().join("new").join("estimates.json");
        let Ok(modified) = fs::metadata(&estimates).and_then(|meta| meta.modified()) else {
            continue;
        };
        if modified >= since && best.as_ref().is_none_or(|(newest, ..)| modified > *newest) {
            best = Some((modified, bytes, entry.path()));
        }
    }
    let (_, bytes, path) = best.ok_or_else(|| {
        Error::new(format!(
            "no {}/<bytes> estimates written by this run",
            dir.display()
        ))
    })?;
    Ok((bytes, rate(&path, since)?))
}

/// Nanoseconds per iteration from criterion's `estimates.json`: the slope of the linear
/// regression where criterion computed one (it prints that as `time:`), else the mean.
fn time_per_iteration(json: &str) -> Option<f64> {
    estimate(json, "slope").or_else(|| estimate(json, "mean"))
}

/// `point_estimate` of the top-level object `key` (`None` if absent or `null`). A small
/// scan instead of a JSON parser: xtask has no dependencies.
fn estimate(json: &str, key: &str) -> Option<f64> {
    let quoted = format!("\"{key}\"");
    let after_key = &json[json.find(&quoted)? + quoted.len()..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    if value.starts_with("null") {
        return None;
    }
    let field = "\"point_estimate\"";
    let rest = &value[value.find(field)? + field.len()..];
    let number = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = number
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(number.len());
    number[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_SLOPE: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":6.1e3,"upper_bound":7e3},"point_estimate":6600.5,"standard_error":10.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":6500.0,"standard_error":1.0},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":5.0,"standard_error":1.0},"slope":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":6708.25,"standard_error":1.0},"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":99.0,"standard_error":1.0}}"#;

    #[test]
    fn prefers_the_slope() {
        assert_eq!(time_per_iteration(WITH_SLOPE), Some(6708.25));
    }

    #[test]
    fn falls_back_to_the_mean_when_the_slope_is_null() {
        let json = WITH_SLOPE.replace(
            r#""slope":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":6708.25,"standard_error":1.0}"#,
            r#""slope": null"#,
        );
        assert_eq!(time_per_iteration(&json), Some(6600.5));
    }

    #[test]
    fn reads_exponents_and_rejects_garbage() {
        assert_eq!(
            estimate(r#"{"mean":{"point_estimate":5.5e2}}"#, "mean"),
            Some(550.0)
        );
        assert_eq!(estimate(r#"{"mean":{"point_estimate":"x"}}"#, "mean"), None);
        assert_eq!(estimate("{}", "mean"), None);
    }
}
