//! Used-buffer notification parity between the ring formats with EVENT_IDX (virtio 1.2 §2.7.10
//! for split, `vring_need_event` over `used_event`; §2.8.10 for packed, `off_wrap` with the
//! wrap counter): driven through the same script, one descriptor per buffer, both formats must
//! decide to notify at exactly the same steps.
//!
//! The script is the loopback's shape (`vireo bench ring --notify eventfd`): the driver keeps
//! used-buffer notifications disabled while it works and enables them only before it would
//! sleep; the device publishes a batch and decides after each. Any difference is a bug in one
//! format's decision (for example a wrap counter mishandled at the end of the ring, or an event
//! offset compared in the wrong lap), which is why the script runs many times round rings of
//! several sizes, including ones that are not powers of two for packed.

// Tests: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use vireo_memory::{GuestMemoryMap, OwnedRegion};
use vireo_queue::device::{DeviceQueue, DeviceQueueState};
use vireo_queue::driver::{BufferSegment, DriverQueue, DriverQueueOptions};
use vireo_queue::{QueueConfig, RingFormat};
use vireo_spec::Features;

const BASE: u64 = 0x10_0000;

struct Ring {
    mem: Arc<GuestMemoryMap>,
    driver: DriverQueue<u32>,
    device: DeviceQueue,
    buffers: u64,
    size: u16,
}

fn ring(format: RingFormat, size: u16) -> Ring {
    let mut features = Features::VERSION_1 | Features::EVENT_IDX;
    if format == RingFormat::Packed {
        features |= Features::RING_PACKED;
    }
    let opts = DriverQueueOptions::default();
    let bytes =
        vireo_queue::driver::required_size(format, size, features, &opts).next_multiple_of(4096);
    let area = OwnedRegion::new_area(bytes + 4096).unwrap();
    let mem = Arc::new(GuestMemoryMap::single(BASE, area.clone()).unwrap());
    let driver =
        DriverQueue::new(area.sub_area(0, bytes).unwrap(), BASE, size, features, opts).unwrap();
    let config = QueueConfig {
        size,
        addrs: driver.addresses(),
        features,
    };
    let device = DeviceQueue::new(&*mem, &config, DeviceQueueState::default()).unwrap();
    Ring {
        mem,
        driver,
        device,
        buffers: BASE + bytes as u64,
        size,
    }
}

/// What one step of the script observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Call(bool),
    Reaped(u32),
    Waiting(bool),
}

/// A small deterministic generator (the script must be the same for both formats).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

fn run_script(r: &mut Ring, seed: u64, steps: u32) -> Vec<Seen> {
    let mut rng = Lcg(seed);
    let mut seen = Vec::new();
    let mut token = 0u32;
    let mut popped = Vec::new();
    // Start with one buffer through (the first decision after a queue is made notifies
    // whenever the flags allow it, whatever the event index says), then notifications off
    // while the driver works, as in the loopback.
    let seg = BufferSegment::new(r.buffers, 16);
    r.driver.add(&[], &[seg], u32::MAX).unwrap();
    r.driver.kick_prepare().unwrap();
    let c = r.device.pop().unwrap().unwrap();
    r.device.push_used(&c, 4).unwrap();
    assert!(r.device.needs_notification().unwrap());
    assert_eq!(
        r.driver.pop_used().unwrap().map(|u| u.token),
        Some(u32::MAX)
    );
    r.driver.disable_used_notifications().unwrap();
    for _ in 0..steps {
        match rng.below(4) {
            0 => {
                let n = 1 + rng.below(u32::from(r.size).min(8));
                for _ in 0..n {
                    if r.driver.num_free() == 0 {
                        break;
                    }
                    let seg = BufferSegment::new(r.buffers, 16);
                    r.driver.add(&[], &[seg], token).unwrap();
                    token += 1;
                }
                r.driver.kick_prepare().unwrap();
            }
            1 => {
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    let Some(c) = r.device.pop().unwrap() else {
                        break;
                    };
                    for s in r.device.chain(&c, &*r.mem) {
                        s.unwrap();
                    }
                    popped.push(c);
                }
                // Use a prefix of what is held, in order (one descriptor each, so positions
                // move alike in both formats).
                let k = rng.below(popped.len() as u32 + 1) as usize;
                for c in popped.drain(..k) {
                    r.device.add_used(&c, 4).unwrap();
                }
                r.device.publish_used().unwrap();
                seen.push(Seen::Call(r.device.needs_notification().unwrap()));
            }
            2 => {
                let mut n = 0;
                while r.driver.pop_used().unwrap().is_some() {
                    n += 1;
                }
                seen.push(Seen::Reaped(n));
            }
            _ => {
                // About to sleep: enable, look once more, and (if nothing) stay enabled until
                // the next reap, as `driver_loop` does around `call.wait()`.
                let more = r.driver.enable_used_notifications().unwrap();
                seen.push(Seen::Waiting(!more));
                if more {
                    r.driver.disable_used_notifications().unwrap();
                } else {
                    // The "sleep": the device may run (step 1) before the driver disables again.
                    let n = 1 + rng.below(8);
                    for _ in 0..n {
                        let Some(c) = r.device.pop().unwrap() else {
                            break;
                        };
                        r.device.add_used(&c, 4).unwrap();
                        r.device.publish_used().unwrap();
                        seen.push(Seen::Call(r.device.needs_notification().unwrap()));
                    }
                    r.driver.disable_used_notifications().unwrap();
                }
            }
        }
    }
    seen
}

#[test]
fn split_and_packed_notify_at_the_same_steps() {
    for size in [4u16, 8, 64, 256] {
        for seed in 0..40u64 {
            let split = run_script(&mut ring(RingFormat::Split, size), seed, 400);
            let packed = run_script(&mut ring(RingFormat::Packed, size), seed, 400);
            let calls = split.iter().filter(|s| **s == Seen::Call(true)).count();
            assert!(
                split.contains(&Seen::Waiting(true)),
                "size {size} seed {seed}: the script never slept"
            );
            assert_eq!(
                split, packed,
                "size {size} seed {seed}: split and packed decided differently ({calls} calls)"
            );
        }
    }
}

#[test]
fn a_sleeping_driver_gets_exactly_one_call_per_sleep() {
    // While the driver sleeps with notifications enabled, the first publish that covers its
    // next used position notifies and later ones do not; while it works, none does.
    for format in [RingFormat::Split, RingFormat::Packed] {
        for size in [4u16, 7, 256] {
            if format == RingFormat::Split && !size.is_power_of_two() {
                continue;
            }
            let seen = run_script(&mut ring(format, size), 7, 2000);
            let mut sleeping = false;
            let mut calls_this_sleep = 0;
            for s in &seen {
                match *s {
                    Seen::Waiting(w) => {
                        sleeping = w;
                        calls_this_sleep = 0;
                    }
                    Seen::Call(c) => {
                        if c {
                            calls_this_sleep += 1;
                        }
                        assert!(
                            sleeping || !c,
                            "{format:?} size {size}: a call while the driver worked"
                        );
                        assert!(
                            calls_this_sleep <= 1,
                            "{format:?} size {size}: two calls for one sleep"
                        );
                    }
                    Seen::Reaped(_) => sleeping = false,
                }
            }
        }
    }
}
