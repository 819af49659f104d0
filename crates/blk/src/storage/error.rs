//! The storage layer's error: one enum, each variant's doc comment is its message.

use core::fmt;

use vireo_memory::MemoryError;

/// What the storage layer was doing when a system call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Opening or inspecting the image.
    Open,
    /// Reading (`preadv`, `IORING_OP_READV`).
    Read,
    /// Writing (`pwritev`, `IORING_OP_WRITEV`).
    Write,
    /// Flushing to stable storage (`fdatasync`, `IORING_OP_FSYNC`).
    Flush,
    /// Discarding (`fallocate` punching a hole).
    Discard,
    /// Writing zeroes (`fallocate` zeroing or punching a range, or writing zeroes).
    WriteZeroes,
    /// Setting up or driving the `io_uring` (`io_uring_setup`, `io_uring_enter`).
    Ring,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Open => "open",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Flush => "flush",
            Operation::Discard => "discard",
            Operation::WriteZeroes => "write zeroes",
            Operation::Ring => "io_uring",
        })
    }
}

/// Errors of the storage layer (the backends behind a virtio-blk device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// request of {len} bytes at offset {offset} is beyond the capacity of {capacity} bytes
    OutOfRange {
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Capacity of the device in bytes.
        capacity: u64,
    },
    /// request of {len} bytes at offset {offset} overflows a 64-bit offset
    Overflow {
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
    },
    /// the device is read-only
    ReadOnly,
    /// request has {count} buffers, more than the {max} this queue accepts
    TooManySegments {
        /// Buffers in the request.
        count: usize,
        /// The queue's limit (what the device advertises as `seg_max`).
        max: usize,
    },
    /// direct I/O needs offsets, lengths and buffer addresses aligned to {align} bytes
    Misaligned {
        /// Required alignment in bytes.
        align: u64,
    },
    /// the image ended at offset {offset} before the request was complete (was it truncated?)
    UnexpectedEof {
        /// File offset where the kernel reported end of file.
        offset: u64,
    },
    /// {op} failed: errno {errno}
    Io {
        /// What was being done.
        op: Operation,
        /// The `errno` the kernel returned.
        errno: i32,
    },
    /// all {depth} slots of the I/O queue are in flight
    QueueFull {
        /// The queue's depth.
        depth: usize,
    },
    /// io_uring is not available (errno {errno}) and the queue was told to require it
    UringUnavailable {
        /// The `errno` from `io_uring_setup` or the opcode probe.
        errno: i32,
    },
    /// a RAM disk of {size} bytes does not fit this machine's address space
    TooLarge {
        /// Requested size in bytes.
        size: u64,
    },
    /// guest memory access failed: {0}
    Memory(MemoryError),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::OutOfRange { offset, len, capacity } => write!(
                f,
                "request of {len} bytes at offset {offset} is beyond the capacity of {capacity} bytes"
            ),
            StorageError::Overflow { offset, len } => {
                write!(f, "request of {len} bytes at offset {offset} overflows a 64-bit offset")
            }
            StorageError::ReadOnly => f.write_str("the device is read-only"),
            StorageError::TooManySegments { count, max } => {
                write!(f, "request has {count} buffers, more than the {max} this queue accepts")
            }
            StorageError::Misaligned { align } => write!(
                f,
                "direct I/O needs offsets, lengths and buffer addresses aligned to {align} bytes"
            ),
            StorageError::UnexpectedEof { offset } => write!(
                f,
                "the image ended at offset {offset} before the request was complete (was it truncated?)"
            ),
            StorageError::Io { op, errno } => write!(f, "{op} failed: errno {errno}"),
            StorageError::QueueFull { depth } => {
                write!(f, "all {depth} slots of the I/O queue are in flight")
            }
            StorageError::UringUnavailable { errno } => write!(
                f,
                "io_uring is not available (errno {errno}) and the queue was told to require it"
            ),
            StorageError::TooLarge { size } => {
                write!(f, "a RAM disk of {size} bytes does not fit this machine's address space")
            }
            StorageError::Memory(e) => write!(f, "guest memory access failed: {e}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Memory(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MemoryError> for StorageError {
    fn from(e: MemoryError) -> Self {
        StorageError::Memory(e)
    }
}

impl StorageError {
    /// An [`StorageError::Io`] from a `std::io::Error` (EIO when it carries no errno).
    pub(crate) fn io(op: Operation, e: &std::io::Error) -> Self {
        StorageError::Io {
            op,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// An [`StorageError::Io`] from a `rustix` errno.
    pub(crate) fn errno(op: Operation, e: rustix::io::Errno) -> Self {
        StorageError::Io {
            op,
            errno: e.raw_os_error(),
        }
    }
}
