//! The front-end's side of shared memory: memfd regions the back-end maps (`SET_MEM_TABLE`,
//! QEMU `docs/interop/vhost-user.rst`, "Memory regions description") and a buffer pool inside
//! one, handing out guest-addressed buffers once, at setup, so that I/O never allocates.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use vireo_memory::mmap::MmapRegion;
use vireo_memory::{MemoryError, SharedArea, SharedSlice};
use vireo_queue::driver::BufferSegment;

use super::FrontendError;
use crate::message::MemoryRegion;

/// Page size the regions are rounded up to.
pub const PAGE_SIZE: usize = 4096;

/// Rounds `n` up to a multiple of `align` (a power of two), `None` on overflow.
pub(crate) fn align_up(n: usize, align: usize) -> Option<usize> {
    let mask = align.checked_sub(1)?;
    n.checked_add(mask).map(|v| v & !mask)
}

/// A memfd region mapped here and shared with the back-end, which sees its first byte at
/// `guest_addr` (descriptors carry guest addresses; ring addresses in `SET_VRING_ADDR` are
/// our user addresses: "Memory access").
#[derive(Debug)]
pub struct SharedRegion {
    fd: OwnedFd,
    area: SharedArea,
    guest_addr: u64,
}

impl SharedRegion {
    /// A zeroed region of at least `len` bytes (rounded up to [`PAGE_SIZE`]) at `guest_addr`.
    pub fn new(name: &str, len: usize, guest_addr: u64) -> Result<Self, FrontendError> {
        let len = align_up(len.max(1), PAGE_SIZE).ok_or(MemoryError::EmptyRegion)?;
        let len64 = len as u64;
        guest_addr.checked_add(len64).ok_or(MemoryError::Overflow {
            addr: guest_addr,
            len: len64,
        })?;
        let (fd, map) = MmapRegion::memfd(name, len64)?;
        Ok(SharedRegion {
            fd,
            area: map.into_area()?,
            guest_addr,
        })
    }

    /// The mapped bytes.
    pub fn area(&self) -> &SharedArea {
        &self.area
    }

    /// Guest address of the first byte.
    pub fn guest_addr(&self) -> u64 {
        self.guest_addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.area.len()
    }

    /// Never true (a region has at least one page).
    pub fn is_empty(&self) -> bool {
        self.area.is_empty()
    }

    /// Our (user) address of the first byte.
    pub fn user_addr(&self) -> u64 {
        self.area.slice().as_ptr() as u64
    }

    /// The memfd, to send with `SET_MEM_TABLE`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The region's entry in a memory table.
    pub fn region(&self) -> MemoryRegion {
        MemoryRegion {
            guest_addr: self.guest_addr,
            size: self.len() as u64,
            user_addr: self.user_addr(),
            mmap_offset: 0,
        }
    }

    /// Our address of guest address `guest`, when it lies inside the region.
    pub fn to_user(&self, guest: u64) -> Option<u64> {
        let offset = guest.checked_sub(self.guest_addr)?;
        (offset < self.len() as u64).then(|| self.user_addr() + offset)
    }

    /// `len` bytes at byte `offset` of the region, with their guest address.
    pub fn buffer(&self, offset: usize, len: usize) -> Result<GuestBuffer, FrontendError> {
        Ok(GuestBuffer {
            area: self.area.sub_area(offset, len)?,
            guest_addr: self.guest_addr + offset as u64,
        })
    }
}

/// Bytes of shared memory with the guest address the device sees them at.
#[derive(Debug, Clone)]
pub struct GuestBuffer {
    area: SharedArea,
    guest_addr: u64,
}

impl GuestBuffer {
    /// The bytes, to fill before or read after the device uses them.
    pub fn slice(&self) -> SharedSlice<'_> {
        self.area.slice()
    }

    /// The owned view (keeps the mapping alive).
    pub fn area(&self) -> &SharedArea {
        &self.area
    }

    /// Guest address of the first byte.
    pub fn guest_addr(&self) -> u64 {
        self.guest_addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.area.len()
    }

    /// True when the buffer has no bytes (never, for a pool buffer).
    pub fn is_empty(&self) -> bool {
        self.area.is_empty()
    }

    /// A descriptor segment for `len` bytes at `offset` of the buffer (checked to lie inside
    /// it, and `len` not zero: virtio 1.2 §2.7.5).
    pub fn segment(&self, offset: usize, len: usize) -> Result<BufferSegment, FrontendError> {
        let out_of_bounds = MemoryError::OutOfBounds {
            offset,
            len,
            size: self.len(),
        };
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len());
        let len32 = u32::try_from(len).ok().filter(|&l| l != 0 && fits);
        let len32 = len32.ok_or(out_of_bounds)?;
        Ok(BufferSegment::new(self.guest_addr + offset as u64, len32))
    }

    /// The whole buffer as one segment.
    pub fn whole(&self) -> Result<BufferSegment, FrontendError> {
        self.segment(0, self.len())
    }
}

