//! Property test of the driver side against a reference model, for every ring format, with and
//! without INDIRECT_DESC, EVENT_IDX and IN_ORDER: random sequences of add / publish / kick /
//! device take, use (one at a time or, in order, as a batch) and publish / pop_used /
//! notification switches / device reset with detach. The notification data always names the
//! next entry to publish. Every token comes back exactly once, with the length the
//! device wrote, in the order the device used them; the device sees exactly the segments added;
//! descriptors are conserved; the strict fake device accepts everything the driver writes.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use std::collections::{HashSet, VecDeque};

use driver_fake::{pair, FakeDevice, SeenSeg, DATA_BASE, FORMATS};
use proptest::prelude::*;
use vireo_queue::driver::{
    BufferSegment, DriverQueue, DriverQueueError, DriverQueueOptions, UsedBuffer,
};
use vireo_queue::RingFormat;
use vireo_spec::Features;

#[derive(Debug, Clone)]
enum Op {
    Add {
        readable: Vec<u32>,
        writable: Vec<u32>,
    },
    Publish,
    Kick,
    /// The device takes up to this many published buffers.
    Take(usize),
    /// The device uses the held buffer at this position (modulo; with IN_ORDER always the
    /// oldest), writing this fraction (of 256ths) of its writable bytes.
    Use {
        pick: usize,
        fraction: u16,
    },
    /// IN_ORDER: the device uses up to this many of the oldest held buffers with one used
    /// element naming the last (virtio 1.2 §2.7.9, §2.8.8); without IN_ORDER, one at a time.
    UseBatch {
        count: usize,
        fraction: u16,
    },
    DevicePublish,
    Pop,
    Disable,
    Enable,
    /// Device reset: the driver detaches everything and resets its queue.
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let lens = || proptest::collection::vec(1u32..=64, 0..=3);
    prop_oneof![
        6 => (lens(), lens()).prop_map(|(readable, writable)| Op::Add { readable, writable }),
        2 => Just(Op::Publish),
        2 => Just(Op::Kick),
        4 => (1usize..5).prop_map(Op::Take),
        4 => (any::<usize>(), 0u16..=256).prop_map(|(pick, fraction)| Op::Use { pick, fraction }),
        2 => (1usize..5, 0u16..=256).prop_map(|(count, fraction)| Op::UseBatch { count, fraction }),
        3 => Just(Op::DevicePublish),
        5 => Just(Op::Pop),
        1 => Just(Op::Disable),
        1 => Just(Op::Enable),
        1 => Just(Op::Reset),
    ]
}

/// A buffer the model knows about.
#[derive(Debug, Clone)]
struct Buf {
    token: u32,
    readable: Vec<SeenSeg>,
    writable: Vec<SeenSeg>,
    descs: u16,
}

#[derive(Debug, Default)]
struct Model {
    next_token: u32,
    /// Added, not yet taken by the device, in ring order; the last `unpublished` are unpublished.
    avail: VecDeque<Buf>,
    unpublished: usize,
    /// Taken by the device: (id, buffer).
    held: Vec<(u16, Buf)>,
    /// Used by the device, not yet published / published, in used-ring order.
    used_unpublished: VecDeque<(Buf, u32)>,
    used: VecDeque<(Buf, u32)>,
    /// Tokens in flight; tokens returned (by pop_used or detach).
    in_flight: HashSet<u32>,
    returned: HashSet<u32>,
    /// Buffers and descriptors published since the queue was (re)started.
    published_bufs: u64,
    published_descs: u64,
}

impl Model {
    fn descs_in_use(&self) -> u16 {
        let bufs = self.avail.iter().chain(self.held.iter().map(|(_, b)| b));
        let used = self
            .used_unpublished
            .iter()
            .chain(&self.used)
            .map(|(b, _)| b);
        bufs.chain(used).map(|b| b.descs).sum()
    }

    fn give_back(&mut self, token: u32) {
        assert!(
            self.in_flight.remove(&token),
            "token {token} was not in flight"
        );
        assert!(self.returned.insert(token), "token {token} came back twice");
    }
}

impl Model {
    /// Every buffer added is published.
    fn published_all(&mut self) {
        let n = self.avail.len();
        for b in self.avail.iter().skip(n - self.unpublished) {
            self.published_bufs += 1;
            self.published_descs += u64::from(b.descs);
        }
        self.unpublished = 0;
    }
}

