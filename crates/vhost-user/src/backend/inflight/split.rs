//! The split-ring queue region (QEMU `docs/interop/vhost-user.rst`, "Inflight I/O tracking",
//! `QueueRegionSplit` and `DescStateSplit`) as a checked view, the journal that keeps it while
//! the ring runs, and the recovery that reads it when the ring starts again.
//!
//! Layout (native byte order, which is little-endian on every host Vireo builds for):
//!
//! ```text
//! header, 16 bytes:  features u64 | version u16 | desc_num u16 | last_batch_head u16 | used_idx u16
//! desc[i], 16 bytes: inflight u8 | padding [u8; 5] | next u16 | counter u64
//! ```
//!
//! The protocol, step by step, and why a crash between any two steps leaves a record the
//! recovery reads correctly:
//! 1. pop head `i`: `desc[i].counter = counter++`, then `desc[i].inflight = 1`, before the
//!    device sees the chain. A crash before this re-pops the entry: the resume position is
//!    `used.idx` plus the number of heads in flight, and the pops are recorded in ring order.
//! 2. used element written for `i`: `desc[i].next = last_batch_head`, then
//!    `last_batch_head = i`. Not yet visible: after a crash `i` is still in flight and is
//!    resubmitted (its used element is overwritten).
//! 3. the queue stores `used.idx` (the batch is visible), then each head of the batch gets
//!    `inflight = 0`, then `used_idx = used.idx`. A crash in between leaves `used_idx` behind
//!    `used.idx`: the recovery walks the last batch (`used.idx - used_idx` heads from
//!    `last_batch_head` along `next`) and clears it.
//!
//! Each store that ends a step is a PUBLISH (release) store, so no earlier store of the step
//! (or the queue's `used.idx` store, for step 3) can be reordered after it.

use std::fmt;

use vireo_memory::{SharedArea, SharedSlice};
use vireo_queue::device::InflightJournal;
use vireo_queue::ordering;

/// Bytes of the queue region's header.
pub(crate) const HEADER_SIZE: usize = 16;
/// Bytes of one descriptor state.
pub(crate) const DESC_SIZE: usize = 16;
/// The layout version this module writes ("It's 1 currently").
pub(crate) const VERSION: u16 = 1;

const FEATURES: usize = 0;
const VERSION_OFF: usize = 8;
const DESC_NUM: usize = 10;
const LAST_BATCH_HEAD: usize = 12;
const USED_IDX: usize = 14;
const D_INFLIGHT: usize = 0;
const D_NEXT: usize = 6;
const D_COUNTER: usize = 8;

fn desc(i: u16) -> usize {
    HEADER_SIZE + DESC_SIZE * usize::from(i)
}

/// Why a queue region's contents cannot be trusted; the ring then starts from the front-end's
/// base and the region is initialised again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// The region has a layout version this back-end does not know.
    UnknownVersion {
        /// The version found.
        version: u16,
    },
    /// The region was made for another queue size.
    DescNum {
        /// The size in the region.
        desc_num: u16,
        /// The ring's size.
        size: u16,
    },
    /// The unfinished last batch is larger than the queue (the used ring was reset, or the
    /// region is garbage).
    BatchTooLarge {
        /// `used.idx - used_idx`.
        batch: u16,
        /// Queue size.
        size: u16,
    },
    /// The last batch's list names a head outside the queue.
    BatchHeadOutOfRange {
        /// The head.
        head: u16,
        /// Queue size.
        size: u16,
    },
    /// More heads are in flight than the driver has made available beyond `used.idx`.
    MoreInFlightThanAvailable {
        /// Heads marked in flight.
        in_flight: u16,
        /// `avail.idx - used.idx`.
        outstanding: u16,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecordError::UnknownVersion { version } => {
                write!(
                    f,
                    "the region has a layout version ({version}) this back-end does not know"
                )
            }
            RecordError::DescNum { desc_num, size } => write!(
                f,
                "the region was made for another queue size ({desc_num}, the ring has {size})"
            ),
            RecordError::BatchTooLarge { batch, size } => write!(
                f,
                "the unfinished last batch ({batch}) is larger than the queue ({size}): the used \
                 ring was reset, or the region is garbage"
            ),
            RecordError::BatchHeadOutOfRange { head, size } => write!(
                f,
                "the last batch's list names head {head}, outside the queue of {size}"
            ),
            RecordError::MoreInFlightThanAvailable {
                in_flight,
                outstanding,
            } => write!(
                f,
                "{in_flight} heads are marked in flight but the driver has made only \
                 {outstanding} available beyond used.idx"
            ),
        }
    }
}

