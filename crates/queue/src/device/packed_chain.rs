//! Walking a held packed-ring chain (virtio 1.2 §2.8.6, §2.8.7), lazily and with every rule
//! checked.
//!
//! The ring part of the chain was copied and checked at pop (see [`super::packed_held`]); this
//! walks those copies, and an indirect table in guest memory entry by entry: its length is
//! `len / 16` entries, every entry is read once, and only VIRTQ_DESC_F_WRITE counts in it
//! (§2.8.7: other flags are reserved and ignored, except that a nested table is refused, as
//! the driver MUST NOT set VIRTQ_DESC_F_INDIRECT there, §2.8.19).

use core::cell::Cell;
use core::fmt;

use vireo_memory::{GuestMemory, SharedSlice};
use vireo_spec::packed::desc;

use super::packed_held::{HeldDesc, HeldStore};
use super::segment::{indirect_table, SegmentRules, WalkLinks};
use super::{DeviceQueueError, Direction, RingArea, Segment, Violation};
use crate::ordering;

/// The reader state of one packed chain. Wrapped by [`super::ChainReader`].
pub(crate) struct PackedChain<'q, 'm, M> {
    mem: &'m M,
    held: &'q HeldStore,
    /// The indirect table being walked, and the next entry and entry count.
    indirect: Option<(SharedSlice<'m>, u32, u32)>,
    /// Next held entry; `None` when the ring part is over.
    pos: Option<u16>,
    /// The queue's latch (see the policy in [`crate::device`]).
    broken: &'q Cell<Option<Violation>>,
    /// An error to yield before anything else (a broken queue, a misused handle).
    pending: Option<DeviceQueueError>,
    rules: SegmentRules,
    /// Where a complete walk records the chain's writable capacity.
    capacity: Option<&'q Cell<u64>>,
    /// The walk is over (its end reached, or an error yielded).
    finished: bool,
}

impl<M> Clone for PackedChain<'_, '_, M> {
    fn clone(&self) -> Self {
        PackedChain { ..*self }
    }
}

impl<M> fmt::Debug for PackedChain<'_, '_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedChain")
            .field("pos", &self.pos)
            .field("indirect", &self.indirect.map(|(_, next, n)| (next, n)))
            .field("pending", &self.pending)
            .finish()
    }
}

fn direction(flags: u16) -> Direction {
    if flags & desc::F_WRITE != 0 {
        Direction::DeviceWritable
    } else {
        Direction::DeviceReadable
    }
}

impl<'q, 'm, M: GuestMemory> PackedChain<'q, 'm, M> {
    /// A walk of the held chain starting at entry `first`. `pending`, if given, is yielded
    /// first and ends the walk.
    #[inline]
    pub(crate) fn new(
        mem: &'m M,
        held: &'q HeldStore,
        first: Option<u16>,
        links: WalkLinks<'q>,
    ) -> Self {
        let WalkLinks {
            broken,
            pending,
            capacity,
        } = links;
        PackedChain {
            mem,
            held,
            indirect: None,
            pos: first,
            broken,
            pending,
            rules: SegmentRules::default(),
            capacity,
            finished: false,
        }
    }

    /// Latches the queue broken and returns the error for this first sighting.
    fn violation(&self, v: Violation) -> DeviceQueueError {
        if self.broken.get().is_none() {
            self.broken.set(Some(v));
        }
        DeviceQueueError::Violation(v)
    }

    fn segment(
        &mut self,
        addr: u64,
        len: u32,
        flags: u16,
    ) -> Result<Segment<'m>, DeviceQueueError> {
        self.rules
            .check(self.mem, addr, len, direction(flags))
            .map_err(|v| self.violation(v))
    }

    /// The next entry of the indirect table being walked, or `None` at its end.
    fn indirect_step(&mut self) -> Option<Result<Segment<'m>, DeviceQueueError>> {
        let (table, next, entries) = self.indirect?;
        if next >= entries {
            self.indirect = None;
            return None;
        }
        self.indirect = Some((table, next + 1, entries));
        // In bounds (next < entries = len / 16), so these cannot fail; kept typed all the same.
        let off = next as usize * desc::SIZE;
        let mem_err = |source| DeviceQueueError::Memory {
            area: RingArea::DescriptorTable,
            source,
        };
        // Field loads: ordered after the CONSUME load of the head's flags at pop.
        let read = || -> Result<(u64, u32, u16), DeviceQueueError> {
            Ok((
                table
                    .load_u64(off + desc::ADDR, ordering::FIELD)
                    .map_err(mem_err)?,
                table
                    .load_u32(off + desc::LEN, ordering::FIELD)
                    .map_err(mem_err)?,
                table
                    .load_u16(off + desc::FLAGS, ordering::FIELD)
                    .map_err(mem_err)?,
            ))
        };
        Some(read().and_then(|(addr, len, flags)| {
            if flags & desc::F_INDIRECT != 0 {
                return Err(self.violation(Violation::IndirectInIndirect));
            }
            self.segment(addr, len, flags)
        }))
    }

    /// The next segment from the held ring descriptors (entering an indirect table if the one
    /// descriptor is one), or `None` at the end of the chain.
    fn step(&mut self) -> Option<Result<Segment<'m>, DeviceQueueError>> {
        if let Some(r) = self.indirect_step() {
            return Some(r);
        }
        let (d, next): (HeldDesc, _) = self.pos.and_then(|p| self.held.get(p))?;
        self.pos = next;
        if d.flags & desc::F_INDIRECT == 0 {
            return Some(self.segment(d.addr, d.len, d.flags));
        }
        // Checked at pop: negotiated, alone in its list. §2.8.7: WRITE on it is ignored.
        match indirect_table(self.mem, d.addr, d.len) {
            Ok((table, entries)) => self.indirect = Some((table, 0, entries)),
            Err(v) => return Some(Err(self.violation(v))),
        }
        self.indirect_step()
    }

    /// The next segment; `None` at the end of the chain or after an error.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<Result<Segment<'m>, DeviceQueueError>> {
        if let Some(e) = self.pending.take() {
            self.end();
            return Some(Err(e));
        }
        if self.finished {
            return None;
        }
        if let Some(v) = self.broken.get() {
            self.end();
            return Some(Err(DeviceQueueError::Broken(v)));
        }
        match self.step() {
            Some(Ok(s)) => Some(Ok(s)),
            Some(Err(e)) => {
                self.end();
                Some(Err(e))
            }
            None => {
                self.rules.record(self.capacity);
                self.end();
                None
            }
        }
    }

    fn end(&mut self) {
        self.pos = None;
        self.indirect = None;
        self.finished = true;
    }
}
