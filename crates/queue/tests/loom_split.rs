//! Loom model: split virtqueue publish/consume (virtio 1.2 §2.7).
//!
//! What it proves, for every interleaving and every value the C11 memory model lets a load
//! return (loom), with the orderings of `vireo_queue::ordering`:
//!
//! - **Available direction** (virtio 1.2 §2.7.13 "Supplying Buffers to The Device"): the driver
//!   writes a descriptor (`addr`, `len`) and the available-ring entry with `FIELD`, then stores
//!   `avail.idx` with `PUBLISH` (§2.7.13.4: "memory barrier" before the index update); a device
//!   that loads `avail.idx` with `CONSUME` and then reads the ring entry and descriptor with
//!   `FIELD` sees the driver's values for every entry the index covers.
//! - **Used direction** (§2.7.8 "The Virtqueue Used Ring", §2.7.14 "Receiving Used Buffers From
//!   The Device"): the device writes the used element (`id`, `len`) with `FIELD` then stores
//!   `used.idx` with `PUBLISH`; a driver that loads `used.idx` with `CONSUME` sees the elements.
//!
//! The indices start at `u16::MAX - 1` so the free-running 16-bit index wraps inside the model
//! (§2.7.6: `idx` "wraps naturally at 65536"). Ring of 4 slots, 3 buffers.
//!
//! Negative controls (`#[should_panic(expected = ...)]`, each matching this model's own
//! assertion message): weakening the driver's `PUBLISH` or the device's `CONSUME` to `Relaxed`
//! lets the device read a stale descriptor; weakening the device's `PUBLISH` or the driver's
//! `CONSUME` lets the driver read a stale used element.
#![cfg(loom)]
// Tests: a panic is a failed test; ring indices are bounded by the model's constants.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod loom_model;

use loom::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use loom::sync::Arc;
use loom::thread;
use loom_model::{check, Coverage, Orderings};

/// Ring size (a power of two, so `idx % SIZE` stays continuous across the 16-bit wrap).
const SIZE: u16 = 4;
/// Buffers the driver makes available.
const BUFFERS: u16 = 3;
/// First index: the 16-bit index wraps after the second buffer.
const START: u16 = u16::MAX - 1;

const DEVICE_STALE: &str = "device read an available descriptor the driver had not finished";
const DRIVER_STALE: &str = "driver read a used element the device had not finished";

/// Guest address the driver gives buffer `b` (distinct from the initial zeroed memory).
fn addr_of(b: u16) -> u64 {
    0x1000 + u64::from(b) * 0x100
}
/// Length the driver gives buffer `b`.
fn len_of(b: u16) -> u32 {
    512 + u32::from(b)
}
/// Bytes the device reports written for buffer `b`.
fn written_of(b: u16) -> u32 {
    64 + u32::from(b)
}
/// Slot of a free-running index.
fn slot(idx: u16) -> usize {
    usize::from(idx % SIZE)
}

/// The split ring's shared memory, zeroed (§2.7.5 descriptors, §2.7.6 available ring,
/// §2.7.8 used ring). Only the fields the handshake involves.
#[derive(Debug)]
struct SplitRing {
    desc_addr: [AtomicU64; SIZE as usize],
    desc_len: [AtomicU32; SIZE as usize],
    avail_idx: AtomicU16,
    avail_ring: [AtomicU16; SIZE as usize],
    used_idx: AtomicU16,
    used_id: [AtomicU32; SIZE as usize],
    used_len: [AtomicU32; SIZE as usize],
}

