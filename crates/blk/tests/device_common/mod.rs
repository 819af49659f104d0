//! A guest in a test: Vireo's own driver-side queue over an `OwnedRegion` guest memory, facing
//! the virtio-blk device's queue handler in-process.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use vireo_blk::device::{BlkDevice, BlkOptions};
use vireo_blk::storage::{IoBackend, Storage};
use vireo_memory::{GuestMemory, GuestMemoryMap, OwnedRegion, SharedArea};
use vireo_queue::device::{DeviceQueue, DeviceQueueError, DeviceQueueState};
use vireo_queue::driver::{required_size, BufferSegment, DriverQueue, DriverQueueOptions};
use vireo_queue::RingFormat;
use vireo_spec::blk::BlkFeatures;
use vireo_spec::Features;
use vireo_vhost_user::device::{QueueHandler, VhostUserDevice};

pub const IN: u32 = 0;
pub const OUT: u32 = 1;
pub const FLUSH: u32 = 4;
pub const GET_ID: u32 = 8;
pub const GET_LIFETIME: u32 = 10;
pub const DISCARD: u32 = 11;
pub const WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// What a status byte holds before the device writes it.
pub const S_UNTOUCHED: u8 = 0xee;

/// Guest memory size, and where rings and buffers go in it.
const MEM_SIZE: usize = 16 << 20;
const RING_BASE: u64 = 0x10_0000;
const DATA_BASE: u64 = 0x40_0000;

/// The features a Linux guest acknowledges from what Vireo offers.
pub fn guest_features(format: RingFormat) -> u64 {
    let blk = BlkFeatures::FLUSH
        | BlkFeatures::BLK_SIZE
        | BlkFeatures::SEG_MAX
        | BlkFeatures::SIZE_MAX
        | BlkFeatures::CONFIG_WCE
        | BlkFeatures::DISCARD
        | BlkFeatures::WRITE_ZEROES
        | BlkFeatures::MQ
        | BlkFeatures::RO;
    let mut common = Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX;
    if format == RingFormat::Packed {
        common |= Features::RING_PACKED;
    }
    blk.bits() | common.bits()
}

/// One queue: driver side, device side, and the handler.
pub struct Queue {
    pub driver: DriverQueue<u32>,
    pub device: DeviceQueue,
    pub handler: Box<dyn QueueHandler>,
}

/// A device with `queues` queues in one guest memory.
pub struct Guest {
    pub mem: GuestMemoryMap,
    pub area: SharedArea,
    pub device: Arc<BlkDevice>,
    pub queues: Vec<Queue>,
    next_buf: u64,
}

/// One request as the driver builds it.
#[derive(Debug, Clone)]
pub struct Req {
    /// Device-readable segments (header first).
    pub readable: Vec<BufferSegment>,
    /// Device-writable segments (status last).
    pub writable: Vec<BufferSegment>,
    /// Guest address of the status byte, if any.
    pub status: Option<u64>,
}

/// What came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub token: u32,
    pub written: u32,
    pub status: u8,
}

impl Guest {
    pub fn new(storage: Arc<dyn Storage>, options: BlkOptions, format: RingFormat) -> Self {
        Self::with_features(storage, options, format, guest_features(format))
    }

    pub fn with_features(
        storage: Arc<dyn Storage>,
        options: BlkOptions,
        format: RingFormat,
        acked: u64,
    ) -> Self {
        let area = OwnedRegion::new_area(MEM_SIZE).unwrap();
        let mem = GuestMemoryMap::single(0, area.clone()).unwrap();
        let device = Arc::new(BlkDevice::new(storage, options).unwrap());
        let acked = acked & device.features();
        device.set_features(acked);
        let features = Features::from_bits_retain(acked);
        let size = options.max_queue_size;
        let ring_len = required_size(format, size, features, &DriverQueueOptions::default());
        let mut queues = Vec::new();
        for i in 0..options.num_queues {
            let addr = RING_BASE + u64::from(i) * (ring_len as u64).next_multiple_of(4096);
            let ring_area = area.sub_area(addr as usize, ring_len).unwrap();
            let driver = DriverQueue::new(
                ring_area,
                addr,
                size,
                features,
                DriverQueueOptions::default(),
            )
            .unwrap();
            let device_q =
                DeviceQueue::new(&mem, &driver.config(), DeviceQueueState::default()).unwrap();
            queues.push(Queue {
                driver,
                device: device_q,
                handler: device.queue_handler(i),
            });
        }
        Guest {
            mem,
            area,
            device,
            queues,
            next_buf: DATA_BASE,
        }
    }

