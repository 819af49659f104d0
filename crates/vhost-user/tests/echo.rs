//! A queue running end to end through the back-end's worker: the test plays the driver on a
//! memfd-backed split ring (virtio 1.2 §2.7), the echo device uses every chain with its writable
//! length.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::ring::*;
use common::*;
use vireo_spec::split::desc;
use vireo_vhost_user::message::{
    MemoryRegion, MemoryTable, Payload, Request, VringAddr, VringFd, VringState,
};

#[test]
fn echo_queue_runs_end_to_end() {
    let server = Server::start();
    let (fe, mem) = connect_with_memory(&server);
    let q = setup_queue(&fe, 0, 0);
    let mut d = Driver {
        mem: mem.clone(),
        base: 0,
        avail_idx: 0,
    };
    // Chain 0: one writable buffer of 64 bytes. Chain 1: 16 readable bytes, then 32 writable.
    d.desc(0, 0x8000, 64, desc::F_WRITE, 0);
    d.desc(1, 0x9000, 16, desc::F_NEXT, 2);
    d.desc(2, 0x9100, 32, desc::F_WRITE, 0);
    d.make_available(0);
    d.make_available(1);
    kick(&q.kick);
    d.wait_used(2, &q.call);
    assert_eq!(d.used_elem(0), (0, 64));
    assert_eq!(d.used_elem(1), (1, 32));
    let mut buf = [0u8; 64];
    mem.slice().read(0x8000, &mut buf).unwrap();
    assert_eq!(buf, [0xab; 64]);
    let mut readable = [0u8; 16];
    mem.slice().read(0x9000, &mut readable).unwrap();
    assert_eq!(
        readable, [0; 16],
        "the device must not write a readable buffer"
    );

    // More work after the first batch: the worker re-arms kicks.
    d.make_available(0);
    kick(&q.kick);
    d.wait_used(3, &q.call);

    // GET_VRING_BASE stops the ring and says where it stopped.
    let reply = fe.get(
        Request::GET_VRING_BASE,
        &VringState { index: 0, num: 0 }.to_bytes(),
    );
    assert_eq!(
        VringState::parse(&reply).unwrap(),
        VringState { index: 0, num: 3 }
    );
    // A stopped ring does not process buffers, even when kicked.
    d.make_available(0);
    kick(&q.kick);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.used_idx(), 3);
    // Restarted with a new kick fd from where it stopped, it picks the buffer up.
    let v = VringFd {
        index: 0,
        no_fd: false,
    }
    .to_u64()
    .to_bytes();
    let kick2 = eventfd();
    assert_eq!(fe.ack(Request::SET_VRING_KICK, &v, &[kick2.as_fd()]), 0);
    d.wait_used(4, &q.call);
    assert_eq!(server.device.chains.load(Ordering::SeqCst), 4);
    assert_eq!(fe.get_u64(Request::GET_STATUS) & NEEDS_RESET, 0);
}

#[test]
fn broken_ring_latches_needs_reset_and_spares_other_queues() {
    let server = Server::start();
    let (fe, mem) = connect_with_memory(&server);
    let q0 = setup_queue(&fe, 0, 0);
    let q1 = setup_queue(&fe, 1, 0x4000);
    let mut d0 = Driver {
        mem: mem.clone(),
        base: 0,
        avail_idx: 0,
    };
    let mut d1 = Driver {
        mem: mem.clone(),
        base: 0x4000,
        avail_idx: 0,
    };
    // Queue 0: a head out of range (virtio 1.2 §2.7.6).
    d0.make_available(QSIZE as u16 + 1);
    kick(&q0.kick);
    assert!(
        wait_fd(&q0.err, Duration::from_secs(10)),
        "error eventfd signalled"
    );
    assert_eq!(fe.get_u64(Request::GET_STATUS) & NEEDS_RESET, NEEDS_RESET);
    // Queue 1 still works.
    d1.desc(0, 0xa000, 8, desc::F_WRITE, 0);
    d1.make_available(0);
    kick(&q1.kick);
    d1.wait_used(1, &q1.call);
    assert_eq!(d1.used_elem(0), (0, 8));
    assert_eq!(d0.used_idx(), 0, "a broken queue writes nothing more");
    // RESET_DEVICE clears it.
    assert_eq!(fe.ack(Request::RESET_DEVICE, &[], &[]), 0);
    assert_eq!(fe.get_u64(Request::GET_STATUS), 0);
}

