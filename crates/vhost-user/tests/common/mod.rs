//! A scripted fake front-end and a trivial echo device, shared by the integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod ring;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vireo_memory::GuestMemoryMap;
use vireo_queue::device::{AvailChain, DeviceQueue, DeviceQueueError, Direction};
use vireo_vhost_user::connection::{Connection, ConnectionError, Message};
use vireo_vhost_user::message::{
    ConfigAccess, Header, Payload, Request, FLAG_NEED_REPLY, VHOST_USER_F_PROTOCOL_FEATURES,
};
use vireo_vhost_user::{BackendServer, ConfigError, QueueHandler, StopHandle, VhostUserDevice};

/// virtio 1.2 §6: VIRTIO_F_VERSION_1 and VIRTIO_F_EVENT_IDX... only VERSION_1 here.
pub const DEVICE_FEATURES: u64 = 1 << 32;
pub const CONFIG_LEN: usize = 16;

/// How the echo handler completes its chains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Inside `process`.
    #[default]
    Sync,
    /// In the next `process` call, woken through the handler's completion fd.
    Async,
    /// Only when the queue stops (`drain`).
    DrainOnly,
}

/// A device with 2 queues whose handler uses every chain with its whole writable length,
/// filling the writable bytes with 0xab.
#[derive(Debug, Default)]
pub struct EchoDevice {
    pub config: Mutex<[u8; CONFIG_LEN]>,
    pub resets: AtomicUsize,
    pub chains: Arc<AtomicUsize>,
    pub mode: Mode,
}

