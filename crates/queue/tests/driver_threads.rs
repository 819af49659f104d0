//! Driver side of either ring format against the fake device in another thread, both sleeping
//! until notified: no notification may be lost (virtio 1.2 §2.7.7, §2.7.10, §2.8.10), with
//! flags and with EVENT_IDX, and every token comes back in order with its length.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use driver_fake::{pair, seg, FORMATS};
use vireo_queue::driver::{DriverQueueError, DriverQueueOptions};
use vireo_queue::RingFormat;
use vireo_spec::Features;

/// Long enough that only a lost notification reaches it.
const LOST: Duration = Duration::from_secs(20);
const TOTAL: u32 = 20_000;

/// A notification: ringing sets it, waiting consumes it.
#[derive(Default)]
struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_one();
    }

    /// False if nothing rang within [`LOST`].
    fn wait(&self) -> bool {
        let guard = self.rung.lock().unwrap();
        let (mut rung, timeout) = self.cv.wait_timeout_while(guard, LOST, |r| !*r).unwrap();
        *rung = false;
        !timeout.timed_out()
    }
}

fn run(features: Features) {
    for &format in FORMATS {
        run_one(format, features);
    }
}

fn run_one(format: RingFormat, features: Features) {
    // 13 for the packed ring: chains straddle its end.
    let size = match format {
        RingFormat::Split => 16,
        RingFormat::Packed => 13,
    };
    let (mut q, mut dev) = pair(format, size, features, DriverQueueOptions::default());
    let kick = Arc::new(Doorbell::default());
    let interrupt = Arc::new(Doorbell::default());
    let stop = Arc::new(AtomicBool::new(false));
    let device = {
        let (kick, interrupt, stop) = (kick.clone(), interrupt.clone(), stop.clone());
        thread::spawn(move || loop {
            while let Some(b) = dev.pop_avail() {
                dev.use_buffer(b.id, u32::try_from(b.writable_len()).unwrap());
            }
            if dev.publish_used() {
                interrupt.ring();
            }
            if stop.load(Ordering::Acquire) {
                return;
            }
            if !dev.arm_avail_notifications() {
                assert!(kick.wait(), "{format:?} {features:?}: device never kicked");
            }
        })
    };
    let (mut next, mut returned) = (0u32, 0u32);
    while returned < TOTAL {
        let before = next;
        while next < TOTAL {
            let w = seg(u64::from(next % 64) * 16, 1 + next % 16);
            match q.add(&[seg(0, 4)], &[w], next) {
                Ok(()) => next += 1,
                Err(DriverQueueError::QueueFull { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if next != before && q.kick_prepare().unwrap() {
            kick.ring();
        }
        let mut progress = false;
        while let Some(u) = q.pop_used().unwrap() {
            assert_eq!((u.token, u.written), (returned, 1 + returned % 16));
            returned += 1;
            progress = true;
        }
        if progress || q.enable_used_notifications().unwrap() {
            continue;
        }
        assert!(
            interrupt.wait(),
            "{format:?} {features:?}: no used-buffer notification"
        );
        q.disable_used_notifications().unwrap();
    }
    stop.store(true, Ordering::Release);
    kick.ring();
    device.join().unwrap();
    assert_eq!((q.num_free(), q.len_in_flight()), (size, 0));
}

#[test]
fn no_notification_is_lost_with_flags() {
    run(Features::empty());
}

#[test]
fn no_notification_is_lost_with_event_idx() {
    run(Features::EVENT_IDX);
}

#[test]
fn no_notification_is_lost_with_event_idx_and_indirect() {
    run(Features::EVENT_IDX | Features::INDIRECT_DESC);
}
