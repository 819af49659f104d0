//! Property test: a driver that writes random bytes into the rings (split: descriptor table,
//! indirect tables and available ring; packed: descriptor ring, flags included, and indirect
//! tables). Whatever it writes, the device side never panics, every walk ends within its bound,
//! every segment it yields obeys the rules, and the first violation latches the queue broken
//! with every later call failing with that same violation. One checker serves both formats.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use device_fake::packed::{PackedRing, RawPacked};
use device_fake::split::{RawDesc, SplitRing};
use proptest::prelude::*;
use vireo_memory::GuestMemoryMap;
use vireo_queue::device::{DeviceQueue, DeviceQueueError, DeviceQueueState, Direction};
use vireo_spec::packed::desc as pdesc;
use vireo_spec::Features;

const SIZE: u16 = 8;

/// A packed descriptor that is often almost right: lengths mostly in a buffer slot (an
/// indirect table's multiple of 16 sometimes), ids mostly in range, flags mostly marking it
/// available in the first lap (AVAIL set, USED clear), any combination otherwise.
fn raw_packed() -> impl Strategy<Value = RawPacked> {
    let len = prop_oneof![6 => 0u32..=64, 2 => (1u32..=4).prop_map(|n| n * 16), 1 => any::<u32>()];
    let id = prop_oneof![8 => 0..SIZE, 1 => any::<u16>()];
    let flags = prop_oneof![
        8 => (0u16..8).prop_map(|f| f | pdesc::F_AVAIL),
        1 => any::<u16>(),
    ];
    (len, id, flags).prop_map(|(len, id, flags)| RawPacked {
        addr: 0,
        len,
        id,
        flags,
    })
}

/// A descriptor that is often almost right: addresses are mostly real buffer or table slots,
/// indices mostly in range, flags any combination.
fn raw_desc(ring_end: u64) -> impl Strategy<Value = RawDesc> {
    let probe = SplitRing::new(SIZE, Features::empty()).layout;
    let addr = prop_oneof![
        6 => (0..SIZE).prop_map(move |d| probe.buf(d)),
        2 => (0..SIZE).prop_map(move |d| probe.itable(d)),
        1 => Just(ring_end - 8),
        1 => any::<u64>(),
    ];
    let len = prop_oneof![6 => 0u32..=64, 2 => (1u32..=4).prop_map(|n| n * 16), 1 => any::<u32>()];
    let flags = prop_oneof![8 => 0u16..8, 1 => any::<u16>()];
    let next = prop_oneof![8 => 0..SIZE, 1 => any::<u16>()];
    (addr, len, flags, next).prop_map(|(addr, len, flags, next)| RawDesc {
        addr,
        len,
        flags,
        next,
    })
}

/// Pops and walks everything the ring offers, checking the rules of the module docs.
fn check(mut q: DeviceQueue, mem: &GuestMemoryMap) -> Result<(), TestCaseError> {
    let mut first_violation = None;
    let mut popped = Vec::new();
    // At most SIZE chains can be in flight; one more pop sees the end or an error.
    for _ in 0..=SIZE {
        let chain = match q.pop() {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                first_violation = Some(e);
                break;
            }
        };
        popped.push(chain);
        prop_assert!(chain.id() < q.size());
        let mut seen_writable = false;
        let mut steps = 0usize;
        for seg in q.chain(&chain, mem) {
            steps += 1;
            // Bound: SIZE table descriptors plus one indirect table of at most 32768.
            prop_assert!(steps <= usize::from(SIZE) + 32768);
            match seg {
                Ok(s) => {
                    prop_assert!(!(seen_writable && s.direction == Direction::DeviceReadable));
                    seen_writable |= s.direction == Direction::DeviceWritable;
                    // The slice is real memory of the stated length.
                    let mut b = vec![0; s.slice.len()];
                    s.slice.read(0, &mut b).unwrap();
                }
                Err(e) => {
                    first_violation = Some(e);
                }
            }
        }
        if first_violation.is_some() {
            break;
        }
    }
    prop_assert!(popped.len() <= usize::from(SIZE));
    match first_violation {
        Some(DeviceQueueError::Violation(v)) => {
            prop_assert_eq!(q.broken_by(), Some(v));
            prop_assert_eq!(q.pop(), Err(DeviceQueueError::Broken(v)));
            prop_assert_eq!(q.enable_kicks(), Err(DeviceQueueError::Broken(v)));
        }
        Some(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        None => {
            prop_assert!(!q.is_broken());
            // Everything popped can be used and published.
            for c in &popped {
                prop_assert!(q.add_used(c, 0).is_ok());
            }
            prop_assert!(q.publish_used().is_ok());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_rings_never_panic_and_latch_on_the_first_violation(
        indirect in any::<bool>(),
        table in prop::collection::vec(raw_desc(SplitRing::new(SIZE, Features::empty()).layout.end), usize::from(SIZE)),
        itables in prop::collection::vec(
            prop::collection::vec(raw_desc(SplitRing::new(SIZE, Features::empty()).layout.end), 4),
            usize::from(SIZE),
        ),
        heads in prop::collection::vec(prop_oneof![9 => 0..SIZE, 1 => any::<u16>()], usize::from(SIZE)),
        avail_idx in prop_oneof![4 => 0..=SIZE, 1 => any::<u16>()],
    ) {
        let features = if indirect { Features::INDIRECT_DESC } else { Features::empty() };
        let ring = SplitRing::new(SIZE, features);
        for (d, desc) in table.iter().enumerate() {
            ring.write_desc(d as u16, *desc);
        }
        for (d, entries) in itables.iter().enumerate() {
            for (j, e) in entries.iter().enumerate() {
                ring.write_desc_at(ring.layout.itable(d as u16), j as u16, *e);
            }
        }
        for (pos, head) in heads.iter().enumerate() {
            ring.set_avail_entry(pos as u16, *head);
        }
        ring.set_avail_idx(avail_idx);

        let q = DeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap();
        check(q, &ring.mem)?;
    }

    #[test]
    fn random_packed_rings_never_panic_and_latch_on_the_first_violation(
        indirect in any::<bool>(),
        size in 1u16..=SIZE,
        ring_descs in prop::collection::vec(raw_packed(), usize::from(SIZE)),
        itables in prop::collection::vec(prop::collection::vec(raw_packed(), 4), usize::from(SIZE)),
    ) {
        let features = if indirect { Features::INDIRECT_DESC } else { Features::empty() };
        let ring = PackedRing::new(size, features);
        for (off, d) in ring_descs.iter().take(usize::from(size)).enumerate() {
            let mut d = *d;
            if d.flags & pdesc::F_INDIRECT != 0 {
                d.addr = ring.layout.itable(d.id % size);
            } else {
                d.addr = ring.layout.buf(d.id % size, 0);
            }
            ring.write_desc(off as u16, d);
        }
        for (id, entries) in itables.iter().enumerate().take(usize::from(size)) {
            for (j, e) in entries.iter().enumerate() {
                let e = RawPacked { addr: ring.layout.buf(id as u16, j as u16), ..*e };
                ring.write_desc_at(ring.layout.itable(id as u16), j as u16, e);
            }
        }
        let q = DeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap();
        check(q, &ring.mem)?;
    }
}
