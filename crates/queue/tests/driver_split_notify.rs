//! Driver side of the split ring: notification decisions. Available-buffer notifications
//! (`kick_prepare`, virtio 1.2 §2.7.10, §2.7.13.4) and used-buffer notification suppression
//! (`enable/disable_used_notifications`, `pop_used`, §2.7.7), with flags and with EVENT_IDX,
//! across the 16-bit wrap of the indices.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use driver_fake::split::{split_pair, SplitFakeDevice};
use driver_fake::{seg, FakeDevice};
use vireo_queue::driver::{DriverQueueOptions, SplitDriverQueue};
use vireo_spec::split::{avail, used};
use vireo_spec::Features;

type Pair = (SplitDriverQueue<u32>, SplitFakeDevice);

fn pair(features: Features) -> Pair {
    split_pair(8, features, DriverQueueOptions::default())
}

/// Runs `n` buffers through the ring one at a time, so both indices move on by `n`.
fn advance((q, dev): &mut Pair, n: u32) {
    for t in 0..n {
        q.add(&[], &[seg(0, 4)], t).unwrap();
        q.kick_prepare().unwrap();
        let b = dev.pop_avail().unwrap();
        dev.use_buffer(b.id, 4);
        dev.publish_used();
        assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(t));
    }
}

/// Adds `n` one-segment buffers (not published).
fn add(q: &mut SplitDriverQueue<u32>, n: u32) {
    for t in 0..n {
        q.add(&[seg(u64::from(t), 1)], &[], t).unwrap();
    }
}

/// True iff moving from `old` to `new` passes `event` (the meaning of `vring_need_event`,
/// virtio 1.2 §2.7.10), computed independently of it.
fn crosses(event: u16, old: u16, new: u16) -> bool {
    event.wrapping_sub(old) < new.wrapping_sub(old)
}

#[test]
fn kick_follows_the_no_notify_flag() {
    let mut p = pair(Features::empty());
    let (q, dev) = &mut p;
    assert!(!q.kick_prepare().unwrap(), "nothing published: no kick");
    add(q, 2);
    assert!(q.kick_prepare().unwrap());
    assert_eq!(dev.avail_idx(), 2, "kick_prepare publishes");
    assert!(
        !q.kick_prepare().unwrap(),
        "nothing new since the last answer"
    );
    dev.set_used_flags(used::F_NO_NOTIFY);
    add(q, 1);
    assert!(
        !q.kick_prepare().unwrap(),
        "device asked for no notifications"
    );
    dev.set_used_flags(0);
    add(q, 1);
    assert!(q.kick_prepare().unwrap());
    assert_eq!(dev.avail_idx(), 4);
}

#[test]
fn kick_with_event_idx_across_the_wrap() {
    // Each case publishes 4 buffers, then 4 more in two steps; the event index is set relative
    // to where the case starts. Cases start 8 apart from 0xffe4, so the middle ones cross 0.
    let mut p = pair(Features::EVENT_IDX);
    advance(&mut p, 0xffe4);
    let (q, dev) = &mut p;
    for (case, rel) in [0xffffu16, 0, 3, 4, 5, 7, 8, 0x8000, 2, 6]
        .into_iter()
        .enumerate()
    {
        let start = 0xffe4_u16.wrapping_add(8 * case as u16);
        let event = start.wrapping_add(rel);
        dev.set_avail_event(event);
        add(q, 4);
        let first = q.kick_prepare().unwrap();
        let mid = start.wrapping_add(4);
        assert_eq!(
            first,
            crosses(event, start, mid),
            "event {event:#x} from {start:#x}"
        );
        while let Some(b) = dev.pop_avail() {
            dev.use_buffer(b.id, 0);
        }
        dev.publish_used();
        while q.pop_used().unwrap().is_some() {}
        // Published in two steps: the answer covers both since the last one.
        add(q, 2);
        q.publish().unwrap();
        add(q, 2);
        let second = q.kick_prepare().unwrap();
        let end = start.wrapping_add(8);
        assert_eq!(
            second,
            crosses(event, mid, end),
            "event {event:#x} from {mid:#x}"
        );
        assert_eq!(dev.avail_idx(), end);
        while let Some(b) = dev.pop_avail() {
            dev.use_buffer(b.id, 0);
        }
        dev.publish_used();
        while q.pop_used().unwrap().is_some() {}
    }
}