/// A bump allocator over a part of a [`SharedRegion`]: buffers are carved out once (at setup)
/// and reused by the caller; nothing is ever freed back, so nothing allocates per I/O.
#[derive(Debug)]
pub struct BufferPool {
    area: SharedArea,
    guest_addr: u64,
    next: usize,
}

impl BufferPool {
    /// A pool over `len` bytes at `offset` of `region`.
    pub fn new(region: &SharedRegion, offset: usize, len: usize) -> Result<Self, FrontendError> {
        let area = region.area().sub_area(offset, len)?;
        Ok(BufferPool {
            area,
            guest_addr: region.guest_addr() + offset as u64,
            next: 0,
        })
    }

    /// A buffer of `len` bytes (not zero) aligned to `align` (a power of two), or
    /// [`FrontendError::PoolExhausted`].
    pub fn alloc(&mut self, len: usize, align: usize) -> Result<GuestBuffer, FrontendError> {
        let left = self.remaining();
        let exhausted = FrontendError::PoolExhausted { len, left };
        if len == 0 || !align.is_power_of_two() {
            return Err(exhausted);
        }
        // Align the guest address (the pool's start is page aligned, so offsets align alike).
        let start = align_up(self.next, align).ok_or(exhausted)?;
        let end = start.checked_add(len).ok_or(exhausted)?;
        if end > self.area.len() {
            return Err(exhausted);
        }
        let area = self.area.sub_area(start, len)?;
        self.next = end;
        Ok(GuestBuffer {
            area,
            guest_addr: self.guest_addr + start as u64,
        })
    }

    /// Bytes not yet handed out.
    pub fn remaining(&self) -> usize {
        self.area.len().saturating_sub(self.next)
    }

    /// Total bytes of the pool.
    pub fn capacity(&self) -> usize {
        self.area.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pool(len: usize) -> (SharedRegion, BufferPool) {
        let region = SharedRegion::new("vireo-pool-test", PAGE_SIZE + len, 0x10_0000).unwrap();
        let pool = BufferPool::new(&region, PAGE_SIZE, len).unwrap();
        (region, pool)
    }

    #[test]
    fn buffers_are_aligned_disjoint_and_guest_addressed() {
        let (region, mut pool) = pool(PAGE_SIZE);
        let a = pool.alloc(3, 1).unwrap();
        let b = pool.alloc(16, 16).unwrap();
        let c = pool.alloc(512, 512).unwrap();
        assert_eq!(a.guest_addr(), 0x10_0000 + PAGE_SIZE as u64);
        assert_eq!(b.guest_addr(), a.guest_addr() + 16);
        assert_eq!(c.guest_addr(), a.guest_addr() + 512);
        assert_eq!(pool.remaining(), PAGE_SIZE - 1024);
        // The bytes behind a guest address are the region's bytes at the same offset.
        c.slice().write(0, b"vireo").unwrap();
        let mut back = [0u8; 5];
        let offset = (c.guest_addr() - region.guest_addr()) as usize;
        region.area().slice().read(offset, &mut back).unwrap();
        assert_eq!(&back, b"vireo");
        assert_eq!(
            region.to_user(c.guest_addr()),
            Some(region.user_addr() + offset as u64)
        );
        assert_eq!(
            region.to_user(region.guest_addr() + region.len() as u64),
            None
        );
        assert_eq!(region.to_user(region.guest_addr() - 1), None);
    }

    #[test]
    fn exhaustion_zero_length_and_bad_alignment_are_errors() {
        let (_region, mut pool) = pool(PAGE_SIZE);
        assert!(pool.alloc(0, 1).is_err());
        assert!(pool.alloc(8, 3).is_err());
        pool.alloc(PAGE_SIZE - 8, 1).unwrap();
        assert_eq!(
            pool.alloc(16, 1).unwrap_err(),
            FrontendError::PoolExhausted { len: 16, left: 8 }
        );
        assert_eq!(
            pool.alloc(1, usize::MAX / 2 + 1).unwrap_err(),
            FrontendError::PoolExhausted { len: 1, left: 8 }
        );
        pool.alloc(8, 8).unwrap();
        assert_eq!(pool.remaining(), 0);
    }

    #[test]
    fn segments_stay_inside_their_buffer() {
        let (_region, mut pool) = pool(PAGE_SIZE);
        let b = pool.alloc(100, 1).unwrap();
        assert_eq!(
            b.segment(10, 90).unwrap(),
            BufferSegment::new(b.guest_addr() + 10, 90)
        );
        assert_eq!(b.whole().unwrap().len, 100);
        assert!(b.segment(10, 91).is_err());
        assert!(b.segment(0, 0).is_err());
        assert!(b.segment(usize::MAX, 2).is_err());
    }
}
