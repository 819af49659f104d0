//! Buffers in the order they were added, and IN_ORDER batches (virtio 1.2 §2.7.9 for the split
//! format, §2.8.8 for the packed one, both "In-order use of descriptors").
//!
//! Each buffer gets a free-running sequence number when it is added; `ids[seq & mask]` is its
//! id (split: head descriptor; packed: buffer id), with `mask + 1` the queue size rounded up to
//! a power of two. A power of two divides 2^16, so slots stay consistent when the 16-bit
//! sequence number wraps (with `seq % size` and a packed size like 3, numbers 65535 and 0 would
//! share a slot), and masking costs no division on the hot path. At most `size` buffers are in
//! flight, so the entries of those in flight are never overwritten.
//!
//! With IN_ORDER the device uses buffers in the order they were made available and may report
//! a whole batch with one used entry naming its last buffer. The driver then returns every
//! buffer up to and including that one, oldest first: the last with the entry's length, the
//! skipped ones as used completely ("The skipped buffers (for which no used descriptor was
//! written) are assumed to have been used (read or written) by the device completely", §2.8.8),
//! i.e. with their whole device-writable length. [`AddOrder`] holds such a batch while its
//! buffers are returned one `pop_used` at a time.

use alloc::vec::Vec;

/// How many bytes the device wrote into a returned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// The length the used entry reported.
    Reported(u32),
    /// A buffer an IN_ORDER batch skipped: used completely, so its whole writable length.
    Whole,
}

impl Written {
    /// The byte count for a buffer with `writable` device-writable bytes.
    pub fn bytes(self, writable: u64) -> u32 {
        match self {
            Written::Reported(n) => n,
            Written::Whole => u32::try_from(writable).unwrap_or(u32::MAX),
        }
    }
}

/// A batch being returned: the sequence number of its last buffer and the length reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    last: u16,
    written: u32,
}

/// The ids of the buffers in flight by sequence number, and the IN_ORDER batch being returned.
#[derive(Debug)]
pub(super) struct AddOrder {
    ids: Vec<u16>,
    /// `ids.len() - 1` (`ids.len()` is a power of two).
    mask: u16,
    batch: Option<Batch>,
}

impl AddOrder {
    /// Room for `size` buffers, rounded up to a power of two (allocates: construction only).
    pub fn new(size: u16) -> Self {
        let len = u32::from(size).next_power_of_two();
        AddOrder {
            ids: alloc::vec![0; len as usize],
            mask: (len - 1) as u16,
            batch: None,
        }
    }

    #[inline]
    fn slot(&self, seq: u16) -> usize {
        usize::from(seq & self.mask)
    }

    /// Records that buffer `id` got sequence number `seq`.
    #[inline]
    pub fn record(&mut self, seq: u16, id: u16) {
        let slot = self.slot(seq);
        if let Some(i) = self.ids.get_mut(slot) {
            *i = id;
        }
    }

    /// The id of the buffer with sequence number `seq`.
    #[inline]
    pub fn id(&self, seq: u16) -> u16 {
        self.ids.get(self.slot(seq)).copied().unwrap_or(0)
    }

    /// Starts returning a batch that ends with the buffer numbered `last`, `written` bytes
    /// reported for it; `oldest` is the number of the oldest buffer in flight, returned next.
    /// A batch of one buffer is no batch: nothing to remember.
    pub fn begin_batch(&mut self, oldest: u16, last: u16, written: u32) {
        if last != oldest {
            self.batch = Some(Batch { last, written });
        }
    }

    /// While a batch is being returned: the id of the oldest buffer (numbered `oldest`) and the
    /// bytes to report for it (the whole buffer, except for the batch's last buffer, which
    /// ends the batch with the reported length).
    pub fn next_in_batch(&mut self, oldest: u16) -> Option<(u16, Written)> {
        let batch = self.batch?;
        let written = if oldest == batch.last {
            self.batch = None;
            Written::Reported(batch.written)
        } else {
            Written::Whole
        };
        Some((self.id(oldest), written))
    }

    /// True while a batch is being returned.
    pub fn has_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// Forgets the batch (the queue is reset).
    pub fn reset(&mut self) {
        self.batch = None;
    }
}

/// Buffers a used entry covers in IN_ORDER mode: from the oldest in flight (numbered `oldest`)
/// to the one it names (numbered `named`), both included.
pub(super) fn batch_len(oldest: u16, named: u16) -> u32 {
    u32::from(named.wrapping_sub(oldest)) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_returns_every_buffer_up_to_the_named_one() {
        let mut o = AddOrder::new(4);
        for (seq, id) in [(65534, 7), (65535, 8), (0, 9)] {
            o.record(seq, id);
        }
        assert_eq!(o.next_in_batch(65534), None, "no batch yet");
        assert_eq!(batch_len(65534, 0), 3, "across the 16-bit wrap");
        o.begin_batch(65534, 0, 100);
        assert_eq!(o.next_in_batch(65534), Some((7, Written::Whole)));
        assert_eq!(o.next_in_batch(65535), Some((8, Written::Whole)));
        assert_eq!(o.next_in_batch(0), Some((9, Written::Reported(100))));
        assert_eq!(o.next_in_batch(1), None, "the batch ended");
        o.begin_batch(1, 1, 5);
        assert_eq!(o.next_in_batch(1), None, "one buffer is no batch");
    }

    #[test]
    fn sequence_numbers_keep_their_slots_across_the_wrap_for_any_size() {
        // A packed ring may have any size (virtio 1.2 §2.8): 3 buffers in flight across the
        // 16-bit wrap must keep three distinct entries.
        for size in [1u16, 3, 5, 255, 256, 32768] {
            let mut o = AddOrder::new(size);
            let seqs: Vec<u16> = (0..size.min(3)).map(|i| 65535u16.wrapping_add(i)).collect();
            for (id, &seq) in (100u16..).zip(&seqs) {
                o.record(seq, id);
            }
            for (id, &seq) in (100u16..).zip(&seqs) {
                assert_eq!(o.id(seq), id, "size {size}, seq {seq}");
            }
        }
    }
}
