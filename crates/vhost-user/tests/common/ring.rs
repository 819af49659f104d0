//! The test's driver side of a split ring (virtio 1.2 §2.7) in memfd memory, and the requests
//! that set a queue up.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vireo_memory::SharedArea;
use vireo_spec::split::{avail, desc, used};
use vireo_vhost_user::message::{
    MemoryRegion, MemoryTable, Payload, Request, VringAddr, VringFd, VringState,
};

use super::{eventfd, memfd, Frontend, Server};

pub const USER_BASE: u64 = 0x7f00_0000_0000;
pub const MEM_SIZE: u64 = 0x10000;
pub const DESC: u64 = 0x0;
pub const AVAIL: u64 = 0x1000;
pub const USED: u64 = 0x2000;
pub const QSIZE: u32 = 8;
/// virtio 1.2 §2.1: DEVICE_NEEDS_RESET.
pub const NEEDS_RESET: u64 = 64;

pub struct Driver {
    pub mem: SharedArea,
    /// Ring area base per queue (each queue has its own 0x4000 window).
    pub base: u64,
    pub avail_idx: u16,
}

impl Driver {
    pub fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let s = self.mem.slice();
        let off = (self.base + DESC) as usize + desc::SIZE * i as usize;
        s.store_u64(off + desc::ADDR, addr, Ordering::Relaxed)
            .unwrap();
        s.store_u32(off + desc::LEN, len, Ordering::Relaxed)
            .unwrap();
        s.store_u16(off + desc::FLAGS, flags, Ordering::Relaxed)
            .unwrap();
        s.store_u16(off + desc::NEXT, next, Ordering::Relaxed)
            .unwrap();
    }

    pub fn make_available(&mut self, head: u16) {
        let s = self.mem.slice();
        let a = (self.base + AVAIL) as usize;
        let slot = a + avail::RING + 2 * (self.avail_idx as usize % QSIZE as usize);
        s.store_u16(slot, head, Ordering::Relaxed).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        s.store_u16(a + avail::IDX, self.avail_idx, Ordering::Release)
            .unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        self.mem
            .slice()
            .load_u16((self.base + USED) as usize + used::IDX, Ordering::Acquire)
            .unwrap()
    }

    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let s = self.mem.slice();
        let off = (self.base + USED) as usize + used::RING + used::ELEM_SIZE * i as usize;
        (
            s.load_u32(off, Ordering::Relaxed).unwrap(),
            s.load_u32(off + 4, Ordering::Relaxed).unwrap(),
        )
    }

    pub fn wait_used(&self, idx: u16, call: &OwnedFd) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx() != idx {
            assert!(
                Instant::now() < deadline,
                "used index stuck at {}",
                self.used_idx()
            );
            wait_fd(call, Duration::from_millis(50));
        }
    }
}

pub fn wait_fd(fd: &OwnedFd, timeout: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let t = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let ready = poll(&mut fds, Some(&t)).unwrap() > 0;
    if ready {
        let mut buf = [0u8; 8];
        rustix::io::read(fd, &mut buf).unwrap();
    }
    ready
}

pub fn kick(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
}

pub struct Queue {
    pub kick: OwnedFd,
    pub call: OwnedFd,
    pub err: OwnedFd,
}

/// Sets up queue `index` with its rings at `base` and starts it.
pub fn setup_queue(fe: &Frontend, index: u32, base: u64) -> Queue {
    let s = VringState { index, num: QSIZE }.to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_NUM, &s, &[]), 0);
    let b = VringState { index, num: 0 }.to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_BASE, &b, &[]), 0);
    let a = VringAddr {
        index,
        flags: 0,
        desc: USER_BASE + base + DESC,
        avail: USER_BASE + base + AVAIL,
        used: USER_BASE + base + USED,
        log: 0,
    };
    assert_eq!(fe.ack(Request::SET_VRING_ADDR, &a.to_bytes(), &[]), 0);
    let q = Queue {
        kick: eventfd(),
        call: eventfd(),
        err: eventfd(),
    };
    let v = VringFd {
        index: index as u8,
        no_fd: false,
    }
    .to_u64()
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_CALL, &v, &[q.call.as_fd()]), 0);
    assert_eq!(fe.ack(Request::SET_VRING_ERR, &v, &[q.err.as_fd()]), 0);
    assert_eq!(fe.ack(Request::SET_VRING_KICK, &v, &[q.kick.as_fd()]), 0);
    let e = VringState { index, num: 1 }.to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_ENABLE, &e, &[]), 0);
    q
}

pub fn connect_with_memory(server: &Server) -> (Frontend, SharedArea) {
    let fe = server.connect();
    fe.negotiate();
    let (fd, mem) = memfd(MEM_SIZE);
    let region = MemoryRegion {
        guest_addr: 0,
        size: MEM_SIZE,
        user_addr: USER_BASE,
        mmap_offset: 0,
    };
    let table = MemoryTable {
        regions: vec![region],
    }
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_MEM_TABLE, &table, &[fd.as_fd()]), 0);
    (fe, mem)
}
