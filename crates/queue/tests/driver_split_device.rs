//! Driver side of the split ring against a misbehaving device: each bad write to the used ring
//! gets its error and latches the queue broken; a device scribbling on the descriptor table
//! changes nothing the driver does; after a device reset, detach and reset recover the queue.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use driver_fake::split::{split_pair, RawDesc, SplitFakeDevice};
use driver_fake::{seg, FakeDevice, SeenBuffer};
use vireo_queue::driver::{
    DeviceViolation, DriverQueueError, DriverQueueOptions, SplitDriverQueue, UsedBuffer,
};
use vireo_spec::Features;

/// A queue of 8 with three buffers published and taken by the device: token 1 (two
/// descriptors, 16 writable bytes), token 2 (one readable descriptor), token 3 (indirect, two
/// segments, 8 writable bytes) when `features` has INDIRECT_DESC; and token 4 added but not
/// published.
fn busy(features: Features) -> (SplitDriverQueue<u32>, SplitFakeDevice, Vec<SeenBuffer>) {
    let (mut q, mut dev) = split_pair(8, features, DriverQueueOptions::default());
    q.add(&[seg(0, 4)], &[seg(64, 16)], 1).unwrap();
    q.add(&[seg(128, 4)], &[], 2).unwrap();
    q.add(&[seg(192, 4)], &[seg(256, 8)], 3).unwrap();
    q.publish().unwrap();
    q.add(&[seg(320, 4)], &[], 4).unwrap();
    let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
    assert_eq!(bufs.len(), 3);
    (q, dev, bufs)
}

/// The device writes used element `id`/`len` at its next position and publishes it; the driver
/// must answer `violation` and then stay broken.
fn expect_violation(
    q: &mut SplitDriverQueue<u32>,
    dev: &mut SplitFakeDevice,
    id: u32,
    len: u32,
    violation: DeviceViolation,
) {
    let pos = dev.used_next();
    dev.write_used_raw(pos, id, len);
    dev.set_used_idx_raw(pos.wrapping_add(1));
    assert_latched(q, violation);
}

/// The next `pop_used` reports `violation`, and from then on the queue is broken.
fn assert_latched(q: &mut SplitDriverQueue<u32>, violation: DeviceViolation) {
    assert_eq!(
        q.pop_used().unwrap_err(),
        DriverQueueError::Device(violation)
    );
    assert!(q.is_broken());
    let broken = DriverQueueError::Broken(violation);
    assert!(broken.is_device_fault());
    assert_eq!(q.pop_used().unwrap_err(), broken);
    assert_eq!(q.add(&[seg(0, 1)], &[], 9).unwrap_err(), broken);
    assert_eq!(q.publish().unwrap_err(), broken);
    assert_eq!(q.kick_prepare().unwrap_err(), broken);
    assert_eq!(q.enable_used_notifications().unwrap_err(), broken);
}

#[test]
fn used_id_out_of_range() {
    // virtio 1.2 §2.7.8: `id` is the index of the head of a used descriptor chain.
    for id in [8, 0x1_0000, u32::MAX] {
        let (mut q, mut dev, _) = busy(Features::empty());
        expect_violation(
            &mut q,
            &mut dev,
            id,
            0,
            DeviceViolation::UsedIdOutOfRange { id, size: 8 },
        );
    }
}

#[test]
fn used_id_not_the_head_of_a_chain() {
    // Descriptor 1 is the second descriptor of token 1's chain.
    let (mut q, mut dev, bufs) = busy(Features::empty());
    assert_eq!(bufs[0].id, 0);
    expect_violation(
        &mut q,
        &mut dev,
        1,
        0,
        DeviceViolation::UsedIdNotInFlight { id: 1 },
    );
}

#[test]
fn used_id_of_a_free_descriptor() {
    let (mut q, mut dev, _) = busy(Features::INDIRECT_DESC);
    // Tokens 1 and 3 are indirect (descriptors 0 and 2), token 2 is 1, token 4 is 3: 7 is free.
    expect_violation(
        &mut q,
        &mut dev,
        7,
        0,
        DeviceViolation::UsedIdNotInFlight { id: 7 },
    );
}

