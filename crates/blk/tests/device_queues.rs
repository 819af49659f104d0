//! The virtio-blk device's queues: many requests in flight (io_uring where the kernel allows
//! it), several queues, a broken ring stopping only its own queue, draining on stop, the
//! configuration space.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod device_common;

use std::io::Write as _;
use std::sync::Arc;

use device_common::*;
use vireo_blk::device::{BlkDevice, BlkOptions};
use vireo_blk::storage::{FileDisk, FileOptions, IoBackend, RamDisk, Storage};
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkConfig, BlkFeatures};
use vireo_vhost_user::device::{ConfigError, VhostUserDevice};
use vireo_vhost_user::message::ConfigAccess;

const SECTORS: u64 = 4096;

/// The ring formats the device offers.
fn formats() -> Vec<RingFormat> {
    let disk = Arc::new(RamDisk::new(1 << 20).unwrap()) as Arc<dyn Storage>;
    let device = BlkDevice::new(disk, BlkOptions::default()).unwrap();
    let packed = device.features() & vireo_spec::Features::RING_PACKED.bits() != 0;
    let mut v = vec![RingFormat::Split];
    if packed {
        v.push(RingFormat::Packed);
    }
    v
}

/// An image file of `SECTORS` sectors where sector `n` is filled with `n as u8`.
fn image() -> (tempfile::NamedTempFile, Arc<FileDisk>) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for n in 0..SECTORS {
        f.write_all(&[n as u8; 512]).unwrap();
    }
    f.flush().unwrap();
    let disk = FileDisk::open(f.path(), &FileOptions::default()).unwrap();
    (f, Arc::new(disk))
}

/// Writes 48 distinct requests at once on queue `q`, then reads them back 48 at once.
fn many_in_flight(g: &mut Guest, q: usize, base_sector: u64) {
    let n = 48u32;
    let mut reqs = Vec::new();
    for i in 0..n {
        let fill = (i as u8).wrapping_mul(7).wrapping_add(q as u8);
        let buf = g.alloc(1024, fill);
        let r = g.request(OUT, base_sector + u64::from(i) * 2, &[(buf, 1024)], false);
        g.add(q, &r, i);
        reqs.push((i, r.status));
    }
    let answers = g.run(q, n as usize, &reqs);
    assert_eq!(answers.len(), n as usize);
    assert!(
        answers.iter().all(|a| a.status == S_OK && a.written == 1),
        "{answers:?}"
    );
    let mut reads = Vec::new();
    let mut bufs = Vec::new();
    for i in 0..n {
        let buf = g.alloc(1024, 0);
        let r = g.request(
            IN,
            base_sector + u64::from(i) * 2,
            &[(buf, 512), (buf + 512, 512)],
            true,
        );
        g.add(q, &r, 1000 + i);
        reads.push((1000 + i, r.status));
        bufs.push(buf);
    }
    let answers = g.run(q, n as usize, &reads);
    assert!(
        answers
            .iter()
            .all(|a| a.status == S_OK && a.written == 1025),
        "{answers:?}"
    );
    for (i, buf) in bufs.iter().enumerate() {
        let fill = (i as u8).wrapping_mul(7).wrapping_add(q as u8);
        assert_eq!(g.read(*buf, 1024), vec![fill; 1024], "request {i}");
    }
}

#[test]
fn many_requests_in_flight_on_an_image_file() {
    for format in formats() {
        let (_f, disk) = image();
        let mut g = Guest::new(
            disk.clone() as Arc<dyn Storage>,
            options(1, IoBackend::Auto),
            format,
        );
        // The pattern is there before the device writes anything.
        let buf = g.alloc(512, 0);
        let r = g.request(IN, 77, &[(buf, 512)], true);
        assert_eq!(g.one(&r).status, S_OK);
        assert_eq!(g.read(buf, 512), vec![77; 512]);
        g.free_all();
        many_in_flight(&mut g, 0, 100);
    }
}

#[test]
fn synchronous_and_io_uring_backends_agree() {
    for backend in [IoBackend::Synchronous, IoBackend::Auto] {
        let (_f, disk) = image();
        let mut g = Guest::new(
            disk as Arc<dyn Storage>,
            options(1, backend),
            RingFormat::Split,
        );
        many_in_flight(&mut g, 0, 0);
    }
}

#[test]
fn several_queues_work_side_by_side() {
    for format in formats() {
        several_queues(format);
    }
}

fn several_queues(format: RingFormat) {
    let (_f, disk) = image();
    let mut g = Guest::new(
        disk.clone() as Arc<dyn Storage>,
        options(4, IoBackend::Auto),
        format,
    );
    // Requests on every queue at once, then each queue completes its own.
    let mut pending = Vec::new();
    for q in 0..4usize {
        let buf = g.alloc(512, 0xa0 + q as u8);
        let r = g.request(OUT, 1000 + q as u64, &[(buf, 512)], false);
        g.add(q, &r, q as u32);
        pending.push((q, r.status));
    }
    for (q, status) in pending {
        let a = g.run(q, 1, &[(q as u32, status)]);
        assert_eq!(a[0].status, S_OK, "queue {q}");
    }
    for q in 0..4usize {
        many_in_flight(&mut g, q, 2000 + 128 * q as u64);
    }
    for q in 0..4u64 {
        let buf = g.alloc(512, 0);
        let r = g.request(IN, 1000 + q, &[(buf, 512)], true);
        assert_eq!(g.one(&r).status, S_OK);
        assert_eq!(g.read(buf, 512), vec![0xa0 + q as u8; 512]);
    }
}

