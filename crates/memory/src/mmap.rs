//! Memory mapped from file descriptors: guest memory that a vhost-user frontend shares with a
//! backend (`SET_MEM_TABLE`, `ADD_MEM_REG`), and memfd regions that our own frontend shares.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

use crate::{MemoryError, SharedArea, SharedBacking};

/// A shared (`MAP_SHARED`) read-write mapping of `len` bytes of a file descriptor at `offset`.
#[derive(Debug)]
pub struct MmapRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value; its bytes are only reached through SharedSlice.
unsafe impl Send for MmapRegion {}
// SAFETY: as for Send above.
unsafe impl Sync for MmapRegion {}

impl MmapRegion {
    /// Maps `len` bytes of `fd` starting at file offset `offset`, shared and read-write.
    ///
    /// Fails on a zero length, an offset that is not page aligned or does not fit `off_t`, or any
    /// error from `mmap` (for example a file smaller than `offset + len` is caught later, as
    /// SIGBUS, unless the caller checks the file size first: [`MmapRegion::map_checked`] does).
    pub fn map(fd: impl AsFd, offset: u64, len: u64) -> Result<Self, MemoryError> {
        let size = usize::try_from(len).map_err(|_| MemoryError::MapFailed {
            errno: libc_einval(),
        })?;
        if size == 0 {
            return Err(MemoryError::EmptyRegion);
        }
        offset
            .checked_add(len)
            .ok_or(MemoryError::Overflow { addr: offset, len })?;
        if i64::try_from(offset).is_err() {
            return Err(MemoryError::MapFailed {
                errno: libc_einval(),
            });
        }
        // SAFETY: a fresh mapping at an address the kernel chooses (null hint) cannot alias any
        // existing Rust object; the result is owned by the returned value and unmapped on drop.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                offset,
            )
        }
        .map_err(|e| MemoryError::MapFailed {
            errno: e.raw_os_error(),
        })?;
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(MemoryError::MapFailed { errno: 0 })?;
        Ok(MmapRegion { ptr, len: size })
    }

    /// Like [`MmapRegion::map`], but first checks that a regular file is at least `offset + len`
    /// bytes long, so that a short file is an error rather than a SIGBUS on first access.
    pub fn map_checked(fd: impl AsFd, offset: u64, len: u64) -> Result<Self, MemoryError> {
        let end = offset
            .checked_add(len)
            .ok_or(MemoryError::Overflow { addr: offset, len })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| MemoryError::MapFailed {
            errno: e.raw_os_error(),
        })?;
        let is_regular =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        if is_regular && (st.st_size as u64) < end {
            return Err(MemoryError::OutOfRange { addr: offset, len });
        }
        Self::map(fd, offset, len)
    }

    /// Creates an anonymous memfd of `len` bytes, maps it, and returns both (the fd is what a
    /// vhost-user frontend sends to the backend).
    pub fn memfd(name: &str, len: u64) -> Result<(OwnedFd, Self), MemoryError> {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC).map_err(|e| {
            MemoryError::MapFailed {
                errno: e.raw_os_error(),
            }
        })?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| MemoryError::MapFailed {
            errno: e.raw_os_error(),
        })?;
        let region = Self::map(&fd, 0, len)?;
        Ok((fd, region))
    }

    /// Wraps the mapping as a [`SharedArea`].
    pub fn into_area(self) -> Result<SharedArea, MemoryError> {
        SharedArea::new(Arc::new(self))
    }
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe exactly the mapping made in `map`, unmapped once, and no
        // reference into it can outlive self (SharedArea keeps self alive through an Arc).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is valid for len bytes until drop, never moves, and no references to its
// bytes are handed out.
unsafe impl SharedBacking for MmapRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn memfd_mappings_share_bytes() {
        let (fd, a) = MmapRegion::memfd("vireo-test", 8192).unwrap();
        let b = MmapRegion::map(&fd, 4096, 4096).unwrap();
        let (a, b) = (a.into_area().unwrap(), b.into_area().unwrap());
        a.slice()
            .store_u32(4096, 0xdead_beef, Ordering::Release)
            .unwrap();
        assert_eq!(
            b.slice().load_u32(0, Ordering::Acquire).unwrap(),
            0xdead_beef
        );
    }

    #[test]
    fn short_file_and_bad_offsets_are_refused() {
        let (fd, _a) = MmapRegion::memfd("vireo-test", 4096).unwrap();
        assert!(MmapRegion::map_checked(&fd, 0, 8192).is_err());
        assert!(MmapRegion::map(&fd, 100, 4096).is_err()); // not page aligned: EINVAL
        assert!(MmapRegion::map(&fd, u64::MAX - 1, 4096).is_err());
        assert_eq!(
            MmapRegion::map(&fd, 0, 0).unwrap_err(),
            MemoryError::EmptyRegion
        );
    }
}
