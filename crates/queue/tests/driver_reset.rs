//! Driver side of both ring formats: resetting one queue (VIRTIO_F_RING_RESET, virtio 1.2
//! §2.6.1) or the device (§2.4) with buffers in every state, and the notification data
//! (VIRTIO_F_NOTIFICATION_DATA, §2.9).
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use std::collections::HashSet;

use driver_fake::packed::packed_pair;
use driver_fake::split::split_pair;
use driver_fake::{pair, seg, SeenSeg, FORMATS};
use vireo_queue::driver::{DriverQueueError, DriverQueueOptions, UsedBuffer};
use vireo_spec::packed::WrapCounter;
use vireo_spec::Features;

#[test]
fn queue_reset_returns_every_buffer_once_and_the_queue_works_again() {
    // Before the reset the ring has turned `laps` buffers, so a packed ring may sit at either
    // wrap counter; then buffers in every state: returned, used but not returned, taken by the
    // device, published but not taken, not published.
    let all = Features::RING_RESET | Features::INDIRECT_DESC | Features::EVENT_IDX;
    for (&format, features) in FORMATS
        .iter()
        .flat_map(|f| [(f, Features::RING_RESET), (f, all)])
    {
        for laps in 0u32..20 {
            let (mut q, mut dev) = pair(format, 8, features, DriverQueueOptions::default());
            for t in 0..laps {
                q.add(&[seg(0, 8), seg(8, 8)], &[], 1000 + t).unwrap();
                q.kick_prepare().unwrap();
                let b = dev.pop_avail().unwrap();
                dev.use_buffer(b.id, 0);
                dev.publish_used();
                assert!(q.pop_used().unwrap().is_some());
            }
            for t in 0..4 {
                q.add(&[seg(0, 4)], &[seg(64, 4)], t).unwrap();
                if t < 3 {
                    q.publish().unwrap();
                }
            }
            let a = dev.pop_avail().unwrap();
            let b = dev.pop_avail().unwrap();
            dev.use_buffer(a.id, 4);
            dev.use_buffer(b.id, 4);
            dev.publish_used();
            assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(0));
            assert_eq!(
                q.reset().unwrap_err(),
                DriverQueueError::BuffersInFlight { count: 3 },
                "{format:?}: refused while buffers are in flight"
            );
            // The device forgets the queue (§2.6.1: the queue is reset); the driver takes back
            // everything it had not got back, each exactly once.
            dev.reset();
            let mut seen = HashSet::new();
            while let Some(token) = q.detach_unused() {
                assert!(
                    seen.insert(token),
                    "{format:?}: token {token} detached twice"
                );
            }
            assert_eq!(
                seen,
                HashSet::from([1, 2, 3]),
                "{format:?} {features:?} laps {laps}"
            );
            assert_eq!(q.detach_unused(), None);
            assert_eq!((q.num_free(), q.len_in_flight()), (8, 0));
            assert_eq!(
                q.add(&[seg(0, 1)], &[], 9).unwrap_err(),
                DriverQueueError::NeedsReset
            );
            q.reset().unwrap();
            // Re-enabled: the device starts from the beginning of the ring and sees only new
            // buffers (a packed ring with stale descriptors would show old ones as available).
            q.add(&[seg(0x100, 4)], &[seg(0x200, 8)], 50).unwrap();
            assert!(q.kick_prepare().unwrap());
            let b = dev.pop_avail().unwrap();
            assert_eq!(
                (b.readable.clone(), b.writable.clone()),
                (
                    vec![SeenSeg::from(seg(0x100, 4))],
                    vec![SeenSeg::from(seg(0x200, 8))]
                )
            );
            assert_eq!(
                dev.pop_avail(),
                None,
                "{format:?} {features:?} laps {laps}: nothing stale"
            );
            dev.use_buffer(b.id, 8);
            assert!(dev.publish_used());
            assert_eq!(
                q.pop_used().unwrap(),
                Some(UsedBuffer {
                    token: 50,
                    written: 8
                })
            );
        }
    }
}

#[test]
fn notification_data_split() {
    // §2.9: for a split ring, next_off and next_wrap together are the available index.
    let (mut q, _dev) = split_pair(
        4,
        Features::NOTIFICATION_DATA,
        DriverQueueOptions::default(),
    );
    assert_eq!(q.notification_data(2).to_u32(), 2);
    for t in 0..3 {
        q.add(&[seg(0, 1)], &[], t).unwrap();
    }
    assert_eq!(
        q.notification_data(2).next_idx(),
        0,
        "nothing published yet"
    );
    q.publish().unwrap();
    let n = q.notification_data(2);
    assert_eq!((n.vqn, n.next_idx()), (2, 3));
    assert_eq!(n.to_u32(), 2 | 3 << 16);
}

#[test]
fn notification_data_packed() {
    // §2.9: for a packed ring, the offset and wrap counter of the next descriptor to make
    // available.
    let opts = DriverQueueOptions {
        indirect_table_len: 0,
    };
    let (mut q, mut dev) = packed_pair(5, Features::NOTIFICATION_DATA, opts);
    let n = q.notification_data(1);
    assert_eq!((n.next_off, n.next_wrap), (0, WrapCounter::INITIAL));
    q.add(&[seg(0, 1), seg(1, 1), seg(2, 1)], &[], 0).unwrap();
    q.add(&[seg(3, 1)], &[], 1).unwrap();
    q.publish().unwrap();
    assert_eq!(q.notification_data(1).next_off, 4);
    for _ in 0..2 {
        let b = driver_fake::FakeDevice::pop_avail(&mut dev).unwrap();
        driver_fake::FakeDevice::use_buffer(&mut dev, b.id, 0);
    }
    driver_fake::FakeDevice::publish_used(&mut dev);
    while q.pop_used().unwrap().is_some() {}
    // A chain of two from offset 4 wraps: the next descriptor is offset 1 of the next lap.
    q.add(&[seg(0, 1), seg(1, 1)], &[], 2).unwrap();
    assert_eq!(q.notification_data(1).next_off, 4, "not published yet");
    q.kick_prepare().unwrap();
    let n = q.notification_data(1);
    assert_eq!((n.vqn, n.next_off, n.next_wrap), (1, 1, WrapCounter::ZERO));
    assert_eq!(n.to_u32(), 1 | 1 << 16);
}
