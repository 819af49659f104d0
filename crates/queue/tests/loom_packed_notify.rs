//! Loom model: packed virtqueue event suppression, no lost wakeup (virtio 1.2 §2.8.10).
//!
//! Each side has an event suppression structure the *other* side reads (§2.8.10 "Event
//! Suppression Structure Format": `le16 desc_event_off_wrap; le16 desc_event_flags`): the
//! device's (read by the driver before kicking) and the driver's (read by the device before
//! interrupting). The handshake is a store-buffering (Dekker) pattern:
//!
//! - the *producer* publishes a descriptor (flags with `PUBLISH`), `notify_fence()`, reads the
//!   consumer's structure (`flags`, then `off_wrap`, with `FIELD`) and notifies iff `flags` is
//!   ENABLE, or DESC and the descriptor at `off_wrap` was just published
//!   (`vireo_spec::packed::need_event`, which the ring code calls; the formula of Linux
//!   `virtqueue_kick_prepare_packed` / QEMU `vring_packed_need_event`);
//! - the *consumer*, going idle, writes its structure (`off_wrap` = its next position and wrap
//!   counter, then `flags` = DESC or ENABLE, with `FIELD`), `notify_fence()`, re-reads the
//!   descriptor's flags with `CONSUME` and sleeps iff nothing new is there.
//!
//! What it proves, with `vireo_queue::ordering`: the consumer never sleeps with a descriptor
//! pending while the producer decided not to notify, in both directions (driver→device:
//! available descriptors; device→driver: used descriptors) and both modes (ENABLE;
//! DESC with VIRTIO_F_EVENT_IDX). The consumer starts busy (`flags` = DISABLE, `off_wrap` 0).
//! Both sides are at slot 1 of a 2-slot ring with wrap counter 1, so publishing moves the
//! producer across the wrap and the DESC comparison runs with the wrap-counter correction.
//!
//! Negative controls: either side's fence removed, or weakened to `AcqRel`/`Release`, lets
//! both read the other's old value (a lost wakeup).
#![cfg(loom)]
// Tests: a panic is a failed test; ring indices are bounded by the model's constants.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod loom_model;

use loom::sync::atomic::{AtomicU16, Ordering::AcqRel, Ordering::Release};
use loom::sync::Arc;
use loom::thread;
use loom_model::packed::{
    need_event, WrapCounter, FLAGS_DESC as EVENT_DESC, FLAGS_DISABLE as EVENT_DISABLE,
    FLAGS_ENABLE as EVENT_ENABLE, WRAP_BIT,
};
use loom_model::{check, Coverage, Orderings};

const SIZE: u16 = 2;
/// Slot the producer publishes and the consumer waits on.
const SLOT: u16 = 1;
/// Wrap counter of that slot's lap (both sides).
const WRAP: WrapCounter = WrapCounter::INITIAL;

/// Which ring direction the model plays.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// Driver makes slot 1 available; device waits (device event suppression structure).
    Avail,
    /// Device marks slot 1 used; driver waits (driver event suppression structure).
    Used,
}

impl Direction {
    /// Slot 1's flags before the producer publishes.
    fn before(self) -> u16 {
        match self {
            Direction::Avail => 0, // never used
            Direction::Used => WRAP.avail_flags(),
        }
    }
    /// Slot 1's flags the producer publishes.
    fn published(self) -> u16 {
        match self {
            Direction::Avail => WRAP.avail_flags(),
            Direction::Used => WRAP.used_flags(),
        }
    }
    /// Does the consumer see work in `flags`?
    fn pending(self, flags: u16) -> bool {
        match self {
            Direction::Avail => WRAP.is_avail(flags),
            Direction::Used => WRAP.is_used(flags),
        }
    }
}

/// How the consumer asks for notifications (§2.8.10).
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `flags` = ENABLE.
    Enable,
    /// `flags` = DESC, `off_wrap` = the descriptor to be notified about (EVENT_IDX).
    Desc,
}

#[derive(Debug)]
struct Shared {
    /// Slot 1's descriptor flags.
    desc_flags: AtomicU16,
    /// The consumer's `desc_event_off_wrap`.
    off_wrap: AtomicU16,
    /// The consumer's `desc_event_flags`.
    event_flags: AtomicU16,
}

/// Producer: publish slot 1, fence, decide whether to notify.
fn producer(s: &Shared, dir: Direction, o: Orderings) -> bool {
    s.desc_flags.store(dir.published(), o.publish);
    // After publishing slot 1 (the last), the producer's position wraps to 0 and its wrap
    // counter flips; one descriptor was published.
    let (new, wrap) = ((SLOT + 1) % SIZE, WRAP.toggled());
    o.notify_fence();
    match s.event_flags.load(o.field) {
        EVENT_DESC => need_event(s.off_wrap.load(o.field), new, wrap, 1, SIZE),
        flags => flags != EVENT_DISABLE,
    }
}

