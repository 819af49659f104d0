//! The device thread on Vireo's own `DeviceQueue`, over the same vm-memory guest memory (through
//! `VmMemory`): the same work per buffer as [`crate::rust_vmm`] (pop, read the sequence number
//! from the readable segment, echo it into the writable one, use the chain; publish the used
//! index and decide on a notification once per batch).

use std::sync::atomic::{AtomicBool, Ordering};

use vireo_memory::vm_memory_adapter::VmMemory;
use vireo_queue::device::{AvailChain, DeviceQueue, Direction};
use vireo_queue::loopback::{Notifier, NotifyMode};

use crate::{DeviceStats, Fault, Options, YardstickError};

/// Runs the device side until it has used `opts.buffers` buffers.
pub(crate) fn run(
    mut queue: DeviceQueue,
    mem: &VmMemory,
    opts: &Options,
    kick: &dyn Notifier,
    call: &dyn Notifier,
    stop: &AtomicBool,
) -> Result<DeviceStats, YardstickError> {
    let mut stats = DeviceStats::default();
    queue.disable_kicks().map_err(YardstickError::Device)?;
    while stats.used < opts.buffers {
        if stop.load(Ordering::Relaxed) {
            return Err(YardstickError::PeerStopped("driver"));
        }
        if drain(&mut queue, mem, opts, call, &mut stats)? == 0 {
            match opts.notify {
                NotifyMode::Poll => core::hint::spin_loop(),
                NotifyMode::Block => {
                    if !queue.enable_kicks().map_err(YardstickError::Device)? {
                        stats.sleeps += 1;
                        kick.wait();
                    }
                    queue.disable_kicks().map_err(YardstickError::Device)?;
                }
            }
        }
    }
    Ok(stats)
}

/// Serves every chain available now, publishing and deciding on a notification per batch;
/// returns how many chains were used.
pub(crate) fn drain(
    queue: &mut DeviceQueue,
    mem: &VmMemory,
    opts: &Options,
    call: &dyn Notifier,
    stats: &mut DeviceStats,
) -> Result<u64, YardstickError> {
    let mut used = 0;
    let mut in_batch = 0u16;
    while let Some(chain) = queue.pop().map_err(YardstickError::Device)? {
        let written = serve(queue, &chain, mem, opts.fault)?;
        queue
            .add_used(&chain, written)
            .map_err(YardstickError::Device)?;
        used += 1;
        stats.used += 1;
        in_batch += 1;
        if in_batch == opts.batch {
            publish(queue, call, opts.notify, stats)?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        publish(queue, call, opts.notify, stats)?;
    }
    Ok(used)
}

fn publish(
    queue: &mut DeviceQueue,
    call: &dyn Notifier,
    mode: NotifyMode,
    stats: &mut DeviceStats,
) -> Result<(), YardstickError> {
    queue.publish_used().map_err(YardstickError::Device)?;
    if mode == NotifyMode::Block && queue.needs_notification().map_err(YardstickError::Device)? {
        stats.calls += 1;
        call.notify();
    }
    Ok(())
}

/// Reads the sequence number from the readable segment and echoes it into the writable one;
/// returns the used length.
fn serve(
    queue: &DeviceQueue,
    chain: &AvailChain,
    mem: &VmMemory,
    fault: Option<Fault>,
) -> Result<u32, YardstickError> {
    let mut seq: Option<u64> = None;
    let mut written = None;
    for segment in queue.chain(chain, mem) {
        let segment = segment.map_err(YardstickError::Device)?;
        match segment.direction {
            Direction::DeviceReadable => {
                let mut b = [0u8; 8];
                segment
                    .slice
                    .read(0, &mut b)
                    .map_err(YardstickError::Memory)?;
                seq = Some(u64::from_le_bytes(b));
            }
            Direction::DeviceWritable => {
                let s = seq.ok_or(YardstickError::Verification("no readable segment", 0))?;
                let (echo, len) = crate::echo(s, fault);
                segment
                    .slice
                    .write(0, &echo.to_le_bytes())
                    .map_err(YardstickError::Memory)?;
                written = Some(len);
            }
        }
    }
    written.ok_or(YardstickError::Verification("no writable segment", 0))
}
