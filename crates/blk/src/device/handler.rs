//! The per-queue handler: pops chains, answers bad requests at once, sends the rest to the
//! queue's I/O thread, and completes them (status byte, used element) as they come back.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use vireo_memory::{GuestMemory, GuestMemoryMap, SharedSlice};
use vireo_queue::device::{AvailChain, DeviceQueue, DeviceQueueError};
use vireo_spec::blk::{BlkFeatures, BlkStatus};
use vireo_vhost_user::device::QueueHandler;

use super::io::{self, Batch, Done, Link};
use super::request::{self, Action, Context, Parsed, Scratch};
use super::Shared;

/// How long `drain` sleeps between checks that the I/O thread is still alive.
const DRAIN_POLL: Timespec = Timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// A request handed to the I/O thread.
#[derive(Debug, Clone, Copy)]
struct Slot {
    chain: AvailChain,
    status_addr: u64,
    used_len: u32,
}

/// The I/O side, started on the first `process` (when the queue size and memory are known).
#[derive(Debug)]
struct Running {
    link: Arc<Link>,
    thread: Option<JoinHandle<()>>,
    /// In-flight requests by token (the token is the index).
    slots: Vec<Option<Slot>>,
    free: Vec<u16>,
    batch: Batch,
    done: Vec<Done>,
}

impl Running {
    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// The [`QueueHandler`] of one virtio-blk request queue (see the module docs).
#[derive(Debug)]
pub struct BlkQueueHandler {
    shared: Arc<Shared>,
    index: u16,
    scratch: Scratch,
    running: Option<Running>,
}

impl BlkQueueHandler {
    pub(crate) fn new(shared: Arc<Shared>, index: u16) -> Self {
        let scratch = Scratch::new(shared.limits.seg_max);
        BlkQueueHandler {
            shared,
            index,
            scratch,
            running: None,
        }
    }

    /// Starts the I/O thread for a queue of `size` entries; `None` if it cannot start.
    fn start(&mut self, size: u16, mem: &GuestMemoryMap) -> Option<&mut Running> {
        if self.running.is_none() {
            let depth = usize::from(size.max(1));
            let seg_max = usize::try_from(self.shared.limits.seg_max).unwrap_or(1);
            let link = match Link::new(depth, seg_max) {
                Ok(link) => Arc::new(link),
                Err(e) => {
                    tracing::error!(queue = self.index, error = %e, "no eventfd for the I/O thread");
                    return None;
                }
            };
            let shared = Arc::clone(&self.shared);
            let thread = io::spawn(Arc::clone(&link), shared, mem.clone(), depth, self.index);
            let thread = match thread {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(queue = self.index, error = %e, "no I/O thread");
                    return None;
                }
            };
            self.running = Some(Running {
                link,
                thread: Some(thread),
                slots: vec![None; depth],
                free: (0..size.max(1)).rev().collect(),
                batch: Batch::with_capacity(depth, depth.saturating_mul(seg_max)),
                done: Vec::with_capacity(depth),
            });
        }
        self.running.as_mut()
    }

