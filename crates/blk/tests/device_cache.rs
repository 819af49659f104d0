//! The device's cache mode (virtio 1.2 §5.2.4 `writeback`, §5.2.5): in writethrough mode every
//! write is flushed before it completes; in writeback mode only FLUSH flushes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod device_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use device_common::*;
use vireo_blk::device::{BlkOptions, CachePolicy};
use vireo_blk::storage::{IoBackend, RamDisk, Storage, StorageError, ZeroesMode, DEVICE_ID_LEN};
use vireo_memory::SharedSlice;
use vireo_queue::RingFormat;
use vireo_spec::blk::BlkFeatures;
use vireo_vhost_user::device::VhostUserDevice;
use vireo_vhost_user::message::ConfigAccess;

/// A RAM disk that counts its flushes.
#[derive(Debug)]
struct Counting {
    disk: RamDisk,
    flushes: AtomicUsize,
}

impl Storage for Counting {
    fn capacity(&self) -> u64 {
        self.disk.capacity()
    }
    fn read_only(&self) -> bool {
        self.disk.read_only()
    }
    fn device_id(&self) -> [u8; DEVICE_ID_LEN] {
        self.disk.device_id()
    }
    fn read_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError> {
        self.disk.read_at(offset, bufs)
    }
    fn write_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError> {
        self.disk.write_at(offset, bufs)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.disk.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        self.disk.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroesMode) -> Result<(), StorageError> {
        self.disk.write_zeroes(offset, len, mode)
    }
}

fn setup(cache: CachePolicy, acked: u64) -> (Arc<Counting>, Guest) {
    let disk = Arc::new(Counting {
        disk: RamDisk::new(1 << 20).unwrap(),
        flushes: AtomicUsize::new(0),
    });
    let options = BlkOptions {
        cache,
        ..options(1, IoBackend::Synchronous)
    };
    let g = Guest::with_features(
        Arc::clone(&disk) as Arc<dyn Storage>,
        options,
        RingFormat::Split,
        acked,
    );
    (disk, g)
}

fn write(g: &mut Guest) {
    g.free_all();
    let buf = g.alloc(512, 0x12);
    let w = g.request(OUT, 1, &[(buf, 512)], false);
    assert_eq!(g.one(&w).status, S_OK);
}

#[test]
fn writeback_flushes_only_on_flush() {
    let (disk, mut g) = setup(CachePolicy::WriteBack, guest_features(RingFormat::Split));
    write(&mut g);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 0);
    let f = g.request(FLUSH, 0, &[], false);
    assert_eq!(g.one(&f).status, S_OK);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 1);
}

#[test]
fn writethrough_flushes_every_write() {
    let (disk, mut g) = setup(CachePolicy::WriteThrough, guest_features(RingFormat::Split));
    assert_eq!(g.device.config().writeback, 0);
    write(&mut g);
    write(&mut g);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 2);
}

#[test]
fn the_driver_switches_the_cache_mode() {
    let (disk, mut g) = setup(CachePolicy::WriteBack, guest_features(RingFormat::Split));
    g.device
        .write_config(32, &[0], ConfigAccess::Writable)
        .unwrap();
    write(&mut g);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 1, "now writethrough");
    g.device
        .write_config(32, &[1], ConfigAccess::Writable)
        .unwrap();
    write(&mut g);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 1, "writeback again");
}

#[test]
fn a_driver_that_cannot_flush_gets_writethrough() {
    // Neither FLUSH nor CONFIG_WCE negotiated (virtio 1.2 §5.2.5.2).
    let acked =
        guest_features(RingFormat::Split) & !(BlkFeatures::FLUSH | BlkFeatures::CONFIG_WCE).bits();
    let (disk, mut g) = setup(CachePolicy::WriteBack, acked);
    write(&mut g);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 1);
}

#[test]
fn config_wce_without_flush_starts_in_writethrough() {
    let acked = guest_features(RingFormat::Split) & !BlkFeatures::FLUSH.bits();
    let (disk, mut g) = setup(CachePolicy::WriteBack, acked);
    assert_eq!(g.device.config().writeback, 0);
    write(&mut g);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 1);
}
