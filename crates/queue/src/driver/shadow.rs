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
//! back in one step, whatever its length.

use alloc::vec::Vec;

/// A buffer the device owns.
#[derive(Debug)]
pub(super) struct InFlight<T> {
    /// The caller's token, returned when the buffer comes back.
    pub token: T,
    /// Last descriptor of the chain in the table (the head itself for an indirect buffer).
    pub tail: u16,
    /// Descriptors the buffer holds in the table.
    pub count: u16,
    /// Device-writable bytes in the buffer.
    pub writable: u64,
    /// The head has been published in the available ring (the device may use the buffer).
    pub published: bool,
}

/// Free list and in-flight table for a queue of `size` descriptors.
#[derive(Debug)]
pub(super) struct Shadow<T> {
    /// `next[i]`: the descriptor after `i`, in the free list or in its chain.
    next: Vec<u16>,
    /// First free descriptor (meaningless when `free` is 0).
    free_head: u16,
    /// Number of free descriptors.
    free: u16,
    /// `in_flight[head]`: the buffer whose chain starts at `head`.
    in_flight: Vec<Option<InFlight<T>>>,
    /// Number of buffers in flight.
    in_flight_count: u16,
}

impl<T> Shadow<T> {
    /// All `size` descriptors free, nothing in flight (allocates: construction only).
    pub fn new(size: u16) -> Self {
        let mut s = Shadow {
            next: alloc::vec![0; usize::from(size)],
            free_head: 0,
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

    /// Records that the buffer whose chain starts at `head` has been published.
    pub fn mark_published(&mut self, head: u16) {
        if let Some(Some(b)) = self.in_flight.get_mut(usize::from(head)) {
            b.published = true;
        }
    }

    /// Removes the buffer whose chain starts at `head` and frees its descriptors.
    pub fn release(&mut self, head: u16) -> Option<InFlight<T>> {
        let buffer = self.in_flight.get_mut(usize::from(head))?.take()?;
        if let Some(n) = self.next.get_mut(usize::from(buffer.tail)) {
            *n = self.free_head;
        }
        self.free_head = head;
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
            writable: 0,
            published: false,
        }
    }

    #[test]
    fn chains_come_off_the_front_and_go_back_whole() {
        let mut s = Shadow::<u32>::new(4);
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
}
