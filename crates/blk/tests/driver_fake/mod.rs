//! A strict in-process virtio-blk device for the driver tests: Vireo's device-side queue over
//! the same memory as the driver, a RAM disk, and every request checked against the driver
//! requirements of virtio 1.2 §5.2.6.1 (a broken rule fails the test). It can also misbehave
//! on purpose.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use vireo_blk::driver::{BlkDeviceInfo, BlkDriver, BlkQueue, BufferSegment, SlotArea, SlotOptions};
use vireo_memory::{GuestMemoryMap, OwnedRegion, SharedArea};
use vireo_queue::device::{AvailChain, DeviceQueue, DeviceQueueState, Direction};
use vireo_queue::driver::{required_size, DriverQueue, DriverQueueOptions};
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkConfig, BlkFeatures, RequestType, ID_BYTES};
use vireo_spec::Features;

/// Guest address of the test region (not zero, so an address bug shows).
pub const BASE: u64 = 0x1000_0000;
/// Bytes of the data area (buffers the tests read into and write from).
pub const DATA_LEN: usize = 1 << 20;
/// Disk capacity in sectors (1 MiB).
pub const CAPACITY: u64 = 2048;
/// The id the fake device answers GET_ID with.
pub const DEVICE_ID: &[u8] = b"vireo-fake-disk";

/// What the fake device does wrong, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Nothing: a correct device.
    Nothing,
    /// Writes this status byte.
    Status(u8),
    /// Never writes the status byte.
    NoStatus,
    /// Reports this used length.
    UsedLen(u32),
}

/// One request the device saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub request_type: u32,
    pub sector: u64,
    pub data_len: u64,
    /// (sector, num_sectors, flags) of each discard / write-zeroes range.
    pub ranges: Vec<(u64, u32, u32)>,
}

pub struct FakeDevice {
    pub queue: DeviceQueue,
    pub mem: Arc<GuestMemoryMap>,
    pub disk: Vec<u8>,
    pub misbehave: Misbehave,
    pub seen: Vec<Seen>,
    /// Answer requests in reverse order of arrival.
    pub reverse: bool,
    /// Status for every request (IOERR, UNSUPP to test failures the driver must pass on).
    pub answer: u8,
}

pub struct Harness {
    pub driver: BlkDriver,
    pub device: FakeDevice,
    /// The data area: guest address and bytes.
    pub data_addr: u64,
    pub data: SharedArea,
}

/// Both ring formats, for tests that run on each.
pub const FORMATS: [RingFormat; 2] = [RingFormat::Split, RingFormat::Packed];

/// The test features on a split ring.
pub fn features(extra: BlkFeatures) -> Features {
    features_on(RingFormat::Split, extra)
}

/// The test features on ring `format`.
pub fn features_on(format: RingFormat, extra: BlkFeatures) -> Features {
    let ring = match format {
        RingFormat::Split => Features::empty(),
        RingFormat::Packed => Features::RING_PACKED,
    };
    ring | Features::VERSION_1
        | Features::INDIRECT_DESC
        | (BlkFeatures::FLUSH
            | BlkFeatures::DISCARD
            | BlkFeatures::WRITE_ZEROES
            | BlkFeatures::SEG_MAX
            | extra)
            .to_features()
}

pub fn config() -> BlkConfig {
    BlkConfig {
        capacity: CAPACITY,
        seg_max: 8,
        size_max: 1 << 16,
        max_discard_seg: 4,
        max_discard_sectors: 1024,
        max_write_zeroes_seg: 2,
        max_write_zeroes_sectors: 1024,
        num_queues: 1,
        ..BlkConfig::default()
    }
}