#[test]
fn used_id_not_yet_published() {
    // Token 4's head (descriptor 5, after chains 0-1, 2 and 3-4) is written but not published:
    // the device cannot own it.
    let (mut q, mut dev, _) = busy(Features::empty());
    expect_violation(
        &mut q,
        &mut dev,
        5,
        0,
        DeviceViolation::UsedIdNotInFlight { id: 5 },
    );
}

#[test]
fn used_twice() {
    let (mut q, mut dev, bufs) = busy(Features::empty());
    dev.use_buffer(bufs[1].id, 0);
    dev.publish_used();
    assert_eq!(
        q.pop_used().unwrap(),
        Some(UsedBuffer {
            token: 2,
            written: 0
        })
    );
    let id = u32::from(bufs[1].id);
    expect_violation(
        &mut q,
        &mut dev,
        id,
        0,
        DeviceViolation::UsedIdNotInFlight { id },
    );
}

#[test]
fn used_length_too_large() {
    // virtio 1.2 §2.7.8.2: `len` is the number of bytes written into the device-writable part.
    for features in [Features::empty(), Features::INDIRECT_DESC] {
        let (mut q, mut dev, bufs) = busy(features);
        let id = u32::from(bufs[0].id);
        let v = DeviceViolation::UsedLengthTooLarge {
            written: 17,
            writable: 16,
        };
        expect_violation(&mut q, &mut dev, id, 17, v);
        let (mut q, mut dev, bufs) = busy(features);
        let id = u32::from(bufs[2].id);
        let v = DeviceViolation::UsedLengthTooLarge {
            written: u32::MAX,
            writable: 8,
        };
        expect_violation(&mut q, &mut dev, id, u32::MAX, v);
        // A buffer with nothing device-writable: any length but 0 is a lie.
        let (mut q, mut dev, bufs) = busy(features);
        let id = u32::from(bufs[1].id);
        let v = DeviceViolation::UsedLengthTooLarge {
            written: 1,
            writable: 0,
        };
        expect_violation(&mut q, &mut dev, id, 1, v);
    }
}

#[test]
fn used_index_too_far_ahead() {
    // Four buffers in flight: a used index 5 ahead, or one that moved backwards, is impossible.
    for idx in [5, 100, 0xffff] {
        let (mut q, mut dev, _) = busy(Features::empty());
        dev.set_used_idx_raw(idx);
        let v = DeviceViolation::UsedIndexTooFarAhead {
            used_idx: idx,
            last_used: 0,
            available: 4,
        };
        assert_latched(&mut q, v);
    }
    // Also seen by enable_used_notifications, which re-reads the index.
    let (mut q, mut dev, bufs) = busy(Features::EVENT_IDX);
    dev.use_buffer(bufs[0].id, 16);
    dev.publish_used();
    assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(1));
    dev.set_used_idx_raw(1 + 4);
    let v = DeviceViolation::UsedIndexTooFarAhead {
        used_idx: 5,
        last_used: 1,
        available: 3,
    };
    assert_eq!(
        q.enable_used_notifications().unwrap_err(),
        DriverQueueError::Device(v)
    );
    assert_eq!(q.pop_used().unwrap_err(), DriverQueueError::Broken(v));
}

#[test]
fn good_elements_before_a_bad_one_still_come_back() {
    let (mut q, mut dev, bufs) = busy(Features::empty());
    dev.use_buffer(bufs[2].id, 8);
    dev.publish_used();
    assert_eq!(
        q.pop_used().unwrap(),
        Some(UsedBuffer {
            token: 3,
            written: 8
        })
    );
    expect_violation(
        &mut q,
        &mut dev,
        9,
        0,
        DeviceViolation::UsedIdOutOfRange { id: 9, size: 8 },
    );
}

