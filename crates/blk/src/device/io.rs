//! A queue's I/O thread: it owns the queue's [`IoQueue`] for the queue's whole life (an
//! `IoQueue` only lives inside [`IoQueue::scope`], on one stack), submits what the handler
//! parsed, and hands completions back.
//!
//! The handler and the thread exchange whole batches under a mutex (one lock and one eventfd
//! write per batch, not per request): requests go one way with their data buffers as guest
//! addresses, which the thread translates in its own copy of the guest memory map (whose
//! regions stay mapped while the thread holds it, so the kernel never writes into memory that
//! went away); completions come back as (token, status).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use vireo_memory::{GuestMemory, GuestMemoryMap, SharedSlice};
use vireo_spec::blk::BlkStatus;

use super::request::{Buf, IoOp};
use super::Shared;
use crate::storage::{Completion, IoBackend, IoQueue, IoRequest, QueueOptions, Wait};

/// One request for the I/O thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoReq {
    token: u64,
    op: IoOp,
    /// Its buffers: `bufs[first..first + count]` of the batch.
    first: usize,
    count: usize,
}

/// Requests with their buffers, moved between threads as a whole.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    reqs: Vec<IoReq>,
    bufs: Vec<Buf>,
}

impl Batch {
    /// An empty batch with room for `reqs` requests and `bufs` buffers.
    pub(crate) fn with_capacity(reqs: usize, bufs: usize) -> Self {
        Batch {
            reqs: Vec::with_capacity(reqs),
            bufs: Vec::with_capacity(bufs),
        }
    }

    /// Adds a request.
    pub(crate) fn push(&mut self, token: u64, op: IoOp, data: &[Buf]) {
        let first = self.bufs.len();
        self.bufs.extend_from_slice(data);
        self.reqs.push(IoReq {
            token,
            op,
            first,
            count: data.len(),
        });
    }

    /// True when there is nothing in it.
    pub(crate) fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Moves everything in `other` to the end of this batch.
    fn append(&mut self, other: &mut Batch) {
        let base = self.bufs.len();
        self.bufs.append(&mut other.bufs);
        self.reqs.extend(other.reqs.drain(..).map(|r| IoReq {
            first: r.first + base,
            ..r
        }));
    }

    fn clear(&mut self) {
        self.reqs.clear();
        self.bufs.clear();
    }
}

/// A finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Done {
    pub(crate) token: u64,
    pub(crate) status: BlkStatus,
}

/// What the handler and its I/O thread share.
#[derive(Debug)]
pub(crate) struct Link {
    submit: Mutex<Batch>,
    done: Mutex<Vec<Done>>,
    /// Readable when requests (or the stop) are waiting for the thread.
    wake: OwnedFd,
    /// Readable when completions are waiting for the handler.
    pub(crate) completed: OwnedFd,
    stop: AtomicBool,
}

impl Link {
    /// A link with room for `depth` requests of up to `seg_max` buffers each.
    pub(crate) fn new(depth: usize, seg_max: usize) -> Result<Self, Errno> {
        let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
        Ok(Link {
            submit: Mutex::new(Batch::with_capacity(depth, depth.saturating_mul(seg_max))),
            done: Mutex::new(Vec::with_capacity(depth)),
            wake: eventfd(0, flags)?,
            completed: eventfd(0, flags)?,
            stop: AtomicBool::new(false),
        })
    }

    /// Hands `batch` to the thread (leaving it empty).
    pub(crate) fn send(&self, batch: &mut Batch) {
        lock(&self.submit).append(batch);
        signal(&self.wake);
    }

    /// Moves finished requests to `out`, after clearing the readiness of `completed`.
    pub(crate) fn take_done(&self, out: &mut Vec<Done>) {
        drain(&self.completed);
        out.append(&mut lock(&self.done));
    }

