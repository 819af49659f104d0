//! Handlers that complete requests outside `process`: woken through their completion fd, and
//! drained when the queue stops, so `GET_VRING_BASE` reports a final state (QEMU
//! `docs/interop/vhost-user.rst`, "Ring states": the ring is stopped on `GET_VRING_BASE`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::ring::*;
use common::*;
use vireo_spec::split::desc;
use vireo_vhost_user::message::{Payload, Request, VringState};

#[test]
fn completions_wake_the_worker() {
    let server = Server::start_with(Mode::Async);
    let (fe, mem) = connect_with_memory(&server);
    let q = setup_queue(&fe, 0, 0);
    let mut d = Driver {
        mem,
        base: 0,
        avail_idx: 0,
    };
    d.desc(0, 0x8000, 32, desc::F_WRITE, 0);
    d.desc(1, 0x9000, 16, desc::F_WRITE, 0);
    d.make_available(0);
    d.make_available(1);
    kick(&q.kick);
    // No second kick: only the handler's completion fd can bring the worker back.
    d.wait_used(2, &q.call);
    assert_eq!(d.used_elem(0), (0, 32));
    assert_eq!(d.used_elem(1), (1, 16));
}

#[test]
fn stopping_drains_in_flight_requests() {
    let server = Server::start_with(Mode::DrainOnly);
    let (fe, mem) = connect_with_memory(&server);
    let q = setup_queue(&fe, 0, 0);
    let mut d = Driver {
        mem,
        base: 0,
        avail_idx: 0,
    };
    d.desc(0, 0x8000, 8, desc::F_WRITE, 0);
    d.make_available(0);
    kick(&q.kick);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.used_idx(), 0, "the handler holds the request");
    let reply = fe.get(
        Request::GET_VRING_BASE,
        &VringState { index: 0, num: 0 }.to_bytes(),
    );
    assert_eq!(VringState::parse(&reply).unwrap().num, 1);
    // Drained before the reply: the used ring is final.
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used_elem(0), (0, 8));
    assert_eq!(server.device.chains.load(Ordering::SeqCst), 1);
}