    /// A new guest buffer of `len` bytes (aligned to 512), filled with `fill`.
    pub fn alloc(&mut self, len: u32, fill: u8) -> u64 {
        let addr = self.next_buf;
        self.next_buf = (addr + u64::from(len)).next_multiple_of(512);
        assert!(self.next_buf <= MEM_SIZE as u64, "test guest out of memory");
        self.mem
            .translate(addr, u64::from(len))
            .unwrap()
            .fill(0, len as usize, fill)
            .unwrap();
        addr
    }

    /// Frees every buffer (the next requests reuse the memory).
    pub fn free_all(&mut self) {
        self.next_buf = DATA_BASE;
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem
            .translate(addr, bytes.len() as u64)
            .unwrap()
            .write(0, bytes)
            .unwrap();
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .translate(addr, len as u64)
            .unwrap()
            .read(0, &mut v)
            .unwrap();
        v
    }

    /// A header buffer for `(type, sector)`.
    pub fn header(&mut self, kind: u32, sector: u64) -> u64 {
        let addr = self.alloc(16, 0);
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.write(addr, &h);
        addr
    }

    /// A status byte, pre-set to [`S_UNTOUCHED`].
    pub fn status_byte(&mut self) -> u64 {
        self.alloc(1, S_UNTOUCHED)
    }

    /// The usual framing: header, data segments (readable or writable), status.
    pub fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: &[(u64, u32)],
        data_writable: bool,
    ) -> Req {
        let hdr = self.header(kind, sector);
        let status = self.status_byte();
        let data: Vec<BufferSegment> = data
            .iter()
            .map(|&(a, l)| BufferSegment::new(a, l))
            .collect();
        let mut readable = vec![BufferSegment::new(hdr, 16)];
        let mut writable = Vec::new();
        if data_writable {
            writable.extend(data);
        } else {
            readable.extend(data);
        }
        writable.push(BufferSegment::new(status, 1));
        Req {
            readable,
            writable,
            status: Some(status),
        }
    }

    /// A discard / write-zeroes request with one range.
    pub fn range_request(&mut self, kind: u32, sector: u64, sectors: u32, flags: u32) -> Req {
        let seg = self.alloc(16, 0);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&sector.to_le_bytes());
        b[8..12].copy_from_slice(&sectors.to_le_bytes());
        b[12..].copy_from_slice(&flags.to_le_bytes());
        self.write(seg, &b);
        self.request(kind, 0, &[(seg, 16)], false)
    }

    /// Adds `req` to queue `q` with `token` (not yet published).
    pub fn add(&mut self, q: usize, req: &Req, token: u32) {
        self.queues[q]
            .driver
            .add(&req.readable, &req.writable, token)
            .unwrap();
    }

    /// Runs the handler of queue `q` like the vhost-user worker does (kicks off, process,
    /// publish), once.
    pub fn process(&mut self, q: usize) -> Result<(), DeviceQueueError> {
        let Queue {
            driver,
            device,
            handler,
        } = &mut self.queues[q];
        driver.publish().unwrap();
        device.disable_kicks()?;
        handler.process(device, &self.mem)?;
        device.publish_used()?;
        let _ = device.needs_notification()?;
        Ok(())
    }

    /// Processes queue `q` until `n` used buffers came back (waiting on the handler's
    /// completion fd in between); returns them with their status bytes.
    pub fn run(&mut self, q: usize, n: usize, reqs: &[(u32, Option<u64>)]) -> Vec<Answer> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        loop {
            self.process(q).expect("no ring violation");
            while let Some(u) = self.queues[q].driver.pop_used().unwrap() {
                let status = reqs
                    .iter()
                    .find(|(t, _)| *t == u.token)
                    .and_then(|(_, s)| *s)
                    .map_or(S_UNTOUCHED, |a| self.read(a, 1)[0]);
                out.push(Answer {
                    token: u.token,
                    written: u.written,
                    status,
                });
            }
            if out.len() >= n {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "requests did not complete: {out:?}"
            );
            if let Some(fd) = self.queues[q].handler.completion_fd() {
                let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
                let t = Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                };
                let _ = poll(&mut fds, Some(&t));
            }
        }
    }

    /// Submits one request on queue 0 and waits for it.
    pub fn one(&mut self, req: &Req) -> Answer {
        self.add(0, req, 7);
        let answers = self.run(0, 1, &[(7, req.status)]);
        assert_eq!(answers.len(), 1);
        answers[0]
    }

    /// Drains queue `q` as a stopping worker does.
    pub fn drain(&mut self, q: usize) {
        let Queue {
            device, handler, ..
        } = &mut self.queues[q];
        handler.drain(device, &self.mem).unwrap();
        device.publish_used().unwrap();
    }
}

/// Default options for tests: small rings, synchronous or automatic I/O.
pub fn options(queues: u16, backend: IoBackend) -> BlkOptions {
    BlkOptions {
        num_queues: queues,
        max_queue_size: 64,
        seg_max: 16,
        io_backend: backend,
        ..BlkOptions::default()
    }
}
