//! Property test of the session against a reference model of "Ring states" (QEMU
//! `docs/interop/vhost-user.rst`): after any sequence of ring requests, a ring's worker runs
//! exactly when the model says the ring is started and enabled (memory, size, addresses and a
//! kick fd or polling are set, and `GET_VRING_BASE` has not stopped it since).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use proptest::prelude::*;
use vireo_memory::mmap::MmapRegion;
use vireo_memory::GuestMemoryMap;
use vireo_queue::device::{DeviceQueue, DeviceQueueError};

use super::Session;
use crate::connection::{Connection, Message};
use crate::device::{ConfigError, QueueHandler, VhostUserDevice};
use crate::message::{
    ConfigAccess, Header, MemoryRegion, MemoryTable, Payload, Request, VringAddr, VringFd,
    VringState, VHOST_USER_F_PROTOCOL_FEATURES,
};

struct Idle;
impl QueueHandler for Idle {
    fn process(&mut self, q: &mut DeviceQueue, _: &GuestMemoryMap) -> Result<(), DeviceQueueError> {
        while let Some(c) = q.pop()? {
            q.add_used(&c, 0)?;
        }
        Ok(())
    }
}

struct Dev;
impl VhostUserDevice for Dev {
    fn features(&self) -> u64 {
        1 << 32
    }
    fn num_queues(&self) -> u16 {
        2
    }
    fn max_queue_size(&self) -> u16 {
        8
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
        Box::new(Idle)
    }
    fn reset(&self) {}
}

#[derive(Debug, Clone)]
enum Op {
    MemTable,
    Num { q: u32, valid: bool },
    Addr { q: u32 },
    Kick { q: u32, polling: bool },
    Enable { q: u32, on: bool },
    Base { q: u32 },
    GetBase { q: u32 },
    ResetDevice,
}

fn op() -> impl Strategy<Value = Op> {
    let q = 0..3u32; // 2 is out of range
                     // Weighted so that sequences often reach a started ring before stopping it.
    prop_oneof![
        2 => Just(Op::MemTable),
        3 => (q.clone(), any::<bool>()).prop_map(|(q, valid)| Op::Num { q, valid }),
        3 => q.clone().prop_map(|q| Op::Addr { q }),
        3 => (q.clone(), any::<bool>()).prop_map(|(q, polling)| Op::Kick { q, polling }),
        3 => (q.clone(), any::<bool>()).prop_map(|(q, on)| Op::Enable { q, on }),
        1 => q.clone().prop_map(|q| Op::Base { q }),
        1 => q.prop_map(|q| Op::GetBase { q }),
        1 => Just(Op::ResetDevice),
    ]
}

#[derive(Debug, Default, Clone, Copy)]
struct RingModel {
    size: bool,
    addr: bool,
    kick: bool,
    enabled: bool,
}

#[derive(Debug, Default)]
struct Model {
    mem: bool,
    rings: [RingModel; 2],
}

impl Model {
    fn running(&self, q: usize) -> bool {
        let r = self.rings[q];
        self.mem && r.size && r.addr && r.kick && r.enabled
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::MemTable => self.mem = true,
            Op::Num { q, valid } => {
                if let (Some(r), true) = (self.rings.get_mut(q as usize), valid) {
                    r.size = true;
                }
            }
            Op::Addr { q } => {
                let mem = self.mem;
                if let (Some(r), true) = (self.rings.get_mut(q as usize), mem) {
                    r.addr = true;
                }
            }
            Op::Kick { q, .. } => {
                if let Some(r) = self.rings.get_mut(q as usize) {
                    r.kick = true;
                }
            }
            Op::Enable { q, on } => {
                if let Some(r) = self.rings.get_mut(q as usize) {
                    r.enabled = on;
                }
            }
            Op::Base { .. } => {}
            Op::GetBase { q } => {
                if let Some(r) = self.rings.get_mut(q as usize) {
                    r.kick = false;
                }
            }
            Op::ResetDevice => self.rings = Default::default(),
        }
    }
}

