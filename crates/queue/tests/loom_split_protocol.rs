//! Loom model: the split ring's available direction as a whole, publish/consume and the
//! event-index handshake together (virtio 1.2 §2.7.13, §2.7.10, §2.7.7.2).
//!
//! `loom_split.rs` and `loom_split_notify.rs` check each handshake alone; this model runs them
//! the way a driver and a device loop do, with the orderings of `vireo_queue::ordering`:
//!
//! - the driver makes `BUFFERS` buffers available one at a time (descriptor with `FIELD`,
//!   `avail.idx` with `PUBLISH`), and after each, `notify_fence()`, reads `avail_event` and
//!   kicks iff `vring_need_event(avail_event, new, old)` (§2.7.10; Linux
//!   `virtqueue_kick_prepare_split`);
//! - the device drains what `avail.idx` (`CONSUME`) covers, checking every descriptor, then goes
//!   idle: `avail_event = last_seen`, `notify_fence()`, re-reads `avail.idx`; if more arrived it
//!   drains again, otherwise it sleeps (vhost `vhost_enable_notify`).
//!
//! What it proves: every descriptor the device reads holds the driver's values, and if the
//! device sleeps with buffers still unseen, the driver kicked for one of them (so the kick
//! wakes it): no lost wakeup in the middle of a stream, not only for a single buffer.
//!
//! Negative controls: the device's fence removed (lost wakeup), the driver's fence weakened to
//! `AcqRel` (lost wakeup), the driver's `PUBLISH` weakened to `Relaxed` (stale descriptor).
#![cfg(loom)]
// Tests: a panic is a failed test; ring indices are bounded by the model's constants.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod loom_model;

use loom::sync::atomic::{AtomicU16, AtomicU64, Ordering::AcqRel, Ordering::Relaxed};
use loom::sync::Arc;
use loom::thread;
use loom_model::{check, Coverage, Orderings};
use vireo_spec::split::need_event;

const SIZE: u16 = 4;
const BUFFERS: u16 = 2;
/// First index: the 16-bit index wraps after the first buffer.
const START: u16 = u16::MAX;

const STALE: &str = "device read an available descriptor the driver had not finished";
const LOST_WAKEUP: &str = "lost wakeup mid-stream";

fn addr_of(b: u16) -> u64 {
    0x1000 + u64::from(b) * 0x100
}

fn slot(idx: u16) -> usize {
    usize::from(idx % SIZE)
}

#[derive(Debug)]
struct Ring {
    /// Descriptor `addr` (the descriptor id is the ring slot, so the available ring is implied).
    desc_addr: [AtomicU64; SIZE as usize],
    avail_idx: AtomicU16,
    avail_event: AtomicU16,
}

/// Driver: publish each buffer, then decide whether to kick. Returns, per buffer, whether it
/// kicked after publishing it (bit `b`).
fn driver(r: &Ring, o: Orderings) -> u16 {
    let mut kicks = 0;
    for b in 0..BUFFERS {
        let old = START.wrapping_add(b);
        let new = old.wrapping_add(1);
        r.desc_addr[slot(old)].store(addr_of(b), o.field);
        r.avail_idx.store(new, o.publish);
        o.notify_fence();
        if need_event(r.avail_event.load(o.field), new, old) {
            kicks |= 1 << b;
        }
    }
    kicks
}

/// Device: drain, go idle, re-check; returns how many buffers it had seen when it slept.
fn device(r: &Ring, o: Orderings) -> u16 {
    let mut last = START;
    // Each pass that does not sleep sees at least one new buffer: at most BUFFERS + 1 passes.
    for _ in 0..=BUFFERS {
        let avail = r.avail_idx.load(o.consume);
        while last != avail {
            let b = last.wrapping_sub(START);
            let addr = r.desc_addr[slot(last)].load(o.field);
            assert!(addr == addr_of(b), "{STALE}: buffer {b} has addr {addr:#x}");
            last = last.wrapping_add(1);
        }
        r.avail_event.store(last, o.field);
        o.notify_fence();
        if r.avail_idx.load(o.consume) == last {
            break; // sleep until kicked
        }
    }
    last.wrapping_sub(START)
}

fn model(drv: Orderings, dev: Orderings) -> Coverage {
    let coverage = Coverage::default();
    let cov = coverage.clone();
    check(move || {
        let r = Arc::new(Ring {
            desc_addr: core::array::from_fn(|_| AtomicU64::new(0)),
            avail_idx: AtomicU16::new(START),
            // Stale: the device last asked to be kicked at an index already passed.
            avail_event: AtomicU16::new(START.wrapping_sub(1)),
        });
        let r2 = r.clone();
        let d = thread::spawn(move || device(&r2, dev));
        let kicks = driver(&r, drv);
        let seen = d.join().unwrap();
        // Sleeping having seen `seen` buffers is fine iff all were seen or a buffer the device
        // had not seen was followed by a kick.
        let woken = kicks >> seen != 0;
        assert!(
            seen == BUFFERS || woken,
            "{LOST_WAKEUP}: the device slept having seen {seen} of {BUFFERS} buffers and the \
             driver's kicks were {kicks:#b}"
        );
        cov.hit((seen, kicks));
    });
    coverage
}

#[test]
fn split_stream_with_spec_orderings() {
    let reached = model(Orderings::SPEC, Orderings::SPEC);
    // The device slept after seeing none, one or both buffers, with the kicks that implies.
    reached.assert_reached(&[(0, 0b01), (1, 0b10), (2, 0b00), (2, 0b01), (2, 0b11)]);
}

/// Bug shown: the device going idle without a fence re-reads a stale `avail.idx` while the
/// driver reads the stale `avail_event`: it sleeps with a buffer pending, no kick.
#[test]
#[should_panic(expected = "lost wakeup mid-stream")]
fn negative_device_fence_removed() {
    model(Orderings::SPEC, Orderings::fence(None));
}

/// Bug shown: an `AcqRel` fence does not order the driver's `avail.idx` store before its
/// `avail_event` load.
#[test]
#[should_panic(expected = "lost wakeup mid-stream")]
fn negative_driver_fence_acqrel() {
    model(Orderings::fence(Some(AcqRel)), Orderings::SPEC);
}

/// Bug shown: `avail.idx` stored Relaxed: the device sees the index before the descriptor.
#[test]
#[should_panic(expected = "device read an available descriptor the driver had not finished")]
fn negative_driver_publish_relaxed() {
    model(Orderings::publish(Relaxed), Orderings::SPEC);
}
