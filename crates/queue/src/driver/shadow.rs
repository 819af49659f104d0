//! The driver's private record of its descriptors: which are free, which buffers are in flight,
//! and what each buffer looked like when it was made available.
//!
//! Nothing here is ever read back from shared memory: the device may overwrite the descriptor
//! table at any time, so every decision (which descriptors to free, how many bytes the device
//! may claim to have written) is taken from this shadow (virtio 1.2 §2.7.5: the table is
//! driver-owned; a misbehaving device could still write it).
//!
//! The free list is a singly linked list through `next`. A direct chain is carved off the front
//! of the list, so its links are the list's own links, and freeing it splices the whole chain
//! back in one step, whatever its length: at the front ([`FreeOrder::Lifo`], the most recently
//! used entries first) or at the back ([`FreeOrder::Fifo`], for IN_ORDER: entries taken in order
//! and returned in order come round again in the same order, virtio 1.2 §2.7.9).
//!
//! A split ring keeps descriptors in the list (a buffer holds its chain); a packed ring keeps
//! buffer ids (a buffer holds one id, its descriptors live in the ring).

use alloc::vec::Vec;

/// A buffer the device owns.
#[derive(Debug)]
pub(super) struct InFlight<T> {
    /// The caller's token, returned when the buffer comes back.
    pub token: T,
    /// Last descriptor of the chain in the table (the head itself for an indirect buffer).
    pub tail: u16,
    /// Free-list entries the buffer holds (split: descriptors in the table; packed: 1, its id).
    pub count: u16,
    /// Descriptors the buffer occupies in the table or ring.
    pub descs: u16,
    /// Position of the buffer in the order buffers were added (free-running).
    pub seq: u16,
    /// Device-writable bytes in the buffer.
    pub writable: u64,
}

/// Where freed entries go back into the free list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FreeOrder {
    /// At the front: reused first.
    Lifo,
    /// At the back: entries are reused in the order they were first taken (IN_ORDER).
    Fifo,
}

/// Free list and in-flight table for a queue of `size` entries.
#[derive(Debug)]
pub(super) struct Shadow<T> {
    /// `next[i]`: the entry after `i`, in the free list or in its chain.
    next: Vec<u16>,
    /// First free entry (meaningless when `free` is 0).
    free_head: u16,
    /// Last free entry (meaningful only with [`FreeOrder::Fifo`] and `free` not 0).
    free_tail: u16,
    order: FreeOrder,
    /// Number of free descriptors.
    free: u16,
    /// `in_flight[head]`: the buffer whose chain starts at `head`.
    in_flight: Vec<Option<InFlight<T>>>,
    /// Number of buffers in flight.
    in_flight_count: u16,
}

impl<T> Shadow<T> {
    /// All `size` entries free, nothing in flight (allocates: construction only).
    pub fn new(size: u16, order: FreeOrder) -> Self {
        let mut s = Shadow {
            next: alloc::vec![0; usize::from(size)],
            free_head: 0,
            free_tail: size.saturating_sub(1),
            order,
            free: 0,
            in_flight: Vec::with_capacity(usize::from(size)),
            in_flight_count: 0,
        };
        s.in_flight.resize_with(usize::from(size), || None);
        s.relink(size);
        s
    }

    /// Frees every descriptor in order 0, 1, 2, ... (no buffer may be in flight).
    fn relink(&mut self, size: u16) {
        for (i, n) in (1u16..).zip(self.next.iter_mut()) {
            *n = i;
        }
        self.free_head = 0;
        self.free_tail = size.saturating_sub(1);
        self.free = size;
    }

    /// Forgets every buffer and frees every descriptor (tokens still in flight are dropped).
    pub fn reset(&mut self) {
        self.in_flight.iter_mut().for_each(|s| *s = None);
        self.in_flight_count = 0;
        let size = u16::try_from(self.next.len()).unwrap_or(0);
        self.relink(size);
    }

    /// Number of free descriptors.
    pub fn num_free(&self) -> u16 {
        self.free
    }

    /// Number of buffers in flight.
    pub fn len_in_flight(&self) -> u16 {
        self.in_flight_count
    }

    /// The link after descriptor `i`.
    fn link(&self, i: u16) -> u16 {
        self.next.get(usize::from(i)).copied().unwrap_or(0)
    }