#[test]
fn polling_kick_processes_without_an_fd() {
    let server = Server::start();
    let (fe, mem) = connect_with_memory(&server);
    let s = VringState {
        index: 0,
        num: QSIZE,
    }
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_NUM, &s, &[]), 0);
    let a = VringAddr {
        index: 0,
        flags: 0,
        desc: USER_BASE + DESC,
        avail: USER_BASE + AVAIL,
        used: USER_BASE + USED,
        log: 0,
    };
    assert_eq!(fe.ack(Request::SET_VRING_ADDR, &a.to_bytes(), &[]), 0);
    let call = eventfd();
    let v = VringFd {
        index: 0,
        no_fd: false,
    }
    .to_u64()
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_CALL, &v, &[call.as_fd()]), 0);
    let poll = VringFd {
        index: 0,
        no_fd: true,
    }
    .to_u64()
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_KICK, &poll, &[]), 0);
    assert_eq!(
        fe.ack(
            Request::SET_VRING_ENABLE,
            &VringState { index: 0, num: 1 }.to_bytes(),
            &[]
        ),
        0
    );
    let mut d = Driver {
        mem,
        base: 0,
        avail_idx: 0,
    };
    d.desc(0, 0x8000, 4, desc::F_WRITE, 0);
    d.make_available(0);
    d.wait_used(1, &call);
    assert_eq!(d.used_elem(0), (0, 4));
}

#[test]
fn disabled_ring_does_not_run_until_enabled() {
    let server = Server::start();
    let (fe, mem) = connect_with_memory(&server);
    let q = setup_queue(&fe, 0, 0);
    assert_eq!(
        fe.ack(
            Request::SET_VRING_ENABLE,
            &VringState { index: 0, num: 0 }.to_bytes(),
            &[]
        ),
        0
    );
    let mut d = Driver {
        mem,
        base: 0,
        avail_idx: 0,
    };
    d.desc(0, 0x8000, 4, desc::F_WRITE, 0);
    d.make_available(0);
    kick(&q.kick);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.used_idx(), 0);
    assert_eq!(
        fe.ack(
            Request::SET_VRING_ENABLE,
            &VringState { index: 0, num: 1 }.to_bytes(),
            &[]
        ),
        0
    );
    d.wait_used(1, &q.call);
}

#[test]
fn misaligned_ring_is_refused_with_needs_reset() {
    let server = Server::start();
    let (fe, _mem) = connect_with_memory(&server);
    let s = VringState {
        index: 0,
        num: QSIZE,
    }
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_NUM, &s, &[]), 0);
    // The descriptor table must be 16-byte aligned (virtio 1.2 §2.7 "Virtqueue Part Alignment").
    let a = VringAddr {
        index: 0,
        flags: 0,
        desc: USER_BASE + 8,
        avail: USER_BASE + AVAIL,
        used: USER_BASE + USED,
        log: 0,
    };
    assert_eq!(fe.ack(Request::SET_VRING_ADDR, &a.to_bytes(), &[]), 0);
    let (kick, err) = (eventfd(), eventfd());
    let v = VringFd {
        index: 0,
        no_fd: false,
    }
    .to_u64()
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_ERR, &v, &[err.as_fd()]), 0);
    assert_eq!(fe.ack(Request::SET_VRING_KICK, &v, &[kick.as_fd()]), 0);
    let e = VringState { index: 0, num: 1 }.to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_ENABLE, &e, &[]), 0);
    assert!(wait_fd(&err, Duration::from_secs(5)));
    assert_eq!(fe.get_u64(Request::GET_STATUS) & NEEDS_RESET, NEEDS_RESET);
    // Setting the ring up again (SET_VRING_BASE, good addresses) clears the fault.
    let b = VringState { index: 0, num: 0 }.to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_BASE, &b, &[]), 0);
    let good = VringAddr {
        desc: USER_BASE + DESC,
        ..a
    };
    assert_eq!(fe.ack(Request::SET_VRING_ADDR, &good.to_bytes(), &[]), 0);
    assert_eq!(fe.get_u64(Request::GET_STATUS) & NEEDS_RESET, 0);
}

