//! Inflight I/O tracking end to end, in process (QEMU `docs/interop/vhost-user.rst`,
//! "Inflight I/O tracking"): Vireo's front-end gets the region from one back-end, whose device
//! completes some requests out of order and holds the others; the connection drops; a new
//! back-end gets the same region and ring back (`SET_INFLIGHT_FD`, base = `used.idx` as QEMU
//! sends after losing its back-end) and must complete every request exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::ring::{kick, wait_fd, Driver, AVAIL, DESC, MEM_SIZE, QSIZE, USED, USER_BASE};
use common::{eventfd, memfd};
use vireo_memory::mmap::MmapRegion;
use vireo_memory::{GuestMemoryMap, SharedArea};
use vireo_queue::device::{AvailChain, DeviceQueue, DeviceQueueError, Direction};
use vireo_spec::split::desc;
use vireo_vhost_user::backend::SUPPORTED_PROTOCOL_FEATURES;
use vireo_vhost_user::frontend::{Frontend, RingEnable};
use vireo_vhost_user::message::{
    ConfigAccess, Inflight, MemoryRegion, ProtocolFeatures, VringAddr,
    VHOST_USER_F_PROTOCOL_FEATURES,
};
use vireo_vhost_user::{BackendServer, ConfigError, QueueHandler, StopHandle, VhostUserDevice};

const VERSION_1: u64 = 1 << 32;
/// Guest address of head `h`'s 8-byte buffer.
fn buf(h: u16) -> u64 {
    0x3000 + 0x100 * u64::from(h)
}

/// A one-queue device that writes `[tag, head]` into each chain's buffer and completes the
/// heads in `complete`, holding every other one forever (`drain` does nothing: like a crash,
/// the session ends with them in flight).
#[derive(Debug)]
struct HoldDevice {
    tag: u8,
    complete: Vec<u16>,
    seen: Arc<Mutex<Vec<u16>>>,
    inflight: bool,
}

impl VhostUserDevice for HoldDevice {
    fn features(&self) -> u64 {
        VERSION_1
    }
    fn protocol_features(&self) -> ProtocolFeatures {
        if self.inflight {
            SUPPORTED_PROTOCOL_FEATURES
        } else {
            SUPPORTED_PROTOCOL_FEATURES.difference(ProtocolFeatures::INFLIGHT_SHMFD)
        }
    }
    fn num_queues(&self) -> u16 {
        1
    }
    fn max_queue_size(&self) -> u16 {
        256
    }
    fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), ConfigError> {
        Err(ConfigError::OutOfRange {
            offset,
            len: buf.len(),
        })
    }
    fn write_config(&self, offset: u32, _: &[u8], _: ConfigAccess) -> Result<(), ConfigError> {
        Err(ConfigError::ReadOnly { offset })
    }
    fn queue_handler(&self, _: u16) -> Box<dyn QueueHandler> {
        Box::new(HoldHandler {
            tag: self.tag,
            complete: self.complete.clone(),
            seen: Arc::clone(&self.seen),
            held: Vec::new(),
        })
    }
    fn reset(&self) {}
}

struct HoldHandler {
    tag: u8,
    complete: Vec<u16>,
    seen: Arc<Mutex<Vec<u16>>>,
    held: Vec<AvailChain>,
}

impl QueueHandler for HoldHandler {
    fn process(
        &mut self,
        queue: &mut DeviceQueue,
        mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError> {
        while let Some(chain) = queue.pop()? {
            self.seen.lock().unwrap().push(chain.id());
            if !self.complete.contains(&chain.id()) {
                self.held.push(chain);
                continue;
            }
            let mut written = 0;
            for seg in queue.chain(&chain, mem) {
                let seg = seg?;
                if seg.direction == Direction::DeviceWritable {
                    let data = [self.tag, chain.id() as u8, 0, 0, 0, 0, 0, 0];
                    seg.slice.write(0, &data).unwrap();
                    written += 8;
                }
            }
            queue.add_used(&chain, written)?;
        }
        Ok(())
    }
}

struct Backend {
    stop: StopHandle,
    thread: JoinHandle<()>,
    path: PathBuf,
}

impl Backend {
    fn start(name: &str, device: HoldDevice) -> Backend {
        let path = std::env::temp_dir().join(format!("vireo-{name}-{}.sock", std::process::id()));
        let mut server = BackendServer::bind(&path).unwrap();
        let stop = StopHandle::new().unwrap();
        let s = stop.clone();
        let thread = std::thread::spawn(move || server.serve(Arc::new(device), &s).unwrap());
        Backend { stop, thread, path }
    }
    fn stop(self) {
        self.stop.stop();
        self.thread.join().unwrap();
    }
}

/// The guest: memory, the split ring at DESC/AVAIL/USED, and the driver's index.
struct Guest {
    fd: OwnedFd,
    driver: Driver,
    kick: OwnedFd,
    call: OwnedFd,
}

impl Guest {
    fn new() -> Guest {
        let (fd, mem) = memfd(MEM_SIZE);
        let driver = Driver {
            mem,
            base: 0,
            avail_idx: 0,
        };
        for h in 0..QSIZE as u16 {
            driver.desc(h, buf(h), 8, desc::F_WRITE, 0);
        }
        Guest {
            fd,
            driver,
            kick: eventfd(),
            call: eventfd(),
        }
    }

