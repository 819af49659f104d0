//! Device side of the split ring: batching of used entries, used-buffer notification decisions
//! (virtio 1.2 §2.7.7) and available-buffer notification suppression (§2.7.10), including the
//! 16-bit wrap-around.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use device_fake::split::SplitFake;
use device_fake::{BufSpec, ChainSpec, FakeDriver};
use proptest::prelude::*;
use vireo_queue::device::{AvailChain, DeviceQueueState, Direction, SplitDeviceQueue};
use vireo_spec::split::{avail, used};
use vireo_spec::Features;

fn one_writable() -> ChainSpec {
    ChainSpec {
        direct: vec![BufSpec {
            len: 4,
            direction: Direction::DeviceWritable,
        }],
        indirect: None,
    }
}

/// A driver with `n` one-buffer chains published, and a fresh device queue over it.
fn setup(size: u16, features: Features, n: u16) -> (SplitFake, SplitDeviceQueue) {
    let mut drv = SplitFake::new(size, features);
    for _ in 0..n {
        drv.add(&one_writable(), 0).unwrap();
    }
    drv.publish();
    let q = SplitDeviceQueue::new(drv.mem(), &drv.config(), DeviceQueueState::default()).unwrap();
    (drv, q)
}

fn pop_all(q: &mut SplitDeviceQueue) -> Vec<AvailChain> {
    std::iter::from_fn(|| q.pop().unwrap()).collect()
}

/// virtio 1.2 §2.7.8: nothing the device adds is visible before `used.idx` moves, and it moves
/// once per batch.
#[test]
fn used_entries_are_invisible_until_published() {
    let (mut drv, mut q) = setup(8, Features::empty(), 3);
    let chains = pop_all(&mut q);
    assert_eq!(chains.len(), 3);
    for (i, c) in chains.iter().enumerate() {
        q.add_used(c, i as u32).unwrap();
        assert_eq!(drv.ring.used_idx(), 0, "nothing is published by add_used");
        assert_eq!(drv.reap(), None);
    }
    // The elements are in place already, only unpublished.
    assert_eq!(drv.ring.used_elem(2), (u32::from(chains[2].id()), 2));
    q.publish_used().unwrap();
    assert_eq!(drv.ring.used_idx(), 3);
    let reaped: Vec<_> = std::iter::from_fn(|| drv.reap())
        .map(|r| (r.id, r.len))
        .collect();
    let expected: Vec<_> = chains
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id(), i as u32))
        .collect();
    assert_eq!(reaped, expected);
}

/// Publishing with nothing added stores nothing (the test marks `used.idx` to see a store).
#[test]
fn empty_publish_stores_nothing() {
    let (drv, mut q) = setup(8, Features::empty(), 1);
    let c = q.pop().unwrap().unwrap();
    q.push_used(&c, 0).unwrap();
    let used = drv.ring.at(drv.ring.layout.used, 4);
    used.store_u16(used::IDX, 0x5a5a, vireo_queue::ordering::FIELD)
        .unwrap();
    q.publish_used().unwrap();
    assert_eq!(drv.ring.used_idx(), 0x5a5a);
}

/// Without EVENT_IDX: notify when something was published and VIRTQ_AVAIL_F_NO_INTERRUPT is
/// clear (virtio 1.2 §2.7.7).
#[test]
fn flags_decide_without_event_idx() {
    let (drv, mut q) = setup(8, Features::empty(), 4);
    let chains = pop_all(&mut q);
    q.push_used(&chains[0], 0).unwrap();
    assert!(q.needs_notification().unwrap());
    assert!(
        !q.needs_notification().unwrap(),
        "nothing new since the last decision"
    );
    q.push_used(&chains[1], 0).unwrap();
    drv.ring.set_avail_flags(avail::F_NO_INTERRUPT);
    assert!(
        !q.needs_notification().unwrap(),
        "the driver asked for no interrupts"
    );
    drv.ring.set_avail_flags(0);
    q.add_used(&chains[2], 0).unwrap();
    assert!(
        !q.needs_notification().unwrap(),
        "added but not published: nothing to notify"
    );
    q.publish_used().unwrap();
    assert!(q.needs_notification().unwrap());
    // used_event means nothing without EVENT_IDX.
    drv.ring.set_used_event(100);
    q.push_used(&chains[3], 0).unwrap();
    assert!(q.needs_notification().unwrap());
}

