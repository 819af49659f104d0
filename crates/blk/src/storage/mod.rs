//! Storage backends for the virtio-blk device (virtio 1.2 §5.2 "Block Device"): where the bytes
//! of a block device live, and how a device worker moves them to and from guest memory.
//!
//! - [`Storage`]: the synchronous interface every backend implements (read, write, flush,
//!   discard, write zeroes, and what a device advertises: capacity, read-only, serial).
//! - [`RamDisk`]: a zeroed in-memory disk. [`FileDisk`]: a raw image file or block device.
//! - [`IoQueue`]: a per-virtqueue submission context with up to `depth` requests in flight,
//!   backed by `io_uring` where the kernel allows it and by the synchronous [`Storage`] calls
//!   otherwise (same interface, same results).
//!
//! Data moves straight between the backend and guest memory ([`SharedSlice`]s): `preadv` /
//! `pwritev` / `IORING_OP_READV` are given the guest buffers' addresses, with no bounce copy.
//! Every request's `offset + len` is checked against the capacity (overflow included) before
//! anything is touched.
//!
//! The one module with `unsafe` here is `sys` (the system calls on raw guest pointers and the
//! `io_uring` rings); each block carries a `// SAFETY:` comment.

mod check;
mod error;
mod file;
mod queue;
mod ram;
#[allow(unsafe_code)]
mod sys;

use std::fmt;
use std::os::fd::BorrowedFd;

use vireo_memory::SharedSlice;

pub use error::{Operation, StorageError};
pub use file::{CacheMode, FileDisk, FileOptions};
pub use queue::{ActiveBackend, Completion, IoBackend, IoQueue, IoRequest, QueueOptions, Wait};
pub use ram::RamDisk;

/// Size of a virtio-blk sector (virtio 1.2 §5.2.4: `capacity` counts 512-byte sectors). Backend
/// capacities are whole sectors.
pub const SECTOR_SIZE: u64 = 512;

/// Length of the serial a device returns for `VIRTIO_BLK_T_GET_ID` (virtio 1.2 §5.2.6).
pub const DEVICE_ID_LEN: usize = 20;

/// Whether a backend accepts writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Reads and writes (the file is opened `O_RDWR`).
    #[default]
    ReadWrite,
    /// Reads only (the file is opened `O_RDONLY`; the device offers `VIRTIO_BLK_F_RO`).
    ReadOnly,
}

/// What a write-zeroes request may do with the range (virtio 1.2 §5.2.6:
/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroesMode {
    /// The range must stay allocated (`FALLOC_FL_ZERO_RANGE`, or writing zeroes).
    KeepAllocated,
    /// The range may be deallocated, as by a discard, as long as it reads back as zeroes
    /// (`FALLOC_FL_PUNCH_HOLE`).
    MayUnmap,
}

impl ZeroesMode {
    /// The mode a write-zeroes request's `flags` field asks for (bit 0 is `UNMAP`).
    pub fn from_flags(flags: u32) -> Self {
        if flags & 1 != 0 {
            ZeroesMode::MayUnmap
        } else {
            ZeroesMode::KeepAllocated
        }
    }
}

/// The data of a block device.
///
/// Offsets and lengths are in bytes. Every method refuses a range that overflows or ends beyond
/// [`Storage::capacity`] with [`StorageError::Overflow`] / [`StorageError::OutOfRange`] before
/// touching anything, and writing methods refuse with [`StorageError::ReadOnly`] on a read-only
/// backend. Short transfers are retried until complete, and `EINTR` is retried.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Size of the device in bytes (a multiple of [`SECTOR_SIZE`]).
    fn capacity(&self) -> u64;

    /// True when the device refuses writes (it then offers `VIRTIO_BLK_F_RO`).
    fn read_only(&self) -> bool;

    /// The serial returned for `VIRTIO_BLK_T_GET_ID`: up to 20 bytes, zero-padded.
    fn device_id(&self) -> [u8; DEVICE_ID_LEN];

    /// Fills `bufs`, in order, with the bytes starting at `offset` (a scatter read).
    fn read_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError>;

    /// Writes the bytes of `bufs`, in order, starting at `offset` (a gather write).
    fn write_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError>;

    /// Makes every completed write durable (`VIRTIO_BLK_T_FLUSH`).
    fn flush(&self) -> Result<(), StorageError>;

    /// Tells the backend that `len` bytes at `offset` are no longer needed
    /// (`VIRTIO_BLK_T_DISCARD`). Both backends here then read the range back as zeroes, except
    /// a file on a file system that cannot punch holes, where discard does nothing (it is
    /// advisory, virtio 1.2 §5.2.6.2).
    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError>;

    /// Makes `len` bytes at `offset` read back as zeroes (`VIRTIO_BLK_T_WRITE_ZEROES`).
    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroesMode) -> Result<(), StorageError>;

    /// The file descriptor the `io_uring` path submits to (reads and writes at the same offsets
    /// as [`Storage::read_at`] / [`Storage::write_at`]), or `None` for a backend that must be
    /// driven through the synchronous calls.
    fn async_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Alignment in bytes that offsets, lengths and buffer addresses must have (1 unless the
    /// backend does direct I/O).
    fn alignment(&self) -> u64 {
        1
    }
}

/// A `VIRTIO_BLK_T_GET_ID` serial from a string: its first 20 bytes, zero-padded (the spec
/// leaves a 20-byte serial unterminated).
pub fn device_id_from(serial: &str) -> [u8; DEVICE_ID_LEN] {
    let mut id = [0u8; DEVICE_ID_LEN];
    for (dst, src) in id.iter_mut().zip(serial.bytes()) {
        *dst = src;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_is_truncated_and_padded() {
        assert_eq!(&device_id_from("abc")[..4], b"abc\0");
        assert_eq!(device_id_from("abc")[3..], [0u8; 17]);
        assert_eq!(
            &device_id_from("0123456789abcdefghijKLMN"),
            b"0123456789abcdefghij"
        );
    }

    #[test]
    fn zeroes_mode_follows_the_unmap_flag() {
        assert_eq!(ZeroesMode::from_flags(0), ZeroesMode::KeepAllocated);
        assert_eq!(ZeroesMode::from_flags(1), ZeroesMode::MayUnmap);
        assert_eq!(ZeroesMode::from_flags(2), ZeroesMode::KeepAllocated);
    }
}
