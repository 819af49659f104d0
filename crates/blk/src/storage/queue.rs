//! Per-queue asynchronous I/O: [`IoQueue`] keeps up to `depth` requests in flight, each tagged
//! with the caller's `u64` token, and reports each one exactly once as a [`Completion`].
//!
//! With `io_uring` available (and a backend with a file descriptor), requests go to the kernel
//! and complete later; otherwise they run synchronously through [`Storage`] during
//! [`IoQueue::submit`] and their completions wait in a queue. Both paths validate the same way
//! and give the same results, so a device worker is written once.

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;

use vireo_memory::SharedSlice;

use super::check::{self, Direction};
use super::file::fallocate_unsupported;
use super::sys::uring::{Ring, RingCompletion, RingOp};
use super::{Operation, Storage, StorageError, ZeroesMode};

/// Largest queue depth (virtio 1.2 §2.6: a queue has at most 32768 entries; also
/// `io_uring`'s limit).
const MAX_DEPTH: usize = 32768;
/// Largest number of buffers in one request (`IOV_MAX`).
const MAX_SEGMENTS: usize = 1024;

/// Which implementation an [`IoQueue`] should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// `io_uring` if the kernel allows it and the backend has a file descriptor; otherwise the
    /// synchronous path (when `io_uring_setup` is refused: `EPERM`, `EACCES`, `ENOSYS`,
    /// `ENOMEM`, `EINVAL`, or a missing opcode).
    #[default]
    Auto,
    /// `io_uring` or an error ([`StorageError::UringUnavailable`]).
    RequireUring,
    /// The synchronous path, always.
    Synchronous,
}

/// The implementation an [`IoQueue`] ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveBackend {
    /// Requests are submitted to an `io_uring`.
    Uring,
    /// Requests run during [`IoQueue::submit`].
    Synchronous,
}

/// How an [`IoQueue`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Most requests in flight (normally the virtqueue's size); clamped to 1..=32768.
    ///
    /// With `io_uring`, the queue preallocates `depth * max_segments` iovecs (16 bytes each):
    /// choose both from the device's own limits, not from unchecked peer values.
    pub depth: usize,
    /// Most buffers in one read or write (what the device advertises as `seg_max`); clamped to
    /// 1..=1024. Each in-flight slot preallocates this many iovecs.
    pub max_segments: usize,
    /// Which implementation to use.
    pub backend: IoBackend,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            depth: 128,
            max_segments: 128,
            backend: IoBackend::Auto,
        }
    }
}

/// One request for an [`IoQueue`]. Buffers live in guest memory borrowed for `'m`.
#[derive(Debug, Clone, Copy)]
pub enum IoRequest<'m, 'b> {
    /// Fill `bufs` with the bytes at `offset` (`VIRTIO_BLK_T_IN`).
    Read {
        /// Byte offset on the device.
        offset: u64,
        /// Destination buffers, in order.
        bufs: &'b [SharedSlice<'m>],
    },
    /// Write the bytes of `bufs` at `offset` (`VIRTIO_BLK_T_OUT`).
    Write {
        /// Byte offset on the device.
        offset: u64,
        /// Source buffers, in order.
        bufs: &'b [SharedSlice<'m>],
    },
    /// Make completed writes durable (`VIRTIO_BLK_T_FLUSH`): those whose completion was
    /// reaped before the flush was submitted (requests in flight are not ordered).
    Flush,
    /// Discard a range (`VIRTIO_BLK_T_DISCARD`).
    Discard {
        /// Byte offset on the device.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Zero a range (`VIRTIO_BLK_T_WRITE_ZEROES`).
    WriteZeroes {
        /// Byte offset on the device.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Whether the range may be deallocated.
        mode: ZeroesMode,
    },
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The token given to [`IoQueue::submit`].
    pub token: u64,
    /// How it ended.
    pub result: Result<(), StorageError>,
}

/// Whether [`IoQueue::reap`] may block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Report what has finished, without blocking.
    NoWait,
    /// Block until at least one request has finished (unless none is in flight).
    AtLeastOne,
}

/// A per-virtqueue I/O submission context (see the module docs). Only reachable inside
/// [`IoQueue::scope`], which guarantees the guest buffers of in-flight requests stay valid.
pub struct IoQueue<'m> {
    storage: &'m dyn Storage,
    depth: usize,
    max_segments: usize,
    ring: Option<Ring<'m>>,
    /// Completions of requests that finished during `submit` (capacity `depth`).
    ready: VecDeque<Completion>,
}

