//! Rules every segment of a chain obeys whatever the ring format, and the checks of an indirect
//! table's header that both formats share (virtio 1.2 §2.7.4.2, §2.7.5.2, §2.7.5.3, §2.8.7,
//! §2.8.17).

use core::cell::Cell;

use vireo_memory::{GuestMemory, SharedSlice};

use super::{DeviceQueueError, Direction, Segment, Violation};

/// Largest total length of a chain's buffers (virtio 1.2 §2.7.5.2: "MUST NOT add a descriptor
/// chain longer than 2^32 bytes in total"; the packed ring's used length is 32 bits as well).
const MAX_CHAIN_BYTES: u64 = 1 << 32;

/// Size of one descriptor in an indirect table (16 bytes in both formats).
const DESC_SIZE: u32 = 16;

/// Most entries an indirect table may have (the largest queue size).
const MAX_INDIRECT_ENTRIES: u32 = 32768;

/// What a chain walk shares with its queue, whatever the format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkLinks<'q> {
    /// The queue's latch (see the policy in [`crate::device`]).
    pub(crate) broken: &'q Cell<Option<Violation>>,
    /// An error to yield before anything else (a broken queue, a misused handle).
    pub(crate) pending: Option<DeviceQueueError>,
    /// Where a complete walk records the chain's writable capacity.
    pub(crate) capacity: Option<&'q Cell<u64>>,
}

/// The running checks over one walk of a chain: readable segments before writable ones, a
/// bounded total length, every buffer in guest memory.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SegmentRules {
    seen_writable: bool,
    total_bytes: u64,
    writable_bytes: u64,
}

impl SegmentRules {
    /// Validates the next buffer of the chain and translates it through `mem`.
    pub(crate) fn check<'m, M: GuestMemory>(
        &mut self,
        mem: &'m M,
        addr: u64,
        len: u32,
        direction: Direction,
    ) -> Result<Segment<'m>, Violation> {
        match direction {
            Direction::DeviceWritable => {
                self.seen_writable = true;
                self.writable_bytes += u64::from(len);
            }
            Direction::DeviceReadable if self.seen_writable => {
                return Err(Violation::ReadableAfterWritable)
            }
            Direction::DeviceReadable => {}
        }
        self.total_bytes += u64::from(len);
        if self.total_bytes > MAX_CHAIN_BYTES {
            return Err(Violation::ChainTooLarge);
        }
        let slice = mem
            .translate(addr, u64::from(len))
            .map_err(Violation::BufferMemory)?;
        Ok(Segment {
            addr,
            slice,
            direction,
        })
    }

    /// At the end of a complete walk: records the chain's writable capacity (see
    /// [`super::in_order`]).
    pub(crate) fn record(&self, capacity: Option<&Cell<u64>>) {
        if let Some(c) = capacity {
            c.set(self.writable_bytes);
        }
    }
}

/// Checks an indirect table's length (a non-zero multiple of 16 bytes, at most 32768 entries)
/// and translates it; returns the table and its entry count.
pub(crate) fn indirect_table<M: GuestMemory>(
    mem: &M,
    addr: u64,
    len: u32,
) -> Result<(SharedSlice<'_>, u32), Violation> {
    let entries = len / DESC_SIZE;
    if len == 0 || len % DESC_SIZE != 0 || entries > MAX_INDIRECT_ENTRIES {
        return Err(Violation::IndirectTableSize { len });
    }
    let table = mem
        .translate(addr, u64::from(len))
        .map_err(Violation::IndirectTableMemory)?;
    Ok((table, entries))
}
