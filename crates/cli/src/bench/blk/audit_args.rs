//! `vireo bench blk` numbers from the user: sizes with suffixes that overflow, zero and huge
//! counts, durations no clock can hold. Each is refused with a message, never a panic or an
//! impossible allocation (CONTRIBUTING: "No panics on peer input"; the user is a peer).
#![allow(clippy::unwrap_used)]

use clap::Parser;

use super::{check_numbers, parse_size, pool_bytes, BlkBenchArgs, MAX_BS};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: BlkBenchArgs,
}

fn args(extra: &[&str]) -> Result<BlkBenchArgs, clap::Error> {
    let argv = ["bench", "--socket", "/nonexistent"].iter().chain(extra);
    Cli::try_parse_from(argv).map(|c| c.args)
}

fn refused(extra: &[&str]) -> String {
    match args(extra) {
        Err(e) => e.to_string(),
        Ok(a) => check_numbers(&a).unwrap_err().to_string(),
    }
}

#[test]
fn sizes_with_suffixes_that_overflow_are_refused() {
    assert_eq!(parse_size("4k"), Ok(4096));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("17179869183g"), Ok(17_179_869_183 << 30));
    assert!(parse_size("17179869184g")
        .unwrap_err()
        .contains("too large"));
    assert!(parse_size("18446744073709551616").is_err());
    assert!(parse_size("").is_err());
    assert!(parse_size("k").is_err());
    assert!(parse_size("-1k").is_err());
    assert!(parse_size("4t").unwrap_err().contains("suffix"));
    // A multi-byte character at the end is not a suffix and not a number: no slicing panic.
    assert!(parse_size("4é").is_err());
}

#[test]
fn block_sizes_must_be_positive_sector_multiples_of_at_most_1g() {
    assert!(check_numbers(&args(&["--bs", "4k"]).unwrap()).is_ok());
    assert!(check_numbers(&args(&["--bs", "1g"]).unwrap()).is_ok());
    for bad in [
        "0",
        "511",
        "4097",
        "2g",
        "16777215g",
        "18446744073709551104",
    ] {
        let msg = refused(&["--bs", bad]);
        assert!(msg.contains("--bs"), "{bad}: {msg}");
    }
}

#[test]
fn zero_queue_depth_and_zero_queues_are_refused() {
    assert!(refused(&["--qd", "0"]).contains("--qd"));
    assert!(refused(&["--queues", "0"]).contains("--queues"));
    // Out of u16: clap says so.
    assert!(args(&["--qd", "65536"]).is_err());
}

#[test]
fn durations_no_clock_holds_are_refused() {
    for bad in ["0", "-1", "NaN", "inf", "1e30", "86400.5"] {
        let msg = refused(&[&format!("--seconds={bad}")]);
        assert!(msg.contains("--seconds"), "{bad}: {msg}");
    }
    assert!(check_numbers(&args(&["--seconds", "86400"]).unwrap()).is_ok());
    assert!(check_numbers(&args(&["--seconds", "0.001"]).unwrap()).is_ok());
}

#[test]
fn the_pool_size_is_checked_arithmetic() {
    assert_eq!(pool_bytes(100, 2, 512, 3), Some((4096 + 2 * 4096) * 3));
    assert_eq!(pool_bytes(0, 1, 4096, 1), Some(4096));
    // The largest accepted request size times the largest queue depth and count still fits
    // a 64-bit usize; anything that does not is None, not a wrapped small number.
    assert!(pool_bytes(1 << 20, 65535, MAX_BS, 65535).is_some());
    assert_eq!(pool_bytes(usize::MAX, 1, 512, 1), None);
    assert_eq!(pool_bytes(0, 1, u64::MAX, 1), None);
    assert_eq!(pool_bytes(0, usize::MAX, 4096, 1), None);
    assert_eq!(pool_bytes(0, 2, 1 << 62, 2), None);
}
