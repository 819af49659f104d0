//! Walking a split-ring descriptor chain (virtio 1.2 §2.7.5), lazily and with every rule checked.
//!
//! Bounds that make the walk terminate whatever the driver writes: at most `size` descriptors
//! of the descriptor table (the indirect descriptor included) and at most the entry count of the
//! one indirect table (virtio 1.2 §2.7.5.2: no loops; §2.7.5.3.1). Every `next` is below its
//! table's size, so every descriptor read is in bounds.

use core::cell::Cell;
use core::fmt;

use vireo_memory::{GuestMemory, SharedSlice};
use vireo_spec::split::desc;

use super::segment::{indirect_table, SegmentRules, WalkLinks};
use super::{DeviceQueueError, Direction, RingArea, Segment, Violation};
use crate::ordering;

/// One descriptor as read (once) from shared memory.
#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Desc {
    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// The reader state of one split chain. Wrapped by [`super::ChainReader`].
pub(crate) struct SplitChain<'q, 'm, M> {
    mem: &'m M,
    /// The queue's descriptor table.
    table: SharedSlice<'q>,
    /// The indirect table, once the walk has entered one.
    indirect: Option<SharedSlice<'m>>,
    /// The queue's latch (see the policy in [`crate::device`]).
    broken: &'q Cell<Option<Violation>>,
    indirect_allowed: bool,
    /// Entries in the current table (queue size, or the indirect table's entries).
    table_len: u32,
    /// Descriptors visited in the current table.
    visited: u32,
    /// Next descriptor to read in the current table; `None` when the walk is over.
    pos: Option<u16>,
    /// An error to yield before anything else (a broken queue, a misused handle).
    pending: Option<DeviceQueueError>,
    rules: SegmentRules,
    /// Where a complete walk records the chain's writable capacity.
    capacity: Option<&'q Cell<u64>>,
}

impl<M> Clone for SplitChain<'_, '_, M> {
    fn clone(&self) -> Self {
        SplitChain { ..*self }
    }
}

impl<M> fmt::Debug for SplitChain<'_, '_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitChain")
            .field("in_indirect", &self.indirect.is_some())
            .field("table_len", &self.table_len)
            .field("visited", &self.visited)
            .field("pos", &self.pos)
            .field("pending", &self.pending)
            .finish()
    }
}

impl<'q, 'm, M: GuestMemory> SplitChain<'q, 'm, M> {
    /// A walk starting at descriptor `head` of `table` (`size` entries). `pending`, if given, is
    /// yielded first and ends the walk.
    #[inline]
    pub(crate) fn new(
        mem: &'m M,
        table: SharedSlice<'q>,
        size: u16,
        head: u16,
        indirect_allowed: bool,
        links: WalkLinks<'q>,
    ) -> Self {
        let WalkLinks {
            broken,
            pending,
            capacity,
        } = links;
        SplitChain {
            mem,
            table,
            indirect: None,
            broken,
            indirect_allowed,
            table_len: u32::from(size),
            visited: 0,
            pos: Some(head),
            pending,
            rules: SegmentRules::default(),
            capacity,
        }
    }

    /// Latches the queue broken and returns the error for this first sighting.
    fn violation(&self, v: Violation) -> DeviceQueueError {
        if self.broken.get().is_none() {
            self.broken.set(Some(v));
        }
        DeviceQueueError::Violation(v)
    }

    /// Reads descriptor `idx` of the current table, counting it against the table's bound.
    fn read(&mut self, idx: u16) -> Result<Desc, DeviceQueueError> {
        if self.visited >= self.table_len {
            return Err(self.violation(Violation::ChainTooLong {
                limit: self.table_len,
            }));
        }
        self.visited += 1;
        let table = match self.indirect {
            Some(t) => t,
            None => self.table,
        };
        let off = usize::from(idx) * desc::SIZE;
        // In bounds (idx < table_len), so this cannot fail; kept typed all the same.
        let mem_err = |source| DeviceQueueError::Memory {
            area: RingArea::DescriptorTable,
            source,
        };
        // Field loads: ordered after the CONSUME load of avail.idx that published the chain.
        // Two 8-byte loads instead of four: `len`, `flags` and `next` are the little-endian
        // second half of the descriptor (virtio 1.2 §2.7.5), read once each.
        const _: () = assert!(desc::FLAGS == desc::LEN + 4 && desc::NEXT == desc::LEN + 6);
        let addr = table
            .load_u64(off + desc::ADDR, ordering::FIELD)
            .map_err(mem_err)?;
        let rest = table
            .load_u64(off + desc::LEN, ordering::FIELD)
            .map_err(mem_err)?;
        Ok(Desc {
            addr,
            len: rest as u32,
            flags: (rest >> 32) as u16,
            next: (rest >> 48) as u16,
        })
    }

    /// Switches the walk into the indirect table `d` refers to (virtio 1.2 §2.7.5.3).
    fn enter_indirect(&mut self, d: &Desc) -> Result<(), DeviceQueueError> {
        if self.indirect.is_some() {
            return Err(self.violation(Violation::IndirectInIndirect));
        }
        if !self.indirect_allowed {
            return Err(self.violation(Violation::IndirectNotNegotiated));
        }
        if d.has(desc::F_NEXT) {
            return Err(self.violation(Violation::IndirectWithNext));
        }
        // The §2.7.5.3.2 device requirement: ignore VIRTQ_DESC_F_WRITE on this descriptor.
        let (t, entries) = match indirect_table(self.mem, d.addr, d.len) {
            Ok(t) => t,
            Err(v) => return Err(self.violation(v)),
        };
        self.indirect = Some(t);
        self.table_len = entries;
        self.visited = 0;
        Ok(())
    }

    /// Reads and validates the descriptor at `idx`, entering an indirect table if it is one.
    fn step(&mut self, idx: u16) -> Result<Segment<'m>, DeviceQueueError> {
        let mut d = self.read(idx)?;
        if d.has(desc::F_INDIRECT) {
            self.enter_indirect(&d)?;
            d = self.read(0)?;
            if d.has(desc::F_INDIRECT) {
                return Err(self.violation(Violation::IndirectInIndirect));
            }
        }
        let direction = if d.has(desc::F_WRITE) {
            Direction::DeviceWritable
        } else {
            Direction::DeviceReadable
        };
        let segment = match self.rules.check(self.mem, d.addr, d.len, direction) {
            Ok(s) => s,
            Err(v) => return Err(self.violation(v)),
        };
        self.pos = if !d.has(desc::F_NEXT) {
            None
        } else if u32::from(d.next) < self.table_len {
            Some(d.next)
        } else {
            let table_len = self.table_len;
            return Err(self.violation(Violation::NextOutOfRange {
                next: d.next,
                table_len,
            }));
        };
        Ok(segment)
    }

    /// The next segment; `None` at the end of the chain or after an error.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<Result<Segment<'m>, DeviceQueueError>> {
        if let Some(e) = self.pending.take() {
            self.pos = None;
            return Some(Err(e));
        }
        let idx = self.pos?;
        if let Some(v) = self.broken.get() {
            self.pos = None;
            return Some(Err(DeviceQueueError::Broken(v)));
        }
        let r = self.step(idx);
        if r.is_err() {
            self.pos = None;
        } else if self.pos.is_none() {
            self.rules.record(self.capacity);
        }
        Some(r)
    }
}
