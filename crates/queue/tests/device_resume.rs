//! Device side, resuming: the inflight journal sees pop, used and publish in ring order, and
//! re-delivered chains come out of `pop` first (QEMU `docs/interop/vhost-user.rst`, "Inflight
//! I/O tracking").
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use std::sync::{Arc, Mutex};

use device_fake::split::{RawDesc, SplitRing, GUEST_BASE};
use vireo_queue::device::{DeviceQueue, DeviceQueueError, DeviceQueueState, InflightJournal};
use vireo_spec::split::desc;
use vireo_spec::Features;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Popped(u16),
    Used(u16),
    Published(u16),
    Reset,
}

#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl InflightJournal for Recorder {
    fn popped(&mut self, head: u16) {
        self.0.lock().unwrap().push(Event::Popped(head));
    }
    fn used(&mut self, head: u16) {
        self.0.lock().unwrap().push(Event::Used(head));
    }
    fn published(&mut self, used_idx: u16) {
        self.0.lock().unwrap().push(Event::Published(used_idx));
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().push(Event::Reset);
    }
}

/// One writable descriptor per head, at avail positions `from..`.
fn offer(ring: &SplitRing, from: u16, heads: &[u16]) {
    for (k, &head) in heads.iter().enumerate() {
        ring.write_desc(
            head,
            RawDesc {
                addr: GUEST_BASE,
                len: 4,
                flags: desc::F_WRITE,
                next: 0,
            },
        );
        ring.set_avail_entry(from + k as u16, head);
    }
    ring.set_avail_idx(from + heads.len() as u16);
}

fn queue(ring: &SplitRing, state: DeviceQueueState) -> DeviceQueue {
    DeviceQueue::new(&ring.mem, &ring.config(), state).unwrap()
}

#[test]
fn journal_sees_each_step_in_ring_order() {
    let ring = SplitRing::new(8, Features::empty());
    offer(&ring, 0, &[5, 2, 7]);
    let mut q = queue(&ring, DeviceQueueState::default());
    let rec = Recorder::default();
    q.set_journal(Box::new(rec.clone())).unwrap();
    let a = q.pop().unwrap().unwrap();
    let b = q.pop().unwrap().unwrap();
    assert_eq!(rec.take(), [Event::Popped(5), Event::Popped(2)]);
    q.add_used(&b, 0).unwrap();
    q.add_used(&a, 0).unwrap();
    assert_eq!(rec.take(), [Event::Used(2), Event::Used(5)]);
    assert_eq!(ring.used_idx(), 0, "nothing published yet");
    q.publish_used().unwrap();
    assert_eq!(rec.take(), [Event::Published(2)]);
    q.publish_used().unwrap();
    assert_eq!(rec.take(), [], "an empty publish is not journaled");
    let c = q.pop().unwrap().unwrap();
    q.push_used(&c, 0).unwrap();
    assert_eq!(
        rec.take(),
        [Event::Popped(7), Event::Used(7), Event::Published(3)]
    );
    q.reset();
    assert_eq!(rec.take(), [Event::Reset]);
}

#[test]
fn redelivered_chains_come_first_oldest_first_and_are_not_journaled_again() {
    let ring = SplitRing::new(8, Features::empty());
    // Before the restart: heads 3, 6, 1 popped at positions 0..3; 6 was used and published.
    offer(&ring, 0, &[3, 6, 1]);
    // The driver has made one more available since.
    offer(&ring, 3, &[4]);
    let state = DeviceQueueState {
        next_avail: 3,
        next_used: 1,
        ..DeviceQueueState::default()
    };
    let mut q = queue(&ring, state);
    let rec = Recorder::default();
    q.set_journal(Box::new(rec.clone())).unwrap();
    q.redeliver(&[1, 3]).unwrap();
    let first = q.pop().unwrap().unwrap();
    let second = q.pop().unwrap().unwrap();
    let new = q.pop().unwrap().unwrap();
    assert_eq!(
        (first.id(), second.id(), new.id()),
        (1, 3, 4),
        "re-delivered in the given order, then the ring"
    );
    assert_eq!((first.position(), second.position()), (1, 2));
    assert_eq!(rec.take(), [Event::Popped(4)]);
    // Re-delivered chains are held: they can be walked and used.
    assert_eq!(q.chain(&first, &ring.mem).count(), 1);
    q.push_used(&first, 4).unwrap();
    q.push_used(&second, 4).unwrap();
    assert_eq!(ring.used_idx(), 3);
    assert_eq!(ring.used_elem(1), (1, 4));
}

#[test]
fn redelivery_refuses_bad_heads_and_changes_nothing() {
    let ring = SplitRing::new(8, Features::empty());
    let mut q = queue(&ring, DeviceQueueState::default());
    assert_eq!(
        q.redeliver(&[8]),
        Err(DeviceQueueError::ChainIdOutOfRange { head: 8, size: 8 })
    );
    assert_eq!(
        q.redeliver(&[2, 2]),
        Err(DeviceQueueError::ResumeHeadRepeated { head: 2 })
    );
    assert_eq!(
        q.redeliver(&[0; 9]),
        Err(DeviceQueueError::ResumeTooMany { count: 9, size: 8 })
    );
    assert_eq!(q.pop().unwrap(), None, "nothing was queued");
    // A head the queue already holds cannot be re-delivered.
    offer(&ring, 0, &[2]);
    let c = q.pop().unwrap().unwrap();
    assert_eq!(
        q.redeliver(&[c.id()]),
        Err(DeviceQueueError::ResumeHeadRepeated { head: 2 })
    );
    assert!(!q.is_broken());
}

#[test]
fn the_driver_cannot_offer_a_redelivered_head_again() {
    let ring = SplitRing::new(8, Features::empty());
    let mut q = queue(&ring, DeviceQueueState::default());
    q.redeliver(&[5]).unwrap();
    offer(&ring, 0, &[5]);
    assert_eq!(q.pop().unwrap().unwrap().id(), 5);
    assert!(matches!(q.pop(), Err(DeviceQueueError::Violation(_))));
}

#[test]
fn packed_rings_have_no_journal() {
    let ring = SplitRing::new(8, Features::RING_PACKED);
    let mut q = DeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap();
    assert_eq!(
        q.set_journal(Box::new(Recorder::default())),
        Err(DeviceQueueError::ResumeUnsupported)
    );
    assert_eq!(q.redeliver(&[]), Err(DeviceQueueError::ResumeUnsupported));
}
