//! Device side of the packed ring: batching of used descriptors (the first one's flags stored
//! last), used-buffer notification decisions from the driver event suppression structure and
//! kick suppression through the device one (virtio 1.2 §2.8.10, §2.8.14), across ring wraps.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use device_fake::packed::{PackedFake, Pos};
use device_fake::{BufSpec, ChainSpec, FakeDriver};
use proptest::prelude::*;
use vireo_queue::device::{AvailChain, DeviceQueueState, Direction, PackedDeviceQueue};
use vireo_spec::packed::event::{FLAGS_DESC, FLAGS_DISABLE, FLAGS_ENABLE};
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

fn setup(size: u16, features: Features, n: u16) -> (PackedFake, PackedDeviceQueue) {
    let mut drv = PackedFake::new(size, features);
    for _ in 0..n {
        drv.add(&one_writable(), 0).unwrap();
    }
    drv.publish();
    let q = PackedDeviceQueue::new(drv.mem(), &drv.config(), DeviceQueueState::default()).unwrap();
    (drv, q)
}

fn pop_all(q: &mut PackedDeviceQueue) -> Vec<AvailChain> {
    std::iter::from_fn(|| q.pop().unwrap()).collect()
}

/// §2.8.22: nothing is visible before the first used descriptor's flags are stored, and then
/// the whole batch is.
#[test]
fn used_descriptors_are_invisible_until_published() {
    let (mut drv, mut q) = setup(5, Features::empty(), 3);
    let chains = pop_all(&mut q);
    assert_eq!(chains.len(), 3);
    for (i, c) in chains.iter().enumerate() {
        q.add_used(c, i as u32).unwrap();
        assert_eq!(drv.reap(), None, "nothing is published by add_used");
    }
    q.publish_used().unwrap();
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

/// Out-of-order use: the used descriptor of a later buffer overwrites the ring slot of an
/// earlier one the device still holds, which must still walk as the driver wrote it.
#[test]
fn out_of_order_use_keeps_held_chains_intact() {
    let (mut drv, mut q) = setup(4, Features::empty(), 2);
    let chains = pop_all(&mut q);
    q.push_used(&chains[1], 0).unwrap();
    assert_eq!(drv.reap().map(|r| r.id), Some(chains[1].id()));
    let segs: Vec<_> = q
        .chain(&chains[0], drv.mem())
        .map(|s| s.unwrap().addr)
        .collect();
    assert_eq!(segs, [drv.ring.layout.buf(chains[0].id(), 0)]);
    q.push_used(&chains[0], 4).unwrap();
    assert_eq!(drv.reap().map(|r| (r.id, r.len)), Some((chains[0].id(), 4)));
}

/// Without EVENT_IDX: ENABLE notifies when something was published, DISABLE never; DESC
/// without the feature counts as enabled.
#[test]
fn flags_decide_without_event_idx() {
    let (drv, mut q) = setup(4, Features::empty(), 4);
    let chains = pop_all(&mut q);
    drv.ring.set_driver_event(0, FLAGS_DISABLE);
    q.push_used(&chains[0], 0).unwrap();
    assert!(
        !q.needs_notification().unwrap(),
        "disabled, even the first decision"
    );
    drv.ring.set_driver_event(0, FLAGS_ENABLE);
    assert!(
        !q.needs_notification().unwrap(),
        "nothing new since the last decision"
    );
    q.add_used(&chains[1], 0).unwrap();
    assert!(!q.needs_notification().unwrap(), "added but not published");
    q.publish_used().unwrap();
    assert!(q.needs_notification().unwrap());
    drv.ring.set_driver_event(0x7fff, FLAGS_DESC);
    q.push_used(&chains[2], 0).unwrap();
    assert!(
        q.needs_notification().unwrap(),
        "DESC means nothing without EVENT_IDX"
    );
}

/// The first decision notifies unless disabled (the driver's event offset may be stale).
#[test]
fn first_decision_notifies() {
    let (drv, mut q) = setup(4, Features::EVENT_IDX, 0);
    drv.ring.set_driver_event(3, FLAGS_DESC);
    assert!(q.needs_notification().unwrap());
    assert!(!q.needs_notification().unwrap());
}

/// Kicks without EVENT_IDX: DISABLE / ENABLE flags, with the re-check after enabling.
#[test]
fn kicks_with_flags() {
    let (mut drv, mut q) = setup(3, Features::empty(), 0);
    q.disable_kicks().unwrap();
    assert_eq!(drv.ring.device_event().1, FLAGS_DISABLE);
    assert!(!q.enable_kicks().unwrap(), "nothing available");
    assert_eq!(drv.ring.device_event().1, FLAGS_ENABLE);
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

/// Kicks with EVENT_IDX: `off_wrap` names the next descriptor to read, with the wrap counter,
/// across the end of the ring.
#[test]
fn kicks_with_off_wrap_across_the_wrap() {
    let (mut drv, mut q) = setup(3, Features::EVENT_IDX, 2);
    assert!(q.enable_kicks().unwrap(), "two buffers are waiting");
    assert_eq!(drv.ring.device_event(), (0x8000, FLAGS_DESC));
    for c in pop_all(&mut q) {
        q.push_used(&c, 0).unwrap();
    }
    assert!(!q.enable_kicks().unwrap());
    assert_eq!(drv.ring.device_event(), (0x8002, FLAGS_DESC));
    while drv.reap().is_some() {}
    drv.add(&one_writable(), 0).unwrap();
    drv.add(&one_writable(), 0).unwrap();
    drv.publish();
    assert!(q.enable_kicks().unwrap());
    assert_eq!(pop_all(&mut q).len(), 2);
    assert!(!q.enable_kicks().unwrap());
    // Offset 1 of the second lap: wrap counter 0.
    assert_eq!(drv.ring.device_event(), (0x0001, FLAGS_DESC));
}

proptest! {
    /// Against a model: with EVENT_IDX and RING_EVENT_FLAGS_DESC, a decision notifies iff the
    /// driver's (offset, wrap) is one of the positions whose used descriptors were published
    /// since the previous decision, over random batches, event positions and ring sizes, many
    /// laps long.
    #[test]
    fn event_desc_decisions_match_the_model(
        size in 1u16..7,
        steps in prop::collection::vec((0u16..7, 0u16..14, any::<bool>()), 1..40),
    ) {
        let (mut drv, mut q) = setup(size, Features::EVENT_IDX, 0);
        let mut used = Pos::START;
        let mut decided = false;
        for (batch, event_back, disable) in steps {
            let batch = batch % (size + 1);
            for _ in 0..batch {
                drv.add(&one_writable(), 0).unwrap();
            }
            drv.publish();
            // An event position from `size` before the used position to `size` after it.
            let event = used.advance(2 * size - (event_back % (2 * size)), size).advance(size, size);
            let flags = if disable { FLAGS_DISABLE } else { FLAGS_DESC };
            drv.ring.set_driver_event(event.encode(), flags);
            let mut hit = false;
            for c in pop_all(&mut q) {
                hit |= used == event;
                used = used.advance(1, size);
                q.add_used(&c, 0).unwrap();
            }
            q.publish_used().unwrap();
            let expected = !disable && (!decided || hit);
            prop_assert_eq!(q.needs_notification().unwrap(), expected);
            decided = true;
            for _ in 0..batch {
                prop_assert!(drv.reap().is_some());
            }
            prop_assert_eq!(drv.outstanding(), 0);
        }
    }
}