/// A driver with one queue of `size` descriptors and `slots` slots, and the fake device on the
/// other end, over one region.
pub fn harness(features: Features, config: &BlkConfig, size: u16, slots: u16) -> Harness {
    let qopts = DriverQueueOptions::default();
    let format = RingFormat::from_features(features);
    let ring = required_size(format, size, features, &qopts).next_multiple_of(4096);
    let sopts = SlotOptions {
        slots,
        ..SlotOptions::default()
    };
    let slot_len = sopts.area_size().next_multiple_of(4096);
    let area = OwnedRegion::new_area(ring + slot_len + DATA_LEN).unwrap();
    let mem = Arc::new(GuestMemoryMap::single(BASE, area.clone()).unwrap());
    let queue =
        DriverQueue::<u16>::new(area.sub_area(0, ring).unwrap(), BASE, size, features, qopts)
            .unwrap();
    let device_queue =
        DeviceQueue::new(&*mem, &queue.config(), DeviceQueueState::default()).unwrap();
    let slot_area = SlotArea {
        area: area.sub_area(ring, slot_len).unwrap(),
        guest_addr: BASE + ring as u64,
    };
    let info = BlkDeviceInfo::new(features, config).unwrap();
    let driver = BlkDriver::new(info, vec![(queue, slot_area)], &sopts).unwrap();
    let data_off = ring + slot_len;
    Harness {
        driver,
        device: FakeDevice {
            queue: device_queue,
            mem,
            disk: vec![0; (config.capacity * 512) as usize],
            misbehave: Misbehave::Nothing,
            seen: Vec::new(),
            reverse: false,
            answer: 0,
        },
        data_addr: BASE + data_off as u64,
        data: area.sub_area(data_off, DATA_LEN).unwrap(),
    }
}

impl Harness {
    pub fn q(&mut self) -> &mut BlkQueue {
        self.driver.queue(0).unwrap()
    }

    /// A buffer of `len` bytes at `offset` in the data area.
    pub fn buf(&self, offset: usize, len: u32) -> BufferSegment {
        BufferSegment::new(self.data_addr + offset as u64, len)
    }

    pub fn write_data(&self, offset: usize, bytes: &[u8]) {
        self.data.slice().write(offset, bytes).unwrap();
    }

    pub fn read_data(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.data.slice().read(offset, &mut v).unwrap();
        v
    }

    /// Publishes what the driver submitted and lets the device answer all of it.
    pub fn run(&mut self) -> usize {
        self.q().kick_prepare().unwrap();
        self.device.serve().unwrap()
    }
}

/// Segments of one chain, copied out.
struct Seg {
    addr: u64,
    len: usize,
    direction: Direction,
}

impl FakeDevice {
    /// Answers every available request; `Err` names a driver requirement that was broken.
    pub fn serve(&mut self) -> Result<usize, String> {
        let mut chains: Vec<AvailChain> = Vec::new();
        while let Some(c) = self.queue.pop().map_err(|e| e.to_string())? {
            chains.push(c);
        }
        if self.reverse {
            chains.reverse();
        }
        for c in &chains {
            let written = self.handle(c)?;
            self.queue.add_used(c, written).map_err(|e| e.to_string())?;
        }
        self.queue.publish_used().map_err(|e| e.to_string())?;
        Ok(chains.len())
    }

