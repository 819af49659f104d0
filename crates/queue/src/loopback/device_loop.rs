//! The device thread of the loopback (`run_host` in ringtest): pop chains, read the sequence
//! number, echo it into the writable segment, use the chain; publish and notify per batch.

use core::sync::atomic::{AtomicBool, Ordering};

use vireo_memory::GuestMemoryMap;

use super::{
    expected_written, expected_written_at, LoopbackError, LoopbackOptions, Notifier, NotifyMode,
    Payload, ECHO_MASK,
};
use crate::device::{AvailChain, DeviceRing, Direction};

/// Runs the device side until it has used `opts.buffers` buffers; returns the number of
/// notifications (calls) it sent and the number of times it slept waiting for a kick.
///
/// Generic over the ring: [`super::run`] picks the format once, so each format gets its own
/// copy of this loop with no dispatch per call.
pub(super) fn run<Q: DeviceRing>(
    mut queue: Q,
    mem: &GuestMemoryMap,
    opts: &LoopbackOptions,
    kick: &dyn Notifier,
    call: &dyn Notifier,
    stop: &AtomicBool,
) -> Result<(u64, u64), LoopbackError> {
    let mut used_total: u64 = 0;
    let mut calls: u64 = 0;
    let mut sleeps: u64 = 0;
    queue.disable_kicks().map_err(LoopbackError::Device)?;
    while used_total < opts.buffers {
        if stop.load(Ordering::Relaxed) {
            return Err(LoopbackError::Options("driver side stopped"));
        }
        let mut in_batch = 0u16;
        let mut any = false;
        while let Some(chain) = queue.pop().map_err(LoopbackError::Device)? {
            let written = match opts.payload {
                Payload::Echo => serve(&queue, &chain, mem)?,
                Payload::None => serve_without_data(&queue, &chain, mem)?,
            };
            queue
                .add_used(&chain, written)
                .map_err(LoopbackError::Device)?;
            used_total += 1;
            in_batch += 1;
            any = true;
            if in_batch == opts.batch {
                calls += publish(&mut queue, call, opts.notify)?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            calls += publish(&mut queue, call, opts.notify)?;
        }
        if !any {
            match opts.notify {
                NotifyMode::Poll => core::hint::spin_loop(),
                NotifyMode::Block => {
                    if !queue.enable_kicks().map_err(LoopbackError::Device)? {
                        sleeps += 1;
                        kick.wait();
                    }
                    queue.disable_kicks().map_err(LoopbackError::Device)?;
                }
            }
        }
    }
    Ok((calls, sleeps))
}

fn publish<Q: DeviceRing>(
    queue: &mut Q,
    call: &dyn Notifier,
    mode: NotifyMode,
) -> Result<u64, LoopbackError> {
    queue.publish_used().map_err(LoopbackError::Device)?;
    if mode == NotifyMode::Block && queue.needs_notification().map_err(LoopbackError::Device)? {
        call.notify();
        return Ok(1);
    }
    Ok(0)
}

/// Walks the chain (validating it) without touching data; the used length comes from the
/// address of its writable segment.
fn serve_without_data<Q: DeviceRing>(
    queue: &Q,
    chain: &AvailChain,
    mem: &GuestMemoryMap,
) -> Result<u32, LoopbackError> {
    let mut written = 0;
    for segment in queue.chain(chain, mem) {
        let segment = segment.map_err(LoopbackError::Device)?;
        if segment.direction == Direction::DeviceWritable {
            written = expected_written_at(segment.addr);
        }
    }
    Ok(written)
}

/// Reads the sequence number from the readable segment and echoes it into the writable one.
fn serve<Q: DeviceRing>(
    queue: &Q,
    chain: &AvailChain,
    mem: &GuestMemoryMap,
) -> Result<u32, LoopbackError> {
    let mut seq: Option<u64> = None;
    let mut written = 0;
    for segment in queue.chain(chain, mem) {
        let segment = segment.map_err(LoopbackError::Device)?;
        match segment.direction {
            Direction::DeviceReadable => {
                let mut b = [0u8; 8];
                segment
                    .slice
                    .read(0, &mut b)
                    .map_err(LoopbackError::Memory)?;
                seq = Some(u64::from_le_bytes(b));
            }
            Direction::DeviceWritable => {
                let s = seq.ok_or(LoopbackError::Verification("no readable segment", 0))?;
                segment
                    .slice
                    .write(0, &(s ^ ECHO_MASK).to_le_bytes())
                    .map_err(LoopbackError::Memory)?;
                written = expected_written(s);
            }
        }
    }
    Ok(written)
}