/// Consumer going idle: ask for a notification, fence, re-check. True: it sleeps.
fn consumer(s: &Shared, dir: Direction, mode: Mode, o: Orderings) -> bool {
    match mode {
        Mode::Enable => s.event_flags.store(EVENT_ENABLE, o.field),
        Mode::Desc => {
            s.off_wrap.store(SLOT | WRAP.bit() << 15, o.field);
            s.event_flags.store(EVENT_DESC, o.field);
        }
    }
    o.notify_fence();
    !dir.pending(s.desc_flags.load(o.consume))
}

fn model(dir: Direction, mode: Mode, prod: Orderings, cons: Orderings) -> Coverage {
    let coverage = Coverage::default();
    let cov = coverage.clone();
    check(move || {
        let s = Arc::new(Shared {
            desc_flags: AtomicU16::new(dir.before()),
            off_wrap: AtomicU16::new(0),
            event_flags: AtomicU16::new(EVENT_DISABLE),
        });
        let c = s.clone();
        let t = thread::spawn(move || consumer(&c, dir, mode, cons));
        let notified = producer(&s, dir, prod);
        let sleeps = t.join().unwrap();
        assert!(
            notified || !sleeps, // sleeping implies being notified
            "lost wakeup ({dir:?}, {mode:?}): the consumer went idle with a descriptor pending \
             and the producer did not notify"
        );
        cov.hit((u16::from(sleeps), u16::from(notified)));
    });
    coverage
}

/// (consumer sleeps, producer notifies) outcomes that must be reached.
const REACHED: &[(u16, u16)] = &[(1, 1), (0, 1), (0, 0)];
const SPEC: Orderings = Orderings::SPEC;

#[test]
fn need_event_crosses_the_wrap() {
    // The device asked for slot 1 of lap 1; the driver just published it and wrapped to 0.
    let off_wrap = SLOT | WRAP_BIT;
    assert!(need_event(off_wrap, 0, WrapCounter::ZERO, 1, SIZE));
    // A request for slot 0 of lap 0 (the next one) is not yet due.
    assert!(!need_event(0, 0, WrapCounter::ZERO, 1, SIZE));
}

#[test]
fn avail_enable_no_lost_wakeup() {
    model(Direction::Avail, Mode::Enable, SPEC, SPEC).assert_reached(REACHED);
}

#[test]
fn avail_desc_event_no_lost_wakeup() {
    model(Direction::Avail, Mode::Desc, SPEC, SPEC).assert_reached(REACHED);
}

#[test]
fn used_enable_no_lost_wakeup() {
    model(Direction::Used, Mode::Enable, SPEC, SPEC).assert_reached(REACHED);
}

#[test]
fn used_desc_event_no_lost_wakeup() {
    model(Direction::Used, Mode::Desc, SPEC, SPEC).assert_reached(REACHED);
}

/// Bug shown: without the driver's fence its read of the device's event flags may pass its
/// descriptor flags store: it reads DISABLE while the device re-reads the old flags.
#[test]
#[should_panic(expected = "lost wakeup (Avail, Enable)")]
fn negative_avail_enable_driver_fence_removed() {
    model(Direction::Avail, Mode::Enable, Orderings::fence(None), SPEC);
}

/// Bug shown: an `AcqRel` fence on the device does not order its event write before its
/// re-read of the descriptor flags.
#[test]
#[should_panic(expected = "lost wakeup (Avail, Desc)")]
fn negative_avail_desc_device_fence_acqrel() {
    model(
        Direction::Avail,
        Mode::Desc,
        SPEC,
        Orderings::fence(Some(AcqRel)),
    );
}

/// Bug shown: a `Release` fence on the device before reading the driver's event structure.
#[test]
#[should_panic(expected = "lost wakeup (Used, Desc)")]
fn negative_used_desc_device_fence_release() {
    model(
        Direction::Used,
        Mode::Desc,
        Orderings::fence(Some(Release)),
        SPEC,
    );
}

/// Bug shown: the driver re-enabling notifications without a fence re-reads stale flags.
#[test]
#[should_panic(expected = "lost wakeup (Used, Enable)")]
fn negative_used_enable_driver_fence_removed() {
    model(Direction::Used, Mode::Enable, SPEC, Orderings::fence(None));
}