/// What the recovery found: the heads to resubmit, oldest first, and where the ring resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Heads in flight, in the order they were popped (counter order).
    pub(crate) heads: Vec<u16>,
    /// The next available entry to read: `used.idx` plus the heads in flight; `None` for a
    /// region that was still zeroed (it knows nothing: the front-end's base stands).
    pub(crate) next_avail: Option<u16>,
}

/// One queue's region and the journal state that keeps it.
#[derive(Debug)]
pub(crate) struct QueueRecord {
    area: SharedArea,
    size: u16,
    /// The global counter ("Set desc[i].counter to the value of global counter").
    counter: u64,
    /// Heads whose used element was written since the last publish.
    batch: Vec<u16>,
    /// A batch outgrew the queue (only a driver offering a head again before its used element
    /// was published can do that); logged once.
    overflowed: bool,
}

impl QueueRecord {
    /// A view of `area` for a ring of `size`; `None` when the area is too small.
    pub(crate) fn new(area: SharedArea, size: u16) -> Option<Self> {
        (area.len() >= desc(size)).then(|| QueueRecord {
            area,
            size,
            counter: 0,
            batch: Vec::with_capacity(usize::from(size)),
            overflowed: false,
        })
    }

    fn s(&self) -> SharedSlice<'_> {
        self.area.slice()
    }

    // Every offset below is inside the area (checked in `new`, heads are below `size`), so
    // the stores cannot fail; their results are ignored.
    fn put_u8(&self, off: usize, v: u8, order: std::sync::atomic::Ordering) {
        let _ = self.s().store_u8(off, v, order);
    }
    fn put_u16(&self, off: usize, v: u16, order: std::sync::atomic::Ordering) {
        let _ = self.s().store_u16(off, v, order);
    }
    fn put_u64(&self, off: usize, v: u64, order: std::sync::atomic::Ordering) {
        let _ = self.s().store_u64(off, v, order);
    }
    fn get_u8(&self, off: usize) -> u8 {
        self.s().load_u8(off, ordering::FIELD).unwrap_or(0)
    }
    fn get_u16(&self, off: usize) -> u16 {
        self.s().load_u16(off, ordering::FIELD).unwrap_or(0)
    }
    fn get_u64(&self, off: usize) -> u64 {
        self.s().load_u64(off, ordering::FIELD).unwrap_or(0)
    }

    /// Writes a fresh record: nothing in flight, `used_idx` at the ring's `used.idx`.
    pub(crate) fn initialise(&mut self, used_idx: u16) {
        let _ = self
            .s()
            .fill(HEADER_SIZE, DESC_SIZE * usize::from(self.size), 0);
        self.put_u64(FEATURES, 0, ordering::FIELD);
        self.put_u16(DESC_NUM, self.size, ordering::FIELD);
        self.put_u16(LAST_BATCH_HEAD, 0, ordering::FIELD);
        self.put_u16(USED_IDX, used_idx, ordering::FIELD);
        self.put_u16(VERSION_OFF, VERSION, ordering::PUBLISH);
        self.counter = 0;
        self.batch.clear();
    }

    /// Reads the record when the ring starts ("When reconnecting"), given the ring's
    /// `used.idx` and `avail.idx`: finishes an interrupted batch, then collects the heads in
    /// flight in counter order. A zeroed region (version 0) is initialised and has nothing in
    /// flight. On an error the record is left as found; the caller initialises it.
    pub(crate) fn recover(
        &mut self,
        used_idx: u16,
        avail_idx: u16,
    ) -> Result<Recovered, RecordError> {
        let size = self.size;
        match self.get_u16(VERSION_OFF) {
            0 => {
                self.initialise(used_idx);
                return Ok(Recovered {
                    heads: Vec::new(),
                    next_avail: None,
                });
            }
            VERSION => {}
            version => return Err(RecordError::UnknownVersion { version }),
        }
        let desc_num = self.get_u16(DESC_NUM);
        if desc_num != size {
            return Err(RecordError::DescNum { desc_num, size });
        }
        let recorded = self.get_u16(USED_IDX);
        if recorded != used_idx {
            self.finish_batch(used_idx.wrapping_sub(recorded))?;
            self.put_u16(USED_IDX, used_idx, ordering::PUBLISH);
        }
        // (counter, head) of every head in flight; one pass over the table, bounded by size.
        let mut found: Vec<(u64, u16)> = Vec::new();
        for i in 0..size {
            match self.get_u8(desc(i) + D_INFLIGHT) {
                0 => {}
                1 => found.push((self.get_u64(desc(i) + D_COUNTER), i)),
                other => {
                    tracing::warn!(
                        head = i,
                        value = other,
                        "inflight flag is neither 0 nor 1: clearing it"
                    );
                    self.put_u8(desc(i) + D_INFLIGHT, 0, ordering::FIELD);
                }
            }
        }
        // At most `size` (≤ 32768) heads.
        let in_flight = found.len() as u16;
        let outstanding = avail_idx.wrapping_sub(used_idx);
        if in_flight > outstanding {
            return Err(RecordError::MoreInFlightThanAvailable {
                in_flight,
                outstanding,
            });
        }
        found.sort_unstable();
        if found.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
            tracing::warn!(
                "inflight counters repeat: heads with equal counters resubmitted by index"
            );
        }
        self.counter = found.last().map_or(0, |&(c, _)| c.saturating_add(1));
        self.batch.clear();
        Ok(Recovered {
            heads: found.into_iter().map(|(_, head)| head).collect(),
            next_avail: Some(used_idx.wrapping_add(in_flight)),
        })
    }

    /// Clears the `batch` heads of the last batch, from `last_batch_head` along `next`.
    fn finish_batch(&mut self, batch: u16) -> Result<(), RecordError> {
        let size = self.size;
        if batch > size {
            return Err(RecordError::BatchTooLarge { batch, size });
        }
        let mut head = self.get_u16(LAST_BATCH_HEAD);
        for _ in 0..batch {
            if head >= size {
                return Err(RecordError::BatchHeadOutOfRange { head, size });
            }
            self.put_u8(desc(head) + D_INFLIGHT, 0, ordering::PUBLISH);
            head = self.get_u16(desc(head) + D_NEXT);
        }
        Ok(())
    }
}

