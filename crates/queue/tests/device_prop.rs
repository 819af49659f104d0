//! Property test of the device side against a reference model: random interleavings of driver
//! operations (add chains of random shapes, direct and indirect; publish; reap used entries) and
//! device operations (pop and walk, use, publish). Every popped chain must be the next one the
//! driver published, with exactly the segments (address, length, direction, bytes) it added, and
//! every used element must come back to the driver as the device wrote it, in order.
//!
//! The runner is generic over [`FakeDriver`] and drives the format-independent [`DeviceQueue`];
//! one suite runs it for both ring formats (split, virtio 1.2 §2.7; packed, §2.8), with and
//! without EVENT_IDX, and with IN_ORDER (§2.7.9, §2.8.8), where the device uses chains in the
//! order it popped them and writes one used entry per run of completely used chains.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use std::collections::VecDeque;

use device_fake::packed::PackedFake;
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

/// Runs `ops` against a device queue over `drv`, checking everything against the model. With
/// `in_order`, `Use` always uses the oldest held chain.
fn run<F: FakeDriver>(mut drv: F, in_order: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
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
                let (chain, added) = if in_order {
                    m.held.remove(0)
                } else {
                    m.held.swap_remove(i % m.held.len())
                };
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

/// The ring formats and feature sets the suite runs with.
#[derive(Debug, Clone, Copy)]
enum Format {
    Split,
    Packed,
}

fn run_format(
    format: Format,
    size: u16,
    event_idx: bool,
    in_order: bool,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut features = Features::INDIRECT_DESC;
    features.set(Features::EVENT_IDX, event_idx);
    features.set(Features::IN_ORDER, in_order);
    match format {
        Format::Split => run(SplitFake::new(size, features), in_order, ops),
        Format::Packed => run(PackedFake::new(size, features), in_order, ops),
    }
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Split), Just(Format::Packed)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Split sizes are powers of two; packed sizes any value (virtio 1.2 §2.8.10.1).
    #[test]
    fn device_queue_matches_the_model(
        format in format(),
        size_log in 0u32..5,
        odd_size in 1u16..20,
        event_idx in any::<bool>(),
        in_order in any::<bool>(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let size = match format {
            Format::Split => 1 << size_log,
            Format::Packed => odd_size,
        };
        run_format(format, size, event_idx, in_order, ops)?;
    }
}
