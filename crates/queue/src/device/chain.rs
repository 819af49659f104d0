//! The format-independent reader over a popped chain's segments.

use core::fmt;

use vireo_memory::GuestMemory;

use super::packed_chain::PackedChain;
use super::split_chain::SplitChain;
use super::{DeviceQueueError, Direction, Segment};

/// An iterator over a popped chain's validated segments, device-readable ones first.
///
/// Lazy: each `next` reads and validates one descriptor. The first error ends the iteration
/// (and, for a driver's violation, latches the queue broken). Cloning gives a second reader from
/// the same point, for example to size a request before processing it; note that each pass reads
/// the descriptors again, so a misbehaving driver may make the passes disagree (each pass is
/// still fully validated).
pub struct ChainReader<'q, 'm, M> {
    inner: Inner<'q, 'm, M>,
}

enum Inner<'q, 'm, M> {
    Split(SplitChain<'q, 'm, M>),
    Packed(PackedChain<'q, 'm, M>),
}

impl<M> Clone for ChainReader<'_, '_, M> {
    fn clone(&self) -> Self {
        ChainReader {
            inner: match &self.inner {
                Inner::Split(c) => Inner::Split(c.clone()),
                Inner::Packed(c) => Inner::Packed(c.clone()),
            },
        }
    }
}

impl<M> fmt::Debug for ChainReader<'_, '_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Split(c) => f.debug_tuple("ChainReader::Split").field(c).finish(),
            Inner::Packed(c) => f.debug_tuple("ChainReader::Packed").field(c).finish(),
        }
    }
}

impl<'q, 'm, M> From<SplitChain<'q, 'm, M>> for ChainReader<'q, 'm, M> {
    #[inline]
    fn from(c: SplitChain<'q, 'm, M>) -> Self {
        ChainReader {
            inner: Inner::Split(c),
        }
    }
}

impl<'q, 'm, M> From<PackedChain<'q, 'm, M>> for ChainReader<'q, 'm, M> {
    #[inline]
    fn from(c: PackedChain<'q, 'm, M>) -> Self {
        ChainReader {
            inner: Inner::Packed(c),
        }
    }
}

impl<'m, M: GuestMemory> Iterator for ChainReader<'_, 'm, M> {
    type Item = Result<Segment<'m>, DeviceQueueError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Split(c) => c.next(),
            Inner::Packed(c) => c.next(),
        }
    }
}

impl<M: GuestMemory> core::iter::FusedIterator for ChainReader<'_, '_, M> {}

/// Sizes of a chain's two parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainTotals {
    /// Number of device-readable segments.
    pub readable_segments: u32,
    /// Total bytes of device-readable segments.
    pub readable_bytes: u64,
    /// Number of device-writable segments.
    pub writable_segments: u32,
    /// Total bytes of device-writable segments.
    pub writable_bytes: u64,
}

impl<'m, M: GuestMemory> ChainReader<'_, 'm, M> {
    /// Walks the rest of the chain and adds up its segments.
    pub fn totals(self) -> Result<ChainTotals, DeviceQueueError> {
        let mut t = ChainTotals::default();
        for seg in self {
            let seg = seg?;
            let len = seg.slice.len() as u64;
            match seg.direction {
                Direction::DeviceReadable => {
                    t.readable_segments = t.readable_segments.saturating_add(1);
                    t.readable_bytes = t.readable_bytes.saturating_add(len);
                }
                Direction::DeviceWritable => {
                    t.writable_segments = t.writable_segments.saturating_add(1);
                    t.writable_bytes = t.writable_bytes.saturating_add(len);
                }
            }
        }
        Ok(t)
    }

    /// Fills `out` with the rest of the chain's segments, without allocating; returns how many
    /// were written (the rest of `out` is left as it was).
    ///
    /// A chain with more segments than `out` holds is refused with
    /// [`DeviceQueueError::TooManySegments`] (the device's own limit, which does not latch the
    /// queue; virtio 1.2 §2.7.4.1 allows a device a reasonable limit).
    pub fn collect_into(self, out: &mut [Option<Segment<'m>>]) -> Result<usize, DeviceQueueError> {
        let capacity = out.len();
        let mut slots = out.iter_mut();
        let mut n = 0;
        for seg in self {
            let seg = seg?;
            let slot = slots
                .next()
                .ok_or(DeviceQueueError::TooManySegments { capacity })?;
            *slot = Some(seg);
            n += 1;
        }
        Ok(n)
    }
}