#[test]
fn queue_runs_on_memory_from_add_mem_reg_and_survives_table_changes() {
    use vireo_vhost_user::message::SingleRegion;
    let server = Server::start();
    let fe = server.connect();
    fe.negotiate();
    // Two regions added one by one (CONFIGURE_MEM_SLOTS), the rings in the first, the buffers
    // in the second.
    let (fd0, mem0) = memfd(0x8000);
    let (fd1, mem1) = memfd(0x8000);
    let r0 = MemoryRegion {
        guest_addr: 0,
        size: 0x8000,
        user_addr: USER_BASE,
        mmap_offset: 0,
    };
    let r1 = MemoryRegion {
        guest_addr: 0x8000,
        size: 0x8000,
        user_addr: USER_BASE + 0x8000,
        mmap_offset: 0,
    };
    let add = |r: MemoryRegion, fd: &OwnedFd| {
        let p = SingleRegion { region: r }.to_bytes();
        assert_eq!(fe.ack(Request::ADD_MEM_REG, &p, &[fd.as_fd()]), 0);
    };
    add(r0, &fd0);
    let q = setup_queue(&fe, 0, 0);
    let mut d = Driver {
        mem: mem0.clone(),
        base: 0,
        avail_idx: 0,
    };
    // The region holding the buffer arrives while the queue is running.
    add(r1, &fd1);
    d.desc(0, 0x8100, 16, desc::F_WRITE, 0);
    d.make_available(0);
    kick(&q.kick);
    d.wait_used(1, &q.call);
    let mut buf = [0u8; 16];
    mem1.slice().read(0x100, &mut buf).unwrap();
    assert_eq!(buf, [0xab; 16]);
    // Remove the buffer region: a chain pointing there breaks the ring.
    let p = SingleRegion { region: r1 }.to_bytes();
    assert_eq!(fe.ack(Request::REM_MEM_REG, &p, &[]), 0);
    d.make_available(0);
    kick(&q.kick);
    assert!(wait_fd(&q.err, Duration::from_secs(5)));
    assert_eq!(d.used_idx(), 1);
}

#[test]
fn without_protocol_features_rings_start_enabled() {
    let server = Server::start();
    let fe = server.connect();
    // Acknowledge the device features only ("Ring states": the ring starts enabled).
    assert_eq!(
        fe.get_u64(Request::GET_FEATURES) & DEVICE_FEATURES,
        DEVICE_FEATURES
    );
    fe.send(Request::SET_FEATURES, &DEVICE_FEATURES.to_bytes(), &[], 0);
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
    fe.send(Request::SET_MEM_TABLE, &table, &[fd.as_fd()], 0);
    fe.send(
        Request::SET_VRING_NUM,
        &VringState {
            index: 0,
            num: QSIZE,
        }
        .to_bytes(),
        &[],
        0,
    );
    let a = VringAddr {
        index: 0,
        flags: 0,
        desc: USER_BASE + DESC,
        avail: USER_BASE + AVAIL,
        used: USER_BASE + USED,
        log: 0,
    };
    fe.send(Request::SET_VRING_ADDR, &a.to_bytes(), &[], 0);
    let (kick_fd, call) = (eventfd(), eventfd());
    let v = VringFd {
        index: 0,
        no_fd: false,
    }
    .to_u64()
    .to_bytes();
    fe.send(Request::SET_VRING_CALL, &v, &[call.as_fd()], 0);
    fe.send(Request::SET_VRING_KICK, &v, &[kick_fd.as_fd()], 0);
    let mut d = Driver {
        mem,
        base: 0,
        avail_idx: 0,
    };
    d.desc(0, 0x8000, 4, desc::F_WRITE, 0);
    d.make_available(0);
    kick(&kick_fd);
    d.wait_used(1, &call);
}