impl InflightJournal for QueueRecord {
    fn popped(&mut self, head: u16) {
        if head >= self.size {
            return;
        }
        self.put_u64(desc(head) + D_COUNTER, self.counter, ordering::FIELD);
        self.counter = self.counter.wrapping_add(1);
        self.put_u8(desc(head) + D_INFLIGHT, 1, ordering::PUBLISH);
    }

    fn used(&mut self, head: u16) {
        if head >= self.size {
            return;
        }
        let last = self.get_u16(LAST_BATCH_HEAD);
        self.put_u16(desc(head) + D_NEXT, last, ordering::FIELD);
        self.put_u16(LAST_BATCH_HEAD, head, ordering::PUBLISH);
        if self.batch.len() < self.batch.capacity() {
            self.batch.push(head);
        } else if !self.overflowed {
            self.overflowed = true;
            tracing::warn!("inflight batch outgrew the queue: the driver offered a head twice");
        }
    }

    fn published(&mut self, used_idx: u16) {
        for &head in &self.batch {
            self.put_u8(desc(head) + D_INFLIGHT, 0, ordering::PUBLISH);
        }
        self.batch.clear();
        self.put_u16(USED_IDX, used_idx, ordering::PUBLISH);
    }

    fn reset(&mut self) {
        self.initialise(0);
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
