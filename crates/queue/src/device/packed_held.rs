//! The descriptors of the packed-ring chains the device holds, copied out of the ring at pop.
//!
//! A packed ring's used descriptors overwrite available ones (virtio 1.2 §2.8): when chains are
//! used out of order, the used descriptor of a later chain lands on a ring slot of an earlier
//! chain the device still holds, and the driver may even reuse that slot. So the device cannot
//! re-read a held chain from the ring; it copies each chain's descriptors at pop into this
//! store of `size` entries (allocated once), linked per chain through a free list, so the hot
//! path never allocates. The device never holds more than `size` descriptors (checked at pop),
//! so the store never runs out.

use alloc::vec;
use alloc::vec::Vec;

/// End of a list.
const NIL: u16 = u16::MAX;

/// One descriptor as read (once) from the ring.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeldDesc {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) flags: u16,
    /// Next entry of the same chain (or of the free list).
    next: u16,
}

impl HeldDesc {
    /// A descriptor as read from the ring.
    pub(crate) fn new(addr: u64, len: u32, flags: u16) -> Self {
        HeldDesc {
            addr,
            len,
            flags,
            next: NIL,
        }
    }
}

/// Where a held chain is.
#[derive(Debug, Clone, Copy, Default)]
struct HeldChain {
    first: u16,
    last: u16,
    /// Ring descriptors the chain took (how far its used descriptor moves the used position).
    slots: u16,
}

/// The store: entries, a free list, and per buffer id its chain.
#[derive(Debug)]
pub(crate) struct HeldStore {
    descs: Vec<HeldDesc>,
    free: u16,
    chains: Vec<HeldChain>,
    /// Entries in use.
    used: u16,
}

impl HeldStore {
    /// An empty store for a queue of `size`.
    pub(crate) fn new(size: u16) -> Self {
        let mut s = HeldStore {
            descs: vec![HeldDesc::default(); usize::from(size)],
            free: NIL,
            chains: vec![HeldChain::default(); usize::from(size)],
            used: 0,
        };
        s.clear();
        s
    }

    /// Forgets every chain.
    pub(crate) fn clear(&mut self) {
        let n = self.descs.len();
        for (i, d) in self.descs.iter_mut().enumerate() {
            // n <= 32768, so every index and NIL fit.
            d.next = if i + 1 < n { (i + 1) as u16 } else { NIL };
        }
        self.free = if n > 0 { 0 } else { NIL };
        self.used = 0;
    }

    /// Appends `d` to the chain being built, whose last entry so far is `prev` (`None` for
    /// its first); returns the entry. `None` when the store is full.
    pub(crate) fn push(&mut self, prev: Option<u16>, d: HeldDesc) -> Option<u16> {
        let idx = self.free;
        let slot = self.descs.get_mut(usize::from(idx))?;
        self.free = slot.next;
        *slot = HeldDesc { next: NIL, ..d };
        if let Some(p) = prev.and_then(|p| self.descs.get_mut(usize::from(p))) {
            p.next = idx;
        }
        self.used += 1;
        Some(idx)
    }

    /// Records the chain built from `first` to `last` as buffer `id`'s.
    pub(crate) fn set_chain(&mut self, id: u16, first: u16, last: u16, slots: u16) {
        if let Some(c) = self.chains.get_mut(usize::from(id)) {
            *c = HeldChain { first, last, slots };
        }
    }

    /// Ring descriptors buffer `id`'s chain took.
    pub(crate) fn slots(&self, id: u16) -> u16 {
        self.chains.get(usize::from(id)).map_or(0, |c| c.slots)
    }

    /// The first entry of buffer `id`'s chain.
    pub(crate) fn first(&self, id: u16) -> Option<u16> {
        self.chains.get(usize::from(id)).map(|c| c.first)
    }

    /// Entry `idx` and the entry after it in its chain.
    pub(crate) fn get(&self, idx: u16) -> Option<(HeldDesc, Option<u16>)> {
        let d = *self.descs.get(usize::from(idx))?;
        Some((d, (d.next != NIL).then_some(d.next)))
    }

    /// Gives buffer `id`'s entries back (its chain was used).
    pub(crate) fn release(&mut self, id: u16) {
        let Some(c) = self.chains.get(usize::from(id)).copied() else {
            return;
        };
        if let Some(last) = self.descs.get_mut(usize::from(c.last)) {
            last.next = self.free;
            self.free = c.first;
            self.used = self.used.saturating_sub(c.slots);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(addr: u64) -> HeldDesc {
        HeldDesc::new(addr, 0, 0)
    }

    fn walk(s: &HeldStore, id: u16) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = s.first(id);
        while let Some((desc, next)) = at.and_then(|i| s.get(i)) {
            out.push(desc.addr);
            at = next;
        }
        out
    }

    #[test]
    fn chains_survive_out_of_order_release_and_reuse() {
        let mut s = HeldStore::new(4);
        let a0 = s.push(None, d(10)).unwrap();
        let a1 = s.push(Some(a0), d(11)).unwrap();
        s.set_chain(0, a0, a1, 2);
        let b0 = s.push(None, d(20)).unwrap();
        s.set_chain(1, b0, b0, 1);
        assert_eq!(s.used, 3);
        s.release(1);
        let c0 = s.push(None, d(30)).unwrap();
        let c1 = s.push(Some(c0), d(31)).unwrap();
        s.set_chain(2, c0, c1, 2);
        assert_eq!(s.push(None, d(40)), None, "full");
        assert_eq!(walk(&s, 0), [10, 11]);
        assert_eq!(walk(&s, 2), [30, 31]);
        s.release(0);
        s.release(2);
        assert_eq!(s.used, 0);
        s.clear();
        assert!(s.push(None, d(1)).is_some());
    }
}
