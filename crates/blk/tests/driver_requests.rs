//! The virtio-blk driver against a strict in-process device: every request type, many in
//! flight, batching of kicks, and the requests the driver must refuse before they reach the
//! ring (virtio 1.2 §5.2.6, §5.2.6.1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod driver_fake;

use driver_fake::{config, features, features_on, harness, CAPACITY, DEVICE_ID, FORMATS};
use vireo_blk::driver::{BlkDriverError, BlkRange, Completion, RequestKind, Unmap};
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkFeatures, BlkStatus, RequestType};

fn completions(h: &mut driver_fake::Harness) -> Vec<Completion> {
    let mut v = Vec::new();
    h.q().poll_completions(|c| v.push(c)).unwrap();
    v
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
}

#[test]
fn write_then_read_back_through_several_segments() {
    for format in FORMATS {
        write_then_read_back_through_several_segments_on(format);
    }
}

fn write_then_read_back_through_several_segments_on(format: RingFormat) {
    let mut h = harness(features_on(format, BlkFeatures::empty()), &config(), 64, 16);
    let data = pattern(3, 4096);
    h.write_data(0, &data);
    let bufs = [h.buf(0, 1024), h.buf(1024, 3072)];
    h.q().submit_write(0, 10, &bufs).unwrap();
    assert_eq!(h.run(), 1);
    let c = completions(&mut h);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].slot, c[0].request, c[0].status, c[0].written),
        (0, RequestKind::Write, BlkStatus::Ok, 1)
    );
    assert_eq!(&h.device.disk[10 * 512..10 * 512 + 4096], &data[..]);

    // Read it back into three other segments.
    let bufs = [h.buf(8192, 512), h.buf(16384, 2048), h.buf(32768, 1536)];
    h.q().submit_read(5, 10, &bufs).unwrap();
    h.run();
    let c = completions(&mut h);
    assert_eq!(
        (c[0].slot, c[0].request, c[0].status, c[0].written),
        (5, RequestKind::Read, BlkStatus::Ok, 4097)
    );
    let mut back = h.read_data(8192, 512);
    back.extend(h.read_data(16384, 2048));
    back.extend(h.read_data(32768, 1536));
    assert_eq!(back, data);
    let seen = &h.device.seen[1];
    assert_eq!(
        (seen.request_type, seen.sector, seen.data_len),
        (RequestType::In.as_u32(), 10, 4096)
    );
}

#[test]
fn flush_and_get_id() {
    for format in FORMATS {
        flush_and_get_id_on(format);
    }
}

fn flush_and_get_id_on(format: RingFormat) {
    let mut h = harness(features_on(format, BlkFeatures::empty()), &config(), 64, 16);
    h.q().submit_flush(1).unwrap();
    h.q().submit_get_id(2).unwrap();
    assert_eq!(h.run(), 2);
    let c = completions(&mut h);
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[0].request, c[0].status),
        (RequestKind::Flush, BlkStatus::Ok)
    );
    assert_eq!(c[0].device_id, None);
    assert_eq!(c[1].request, RequestKind::GetId);
    assert_eq!(c[1].written, 21);
    assert_eq!(c[1].device_id.unwrap().as_bytes(), DEVICE_ID);
    assert_eq!(h.device.seen[0].request_type, RequestType::Flush.as_u32());
}

#[test]
fn discard_and_write_zeroes_carry_their_ranges() {
    for format in FORMATS {
        discard_and_write_zeroes_carry_their_ranges_on(format);
    }
}