#[test]
fn scribbled_descriptors_are_not_trusted() {
    // virtio 1.2 §2.7.5: the table belongs to the driver. A device that rewrites it (here: the
    // chain of token 1 made to look like one descriptor linking to everything) changes neither
    // what the driver frees nor the written length it accepts.
    let (mut q, mut dev, bufs) = busy(Features::empty());
    for i in 0..8 {
        dev.scribble_desc(
            i,
            RawDesc {
                addr: 0,
                len: u32::MAX,
                flags: 7,
                next: (i + 1) % 8,
            },
        );
    }
    dev.use_buffer(bufs[0].id, 16);
    dev.publish_used();
    assert_eq!(
        q.pop_used().unwrap(),
        Some(UsedBuffer {
            token: 1,
            written: 16
        })
    );
    assert_eq!(q.num_free(), 8 - 6 + 2);
    // The freed descriptors are rewritten from scratch and the strict device accepts them.
    q.add(&[seg(0, 1)], &[seg(1, 1)], 5).unwrap();
    q.publish().unwrap();
    // Token 4 (descriptor 5, written before the scribbling) goes out with this batch: the
    // device repairs what it broke, then takes it, and token 5 in the freed descriptors 0-1.
    dev.scribble_desc(
        5,
        RawDesc {
            addr: 0x100_0000 + 320,
            len: 4,
            flags: 0,
            next: 0,
        },
    );
    assert_eq!(dev.pop_avail().unwrap().id, 5);
    let five = dev.pop_avail().unwrap();
    assert_eq!(five.id, 0);
    assert_eq!((five.readable.len(), five.writable.len()), (1, 1));
}

#[test]
fn detach_and_reset_after_a_device_reset() {
    // virtio 1.2 §2.4: after a device reset the driver takes its buffers back and starts over.
    let (mut q, mut dev, bufs) = busy(Features::INDIRECT_DESC);
    // Token 1 is used but not taken back; then the device breaks the used index.
    dev.use_buffer(bufs[0].id, 16);
    dev.publish_used();
    dev.set_used_idx_raw(0xffff);
    let v = DeviceViolation::UsedIndexTooFarAhead {
        used_idx: 0xffff,
        last_used: 0,
        available: 4,
    };
    assert_latched(&mut q, v);
    assert_eq!(
        q.reset().unwrap_err(),
        DriverQueueError::BuffersInFlight { count: 4 }
    );
    dev.reset();
    let mut tokens: Vec<_> = std::iter::from_fn(|| q.detach_unused()).collect();
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        [1, 2, 3, 4],
        "every token not returned comes back once"
    );
    assert_eq!((q.num_free(), q.len_in_flight()), (8, 0));
    q.reset().unwrap();
    assert!(!q.is_broken());
    q.add(&[seg(0, 4)], &[seg(4, 4)], 10).unwrap();
    q.publish().unwrap();
    let b = dev.pop_avail().unwrap();
    dev.use_buffer(b.id, 4);
    dev.publish_used();
    assert_eq!(
        q.pop_used().unwrap(),
        Some(UsedBuffer {
            token: 10,
            written: 4
        })
    );
}

#[test]
fn detaching_requires_a_reset_before_reuse() {
    let (mut q, _dev, _) = busy(Features::empty());
    assert!(q.detach_unused().is_some());
    assert_eq!(
        q.add(&[seg(0, 1)], &[], 9).unwrap_err(),
        DriverQueueError::NeedsReset
    );
    assert_eq!(q.pop_used().unwrap_err(), DriverQueueError::NeedsReset);
    assert!(!DriverQueueError::NeedsReset.is_device_fault());
    while q.detach_unused().is_some() {}
    q.reset().unwrap();
    q.add(&[seg(0, 1)], &[], 9).unwrap();
}

#[test]
fn error_messages_match_their_docs() {
    let v = DeviceViolation::UsedIdOutOfRange { id: 9, size: 8 };
    assert_eq!(
        DriverQueueError::Device(v).to_string(),
        "device broke a ring rule: used element names id 9, outside the queue of 8 descriptors; \
         the queue is now broken"
    );
    assert_eq!(
        DriverQueueError::QueueFull { needed: 2, free: 1 }.to_string(),
        "not enough free descriptors for the buffer (2 needed, 1 free)"
    );
}
