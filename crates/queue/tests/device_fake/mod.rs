//! Strict fake drivers for the device-side tests: they play the driver by writing raw ring
//! bytes into an `OwnedRegion`-backed `GuestMemoryMap`, and panic (fail the test) on anything
//! the device must not do (use a chain it does not hold, claim more bytes than a chain can take,
//! write a device-readable buffer, publish more used entries than chains it holds).
//!
//! One module per ring format behind one trait, [`FakeDriver`], so the property tests run the
//! same model against every format.
#![allow(dead_code)] // each test binary uses a different part

pub mod packed;
pub mod split;

use vireo_memory::GuestMemoryMap;
use vireo_queue::device::Direction;
use vireo_queue::QueueConfig;

/// Largest buffer the fakes place (each descriptor has a slot of this size).
pub const MAX_BUF: u32 = 64;
/// Most entries of an indirect table the fakes build.
pub const MAX_INDIRECT: u16 = 8;

/// One buffer the driver adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufSpec {
    /// Length in bytes, at most [`MAX_BUF`].
    pub len: u32,
    /// Device-readable or device-writable.
    pub direction: Direction,
}

/// The shape of a chain: `direct` buffers in the descriptor table, then optionally one indirect
/// descriptor whose table holds `indirect` (virtio 1.2 §2.7.5.3.2: "zero or more normal chained
/// descriptors followed by a single descriptor with ... INDIRECT").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// Buffers described directly in the descriptor table.
    pub direct: Vec<BufSpec>,
    /// Buffers described by an indirect table, if any.
    pub indirect: Option<Vec<BufSpec>>,
}

impl ChainSpec {
    /// All buffers, in chain order.
    pub fn buffers(&self) -> impl Iterator<Item = &BufSpec> {
        self.direct.iter().chain(self.indirect.iter().flatten())
    }
}

/// A segment the device should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedSeg {
    /// Guest address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Direction.
    pub direction: Direction,
}

/// A chain the driver added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Its id (split: head descriptor index).
    pub id: u16,
    /// The segments, in chain order.
    pub segs: Vec<ExpectedSeg>,
}

/// A used element the driver took back, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The chain's id.
    pub id: u16,
    /// The `len` the device reported.
    pub len: u32,
    /// The first `len` bytes of the chain's writable buffers, concatenated.
    pub written: Vec<u8>,
}

/// The byte a driver puts at offset `off` of readable segment `seg` of a chain added with `seed`.
pub fn pattern(seed: u8, seg: usize, off: usize) -> u8 {
    seed.wrapping_mul(31)
        .wrapping_add((seg as u8).wrapping_mul(7))
        .wrapping_add(off as u8)
}

/// A driver of one ring format, strict about what the device does.
pub trait FakeDriver {
    /// The guest memory the ring and buffers live in.
    fn mem(&self) -> &GuestMemoryMap;
    /// Where the ring is, and the features.
    fn config(&self) -> QueueConfig;
    /// Writes a chain (descriptors, readable buffers filled with [`pattern`] of `seed`) and
    /// queues it in the ring without publishing; `None` if there are not enough free
    /// descriptors.
    fn add(&mut self, chain: &ChainSpec, seed: u8) -> Option<Added>;
    /// Makes every chain added since the last publish visible to the device.
    fn publish(&mut self);
    /// Takes back one used element, if the device published one; panics if the device broke a
    /// rule.
    fn reap(&mut self) -> Option<Reaped>;
    /// Chains added and not yet reaped.
    fn outstanding(&self) -> usize;
    /// The driver's side of a queue reset (virtio 1.2 §2.6.1): forgets every chain (reclaims
    /// them) and zeroes the ring for a fresh start in the same memory.
    fn reset(&mut self);
}