/// NOTIFICATION_DATA (virtio 1.2 §2.9): split: the available index; packed: the offset and
/// wrap counter of the next descriptor, everything before it published.
fn check_notification_data(q: &DriverQueue<u32>, m: &Model, s: &Setup) {
    let n = q.notification_data(7);
    assert_eq!(n.vqn, 7);
    match s.format {
        RingFormat::Split => assert_eq!(u64::from(n.next_idx()), m.published_bufs % 65536),
        RingFormat::Packed => {
            let size = u64::from(s.size);
            assert_eq!(u64::from(n.next_off), m.published_descs % size);
            let laps = m.published_descs / size;
            assert_eq!(
                n.next_wrap.is_set(),
                laps % 2 == 0,
                "wrap counter starts at 1"
            );
        }
    }
}

/// `fraction` 256ths of the buffer's writable bytes.
fn fraction_of(buf: &Buf, fraction: u16) -> u32 {
    let writable: u64 = buf.writable.iter().map(|s| u64::from(s.len)).sum();
    u32::try_from(writable * u64::from(fraction) / 256).unwrap()
}

struct Setup {
    format: RingFormat,
    size: u16,
    features: Features,
    indirect_table_len: u16,
}

const FEATURE_SETS: &[Features] = &[
    Features::empty(),
    Features::INDIRECT_DESC,
    Features::EVENT_IDX,
    Features::INDIRECT_DESC.union(Features::EVENT_IDX),
    Features::IN_ORDER,
    Features::IN_ORDER
        .union(Features::INDIRECT_DESC)
        .union(Features::EVENT_IDX),
];

fn setup() -> impl Strategy<Value = Setup> {
    (
        proptest::sample::select(FORMATS),
        proptest::sample::select(&[1u16, 2, 3, 4, 5, 8, 13, 16][..]),
        proptest::sample::select(FEATURE_SETS),
        proptest::sample::select(&[0u16, 2, 3, 16][..]),
    )
        .prop_map(|(format, size, features, indirect_table_len)| Setup {
            format,
            // Split sizes are powers of two (virtio 1.2 §2.7); packed ones need not be (§2.8).
            size: match format {
                RingFormat::Split => size.next_power_of_two(),
                RingFormat::Packed => size,
            },
            features,
            indirect_table_len,
        })
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} size {} {:?} table {}",
            self.format, self.size, self.features, self.indirect_table_len
        )
    }
}

fn segments(token: u32, lens: &[u32], base: u64) -> Vec<BufferSegment> {
    let at = DATA_BASE + u64::from(token % 1024) * 1024 + base;
    (0..)
        .zip(lens)
        .map(|(i, &len)| BufferSegment::new(at + i * 64, len))
        .collect()
}

fn run(s: &Setup, ops: &[Op]) {
    let options = DriverQueueOptions {
        indirect_table_len: s.indirect_table_len,
    };
    let (mut q, mut dev) = pair(s.format, s.size, s.features, options);
    let table = if s.features.contains(Features::INDIRECT_DESC) {
        s.indirect_table_len.min(s.size)
    } else {
        0
    };
    let mut m = Model::default();
    for op in ops {
        step(&mut q, dev.as_mut(), &mut m, s, table, op);
        assert_eq!(
            q.num_free() + m.descs_in_use(),
            s.size,
            "descriptors conserved"
        );
        assert_eq!(usize::from(q.len_in_flight()), m.in_flight.len());
        assert!(!q.is_broken());
    }
    // Drain: everything added comes back, with what the device wrote.
    step(&mut q, dev.as_mut(), &mut m, s, table, &Op::Publish);
    step(
        &mut q,
        dev.as_mut(),
        &mut m,
        s,
        table,
        &Op::Take(usize::MAX),
    );
    while !m.held.is_empty() {
        step(
            &mut q,
            dev.as_mut(),
            &mut m,
            s,
            table,
            &Op::Use {
                pick: 0,
                fraction: 128,
            },
        );
    }
    step(&mut q, dev.as_mut(), &mut m, s, table, &Op::DevicePublish);
    while !m.used.is_empty() {
        step(&mut q, dev.as_mut(), &mut m, s, table, &Op::Pop);
    }
    assert_eq!(q.pop_used().unwrap(), None);
    assert!(m.in_flight.is_empty());
    assert_eq!(
        m.returned.len(),
        m.next_token as usize,
        "every token came back once"
    );
    assert_eq!(q.num_free(), s.size);
}