impl SplitRing {
    fn new() -> Self {
        SplitRing {
            desc_addr: core::array::from_fn(|_| AtomicU64::new(0)),
            desc_len: core::array::from_fn(|_| AtomicU32::new(0)),
            avail_idx: AtomicU16::new(START),
            avail_ring: core::array::from_fn(|_| AtomicU16::new(0)),
            used_idx: AtomicU16::new(START),
            used_id: core::array::from_fn(|_| AtomicU32::new(0)),
            used_len: core::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// Driver: make `BUFFERS` buffers available one by one, then poll the used ring once and check
/// every used element `used.idx` covers. Returns how many it saw.
fn driver(ring: &SplitRing, o: Orderings) -> u16 {
    for b in 0..BUFFERS {
        let idx = START.wrapping_add(b);
        let head = b % SIZE; // descriptor id
        ring.desc_addr[usize::from(head)].store(addr_of(b), o.field);
        ring.desc_len[usize::from(head)].store(len_of(b), o.field);
        ring.avail_ring[slot(idx)].store(head, o.field);
        ring.avail_idx.store(idx.wrapping_add(1), o.publish);
    }
    let used = ring.used_idx.load(o.consume);
    for b in 0..used.wrapping_sub(START) {
        let idx = START.wrapping_add(b);
        let id = ring.used_id[slot(idx)].load(o.field);
        let len = ring.used_len[slot(idx)].load(o.field);
        assert!(
            id == u32::from(b % SIZE) && len == written_of(b),
            "{DRIVER_STALE}: used.idx {used:#x}, element {b} is (id {id}, len {len})"
        );
    }
    used.wrapping_sub(START)
}

/// Device: poll `avail.idx` once, check each available descriptor, return it as used.
/// Returns how many it saw.
fn device(ring: &SplitRing, o: Orderings) -> u16 {
    let avail = ring.avail_idx.load(o.consume);
    for b in 0..avail.wrapping_sub(START) {
        let idx = START.wrapping_add(b);
        let head = ring.avail_ring[slot(idx)].load(o.field);
        assert!(head == b % SIZE, "{DEVICE_STALE}: ring entry {b} is {head}");
        let addr = ring.desc_addr[usize::from(head)].load(o.field);
        let len = ring.desc_len[usize::from(head)].load(o.field);
        assert!(
            addr == addr_of(b) && len == len_of(b),
            "{DEVICE_STALE}: avail.idx {avail:#x}, descriptor {head} is ({addr:#x}, {len})"
        );
        ring.used_id[slot(idx)].store(u32::from(head), o.field);
        ring.used_len[slot(idx)].store(written_of(b), o.field);
        ring.used_idx.store(idx.wrapping_add(1), o.publish);
    }
    avail.wrapping_sub(START)
}

/// Runs the model; returns the (device saw, driver saw) counts reached.
fn model(drv: Orderings, dev: Orderings) -> Coverage {
    let coverage = Coverage::default();
    let cov = coverage.clone();
    check(move || {
        let ring = Arc::new(SplitRing::new());
        let r = ring.clone();
        let d = thread::spawn(move || device(&r, dev));
        let driver_saw = driver(&ring, drv);
        let device_saw = d.join().unwrap();
        cov.hit((device_saw, driver_saw));
    });
    coverage
}

#[test]
fn split_publish_consume_with_spec_orderings() {
    let reached = model(Orderings::SPEC, Orderings::SPEC);
    // The device saw any number of buffers; the driver saw every count up to that.
    let all: Vec<(u16, u16)> = (0..=BUFFERS)
        .flat_map(|dev| (0..=dev).map(move |drv| (dev, drv)))
        .collect();
    reached.assert_reached(&all);
}

/// Bug shown: `avail.idx` stored Relaxed does not order the descriptor writes before it, so
/// the device sees the new index and a zeroed descriptor (§2.7.13.4 barrier missing).
#[test]
#[should_panic(expected = "device read an available descriptor the driver had not finished")]
fn negative_driver_publish_relaxed() {
    model(Orderings::publish(Relaxed), Orderings::SPEC);
}

/// Bug shown: `avail.idx` loaded Relaxed does not order the descriptor reads after it.
#[test]
#[should_panic(expected = "device read an available descriptor the driver had not finished")]
fn negative_device_consume_relaxed() {
    model(Orderings::SPEC, Orderings::consume(Relaxed));
}

/// Bug shown: `used.idx` stored Relaxed lets the driver see the index before the element.
#[test]
#[should_panic(expected = "driver read a used element the device had not finished")]
fn negative_device_publish_relaxed() {
    model(Orderings::SPEC, Orderings::publish(Relaxed));
}

/// Bug shown: `used.idx` loaded Relaxed lets the driver read the element before it is written.
#[test]
#[should_panic(expected = "driver read a used element the device had not finished")]
fn negative_driver_consume_relaxed() {
    model(Orderings::consume(Relaxed), Orderings::SPEC);
}
