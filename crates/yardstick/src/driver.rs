//! The driver thread: Vireo's `DriverQueue` (split) adds buffers in batches into vm-memory guest
//! memory, kicks when the device asks for it, reaps used buffers and verifies each one: the
//! token comes back once, with the length and the data the device wrote. The loop shape of
//! `vireo_queue::loopback`'s driver (and of `run_guest` in the kernel's ringtest).

use std::sync::atomic::{AtomicBool, Ordering};

use vireo_memory::GuestMemory;
use vireo_queue::driver::{BufferSegment, DriverQueue, DriverQueueError};
use vireo_queue::loopback::{
    expected_written, Notifier, NotifyMode, ECHO_MASK, READABLE_LEN, WRITABLE_LEN,
};

use crate::{Options, YardstickError};

/// Bytes of one buffer slot: the readable segment, then the writable one.
pub(crate) const SLOT_BYTES: u64 = (READABLE_LEN + WRITABLE_LEN) as u64;
/// Low bits of a token that hold the slot; the sequence number sits above them.
const SLOT_BITS: u32 = 16;

/// Counters of the driver thread.
#[derive(Debug)]
pub(crate) struct DriverStats {
    pub completed: u64,
    pub kicks: u64,
    pub sleeps: u64,
    seen: Vec<u64>,
}

impl DriverStats {
    /// Nothing completed yet, room to mark `buffers` sequence numbers.
    pub fn new(buffers: u64) -> Result<Self, YardstickError> {
        let words = usize::try_from(buffers.div_ceil(64))
            .map_err(|_| YardstickError::Options("too many buffers"))?;
        Ok(DriverStats {
            completed: 0,
            kicks: 0,
            sleeps: 0,
            seen: vec![0u64; words],
        })
    }

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

/// What the driver thread works with.
pub(crate) struct DriverSide<'a, M> {
    pub mem: &'a M,
    pub buffers_base: u64,
    pub kick: &'a dyn Notifier,
    pub call: &'a dyn Notifier,
    pub stop: &'a AtomicBool,
}

/// Runs the driver side until every buffer came back (or either side failed).
pub(crate) fn run<M: GuestMemory>(
    mut queue: DriverQueue<u64>,
    side: &DriverSide<'_, M>,
    opts: &Options,
) -> Result<DriverStats, YardstickError> {
    let mut free_slots: Vec<u16> = (0..opts.outstanding).rev().collect();
    let mut stats = DriverStats::new(opts.buffers)?;
    let mut next_seq: u64 = 0;
    queue
        .disable_used_notifications()
        .map_err(YardstickError::Driver)?;
    while stats.completed < opts.buffers {
        if side.stop.load(Ordering::Relaxed) {
            return Err(YardstickError::PeerStopped("device"));
        }
        let added = add_batch(&mut queue, side, opts, &mut free_slots, &mut next_seq)?;
        if added > 0 && announce(&mut queue, opts.notify)? {
            stats.kicks += 1;
            side.kick.notify();
        }
        let reaped = reap(&mut queue, side, &mut stats, &mut free_slots)?;
        if reaped == 0 && added == 0 {
            match opts.notify {
                NotifyMode::Poll => core::hint::spin_loop(),
                NotifyMode::Block => {
                    if !queue
                        .enable_used_notifications()
                        .map_err(YardstickError::Driver)?
                    {
                        stats.sleeps += 1;
                        side.call.wait();
                    }
                    queue
                        .disable_used_notifications()
                        .map_err(YardstickError::Driver)?;
                }
            }
        }
    }
    Ok(stats)
}

/// Makes the buffers just added visible: polling publishes only (nobody waits for a kick);
/// blocking also answers whether the device wants a kick.
pub(crate) fn announce(
    queue: &mut DriverQueue<u64>,
    mode: NotifyMode,
) -> Result<bool, YardstickError> {
    match mode {
        NotifyMode::Poll => queue
            .publish()
            .map(|()| false)
            .map_err(YardstickError::Driver),
        NotifyMode::Block => queue.kick_prepare().map_err(YardstickError::Driver),
    }
}

/// Reaps every used buffer that is ready, verifying each; returns how many.
pub(crate) fn reap<M: GuestMemory>(
    queue: &mut DriverQueue<u64>,
    side: &DriverSide<'_, M>,
    stats: &mut DriverStats,
    free_slots: &mut Vec<u16>,
) -> Result<u32, YardstickError> {
    let mut reaped = 0u32;
    while let Some(used) = queue.pop_used().map_err(YardstickError::Driver)? {
        let seq = used.token >> SLOT_BITS;
        let slot = (used.token & ((1 << SLOT_BITS) - 1)) as u16;
        let writable = side.buffers_base + u64::from(slot) * SLOT_BYTES + u64::from(READABLE_LEN);
        verify(side.mem, writable, seq, used.written)?;
        let word = stats
            .seen
            .get_mut((seq / 64) as usize)
            .ok_or(YardstickError::Verification("token out of range", seq))?;
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            return Err(YardstickError::Verification("token came back twice", seq));
        }
        *word |= bit;
        free_slots.push(slot);
        stats.completed += 1;
        reaped += 1;
    }
    Ok(reaped)
}

/// Adds up to one batch of buffers (a readable segment carrying the sequence number and a
/// writable one); returns how many were added.
pub(crate) fn add_batch<M: GuestMemory>(
    queue: &mut DriverQueue<u64>,
    side: &DriverSide<'_, M>,
    opts: &Options,
    free_slots: &mut Vec<u16>,
    next_seq: &mut u64,
) -> Result<u16, YardstickError> {
    let mut added = 0u16;
    while added < opts.batch && *next_seq < opts.buffers {
        let Some(slot) = free_slots.pop() else { break };
        let readable = side.buffers_base + u64::from(slot) * SLOT_BYTES;
        let writable = readable + u64::from(READABLE_LEN);
        let token = (*next_seq << SLOT_BITS) | u64::from(slot);
        side.mem
            .translate(readable, 8)
            .and_then(|s| s.write(0, &next_seq.to_le_bytes()))
            .map_err(YardstickError::Memory)?;
        let result = queue.add(
            &[BufferSegment::new(readable, READABLE_LEN)],
            &[BufferSegment::new(writable, WRITABLE_LEN)],
            token,
        );
        match result {
            Ok(()) => {}
            Err(DriverQueueError::QueueFull { .. }) => {
                free_slots.push(slot);
                break;
            }
            Err(e) => return Err(YardstickError::Driver(e)),
        }
        *next_seq += 1;
        added += 1;
    }
    Ok(added)
}

fn verify<M: GuestMemory>(
    mem: &M,
    writable: u64,
    seq: u64,
    written: u32,
) -> Result<(), YardstickError> {
    if written != expected_written(seq) {
        return Err(YardstickError::Verification("wrong used length", seq));
    }
    let mut echo = [0u8; 8];
    mem.translate(writable, 8)
        .and_then(|s| s.read(0, &mut echo))
        .map_err(YardstickError::Memory)?;
    if u64::from_le_bytes(echo) != seq ^ ECHO_MASK {
        return Err(YardstickError::Verification(
            "wrong data in the writable buffer",
            seq,
        ));
    }
    Ok(())
}
