//! Device side, both ring formats: VIRTIO_F_IN_ORDER batched write-back (virtio 1.2 §2.7.9,
//! §2.8.8), VIRTIO_F_NOTIFICATION_DATA (§2.9), VIRTIO_F_RING_RESET (§2.6.1), the saved state
//! and its vhost-user encoding, and packed ring sizes.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use device_fake::packed::{PackedFake, PackedRing};
use device_fake::split::SplitFake;
use device_fake::{BufSpec, ChainSpec, FakeDriver};
use vireo_queue::device::{
    AvailChain, DeviceQueue, DeviceQueueError, DeviceQueueState, Direction, Violation,
};
use vireo_queue::RingFormat;
use vireo_spec::notification::NotificationData;
use vireo_spec::packed::WrapCounter;
use vireo_spec::Features;

fn writable(len: u32) -> ChainSpec {
    ChainSpec {
        direct: vec![BufSpec {
            len,
            direction: Direction::DeviceWritable,
        }],
        indirect: None,
    }
}

fn fake(format: RingFormat, size: u16, features: Features) -> Box<dyn FakeDriver> {
    match format {
        RingFormat::Split => Box::new(SplitFake::new(size, features)),
        RingFormat::Packed => Box::new(PackedFake::new(size, features)),
    }
}

fn queue(drv: &dyn FakeDriver) -> DeviceQueue {
    DeviceQueue::new(drv.mem(), &drv.config(), DeviceQueueState::default()).unwrap()
}

fn pop_all(q: &mut DeviceQueue) -> Vec<AvailChain> {
    std::iter::from_fn(|| q.pop().unwrap()).collect()
}

/// Walks a chain to its end (so its writable capacity is known) and writes `n` bytes.
fn serve(q: &DeviceQueue, c: &AvailChain, drv: &dyn FakeDriver, n: u32) -> u32 {
    let mut left = n;
    for seg in q.chain(c, drv.mem()) {
        let seg = seg.unwrap();
        let k = left.min(seg.slice.len() as u32);
        seg.slice.write(0, &vec![0xab; k as usize]).unwrap();
        left -= k;
    }
    n - left
}

const FORMATS: [RingFormat; 2] = [RingFormat::Split, RingFormat::Packed];

/// §2.7.9, §2.8.8: completely used buffers share one used entry; the driver sees every
/// buffer back, in order, with the last one's length.
#[test]
fn in_order_batches_complete_buffers() {
    for format in FORMATS {
        let mut drv = fake(format, 4, Features::IN_ORDER);
        for _ in 0..3 {
            drv.add(&writable(8), 0).unwrap();
        }
        drv.publish();
        let mut q = queue(&*drv);
        let chains = pop_all(&mut q);
        for c in &chains {
            let n = serve(&q, c, &*drv, 8);
            q.add_used(c, n).unwrap();
        }
        assert_eq!(drv.reap(), None, "{format:?}: nothing before publish");
        q.publish_used().unwrap();
        let reaped: Vec<_> = std::iter::from_fn(|| drv.reap())
            .map(|r| (r.id, r.len))
            .collect();
        let ids: Vec<_> = chains.iter().map(|c| (c.id(), 8)).collect();
        assert_eq!(reaped, ids, "{format:?}");
    }
}

/// The batch really is one entry: the split used ring gets one element for three buffers
/// (`used.idx` moves by 3), the packed ring one used descriptor with the last buffer's id.
#[test]
fn in_order_writes_one_entry_per_batch() {
    let mut drv = SplitFake::new(4, Features::IN_ORDER);
    for _ in 0..3 {
        drv.add(&writable(8), 0).unwrap();
    }
    drv.publish();
    let mut q = queue(&drv);
    let chains = pop_all(&mut q);
    for c in &chains {
        let n = serve(&q, c, &drv, 8);
        q.add_used(c, n).unwrap();
    }
    q.publish_used().unwrap();
    assert_eq!(drv.ring.used_idx(), 3);
    assert_eq!(drv.ring.used_elem(0), (u32::from(chains[2].id()), 8));
    assert_eq!(
        drv.ring.used_elem(1),
        (0, 0),
        "skipped entries are not written"
    );

    let mut drv = PackedFake::new(4, Features::IN_ORDER);
    for _ in 0..3 {
        drv.add(&writable(8), 0).unwrap();
    }
    drv.publish();
    let mut q = queue(&drv);
    let chains = pop_all(&mut q);
    for c in &chains {
        let n = serve(&q, c, &drv, 8);
        q.add_used(c, n).unwrap();
    }
    q.publish_used().unwrap();
    let d0 = drv.ring.desc(0);
    assert_eq!((d0.id, d0.len), (chains[2].id(), 8));
    assert!(WrapCounter::INITIAL.is_used(d0.flags));
    assert!(
        !WrapCounter::INITIAL.is_used(drv.ring.desc(1).flags),
        "skipped"
    );
}