fn step(
    q: &mut DriverQueue<u32>,
    dev: &mut dyn FakeDevice,
    m: &mut Model,
    s: &Setup,
    table: u16,
    op: &Op,
) {
    let size = s.size;
    let in_order = s.features.contains(Features::IN_ORDER);
    match op {
        Op::Add { readable, writable } => {
            let token = m.next_token;
            let r = segments(token, readable, 0);
            let w = segments(token, writable, 512);
            let n = r.len() + w.len();
            let descs = if n >= 2 && n <= usize::from(table) {
                1
            } else {
                n as u16
            };
            let free = q.num_free();
            let result = q.add(&r, &w, token);
            if n == 0 {
                assert_eq!(result, Err(DriverQueueError::EmptyBuffer));
            } else if n > usize::from(size) {
                let max = usize::from(size);
                assert_eq!(
                    result,
                    Err(DriverQueueError::TooManySegments { count: n, max })
                );
            } else if descs > free {
                assert_eq!(
                    result,
                    Err(DriverQueueError::QueueFull {
                        needed: descs,
                        free
                    })
                );
            } else {
                result.unwrap();
                m.next_token += 1;
                m.in_flight.insert(token);
                let seen = |v: &[BufferSegment]| v.iter().map(|&s| SeenSeg::from(s)).collect();
                m.avail.push_back(Buf {
                    token,
                    readable: seen(&r),
                    writable: seen(&w),
                    descs,
                });
                m.unpublished += 1;
            }
        }
        Op::Publish => {
            q.publish().unwrap();
            m.published_all();
            check_notification_data(q, m, s);
        }
        Op::Kick => {
            q.kick_prepare().unwrap();
            m.published_all();
            check_notification_data(q, m, s);
        }
        Op::Take(n) => {
            for _ in 0..*n {
                let Some(b) = dev.pop_avail() else {
                    assert_eq!(m.avail.len(), m.unpublished, "published buffers not seen");
                    break;
                };
                assert!(
                    m.avail.len() > m.unpublished,
                    "device saw an unpublished buffer"
                );
                let buf = m
                    .avail
                    .pop_front()
                    .expect("device saw a buffer never added");
                assert_eq!((&b.readable, &b.writable), (&buf.readable, &buf.writable));
                assert_eq!(
                    b.indirect,
                    buf.descs == 1 && b.readable.len() + b.writable.len() > 1
                );
                m.held.push((b.id, buf));
            }
        }
        Op::Use { pick, fraction } => {
            if !m.held.is_empty() {
                let pick = if in_order { 0 } else { pick % m.held.len() };
                let (id, buf) = m.held.remove(pick);
                let written = fraction_of(&buf, *fraction);
                dev.use_buffer(id, written);
                m.used_unpublished.push_back((buf, written));
            }
        }
        Op::UseBatch { count, fraction } => {
            let count = (*count).min(m.held.len());
            if count == 0 {
                return;
            }
            if !in_order {
                for _ in 0..count {
                    let pick = Op::Use {
                        pick: 0,
                        fraction: *fraction,
                    };
                    step(q, dev, m, s, table, &pick);
                }
                return;
            }
            let batch: Vec<_> = m.held.drain(..count).collect();
            let (last_id, last) = batch.last().unwrap();
            let written = fraction_of(last, *fraction);
            assert_eq!(dev.use_batch(count, written), *last_id);
            // The buffers before the last come back used completely: their whole writable
            // length (virtio 1.2 §2.7.9, §2.8.8: "assumed to have been used ... completely").
            for (i, (_, buf)) in batch.into_iter().enumerate() {
                let w = if i + 1 == count {
                    written
                } else {
                    fraction_of(&buf, 256)
                };
                m.used_unpublished.push_back((buf, w));
            }
        }
        Op::DevicePublish => {
            dev.publish_used();
            m.used.extend(m.used_unpublished.drain(..));
        }
        Op::Pop => {
            let got = q.pop_used().unwrap();
            let want = m.used.pop_front().map(|(b, written)| UsedBuffer {
                token: b.token,
                written,
            });
            assert_eq!(got, want);
            if let Some(u) = got {
                m.give_back(u.token);
            }
        }
        Op::Disable => q.disable_used_notifications().unwrap(),
        Op::Enable => {
            assert_eq!(q.enable_used_notifications().unwrap(), !m.used.is_empty());
        }
        Op::Reset => {
            dev.reset();
            while let Some(token) = q.detach_unused() {
                m.give_back(token);
            }
            q.reset().unwrap();
            m.published_bufs = 0;
            m.published_descs = 0;
            m.avail.clear();
            m.unpublished = 0;
            m.held.clear();
            m.used_unpublished.clear();
            m.used.clear();
            assert!(
                m.in_flight.is_empty(),
                "detach returned every buffer in flight"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn driver_queue_matches_the_model(s in setup(), ops in proptest::collection::vec(op(), 0..120)) {
        run(&s, &ops);
    }
}
