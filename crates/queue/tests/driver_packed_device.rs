//! Driver side of the packed ring against a misbehaving device: ids out of range or not in
//! flight, lengths too large, a buffer reported twice, used descriptors with the wrong wrap
//! counter, a device scribbling on descriptors it does not report: each bad write gets its
//! typed error and latches the queue broken (or, when it cannot be told from "not used yet",
//! is simply not taken), never a panic or a loop.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use driver_fake::packed::{packed_pair, PackedFakeDevice};
use driver_fake::{seg, FakeDevice, SeenBuffer};
use vireo_queue::driver::{
    DeviceViolation, DriverQueueError, DriverQueueOptions, PackedDriverQueue, UsedBuffer,
};
use vireo_spec::packed::{desc, WrapCounter};
use vireo_spec::Features;

type Queue = PackedDriverQueue<u32>;

/// A queue of 6 with three buffers published and taken by the device: token 1 (two
/// descriptors, 16 writable bytes), token 2 (one readable descriptor), token 3 (two segments,
/// 8 writable bytes; indirect with INDIRECT_DESC); and token 4 added but not published.
fn busy(features: Features) -> (Queue, PackedFakeDevice, Vec<SeenBuffer>) {
    let (mut q, mut dev) = packed_pair(6, features, DriverQueueOptions::default());
    q.add(&[seg(0, 4)], &[seg(64, 16)], 1).unwrap();
    q.add(&[seg(128, 4)], &[], 2).unwrap();
    q.add(&[seg(192, 4)], &[seg(256, 8)], 3).unwrap();
    q.publish().unwrap();
    q.add(&[seg(320, 4)], &[], 4).unwrap();
    let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
    assert_eq!(bufs.len(), 3);
    (q, dev, bufs)
}

/// The device writes a used descriptor `id`/`len` at its next used position (with the right
/// wrap counter); the driver must answer `violation` and then stay broken.
fn expect_violation(q: &mut Queue, dev: &PackedFakeDevice, id: u16, len: u32, v: DeviceViolation) {
    let at = dev.next_used();
    dev.write_used_raw(at.offset, id, len, at.wrap.used_flags());
    assert_latched(q, v);
}

/// The next `pop_used` reports `violation`, and from then on the queue is broken.
fn assert_latched(q: &mut Queue, violation: DeviceViolation) {
    assert_eq!(
        q.pop_used().unwrap_err(),
        DriverQueueError::Device(violation)
    );
    assert!(q.is_broken());
    let broken = DriverQueueError::Broken(violation);
    assert_eq!(q.pop_used().unwrap_err(), broken);
    assert_eq!(q.add(&[seg(0, 1)], &[], 9).unwrap_err(), broken);
    assert_eq!(q.publish().unwrap_err(), broken);
    assert_eq!(q.kick_prepare().unwrap_err(), broken);
    assert_eq!(q.enable_used_notifications().unwrap_err(), broken);
}

#[test]
fn used_id_out_of_range() {
    // virtio 1.2 §2.8.13: the id names a buffer; the driver hands out ids below the size.
    for id in [6, 7, 0x7fff, 0xffff] {
        let (mut q, dev, _) = busy(Features::empty());
        let v = DeviceViolation::UsedIdOutOfRange {
            id: u32::from(id),
            size: 6,
        };
        expect_violation(&mut q, &dev, id, 0, v);
    }
}

#[test]
fn used_id_not_in_flight() {
    // Ids 0..=3 are in use (token 4's unpublished); the others are free.
    let (mut q, dev, bufs) = busy(Features::empty());
    let used: Vec<_> = bufs.iter().map(|b| b.id).collect();
    let free = (0..6).find(|i| !used.contains(i) && *i != 3).unwrap();
    let v = DeviceViolation::UsedIdNotInFlight {
        id: u32::from(free),
    };
    expect_violation(&mut q, &dev, free, 0, v);
}

#[test]
fn used_id_not_yet_published() {
    // Token 4 was added (its descriptors written) but not published: the device cannot have
    // used it.
    let (mut q, dev, bufs) = busy(Features::empty());
    let published: Vec<_> = bufs.iter().map(|b| b.id).collect();
    let id = (0..6).find(|i| !published.contains(i)).unwrap();
    let v = DeviceViolation::UsedIdNotInFlight { id: u32::from(id) };
    assert_eq!(id, 3, "ids are handed out in order from a fresh queue");
    expect_violation(&mut q, &dev, id, 0, v);
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
    let id = bufs[1].id;
    let v = DeviceViolation::UsedIdNotInFlight { id: u32::from(id) };
    expect_violation(&mut q, &dev, id, 0, v);
}

#[test]
fn used_length_too_large() {
    // virtio 1.2 §2.8.13 / §2.7.8.2: `len` is the number of bytes written into the buffer.
    for features in [Features::empty(), Features::INDIRECT_DESC] {
        for (buf, written, writable) in [(0, 17, 16), (2, u32::MAX, 8), (1, 1, 0)] {
            let (mut q, dev, bufs) = busy(features);
            let v = DeviceViolation::UsedLengthTooLarge { written, writable };
            expect_violation(&mut q, &dev, bufs[buf].id, written, v);
        }
    }
}

