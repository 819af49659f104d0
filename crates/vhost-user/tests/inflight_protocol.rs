//! `GET_INFLIGHT_FD` and `SET_INFLIGHT_FD` against a scripted front-end, hostile variants
//! included (QEMU `docs/interop/vhost-user.rst`, "Inflight I/O tracking", "Inflight
//! description").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use common::{EchoDevice, Frontend, Server};
use rustix::fs::SealFlags;
use vireo_memory::mmap::MmapRegion;
use vireo_vhost_user::backend::SUPPORTED_PROTOCOL_FEATURES;
use vireo_vhost_user::connection::Connection;
use vireo_vhost_user::message::{ConfigAccess, Inflight, Payload, ProtocolFeatures, Request};
use vireo_vhost_user::{BackendServer, ConfigError, QueueHandler, StopHandle, VhostUserDevice};

/// The echo device (2 queues of at most 256), opting into INFLIGHT_SHMFD.
#[derive(Debug, Default)]
struct OptIn(EchoDevice);

impl VhostUserDevice for OptIn {
    fn features(&self) -> u64 {
        self.0.features()
    }
    fn protocol_features(&self) -> ProtocolFeatures {
        SUPPORTED_PROTOCOL_FEATURES
    }
    fn num_queues(&self) -> u16 {
        self.0.num_queues()
    }
    fn max_queue_size(&self) -> u16 {
        self.0.max_queue_size()
    }
    fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), ConfigError> {
        self.0.read_config(offset, buf)
    }
    fn write_config(&self, offset: u32, data: &[u8], a: ConfigAccess) -> Result<(), ConfigError> {
        self.0.write_config(offset, data, a)
    }
    fn queue_handler(&self, index: u16) -> Box<dyn QueueHandler> {
        self.0.queue_handler(index)
    }
    fn reset(&self) {
        self.0.reset()
    }
}

struct OptInServer {
    path: std::path::PathBuf,
    stop: StopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OptInServer {
    fn start(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("vireo-{name}-{}.sock", std::process::id()));
        let mut server = BackendServer::bind(&path).unwrap();
        let stop = StopHandle::new().unwrap();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            server.serve(Arc::new(OptIn::default()), &s).unwrap();
        });
        OptInServer {
            path,
            stop,
            thread: Some(thread),
        }
    }
    fn connect(&self) -> Frontend {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let fe = Frontend {
            conn: Connection::new(stream),
        };
        fe.negotiate();
        fe
    }
}

impl Drop for OptInServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn describe(num_queues: u16, queue_size: u16) -> Inflight {
    Inflight {
        num_queues,
        queue_size,
        ..Inflight::default()
    }
}

#[test]
fn only_offered_to_devices_that_opt_in_and_refused_unless_negotiated() {
    let server = Server::start();
    let fe = server.connect();
    let offered = fe.get_u64(Request::GET_PROTOCOL_FEATURES);
    assert_eq!(offered & ProtocolFeatures::INFLIGHT_SHMFD.bits(), 0);
    fe.negotiate();
    // A request with a reply body that fails cannot be answered: the connection closes.
    fe.send(
        Request::GET_INFLIGHT_FD,
        &describe(1, 128).to_bytes(),
        &[],
        0,
    );
    assert!(fe.is_closed());
}

#[test]
fn get_gives_a_sealed_zeroed_region_sized_for_the_queues() {
    let server = OptInServer::start("inflight-get");
    let fe = server.connect();
    fe.send(
        Request::GET_INFLIGHT_FD,
        &describe(2, 128).to_bytes(),
        &[],
        0,
    );
    let reply = fe.recv().unwrap().expect("reply");
    assert!(reply.header.is_reply());
    let d = Inflight::parse(&reply.payload).unwrap();
    // Split layout: 16-byte header + 16 bytes per descriptor, rounded up to 64, per queue.
    assert_eq!(d.mmap_size, 2 * 2112);
    assert_eq!((d.mmap_offset, d.num_queues, d.queue_size), (0, 2, 128));
    assert_eq!(reply.fds.len(), 1);
    let fd = &reply.fds[0];
    let seals = rustix::fs::fcntl_get_seals(fd).unwrap();
    assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
    let map = MmapRegion::map(fd, 0, d.mmap_size)
        .unwrap()
        .into_area()
        .unwrap();
    let mut bytes = vec![0xaa; d.mmap_size as usize];
    map.slice().read(0, &mut bytes).unwrap();
    assert!(bytes.iter().all(|&b| b == 0));
    // The same region is accepted back.
    assert_eq!(
        fe.ack(Request::SET_INFLIGHT_FD, &d.to_bytes(), &[fd.as_fd()]),
        0
    );
}

#[test]
fn hostile_descriptions_and_fds_are_refused() {
    let server = OptInServer::start("inflight-hostile");
    let fe = server.connect();
    fe.send(
        Request::GET_INFLIGHT_FD,
        &describe(1, 64).to_bytes(),
        &[],
        0,
    );
    let reply = fe.recv().unwrap().expect("reply");
    let good = Inflight::parse(&reply.payload).unwrap();
    let fd = &reply.fds[0];
    let set = |d: Inflight, fds: &[std::os::fd::BorrowedFd<'_>]| {
        fe.ack(Request::SET_INFLIGHT_FD, &d.to_bytes(), fds)
    };
    assert_eq!(set(good, &[]), 1, "no fd");
    assert_eq!(set(good, &[fd.as_fd(), fd.as_fd()]), 1, "two fds");
    let bad = [
        Inflight {
            num_queues: 0,
            ..good
        },
        Inflight {
            num_queues: 3,
            ..good
        },
        Inflight {
            queue_size: 0,
            ..good
        },
        Inflight {
            queue_size: 257,
            ..good
        },
        Inflight {
            mmap_size: good.mmap_size * 2,
            ..good
        },
        Inflight {
            mmap_size: u64::MAX,
            ..good
        },
        Inflight {
            mmap_offset: 4096,
            ..good
        },
        Inflight {
            mmap_offset: u64::MAX - 4095,
            ..good
        },
    ];
    for d in bad {
        assert_eq!(set(d, &[fd.as_fd()]), 1, "{d:?}");
    }
    // A region that can shrink under the mapping is refused.
    let (unsealed, _map) = MmapRegion::memfd("unsealed", good.mmap_size).unwrap();
    assert_eq!(set(good, &[unsealed.as_fd()]), 1, "unsealed");
    // A wrong payload size.
    assert_eq!(
        fe.ack(Request::SET_INFLIGHT_FD, &[0; 8], &[fd.as_fd()]),
        1,
        "short payload"
    );
    // The session goes on, and the good region is still accepted.
    assert_eq!(set(good, &[fd.as_fd()]), 0);
    // GET with nonsense: a failed request with a reply body closes the connection.
    fe.send(
        Request::GET_INFLIGHT_FD,
        &describe(9, 64).to_bytes(),
        &[],
        0,
    );
    assert!(fe.is_closed());
}
