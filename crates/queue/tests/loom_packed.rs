//! Loom model: packed virtqueue publish/consume (virtio 1.2 §2.8).
//!
//! What it proves, for every interleaving and every value the C11 memory model lets a load
//! return (loom), with the orderings of `vireo_queue::ordering`:
//!
//! - **Available direction** (virtio 1.2 §2.8.21 "Supplying Buffers to The Device",
//!   §2.8.21.3.1: the driver "MUST perform a suitable memory barrier" before the flags update):
//!   the driver writes a descriptor's `addr`, `len`, `id` with `FIELD`, then its `flags` (AVAIL =
//!   wrap counter, USED = its inverse, §2.8.1) with `PUBLISH`; a device that loads `flags` with
//!   `CONSUME`, finds the descriptor available in its wrap, then reads the body with `FIELD`,
//!   sees the driver's values.
//! - **Used direction** (§2.8.7 "Used Descriptors", §2.8.22 "Receiving Used Buffers From The
//!   Device"): the device writes `id` and `len` (bytes written) into the same slot, then `flags`
//!   (AVAIL = USED = its wrap counter) with `PUBLISH`; a driver loading `flags` with `CONSUME`
//!   sees them.
//!
//! The ring (4 slots) starts mid-lap: slots 0 and 1 were used earlier in this lap (flags
//! AVAIL|USED, wrap counter 1), both sides are at slot 2 with wrap counter 1. Buffers go to
//! slots 2 and 3 in wrap 1, then slot 0 in wrap 0, so the model also checks that the stale flags
//! of the previous lap are never mistaken for a new available or used descriptor (§2.8.1).
//!
//! Negative controls: the driver's `PUBLISH` or the device's `CONSUME` weakened to `Relaxed`
//! lets the device read a stale descriptor body; the device's `PUBLISH` or the driver's
//! `CONSUME` weakened lets the driver read a stale used `id`/`len`.
#![cfg(loom)]
// Tests: a panic is a failed test; ring indices are bounded by the model's constants.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod loom_model;

use loom::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use loom::sync::Arc;
use loom::thread;
use loom_model::packed::{WrapCounter, F_AVAIL, F_USED};
use loom_model::{check, Coverage, Orderings};

/// Ring size.
const SIZE: u16 = 4;
/// Buffers the driver makes available (two in this lap, one in the next).
const BUFFERS: u16 = 3;
/// Slot where both sides start.
const START_SLOT: u16 = 2;
/// Wrap counter both sides start with (virtio 1.2 §2.8.1: initialised to 1; this lap is the
/// first whose slot 1 is used).
const START_WRAP: WrapCounter = WrapCounter::INITIAL;

const DEVICE_STALE: &str = "device read an available packed descriptor the driver had not";
const DRIVER_STALE: &str = "driver read a used packed descriptor the device had not";

/// Guest address the driver gives buffer `b`.
fn addr_of(b: u16) -> u64 {
    0x1000 + u64::from(b) * 0x100
}
/// Length the driver gives buffer `b`.
fn len_of(b: u16) -> u32 {
    512 + u32::from(b)
}
/// Buffer id the driver gives buffer `b` (§2.8.6: free-form, echoed by the device).
fn id_of(b: u16) -> u16 {
    10 + b
}
/// Bytes the device reports written for buffer `b` (differs from `len_of`, the stale value).
fn written_of(b: u16) -> u32 {
    64 + u32::from(b)
}

/// (slot, wrap counter) of the `b`-th buffer from the start position.
fn position(b: u16) -> (usize, WrapCounter) {
    let raw = START_SLOT + b;
    let wrap = if raw / SIZE % 2 == 0 {
        START_WRAP
    } else {
        START_WRAP.toggled()
    };
    (usize::from(raw % SIZE), wrap)
}

/// The descriptor ring (§2.8.13 "Packed Virtqueue Descriptor": addr, len, id, flags).
#[derive(Debug)]
struct PackedRing {
    addr: [AtomicU64; SIZE as usize],
    len: [AtomicU32; SIZE as usize],
    id: [AtomicU16; SIZE as usize],
    flags: [AtomicU16; SIZE as usize],
}

impl PackedRing {
    fn new() -> Self {
        PackedRing {
            addr: core::array::from_fn(|_| AtomicU64::new(0)),
            len: core::array::from_fn(|_| AtomicU32::new(0)),
            id: core::array::from_fn(|_| AtomicU16::new(0)),
            // Slots before START_SLOT used in this lap (wrap 1); the others never used.
            flags: core::array::from_fn(|i| {
                AtomicU16::new(if i < usize::from(START_SLOT) {
                    START_WRAP.used_flags()
                } else {
                    0
                })
            }),
        }
    }
}

