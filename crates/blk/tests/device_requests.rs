//! The virtio-blk device's request handling (virtio 1.2 §5.2.6), driven by Vireo's own
//! driver-side queue: every request type, and every rule for a bad request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod device_common;

use std::sync::Arc;

use device_common::*;
use vireo_blk::storage::{Access, IoBackend, RamDisk, Storage};
use vireo_memory::OwnedRegion;
use vireo_queue::driver::BufferSegment;
use vireo_queue::RingFormat;
use vireo_spec::blk::BlkFeatures;

const MIB: u64 = 1 << 20;

fn ram(size: u64) -> Arc<RamDisk> {
    Arc::new(RamDisk::new(size).unwrap())
}

fn guest(disk: &Arc<RamDisk>) -> Guest {
    Guest::new(
        Arc::clone(disk) as Arc<dyn Storage>,
        options(1, IoBackend::Synchronous),
        RingFormat::Split,
    )
}

/// Reads `len` bytes of the disk at `offset`, outside the device.
fn disk_bytes(disk: &dyn Storage, offset: u64, len: usize) -> Vec<u8> {
    let area = OwnedRegion::new_area(len).unwrap();
    disk.read_at(offset, &[area.slice()]).unwrap();
    let mut v = vec![0u8; len];
    area.slice().read(0, &mut v).unwrap();
    v
}

fn disk_write(disk: &dyn Storage, offset: u64, bytes: &[u8]) {
    let area = OwnedRegion::new_area(bytes.len()).unwrap();
    area.slice().write(0, bytes).unwrap();
    disk.write_at(offset, &[area.slice()]).unwrap();
}

#[test]
fn write_then_read_back_across_segments() {
    let disk = ram(MIB);
    let mut g = guest(&disk);
    let a = g.alloc(512, 0xa1);
    let b = g.alloc(1024, 0xb2);
    let w = g.request(OUT, 3, &[(a, 512), (b, 1024)], false);
    let ans = g.one(&w);
    assert_eq!(
        (ans.status, ans.written),
        (S_OK, 1),
        "a write writes only the status"
    );
    let mut expected = vec![0xa1; 512];
    expected.extend(vec![0xb2; 1024]);
    assert_eq!(disk_bytes(&*disk, 3 * 512, 1536), expected);

    // Read it back in three differently sized buffers.
    let x = g.alloc(1024, 0);
    let y = g.alloc(256, 0);
    let z = g.alloc(256, 0);
    let r = g.request(IN, 3, &[(x, 1024), (y, 256), (z, 256)], true);
    let ans = g.one(&r);
    assert_eq!((ans.status, ans.written), (S_OK, 1537), "data and status");
    let mut got = g.read(x, 1024);
    got.extend(g.read(y, 256));
    got.extend(g.read(z, 256));
    assert_eq!(got, expected);
}

#[test]
fn flush_succeeds() {
    let disk = ram(MIB);
    let mut g = guest(&disk);
    let f = g.request(FLUSH, 0, &[], false);
    assert_eq!(g.one(&f).status, S_OK);
}

#[test]
fn get_id_returns_the_serial() {
    let mut disk = RamDisk::new(MIB).unwrap();
    disk.set_device_id(*b"serial-0123456789abc");
    let disk = Arc::new(disk);
    let mut g = guest(&disk);
    let id = g.alloc(20, 0xff);
    let r = g.request(GET_ID, 0, &[(id, 20)], true);
    let ans = g.one(&r);
    assert_eq!((ans.status, ans.written), (S_OK, 21));
    assert_eq!(g.read(id, 20), b"serial-0123456789abc");
}

#[test]
fn discard_and_write_zeroes_read_back_as_zeroes() {
    let disk = ram(MIB);
    disk_write(&*disk, 0, &vec![0x55; 8192]);
    let mut g = guest(&disk);
    let d = g.range_request(DISCARD, 2, 2, 0);
    assert_eq!(g.one(&d).status, S_OK);
    let z = g.range_request(WRITE_ZEROES, 8, 4, 0);
    assert_eq!(g.one(&z).status, S_OK);
    let zu = g.range_request(WRITE_ZEROES, 14, 1, 1);
    assert_eq!(g.one(&zu).status, S_OK, "write zeroes with UNMAP");
    let bytes = disk_bytes(&*disk, 0, 8192);
    for (sector, chunk) in bytes.chunks(512).enumerate() {
        let zero = matches!(sector, 2 | 3 | 8..=11 | 14);
        let want = if zero { 0 } else { 0x55 };
        assert!(chunk.iter().all(|&b| b == want), "sector {sector}");
    }
}

#[test]
fn unknown_and_unsupported_types_get_unsupp() {
    let disk = ram(MIB);
    let mut g = guest(&disk);
    for kind in [GET_LIFETIME, 2, 14, 16, 0xdead_beef] {
        let buf = g.alloc(512, 0);
        let r = g.request(kind, 0, &[(buf, 512)], true);
        assert_eq!(g.one(&r).status, S_UNSUPP, "type {kind}");
    }
}