#[test]
fn a_ring_violation_stops_only_its_queue() {
    let disk = Arc::new(RamDisk::new(1 << 20).unwrap());
    let mut g = Guest::new(
        disk as Arc<dyn Storage>,
        options(2, IoBackend::Synchronous),
        RingFormat::Split,
    );
    // Queue 0's driver publishes an avail index far beyond the queue size (virtio 1.2 §2.7.6).
    let avail_idx = g.queues[0].driver.addresses().driver_area + 2;
    g.write(avail_idx, &200u16.to_le_bytes());
    let err = g.process(0).unwrap_err();
    assert!(err.to_string().contains("avail"), "{err}");
    assert!(g.queues[0].device.is_broken());
    // Queue 1 carries on.
    let buf = g.alloc(512, 0x5e);
    let w = g.request(OUT, 0, &[(buf, 512)], false);
    g.add(1, &w, 1);
    let a = g.run(1, 1, &[(1, w.status)]);
    assert_eq!(a[0].status, S_OK);
}

#[test]
fn drain_completes_every_request_in_flight() {
    for format in formats() {
        drain_in_flight(format);
    }
}

fn drain_in_flight(format: RingFormat) {
    let (_f, disk) = image();
    let mut g = Guest::new(
        disk as Arc<dyn Storage>,
        options(1, IoBackend::Auto),
        format,
    );
    let mut statuses = Vec::new();
    for i in 0..32u32 {
        let buf = g.alloc(4096, i as u8);
        let r = g.request(OUT, u64::from(i) * 8, &[(buf, 4096)], false);
        g.add(0, &r, i);
        statuses.push(r.status.unwrap());
    }
    g.process(0).unwrap();
    g.drain(0);
    let mut used = 0;
    while let Some(u) = g.queues[0].driver.pop_used().unwrap() {
        assert_eq!(u.written, 1);
        used += 1;
    }
    assert_eq!(used, 32, "every request is used after drain");
    for s in statuses {
        assert_eq!(g.read(s, 1)[0], S_OK);
    }
}

#[test]
fn config_space_describes_the_disk() {
    let disk = Arc::new(RamDisk::new(8 << 20).unwrap());
    let device = BlkDevice::new(
        disk as Arc<dyn Storage>,
        BlkOptions {
            num_queues: 4,
            ..BlkOptions::default()
        },
    )
    .unwrap();
    let mut raw = [0u8; 60];
    device.read_config(0, &mut raw).unwrap();
    let c = BlkConfig::parse(&raw).unwrap();
    assert_eq!(c.capacity, (8 << 20) / 512);
    assert_eq!(c.num_queues, 4);
    assert_eq!(c.blk_size, 512);
    assert!(c.seg_max >= 1 && c.size_max >= 4096);
    assert_eq!(c.writeback, 1);
    assert_eq!(c.max_discard_seg, 1);
    let f = device.features();
    for bit in [
        BlkFeatures::MQ,
        BlkFeatures::FLUSH,
        BlkFeatures::DISCARD,
        BlkFeatures::WRITE_ZEROES,
    ] {
        assert_ne!(f & bit.bits(), 0, "{bit:?}");
    }
    assert_eq!(f & BlkFeatures::RO.bits(), 0);
    // Reads past the structure are refused.
    let mut big = [0u8; 8];
    assert!(matches!(
        device.read_config(92, &mut big),
        Err(ConfigError::OutOfRange { .. })
    ));
    // `writeback` is writable only once CONFIG_WCE is negotiated (virtio 1.2 §5.2.5).
    assert!(device
        .write_config(32, &[0], ConfigAccess::Writable)
        .is_err());
    device.set_features(f);
    device
        .write_config(32, &[0], ConfigAccess::Writable)
        .unwrap();
    assert_eq!(device.config().writeback, 0);
    assert!(
        device
            .write_config(0, &[1], ConfigAccess::Writable)
            .is_err(),
        "capacity is read-only"
    );
    device.reset();
    assert_eq!(
        device.config().writeback,
        1,
        "reset restores the cache mode"
    );
}

#[test]
fn bad_options_are_refused() {
    let disk = || Arc::new(RamDisk::new(1 << 20).unwrap()) as Arc<dyn Storage>;
    let zero = BlkOptions {
        num_queues: 0,
        ..BlkOptions::default()
    };
    assert!(BlkDevice::new(disk(), zero).is_err());
    let odd = BlkOptions {
        max_queue_size: 100,
        ..BlkOptions::default()
    };
    assert!(BlkDevice::new(disk(), odd).is_err());
}
