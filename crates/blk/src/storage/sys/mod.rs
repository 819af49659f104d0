//! The storage layer's `unsafe` code: system calls handed raw pointers into guest memory.
//!
//! Guest memory is only ever reached through [`SharedSlice`] (never a Rust reference, because
//! the driver may write it at any moment). `preadv`/`pwritev` and `io_uring` need its addresses:
//! they get [`SharedSlice::as_ptr`] and [`SharedSlice::len`], which describe memory that is
//! valid for reads and writes for the slice's lifetime. The kernel writing into (or reading
//! from) that memory is just another concurrent party, which `SharedSlice` is built for.
//!
//! - this file: synchronous scatter/gather with retries on short transfers and `EINTR`.
//! - [`uring`]: the `io_uring` submission context, where buffers stay in use after the call
//!   returns (its module docs state that contract).

pub(crate) mod uring;

use std::os::fd::{AsRawFd, BorrowedFd};

use vireo_memory::SharedSlice;

use super::check::Direction;
use super::{Operation, StorageError};

/// iovecs per `preadv`/`pwritev` call: kept on the stack (no allocation per request); larger
/// requests take several calls (and stay below `IOV_MAX`, 1024).
const IOV_CHUNK: usize = 64;

/// Where a transfer has got to: buffer index and offset inside that buffer.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seg: usize,
    within: usize,
}

/// Transfers all of `bufs` at file `offset` (`Direction::Read`: file to memory, with `preadv`;
/// `Direction::Write`: memory to file, with `pwritev`), retrying short transfers and `EINTR`.
///
/// The caller has checked the range against the device's capacity.
pub(crate) fn transfer(
    fd: BorrowedFd<'_>,
    mut offset: u64,
    bufs: &[SharedSlice<'_>],
    dir: Direction,
) -> Result<(), StorageError> {
    let op = match dir {
        Direction::Read => Operation::Read,
        Direction::Write => Operation::Write,
    };
    let mut cur = Cursor { seg: 0, within: 0 };
    let mut iov = [libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; IOV_CHUNK];
    loop {
        // Fill the iovec array from the cursor: the first `n` entries, contiguously (an empty
        // buffer takes no entry, so none is left holding an earlier batch's buffer).
        let mut n = 0;
        let mut c = cur;
        while let (Some(slot), Some(buf)) = (iov.get_mut(n), bufs.get(c.seg)) {
            let left = buf.len().saturating_sub(c.within);
            if left > 0 {
                // wrapping_add stays inside the buffer: c.within < buf.len().
                slot.iov_base = buf.as_ptr().wrapping_add(c.within).cast();
                slot.iov_len = left;
                n += 1;
            }
            c = Cursor {
                seg: c.seg + 1,
                within: 0,
            };
        }
        if n == 0 {
            return Ok(());
        }
        let off =
            libc::off_t::try_from(offset).map_err(|_| StorageError::Overflow { offset, len: 0 })?;
        let iovcnt = n as libc::c_int; // n <= IOV_CHUNK = 64
        let done = match dir {
            // SAFETY: each of the first n iovecs describes a sub-range of one SharedSlice in
            // `bufs` (base = as_ptr() + within, len = len() - within), memory valid for writes
            // for the duration of this call, which is all preadv needs; it is never reached
            // through a Rust reference. `iov` outlives the call.
            Direction::Read => unsafe { libc::preadv(fd.as_raw_fd(), iov.as_ptr(), iovcnt, off) },
            // SAFETY: as above; pwritev only reads the described memory.
            Direction::Write => unsafe { libc::pwritev(fd.as_raw_fd(), iov.as_ptr(), iovcnt, off) },
        };
        let done = match usize::try_from(done) {
            Ok(0) => {
                return Err(match dir {
                    Direction::Read => StorageError::UnexpectedEof { offset },
                    Direction::Write => StorageError::Io {
                        op,
                        errno: libc::EIO,
                    },
                });
            }
            Ok(d) => d,
            Err(_) => {
                let errno = std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
                if errno == libc::EINTR {
                    continue;
                }
                return Err(StorageError::Io { op, errno });
            }
        };
        offset = offset.saturating_add(done as u64);
        cur = advance(bufs, cur, done);
    }
}

/// Moves `cur` forward by `done` bytes across `bufs`.
fn advance(bufs: &[SharedSlice<'_>], mut cur: Cursor, mut done: usize) -> Cursor {
    while let Some(buf) = bufs.get(cur.seg) {
        let left = buf.len().saturating_sub(cur.within);
        if done < left {
            cur.within += done;
            return cur;
        }
        done -= left;
        cur = Cursor {
            seg: cur.seg + 1,
            within: 0,
        };
    }
    cur
}
