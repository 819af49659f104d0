//! The driver and the strict fake device on two threads, many requests in flight, both ring
//! formats: every block written is read back intact, every slot comes back exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod driver_fake;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver_fake::{config, features_on, harness, FORMATS};
use vireo_blk::driver::{RequestKind, SlotOptions};
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkFeatures, BlkStatus};

const BLOCK: usize = 4096;
const BLOCKS: u64 = 256; // the whole 1 MiB disk
const QD: u16 = 16;

fn content(block: u64, round: u8) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (block as u8) ^ round.wrapping_mul(31) ^ (i as u8).wrapping_mul(13))
        .collect()
}

#[test]
fn concurrent_device_thread_round_trips_every_block() {
    assert_eq!(SlotOptions::default().slots, 128);
    for format in FORMATS {
        round_trip(format);
    }
}

fn round_trip(format: RingFormat) {
    let h = harness(features_on(format, BlkFeatures::empty()), &config(), 64, QD);
    let driver_fake::Harness {
        mut driver,
        mut device,
        data_addr,
        data,
    } = h;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_dev = stop.clone();
    let dev = std::thread::spawn(move || {
        while !stop_dev.load(Ordering::Relaxed) {
            if device.serve().expect("device") == 0 {
                std::thread::yield_now();
            }
        }
        device
    });
    let q = driver.queue(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (round, write) in [(1u8, true), (1u8, false)] {
        let mut next = 0u64;
        let mut done = 0u64;
        let mut owner: Vec<Option<u64>> = vec![None; usize::from(QD)];
        while done < BLOCKS {
            assert!(Instant::now() < deadline, "{format:?}: stuck at {done}");
            for slot in 0..QD {
                if next == BLOCKS || owner[usize::from(slot)].is_some() {
                    continue;
                }
                let off = usize::from(slot) * BLOCK;
                let seg = [vireo_blk::driver::BufferSegment::new(
                    data_addr + off as u64,
                    BLOCK as u32,
                )];
                let sector = next * (BLOCK as u64 / 512);
                if write {
                    data.slice().write(off, &content(next, round)).unwrap();
                    q.submit_write(slot, sector, &seg).unwrap();
                } else {
                    data.slice().fill(off, BLOCK, 0xee).unwrap();
                    q.submit_read(slot, sector, &seg).unwrap();
                }
                owner[usize::from(slot)] = Some(next);
                next += 1;
            }
            q.kick_prepare().unwrap();
            let mut got = Vec::new();
            q.poll_completions(|c| got.push(c)).unwrap();
            for c in got {
                let block = owner[usize::from(c.slot)]
                    .take()
                    .expect("slot came back twice");
                assert_eq!(c.status, BlkStatus::Ok);
                if write {
                    assert_eq!((c.request, c.written), (RequestKind::Write, 1));
                } else {
                    assert_eq!(
                        (c.request, c.written),
                        (RequestKind::Read, BLOCK as u32 + 1)
                    );
                    let mut back = vec![0; BLOCK];
                    data.slice()
                        .read(usize::from(c.slot) * BLOCK, &mut back)
                        .unwrap();
                    assert!(back == content(block, round), "{format:?}: block {block}");
                }
                done += 1;
            }
        }
        assert_eq!(q.in_flight(), 0);
    }
    stop.store(true, Ordering::Relaxed);
    let device = dev.join().unwrap();
    for b in 0..BLOCKS {
        let at = b as usize * BLOCK;
        assert!(
            device.disk[at..at + BLOCK] == content(b, 1)[..],
            "{format:?}: disk block {b}"
        );
    }
}
