//! The split queue region: layout, the journal's steps, and recovery after a crash between any
//! two of them (QEMU `docs/interop/vhost-user.rst`, "Inflight I/O tracking").
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use vireo_memory::OwnedRegion;
use vireo_queue::device::InflightJournal;

use super::*;

fn record(size: u16) -> QueueRecord {
    let area = OwnedRegion::new_area(desc(size)).unwrap();
    QueueRecord::new(area, size).unwrap()
}

fn inflight(r: &QueueRecord, head: u16) -> u8 {
    r.get_u8(desc(head) + D_INFLIGHT)
}

/// A device with a ring: pops go through the journal, `used.idx` is a plain counter here.
struct Dev {
    r: QueueRecord,
    used_idx: u16,
    avail_idx: u16,
}

impl Dev {
    fn new(size: u16) -> Self {
        let mut r = record(size);
        assert!(r.recover(0, 0).unwrap().heads.is_empty());
        Dev {
            r,
            used_idx: 0,
            avail_idx: 0,
        }
    }
    fn pop(&mut self, head: u16) {
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.r.popped(head);
    }
    /// Stores `used.idx` for the batch (the queue's PUBLISH store) without the journal step.
    fn store_used_idx(&mut self) {
        self.used_idx = self.used_idx.wrapping_add(self.r.batch.len() as u16);
    }
    fn publish(&mut self) {
        self.store_used_idx();
        self.r.published(self.used_idx);
    }
    fn restart(&mut self) -> Result<Recovered, RecordError> {
        let area = self.r.area.clone_area();
        let mut fresh = QueueRecord::new(area, self.r.size).unwrap();
        let out = fresh.recover(self.used_idx, self.avail_idx);
        self.r = fresh;
        out
    }
}

trait CloneArea {
    fn clone_area(&self) -> SharedArea;
}

impl CloneArea for SharedArea {
    fn clone_area(&self) -> SharedArea {
        self.sub_area(0, self.len()).unwrap()
    }
}

#[test]
fn a_zeroed_region_is_initialised() {
    let mut r = record(8);
    let out = r.recover(17, 20).unwrap();
    assert_eq!(
        out,
        Recovered {
            heads: vec![],
            next_avail: None
        },
        "a fresh region knows nothing: the front-end's base stands"
    );
    assert_eq!(r.get_u16(VERSION_OFF), 1);
    assert_eq!(r.get_u16(DESC_NUM), 8);
    assert_eq!(r.get_u16(USED_IDX), 17);
}

#[test]
fn layout_offsets_match_the_doc() {
    let mut d = Dev::new(8);
    d.pop(3);
    // desc[3] is at 16 + 3 * 16; counter at +8, inflight at +0.
    assert_eq!(d.r.s().load_u8(64, ordering::FIELD).unwrap(), 1);
    assert_eq!(d.r.s().load_u64(72, ordering::FIELD).unwrap(), 0);
    d.r.used(3);
    assert_eq!(
        d.r.s().load_u16(12, ordering::FIELD).unwrap(),
        3,
        "last_batch_head"
    );
    d.publish();
    assert_eq!(
        d.r.s().load_u16(14, ordering::FIELD).unwrap(),
        1,
        "used_idx"
    );
    assert_eq!(d.r.s().load_u8(64, ordering::FIELD).unwrap(), 0);
}

#[test]
fn crash_after_pop_resubmits_in_pop_order() {
    let mut d = Dev::new(8);
    for head in [7, 1, 4] {
        d.pop(head);
    }
    let out = d.restart().unwrap();
    assert_eq!(out.heads, [7, 1, 4], "counter order, not index order");
    assert_eq!(out.next_avail, Some(3));
    // The counter continues after the newest.
    d.r.popped(2);
    assert_eq!(d.r.get_u64(desc(2) + D_COUNTER), 3);
}

#[test]
fn crash_after_add_used_before_publish_resubmits_the_chain() {
    let mut d = Dev::new(8);
    d.pop(3);
    d.pop(5);
    d.r.used(5);
    let out = d.restart().unwrap();
    assert_eq!(out.heads, [3, 5]);
    assert_eq!(out.next_avail, Some(2));
}

#[test]
fn crash_after_publish_before_clearing_finishes_the_batch() {
    let mut d = Dev::new(8);
    for head in [3, 5, 6] {
        d.pop(head);
    }
    d.r.used(5);
    d.r.used(3);
    d.store_used_idx();
    assert_eq!((inflight(&d.r, 3), inflight(&d.r, 5)), (1, 1));
    let out = d.restart().unwrap();
    assert_eq!(out.heads, [6]);
    assert_eq!(out.next_avail, Some(3));
    assert_eq!(d.r.get_u16(USED_IDX), 2, "used_idx caught up with used.idx");
    assert_eq!((inflight(&d.r, 3), inflight(&d.r, 5)), (0, 0));
}

#[test]
fn crash_in_the_middle_of_clearing_finishes_the_batch() {
    let mut d = Dev::new(8);
    for head in [0, 1, 2] {
        d.pop(head);
    }
    for head in [2, 0, 1] {
        d.r.used(head);
    }
    d.store_used_idx();
    // The first of the batch was cleared, then the crash.
    d.r.put_u8(desc(2) + D_INFLIGHT, 0, ordering::FIELD);
    let out = d.restart().unwrap();
    assert!(out.heads.is_empty(), "{:?}", out.heads);
    assert_eq!(out.next_avail, Some(3));
}

#[test]
fn crash_after_clearing_before_used_idx_is_consistent() {
    let mut d = Dev::new(4);
    d.pop(1);
    d.pop(2);
    d.r.used(1);
    d.publish();
    // Undo only the final used_idx store: the batch is re-walked, harmlessly.
    d.r.put_u16(USED_IDX, 0, ordering::FIELD);
    let out = d.restart().unwrap();
    assert_eq!(out.heads, [2]);
    assert_eq!(out.next_avail, Some(2));
}

