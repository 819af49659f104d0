//! Loom model: split virtqueue notification suppression, no lost wakeup (virtio 1.2 §2.7.10).
//!
//! The handshake is a store-buffering (Dekker) pattern. The *producer* publishes an index, then
//! (`notify_fence()`) reads the *consumer's* suppression field to decide whether to notify; the
//! consumer, going idle, writes its suppression field, then (`notify_fence()`) re-reads the
//! producer's index to see whether work arrived meanwhile. What it proves, with the orderings of
//! `vireo_queue::ordering` (`PUBLISH`, `CONSUME`, `FIELD`, `NOTIFY_FENCE`): in no execution does
//! the consumer go to sleep with an entry pending while the producer decided not to notify.
//!
//! - **Available side, event index** (§2.7.10 "Used Buffer Notification Suppression" and
//!   §2.7.7.2 with VIRTIO_F_EVENT_IDX; Linux `virtqueue_kick_prepare_split`, vhost
//!   `vhost_enable_notify`): driver stores `avail.idx`, fence, reads `avail_event` and kicks iff
//!   `vring_need_event(avail_event, new, old)`; the device writes `avail_event = last_seen`,
//!   fence, re-reads `avail.idx`.
//! - **Used side, event index** (§2.7.10; Linux `virtqueue_enable_cb_prepare` +
//!   `virtqueue_poll`): device stores `used.idx`, fence, reads `used_event`; the driver writes
//!   `used_event = last_used`, fence, re-reads `used.idx`.
//! - **Flags variants** (§2.7.7 `VIRTQ_AVAIL_F_NO_INTERRUPT`, §2.7.10 `VIRTQ_USED_F_NO_NOTIFY`):
//!   the consumer clears its NO_* flag instead of writing an event index; the producer notifies
//!   iff the flag is clear.
//!
//! The consumer starts busy: its event index is stale (`START - 1`, already passed) or its
//! NO_* flag is set, so the producer notifies only if it sees the consumer's idle-time write.
//! Indices start at `u16::MAX` so `vring_need_event` runs across the 16-bit wrap.
//!
//! Negative controls: removing either side's fence, or weakening it to `AcqRel`/`Release`
//! (which do not order a store before a later load), lets both sides read the other's old
//! value: the consumer sleeps and the producer does not notify, a lost wakeup.
#![cfg(loom)]
// Tests: a panic is a failed test; ring indices are bounded by the model's constants.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod loom_model;

use loom::sync::atomic::{AtomicU16, Ordering::AcqRel, Ordering::Release};
use loom::sync::Arc;
use loom::thread;
use loom_model::{check, Coverage, Orderings};
use vireo_spec::split::{avail::F_NO_INTERRUPT, need_event, used::F_NO_NOTIFY};

/// The consumer has processed entries up to here; the producer publishes one more.
const START: u16 = u16::MAX;

const LOST_WAKEUP: &str = "lost wakeup";

/// How the consumer asks for notifications.
#[derive(Debug, Clone, Copy)]
enum Suppression {
    /// VIRTIO_F_EVENT_IDX: `avail_event` / `used_event`.
    EventIdx,
    /// No EVENT_IDX: the consumer's NO_NOTIFY / NO_INTERRUPT flag (`no_flag`).
    Flags { no_flag: u16 },
}

/// Which ring direction the model plays (only names the failure message).
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// Driver produces `avail.idx`, device consumes (avail_event, `used.flags` NO_NOTIFY).
    Avail,
    /// Device produces `used.idx`, driver consumes (used_event, `avail.flags` NO_INTERRUPT).
    Used,
}

/// The two shared words of the handshake.
#[derive(Debug)]
struct Shared {
    /// `avail.idx` (Avail) or `used.idx` (Used), written by the producer.
    idx: AtomicU16,
    /// `avail_event`/`used_event`, or `used.flags`/`avail.flags`, written by the consumer.
    suppress: AtomicU16,
}

/// Producer: publish one entry, fence, decide whether to notify.
fn producer(s: &Shared, how: Suppression, o: Orderings) -> bool {
    let (old, new) = (START, START.wrapping_add(1));
    s.idx.store(new, o.publish);
    o.notify_fence();
    let word = s.suppress.load(o.field);
    match how {
        Suppression::EventIdx => need_event(word, new, old),
        Suppression::Flags { no_flag } => word & no_flag == 0,
    }
}

/// Consumer going idle: ask for a notification, fence, re-check for work. True: it sleeps.
fn consumer(s: &Shared, how: Suppression, o: Orderings) -> bool {
    let last_seen = START;
    match how {
        Suppression::EventIdx => s.suppress.store(last_seen, o.field),
        Suppression::Flags { .. } => s.suppress.store(0, o.field),
    }
    o.notify_fence();
    s.idx.load(o.consume) == last_seen
}

