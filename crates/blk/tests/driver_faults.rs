//! A misbehaving device gives the driver a clear error, never a panic, and latches the queue
//! broken (virtio 1.2 §2.1.2: the device needs a reset).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod driver_fake;

use driver_fake::{config, features, harness, Misbehave};
use vireo_blk::driver::{BlkDriverError, DeviceFault, RequestKind};
use vireo_queue::device::{DeviceQueue, DeviceQueueState};
use vireo_queue::driver::{DeviceViolation, DriverQueueError};
use vireo_spec::blk::BlkFeatures;

fn read_with(misbehave: Misbehave) -> (driver_fake::Harness, Result<usize, BlkDriverError>) {
    let mut h = harness(features(BlkFeatures::empty()), &config(), 64, 16);
    h.device.misbehave = misbehave;
    let b = [h.buf(0, 1024)];
    h.q().submit_read(4, 2, &b).unwrap();
    h.run();
    let mut got = Vec::new();
    let r = h.q().poll_completions(|c| got.push(c));
    assert!(
        got.is_empty(),
        "a faulty completion was handed out: {got:?}"
    );
    (h, r)
}

fn assert_latched(h: &mut driver_fake::Harness, fault: DeviceFault) {
    assert!(h.q().is_broken());
    let b = [h.buf(0, 512)];
    assert_eq!(
        h.q().submit_read(0, 0, &b),
        Err(BlkDriverError::Broken(fault))
    );
    assert_eq!(
        h.q().poll_completions(|_| {}),
        Err(BlkDriverError::Broken(fault))
    );
    assert_eq!(h.q().kick_prepare(), Err(BlkDriverError::Broken(fault)));
}

#[test]
fn status_byte_out_of_range_is_a_device_fault() {
    // virtio 1.2 §5.2.6: the status is OK (0), IOERR (1) or UNSUPP (2).
    let (mut h, r) = read_with(Misbehave::Status(7));
    let fault = DeviceFault::InvalidStatus {
        slot: 4,
        request: RequestKind::Read,
        value: 7,
    };
    let err = r.unwrap_err();
    assert_eq!(err, BlkDriverError::Device(fault));
    assert!(err.is_device_fault());
    assert!(err.to_string().contains("status byte 0x07"), "{err}");
    assert_latched(&mut h, fault);
}

#[test]
fn status_never_written_is_caught_by_the_marker() {
    let (mut h, r) = read_with(Misbehave::NoStatus);
    let fault = DeviceFault::InvalidStatus {
        slot: 4,
        request: RequestKind::Read,
        value: 0xff,
    };
    assert_eq!(r, Err(BlkDriverError::Device(fault)));
    assert_latched(&mut h, fault);
}

#[test]
fn zero_used_length_is_a_device_fault() {
    // virtio 1.2 §2.7.8.2: bytes past the used length are not to be relied on; with 0 the
    // status byte is not covered.
    let (mut h, r) = read_with(Misbehave::UsedLen(0));
    let fault = DeviceFault::StatusNotWritten {
        slot: 4,
        request: RequestKind::Read,
    };
    assert_eq!(r, Err(BlkDriverError::Device(fault)));
    assert_latched(&mut h, fault);
}

#[test]
fn successful_read_with_short_used_length_is_a_device_fault() {
    let (mut h, r) = read_with(Misbehave::UsedLen(513));
    let fault = DeviceFault::ShortTransfer {
        slot: 4,
        request: RequestKind::Read,
        written: 513,
        expected: 1025,
    };
    let err = r.unwrap_err();
    assert_eq!(err, BlkDriverError::Device(fault));
    assert!(err.to_string().contains("used length 513"), "{err}");
    assert_latched(&mut h, fault);
}

#[test]
fn used_length_beyond_the_buffer_is_a_ring_fault() {
    // The virtqueue's own check (virtio 1.2 §2.7.8.2), passed through.
    let (mut h, r) = read_with(Misbehave::UsedLen(4096));
    let err = r.unwrap_err();
    assert_eq!(
        err,
        BlkDriverError::Queue(DriverQueueError::Device(
            DeviceViolation::UsedLengthTooLarge {
                written: 4096,
                writable: 1025
            }
        ))
    );
    assert!(err.is_device_fault());
    assert!(h.q().is_broken());
    let b = [h.buf(0, 512)];
    assert!(matches!(
        h.q().submit_read(0, 0, &b),
        Err(BlkDriverError::Queue(DriverQueueError::Broken(_)))
    ));
}

#[test]
fn a_write_reporting_more_than_its_status_byte_is_a_ring_fault() {
    let mut h = harness(features(BlkFeatures::empty()), &config(), 64, 16);
    h.device.misbehave = Misbehave::UsedLen(2);
    let b = [h.buf(0, 512)];
    h.q().submit_write(0, 0, &b).unwrap();
    h.run();
    let err = h.q().poll_completions(|_| {}).unwrap_err();
    assert!(err.is_device_fault(), "{err}");
}

#[test]
fn faults_after_good_completions_keep_the_good_ones() {
    // Completions before the faulty one are handed out; the fault stops the poll.
    let mut h = harness(features(BlkFeatures::empty()), &config(), 64, 16);
    let b = [h.buf(0, 512)];
    h.q().submit_read(0, 0, &b).unwrap();
    h.run();
    h.device.misbehave = Misbehave::Status(9);
    h.q().submit_read(1, 0, &b).unwrap();
    h.run();
    let mut got = Vec::new();
    let r = h.q().poll_completions(|c| got.push(c.slot));
    assert_eq!(got, vec![0]);
    assert!(matches!(
        r,
        Err(BlkDriverError::Device(DeviceFault::InvalidStatus {
            slot: 1,
            value: 9,
            ..
        }))
    ));
}

#[test]
fn reset_after_a_fault_frees_the_slots_and_the_queue_works_again() {
    let mut h = harness(features(BlkFeatures::empty()), &config(), 64, 16);
    let b = [h.buf(0, 512)];
    h.q().submit_read(1, 0, &b).unwrap();
    h.q().submit_read(2, 0, &b).unwrap();
    h.q().kick_prepare().unwrap();
    // The device returns one request without writing its status; the other stays in flight.
    let chain = h.device.queue.pop().unwrap().unwrap();
    h.device.queue.push_used(&chain, 513).unwrap();
    let err = h.q().poll_completions(|_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            BlkDriverError::Device(DeviceFault::InvalidStatus { value: 0xff, .. })
        ),
        "{err}"
    );
    assert!(h.q().is_broken());
    // The device is reset (a new device-side queue), then the driver's queue.
    assert_eq!(h.q().reset(), Ok(1));
    assert!(!h.q().is_broken());
    assert_eq!(h.q().in_flight(), 0);
    assert!((0..16).all(|s| h.q().is_slot_free(s)));
    let config = h.q().virtqueue().config();
    h.device.queue =
        DeviceQueue::new(&*h.device.mem, &config, DeviceQueueState::default()).unwrap();
    h.device.misbehave = Misbehave::Nothing;
    h.q().submit_read(1, 0, &b).unwrap();
    assert_eq!(h.run(), 1);
    let mut got = Vec::new();
    h.q()
        .poll_completions(|c| got.push((c.slot, c.status)))
        .unwrap();
    assert_eq!(got, vec![(1, vireo_spec::blk::BlkStatus::Ok)]);
}
