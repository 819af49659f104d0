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

/// rust-vmm's queue with what the device loop keeps between batches.
pub(crate) struct RustVmmDevice {
    pub style: Style,
    pub queue: Queue,
    /// The chains served in the current batch (`Style::Iter`), used after `iter` is dropped;
    /// allocated once.
    done: Vec<(u16, u32)>,
}

impl RustVmmDevice {
    pub fn new(style: Style, queue: Queue, opts: &Options) -> Self {
        RustVmmDevice {
            style,
            queue,
            done: Vec::with_capacity(usize::from(opts.batch)),
        }
    }

    /// Serves every chain available now, deciding on a notification per batch; returns how
    /// many chains were used.
    pub fn drain(
        &mut self,
        mem: &GuestMemoryMmap,
        opts: &Options,
        call: &dyn Notifier,
        stats: &mut DeviceStats,
    ) -> Result<u64, YardstickError> {
        match self.style {
            Style::Iter => self.drain_iter(mem, opts, call, stats),
            Style::Pop => self.drain_pop(mem, opts, call, stats),
        }
    }

    fn drain_iter(
        &mut self,
        mem: &GuestMemoryMmap,
        opts: &Options,
        call: &dyn Notifier,
        stats: &mut DeviceStats,
    ) -> Result<u64, YardstickError> {
        let mut used = 0;
        loop {
            self.done.clear();
            let iter = self.queue.iter(mem).map_err(YardstickError::RustVmm)?;
            for chain in iter.take(usize::from(opts.batch)) {
                let head = chain.head_index();
                self.done.push((head, serve(chain, mem, opts.fault)?));
            }
            if self.done.is_empty() {
                return Ok(used);
            }
            for &(head, written) in &self.done {
                self.queue
                    .add_used(mem, head, written)
                    .map_err(YardstickError::RustVmm)?;
            }
            used += self.done.len() as u64;
            stats.used += self.done.len() as u64;
            notify(&mut self.queue, mem, opts, call, stats)?;
        }
    }

    fn drain_pop(
        &mut self,
        mem: &GuestMemoryMmap,
        opts: &Options,
        call: &dyn Notifier,
        stats: &mut DeviceStats,
    ) -> Result<u64, YardstickError> {
        let mut used = 0;
        let mut in_batch = 0u16;
        while let Some(chain) = self.queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let written = serve(chain, mem, opts.fault)?;
            self.queue
                .add_used(mem, head, written)
                .map_err(YardstickError::RustVmm)?;
            used += 1;
            stats.used += 1;
            in_batch += 1;
            if in_batch == opts.batch {
                notify(&mut self.queue, mem, opts, call, stats)?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            notify(&mut self.queue, mem, opts, call, stats)?;
        }
        Ok(used)
    }
}

/// Runs the device side until it has used `opts.buffers` buffers.
pub(crate) fn run(
    mut device: RustVmmDevice,
    mem: &GuestMemoryMmap,
    opts: &Options,
    kick: &dyn Notifier,
    call: &dyn Notifier,
    stop: &AtomicBool,
) -> Result<DeviceStats, YardstickError> {
    let mut stats = DeviceStats::default();
    device
        .queue
        .disable_notification(mem)
        .map_err(YardstickError::RustVmm)?;
    while stats.used < opts.buffers {
        if stop.load(Ordering::Relaxed) {
            return Err(YardstickError::PeerStopped("driver"));
        }
        if device.drain(mem, opts, call, &mut stats)? == 0 {
            idle(&mut device.queue, mem, opts, kick, &mut stats)?;
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