/// With EVENT_IDX: notify when `used.idx` passes `used_event` (virtio 1.2 §2.7.7,
/// `vring_need_event`); the NO_INTERRUPT flag is ignored.
#[test]
fn used_event_decides_with_event_idx() {
    let (drv, mut q) = setup(8, Features::EVENT_IDX, 5);
    let chains = pop_all(&mut q);
    drv.ring.set_avail_flags(avail::F_NO_INTERRUPT);
    drv.ring.set_used_event(2); // "interrupt me when entry 2 is used"
    q.push_used(&chains[0], 0).unwrap(); // used.idx 0 -> 1: the first decision notifies
    assert!(q.needs_notification().unwrap());
    q.push_used(&chains[1], 0).unwrap(); // 1 -> 2: entry 2 not used yet
    assert!(!q.needs_notification().unwrap());
    q.push_used(&chains[2], 0).unwrap(); // 2 -> 3: entry 2 used
    assert!(q.needs_notification().unwrap());
    q.push_used(&chains[3], 0).unwrap(); // 3 -> 4: event already passed
    assert!(!q.needs_notification().unwrap());
    drv.ring.set_used_event(4);
    q.push_used(&chains[4], 0).unwrap(); // 4 -> 5
    assert!(q.needs_notification().unwrap());
    assert!(
        !q.needs_notification().unwrap(),
        "nothing new since the last decision"
    );
}

/// The same decisions across the 16-bit wrap of the used index.
#[test]
fn used_event_across_the_wrap() {
    let mut drv = SplitFake::new(4, Features::EVENT_IDX);
    drv.resume_at(0, 0xfffd);
    for _ in 0..4 {
        drv.add(&one_writable(), 0).unwrap();
    }
    drv.publish();
    let state = DeviceQueueState {
        next_avail: 0,
        next_used: 0xfffd,
        ..DeviceQueueState::default()
    };
    let mut q = SplitDeviceQueue::new(drv.mem(), &drv.config(), state).unwrap();
    let chains = pop_all(&mut q);
    drv.ring.set_used_event(0xffff);
    q.push_used(&chains[0], 0).unwrap(); // 0xfffd -> 0xfffe (first decision)
    assert!(q.needs_notification().unwrap());
    q.push_used(&chains[1], 0).unwrap(); // 0xfffe -> 0xffff
    assert!(!q.needs_notification().unwrap());
    q.add_used(&chains[2], 0).unwrap();
    q.add_used(&chains[3], 0).unwrap();
    q.publish_used().unwrap(); // 0xffff -> 0x0001: entry 0xffff used
    assert_eq!(drv.ring.used_idx(), 1);
    assert!(q.needs_notification().unwrap());
}

/// Without EVENT_IDX, kicks are suppressed with VIRTQ_USED_F_NO_NOTIFY (virtio 1.2 §2.7.10);
/// enabling them re-checks for buffers that arrived meanwhile.
#[test]
fn kicks_with_the_no_notify_flag() {
    let (mut drv, mut q) = setup(8, Features::empty(), 0);
    q.disable_kicks().unwrap();
    assert_eq!(drv.ring.used_flags(), used::F_NO_NOTIFY);
    assert!(!q.enable_kicks().unwrap(), "nothing available");
    assert_eq!(drv.ring.used_flags(), 0);
    q.disable_kicks().unwrap();
    drv.add(&one_writable(), 0).unwrap();
    drv.publish();
    assert!(
        q.enable_kicks().unwrap(),
        "a buffer arrived while kicks were off"
    );
    assert!(q.pop().unwrap().is_some());
    assert!(!q.enable_kicks().unwrap());
}

