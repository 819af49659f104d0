//! Driver side of the packed ring: notification decisions (virtio 1.2 §2.8.10). Available-
//! buffer notifications (`kick_prepare` reading the device event suppression structure:
//! ENABLE, DISABLE, DESC with EVENT_IDX) and used-buffer notification suppression (the driver
//! event suppression structure written by `enable/disable_used_notifications` and `pop_used`),
//! across many wraps of a ring whose size is not a power of two.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use driver_fake::packed::{packed_pair, PackedFakeDevice, Pos};
use driver_fake::{seg, FakeDevice};
use vireo_queue::driver::{DriverQueueOptions, PackedDriverQueue};
use vireo_spec::packed::{event, WrapCounter};
use vireo_spec::Features;

type Pair = (PackedDriverQueue<u32>, PackedFakeDevice);

const SIZE: u16 = 5;

fn pair(features: Features) -> Pair {
    packed_pair(SIZE, features, DriverQueueOptions::default())
}

fn off_wrap(p: Pos) -> u16 {
    p.offset | (p.wrap.bit() << 15)
}

/// The positions from `from` (included) to `to` (excluded), walking the ring: the reference
/// for "the published descriptors cover the event".
fn walk(from: Pos, to: Pos) -> Vec<Pos> {
    let mut v = vec![];
    let mut p = from;
    while p != to {
        v.push(p);
        p = p.advanced(1, SIZE);
    }
    v
}

/// Adds buffers of `descs` descriptors each (direct chains), tokens from `token` on.
fn add(q: &mut PackedDriverQueue<u32>, descs: &[usize], token: u32) {
    for (t, &n) in (token..).zip(descs) {
        let segs: Vec<_> = (0..n as u64).map(|i| seg(i * 4, 4)).collect();
        q.add(&segs, &[], t).unwrap();
    }
}

/// The device takes, uses and publishes everything; the driver takes it back.
fn drain((q, dev): &mut Pair) {
    let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
    for b in &bufs {
        dev.use_buffer(b.id, 0);
    }
    dev.publish_used();
    for _ in &bufs {
        assert!(q.pop_used().unwrap().is_some());
    }
    assert_eq!(q.pop_used().unwrap(), None);
}

#[test]
fn kick_follows_the_device_flags() {
    let mut p = pair(Features::empty());
    let (q, dev) = &mut p;
    assert!(!q.kick_prepare().unwrap(), "nothing published: no kick");
    add(q, &[1], 0);
    assert!(q.kick_prepare().unwrap(), "ENABLE (the zeroed structure)");
    assert!(dev.pop_avail().is_some(), "kick_prepare publishes");
    assert!(
        !q.kick_prepare().unwrap(),
        "nothing new since the last answer"
    );
    dev.set_device_event(0, event::FLAGS_DISABLE);
    add(q, &[2], 1);
    assert!(!q.kick_prepare().unwrap(), "DISABLE");
    drain(&mut p);
    // Values the device should not write with these features: notify rather than risk a hang.
    for flags in [event::FLAGS_DESC, 3] {
        let (q, dev) = &mut p;
        dev.set_device_event(0, flags);
        add(q, &[1], 2);
        assert!(q.kick_prepare().unwrap(), "flags {flags}");
        drain(&mut p);
    }
}

#[test]
fn kick_with_event_idx_across_many_wraps() {
    // §2.8.10 with EVENT_IDX and flags DESC: notify iff the descriptors published since the
    // last decision include the one at the event's offset and wrap counter. Checked against a
    // walk over the ring, for every event position in turn, batches of 1 to 4 descriptors.
    let mut p = pair(Features::EVENT_IDX);
    let mut events_hit = 0;
    for round in 0..300u32 {
        let (q, dev) = &mut p;
        let v = (round * 7) as u16 % (2 * SIZE);
        let event_at = Pos {
            offset: v % SIZE,
            wrap: WrapCounter::from_bit(v / SIZE),
        };
        dev.set_device_event(off_wrap(event_at), event::FLAGS_DESC);
        let before = dev.next_avail();
        let batch: &[usize] = match round % 4 {
            0 => &[1],
            1 => &[2, 1],
            2 => &[3],
            _ => &[1, 1, 2],
        };
        add(q, batch, round * 10);
        let kick = q.kick_prepare().unwrap();
        let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
        assert_eq!(bufs.len(), batch.len());
        let published = walk(before, dev.next_avail());
        let want = published.contains(&event_at);
        assert_eq!(
            kick, want,
            "round {round}: event {event_at:?}, published {published:?}"
        );
        events_hit += usize::from(want);
        for b in &bufs {
            dev.use_buffer(b.id, 0);
        }
        dev.publish_used();
        while q.pop_used().unwrap().is_some() {}
    }
    assert!(events_hit > 50 && events_hit < 250, "both answers seen");
}