fn model(dir: Direction, how: Suppression, prod: Orderings, cons: Orderings) -> Coverage {
    let coverage = Coverage::default();
    let cov = coverage.clone();
    check(move || {
        let busy = match how {
            // Stale: the consumer last asked to be notified at an index already passed.
            Suppression::EventIdx => START.wrapping_sub(1),
            Suppression::Flags { no_flag } => no_flag,
        };
        let s = Arc::new(Shared {
            idx: AtomicU16::new(START),
            suppress: AtomicU16::new(busy),
        });
        let c = s.clone();
        let t = thread::spawn(move || consumer(&c, how, cons));
        let notified = producer(&s, how, prod);
        let sleeps = t.join().unwrap();
        assert!(
            notified || !sleeps, // sleeping implies being notified
            "{LOST_WAKEUP} ({dir:?}, {how:?}): the consumer went idle with an entry pending \
             and the producer did not notify"
        );
        cov.hit((u16::from(sleeps), u16::from(notified)));
    });
    coverage
}

/// (consumer sleeps, producer notifies): both "sleeps and is notified" and "sees the work"
/// must be reached, or the model would be vacuous.
const REACHED: &[(u16, u16)] = &[(1, 1), (0, 1), (0, 0)];

const FLAGS_AVAIL: Suppression = Suppression::Flags {
    no_flag: F_NO_NOTIFY,
};
const FLAGS_USED: Suppression = Suppression::Flags {
    no_flag: F_NO_INTERRUPT,
};
const SPEC: Orderings = Orderings::SPEC;

#[test]
fn avail_event_idx_no_lost_wakeup() {
    model(Direction::Avail, Suppression::EventIdx, SPEC, SPEC).assert_reached(REACHED);
}

#[test]
fn used_event_idx_no_lost_wakeup() {
    model(Direction::Used, Suppression::EventIdx, SPEC, SPEC).assert_reached(REACHED);
}

#[test]
fn avail_no_notify_flag_no_lost_wakeup() {
    model(Direction::Avail, FLAGS_AVAIL, SPEC, SPEC).assert_reached(REACHED);
}

#[test]
fn used_no_interrupt_flag_no_lost_wakeup() {
    model(Direction::Used, FLAGS_USED, SPEC, SPEC).assert_reached(REACHED);
}

/// Bug shown: without the driver's fence, its `avail_event` read may pass its `avail.idx`
/// store; the driver reads the stale event while the device re-reads the old index.
#[test]
#[should_panic(expected = "lost wakeup (Avail, EventIdx)")]
fn negative_avail_event_idx_driver_fence_removed() {
    let weak = Orderings::fence(None);
    model(Direction::Avail, Suppression::EventIdx, weak, SPEC);
}

/// Bug shown: an `AcqRel` fence on the device does not order its `avail_event` store before
/// its `avail.idx` re-read (store-load), so the device can miss the new index.
#[test]
#[should_panic(expected = "lost wakeup (Avail, EventIdx)")]
fn negative_avail_event_idx_device_fence_acqrel() {
    let weak = Orderings::fence(Some(AcqRel));
    model(Direction::Avail, Suppression::EventIdx, SPEC, weak);
}

/// Bug shown: a `Release` fence on the device before reading `used_event` does not order that
/// read after the `used.idx` store.
#[test]
#[should_panic(expected = "lost wakeup (Used, EventIdx)")]
fn negative_used_event_idx_device_fence_release() {
    let weak = Orderings::fence(Some(Release));
    model(Direction::Used, Suppression::EventIdx, weak, SPEC);
}

/// Bug shown: the driver re-enabling callbacks without a fence may re-read a stale `used.idx`.
#[test]
#[should_panic(expected = "lost wakeup (Used, EventIdx)")]
fn negative_used_event_idx_driver_fence_removed() {
    let weak = Orderings::fence(None);
    model(Direction::Used, Suppression::EventIdx, SPEC, weak);
}

/// Bug shown: with an `AcqRel` fence the driver may read a stale NO_NOTIFY flag.
#[test]
#[should_panic(expected = "lost wakeup (Avail, Flags")]
fn negative_avail_no_notify_driver_fence_acqrel() {
    let weak = Orderings::fence(Some(AcqRel));
    model(Direction::Avail, FLAGS_AVAIL, weak, SPEC);
}

/// Bug shown: the driver clearing NO_INTERRUPT without a fence may re-read a stale `used.idx`.
#[test]
#[should_panic(expected = "lost wakeup (Used, Flags")]
fn negative_used_no_interrupt_driver_fence_removed() {
    let weak = Orderings::fence(None);
    model(Direction::Used, FLAGS_USED, SPEC, weak);
}