#[test]
fn used_with_the_wrong_wrap_counter_is_not_taken() {
    // virtio 1.2 §2.8.1: used means AVAIL == USED == the driver's used wrap counter. A
    // descriptor whose bits say "used in the other lap" or "available" looks exactly like one
    // not used yet: the driver does not take it, stays healthy, and does not spin.
    let (mut q, dev, bufs) = busy(Features::empty());
    let at = dev.next_used();
    assert_eq!(at.wrap, WrapCounter::INITIAL);
    for flags in [0, desc::F_AVAIL, desc::F_USED, desc::F_NEXT | desc::F_WRITE] {
        dev.write_used_raw(at.offset, bufs[0].id, 16, flags);
        assert_eq!(q.pop_used().unwrap(), None);
        assert!(!q.enable_used_notifications().unwrap());
    }
    assert!(!q.is_broken());
    assert_eq!(q.len_in_flight(), 4);
    // The right bits: taken.
    dev.write_used_raw(at.offset, bufs[0].id, 16, at.wrap.used_flags());
    assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(1));
}

#[test]
fn a_stale_lap_is_not_taken_again() {
    // After a full lap, the descriptors still hold the last lap's used bits: with the wrap
    // counter flipped, they mean "not used yet", even at the very position the driver reads.
    let (mut q, mut dev) = packed_pair(2, Features::empty(), DriverQueueOptions::default());
    for token in 0..2 {
        q.add(&[seg(0, 1)], &[], token).unwrap();
    }
    q.publish().unwrap();
    for _ in 0..2 {
        let b = dev.pop_avail().unwrap();
        dev.use_buffer(b.id, 0);
    }
    dev.publish_used();
    assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(0));
    assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(1));
    assert_eq!(dev.next_used().wrap, WrapCounter::ZERO, "the ring wrapped");
    assert_eq!(q.pop_used().unwrap(), None);
    // A device that marks used again in lap 0's colours: still not taken.
    dev.write_used_raw(0, 0, 0, WrapCounter::INITIAL.used_flags());
    assert_eq!(q.pop_used().unwrap(), None);
    assert!(!q.is_broken());
}

#[test]
fn good_descriptors_before_a_bad_one_still_come_back() {
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
    let v = DeviceViolation::UsedIdOutOfRange { id: 9, size: 6 };
    expect_violation(&mut q, &dev, 9, 0, v);
}

#[test]
fn skipping_follows_the_drivers_record_not_the_ring() {
    // virtio 1.2 §2.8.6: after a used buffer the device moves on by that buffer's descriptor
    // count, which the driver takes from its own record. A device that scribbles "used" with
    // valid ids over the descriptors it skipped does not make the driver read them.
    let (mut q, mut dev, bufs) = busy(Features::empty());
    dev.use_buffer(bufs[0].id, 16); // two descriptors: positions 0 and 1
    dev.publish_used();
    let lap = WrapCounter::INITIAL.used_flags();
    dev.write_used_raw(1, bufs[1].id, 0, lap);
    assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(1));
    assert_eq!(dev.next_used().offset, 2);
    assert_eq!(q.pop_used().unwrap(), None, "position 2 is not used");
    assert_eq!(q.num_free(), 2, "token 1's two descriptors, nothing more");
    assert!(!q.is_broken());
}

#[test]
fn a_device_marking_the_whole_ring_used_cannot_make_the_driver_loop() {
    // Every descriptor says "used" with an id in flight: the driver returns what it can
    // validate, one per call, then reports the first id that is no longer in flight.
    let (mut q, dev, bufs) = busy(Features::empty());
    let lap = WrapCounter::INITIAL.used_flags();
    for i in 0..6 {
        dev.write_used_raw(i, bufs[0].id, 0, lap);
    }
    assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(1));
    let v = DeviceViolation::UsedIdNotInFlight {
        id: u32::from(bufs[0].id),
    };
    assert_latched(&mut q, v);
}

#[test]
fn in_order_ids_not_in_flight_are_violations() {
    // virtio 1.2 §2.8.8: with IN_ORDER a used descriptor names the last buffer of a batch;
    // a free or unpublished id is still a violation.
    let (mut q, dev, _) = busy(Features::IN_ORDER);
    let v = DeviceViolation::UsedIdNotInFlight { id: 3 };
    expect_violation(&mut q, &dev, 3, 0, v);
    let (mut q, dev, _) = busy(Features::IN_ORDER);
    let v = DeviceViolation::UsedIdNotInFlight { id: 5 };
    expect_violation(&mut q, &dev, 5, 0, v);
    // The batch's last buffer's length is checked before anything comes back.
    let (mut q, dev, bufs) = busy(Features::IN_ORDER);
    let v = DeviceViolation::UsedLengthTooLarge {
        written: 9,
        writable: 8,
    };
    expect_violation(&mut q, &dev, bufs[2].id, 9, v);
    assert_eq!(q.len_in_flight(), 4, "nothing came back");
}

#[test]
fn detach_and_reset_after_a_broken_ring() {
    let (mut q, mut dev, _) = busy(Features::INDIRECT_DESC | Features::EVENT_IDX);
    expect_violation(
        &mut q,
        &dev,
        0xffff,
        0,
        DeviceViolation::UsedIdOutOfRange {
            id: 0xffff,
            size: 6,
        },
    );
    assert_eq!(
        q.reset().unwrap_err(),
        DriverQueueError::BuffersInFlight { count: 4 }
    );
    dev.reset();
    let mut tokens: Vec<_> = std::iter::from_fn(|| q.detach_unused()).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, [1, 2, 3, 4]);
    assert_eq!((q.num_free(), q.len_in_flight()), (6, 0));
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