#[test]
fn kick_after_several_publications_counts_them_all() {
    // publish() alone does not decide; kick_prepare covers everything published since the
    // last decision.
    let mut p = pair(Features::EVENT_IDX);
    let (q, dev) = &mut p;
    dev.set_device_event(
        off_wrap(Pos {
            offset: 1,
            wrap: WrapCounter::INITIAL,
        }),
        event::FLAGS_DESC,
    );
    add(q, &[1], 0);
    q.publish().unwrap();
    add(q, &[1], 1);
    q.publish().unwrap();
    assert!(
        q.kick_prepare().unwrap(),
        "offset 1 was published by the second publish"
    );
    assert!(!q.kick_prepare().unwrap());
}

#[test]
fn used_notifications_with_flags() {
    let mut p = pair(Features::empty());
    let (q, dev) = &mut p;
    add(q, &[1, 1, 1], 0);
    q.kick_prepare().unwrap();
    let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
    assert_eq!(dev.driver_event().1, event::FLAGS_ENABLE);
    q.disable_used_notifications().unwrap();
    assert_eq!(dev.driver_event().1, event::FLAGS_DISABLE);
    dev.use_buffer(bufs[0].id, 0);
    assert!(!dev.publish_used(), "notifications disabled");
    assert!(
        q.enable_used_notifications().unwrap(),
        "a used buffer is waiting"
    );
    assert_eq!(dev.driver_event().1, event::FLAGS_ENABLE);
    assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(0));
    assert_eq!(q.pop_used().unwrap(), None);
    assert!(!q.enable_used_notifications().unwrap(), "nothing waiting");
    dev.use_buffer(bufs[1].id, 0);
    assert!(dev.publish_used(), "notifications enabled");
}

#[test]
fn used_notifications_with_event_idx_across_many_wraps() {
    // With EVENT_IDX the driver asks (flags DESC) to be notified at its next used position,
    // with the wrap counter that position has; it follows every buffer taken back.
    let mut p = pair(Features::EVENT_IDX);
    for round in 0..40u32 {
        let (q, dev) = &mut p;
        add(q, &[2, 1], round * 2);
        q.kick_prepare().unwrap();
        let a = dev.pop_avail().unwrap();
        let b = dev.pop_avail().unwrap();
        assert_eq!(q.pop_used().unwrap(), None);
        assert_eq!(
            dev.driver_event(),
            (off_wrap(dev.next_used()), event::FLAGS_DESC)
        );
        dev.use_buffer(a.id, 0);
        assert!(
            dev.publish_used(),
            "round {round}: the next used position was asked for"
        );
        q.disable_used_notifications().unwrap();
        assert_eq!(dev.driver_event().1, event::FLAGS_DISABLE);
        dev.use_buffer(b.id, 0);
        assert!(!dev.publish_used(), "round {round}: disabled");
        assert!(
            q.enable_used_notifications().unwrap(),
            "two used buffers waiting"
        );
        assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(round * 2));
        assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(round * 2 + 1));
        assert_eq!(q.pop_used().unwrap(), None);
        assert_eq!(
            dev.driver_event(),
            (off_wrap(dev.next_used()), event::FLAGS_DESC)
        );
    }
}

#[test]
fn no_wakeup_is_lost() {
    // enable_used_notifications fences and looks again: either it reports the buffer, or the
    // device, publishing after it, sees that a notification is due.
    for features in [Features::empty(), Features::EVENT_IDX] {
        let mut p = pair(features);
        for _ in 0..3 {
            let (q, _) = &mut p;
            add(q, &[1], 0);
            q.kick_prepare().unwrap();
            drain(&mut p);
        }
        let (q, dev) = &mut p;
        add(q, &[1, 1], 10);
        q.kick_prepare().unwrap();
        let a = dev.pop_avail().unwrap();
        let b = dev.pop_avail().unwrap();
        q.disable_used_notifications().unwrap();
        dev.use_buffer(a.id, 0);
        dev.publish_used();
        assert!(
            q.enable_used_notifications().unwrap(),
            "{features:?}: a is waiting"
        );
        assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(10));
        assert!(
            !q.enable_used_notifications().unwrap(),
            "{features:?}: nothing waiting"
        );
        dev.use_buffer(b.id, 0);
        assert!(dev.publish_used(), "{features:?}: device must notify for b");
    }
}
