//! A raw image file (or block device) as a virtio-blk backend (`vireo blk --image FILE`).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::FallocateFlags;
use rustix::io::Errno;
use vireo_memory::SharedSlice;

use super::check::{self, Direction};
use super::sys;
use super::{device_id_from, Access, Operation, Storage, StorageError, ZeroesMode};
use super::{DEVICE_ID_LEN, SECTOR_SIZE};

/// Whether file I/O goes through the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Through the page cache (the default; `flush` makes writes durable).
    #[default]
    PageCache,
    /// `O_DIRECT`: offsets, lengths and guest buffer addresses must be multiples of
    /// `alignment` (the device's logical block size, typically 512 or 4096), or the request is
    /// refused with [`StorageError::Misaligned`].
    Direct {
        /// Required alignment in bytes.
        alignment: u64,
    },
}

/// How a [`FileDisk`] is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileOptions {
    /// Read-write (`O_RDWR`) or read-only (`O_RDONLY`).
    pub access: Access,
    /// Page cache or `O_DIRECT`.
    pub cache: CacheMode,
    /// The `VIRTIO_BLK_T_GET_ID` serial; by default `vireo-<device>-<inode>` in hex.
    pub device_id: Option<[u8; DEVICE_ID_LEN]>,
}

/// A raw image: byte `n` of the device is byte `n` of the file. Its capacity is the file's size
/// when opened, rounded down to whole sectors; nothing beyond it is ever read or written.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    capacity: u64,
    access: Access,
    alignment: u64,
    id: [u8; DEVICE_ID_LEN],
}

impl FileDisk {
    /// Opens the image at `path`: a regular file or a block device (anything else is refused
    /// with `EINVAL`).
    pub fn open(path: impl AsRef<Path>, options: &FileOptions) -> Result<Self, StorageError> {
        let open_err = |e: std::io::Error| StorageError::io(Operation::Open, &e);
        let mut flags = libc::O_CLOEXEC;
        if let CacheMode::Direct { .. } = options.cache {
            flags |= libc::O_DIRECT;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(options.access == Access::ReadWrite)
            .custom_flags(flags)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !(meta.file_type().is_file() || meta.file_type().is_block_device()) {
            return Err(StorageError::Io {
                op: Operation::Open,
                errno: libc::EINVAL,
            });
        }
        // Seeking to the end also measures block devices, whose metadata length is 0.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        let id = options
            .device_id
            .unwrap_or_else(|| device_id_from(&format!("vireo-{:x}-{:x}", meta.dev(), meta.ino())));
        let alignment = match options.cache {
            CacheMode::PageCache => 1,
            CacheMode::Direct { alignment } => alignment.max(1),
        };
        Ok(FileDisk {
            file,
            capacity: size - size % SECTOR_SIZE,
            access: options.access,
            alignment,
            id,
        })
    }

    /// `fallocate` on an in-range request, retrying `EINTR`.
    fn fallocate(&self, flags: FallocateFlags, offset: u64, len: u64) -> Result<(), Errno> {
        loop {
            match rustix::fs::fallocate(&self.file, flags | FallocateFlags::KEEP_SIZE, offset, len)
            {
                Err(Errno::INTR) => continue,
                r => return r,
            }
        }
    }

    /// Writes `len` zeroes at `offset` (for file systems that cannot zero a range).
    fn write_zero_bytes(&self, mut offset: u64, len: u64) -> Result<(), StorageError> {
        let end = offset.saturating_add(len);
        while offset < end {
            let chunk =
                usize::try_from(end - offset).map_or(ZEROES.0.len(), |n| n.min(ZEROES.0.len()));
            let zeroes = ZEROES.0.get(..chunk).unwrap_or(&[]);
            match rustix::io::pwrite(&self.file, zeroes, offset) {
                Ok(0) => {
                    return Err(StorageError::Io {
                        op: Operation::WriteZeroes,
                        errno: libc::EIO,
                    })
                }
                Ok(n) => offset += n as u64,
                Err(Errno::INTR) => {}
                Err(e) => return Err(StorageError::errno(Operation::WriteZeroes, e)),
            }
        }
        Ok(())
    }
}

/// A page-aligned source of zeroes (aligned for `O_DIRECT`).
#[repr(align(4096))]
struct Zeroes([u8; 64 * 1024]);
static ZEROES: Zeroes = Zeroes([0; 64 * 1024]);

/// `fallocate` errors meaning "this file system cannot do that" (rather than a failure).
pub(crate) fn fallocate_unsupported(errno: i32) -> bool {
    errno == libc::EOPNOTSUPP || errno == libc::ENOSYS
}

impl Storage for FileDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    fn device_id(&self) -> [u8; DEVICE_ID_LEN] {
        self.id
    }

    fn read_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError> {
        check::transfer(self, offset, bufs, Direction::Read)?;
        sys::transfer(self.file.as_fd(), offset, bufs, Direction::Read)
    }

    fn write_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError> {
        check::transfer(self, offset, bufs, Direction::Write)?;
        sys::transfer(self.file.as_fd(), offset, bufs, Direction::Write)
    }

    fn flush(&self) -> Result<(), StorageError> {
        loop {
            match rustix::fs::fdatasync(&self.file) {
                Ok(()) => return Ok(()),
                Err(Errno::INTR) => {}
                Err(e) => return Err(StorageError::errno(Operation::Flush, e)),
            }
        }
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        check::modify(self, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        match self.fallocate(FallocateFlags::PUNCH_HOLE, offset, len) {
            Ok(()) => Ok(()),
            // Discard is advisory (virtio 1.2 §5.2.6.2): nothing to do where holes cannot be made.
            Err(e) if fallocate_unsupported(e.raw_os_error()) => Ok(()),
            Err(e) => Err(StorageError::errno(Operation::Discard, e)),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroesMode) -> Result<(), StorageError> {
        check::modify(self, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let flags = match mode {
            ZeroesMode::MayUnmap => FallocateFlags::PUNCH_HOLE,
            ZeroesMode::KeepAllocated => FallocateFlags::ZERO_RANGE,
        };
        match self.fallocate(flags, offset, len) {
            Ok(()) => Ok(()),
            Err(e) if fallocate_unsupported(e.raw_os_error()) => self.write_zero_bytes(offset, len),
            Err(e) => Err(StorageError::errno(Operation::WriteZeroes, e)),
        }
    }

    fn async_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn alignment(&self) -> u64 {
        self.alignment
    }
}
