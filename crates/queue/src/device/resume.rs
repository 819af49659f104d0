//! Resuming a device queue whose device process was restarted: a journal told of every change
//! to the set of chains the device holds (so that a record kept outside the process, such as
//! vhost-user's inflight region, survives a crash), and the re-delivery of the chains such a
//! record says were still in flight.
//!
//! QEMU `docs/interop/vhost-user.rst`, "Inflight I/O tracking": the back-end marks a head in
//! flight when it takes it from the available ring, links it into the "last batch" when it
//! writes its used element, and clears it once `used.idx` has moved past it; after a restart
//! it resubmits the heads still marked, oldest first. The journal sees exactly these three
//! steps, in ring order; the record's layout is the journal's business.
//!
//! Hot path: a queue without a journal pays one branch on an `Option` per step, and one
//! emptiness check per [`DeviceQueue::pop`](super::DeviceQueue::pop) for re-delivery.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use super::AvailChain;

/// Told of each step of a chain's life in the device, in the order the queue takes them.
///
/// Split rings only ([`super::DeviceQueue::set_journal`] refuses packed ones). Each call comes
/// after the step's validation and before anything the driver can see of it: `popped` before
/// [`super::DeviceQueue::pop`] returns the chain, `used` before the used element can be
/// published, `published` right after the store of `used.idx` that made the batch visible.
pub trait InflightJournal: Send + fmt::Debug {
    /// The device took chain `head` from the available ring (not for re-delivered chains:
    /// the record already holds them).
    fn popped(&mut self, head: u16);
    /// The device wrote (or, with IN_ORDER, queued) the used element of chain `head`; it
    /// becomes visible with the next publish.
    fn used(&mut self, head: u16);
    /// `used.idx` was stored as `used_idx`: every chain passed to [`Self::used`] since the
    /// last publish is now visible to the driver.
    fn published(&mut self, used_idx: u16);
    /// The queue was reset (virtio 1.2 §2.6.1): nothing is in flight any more.
    fn reset(&mut self);
}

/// A queue's journal and the chains waiting to be re-delivered.
#[derive(Debug, Default)]
pub(crate) struct Resume {
    /// A journal is attached or chains wait: the one flag the hot path reads.
    active: bool,
    journal: Option<Box<dyn InflightJournal>>,
    /// Re-delivered chains, the next one last (so `Vec::pop` takes it).
    pending: Vec<AvailChain>,
}

impl Resume {
    /// Attaches (or, with `None`, detaches) the journal.
    pub(crate) fn set_journal(&mut self, journal: Option<Box<dyn InflightJournal>>) {
        self.journal = journal;
        self.refresh();
    }

    fn refresh(&mut self) {
        self.active = self.journal.is_some() || !self.pending.is_empty();
    }

    /// True when a journal is attached or chains wait for re-delivery.
    #[inline(always)]
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Queues `chains` (oldest first) for re-delivery ahead of the available ring.
    pub(crate) fn redeliver(&mut self, chains: impl DoubleEndedIterator<Item = AvailChain>) {
        self.pending.clear();
        self.pending.extend(chains.rev());
        self.refresh();
    }

    /// The next chain to re-deliver, if any.
    pub(crate) fn next(&mut self) -> Option<AvailChain> {
        let next = self.pending.pop();
        if self.pending.is_empty() {
            self.refresh();
        }
        next
    }

    /// Number of chains still waiting to be re-delivered.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Tells the journal, if any, of a pop (called only on the journaled path).
    pub(crate) fn popped(&mut self, head: u16) {
        if let Some(j) = &mut self.journal {
            j.popped(head);
        }
    }

    /// Tells the journal, if any, of a used element: one flag read when there is none.
    #[inline(always)]
    pub(crate) fn used(&mut self, head: u16) {
        if self.active {
            self.used_slow(head);
        }
    }

    #[inline(never)]
    fn used_slow(&mut self, head: u16) {
        if let Some(j) = &mut self.journal {
            j.used(head);
        }
    }

    /// Tells the journal, if any, of a publish.
    #[inline]
    pub(crate) fn published(&mut self, used_idx: u16) {
        if let Some(j) = &mut self.journal {
            j.published(used_idx);
        }
    }

    /// The queue was reset: nothing to re-deliver, and the journal forgets everything.
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        if let Some(j) = &mut self.journal {
            j.reset();
        }
        self.refresh();
    }
}

/// Checks heads to re-deliver against the queue: each below `size`, none twice, at most `size`
/// of them. Returns the first offending head's error.
pub(crate) fn check_heads(heads: &[u16], size: u16) -> Result<(), super::DeviceQueueError> {
    use super::DeviceQueueError as E;
    if heads.len() > usize::from(size) {
        return Err(E::ResumeTooMany {
            count: heads.len(),
            size,
        });
    }
    let mut seen = super::inflight::InFlight::new(size);
    for &head in heads {
        if head >= size {
            return Err(E::ChainIdOutOfRange { head, size });
        }
        if !seen.insert(head) {
            return Err(E::ResumeHeadRepeated { head });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceQueueError;

    #[test]
    fn redelivers_oldest_first_then_nothing() {
        let mut r = Resume::default();
        let chains = [3u16, 1, 2].map(|id| AvailChain { id, pos: id });
        r.redeliver(chains.into_iter());
        assert_eq!(r.pending(), 3);
        let order: Vec<u16> = core::iter::from_fn(|| r.next()).map(|c| c.id).collect();
        assert_eq!(order, [3, 1, 2]);
        assert_eq!(r.next(), None);
    }

    #[test]
    fn heads_are_checked() {
        assert_eq!(check_heads(&[0, 7], 8), Ok(()));
        assert_eq!(
            check_heads(&[8], 8),
            Err(DeviceQueueError::ChainIdOutOfRange { head: 8, size: 8 })
        );
        assert_eq!(
            check_heads(&[1, 2, 1], 8),
            Err(DeviceQueueError::ResumeHeadRepeated { head: 1 })
        );
        assert_eq!(
            check_heads(&[0; 9], 8),
            Err(DeviceQueueError::ResumeTooMany { count: 9, size: 8 })
        );
    }
}