fn discard_and_write_zeroes_carry_their_ranges_on(format: RingFormat) {
    let mut h = harness(features_on(format, BlkFeatures::empty()), &config(), 64, 16);
    h.device.disk.fill(0xaa);
    let ranges = [
        BlkRange {
            sector: 0,
            num_sectors: 8,
        },
        BlkRange {
            sector: 100,
            num_sectors: 1,
        },
    ];
    h.q().submit_discard(0, &ranges).unwrap();
    h.q().submit_write_zeroes(1, &ranges, Unmap::Allow).unwrap();
    h.q()
        .submit_write_zeroes(2, &ranges[1..], Unmap::Keep)
        .unwrap();
    assert_eq!(h.run(), 3);
    let c = completions(&mut h);
    assert!(c
        .iter()
        .all(|c| c.status == BlkStatus::Ok && c.written == 1));
    assert_eq!(h.device.seen[0].request_type, RequestType::Discard.as_u32());
    assert_eq!(h.device.seen[0].ranges, vec![(0, 8, 0), (100, 1, 0)]);
    assert_eq!(h.device.seen[1].ranges, vec![(0, 8, 1), (100, 1, 1)]);
    assert_eq!(h.device.seen[2].ranges, vec![(100, 1, 0)]);
    assert!(h.device.disk[..8 * 512].iter().all(|&b| b == 0));
    assert!(h.device.disk[8 * 512..100 * 512].iter().all(|&b| b == 0xaa));
    assert!(h.device.disk[100 * 512..101 * 512].iter().all(|&b| b == 0));
}

#[test]
fn many_in_flight_with_one_publish_and_out_of_order_completion() {
    for format in FORMATS {
        many_in_flight_with_one_publish_and_out_of_order_completion_on(format);
    }
}

fn many_in_flight_with_one_publish_and_out_of_order_completion_on(format: RingFormat) {
    let mut h = harness(
        features_on(format, BlkFeatures::empty()),
        &config(),
        128,
        64,
    );
    h.device.reverse = true;
    for slot in 0..64u16 {
        let off = usize::from(slot) * 512;
        h.write_data(off, &pattern(slot as u8, 512));
        let b = [h.buf(off, 512)];
        h.q().submit_write(slot, u64::from(slot) * 3, &b).unwrap();
    }
    assert_eq!(h.q().in_flight(), 64);
    // Nothing is visible to the device before the publish.
    assert_eq!(h.device.serve().unwrap(), 0);
    assert_eq!(h.run(), 64);
    let c = completions(&mut h);
    let slots: Vec<u16> = c.iter().map(|c| c.slot).collect();
    assert_eq!(slots, (0..64).rev().collect::<Vec<_>>());
    assert_eq!(h.q().in_flight(), 0);
    for slot in 0..64usize {
        let at = slot * 3 * 512;
        assert_eq!(&h.device.disk[at..at + 512], &pattern(slot as u8, 512)[..]);
    }
    // Every slot is free again.
    assert!((0..64).all(|s| h.q().is_slot_free(s)));
}

#[test]
fn failed_requests_are_completions_not_errors() {
    // IOERR and UNSUPP are answers (virtio 1.2 §5.2.6); a failed request may report only its
    // status byte as written.
    let mut h = harness(features(BlkFeatures::empty()), &config(), 64, 16);
    h.device.answer = BlkStatus::IoErr.as_u8();
    let b = [h.buf(0, 4096)];
    h.q().submit_read(0, 0, &b).unwrap();
    h.run();
    let c = completions(&mut h);
    assert_eq!((c[0].status, c[0].written), (BlkStatus::IoErr, 4097));
    h.device.answer = BlkStatus::Unsupp.as_u8();
    h.device.misbehave = driver_fake::Misbehave::UsedLen(1);
    h.q().submit_read(0, 0, &b).unwrap();
    h.run();
    let c = completions(&mut h);
    assert_eq!((c[0].status, c[0].written), (BlkStatus::Unsupp, 1));
    assert!(!h.q().is_broken());
}

#[test]
fn slots_are_checked() {
    let mut h = harness(features(BlkFeatures::empty()), &config(), 64, 16);
    let b = [h.buf(0, 512)];
    h.q().submit_read(3, 0, &b).unwrap();
    assert_eq!(
        h.q().submit_read(3, 0, &b),
        Err(BlkDriverError::SlotBusy { slot: 3 })
    );
    assert_eq!(
        h.q().submit_flush(16),
        Err(BlkDriverError::NoSuchSlot {
            slot: 16,
            slots: 16
        })
    );
    assert_eq!(h.q().in_flight(), 1);
}