    /// The first `n` free descriptors (`n <= num_free()`), each with the descriptor after it:
    /// the chain a direct buffer of `n` segments occupies. Nothing is taken until [`Self::take`].
    pub fn peek_chain(&self, n: u16) -> impl Iterator<Item = (u16, u16)> + '_ {
        let mut at = self.free_head;
        (0..n.min(self.free)).map(move |_| {
            let here = at;
            at = self.link(here);
            (here, at)
        })
    }

    /// The first free entry (a packed buffer's id), if any.
    pub fn next_free(&self) -> Option<u16> {
        (self.free != 0).then_some(self.free_head)
    }

    /// Takes the first `buffer.count` free descriptors, whose last is `buffer.tail` (as
    /// [`Self::peek_chain`] showed them), for `buffer`; returns the head descriptor.
    pub fn take(&mut self, buffer: InFlight<T>) -> u16 {
        let head = self.free_head;
        self.free_head = self.link(buffer.tail);
        self.free = self.free.saturating_sub(buffer.count);
        if let Some(slot) = self.in_flight.get_mut(usize::from(head)) {
            *slot = Some(buffer);
            self.in_flight_count = self.in_flight_count.saturating_add(1);
        }
        head
    }

    /// The buffer whose chain starts at `head`, if one is in flight.
    pub fn get(&self, head: u16) -> Option<&InFlight<T>> {
        self.in_flight
            .get(usize::from(head))
            .and_then(Option::as_ref)
    }

    /// Removes the buffer whose chain starts at `head` and frees its descriptors.
    pub fn release(&mut self, head: u16) -> Option<InFlight<T>> {
        let buffer = self.in_flight.get_mut(usize::from(head))?.take()?;
        match self.order {
            FreeOrder::Fifo if self.free != 0 => {
                if let Some(n) = self.next.get_mut(usize::from(self.free_tail)) {
                    *n = head;
                }
                self.free_tail = buffer.tail;
            }
            FreeOrder::Fifo => {
                self.free_head = head;
                self.free_tail = buffer.tail;
            }
            FreeOrder::Lifo => {
                if let Some(n) = self.next.get_mut(usize::from(buffer.tail)) {
                    *n = self.free_head;
                }
                self.free_head = head;
            }
        }
        self.free = self.free.saturating_add(buffer.count);
        self.in_flight_count = self.in_flight_count.saturating_sub(1);
        Some(buffer)
    }

    /// Any buffer in flight (the lowest head), for detaching after a device reset.
    pub fn first_in_flight(&self) -> Option<u16> {
        let pos = self.in_flight.iter().position(Option::is_some)?;
        u16::try_from(pos).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(token: u32, tail: u16, count: u16) -> InFlight<u32> {
        InFlight {
            token,
            tail,
            count,
            descs: count,
            seq: 0,
            writable: 0,
        }
    }

    #[test]
    fn chains_come_off_the_front_and_go_back_whole() {
        let mut s = Shadow::<u32>::new(4, FreeOrder::Lifo);
        let chain: Vec<_> = s.peek_chain(3).collect();
        assert_eq!(chain, [(0, 1), (1, 2), (2, 3)]);
        assert_eq!(s.take(buffer(7, 2, 3)), 0);
        assert_eq!((s.num_free(), s.len_in_flight()), (1, 1));
        assert_eq!(
            s.peek_chain(2).count(),
            1,
            "never more than the free descriptors"
        );
        assert_eq!(s.take(buffer(8, 3, 1)), 3);
        assert_eq!(s.num_free(), 0);
        assert_eq!(s.release(0).map(|b| b.token), Some(7));
        assert!(s.release(0).is_none(), "a buffer comes back once");
        // The freed chain is reused in its own order (the last link leads nowhere: none free).
        let again: Vec<_> = s.peek_chain(3).collect();
        assert_eq!(again.get(..2), Some(&[(0, 1), (1, 2)][..]));
        assert_eq!(again.get(2).map(|&(i, _)| i), Some(2));
        assert_eq!(s.first_in_flight(), Some(3));
        s.reset();
        assert_eq!(
            (s.num_free(), s.len_in_flight(), s.first_in_flight()),
            (4, 0, None)
        );
    }

    #[test]
    fn fifo_reuses_entries_in_the_order_first_taken() {
        // IN_ORDER (virtio 1.2 §2.7.9): chains go round the table in order when they are
        // returned in the order they were taken.
        let mut s = Shadow::<u32>::new(4, FreeOrder::Fifo);
        let mut heads = vec![];
        for round in 0..3u32 {
            let mut taken = vec![];
            for (token, count) in [(0, 2), (1, 1)] {
                let last = s.peek_chain(count).last().map(|(i, _)| i).unwrap();
                taken.push(s.take(buffer(round * 2 + token, last, count)));
            }
            for &h in &taken {
                assert!(s.release(h).is_some());
            }
            heads.extend(taken);
        }
        assert_eq!(heads, [0, 2, 3, 1, 2, 0]);
        let order: Vec<_> = s.peek_chain(4).map(|(i, _)| i).collect();
        assert_eq!(order, [1, 2, 3, 0]);
    }
}