#[test]
fn kick_with_event_idx_for_every_event_value() {
    let mut p = pair(Features::EVENT_IDX);
    advance(&mut p, 0xfffd);
    let (q, dev) = &mut p;
    add(q, 5);
    q.publish().unwrap();
    // The decision is taken once per publication: replay it for every event value by hand.
    let (old, new) = (0xfffd_u16, 2_u16);
    for event in 0..=u16::MAX {
        assert_eq!(
            vireo_spec::split::need_event(event, new, old),
            crosses(event, old, new)
        );
    }
    dev.set_avail_event(0xffff);
    assert!(q.kick_prepare().unwrap());
    // The flag is ignored with EVENT_IDX (§2.7.10): only the event index counts.
    dev.set_used_flags(used::F_NO_NOTIFY);
    while let Some(b) = dev.pop_avail() {
        dev.use_buffer(b.id, 0);
    }
    dev.publish_used();
    while q.pop_used().unwrap().is_some() {}
    add(q, 1);
    dev.set_avail_event(2);
    assert!(q.kick_prepare().unwrap());
}

#[test]
fn used_notifications_with_the_flag() {
    let mut p = pair(Features::empty());
    let (q, dev) = &mut p;
    add(q, 3);
    q.kick_prepare().unwrap();
    let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
    q.disable_used_notifications().unwrap();
    assert_eq!(dev.avail_flags(), avail::F_NO_INTERRUPT);
    dev.use_buffer(bufs[0].id, 0);
    assert!(!dev.publish_used(), "notifications disabled");
    // Re-enabling with a used buffer waiting: poll again, no notification will come for it.
    assert!(q.enable_used_notifications().unwrap());
    assert_eq!(dev.avail_flags(), 0);
    assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(0));
    assert_eq!(q.pop_used().unwrap(), None);
    assert!(!q.enable_used_notifications().unwrap(), "nothing waiting");
    dev.use_buffer(bufs[1].id, 0);
    assert!(dev.publish_used(), "notifications enabled");
}

#[test]
fn used_notifications_with_event_idx_across_the_wrap() {
    let mut p = pair(Features::EVENT_IDX);
    advance(&mut p, 0xfffe);
    let (q, dev) = &mut p;
    add(q, 4);
    q.kick_prepare().unwrap();
    let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
    // Enabled (the default): pop_used keeps used_event at the next element to read.
    assert_eq!(dev.used_event(), 0xfffe);
    dev.use_buffer(bufs[0].id, 0);
    assert!(
        dev.publish_used(),
        "the device notifies for the next element"
    );
    q.disable_used_notifications().unwrap();
    assert_eq!(
        dev.avail_flags(),
        0,
        "flags stay 0 with EVENT_IDX (§2.7.7.1)"
    );
    dev.use_buffer(bufs[1].id, 0);
    assert!(!dev.publish_used(), "disabled: used_event is behind");
    assert!(
        q.enable_used_notifications().unwrap(),
        "two used buffers waiting"
    );
    assert_eq!(dev.used_event(), 0xfffe);
    assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(0));
    assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(1));
    // The batch is drained: looking for more moves used_event to 0 (across the wrap).
    assert_eq!(q.pop_used().unwrap(), None);
    assert_eq!(dev.used_event(), 0);
    dev.use_buffer(bufs[2].id, 0);
    dev.use_buffer(bufs[3].id, 0);
    assert!(dev.publish_used());
    assert!(q.enable_used_notifications().unwrap());
    assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(2));
    assert_eq!(dev.used_event(), 1, "follows each buffer taken");
    assert_eq!(q.pop_used().unwrap().map(|b| b.token), Some(3));
    assert_eq!(q.pop_used().unwrap(), None);
}

#[test]
fn no_wakeup_is_lost() {
    // enable_used_notifications fences and re-reads: either it reports the buffer, or the
    // device, publishing after it, sees that a notification is due (both formats of §2.7.7).
    for features in [Features::empty(), Features::EVENT_IDX] {
        let mut p = pair(features);
        advance(&mut p, 3);
        let (q, dev) = &mut p;
        add(q, 2);
        q.kick_prepare().unwrap();
        let a = dev.pop_avail().unwrap();
        let b = dev.pop_avail().unwrap();
        q.disable_used_notifications().unwrap();
        dev.use_buffer(a.id, 0);
        dev.publish_used();
        assert!(
            q.enable_used_notifications().unwrap(),
            "{features:?}: buffer a is waiting"
        );
        assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(0));
        assert!(
            !q.enable_used_notifications().unwrap(),
            "{features:?}: nothing waiting"
        );
        dev.use_buffer(b.id, 0);
        assert!(
            dev.publish_used(),
            "{features:?}: device must notify for buffer b"
        );
    }
}