    /// Completes what the I/O thread finished.
    fn complete(
        running: &mut Running,
        queue: &mut DeviceQueue,
        mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError> {
        running.link.take_done(&mut running.done);
        for d in running.done.drain(..) {
            let index = usize::try_from(d.token).unwrap_or(usize::MAX);
            let Some(slot) = running.slots.get_mut(index).and_then(Option::take) else {
                tracing::error!(token = d.token, "completion for no request");
                continue;
            };
            if let Ok(byte) = mem.translate(slot.status_addr, 1) {
                let _ = byte.write(0, &[d.status.as_u8()]);
            }
            tracing::trace!(chain = slot.chain.id(), status = ?d.status, "completed");
            running.free.push(u16::try_from(index).unwrap_or(0));
            queue.add_used(&slot.chain, slot.used_len)?;
        }
        Ok(())
    }
}

/// Writes `status` (if the chain has a status byte) and returns the chain.
fn answer(
    queue: &mut DeviceQueue,
    chain: &AvailChain,
    parsed: &Parsed<'_>,
    status: BlkStatus,
) -> Result<(), DeviceQueueError> {
    if let Some((_, byte)) = parsed.status {
        write_status(byte, status);
    }
    queue.add_used(chain, parsed.used_len)
}

fn write_status(byte: SharedSlice<'_>, status: BlkStatus) {
    let _ = byte.write(0, &[status.as_u8()]);
}

impl QueueHandler for BlkQueueHandler {
    fn process(
        &mut self,
        queue: &mut DeviceQueue,
        mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError> {
        let ctx = Context {
            limits: self.shared.limits,
            acked: BlkFeatures::from_bits_truncate(self.shared.acked.load(Ordering::Acquire)),
        };
        let id = self.shared.storage.device_id();
        let index = self.index;
        self.start(queue.size(), mem);
        let scratch = &mut self.scratch;
        let mut running = self.running.as_mut();
        if let Some(r) = running.as_deref_mut() {
            Self::complete(r, queue, mem)?;
        }
        loop {
            // Every chain needs a slot; a queue holds at most `size` chains, so with `size`
            // slots this only stops popping when the I/O thread could not start.
            if running.as_ref().is_some_and(|r| r.free.is_empty()) {
                break;
            }
            let Some(chain) = queue.pop()? else { break };
            let parsed = request::parse(queue.chain(&chain, mem), mem, &ctx, scratch)?;
            tracing::trace!(queue = index, chain = chain.id(), action = ?parsed.action, used = parsed.used_len, "request");
            match (parsed.action, parsed.status, running.as_deref_mut()) {
                (Action::Answer(status), ..) => answer(queue, &chain, &parsed, status)?,
                (Action::GetId, ..) => {
                    let status = if request::write_id(mem, scratch.data(), &id) {
                        BlkStatus::Ok
                    } else {
                        BlkStatus::IoErr
                    };
                    answer(queue, &chain, &parsed, status)?;
                }
                (Action::Io(op), Some((status_addr, _)), Some(r)) => {
                    let Some(token) = r.free.pop() else { break };
                    if let Some(slot) = r.slots.get_mut(usize::from(token)) {
                        *slot = Some(Slot {
                            chain,
                            status_addr,
                            used_len: parsed.used_len,
                        });
                    }
                    r.batch.push(u64::from(token), op, scratch.data());
                }
                (Action::Io(_), ..) => {
                    tracing::error!(queue = index, "no I/O thread: request failed");
                    answer(queue, &chain, &parsed, BlkStatus::IoErr)?;
                }
            }
        }
        if let Some(r) = running {
            if !r.batch.is_empty() {
                r.link.send(&mut r.batch);
            }
        }
        Ok(())
    }

    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        self.running.as_ref().map(|r| r.link.completed.as_fd())
    }

    fn drain(
        &mut self,
        queue: &mut DeviceQueue,
        mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError> {
        let Some(r) = self.running.as_mut() else {
            return Ok(());
        };
        loop {
            Self::complete(r, queue, mem)?;
            if r.in_flight() == 0 {
                return Ok(());
            }
            if r.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                // The thread ended (it could not set up its queue): nothing will complete,
                // and nothing touches the buffers any more.
                tracing::error!(queue = self.index, "I/O thread gone; failing its requests");
                for (token, slot) in r.slots.iter_mut().enumerate() {
                    if let Some(slot) = slot.take() {
                        if let Ok(byte) = mem.translate(slot.status_addr, 1) {
                            write_status(byte, BlkStatus::IoErr);
                        }
                        r.free.push(u16::try_from(token).unwrap_or(0));
                        queue.add_used(&slot.chain, slot.used_len)?;
                    }
                }
                return Ok(());
            }
            let mut fds = [PollFd::new(&r.link.completed, PollFlags::IN)];
            let _ = poll(&mut fds, Some(&DRAIN_POLL));
        }
    }
}

impl Drop for BlkQueueHandler {
    fn drop(&mut self) {
        if let Some(r) = self.running.as_mut() {
            r.link.stop();
            if let Some(t) = r.thread.take() {
                if t.join().is_err() {
                    tracing::error!(queue = self.index, "I/O thread panicked");
                }
            }
        }
    }
}
