//! Descriptors a front-end hands over can be made to block: a blocking call eventfd with its
//! counter at the maximum (0xffff_ffff_ffff_fffe) blocks any write of 1 forever. The back-end
//! must still use buffers, stop the ring on `GET_VRING_BASE` ("Ring states") and answer: a
//! worker stuck in `write` would hold the session (and SIGTERM) forever.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::ring::*;
use common::*;
use vireo_spec::split::desc;
use vireo_vhost_user::message::{Payload, Request, VringFd, VringState};

#[test]
fn a_full_blocking_call_eventfd_does_not_hang_the_worker() {
    let server = Server::start();
    let (fe, mem) = connect_with_memory(&server);
    let q = setup_queue(&fe, 0, 0);
    // Replace the call fd with a blocking eventfd at its maximum count.
    let call = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    rustix::io::write(&call, &0xffff_ffff_ffff_fffe_u64.to_ne_bytes()).unwrap();
    let v = VringFd {
        index: 0,
        no_fd: false,
    }
    .to_u64()
    .to_bytes();
    assert_eq!(fe.ack(Request::SET_VRING_CALL, &v, &[call.as_fd()]), 0);
    let mut d = Driver {
        mem: mem.clone(),
        base: 0,
        avail_idx: 0,
    };
    d.desc(0, 0x8000, 64, desc::F_WRITE, 0);
    d.make_available(0);
    kick(&q.kick);
    let start = Instant::now();
    while d.used_idx() < 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "buffer not used");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The worker has tried to signal the call fd by now (or is about to); stopping the ring
    // must not wait on it.
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let reply = fe.get(
            Request::GET_VRING_BASE,
            &VringState { index: 0, num: 0 }.to_bytes(),
        );
        let _ = tx.send(VringState::parse(&reply).unwrap());
    });
    let Ok(state) = rx.recv_timeout(Duration::from_secs(10)) else {
        // The server's worker is stuck: dropping the server would wait for it forever.
        std::mem::forget(server);
        panic!("GET_VRING_BASE not answered while the call eventfd is full");
    };
    assert_eq!(state, VringState { index: 0, num: 1 });
    drop(call);
}
