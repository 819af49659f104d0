//! Property test of the device side against a reference model: random interleavings of driver
//! operations (add chains of random shapes, direct and indirect; publish; reap used entries) and
//! device operations (pop and walk, use, publish). Every popped chain must be the next one the
//! driver published, with exactly the segments (address, length, direction, bytes) it added, and
//! every used element must come back to the driver as the device wrote it, in order.
//!
//! The runner is generic over [`FakeDriver`] and drives the format-independent [`DeviceQueue`],
//! so another ring format joins by adding its fake and one more `proptest!` entry.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use std::collections::VecDeque;

use device_fake::split::SplitFake;
use device_fake::{pattern, Added, BufSpec, ChainSpec, FakeDriver, Reaped, MAX_BUF, MAX_INDIRECT};
use proptest::prelude::*;
use vireo_queue::device::{AvailChain, DeviceQueue, DeviceQueueState, Direction};
use vireo_spec::Features;

/// One step of the interleaving.
#[derive(Debug, Clone)]
enum Op {
    /// The driver adds a chain (skipped when it has too few free descriptors).
    Add(ChainSpec, u8),
    /// The driver publishes what it added.
    Publish,
    /// The device pops a chain and walks it.
    Pop,
    /// The device uses the held chain at this index (modulo), writing at most this many bytes.
    Use(usize, u32),
    /// The device publishes its used entries.
    PublishUsed,
    /// The driver takes back one used entry.
    Reap,
}

fn chain_spec() -> impl Strategy<Value = ChainSpec> {
    let lens = || prop::collection::vec(0..=MAX_BUF, 0..4);
    (lens(), lens(), any::<prop::sample::Index>(), any::<bool>())
        .prop_filter("a chain has a buffer", |(r, w, _, _)| {
            !r.is_empty() || !w.is_empty()
        })
        .prop_map(|(r, w, split, indirect)| {
            let bufs: Vec<BufSpec> = r
                .into_iter()
                .map(|len| BufSpec {
                    len,
                    direction: Direction::DeviceReadable,
                })
                .chain(w.into_iter().map(|len| BufSpec {
                    len,
                    direction: Direction::DeviceWritable,
                }))
                .collect();
            if !indirect {
                return ChainSpec {
                    direct: bufs,
                    indirect: None,
                };
            }
            // Zero or more direct buffers, then a non-empty indirect table.
            let k = split.index(bufs.len());
            let (direct, table) = bufs.split_at(k);
            assert!(table.len() <= usize::from(MAX_INDIRECT));
            ChainSpec {
                direct: direct.to_vec(),
                indirect: Some(table.to_vec()),
            }
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (chain_spec(), any::<u8>()).prop_map(|(c, s)| Op::Add(c, s)),
        2 => Just(Op::Publish),
        3 => Just(Op::Pop),
        3 => (any::<usize>(), 0..=4 * MAX_BUF).prop_map(|(i, n)| Op::Use(i, n)),
        2 => Just(Op::PublishUsed),
        2 => Just(Op::Reap),
    ]
}

/// The bytes the device writes at offset `off` of the writable part of chain `id`.
fn device_byte(id: u16, off: usize) -> u8 {
    (id as u8).wrapping_mul(13).wrapping_add(off as u8) ^ 0x5a
}

/// The model's view of the queue.
#[derive(Default)]
struct Model {
    /// Added, not yet published, in order.
    added: VecDeque<(Added, u8)>,
    /// Published, not yet popped, in order.
    published: VecDeque<(Added, u8)>,
    /// Popped by the device, not yet used.
    held: Vec<(AvailChain, Added)>,
    /// Used, not yet published.
    used: Vec<Reaped>,
    /// Used and published, not yet reaped, in order.
    visible: VecDeque<Reaped>,
}

/// Runs `ops` against a device queue over `drv`, checking everything against the model.
fn run<F: FakeDriver>(mut drv: F, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut q = DeviceQueue::new(drv.mem(), &drv.config(), DeviceQueueState::default()).unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Add(spec, seed) => {
                if let Some(added) = drv.add(&spec, seed) {
                    let want: Vec<_> = spec.buffers().map(|b| (b.len, b.direction)).collect();
                    let got: Vec<_> = added.segs.iter().map(|s| (s.len, s.direction)).collect();
                    prop_assert_eq!(got, want);
                    m.added.push_back((added, seed));
                }
            }
            Op::Publish => {
                drv.publish();
                m.published.extend(m.added.drain(..));
            }
            Op::Pop => {
                let popped = q.pop().unwrap();
                let Some((expected, seed)) = m.published.pop_front() else {
                    prop_assert!(
                        popped.is_none(),
                        "popped a chain the driver did not publish"
                    );
                    continue;
                };
                let chain = popped.expect("a published chain was not popped");
                prop_assert_eq!(chain.id(), expected.id);
                let mut n = 0;
                for (i, seg) in q.chain(&chain, drv.mem()).enumerate() {
                    let seg = seg.unwrap();
                    let e = expected.segs.get(i).copied();
                    prop_assert_eq!(
                        Some((seg.addr, seg.slice.len() as u32, seg.direction)),
                        e.map(|e| (e.addr, e.len, e.direction))
                    );
                    if seg.direction == Direction::DeviceReadable {
                        let mut bytes = vec![0; seg.slice.len()];
                        seg.slice.read(0, &mut bytes).unwrap();
                        let want: Vec<u8> = (0..bytes.len()).map(|o| pattern(seed, i, o)).collect();
                        prop_assert_eq!(bytes, want);
                    }
                    n += 1;
                }
                prop_assert_eq!(n, expected.segs.len());
                m.held.push((chain, expected));
            }
            Op::Use(i, max) => {
                if m.held.is_empty() {
                    continue;
                }
                let (chain, added) = m.held.swap_remove(i % m.held.len());
                let mut written = Vec::new();
                for seg in q.chain(&chain, drv.mem()) {
                    let seg = seg.unwrap();
                    if seg.direction == Direction::DeviceWritable {
                        let n = seg.slice.len().min(max as usize - written.len());
                        let bytes: Vec<u8> = (written.len()..written.len() + n)
                            .map(|o| device_byte(added.id, o))
                            .collect();
                        seg.slice.write(0, &bytes).unwrap();
                        written.extend(bytes);
                    }
                }
                let len = written.len() as u32;
                q.add_used(&chain, len).unwrap();
                m.used.push(Reaped {
                    id: added.id,
                    len,
                    written,
                });
            }
            Op::PublishUsed => {
                q.publish_used().unwrap();
                m.visible.extend(m.used.drain(..));
            }
            Op::Reap => {
                prop_assert_eq!(drv.reap(), m.visible.pop_front());
            }
        }
        prop_assert!(!q.is_broken());
        let in_driver =
            m.added.len() + m.published.len() + m.held.len() + m.used.len() + m.visible.len();
        prop_assert_eq!(drv.outstanding(), in_driver);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn split_device_queue_matches_the_model(
        size_log in 0u32..5,
        event_idx in any::<bool>(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut features = Features::INDIRECT_DESC;
        features.set(Features::EVENT_IDX, event_idx);
        run(SplitFake::new(1 << size_log, features), ops)?;
    }
}
