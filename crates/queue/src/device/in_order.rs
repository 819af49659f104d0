//! Batched write-back of used buffers with VIRTIO_F_IN_ORDER (virtio 1.2 §2.7.9 split, §2.8.8
//! packed), shared by both formats.
//!
//! In in-order mode the device may write one used entry for a batch of buffers: the id of the
//! batch's last buffer, and the used position skips over the whole batch. The driver then
//! assumes every skipped buffer was used *completely* (its whole device-writable part written,
//! §2.8.8 "The skipped buffers ... are assumed to have been used (read or written) by the device
//! completely"; the split driver reads the same from the batch). So a buffer may be skipped only
//! when the device wrote exactly its writable capacity: that capacity is known once a
//! [`super::ChainReader`] has walked the whole chain (recorded in [`Capacities`]); a buffer whose
//! capacity is unknown or not filled closes its batch and gets its own used entry.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;

/// The capacity value of a chain not (yet) walked to its end.
const UNKNOWN: u64 = u64::MAX;

/// Per buffer id: the device-writable bytes of the chain, as its last complete walk found them.
#[derive(Debug)]
pub(crate) struct Capacities(Vec<Cell<u64>>);

impl Capacities {
    /// All unknown, for ids `0..size`.
    pub(crate) fn new(size: u16) -> Self {
        Capacities(vec![Cell::new(UNKNOWN); usize::from(size)])
    }

    /// The cell a walk of chain `id` records into.
    pub(crate) fn cell(&self, id: u16) -> Option<&Cell<u64>> {
        self.0.get(usize::from(id))
    }

    /// Forgets what an earlier chain with this id held (at pop).
    pub(crate) fn forget(&self, id: u16) {
        if let Some(c) = self.cell(id) {
            c.set(UNKNOWN);
        }
    }

    /// Forgets everything (at reset).
    pub(crate) fn clear(&self) {
        self.0.iter().for_each(|c| c.set(UNKNOWN));
    }

    /// True if `written` bytes fill chain `id`'s writable part exactly.
    pub(crate) fn is_complete(&self, id: u16, written: u32) -> bool {
        self.cell(id)
            .is_some_and(|c| c.get() != UNKNOWN && c.get() == u64::from(written))
    }
}

/// A run of used buffers written back as one used entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// The last buffer's id (what the entry carries).
    pub(crate) id: u16,
    /// The last buffer's written length.
    pub(crate) len: u32,
    /// Buffers in the run (split: how far `used.idx` moves).
    pub(crate) buffers: u16,
    /// Ring descriptors in the run (packed: how far the used position moves).
    pub(crate) slots: u16,
    /// Whether the last buffer was used completely (so the run may grow past it).
    complete: bool,
}

impl Run {
    /// One buffer on its own.
    pub(crate) fn single(id: u16, len: u32) -> Self {
        Run {
            id,
            len,
            buffers: 1,
            slots: 1,
            complete: false,
        }
    }

    /// The same run covering `slots` descriptors.
    pub(crate) fn with_slots(self, slots: u16) -> Self {
        Run { slots, ..self }
    }
}

/// The run being collected.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    open: Option<Run>,
}

impl Batch {
    /// Adds a used buffer of `slots` descriptors. Returns the run that must be written out
    /// before it (its last buffer was not used completely, so no later entry may cover it).
    pub(crate) fn push(&mut self, id: u16, len: u32, slots: u16, complete: bool) -> Option<Run> {
        let next = Run {
            id,
            len,
            buffers: 1,
            slots,
            complete,
        };
        match &mut self.open {
            // Bounded: at most `size` buffers (and descriptors) are ever held.
            Some(run) if run.complete => {
                run.id = id;
                run.len = len;
                run.buffers = run.buffers.wrapping_add(1);
                run.slots = run.slots.wrapping_add(slots);
                run.complete = complete;
                None
            }
            _ => self.open.replace(next),
        }
    }

    /// Takes the open run, to write it out.
    pub(crate) fn take(&mut self) -> Option<Run> {
        self.open.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_buffers_merge_and_an_incomplete_one_closes_the_run() {
        let mut b = Batch::default();
        assert_eq!(b.push(3, 0, 1, true), None);
        assert_eq!(
            b.push(4, 8, 2, false),
            None,
            "joins: the previous was complete"
        );
        let closed = b.push(5, 1, 1, true).unwrap();
        assert_eq!(
            (closed.id, closed.len, closed.buffers, closed.slots),
            (4, 8, 2, 3)
        );
        let last = b.take().unwrap();
        assert_eq!((last.id, last.buffers, last.slots), (5, 1, 1));
        assert_eq!(b.take(), None);
    }

    #[test]
    fn capacities_know_only_complete_walks() {
        let c = Capacities::new(4);
        assert!(!c.is_complete(1, 0), "unknown is never complete");
        c.cell(1).unwrap().set(16);
        assert!(c.is_complete(1, 16) && !c.is_complete(1, 15));
        c.forget(1);
        assert!(!c.is_complete(1, 16));
        assert!(!c.is_complete(9, 0), "out of range");
    }
}
