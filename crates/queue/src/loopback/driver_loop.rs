//! The driver thread of the loopback (`run_guest` in ringtest): add buffers in batches, kick
//! when the device asks for it, reap used buffers and verify each one.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use vireo_memory::{GuestMemory, GuestMemoryMap};

use super::{
    expected_written, expected_written_at, LoopbackError, LoopbackOptions, Notifier, NotifyMode,
    Payload, ECHO_MASK, READABLE_LEN, WRITABLE_LEN,
};
use crate::driver::{BufferSegment, DriverQueueError, DriverRing};

/// Counters of the driver thread.
pub(super) struct DriverStats {
    pub completed: u64,
    pub kicks: u64,
    /// Times the driver slept waiting for a used-buffer notification.
    pub sleeps: u64,
    seen: Vec<u64>,
}

impl DriverStats {
    /// True when every one of `buffers` sequence numbers was seen exactly once.
    pub fn verified(&self, buffers: u64) -> bool {
        self.completed == buffers
            && self
                .seen
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum::<u64>()
                == buffers
    }
}

const SLOT_BITS: u32 = 16;

/// Runs the driver side until every buffer came back (or either side failed).
///
/// Generic over the ring: [`super::run`] picks the format once, so each format gets its own
/// copy of this loop with no dispatch per call.
pub(super) fn run<Q: DriverRing<u64>>(
    mut queue: Q,
    mem: &GuestMemoryMap,
    buffers_base: u64,
    opts: &LoopbackOptions,
    kick: &dyn Notifier,
    call: &dyn Notifier,
    stop: &AtomicBool,
) -> Result<DriverStats, LoopbackError> {
    let slot_bytes = u64::from(READABLE_LEN + WRITABLE_LEN);
    let mut free_slots: Vec<u16> = (0..opts.outstanding).rev().collect();
    let mut stats = DriverStats {
        completed: 0,
        kicks: 0,
        sleeps: 0,
        seen: vec![0u64; usize::try_from(opts.buffers.div_ceil(64)).unwrap_or(0)],
    };
    let mut next_seq: u64 = 0;
    queue
        .disable_used_notifications()
        .map_err(LoopbackError::Driver)?;
    while stats.completed < opts.buffers {
        if stop.load(Ordering::Relaxed) {
            return Err(LoopbackError::Options("device side stopped"));
        }
        // Add up to one batch.
        let mut added = 0u16;
        while added < opts.batch && next_seq < opts.buffers {
            let Some(slot) = free_slots.pop() else { break };
            let readable = buffers_base + u64::from(slot) * slot_bytes;
            let writable = readable + u64::from(READABLE_LEN);
            let token = (next_seq << SLOT_BITS) | u64::from(slot);
            let added_ok = match opts.payload {
                Payload::Echo => {
                    mem.translate(readable, 8)
                        .and_then(|s| s.write(0, &next_seq.to_le_bytes()))
                        .map_err(LoopbackError::Memory)?;
                    queue.add(
                        &[BufferSegment {
                            addr: readable,
                            len: READABLE_LEN,
                        }],
                        &[BufferSegment {
                            addr: writable,
                            len: WRITABLE_LEN,
                        }],
                        token,
                    )
                }
                Payload::None => queue.add(
                    &[],
                    &[BufferSegment {
                        addr: readable,
                        len: READABLE_LEN + WRITABLE_LEN,
                    }],
                    token,
                ),
            };
            match added_ok {
                Ok(()) => {}
                Err(DriverQueueError::QueueFull { .. }) => {
                    free_slots.push(slot);
                    break;
                }
                Err(e) => return Err(LoopbackError::Driver(e)),
            }
            next_seq += 1;
            added += 1;
        }
        if added > 0 {
            match opts.notify {
                // Polling: publish only; nobody waits for a kick (ringtest's poll mode).
                NotifyMode::Poll => queue.publish().map_err(LoopbackError::Driver)?,
                NotifyMode::Block => {
                    if queue.kick_prepare().map_err(LoopbackError::Driver)? {
                        stats.kicks += 1;
                        kick.notify();
                    }
                }
            }
        }
        // Reap everything that is ready.
        let mut reaped = 0u32;
        while let Some(used) = queue.pop_used().map_err(LoopbackError::Driver)? {
            let seq = used.token >> SLOT_BITS;
            let slot = (used.token & ((1 << SLOT_BITS) - 1)) as u16;
            let buffer = buffers_base + u64::from(slot) * slot_bytes;
            match opts.payload {
                Payload::Echo => verify(mem, buffer + u64::from(READABLE_LEN), seq, used.written)?,
                Payload::None if used.written != expected_written_at(buffer) => {
                    return Err(LoopbackError::Verification("wrong used length", seq));
                }
                Payload::None => {}
            }
            let word = stats
                .seen
                .get_mut((seq / 64) as usize)
                .ok_or(LoopbackError::Verification("token out of range", seq))?;
            let bit = 1u64 << (seq % 64);
            if *word & bit != 0 {
                return Err(LoopbackError::Verification("token came back twice", seq));
            }
            *word |= bit;
            free_slots.push(slot);
            stats.completed += 1;
            reaped += 1;
        }
        if reaped == 0 && added == 0 {
            match opts.notify {
                NotifyMode::Poll => core::hint::spin_loop(),
                NotifyMode::Block => {
                    if !queue
                        .enable_used_notifications()
                        .map_err(LoopbackError::Driver)?
                    {
                        stats.sleeps += 1;
                        call.wait();
                    }
                    queue
                        .disable_used_notifications()
                        .map_err(LoopbackError::Driver)?;
                }
            }
        }
    }
    Ok(stats)
}

fn verify(
    mem: &GuestMemoryMap,
    writable: u64,
    seq: u64,
    written: u32,
) -> Result<(), LoopbackError> {
    if written != expected_written(seq) {
        return Err(LoopbackError::Verification("wrong used length", seq));
    }
    let mut echo = [0u8; 8];
    mem.translate(writable, 8)
        .and_then(|s| s.read(0, &mut echo))
        .map_err(LoopbackError::Memory)?;
    if u64::from_le_bytes(echo) != seq ^ ECHO_MASK {
        return Err(LoopbackError::Verification(
            "wrong data in the writable buffer",
            seq,
        ));
    }
    Ok(())
}