#[test]
fn a_clean_record_resubmits_nothing_across_the_index_wrap() {
    let mut d = Dev::new(4);
    d.used_idx = 65534;
    d.avail_idx = 65534;
    d.r.initialise(65534);
    for round in 0..5u16 {
        let head = round % 4;
        d.pop(head);
        d.r.used(head);
        d.publish();
    }
    assert_eq!(d.used_idx, 3);
    let out = d.restart().unwrap();
    assert_eq!(
        out,
        Recovered {
            heads: vec![],
            next_avail: Some(3)
        }
    );
}

#[test]
fn hostile_headers_are_typed_errors() {
    let mut r = record(8);
    r.put_u16(VERSION_OFF, 2, ordering::FIELD);
    assert_eq!(
        r.recover(0, 0),
        Err(RecordError::UnknownVersion { version: 2 })
    );
    r.initialise(0);
    r.put_u16(DESC_NUM, 16, ordering::FIELD);
    assert_eq!(
        r.recover(0, 0),
        Err(RecordError::DescNum {
            desc_num: 16,
            size: 8
        })
    );
    r.initialise(0);
    assert_eq!(
        r.recover(9, 9),
        Err(RecordError::BatchTooLarge { batch: 9, size: 8 })
    );
    r.initialise(0);
    r.put_u16(LAST_BATCH_HEAD, 200, ordering::FIELD);
    assert_eq!(
        r.recover(1, 1),
        Err(RecordError::BatchHeadOutOfRange { head: 200, size: 8 })
    );
    r.initialise(0);
    r.put_u8(desc(1) + D_INFLIGHT, 1, ordering::FIELD);
    r.put_u8(desc(2) + D_INFLIGHT, 1, ordering::FIELD);
    assert_eq!(
        r.recover(0, 1),
        Err(RecordError::MoreInFlightThanAvailable {
            in_flight: 2,
            outstanding: 1
        })
    );
}

#[test]
fn hostile_descriptor_states_never_loop_or_panic() {
    let mut r = record(8);
    r.initialise(0);
    // A batch list that loops on itself is walked only `batch` steps.
    r.put_u16(LAST_BATCH_HEAD, 3, ordering::FIELD);
    r.put_u16(desc(3) + D_NEXT, 3, ordering::FIELD);
    // Garbage flag values are cleared, not resubmitted; equal counters order by head.
    r.put_u8(desc(4) + D_INFLIGHT, 7, ordering::FIELD);
    for head in [6, 5] {
        r.put_u8(desc(head) + D_INFLIGHT, 1, ordering::FIELD);
        r.put_u64(desc(head) + D_COUNTER, u64::MAX, ordering::FIELD);
    }
    let out = r.recover(5, 8).unwrap();
    assert_eq!(out.heads, [5, 6]);
    assert_eq!(inflight(&r, 4), 0);
    assert_eq!(r.counter, u64::MAX, "saturates");
}

#[test]
fn a_too_small_area_has_no_record() {
    let area = OwnedRegion::new_area(desc(8) - 1).unwrap();
    assert!(QueueRecord::new(area, 8).is_none());
}

/// One step of a device's life over the ring, for the property below.
#[derive(Debug, Clone)]
enum Op {
    /// Pop the next free head (`n` picks which).
    Pop(usize),
    /// Add the used element of a held head (`n` picks which).
    Use(usize),
    Publish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<usize>().prop_map(Op::Pop),
        2 => any::<usize>().prop_map(Op::Use),
        1 => Just(Op::Publish),
    ]
}

proptest! {
    /// Against a reference model: after a crash at any point (including between the `used.idx`
    /// store and any of the clearing stores), the recovery returns exactly the heads popped and
    /// not yet published, in pop order, and resumes after every popped entry.
    #[test]
    fn recovery_matches_the_model(
        ops in proptest::collection::vec(op(), 0..80),
        crash_cleared in proptest::option::of(0usize..9),
    ) {
        let size = 8u16;
        let mut d = Dev::new(size);
        d.used_idx = 65530;
        d.avail_idx = 65530;
        d.r.initialise(65530);
        // The model: heads held in pop order, and which of them were used (unpublished).
        let mut held: Vec<u16> = Vec::new();
        let mut used: Vec<u16> = Vec::new();
        for op in ops {
            match op {
                Op::Pop(n) => {
                    let free: Vec<u16> = (0..size).filter(|h| !held.contains(h)).collect();
                    if let Some(&h) = free.get(n % free.len().max(1)) {
                        d.pop(h);
                        held.push(h);
                    }
                }
                Op::Use(n) => {
                    let open: Vec<u16> = held.iter().copied().filter(|h| !used.contains(h)).collect();
                    if let Some(&h) = open.get(n % open.len().max(1)) {
                        d.r.used(h);
                        used.push(h);
                    }
                }
                Op::Publish => {
                    d.publish();
                    held.retain(|h| !used.contains(h));
                    used.clear();
                }
            }
        }
        if let Some(k) = crash_cleared {
            // Crash inside a publish: used.idx stored, `k` of the batch cleared.
            d.store_used_idx();
            for &h in d.r.batch.iter().take(k) {
                d.r.put_u8(desc(h) + D_INFLIGHT, 0, ordering::FIELD);
            }
            held.retain(|h| !used.contains(h));
        }
        let out = d.restart().unwrap();
        prop_assert_eq!(&out.heads, &held);
        prop_assert_eq!(out.next_avail, Some(d.avail_idx));
    }
}