struct Harness {
    session: Session<Dev>,
    conn: Connection,
    _peer: UnixStream,
    mem_fd: OwnedFd,
}

impl Harness {
    fn new() -> Self {
        let (a, b) = UnixStream::pair().unwrap();
        let mut h = Harness {
            session: Session::new(Arc::new(Dev)),
            conn: Connection::new(a),
            _peer: b,
            mem_fd: MmapRegion::memfd("vireo-model", 0x10000).unwrap().0,
        };
        let features = (1u64 << 32) | VHOST_USER_F_PROTOCOL_FEATURES;
        h.send(Request::SET_FEATURES, features.to_bytes(), vec![]);
        let protocol = h.session.offered_protocol.bits();
        h.send(Request::SET_PROTOCOL_FEATURES, protocol.to_bytes(), vec![]);
        h
    }

    fn send(&mut self, req: Request, payload: Vec<u8>, fds: Vec<OwnedFd>) {
        let header = Header::for_request(req, payload.len() as u32, 0);
        let msg = Message {
            header,
            payload,
            fds,
        };
        let _ = self.session.handle(&self.conn, msg).unwrap();
    }

    fn eventfd() -> OwnedFd {
        rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::MemTable => {
                let region = MemoryRegion {
                    guest_addr: 0,
                    size: 0x10000,
                    user_addr: 0x40_0000,
                    mmap_offset: 0,
                };
                let table = MemoryTable {
                    regions: vec![region],
                }
                .to_bytes();
                let fd = self.mem_fd.try_clone().unwrap();
                self.send(Request::SET_MEM_TABLE, table, vec![fd]);
            }
            Op::Num { q, valid } => {
                let num = if valid { 8 } else { 6 };
                self.send(
                    Request::SET_VRING_NUM,
                    VringState { index: q, num }.to_bytes(),
                    vec![],
                );
            }
            Op::Addr { q } => {
                let base = 0x40_0000 + u64::from(q) * 0x4000;
                let a = VringAddr {
                    index: q,
                    desc: base,
                    avail: base + 0x1000,
                    used: base + 0x2000,
                    ..Default::default()
                };
                self.send(Request::SET_VRING_ADDR, a.to_bytes(), vec![]);
            }
            Op::Kick { q, polling } => {
                let v = VringFd {
                    index: q as u8,
                    no_fd: polling,
                }
                .to_u64()
                .to_bytes();
                let fds = if polling {
                    vec![]
                } else {
                    vec![Self::eventfd()]
                };
                self.send(Request::SET_VRING_KICK, v, fds);
            }
            Op::Enable { q, on } => {
                let s = VringState {
                    index: q,
                    num: u32::from(on),
                };
                self.send(Request::SET_VRING_ENABLE, s.to_bytes(), vec![]);
            }
            Op::Base { q } => {
                self.send(
                    Request::SET_VRING_BASE,
                    VringState { index: q, num: 0 }.to_bytes(),
                    vec![],
                );
            }
            Op::GetBase { q } => {
                self.send(
                    Request::GET_VRING_BASE,
                    VringState { index: q, num: 0 }.to_bytes(),
                    vec![],
                );
            }
            Op::ResetDevice => self.send(Request::RESET_DEVICE, vec![], vec![]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn workers_run_exactly_when_the_model_says(ops in proptest::collection::vec(op(), 1..24)) {
        let mut h = Harness::new();
        let mut model = Model::default();
        for op in &ops {
            h.apply(op);
            model.apply(op);
            for q in 0..2 {
                let running = h.session.vrings[q].worker.is_some();
                prop_assert_eq!(running, model.running(q), "queue {} after {:?}", q, op);
                prop_assert!(h.session.vrings[q].current_fault().is_none());
            }
        }
        h.session.shutdown();
    }
}