    /// Asks the thread to stop (requests still in flight are waited for, their results
    /// dropped).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        signal(&self.wake);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds 1 to an eventfd (a full counter still wakes the reader).
fn signal(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd's counter.
fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    while let Err(Errno::INTR) = rustix::io::read(fd, &mut buf) {}
}

/// Starts the I/O thread of queue `index`.
pub(crate) fn spawn(
    link: Arc<Link>,
    shared: Arc<Shared>,
    mem: GuestMemoryMap,
    depth: usize,
    index: u16,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vireo-blk-io{index}"))
        .spawn(move || {
            let options = QueueOptions {
                depth,
                max_segments: usize::try_from(shared.limits.seg_max).unwrap_or(1),
                backend: shared.io_backend,
            };
            let storage = Arc::clone(&shared.storage);
            let scoped = |options| {
                IoQueue::scope(&*storage, options, |io| {
                    tracing::debug!(queue = index, backend = ?io.backend(), depth, "I/O queue ready");
                    serve(io, &link, &shared, &mem, depth);
                })
            };
            let result = scoped(options).or_else(|e| {
                tracing::warn!(queue = index, error = %e, "io_uring unusable; synchronous I/O");
                scoped(QueueOptions {
                    backend: IoBackend::Synchronous,
                    ..options
                })
            });
            if let Err(e) = result {
                tracing::error!(queue = index, error = %e, "no I/O queue");
            }
        })
}

/// The thread's loop: until stopped, submit what arrives and report what completes.
fn serve<'m>(
    io: &mut IoQueue<'m>,
    link: &Link,
    shared: &Shared,
    mem: &'m GuestMemoryMap,
    depth: usize,
) {
    let mut batch = Batch::with_capacity(depth, depth);
    let mut slices: Vec<SharedSlice<'m>> = Vec::with_capacity(io.max_segments());
    let mut done: Vec<Done> = Vec::with_capacity(depth);
    let mut finished: Vec<Completion> = Vec::with_capacity(depth);
    // Which tokens are writes (for write-through); tokens are below the queue size.
    let mut writes = vec![false; depth];
    loop {
        if link.stop.load(Ordering::Acquire) {
            return;
        }
        io.acknowledge();
        drain(&link.wake);
        std::mem::swap(&mut batch, &mut lock(&link.submit));
        for req in &batch.reqs {
            let bufs = batch
                .bufs
                .get(req.first..req.first + req.count)
                .unwrap_or(&[]);
            let status = submit(io, mem, req, bufs, &mut slices);
            if let Some(w) = usize::try_from(req.token)
                .ok()
                .and_then(|t| writes.get_mut(t))
            {
                *w = matches!(req.op, IoOp::Write { .. });
            }
            if let Some(status) = status {
                done.push(Done {
                    token: req.token,
                    status,
                });
            }
        }
        batch.clear();
        if let Err(e) = io.commit() {
            tracing::error!(error = %e, "submitting to io_uring failed");
        }
        match io.reap(Wait::NoWait, |c| finished.push(c)) {
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reaping io_uring completions failed"),
        }
        if !finished.is_empty() {
            let write_through = shared.write_through();
            for c in finished.drain(..) {
                let is_write = usize::try_from(c.token)
                    .ok()
                    .and_then(|t| writes.get(t))
                    .copied()
                    .unwrap_or(false);
                let result = match c.result {
                    Ok(()) if is_write && write_through => shared.storage.flush(),
                    r => r,
                };
                let status = match result {
                    Ok(()) => BlkStatus::Ok,
                    Err(e) => {
                        tracing::warn!(error = %e, "request failed");
                        BlkStatus::IoErr
                    }
                };
                done.push(Done {
                    token: c.token,
                    status,
                });
            }
        }
        if !done.is_empty() {
            lock(&link.done).append(&mut done);
            signal(&link.completed);
        }
        wait(link, io);
    }
}

/// Submits one request; returns its status if it finished at once (refused).
fn submit<'m>(
    io: &mut IoQueue<'m>,
    mem: &'m GuestMemoryMap,
    req: &IoReq,
    bufs: &[Buf],
    slices: &mut Vec<SharedSlice<'m>>,
) -> Option<BlkStatus> {
    slices.clear();
    for b in bufs {
        match mem.translate(b.addr, u64::from(b.len)) {
            Ok(s) => slices.push(s),
            Err(e) => {
                tracing::warn!(error = %e, "data buffer left guest memory");
                return Some(BlkStatus::IoErr);
            }
        }
    }
    let request = match req.op {
        IoOp::Read { offset } => IoRequest::Read {
            offset,
            bufs: slices,
        },
        IoOp::Write { offset } => IoRequest::Write {
            offset,
            bufs: slices,
        },
        IoOp::Flush => IoRequest::Flush,
        IoOp::Discard { offset, len } => IoRequest::Discard { offset, len },
        IoOp::WriteZeroes { offset, len, mode } => IoRequest::WriteZeroes { offset, len, mode },
    };
    match io.submit(req.token, request) {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(error = %e, "request refused by the I/O queue");
            Some(BlkStatus::IoErr)
        }
    }
}

/// Sleeps until requests arrive, the stop is asked, or (with `io_uring`) completions are
/// posted.
fn wait(link: &Link, io: &IoQueue<'_>) {
    let wake = link.wake.as_fd();
    let completion = io.completion_fd().unwrap_or(wake);
    let mut fds = [
        PollFd::from_borrowed_fd(wake, PollFlags::IN),
        PollFd::from_borrowed_fd(completion, PollFlags::IN),
    ];
    loop {
        match poll(&mut fds, None) {
            Err(Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll in the I/O thread failed");
                // Avoid spinning on a persistent failure.
                std::thread::sleep(std::time::Duration::from_millis(10));
                return;
            }
            Ok(_) => return,
        }
    }
}