impl std::fmt::Debug for IoQueue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueue")
            .field("backend", &self.backend())
            .field("depth", &self.depth)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<'m> IoQueue<'m> {
    /// Sets up a queue on `storage` and runs `f` with it. When `f` returns (or unwinds), the
    /// queue waits for every request still in flight and discards those completions: only then
    /// may guest memory borrowed for `'m` go away. Fails only when the queue cannot be set up.
    pub fn scope<R>(
        storage: &'m dyn Storage,
        options: QueueOptions,
        f: impl FnOnce(&mut IoQueue<'m>) -> R,
    ) -> Result<R, StorageError> {
        Self::scope_with(storage, options, Ring::new, f)
    }

    /// [`IoQueue::scope`] with the ring setup supplied (tests force its failure).
    fn scope_with<R>(
        storage: &'m dyn Storage,
        options: QueueOptions,
        setup: impl FnOnce(BorrowedFd<'m>, usize, usize) -> Result<Ring<'m>, i32>,
        f: impl FnOnce(&mut IoQueue<'m>) -> R,
    ) -> Result<R, StorageError> {
        let depth = options.depth.clamp(1, MAX_DEPTH);
        let max_segments = options.max_segments.clamp(1, MAX_SEGMENTS);
        let ring = match options.backend {
            IoBackend::Synchronous => None,
            pref => {
                let attempt = match storage.async_fd() {
                    Some(fd) => setup(fd, depth, max_segments),
                    None => Err(libc::EOPNOTSUPP),
                };
                choose(pref, attempt)?
            }
        };
        // The queue lives on this stack frame and is dropped (draining the ring) before this
        // function returns or unwinds: the caller only ever sees `&mut`.
        let mut queue = IoQueue {
            storage,
            depth,
            max_segments,
            ring,
            ready: VecDeque::with_capacity(depth),
        };
        Ok(f(&mut queue))
    }

    /// The implementation in use.
    pub fn backend(&self) -> ActiveBackend {
        if self.ring.is_some() {
            ActiveBackend::Uring
        } else {
            ActiveBackend::Synchronous
        }
    }

    /// Most requests in flight.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Most buffers per read or write.
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// With `io_uring`, an eventfd that becomes readable when completions are posted, for a
    /// worker that waits on its virtqueue's kick and on completions together (`epoll`); after
    /// it polls readable, call [`IoQueue::acknowledge`] and then [`IoQueue::reap`] with
    /// [`Wait::NoWait`]. `None` on the synchronous path, where completions are ready as soon
    /// as [`IoQueue::submit`] returns.
    pub fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        self.ring.as_ref().map(Ring::notify_fd)
    }

    /// Clears the readiness of [`IoQueue::completion_fd`] (does nothing without one).
    pub fn acknowledge(&self) {
        if let Some(ring) = &self.ring {
            ring.acknowledge();
        }
    }

    /// Requests submitted whose completion has not been reaped yet.
    pub fn in_flight(&self) -> usize {
        self.ready.len() + self.ring.as_ref().map_or(0, Ring::in_flight)
    }

    /// Queues a request tagged with `token`. Every `Ok` is followed by exactly one
    /// [`Completion`] with that token from [`IoQueue::reap`] (invalid requests complete with
    /// their error). The only error is [`StorageError::QueueFull`]: then nothing was queued.
    ///
    /// With `io_uring`, requests reach the kernel at the next [`IoQueue::commit`] or
    /// [`IoQueue::reap`], so a batch costs one system call.
    pub fn submit(&mut self, token: u64, request: IoRequest<'m, '_>) -> Result<(), StorageError> {
        if self.in_flight() >= self.depth {
            return Err(StorageError::QueueFull { depth: self.depth });
        }
        let result = match self.validate(&request) {
            Ok(0) => Ok(()), // nothing to transfer
            Ok(len) => match self.ring.as_mut() {
                Some(ring) => match push(ring, token, &request, len) {
                    Ok(()) => return Ok(()),
                    Err(e) => Err(e),
                },
                None => execute(self.storage, &request),
            },
            Err(e) => Err(e),
        };
        self.ready.push_back(Completion { token, result });
        Ok(())
    }

    /// Hands queued requests to the kernel without waiting (nothing to do on the synchronous
    /// path).
    pub fn commit(&mut self) -> Result<(), StorageError> {
        self.ring.as_mut().map_or(Ok(()), Ring::submit)
    }

    /// Passes finished requests to `f` (each exactly once) and returns how many; with
    /// [`Wait::AtLeastOne`], blocks until there is at least one (unless none is in flight).
    /// An error here is the ring itself failing (`io_uring_enter`), not a request.
    pub fn reap(
        &mut self,
        wait: Wait,
        mut f: impl FnMut(Completion),
    ) -> Result<usize, StorageError> {
        let mut delivered = 0;
        while let Some(c) = self.ready.pop_front() {
            f(c);
            delivered += 1;
        }
        let storage = self.storage;
        if let Some(ring) = self.ring.as_mut() {
            let wait = if delivered == 0 { wait } else { Wait::NoWait };
            delivered += ring.reap(wait, &mut |c| f(finish(storage, c)))?;
        }
        Ok(delivered)
    }

    /// Checks a request completely; returns the bytes it covers (1 for a flush).
    fn validate(&self, request: &IoRequest<'m, '_>) -> Result<u64, StorageError> {
        let s = self.storage;
        match *request {
            IoRequest::Read { offset, bufs } | IoRequest::Write { offset, bufs } => {
                if bufs.len() > self.max_segments {
                    return Err(StorageError::TooManySegments {
                        count: bufs.len(),
                        max: self.max_segments,
                    });
                }
                let dir = match request {
                    IoRequest::Write { .. } => Direction::Write,
                    _ => Direction::Read,
                };
                check::transfer(s, offset, bufs, dir)
            }
            IoRequest::Flush => Ok(1),
            IoRequest::Discard { offset, len } | IoRequest::WriteZeroes { offset, len, .. } => {
                check::modify(s, offset, len).map(|()| len)
            }
        }
    }
}

/// Picks the ring or the fallback from the preference and the result of setting the ring up.
fn choose<T>(pref: IoBackend, setup: Result<T, i32>) -> Result<Option<T>, StorageError> {
    match setup {
        Ok(ring) => Ok(Some(ring)),
        Err(errno) if pref == IoBackend::RequireUring => {
            Err(StorageError::UringUnavailable { errno })
        }
        Err(errno) if falls_back(errno) => Ok(None),
        Err(errno) => Err(StorageError::Io {
            op: Operation::Ring,
            errno,
        }),
    }
}

/// Setup failures that mean "no io_uring here" rather than "something is broken".
fn falls_back(errno: i32) -> bool {
    [
        libc::EPERM,
        libc::EACCES,
        libc::ENOSYS,
        libc::ENOMEM,
        libc::EINVAL,
        libc::EOPNOTSUPP,
    ]
    .contains(&errno)
}

/// Runs a validated request synchronously.
fn execute(storage: &dyn Storage, request: &IoRequest<'_, '_>) -> Result<(), StorageError> {
    match *request {
        IoRequest::Read { offset, bufs } => storage.read_at(offset, bufs),
        IoRequest::Write { offset, bufs } => storage.write_at(offset, bufs),
        IoRequest::Flush => storage.flush(),
        IoRequest::Discard { offset, len } => storage.discard(offset, len),
        IoRequest::WriteZeroes { offset, len, mode } => storage.write_zeroes(offset, len, mode),
    }
}

/// Queues a validated request of `len` (> 0) bytes on the ring.
fn push<'m>(
    ring: &mut Ring<'m>,
    token: u64,
    request: &IoRequest<'m, '_>,
    len: u64,
) -> Result<(), StorageError> {
    match *request {
        IoRequest::Read { offset, bufs } => {
            ring.push_transfer(token, Direction::Read, offset, bufs, len)
        }
        IoRequest::Write { offset, bufs } => {
            ring.push_transfer(token, Direction::Write, offset, bufs, len)
        }
        IoRequest::Flush => ring.push_flush(token),
        IoRequest::Discard { offset, len } => {
            ring.push_fallocate(token, RingOp::Discard, offset, len)
        }
        IoRequest::WriteZeroes { offset, len, mode } => {
            ring.push_fallocate(token, RingOp::WriteZeroes(mode), offset, len)
        }
    }
}

/// Turns a ring completion into the caller's, with the same policy as the synchronous path
/// for file systems that cannot `fallocate`: discard is advisory (success), write-zeroes falls
/// back to [`Storage::write_zeroes`] (which writes zeroes).
fn finish(storage: &dyn Storage, c: RingCompletion) -> Completion {
    let unsupported =
        matches!(c.result, Err(StorageError::Io { errno, .. }) if fallocate_unsupported(errno));
    let result = match c.op {
        RingOp::Discard if unsupported => Ok(()),
        RingOp::WriteZeroes(mode) if unsupported => storage.write_zeroes(c.offset, c.len, mode),
        _ => c.result,
    };
    Completion {
        token: c.token,
        result,
    }
}

#[cfg(test)]
mod tests;