/// Driver: make `BUFFERS` buffers available, then poll the used descriptors once.
/// Returns how many used descriptors it saw.
fn driver(ring: &PackedRing, o: Orderings) -> u16 {
    for b in 0..BUFFERS {
        let (slot, wrap) = position(b);
        ring.addr[slot].store(addr_of(b), o.field);
        ring.len[slot].store(len_of(b), o.field);
        ring.id[slot].store(id_of(b), o.field);
        ring.flags[slot].store(wrap.avail_flags(), o.publish);
    }
    for b in 0..BUFFERS {
        let (slot, wrap) = position(b);
        if !wrap.is_used(ring.flags[slot].load(o.consume)) {
            return b;
        }
        let id = ring.id[slot].load(o.field);
        let len = ring.len[slot].load(o.field);
        assert!(
            id == id_of(b) && len == written_of(b),
            "{DRIVER_STALE} finished writing: buffer {b} is (id {id}, len {len})"
        );
    }
    BUFFERS
}

/// Device: take available descriptors in order, check each, mark it used.
/// Returns how many it took.
fn device(ring: &PackedRing, o: Orderings) -> u16 {
    for b in 0..BUFFERS {
        let (slot, wrap) = position(b);
        if !wrap.is_avail(ring.flags[slot].load(o.consume)) {
            return b;
        }
        let addr = ring.addr[slot].load(o.field);
        let len = ring.len[slot].load(o.field);
        let id = ring.id[slot].load(o.field);
        assert!(
            addr == addr_of(b) && len == len_of(b) && id == id_of(b),
            "{DEVICE_STALE} finished writing: buffer {b} is ({addr:#x}, {len}, id {id})"
        );
        ring.id[slot].store(id, o.field);
        ring.len[slot].store(written_of(b), o.field);
        ring.flags[slot].store(wrap.used_flags(), o.publish);
    }
    BUFFERS
}

/// Runs the model; returns the (device took, driver saw used) counts reached.
fn model(drv: Orderings, dev: Orderings) -> Coverage {
    let coverage = Coverage::default();
    let cov = coverage.clone();
    check(move || {
        let ring = Arc::new(PackedRing::new());
        let r = ring.clone();
        let d = thread::spawn(move || device(&r, dev));
        let driver_saw = driver(&ring, drv);
        let device_took = d.join().unwrap();
        cov.hit((device_took, driver_saw));
    });
    coverage
}

#[test]
fn packed_publish_consume_with_spec_orderings() {
    let reached = model(Orderings::SPEC, Orderings::SPEC);
    let all: Vec<(u16, u16)> = (0..=BUFFERS)
        .flat_map(|dev| (0..=dev).map(move |drv| (dev, drv)))
        .collect();
    reached.assert_reached(&all);
}

#[test]
fn packed_wrap_flags_are_distinct() {
    // The stale flags of the previous lap must be neither available nor used in the next one.
    let (one, zero) = (WrapCounter::INITIAL, WrapCounter::ZERO);
    assert!(!zero.is_avail(F_AVAIL | F_USED) && !zero.is_used(F_AVAIL | F_USED));
    assert!(zero.is_avail(zero.avail_flags()) && !zero.is_used(zero.avail_flags()));
    assert!(one.is_used(one.used_flags()) && !one.is_avail(one.used_flags()));
    assert_eq!(position(0), (2, one));
    assert_eq!(position(1), (3, one));
    assert_eq!(position(2), (0, zero));
}

/// Bug shown: flags stored Relaxed do not order the body writes before them, so the device
/// sees the descriptor available with a zeroed body.
#[test]
#[should_panic(expected = "device read an available packed descriptor the driver had not")]
fn negative_driver_publish_relaxed() {
    model(Orderings::publish(Relaxed), Orderings::SPEC);
}

/// Bug shown: flags loaded Relaxed do not order the body reads after them.
#[test]
#[should_panic(expected = "device read an available packed descriptor the driver had not")]
fn negative_device_consume_relaxed() {
    model(Orderings::SPEC, Orderings::consume(Relaxed));
}

/// Bug shown: used flags stored Relaxed let the driver read the driver's own stale `len`.
#[test]
#[should_panic(expected = "driver read a used packed descriptor the device had not")]
fn negative_device_publish_relaxed() {
    model(Orderings::SPEC, Orderings::publish(Relaxed));
}

/// Bug shown: used flags loaded Relaxed let the driver read `len` before the device wrote it.
#[test]
#[should_panic(expected = "driver read a used packed descriptor the device had not")]
fn negative_driver_consume_relaxed() {
    model(Orderings::consume(Relaxed), Orderings::SPEC);
}