    fn offer(&mut self, heads: &[u16]) {
        for &h in heads {
            self.driver.make_available(h);
        }
        kick(&self.kick);
    }

    fn wait_used(&self, idx: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.driver.used_idx() != idx {
            assert!(
                Instant::now() < deadline,
                "used.idx stuck at {}, want {idx}",
                self.driver.used_idx()
            );
            wait_fd(&self.call, Duration::from_millis(20));
        }
    }

    /// Every used entry so far: (head, tag of the back-end that completed it).
    fn used(&self) -> Vec<(u16, u8)> {
        let mut out = Vec::new();
        for i in 0..self.driver.used_idx() {
            let (id, len) = self.driver.used_elem(i % QSIZE as u16);
            assert_eq!(len, 8);
            let head = id as u16;
            let mut data = [0u8; 8];
            self.driver
                .mem
                .slice()
                .read(buf(head) as usize, &mut data)
                .unwrap();
            assert_eq!(data[1], head as u8, "the buffer names its head");
            out.push((head, data[0]));
        }
        out
    }

    /// Connects and starts the ring the way QEMU's vhost-user-blk does: features, protocol
    /// features, then the inflight region (`get` for a fresh one, or the kept one), memory,
    /// and the ring resuming at `base`.
    fn attach(
        &self,
        path: &PathBuf,
        inflight: Option<(&OwnedFd, &Inflight)>,
        base: u32,
    ) -> (Frontend, Option<(OwnedFd, Inflight)>) {
        let mut fe = Frontend::connect(path).unwrap();
        fe.set_owner().unwrap();
        assert_ne!(
            fe.get_features().unwrap() & VHOST_USER_F_PROTOCOL_FEATURES,
            0
        );
        let offered = fe.get_protocol_features().unwrap();
        let wanted = ProtocolFeatures::REPLY_ACK | ProtocolFeatures::INFLIGHT_SHMFD;
        fe.set_protocol_features(offered & wanted).unwrap();
        fe.set_features(VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES)
            .unwrap();
        let mut fresh = None;
        if offered.contains(ProtocolFeatures::INFLIGHT_SHMFD) {
            match inflight {
                Some((fd, d)) => fe.set_inflight_fd(d, fd.as_fd()).unwrap(),
                None => {
                    let (fd, d) = fe.get_inflight_fd(1, QSIZE as u16).unwrap();
                    fe.set_inflight_fd(&d, fd.as_fd()).unwrap();
                    fresh = Some((fd, d));
                }
            }
        }
        let region = MemoryRegion {
            guest_addr: 0,
            size: MEM_SIZE,
            user_addr: USER_BASE,
            mmap_offset: 0,
        };
        fe.set_mem_table(&[region], &[self.fd.as_fd()]).unwrap();
        fe.set_vring_num(0, QSIZE).unwrap();
        fe.set_vring_base(0, base).unwrap();
        fe.set_vring_addr(&VringAddr {
            index: 0,
            flags: 0,
            desc: USER_BASE + DESC,
            used: USER_BASE + USED,
            avail: USER_BASE + AVAIL,
            log: 0,
        })
        .unwrap();
        fe.set_vring_call(0, Some(self.call.as_fd())).unwrap();
        fe.set_vring_kick(0, Some(self.kick.as_fd())).unwrap();
        fe.set_vring_enable(0, RingEnable::Enabled).unwrap();
        (fe, fresh)
    }
}

fn wait_seen(seen: &Mutex<Vec<u16>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "the device saw {:?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Session 1 pops heads 0..4, completes 1 and 3 (out of order) and holds 0 and 2; the
/// connection drops; the driver offers 4 and 5; session 2 starts at base = used.idx = 2.
/// Returns the guest and what session 2's device saw.
fn crash_and_restart(track: bool) -> (Guest, Vec<u16>) {
    let mut guest = Guest::new();
    let seen1 = Arc::new(Mutex::new(Vec::new()));
    let one = Backend::start(
        &format!("inflight-one-{track}"),
        HoldDevice {
            tag: 1,
            complete: vec![1, 3],
            seen: Arc::clone(&seen1),
            inflight: track,
        },
    );
    let (fe, region) = guest.attach(&one.path, None, 0);
    assert_eq!(region.is_some(), track);
    guest.offer(&[0, 1, 2, 3]);
    guest.wait_used(2);
    wait_seen(&seen1, 4);
    // The back-end goes away with 0 and 2 in flight.
    drop(fe);
    one.stop();
    guest.offer(&[4, 5]);

    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let two = Backend::start(
        &format!("inflight-two-{track}"),
        HoldDevice {
            tag: 2,
            complete: (0..QSIZE as u16).collect(),
            seen: Arc::clone(&seen2),
            inflight: track,
        },
    );
    let base = u32::from(guest.driver.used_idx());
    let kept = region.as_ref().map(|(fd, d)| (fd, d));
    let (fe, _) = guest.attach(&two.path, kept, base);
    wait_seen(&seen2, 4);
    guest.wait_used(6);
    drop(fe);
    two.stop();
    let seen = seen2.lock().unwrap().clone();
    (guest, seen)
}

#[test]
fn every_request_completes_exactly_once_across_a_backend_restart() {
    let (guest, seen) = crash_and_restart(true);
    assert_eq!(
        seen,
        [0, 2, 4, 5],
        "held heads first, in pop order, then the ring from after them"
    );
    let mut used = guest.used();
    assert_eq!(&used[..2], &[(1, 1), (3, 1)]);
    used.sort_unstable();
    assert_eq!(used, [(0, 2), (1, 1), (2, 2), (3, 1), (4, 2), (5, 2)]);
}

/// The negative control: the same crash without the region loses head 0 and completes head 3
/// twice (the base QEMU sends after a crash is only `used.idx`).
#[test]
fn without_inflight_tracking_the_same_crash_loses_and_repeats_requests() {
    let (guest, seen) = crash_and_restart(false);
    assert_eq!(seen, [2, 3, 4, 5]);
    let heads: Vec<u16> = guest.used().iter().map(|&(h, _)| h).collect();
    assert!(!heads.contains(&0), "head 0 is lost");
    assert_eq!(heads.iter().filter(|&&h| h == 3).count(), 2, "head 3 twice");
}

/// A region full of garbage must not stop the ring: the record is initialised afresh and new
/// requests complete.
#[test]
fn a_garbage_region_is_survived() {
    let mut guest = Guest::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let backend = Backend::start(
        "inflight-garbage",
        HoldDevice {
            tag: 3,
            complete: (0..QSIZE as u16).collect(),
            seen: Arc::clone(&seen),
            inflight: true,
        },
    );
    let (fe, region) = guest.attach(&backend.path, None, 0);
    drop(fe);
    let (fd, d) = region.unwrap();
    let map: SharedArea = MmapRegion::map(&fd, 0, d.mmap_size)
        .unwrap()
        .into_area()
        .unwrap();
    map.slice().fill(0, map.len(), 0xff).unwrap();
    // A header that parses, flags that are garbage or claim more than the driver offered,
    // counters that all repeat.
    map.slice().fill(0, 16, 0).unwrap();
    map.slice().store_u16(8, 1, Ordering::Relaxed).unwrap();
    map.slice()
        .store_u16(10, QSIZE as u16, Ordering::Relaxed)
        .unwrap();
    for i in 0..4 {
        map.slice()
            .store_u8(16 + 16 * i, 1, Ordering::Relaxed)
            .unwrap();
    }
    let (fe, _) = guest.attach(&backend.path, Some((&fd, &d)), 0);
    guest.offer(&[6, 7]);
    guest.wait_used(2);
    let mut heads: Vec<u16> = guest.used().iter().map(|&(h, _)| h).collect();
    heads.sort_unstable();
    assert_eq!(heads, [6, 7]);
    // The record now says nothing is in flight.
    let flags: Vec<u8> = (0..QSIZE as usize)
        .map(|i| map.slice().load_u8(16 + 16 * i, Ordering::Relaxed).unwrap())
        .collect();
    assert_eq!(flags, [0; QSIZE as usize]);
    drop(fe);
    backend.stop();
}