#[test]
fn commands_without_their_feature_get_unsupp() {
    let disk = ram(MIB);
    disk_write(&*disk, 0, &[0x77; 512]);
    let acked = guest_features(RingFormat::Split)
        & !(BlkFeatures::FLUSH | BlkFeatures::DISCARD | BlkFeatures::WRITE_ZEROES).bits();
    let mut g = Guest::with_features(
        Arc::clone(&disk) as Arc<dyn Storage>,
        options(1, IoBackend::Synchronous),
        RingFormat::Split,
        acked,
    );
    let f = g.request(FLUSH, 0, &[], false);
    assert_eq!(g.one(&f).status, S_UNSUPP);
    let d = g.range_request(DISCARD, 0, 1, 0);
    assert_eq!(g.one(&d).status, S_UNSUPP);
    let z = g.range_request(WRITE_ZEROES, 0, 1, 0);
    assert_eq!(g.one(&z).status, S_UNSUPP);
    assert_eq!(disk_bytes(&*disk, 0, 512), vec![0x77; 512]);
}

#[test]
fn requests_beyond_the_capacity_fail_and_touch_nothing() {
    // Virtio 1.2 §5.2.6: sectors address the device; nothing past the capacity exists.
    let disk = ram(64 * 512);
    disk_write(&*disk, 63 * 512, &[0x42; 512]);
    let mut g = guest(&disk);
    let buf = g.alloc(1024, 0x99);
    let cases = [
        (OUT, 63, 1024u32), // straddles the end
        (OUT, 64, 512),     // starts at the end
        (IN, 63, 1024),
        (IN, 64, 512),
        (OUT, u64::MAX / 256, 512), // offset overflows
        (IN, u64::MAX, 512),
    ];
    for (kind, sector, len) in cases {
        let r = g.request(kind, sector, &[(buf, len)], kind == IN);
        let ans = g.one(&r);
        assert_eq!(ans.status, S_IOERR, "type {kind} sector {sector}");
    }
    for (kind, sector, sectors) in [
        (DISCARD, 63, 2),
        (WRITE_ZEROES, 63, 2),
        (WRITE_ZEROES, u64::MAX / 2, 1),
    ] {
        let r = g.range_request(kind, sector, sectors, 0);
        assert_eq!(g.one(&r).status, S_IOERR, "type {kind} sector {sector}");
    }
    assert_eq!(disk_bytes(&*disk, 63 * 512, 512), vec![0x42; 512]);
    assert_eq!(disk.capacity(), 64 * 512);
}

#[test]
fn a_short_header_is_an_io_error() {
    let disk = ram(MIB);
    let mut g = guest(&disk);
    let hdr = g.header(IN, 0);
    let status = g.status_byte();
    let buf = g.alloc(512, 0);
    let r = Req {
        readable: vec![BufferSegment::new(hdr, 12)],
        writable: vec![BufferSegment::new(buf, 512), BufferSegment::new(status, 1)],
        status: Some(status),
    };
    assert_eq!(g.one(&r).status, S_IOERR);
}

#[test]
fn data_in_the_wrong_direction_is_an_io_error() {
    let disk = ram(MIB);
    disk_write(&*disk, 0, &[0x33; 512]);
    let mut g = guest(&disk);
    let buf = g.alloc(512, 0x11);
    // A read whose data the device would have to read, a write whose data it would write.
    let r = g.request(IN, 0, &[(buf, 512)], false);
    assert_eq!(g.one(&r).status, S_IOERR);
    let w = g.request(OUT, 0, &[(buf, 512)], true);
    assert_eq!(g.one(&w).status, S_IOERR);
    let f = g.request(FLUSH, 0, &[(buf, 512)], true);
    assert_eq!(g.one(&f).status, S_IOERR);
    assert_eq!(disk_bytes(&*disk, 0, 512), vec![0x33; 512]);
    assert_eq!(
        g.read(buf, 512),
        vec![0x11; 512],
        "the buffer was not written"
    );
}

#[test]
fn a_chain_without_a_status_byte_is_used_with_length_zero() {
    let disk = ram(MIB);
    disk_write(&*disk, 0, &[0x21; 512]);
    let mut g = guest(&disk);
    let hdr = g.header(OUT, 0);
    let buf = g.alloc(512, 0xcc);
    let r = Req {
        readable: vec![BufferSegment::new(hdr, 16), BufferSegment::new(buf, 512)],
        writable: vec![],
        status: None,
    };
    let ans = g.one(&r);
    assert_eq!(ans.written, 0);
    assert_eq!(disk_bytes(&*disk, 0, 512), vec![0x21; 512], "not executed");
}

