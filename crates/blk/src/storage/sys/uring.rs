//! The `io_uring` submission context: many reads, writes, flushes and `fallocate`s in flight on
//! one file, each tagged with the caller's `u64` token, reaped in batches.
//!
//! # The buffer contract
//!
//! A read or write hands the kernel the addresses of guest buffers and returns before the
//! kernel has used them. So every buffer must stay valid until its completion is reaped. The
//! types carry this: a [`Ring<'m>`] only accepts [`SharedSlice<'m>`]s and a file descriptor
//! borrowed for `'m`, so the memory and the file outlive the ring; and dropping the ring waits
//! for every request still in flight (it cannot return before the kernel is done with the
//! buffers). The one way around that would be leaking a ring with requests in flight
//! (`mem::forget`), so a `Ring` is never handed out by value: it is crate-private, created only
//! by `IoQueue::scope`, which keeps it on its own stack and drops it before returning (also
//! when the caller's closure unwinds).
//!
//! In the virtio-blk device this matches the protocol: the device does not return a
//! descriptor chain to the driver (used ring) before its request completes, so the driver does
//! not reuse those buffers meanwhile; and guest memory regions are only unmapped after the
//! queue that uses them has stopped (which ends its `IoQueue::scope`).
//!
//! The kernel writing into guest memory that the driver may also touch is no different from
//! the driver's own concurrent writes: that memory is only reached through `SharedSlice`.
//!
//! # Bounds
//! At most `depth` requests are in flight (each owns a slot); each slot has `max_segments`
//! iovecs, allocated once with the ring, so the hot path does not allocate. The submission
//! queue has at least `depth` entries and the completion queue twice that, so neither can
//! overflow: a slot has at most one entry in either at a time.

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use io_uring::{opcode, types, IoUring, Probe};
use vireo_memory::SharedSlice;

use crate::storage::check::Direction;
use crate::storage::{Operation, StorageError, Wait, ZeroesMode};

/// What a slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingOp {
    /// `IORING_OP_READV`.
    Read,
    /// `IORING_OP_WRITEV`.
    Write,
    /// `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`.
    Flush,
    /// `IORING_OP_FALLOCATE` punching a hole.
    Discard,
    /// `IORING_OP_FALLOCATE` zeroing (or punching) a range.
    WriteZeroes(ZeroesMode),
}

impl RingOp {
    fn operation(self) -> Operation {
        match self {
            RingOp::Read => Operation::Read,
            RingOp::Write => Operation::Write,
            RingOp::Flush => Operation::Flush,
            RingOp::Discard => Operation::Discard,
            RingOp::WriteZeroes(_) => Operation::WriteZeroes,
        }
    }
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RingCompletion {
    /// The caller's token.
    pub token: u64,
    /// What it was.
    pub op: RingOp,
    /// Its byte offset as submitted.
    pub offset: u64,
    /// Its length as submitted.
    pub len: u64,
    /// How it ended.
    pub result: Result<(), StorageError>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    busy: bool,
    token: u64,
    op: RingOp,
    /// Offset and length as submitted.
    start: u64,
    len: u64,
    /// Where the next (re)submission starts, and how many bytes remain.
    offset: u64,
    remaining: u64,
    /// The slot's unfinished iovecs: `iov_first..iov_count` of its `max_segments`.
    iov_first: usize,
    iov_count: usize,
}

const IDLE: Slot = Slot {
    busy: false,
    token: 0,
    op: RingOp::Flush,
    start: 0,
    len: 0,
    offset: 0,
    remaining: 0,
    iov_first: 0,
    iov_count: 0,
};

/// An `io_uring` bound to one file for `'m` (see the module docs for the buffer contract).
pub(crate) struct Ring<'m> {
    ring: IoUring,
    /// Signalled by the kernel when completions are posted (`IORING_REGISTER_EVENTFD`).
    notify: OwnedFd,
    fd: BorrowedFd<'m>,
    max_segments: usize,
    /// `depth * max_segments` iovecs: slot `i` owns `i * max_segments ..` (never reallocated).
    iovecs: Box<[libc::iovec]>,
    slots: Box<[Slot]>,
    /// Free slot indices (a stack; capacity `depth`).
    free: Vec<usize>,
    /// Completions copied out of the completion queue (capacity: its size).
    cqes: Vec<(u64, i32)>,
    _mem: PhantomData<SharedSlice<'m>>,
}