impl VhostUserDevice for EchoDevice {
    fn features(&self) -> u64 {
        DEVICE_FEATURES
    }
    fn num_queues(&self) -> u16 {
        2
    }
    fn max_queue_size(&self) -> u16 {
        256
    }
    fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), ConfigError> {
        let cfg = self.config.lock().unwrap();
        let src = (offset as usize)
            .checked_add(buf.len())
            .and_then(|end| cfg.get(offset as usize..end))
            .ok_or(ConfigError::OutOfRange {
                offset,
                len: buf.len(),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_config(
        &self,
        offset: u32,
        data: &[u8],
        _access: ConfigAccess,
    ) -> Result<(), ConfigError> {
        let mut cfg = self.config.lock().unwrap();
        let dst = (offset as usize)
            .checked_add(data.len())
            .and_then(|end| cfg.get_mut(offset as usize..end))
            .ok_or(ConfigError::OutOfRange {
                offset,
                len: data.len(),
            })?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn queue_handler(&self, _queue_index: u16) -> Box<dyn QueueHandler> {
        Box::new(EchoHandler {
            chains: Arc::clone(&self.chains),
            mode: self.mode,
            pending: Vec::new(),
            completions: eventfd_nonblocking(),
        })
    }
    fn reset(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

struct EchoHandler {
    chains: Arc<AtomicUsize>,
    mode: Mode,
    pending: Vec<(AvailChain, u32)>,
    completions: OwnedFd,
}

impl EchoHandler {
    fn complete(&mut self, queue: &mut DeviceQueue) -> Result<(), DeviceQueueError> {
        for (chain, written) in self.pending.drain(..) {
            queue.add_used(&chain, written)?;
            self.chains.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl QueueHandler for EchoHandler {
    fn process(
        &mut self,
        queue: &mut DeviceQueue,
        mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError> {
        let mut buf = [0u8; 8];
        if self.mode == Mode::Async && rustix::io::read(&self.completions, &mut buf).is_ok() {
            self.complete(queue)?;
        }
        while let Some(chain) = queue.pop()? {
            let mut written = 0u32;
            for seg in queue.chain(&chain, mem) {
                let seg = seg?;
                if seg.direction == Direction::DeviceWritable {
                    let len = seg.slice.len();
                    let _ = seg.slice.fill(0, len, 0xab);
                    written = written.saturating_add(len as u32);
                }
            }
            self.pending.push((chain, written));
        }
        match self.mode {
            Mode::Sync => self.complete(queue)?,
            Mode::Async if !self.pending.is_empty() => {
                rustix::io::write(&self.completions, &1u64.to_ne_bytes()).unwrap();
            }
            _ => {}
        }
        Ok(())
    }

    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        (self.mode == Mode::Async).then(|| self.completions.as_fd())
    }

    fn drain(
        &mut self,
        queue: &mut DeviceQueue,
        _mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError> {
        self.complete(queue)
    }
}

fn eventfd_nonblocking() -> OwnedFd {
    use rustix::event::EventfdFlags;
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap()
}

/// A running server on a fresh socket path.
pub struct Server {
    pub path: PathBuf,
    pub stop: StopHandle,
    pub device: Arc<EchoDevice>,
    thread: Option<JoinHandle<()>>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Server {
    pub fn start() -> Server {
        Self::start_with(Mode::Sync)
    }

    pub fn start_with(mode: Mode) -> Server {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("vireo-vu-test-{}-{n}.sock", std::process::id()));
        let device = Arc::new(EchoDevice {
            mode,
            ..Default::default()
        });
        let stop = StopHandle::new().unwrap();
        let mut server = BackendServer::bind(&path).unwrap();
        let (d, s) = (Arc::clone(&device), stop.clone());
        let thread = std::thread::spawn(move || server.serve(d, &s).unwrap());
        Server {
            path,
            stop,
            device,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Frontend {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Frontend {
            conn: Connection::new(stream),
        }
    }

    pub fn shutdown(mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A scripted front-end.
pub struct Frontend {
    pub conn: Connection,
}

impl Frontend {
    pub fn send(&self, req: Request, payload: &[u8], fds: &[BorrowedFd<'_>], flags: u32) {
        self.send_raw(req as u32, payload, fds, flags);
    }

    pub fn send_raw(&self, code: u32, payload: &[u8], fds: &[BorrowedFd<'_>], flags: u32) {
        let header = Header {
            request: code,
            flags: 1 | flags,
            size: payload.len() as u32,
        };
        self.conn.send(&header, payload, fds).unwrap();
    }

    pub fn recv(&self) -> Result<Option<Message>, ConnectionError> {
        self.conn.recv()
    }

    /// Sends a request that has a reply body and returns the body.
    pub fn get(&self, req: Request, payload: &[u8]) -> Vec<u8> {
        self.send(req, payload, &[], 0);
        let m = self.recv().unwrap().expect("reply");
        assert_eq!(m.header.request, req as u32);
        assert!(m.header.is_reply());
        m.payload
    }

    pub fn get_u64(&self, req: Request) -> u64 {
        u64::parse(&self.get(req, &[])).unwrap()
    }

    /// Sends a request with NEED_REPLY and returns the REPLY_ACK value (0 = success).
    pub fn ack(&self, req: Request, payload: &[u8], fds: &[BorrowedFd<'_>]) -> u64 {
        self.send(req, payload, fds, FLAG_NEED_REPLY);
        let m = self.recv().unwrap().expect("ack");
        assert_eq!(m.header.request, req as u32);
        u64::parse(&m.payload).unwrap()
    }

    /// The usual opening: features with protocol features, and protocol features with
    /// REPLY_ACK and everything else offered.
    pub fn negotiate(&self) {
        let features = self.get_u64(Request::GET_FEATURES);
        assert_ne!(features & VHOST_USER_F_PROTOCOL_FEATURES, 0);
        self.send(Request::SET_OWNER, &[], &[], 0);
        self.send(Request::SET_FEATURES, &features.to_bytes(), &[], 0);
        let protocol = self.get_u64(Request::GET_PROTOCOL_FEATURES);
        self.send(Request::SET_PROTOCOL_FEATURES, &protocol.to_bytes(), &[], 0);
    }

    /// True when the server closed the connection (EOF on the next read).
    pub fn is_closed(&self) -> bool {
        matches!(self.recv(), Ok(None) | Err(_))
    }
}

pub fn memfd(len: u64) -> (OwnedFd, vireo_memory::SharedArea) {
    let (fd, region) = vireo_memory::mmap::MmapRegion::memfd("vireo-test", len).unwrap();
    (fd, region.into_area().unwrap())
}

pub fn eventfd() -> OwnedFd {
    rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap()
}

pub fn borrowed(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(|f| f.as_fd()).collect()
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