#[test]
fn too_many_segments_is_an_io_error() {
    let disk = ram(MIB);
    let mut g = guest(&disk);
    let seg_max = g.device.config().seg_max;
    let bufs: Vec<(u64, u32)> = (0..=seg_max).map(|_| (g.alloc(512, 0x5a), 512)).collect();
    let w = g.request(OUT, 0, &bufs, false);
    assert_eq!(g.one(&w).status, S_IOERR);
    assert_eq!(disk_bytes(&*disk, 0, 512), vec![0; 512]);
    // Exactly seg_max is fine.
    let w = g.request(OUT, 0, &bufs[..seg_max as usize], false);
    assert_eq!(g.one(&w).status, S_OK);
    assert_eq!(disk_bytes(&*disk, 0, 512), vec![0x5a; 512]);
}

#[test]
fn partial_sectors_are_an_io_error() {
    let disk = ram(MIB);
    let mut g = guest(&disk);
    let buf = g.alloc(1000, 0x6b);
    let w = g.request(OUT, 0, &[(buf, 1000)], false);
    assert_eq!(g.one(&w).status, S_IOERR);
    let r = g.request(IN, 0, &[(buf, 100)], true);
    assert_eq!(g.one(&r).status, S_IOERR);
    assert_eq!(disk_bytes(&*disk, 0, 1024), vec![0; 1024]);
}

#[test]
fn a_read_only_device_refuses_writes() {
    // Virtio 1.2 §5.2.6.2: IOERR for a write when VIRTIO_BLK_F_RO is offered.
    let disk = Arc::new(RamDisk::with_access(MIB, Access::ReadOnly).unwrap());
    let mut g = guest(&disk);
    assert_ne!(
        vireo_vhost_user::device::VhostUserDevice::features(&*g.device) & BlkFeatures::RO.bits(),
        0
    );
    let buf = g.alloc(512, 0x10);
    let w = g.request(OUT, 0, &[(buf, 512)], false);
    assert_eq!(g.one(&w).status, S_IOERR);
    let d = g.range_request(DISCARD, 0, 1, 0);
    assert_ne!(g.one(&d).status, S_OK);
    let z = g.range_request(WRITE_ZEROES, 0, 1, 0);
    assert_ne!(g.one(&z).status, S_OK);
    let r = g.request(IN, 0, &[(buf, 512)], true);
    assert_eq!(g.one(&r).status, S_OK, "reads work");
    assert_eq!(g.read(buf, 512), vec![0; 512]);
}

#[test]
fn bad_discard_payloads() {
    // Virtio 1.2 §5.2.6.2.
    let disk = ram(MIB);
    disk_write(&*disk, 0, &[0x44; 4096]);
    let mut g = guest(&disk);
    let d = g.range_request(DISCARD, 0, 1, 1);
    assert_eq!(g.one(&d).status, S_UNSUPP, "discard with UNMAP");
    let z = g.range_request(WRITE_ZEROES, 0, 1, 2);
    assert_eq!(g.one(&z).status, S_UNSUPP, "reserved flag");
    let big = g.range_request(DISCARD, 0, u32::MAX, 0);
    assert_eq!(g.one(&big).status, S_IOERR, "beyond max_discard_sectors");
    // Two segments: more than max_discard_seg (1).
    let two = g.alloc(32, 0);
    let mut b = [0u8; 32];
    b[8] = 1;
    b[24] = 1;
    g.write(two, &b);
    let r = g.request(DISCARD, 0, &[(two, 32)], false);
    assert_eq!(g.one(&r).status, S_UNSUPP);
    // Not whole segments.
    let r = g.request(DISCARD, 0, &[(two, 15)], false);
    assert_eq!(g.one(&r).status, S_IOERR);
    assert_eq!(disk_bytes(&*disk, 0, 4096), vec![0x44; 4096]);
}

#[test]
fn framing_is_not_assumed() {
    // Virtio 1.2 §2.7.4: the header split over two descriptors, data and status in one.
    let disk = ram(MIB);
    disk_write(&*disk, 5 * 512, &[0x3c; 512]);
    let mut g = guest(&disk);
    let hdr = g.header(IN, 5);
    let buf = g.alloc(513, 0);
    let r = Req {
        readable: vec![BufferSegment::new(hdr, 8), BufferSegment::new(hdr + 8, 8)],
        writable: vec![BufferSegment::new(buf, 513)],
        status: Some(buf + 512),
    };
    let ans = g.one(&r);
    assert_eq!((ans.status, ans.written), (S_OK, 513));
    assert_eq!(g.read(buf, 512), vec![0x3c; 512]);
    // A write whose data shares the header's descriptor.
    let both = g.alloc(16 + 512, 0x7e);
    g.write(both, &{
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&OUT.to_le_bytes());
        h[8..].copy_from_slice(&9u64.to_le_bytes());
        h
    });
    let status = g.status_byte();
    let w = Req {
        readable: vec![BufferSegment::new(both, 16 + 512)],
        writable: vec![BufferSegment::new(status, 1)],
        status: Some(status),
    };
    assert_eq!(g.one(&w).status, S_OK);
    assert_eq!(disk_bytes(&*disk, 9 * 512, 512), vec![0x7e; 512]);
}