impl std::fmt::Debug for Ring<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.fd)
            .field("depth", &self.slots.len())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<'m> Ring<'m> {
    /// Sets up a ring for `depth` requests of up to `max_segments` buffers on `fd`, and checks
    /// that the kernel supports every opcode used. Fails with the `errno` of `io_uring_setup`
    /// (`EPERM` when forbidden by `kernel.io_uring_disabled` or a seccomp filter, `ENOSYS`
    /// when the kernel lacks it) or `ENOSYS` when an opcode is missing.
    pub(crate) fn new(fd: BorrowedFd<'m>, depth: usize, max_segments: usize) -> Result<Self, i32> {
        let entries = u32::try_from(depth).map_err(|_| libc::EINVAL)?;
        let ring = IoUring::new(entries).map_err(|e| e.raw_os_error().unwrap_or(libc::ENOSYS))?;
        let mut probe = Probe::new();
        // Probing needs Linux 5.6, as does IORING_OP_FALLOCATE: an older kernel is "missing".
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|_| libc::ENOSYS)?;
        let codes = [
            opcode::Readv::CODE,
            opcode::Writev::CODE,
            opcode::Fsync::CODE,
            opcode::Fallocate::CODE,
        ];
        if !codes.iter().all(|&c| probe.is_supported(c)) {
            return Err(libc::ENOSYS);
        }
        let flags = rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
        let notify = rustix::event::eventfd(0, flags).map_err(|e| e.raw_os_error())?;
        ring.submitter()
            .register_eventfd(notify.as_raw_fd())
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOSYS))?;
        let cq = ring.params().cq_entries() as usize;
        let empty = libc::iovec {
            iov_base: core::ptr::null_mut(),
            iov_len: 0,
        };
        let iov_total = depth.checked_mul(max_segments).ok_or(libc::EINVAL)?;
        Ok(Ring {
            ring,
            notify,
            fd,
            max_segments,
            iovecs: vec![empty; iov_total].into_boxed_slice(),
            slots: vec![IDLE; depth].into_boxed_slice(),
            free: (0..depth).rev().collect(),
            cqes: Vec::with_capacity(cq),
            _mem: PhantomData,
        })
    }

    /// An eventfd that becomes readable when completions are posted.
    pub(crate) fn notify_fd(&self) -> BorrowedFd<'_> {
        self.notify.as_fd()
    }

    /// Resets the eventfd's counter (it is non-blocking: nothing to read is not an error).
    pub(crate) fn acknowledge(&self) {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.notify, &mut counter);
    }

    /// Requests submitted and not yet reaped.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Queues a scatter read or gather write of `len` (> 0) bytes at `offset`. The caller has
    /// validated the request; `bufs` must stay untouched by the device until the completion.
    pub(crate) fn push_transfer(
        &mut self,
        token: u64,
        dir: Direction,
        offset: u64,
        bufs: &[SharedSlice<'m>],
        len: u64,
    ) -> Result<(), StorageError> {
        if bufs.len() > self.max_segments {
            return Err(StorageError::TooManySegments {
                count: bufs.len(),
                max: self.max_segments,
            });
        }
        let idx = self.take_slot()?;
        let base = idx * self.max_segments;
        let mut count = 0;
        let slot_iovecs = self.iovecs.iter_mut().skip(base).take(self.max_segments);
        for (iov, buf) in slot_iovecs.zip(bufs.iter().filter(|b| !b.is_empty())) {
            iov.iov_base = buf.as_ptr().cast();
            iov.iov_len = buf.len();
            count += 1;
        }
        let op = match dir {
            Direction::Read => RingOp::Read,
            Direction::Write => RingOp::Write,
        };
        self.start(
            idx,
            Slot {
                iov_count: count,
                ..Self::slot(token, op, offset, len)
            },
        )
    }

    /// Queues a flush (`fdatasync`).
    pub(crate) fn push_flush(&mut self, token: u64) -> Result<(), StorageError> {
        let idx = self.take_slot()?;
        self.start(idx, Self::slot(token, RingOp::Flush, 0, 0))
    }

    /// Queues a discard or write-zeroes `fallocate` of `len` bytes at `offset`.
    pub(crate) fn push_fallocate(
        &mut self,
        token: u64,
        op: RingOp,
        offset: u64,
        len: u64,
    ) -> Result<(), StorageError> {
        let idx = self.take_slot()?;
        self.start(idx, Self::slot(token, op, offset, len))
    }

    fn slot(token: u64, op: RingOp, offset: u64, len: u64) -> Slot {
        Slot {
            busy: true,
            token,
            op,
            start: offset,
            len,
            offset,
            remaining: len,
            ..IDLE
        }
    }

    fn take_slot(&mut self) -> Result<usize, StorageError> {
        self.free.pop().ok_or(StorageError::QueueFull {
            depth: self.slots.len(),
        })
    }

    fn start(&mut self, idx: usize, slot: Slot) -> Result<(), StorageError> {
        if let Some(s) = self.slots.get_mut(idx) {
            *s = slot;
        }
        self.push_sqe(idx).inspect_err(|_| self.release(idx))
    }

    fn release(&mut self, idx: usize) {
        if let Some(s) = self.slots.get_mut(idx) {
            if s.busy {
                s.busy = false;
                self.free.push(idx);
            }
        }
    }

    /// Puts slot `idx`'s (remaining) request into the submission queue.
    fn push_sqe(&mut self, idx: usize) -> Result<(), StorageError> {
        let ring_err = |errno| StorageError::Io {
            op: Operation::Ring,
            errno,
        };
        let slot = *self.slots.get(idx).ok_or(ring_err(libc::EINVAL))?;
        let fd = types::Fd(self.fd.as_raw_fd());
        let first = idx * self.max_segments + slot.iov_first;
        let iov = self
            .iovecs
            .get(first..)
            .map_or(core::ptr::null(), |s| s.as_ptr());
        let iov_len = (slot.iov_count - slot.iov_first) as u32; // <= max_segments <= 1024
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        let entry = match slot.op {
            RingOp::Read => opcode::Readv::new(fd, iov, iov_len)
                .offset(slot.offset)
                .build(),
            RingOp::Write => opcode::Writev::new(fd, iov, iov_len)
                .offset(slot.offset)
                .build(),
            RingOp::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            RingOp::Discard | RingOp::WriteZeroes(ZeroesMode::MayUnmap) => {
                opcode::Fallocate::new(fd, slot.len)
                    .offset(slot.offset)
                    .mode(libc::FALLOC_FL_PUNCH_HOLE | keep)
                    .build()
            }
            RingOp::WriteZeroes(ZeroesMode::KeepAllocated) => opcode::Fallocate::new(fd, slot.len)
                .offset(slot.offset)
                .mode(libc::FALLOC_FL_ZERO_RANGE | keep)
                .build(),
        };
        let entry = entry.user_data(idx as u64);
        for _ in 0..2 {
            // SAFETY: the entry's pointers are valid until its completion is reaped: the iovec
            // array is slot `idx`'s part of `self.iovecs`, allocated once and neither moved nor
            // rewritten while the slot is busy (only between a short completion and its
            // resubmission); each iovec describes part of a SharedSlice<'m>, and the fd is
            // borrowed for 'm; the ring cannot outlive 'm without draining (module docs).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // Cannot happen (the queue has room for every slot), but make room if it does.
            self.submit()?;
        }
        Err(ring_err(libc::EBUSY))
    }

    /// Hands queued entries to the kernel (one `io_uring_enter`). A busy kernel (`EAGAIN`,
    /// `EBUSY`, `EINTR`) leaves them queued for the next call.
    pub(crate) fn submit(&mut self) -> Result<(), StorageError> {
        if self.ring.submission().is_empty() {
            return Ok(()); // no system call when there is nothing to hand over
        }
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(StorageError::io(Operation::Ring, &e)),
        }
    }

    /// Submits what is queued and passes every finished request to `f`; with
    /// [`Wait::AtLeastOne`], first waits until at least one has finished (unless none is in flight). Short transfers and
    /// `EINTR`/`EAGAIN` are resubmitted, not reported. Returns how many were passed to `f`.
    pub(crate) fn reap(
        &mut self,
        wait: Wait,
        f: &mut dyn FnMut(RingCompletion),
    ) -> Result<usize, StorageError> {
        let mut delivered = 0;
        loop {
            self.cqes.clear();
            let room = self.cqes.capacity();
            for cqe in self.ring.completion().take(room) {
                self.cqes.push((cqe.user_data(), cqe.result()));
            }
            for i in 0..self.cqes.len() {
                let Some(&(data, res)) = self.cqes.get(i) else {
                    break;
                };
                if let Some(done) = self.complete(data, res) {
                    delivered += 1;
                    f(done);
                }
            }
            if delivered > 0 || wait == Wait::NoWait || self.in_flight() == 0 {
                self.submit()?;
                return Ok(delivered);
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err(StorageError::io(Operation::Ring, &e)),
            }
        }
    }

    /// Accounts one completion queue entry; returns the finished request, or `None` when it
    /// was resubmitted (or is not ours).
    fn complete(&mut self, data: u64, res: i32) -> Option<RingCompletion> {
        let idx = usize::try_from(data).ok()?;
        let slot = *self.slots.get(idx).filter(|s| s.busy)?;
        let result = if res < 0 {
            let errno = -res;
            if errno == libc::EINTR || errno == libc::EAGAIN {
                return self.resubmit(idx);
            }
            Err(StorageError::Io {
                op: slot.op.operation(),
                errno,
            })
        } else if matches!(slot.op, RingOp::Read | RingOp::Write) {
            let n = res as u64; // res >= 0
            if n == 0 && slot.remaining > 0 {
                Err(match slot.op {
                    RingOp::Read => StorageError::UnexpectedEof {
                        offset: slot.offset,
                    },
                    _ => StorageError::Io {
                        op: Operation::Write,
                        errno: libc::EIO,
                    },
                })
            } else if n < slot.remaining {
                self.advance(idx, n);
                return self.resubmit(idx);
            } else {
                Ok(())
            }
        } else {
            Ok(())
        };
        self.release(idx);
        Some(RingCompletion {
            token: slot.token,
            op: slot.op,
            offset: slot.start,
            len: slot.len,
            result,
        })
    }

    fn resubmit(&mut self, idx: usize) -> Option<RingCompletion> {
        let slot = *self.slots.get(idx)?;
        match self.push_sqe(idx) {
            Ok(()) => None,
            Err(e) => {
                self.release(idx);
                let (offset, len) = (slot.start, slot.len);
                Some(RingCompletion {
                    token: slot.token,
                    op: slot.op,
                    offset,
                    len,
                    result: Err(e),
                })
            }
        }
    }

    /// Moves slot `idx` past `n` transferred bytes (n < remaining).
    fn advance(&mut self, idx: usize, n: u64) {
        let base = idx * self.max_segments;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.offset += n;
        slot.remaining -= n;
        let mut n = usize::try_from(n).unwrap_or(usize::MAX);
        while n > 0 && slot.iov_first < slot.iov_count {
            let Some(iov) = self.iovecs.get_mut(base + slot.iov_first) else {
                return;
            };
            if n >= iov.iov_len {
                n -= iov.iov_len;
                slot.iov_first += 1;
            } else {
                // Stays inside the buffer the iovec describes: n < iov_len.
                iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(n).cast();
                iov.iov_len -= n;
                n = 0;
            }
        }
    }
}

fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

impl Drop for Ring<'_> {
    /// Waits until the kernel has finished every request in flight (their completions are
    /// discarded): only then may the buffers and the file go (module docs).
    fn drop(&mut self) {
        while self.in_flight() > 0 {
            self.cqes.clear();
            let room = self.cqes.capacity();
            for cqe in self.ring.completion().take(room) {
                self.cqes.push((cqe.user_data(), cqe.result()));
            }
            for i in 0..self.cqes.len() {
                if let Some(&(data, _)) = self.cqes.get(i) {
                    self.release(usize::try_from(data).unwrap_or(usize::MAX));
                }
            }
            if self.in_flight() == 0 {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => {
                    // Returning would let the kernel write into memory that is about to be
                    // freed; there is no sound way on.
                    eprintln!("vireo-blk: cannot drain io_uring ({e}); aborting");
                    std::process::abort();
                }
            }
        }
    }
}
