//! The device thread on rust-vmm's `virtio_queue::Queue`: take the available chains a batch at
//! a time (`iter`, which reads the available index once per batch), read the sequence number
//! from the readable descriptor, echo it into the writable one, `add_used` each chain, then
//! decide on a notification per batch (`needs_notification`); when idle with blocking
//! notification, `enable_notification` and sleep on the kick.
//!
//! Where the API forces a difference from Vireo's device: `add_used` stores the used index
//! (a release store) for every element, where Vireo writes the elements and publishes the index
//! once per batch; and without EVENT_IDX `needs_notification` always answers yes (it does not
//! read VRING_AVAIL_F_NO_INTERRUPT), so every batch costs a call in blocking mode.

use std::sync::atomic::{AtomicBool, Ordering};

use vireo_queue::loopback::{Notifier, NotifyMode};
use vireo_queue::QueueConfig;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{DeviceStats, Fault, Options, YardstickError};

/// A rust-vmm queue attached to the ring `config` describes (split only).
pub(crate) fn queue(config: &QueueConfig, mem: &GuestMemoryMmap) -> Result<Queue, YardstickError> {
    let mut q = Queue::new(config.size).map_err(YardstickError::RustVmm)?;
    q.try_set_size(config.size)
        .map_err(YardstickError::RustVmm)?;
    q.try_set_desc_table_address(GuestAddress(config.addrs.desc_table))
        .map_err(YardstickError::RustVmm)?;
    q.try_set_avail_ring_address(GuestAddress(config.addrs.driver_area))
        .map_err(YardstickError::RustVmm)?;
    q.try_set_used_ring_address(GuestAddress(config.addrs.device_area))
        .map_err(YardstickError::RustVmm)?;
    q.set_event_idx(config.features.contains(vireo_spec::Features::EVENT_IDX));
    q.set_ready(true);
    if !q.is_valid(mem) {
        return Err(YardstickError::Options(
            "virtio-queue refuses the ring layout",
        ));
    }
    Ok(q)
}

/// How the device takes chains from rust-vmm's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `iter` per batch: the available index is read once per batch.
    Iter,
    /// `pop_descriptor_chain` per chain (the loop of Firecracker-style devices): the available
    /// index is read for every chain, and each chain is used as soon as it is served.
    Pop,
}

/// Runs the device side until it has used `opts.buffers` buffers.
pub(crate) fn run(
    style: Style,
    mut queue: Queue,
    mem: &GuestMemoryMmap,
    opts: &Options,
    kick: &dyn Notifier,
    call: &dyn Notifier,
    stop: &AtomicBool,
) -> Result<DeviceStats, YardstickError> {
    if style == Style::Pop {
        return run_pop(queue, mem, opts, kick, call, stop);
    }
    let mut stats = DeviceStats::default();
    let mut done: Vec<(u16, u32)> = Vec::with_capacity(usize::from(opts.batch));
    queue
        .disable_notification(mem)
        .map_err(YardstickError::RustVmm)?;
    while stats.used < opts.buffers {
        if stop.load(Ordering::Relaxed) {
            return Err(YardstickError::PeerStopped("driver"));
        }
        let mut any = false;
        loop {
            done.clear();
            let iter = queue.iter(mem).map_err(YardstickError::RustVmm)?;
            for chain in iter.take(usize::from(opts.batch)) {
                let head = chain.head_index();
                done.push((head, serve(chain, mem, opts.fault)?));
            }
            if done.is_empty() {
                break;
            }
            any = true;
            for &(head, written) in &done {
                queue
                    .add_used(mem, head, written)
                    .map_err(YardstickError::RustVmm)?;
            }
            stats.used += done.len() as u64;
            notify(&mut queue, mem, opts, call, &mut stats)?;
        }
        if !any {
            idle(&mut queue, mem, opts, kick, &mut stats)?;
        }
    }
    Ok(stats)
}

/// [`run`] in the [`Style::Pop`] way: pop, serve and `add_used` one chain at a time; a
/// notification decision per `opts.batch` chains and when the ring runs dry.
fn run_pop(
    mut queue: Queue,
    mem: &GuestMemoryMmap,
    opts: &Options,
    kick: &dyn Notifier,
    call: &dyn Notifier,
    stop: &AtomicBool,
) -> Result<DeviceStats, YardstickError> {
    let mut stats = DeviceStats::default();
    queue
        .disable_notification(mem)
        .map_err(YardstickError::RustVmm)?;
    while stats.used < opts.buffers {
        if stop.load(Ordering::Relaxed) {
            return Err(YardstickError::PeerStopped("driver"));
        }
        let mut in_batch = 0u16;
        let mut any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let written = serve(chain, mem, opts.fault)?;
            queue
                .add_used(mem, head, written)
                .map_err(YardstickError::RustVmm)?;
            stats.used += 1;
            in_batch += 1;
            any = true;
            if in_batch == opts.batch {
                notify(&mut queue, mem, opts, call, &mut stats)?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            notify(&mut queue, mem, opts, call, &mut stats)?;
        }
        if !any {
            idle(&mut queue, mem, opts, kick, &mut stats)?;
        }
    }
    Ok(stats)
}

/// The per-batch notification decision (blocking mode only).
fn notify(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    opts: &Options,
    call: &dyn Notifier,
    stats: &mut DeviceStats,
) -> Result<(), YardstickError> {
    if opts.notify == NotifyMode::Block
        && queue
            .needs_notification(mem)
            .map_err(YardstickError::RustVmm)?
    {
        stats.calls += 1;
        call.notify();
    }
    Ok(())
}

/// Nothing to do: spin (polling), or enable kicks and sleep unless chains arrived meanwhile.
fn idle(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    opts: &Options,
    kick: &dyn Notifier,
    stats: &mut DeviceStats,
) -> Result<(), YardstickError> {
    match opts.notify {
        NotifyMode::Poll => core::hint::spin_loop(),
        NotifyMode::Block => {
            if !queue
                .enable_notification(mem)
                .map_err(YardstickError::RustVmm)?
            {
                stats.sleeps += 1;
                kick.wait();
            }
            queue
                .disable_notification(mem)
                .map_err(YardstickError::RustVmm)?;
        }
    }
    Ok(())
}

/// Reads the sequence number from the readable descriptor and echoes it into the writable one;
/// returns the used length.
fn serve(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    fault: Option<Fault>,
) -> Result<u32, YardstickError> {
    let mut seq: Option<u64> = None;
    let mut written = None;
    for desc in chain {
        if desc.len() < 8 {
            return Err(YardstickError::Verification("descriptor shorter than 8", 0));
        }
        if desc.is_write_only() {
            let s = seq.ok_or(YardstickError::Verification("no readable segment", 0))?;
            let (echo, len) = crate::echo(s, fault);
            mem.write_obj(echo.to_le(), desc.addr())
                .map_err(YardstickError::VmMemory)?;
            written = Some(len);
        } else {
            let v: u64 = mem
                .read_obj(desc.addr())
                .map_err(YardstickError::VmMemory)?;
            seq = Some(u64::from_le(v));
        }
    }
    written.ok_or(YardstickError::Verification("no writable segment", 0))
}
