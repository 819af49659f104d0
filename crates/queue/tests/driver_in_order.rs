//! Driver side of both ring formats with VIRTIO_F_IN_ORDER (virtio 1.2 §2.7.9, §2.8.8): ids
//! and descriptors are handed out in order, and a device may report a batch with one used
//! element naming its last buffer; the driver returns every buffer of the batch, oldest first,
//! those before the last with 0 bytes written. Device rule breaks in that mode are violations.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use driver_fake::split::split_pair;
use driver_fake::{pair, seg, FORMATS};
use vireo_queue::driver::{DeviceViolation, DriverQueueError, DriverQueueOptions, UsedBuffer};
use vireo_queue::RingFormat;
use vireo_spec::Features;

const OPTS: DriverQueueOptions = DriverQueueOptions {
    indirect_table_len: 0,
};

fn size_of(format: RingFormat) -> u16 {
    match format {
        RingFormat::Split => 8,
        RingFormat::Packed => 7,
    }
}

#[test]
fn ids_go_round_in_order() {
    // Split: descriptors used in ring order from 0, wrapping at the end of the table
    // (§2.7.9); packed: buffer ids in order. Chains of 1 and 2 segments, used and returned in
    // order, for several laps.
    for &format in FORMATS {
        let size = size_of(format);
        let (mut q, mut dev) = pair(format, size, Features::IN_ORDER, OPTS);
        let mut expected = 0u16;
        for round in 0..40u32 {
            let n = 1 + (round % 2) as u64;
            let segs: Vec<_> = (0..n).map(|i| seg(i * 8, 8)).collect();
            q.add(&segs, &[], round).unwrap();
            q.publish().unwrap();
            let b = dev.pop_avail().unwrap();
            assert_eq!(b.id, expected, "{format:?} round {round}");
            // Split ids are head descriptors: they move on by the chain length.
            let step = match format {
                RingFormat::Split => n as u16,
                RingFormat::Packed => 1,
            };
            expected = (expected + step) % size;
            dev.use_buffer(b.id, 0);
            dev.publish_used();
            assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(round));
        }
    }
}

#[test]
fn a_batch_comes_back_whole_and_in_order() {
    for &format in FORMATS {
        for features in [Features::IN_ORDER, Features::IN_ORDER | Features::EVENT_IDX] {
            let size = size_of(format);
            let (mut q, mut dev) = pair(format, size, features, OPTS);
            for lap in 0..6u32 {
                let base = lap * 10;
                for t in 0..5 {
                    q.add(&[], &[seg(64, 32)], base + t).unwrap();
                }
                q.kick_prepare().unwrap();
                for _ in 0..5 {
                    dev.pop_avail().unwrap();
                }
                // One element for the first three (its length for the third), then one each.
                // The two skipped buffers count as used completely: their whole 32 writable
                // bytes (virtio 1.2 §2.7.9 and §2.8.8, "assumed to have been used ... completely").
                dev.use_batch(3, 20);
                dev.use_batch(1, 7);
                dev.use_batch(1, 32);
                assert!(dev.publish_used(), "{format:?}: notifications are enabled");
                let got: Vec<_> = std::iter::from_fn(|| q.pop_used().unwrap()).collect();
                let want: Vec<_> = [32, 32, 20, 7, 32]
                    .into_iter()
                    .zip(base..)
                    .map(|(written, token)| UsedBuffer { token, written })
                    .collect();
                assert_eq!(got, want, "{format:?} {features:?} lap {lap}");
                assert_eq!((q.num_free(), q.len_in_flight()), (size, 0));
            }
        }
    }
}

#[test]
fn enable_reports_the_rest_of_a_batch() {
    for &format in FORMATS {
        let (mut q, mut dev) = pair(format, size_of(format), Features::IN_ORDER, OPTS);
        for t in 0..3 {
            q.add(&[seg(0, 4)], &[], t).unwrap();
        }
        q.publish().unwrap();
        for _ in 0..3 {
            dev.pop_avail().unwrap();
        }
        dev.use_batch(3, 0);
        dev.publish_used();
        assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(0));
        assert!(
            q.enable_used_notifications().unwrap(),
            "{format:?}: two buffers of the batch are waiting"
        );
        assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(1));
        assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(2));
        assert_eq!(q.pop_used().unwrap(), None);
        assert!(!q.enable_used_notifications().unwrap());
    }
}

#[test]
fn a_batch_longer_than_the_used_index_moved_is_a_violation() {
    // Split, §2.7.9: the used index moves by the size of the batch. An element naming the
    // third buffer with the index moved by 2 claims more than the device published.
    let (mut q, mut dev) = split_pair(8, Features::IN_ORDER, OPTS);
    for t in 0..4 {
        q.add(&[seg(0, 4)], &[], t).unwrap();
    }
    q.publish().unwrap();
    let heads: Vec<_> = std::iter::from_fn(|| driver_fake::FakeDevice::pop_avail(&mut dev))
        .map(|b| b.id)
        .collect();
    dev.write_used_raw(0, u32::from(heads[2]), 0);
    dev.set_used_idx_raw(2);
    let v = DeviceViolation::InOrderBatchPastUsedIndex {
        id: u32::from(heads[2]),
        batch: 3,
        used: 2,
    };
    assert_eq!(q.pop_used().unwrap_err(), DriverQueueError::Device(v));
    assert_eq!(q.pop_used().unwrap_err(), DriverQueueError::Broken(v));
    assert_eq!(q.len_in_flight(), 4, "nothing came back");
    assert_eq!(
        DriverQueueError::Device(v).to_string(),
        "device broke a ring rule: in order, used element names id 2, the last of a batch of 3 \
         buffers, but the used index moved by 2 only; the queue is now broken"
    );
}

#[test]
fn ids_not_in_flight_are_violations_in_order_too() {
    // Split: an element naming a descriptor inside a chain, or a buffer already returned.
    let (mut q, mut dev) = split_pair(8, Features::IN_ORDER, OPTS);
    q.add(&[seg(0, 4), seg(4, 4)], &[], 0).unwrap();
    q.add(&[seg(8, 4)], &[], 1).unwrap();
    q.publish().unwrap();
    dev.write_used_raw(0, 1, 0); // descriptor 1 is the second of token 0's chain
    dev.set_used_idx_raw(1);
    let v = DeviceViolation::UsedIdNotInFlight { id: 1 };
    assert_eq!(q.pop_used().unwrap_err(), DriverQueueError::Device(v));
}