    fn handle(&mut self, chain: &AvailChain) -> Result<u32, String> {
        let mut segs = Vec::new();
        for s in self.queue.chain(chain, &*self.mem) {
            let s = s.map_err(|e| e.to_string())?;
            segs.push(Seg {
                addr: s.addr,
                len: s.slice.len(),
                direction: s.direction,
            });
        }
        let readable: Vec<&Seg> = segs
            .iter()
            .filter(|s| s.direction == Direction::DeviceReadable)
            .collect();
        let writable: Vec<&Seg> = segs
            .iter()
            .filter(|s| s.direction == Direction::DeviceWritable)
            .collect();
        let first = readable.first().ok_or("no readable segment")?;
        if first.len != 16 {
            return Err(format!("header segment of {} bytes, not 16", first.len));
        }
        let header = self.read(first.addr, 16);
        let request_type = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let reserved = u32::from_le_bytes(header[4..8].try_into().unwrap());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
        if reserved != 0 {
            return Err("reserved header field is not zero".into());
        }
        let status_seg = writable.last().ok_or("no writable segment")?;
        if status_seg.len != 1 {
            return Err(format!("status segment of {} bytes, not 1", status_seg.len));
        }
        let data_in: Vec<&Seg> = writable[..writable.len() - 1].to_vec();
        let data_out: Vec<&Seg> = readable[1..].to_vec();
        let in_len: usize = data_in.iter().map(|s| s.len).sum();
        let out_len: usize = data_out.iter().map(|s| s.len).sum();
        let mut seen = Seen {
            request_type,
            sector,
            data_len: (in_len + out_len) as u64,
            ranges: Vec::new(),
        };
        let kind = RequestType::from_u32(request_type).ok_or("unknown request type")?;
        let mut status = self.answer;
        match kind {
            RequestType::In | RequestType::Out => {
                let (segs, len) = match kind {
                    RequestType::In if out_len == 0 => (&data_in, in_len),
                    RequestType::Out if in_len == 0 => (&data_out, out_len),
                    _ => return Err("data in the wrong direction".into()),
                };
                if len == 0 || len % 512 != 0 {
                    return Err(format!("data length {len} is not a multiple of 512"));
                }
                let start = sector * 512;
                if start + len as u64 > self.disk.len() as u64 {
                    return Err("request beyond capacity".into());
                }
                if status == 0 {
                    let mut pos = start as usize;
                    for s in segs.iter() {
                        if kind == RequestType::In {
                            let bytes = self.disk[pos..pos + s.len].to_vec();
                            self.write(s.addr, &bytes);
                        } else {
                            let bytes = self.read(s.addr, s.len);
                            self.disk[pos..pos + s.len].copy_from_slice(&bytes);
                        }
                        pos += s.len;
                    }
                }
            }
            RequestType::Flush => {
                if sector != 0 || in_len + out_len != 0 {
                    return Err("flush with a sector or data".into());
                }
            }
            RequestType::GetId => {
                if in_len != ID_BYTES || data_in.len() != 1 || out_len != 0 {
                    return Err("GET_ID data is not 20 device-writable bytes".into());
                }
                let mut id = [0u8; ID_BYTES];
                id[..DEVICE_ID.len()].copy_from_slice(DEVICE_ID);
                self.write(data_in[0].addr, &id);
            }
            RequestType::Discard | RequestType::WriteZeroes => {
                if in_len != 0 || out_len == 0 || out_len % 16 != 0 || sector != 0 {
                    return Err("range request framing".into());
                }
                let bytes: Vec<u8> = data_out
                    .iter()
                    .flat_map(|s| self.read(s.addr, s.len))
                    .collect();
                for r in bytes.chunks(16) {
                    let s = u64::from_le_bytes(r[0..8].try_into().unwrap());
                    let n = u32::from_le_bytes(r[8..12].try_into().unwrap());
                    let flags = u32::from_le_bytes(r[12..16].try_into().unwrap());
                    if kind == RequestType::Discard && flags != 0 {
                        return Err("discard with unmap or reserved flags".into());
                    }
                    if flags & !1 != 0 {
                        return Err("reserved range flags".into());
                    }
                    if (s + u64::from(n)) * 512 > self.disk.len() as u64 {
                        return Err("range beyond capacity".into());
                    }
                    if kind == RequestType::WriteZeroes && status == 0 {
                        let a = (s * 512) as usize;
                        self.disk[a..a + n as usize * 512].fill(0);
                    }
                    seen.ranges.push((s, n, flags));
                }
            }
            _ => status = 2,
        }
        self.seen.push(seen);
        let mut written = (in_len + 1) as u32;
        match self.misbehave {
            Misbehave::Nothing => {}
            Misbehave::Status(s) => status = s,
            Misbehave::NoStatus => return Ok(written),
            Misbehave::UsedLen(l) => written = l,
        }
        self.write(status_seg.addr, &[status]);
        Ok(written)
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.region()
            .read((addr - BASE) as usize, &mut v)
            .expect("read");
        v
    }

    fn write(&self, addr: u64, bytes: &[u8]) {
        self.region()
            .write((addr - BASE) as usize, bytes)
            .expect("write");
    }

    fn region(&self) -> vireo_memory::SharedSlice<'_> {
        self.mem.regions()[0].area().slice()
    }
}
