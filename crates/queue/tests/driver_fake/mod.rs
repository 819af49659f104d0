//! Strict fake devices for the driver-side tests: they play the device by reading and writing
//! raw ring bytes in an `OwnedRegion`-backed `GuestMemoryMap`, and panic (fail the test) on
//! anything the driver must not do: publish more buffers than the ring holds, make a descriptor
//! available that the device still holds, build a chain that loops, runs out of the table, puts
//! a device-readable segment after a device-writable one, nests indirect tables, or set ring
//! flags the negotiated features forbid.
//!
//! One module per ring format behind one trait, [`FakeDevice`], so the property tests run the
//! same model against every format.
#![allow(dead_code)] // each test binary uses a different part

pub mod packed;
pub mod split;

use vireo_memory::{GuestMemoryMap, OwnedRegion};
use vireo_queue::driver::{required_size, BufferSegment, DriverQueue, DriverQueueOptions};
use vireo_queue::RingFormat;
use vireo_spec::Features;

/// Guest address of the ring memory the driver is given.
pub const RING_BASE: u64 = 0x10_0000;
/// Guest address of the data region buffers point into.
pub const DATA_BASE: u64 = 0x100_0000;
/// Size of the data region.
pub const DATA_LEN: u64 = 0x10_0000;

/// A segment as the device saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenSeg {
    /// Guest address.
    pub addr: u64,
    /// Length.
    pub len: u32,
}

impl From<BufferSegment> for SeenSeg {
    fn from(s: BufferSegment) -> Self {
        SeenSeg {
            addr: s.addr,
            len: s.len,
        }
    }
}

/// A buffer the device took from the available ring, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenBuffer {
    /// The id to use it with (split: head descriptor index).
    pub id: u16,
    /// Device-readable segments, in chain order.
    pub readable: Vec<SeenSeg>,
    /// Device-writable segments, in chain order.
    pub writable: Vec<SeenSeg>,
    /// Described by an indirect table.
    pub indirect: bool,
}

impl SeenBuffer {
    /// Device-writable bytes.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// A device of one ring format, strict about what the driver does.
pub trait FakeDevice: Send {
    /// The guest memory (ring and data regions).
    fn mem(&self) -> &GuestMemoryMap;
    /// Takes the next published buffer, if any; panics if the driver broke a rule.
    fn pop_avail(&mut self) -> Option<SeenBuffer>;
    /// Writes a used element for buffer `id` (which the device must hold) without publishing.
    fn use_buffer(&mut self, id: u16, written: u32);
    /// IN_ORDER (virtio 1.2 §2.7.9, §2.8.8): uses the `count` buffers held longest, in the order
    /// taken, with one used element naming the last of them (`written` bytes), skipping the
    /// others' entries (split: their used-ring slots are filled with a bogus id the driver must
    /// not read). Returns the id written.
    fn use_batch(&mut self, count: usize, written: u32) -> u16;
    /// Publishes every used element written since the last publish; returns whether the driver
    /// asked to be notified about them.
    fn publish_used(&mut self) -> bool;
    /// Buffers taken and not yet used.
    fn held(&self) -> usize;
    /// Before waiting for a kick: asks for one (with EVENT_IDX: at the next entry to take),
    /// then a full fence and a fresh look; `true` if a buffer is already available.
    fn arm_avail_notifications(&self) -> bool;
    /// Forgets everything (the device was reset); the driver must reset its queue too.
    fn reset(&mut self);
}

/// The guest memory for a queue of `ring_len` ring bytes: the ring region at [`RING_BASE`] and
/// a data region at [`DATA_BASE`].
pub fn guest_memory(ring_len: usize) -> GuestMemoryMap {
    let mut mem =
        GuestMemoryMap::single(RING_BASE, OwnedRegion::new_area(ring_len).unwrap()).unwrap();
    let data = OwnedRegion::new_area(DATA_LEN as usize).unwrap();
    mem.add_region(DATA_BASE, data).unwrap();
    mem
}

/// A driver queue of `format` and a strict fake device attached to its ring.
pub fn pair(
    format: RingFormat,
    size: u16,
    features: Features,
    options: DriverQueueOptions,
) -> (DriverQueue<u32>, Box<dyn FakeDevice>) {
    let len = required_size(format, size, features, &options);
    let mem = guest_memory(len);
    let area = mem.regions()[0].area().clone();
    let features = match format {
        RingFormat::Split => features - Features::RING_PACKED,
        RingFormat::Packed => features | Features::RING_PACKED,
    };
    let q = DriverQueue::new(area, RING_BASE, size, features, options).unwrap();
    let dev: Box<dyn FakeDevice> = match format {
        RingFormat::Split => Box::new(split::SplitFakeDevice::new(
            mem,
            size,
            q.addresses(),
            features,
        )),
        RingFormat::Packed => Box::new(packed::PackedFakeDevice::new(
            mem,
            size,
            q.addresses(),
            features,
        )),
    };
    (q, dev)
}

/// The ring formats the format-independent suites run against.
pub const FORMATS: &[RingFormat] = &[RingFormat::Split, RingFormat::Packed];

/// A segment of `len` bytes at offset `offset` of the data region.
pub fn seg(offset: u64, len: u32) -> BufferSegment {
    BufferSegment::new(DATA_BASE + offset, len)
}