/// With EVENT_IDX, enabling kicks sets `avail_event` to the next entry to consume; disabling
/// leaves it alone (virtio 1.2 §2.7.10).
#[test]
fn kicks_with_avail_event() {
    let (mut drv, mut q) = setup(8, Features::EVENT_IDX, 2);
    assert!(q.enable_kicks().unwrap(), "two chains are waiting");
    assert_eq!(drv.ring.avail_event(), 0);
    pop_all(&mut q);
    assert!(!q.enable_kicks().unwrap());
    assert_eq!(drv.ring.avail_event(), 2);
    q.disable_kicks().unwrap();
    assert_eq!(drv.ring.avail_event(), 2);
    assert_eq!(
        drv.ring.used_flags(),
        0,
        "the flag is not used with EVENT_IDX"
    );
    drv.add(&one_writable(), 0).unwrap();
    drv.publish();
    assert!(q.enable_kicks().unwrap());
}

/// `avail_event` follows the free-running index across the wrap.
#[test]
fn avail_event_across_the_wrap() {
    let mut drv = SplitFake::new(4, Features::EVENT_IDX);
    drv.resume_at(0xffff, 0xffff);
    let state = DeviceQueueState {
        next_avail: 0xffff,
        next_used: 0xffff,
        ..DeviceQueueState::default()
    };
    let mut q = SplitDeviceQueue::new(drv.mem(), &drv.config(), state).unwrap();
    assert!(!q.enable_kicks().unwrap());
    assert_eq!(drv.ring.avail_event(), 0xffff);
    let added = drv.add(&one_writable(), 0).unwrap();
    drv.publish();
    assert_eq!(drv.ring.avail_idx(), 0);
    assert!(q.enable_kicks().unwrap());
    let c = q.pop().unwrap().unwrap();
    assert_eq!((c.id(), c.position()), (added.id, 0xffff));
    assert!(!q.enable_kicks().unwrap());
    assert_eq!(drv.ring.avail_event(), 0);
    q.push_used(&c, 4).unwrap();
    assert_eq!(drv.reap().map(|r| (r.id, r.len)), Some((added.id, 4)));
}

proptest! {
    /// Against a model: with EVENT_IDX, a decision notifies iff `used_event` is one of the used
    /// entries published since the previous decision (the meaning of `vring_need_event`), over
    /// random batch sizes, event positions and a start anywhere in the 16-bit index space.
    #[test]
    fn event_idx_decisions_match_the_model(
        start in any::<u16>(),
        steps in prop::collection::vec((0u16..4, 0u16..9), 1..40),
    ) {
        let mut drv = SplitFake::new(4, Features::EVENT_IDX);
        drv.resume_at(0, start);
        let state = DeviceQueueState { next_avail: 0, next_used: start, ..DeviceQueueState::default() };
        let mut q = SplitDeviceQueue::new(drv.mem(), &drv.config(), state).unwrap();
        let mut used_idx = start;
        let mut last_decision: Option<u16> = None;
        for (batch, event_offset) in steps {
            for _ in 0..batch {
                drv.add(&one_writable(), 0).unwrap();
            }
            drv.publish();
            // From 3 entries behind the used index to 5 ahead of it.
            let event = used_idx.wrapping_add(event_offset).wrapping_sub(3);
            drv.ring.set_used_event(event);
            for c in pop_all(&mut q) {
                q.add_used(&c, 0).unwrap();
            }
            q.publish_used().unwrap();
            let new = used_idx.wrapping_add(batch);
            let expected = match last_decision {
                None => true,
                Some(old) => (0..new.wrapping_sub(old)).any(|k| old.wrapping_add(k) == event),
            };
            prop_assert_eq!(q.needs_notification().unwrap(), expected);
            last_decision = Some(new);
            used_idx = new;
            // The driver takes everything back, checking each element.
            for _ in 0..batch {
                prop_assert!(drv.reap().is_some());
            }
            prop_assert_eq!(drv.outstanding(), 0);
        }
    }
}