#[test]
fn transfers_that_break_driver_requirements_are_refused() {
    // virtio 1.2 §5.2.6.1: data a multiple of 512 bytes, nothing beyond capacity, no more than
    // seg_max segments, none larger than size_max.
    let mut cfg = config();
    let feats = features(BlkFeatures::SIZE_MAX);
    cfg.size_max = 4096;
    let mut h = harness(feats, &cfg, 64, 16);
    let ok = [h.buf(0, 512)];
    let short = [h.buf(0, 500)];
    assert_eq!(
        h.q().submit_read(0, 0, &short),
        Err(BlkDriverError::LengthNotSectorMultiple { len: 500 })
    );
    assert_eq!(
        h.q().submit_read(0, 0, &[]),
        Err(BlkDriverError::EmptyTransfer)
    );
    assert_eq!(
        h.q().submit_write(0, CAPACITY, &ok),
        Err(BlkDriverError::BeyondCapacity {
            sector: CAPACITY,
            sectors: 1,
            capacity: CAPACITY
        })
    );
    assert_eq!(
        h.q().submit_read(0, u64::MAX, &ok),
        Err(BlkDriverError::BeyondCapacity {
            sector: u64::MAX,
            sectors: 1,
            capacity: CAPACITY
        })
    );
    let nine: Vec<_> = (0..9).map(|i| h.buf(i * 512, 512)).collect();
    assert_eq!(
        h.q().submit_read(0, 0, &nine),
        Err(BlkDriverError::TooManyDataSegments { count: 9, max: 8 })
    );
    let big = [h.buf(0, 8192)];
    assert_eq!(
        h.q().submit_read(0, 0, &big),
        Err(BlkDriverError::SegmentTooLarge {
            len: 8192,
            size_max: 4096
        })
    );
    // Nothing reached the ring, and the slot is still free.
    assert_eq!(h.run(), 0);
    assert!(h.q().is_slot_free(0));
    h.q().submit_read(0, CAPACITY - 1, &ok).unwrap();
    assert_eq!(h.run(), 1);
}

#[test]
fn range_requests_obey_the_device_limits() {
    let mut h = harness(features(BlkFeatures::empty()), &config(), 64, 16);
    let r = |sector, num_sectors| BlkRange {
        sector,
        num_sectors,
    };
    assert_eq!(h.q().submit_discard(0, &[]), Err(BlkDriverError::NoRanges));
    // max_write_zeroes_seg is 2 in the fake's config.
    assert_eq!(
        h.q()
            .submit_write_zeroes(0, &[r(0, 1), r(2, 1), r(4, 1)], Unmap::Keep),
        Err(BlkDriverError::TooManyRanges { count: 3, max: 2 })
    );
    assert_eq!(
        h.q().submit_discard(0, &[r(0, 1025)]),
        Err(BlkDriverError::RangeTooLarge {
            num_sectors: 1025,
            max: 1024
        })
    );
    assert_eq!(
        h.q().submit_discard(0, &[r(CAPACITY, 1)]),
        Err(BlkDriverError::BeyondCapacity {
            sector: CAPACITY,
            sectors: 1,
            capacity: CAPACITY
        })
    );
    assert_eq!(h.run(), 0);
}

#[test]
fn requests_need_their_features() {
    let feats = vireo_spec::Features::VERSION_1 | BlkFeatures::RO.to_features();
    let mut h = harness(feats, &config(), 64, 16);
    let b = [h.buf(0, 512)];
    assert_eq!(h.q().submit_write(0, 0, &b), Err(BlkDriverError::ReadOnly));
    assert_eq!(
        h.q().submit_flush(0),
        Err(BlkDriverError::NotNegotiated {
            feature: BlkFeatures::FLUSH
        })
    );
    assert_eq!(
        h.q().submit_discard(0, &[BlkRange::default()]),
        Err(BlkDriverError::NotNegotiated {
            feature: BlkFeatures::DISCARD
        })
    );
    assert_eq!(
        h.q()
            .submit_write_zeroes(0, &[BlkRange::default()], Unmap::Keep),
        Err(BlkDriverError::NotNegotiated {
            feature: BlkFeatures::WRITE_ZEROES
        })
    );
    // Reads still work on a read-only device.
    h.q().submit_read(0, 0, &b).unwrap();
    assert_eq!(h.run(), 1);
    assert_eq!(completions(&mut h)[0].status, BlkStatus::Ok);
}