/// A buffer not used completely (or never walked) closes its batch: it gets its own entry with
/// its own length, as the driver would otherwise assume it full.
#[test]
fn in_order_partial_buffers_get_their_own_entry() {
    for format in FORMATS {
        let mut drv = fake(format, 4, Features::IN_ORDER);
        for _ in 0..4 {
            drv.add(&writable(8), 0).unwrap();
        }
        drv.publish();
        let mut q = queue(&*drv);
        let chains = pop_all(&mut q);
        let n0 = serve(&q, &chains[0], &*drv, 3);
        q.add_used(&chains[0], n0).unwrap();
        q.add_used(&chains[1], 8).unwrap(); // not walked: capacity unknown
        let n2 = serve(&q, &chains[2], &*drv, 8);
        q.add_used(&chains[2], n2).unwrap();
        let n3 = serve(&q, &chains[3], &*drv, 1);
        q.add_used(&chains[3], n3).unwrap();
        q.publish_used().unwrap();
        let reaped: Vec<_> = std::iter::from_fn(|| drv.reap())
            .map(|r| (r.id, r.len))
            .collect();
        let want: Vec<_> = chains
            .iter()
            .zip([3, 8, 8, 1])
            .map(|(c, n)| (c.id(), n))
            .collect();
        assert_eq!(reaped, want, "{format:?}");
    }
}

/// In-order mode: used order must be available order; the device's own misuse does not latch.
#[test]
fn in_order_refuses_out_of_order_use() {
    for format in FORMATS {
        let mut drv = fake(format, 4, Features::IN_ORDER);
        drv.add(&writable(8), 0).unwrap();
        drv.add(&writable(8), 0).unwrap();
        drv.publish();
        let mut q = queue(&*drv);
        let chains = pop_all(&mut q);
        let err = q.add_used(&chains[1], 0).unwrap_err();
        assert_eq!(
            err,
            DeviceQueueError::OutOfOrderUse {
                expected: chains[0].position(),
                got: chains[1].position()
            },
            "{format:?}"
        );
        assert!(!q.is_broken() && !err.needs_reset());
        q.add_used(&chains[0], 0).unwrap();
        q.add_used(&chains[1], 0).unwrap();
        q.publish_used().unwrap();
        assert_eq!(std::iter::from_fn(|| drv.reap()).count(), 2);
    }
}

/// §2.9: notification data names this queue and a reachable position; what it announces is
/// counted, a late one announces nothing, an impossible one is a violation.
#[test]
fn notification_data() {
    for format in FORMATS {
        let mut drv = fake(format, 4, Features::NOTIFICATION_DATA);
        drv.add(&writable(8), 0).unwrap();
        drv.add(&writable(8), 0).unwrap();
        drv.publish();
        let mut q = queue(&*drv);
        let note = |n: u16| match format {
            RingFormat::Split => NotificationData::split(5, n),
            RingFormat::Packed => NotificationData::packed(5, n, WrapCounter::INITIAL),
        };
        assert_eq!(q.apply_notification(5, note(2)), Ok(2), "{format:?}");
        assert_eq!(
            q.apply_notification(6, note(2)),
            Err(DeviceQueueError::NotificationForOtherQueue {
                vqn: 5,
                expected: 6
            })
        );
        assert_eq!(pop_all(&mut q).len(), 2);
        assert_eq!(
            q.apply_notification(5, note(1)),
            Ok(0),
            "{format:?}: overtaken"
        );
        assert!(!q.is_broken());
        let bad = match format {
            RingFormat::Split => NotificationData::split(5, 100),
            RingFormat::Packed => NotificationData::packed(5, 4, WrapCounter::INITIAL),
        };
        let err = q.apply_notification(5, bad).unwrap_err();
        assert!(
            matches!(
                err,
                DeviceQueueError::Violation(Violation::NotificationOutOfRange { .. })
            ),
            "{format:?}: {err:?}"
        );
        assert!(q.is_broken());
    }
}

/// Packed positions of the second lap carry wrap counter 0.
#[test]
fn packed_notification_data_across_the_wrap() {
    let mut drv = PackedFake::new(3, Features::NOTIFICATION_DATA);
    let mut q = queue(&drv);
    for _ in 0..2 {
        drv.add(&writable(8), 0).unwrap();
        drv.add(&writable(8), 0).unwrap();
        drv.publish();
        for c in pop_all(&mut q) {
            q.push_used(&c, 0).unwrap();
        }
        while drv.reap().is_some() {}
    }
    // Device at offset 1 of the second lap; the driver announces offset 2 of it.
    let n = NotificationData::packed(0, 2, WrapCounter::ZERO);
    assert_eq!(q.apply_notification(0, n), Ok(1));
}

/// §2.6.1: a reset queue starts over (positions, wrap counters, nothing held, latch cleared),
/// writing nothing to the ring; a fresh driver on the same memory works with it.
#[test]
fn reset_starts_over() {
    for format in FORMATS {
        let mut drv = fake(format, 4, Features::RING_RESET);
        for _ in 0..3 {
            drv.add(&writable(8), 0).unwrap();
        }
        drv.publish();
        let mut q = queue(&*drv);
        let chains = pop_all(&mut q);
        q.push_used(&chains[0], 1).unwrap();
        assert_ne!(q.state(), DeviceQueueState::default());
        q.reset();
        assert_eq!(q.state(), DeviceQueueState::default(), "{format:?}");
        assert!(
            matches!(
                q.add_used(&chains[1], 0),
                Err(DeviceQueueError::ChainNotInFlight { .. })
            ),
            "{format:?}: held buffers are forgotten"
        );
        // The driver reclaims its buffers and re-initialises the ring in the same place.
        drv.reset();
        assert!(!q.is_broken());
        drv.add(&writable(8), 7).unwrap();
        drv.publish();
        let c = q.pop().unwrap().unwrap();
        q.push_used(&c, 2).unwrap();
        assert_eq!(drv.reap().map(|r| r.len), Some(2), "{format:?}");
    }
}

/// A broken queue is usable again after a reset.
#[test]
fn reset_clears_the_latch() {
    let ring = PackedRing::new(4, Features::empty());
    ring.set_flags(
        0,
        vireo_spec::packed::desc::F_AVAIL | vireo_spec::packed::desc::F_USED,
    );
    let mut q = DeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap();
    assert!(q.pop().is_err() && q.is_broken());
    ring.set_flags(0, 0);
    q.reset();
    assert_eq!(q.pop(), Ok(None));
}

/// The vhost-user ring base encoding (QEMU docs/interop/vhost-user.rst): split, the avail
/// index; packed, offset | wrap << 15 for avail (low half) and used (high half).
#[test]
fn vring_base_encoding() {
    let s = DeviceQueueState {
        next_avail: 0x1234,
        next_used: 9,
        ..DeviceQueueState::default()
    };
    assert_eq!(s.vring_base(RingFormat::Split), 0x1234);
    let back = DeviceQueueState::from_vring_base(RingFormat::Split, 0x1234).unwrap();
    assert_eq!(back.next_avail, 0x1234);
    assert_eq!(
        DeviceQueueState::from_vring_base(RingFormat::Split, 0x1_0000),
        None
    );

    let p = DeviceQueueState {
        next_avail: 5,
        avail_wrap: WrapCounter::INITIAL,
        next_used: 3,
        used_wrap: WrapCounter::ZERO,
    };
    assert_eq!(p.vring_base(RingFormat::Packed), 0x0003_8005);
    assert_eq!(
        DeviceQueueState::from_vring_base(RingFormat::Packed, 0x0003_8005),
        Some(p)
    );
    // Only the low half: an idle ring, used where avail is.
    let idle = DeviceQueueState::from_vring_base(RingFormat::Packed, 0x8000).unwrap();
    assert_eq!(idle, DeviceQueueState::default());
}

/// A packed queue resumes at a saved state (second lap) and refuses one outside the ring.
#[test]
fn packed_resume_from_state() {
    let mut drv = PackedFake::new(3, Features::empty());
    let mut q = queue(&drv);
    for _ in 0..4 {
        drv.add(&writable(8), 0).unwrap();
        drv.publish();
        let c = q.pop().unwrap().unwrap();
        q.push_used(&c, 0).unwrap();
        drv.reap().unwrap();
    }
    let state = q.state();
    assert_eq!(
        (
            state.next_avail,
            state.avail_wrap,
            state.next_used,
            state.used_wrap
        ),
        (1, WrapCounter::ZERO, 1, WrapCounter::ZERO)
    );
    let mut q2 = DeviceQueue::new(drv.mem(), &drv.config(), state).unwrap();
    drv.add(&writable(8), 0).unwrap();
    drv.publish();
    let c = q2.pop().unwrap().unwrap();
    q2.push_used(&c, 3).unwrap();
    assert_eq!(drv.reap().map(|r| r.len), Some(3));
    let bad = DeviceQueueState {
        next_avail: 3,
        ..DeviceQueueState::default()
    };
    assert_eq!(
        DeviceQueue::new(drv.mem(), &drv.config(), bad).unwrap_err(),
        DeviceQueueError::StateOutOfRange { offset: 3, size: 3 }
    );
}

/// virtio 1.2 §2.8.10.1: any packed size from 1 to 32768.
#[test]
fn packed_sizes() {
    for size in [1u16, 3, 7, 1000] {
        let ring = PackedRing::new(size, Features::empty());
        assert!(DeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).is_ok());
    }
    let ring = PackedRing::new(1, Features::empty());
    let mut config = ring.config();
    config.size = 0;
    assert_eq!(
        DeviceQueue::new(&ring.mem, &config, DeviceQueueState::default()).unwrap_err(),
        DeviceQueueError::InvalidQueueSize { size: 0 }
    );
    config.size = 1;
    config.addrs.driver_area += 2;
    assert!(matches!(
        DeviceQueue::new(&ring.mem, &config, DeviceQueueState::default()),
        Err(DeviceQueueError::Misaligned { align: 4, .. })
    ));
}
