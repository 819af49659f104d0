//! Shared bytes: the one place where Vireo touches memory that another party may write at any
//! moment (the other side of a virtqueue, in this process or another).
//!
//! Rust references (`&[u8]`, `&mut [u8]`) to such memory would be unsound, because the compiler
//! may assume their contents do not change. So shared memory is only ever reached through
//! [`SharedSlice`]: fields are read and written with atomic operations (virtio's ring fields are
//! naturally aligned, and the ring protocol needs acquire/release on them), and payload bytes are
//! copied in and out with bounds checks. Every method checks its offset and length and returns a
//! [`MemoryError`] instead of panicking.
//!
//! Multi-byte fields are little-endian, as virtio 1.x specifies (virtio 1.2, 1.4 "Structure
//! Size and Alignment" and 2.7/2.8 for the rings).

use alloc::sync::Arc;
use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::MemoryError;

/// Storage that can be shared with the other side of a ring.
///
/// # Safety
/// Implementors guarantee that the `len()` bytes starting at `as_ptr()` are valid for reads and
/// writes, properly allocated, and stay at the same address for as long as the value lives; that
/// `as_ptr()` and `len()` always return the same values; and that no Rust reference to those bytes
/// exists (they are accessed only through [`SharedSlice`], because another thread or process may
/// write them at any time).
pub unsafe trait SharedBacking: Send + Sync {
    /// Start of the shared bytes.
    fn as_ptr(&self) -> *mut u8;
    /// Number of shared bytes.
    fn len(&self) -> usize;
    /// True when the backing has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A bounds-checked view of shared bytes, borrowed from whatever keeps them alive.
///
/// `Copy` and two words wide: translating a guest address yields one of these, and the hot path
/// passes it by value.
#[derive(Clone, Copy)]
pub struct SharedSlice<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _life: PhantomData<&'a [AtomicU8]>,
}

// SAFETY: a SharedSlice is a view of memory that is designed for concurrent access: every access
// goes through atomics or copies that tolerate concurrent writers (see the module docs), exactly
// like `&[AtomicU8]`, which is Send and Sync.
unsafe impl Send for SharedSlice<'_> {}
// SAFETY: as for Send above.
unsafe impl Sync for SharedSlice<'_> {}

impl fmt::Debug for SharedSlice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSlice")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

macro_rules! field_access {
    ($load:ident, $store:ident, $t:ty, $atomic:ty) => {
        /// Atomically loads a little-endian field at `offset` (which must be aligned to its size).
        #[inline]
        pub fn $load(&self, offset: usize, order: Ordering) -> Result<$t, MemoryError> {
            let p = self.field_ptr(offset, core::mem::size_of::<$t>())?;
            // SAFETY: field_ptr checked that [offset, offset+size) is inside the slice and that
            // the address is aligned to size_of::<$t>() (== align_of::<$atomic>()); the bytes are
            // valid for the slice's lifetime 'a and are only accessed atomically or by copies.
            let a = unsafe { <$atomic>::from_ptr(p.cast()) };
            Ok(<$t>::from_le(a.load(order)))
        }

        /// Atomically stores a little-endian field at `offset` (which must be aligned to its size).
        #[inline]
        pub fn $store(&self, offset: usize, value: $t, order: Ordering) -> Result<(), MemoryError> {
            let p = self.field_ptr(offset, core::mem::size_of::<$t>())?;
            // SAFETY: as in the load above.
            let a = unsafe { <$atomic>::from_ptr(p.cast()) };
            a.store(value.to_le(), order);
            Ok(())
        }
    };
}

impl<'a> SharedSlice<'a> {
    /// Makes a view of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// The bytes must be valid for reads and writes for `'a`, and must never be reached through a
    /// Rust reference while the view exists (see [`SharedBacking`]).
    pub unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        SharedSlice {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Number of bytes in the view.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the view has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw start pointer, for syscalls that read or write the bytes directly (`preadv`,
    /// `io_uring`). Using it is `unsafe` in the caller's named module.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    fn range_ptr(&self, offset: usize, len: usize) -> Result<*mut u8, MemoryError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {
                // SAFETY: offset <= end <= self.len, so the result is inside (or one past the end
                // of) the allocation the view covers.
                Ok(unsafe { self.ptr.as_ptr().add(offset) })
            }
            _ => Err(MemoryError::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    #[inline]
    fn field_ptr(&self, offset: usize, size: usize) -> Result<*mut u8, MemoryError> {
        let p = self.range_ptr(offset, size)?;
        if (p as usize) % size != 0 {
            return Err(MemoryError::Misaligned {
                offset,
                align: size,
            });
        }
        Ok(p)
    }

    /// A view of `len` bytes starting at `offset`.
    #[inline]
    pub fn subslice(&self, offset: usize, len: usize) -> Result<SharedSlice<'a>, MemoryError> {
        let p = self.range_ptr(offset, len)?;
        // SAFETY: range_ptr checked the range is inside this view, which is valid for 'a; the
        // pointer is derived from a NonNull and so is non-null.
        Ok(unsafe { SharedSlice::from_raw_parts(NonNull::new_unchecked(p), len) })
    }

    field_access!(load_u8, store_u8, u8, AtomicU8);
    field_access!(load_u16, store_u16, u16, AtomicU16);
    field_access!(load_u32, store_u32, u32, AtomicU32);
    field_access!(load_u64, store_u64, u64, AtomicU64);

    /// Copies `dst.len()` bytes starting at `offset` out of shared memory.
    ///
    /// The other side may write concurrently; the copy then sees some mix of old and new bytes,
    /// which the caller must treat as untrusted input anyway.
    #[inline]
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemoryError> {
        let p = self.range_ptr(offset, dst.len())?;
        // SAFETY: the source range is inside the view (checked above); `dst` is a distinct,
        // exclusively borrowed Rust buffer, so the ranges cannot overlap. Shared memory is outside
        // the Rust abstract machine's knowledge of `dst`; a concurrent writer can only change
        // which bytes are copied, and u8 has no invalid values.
        unsafe { core::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into shared memory at `offset`.
    #[inline]
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), MemoryError> {
        let p = self.range_ptr(offset, src.len())?;
        // SAFETY: the destination range is inside the view (checked above) and valid for writes;
        // `src` is a Rust buffer, which cannot alias shared memory (no references to it exist).
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    #[inline]
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemoryError> {
        let p = self.range_ptr(offset, len)?;
        // SAFETY: the range is inside the view (checked above) and valid for writes.
        unsafe { core::ptr::write_bytes(p, byte, len) };
        Ok(())
    }

    /// Copies `len` bytes from `self[offset..]` to `dst[dst_offset..]` (the ranges may overlap).
    #[inline]
    pub fn copy_to(
        &self,
        offset: usize,
        dst: &SharedSlice<'_>,
        dst_offset: usize,
        len: usize,
    ) -> Result<(), MemoryError> {
        let s = self.range_ptr(offset, len)?;
        let d = dst.range_ptr(dst_offset, len)?;
        // SAFETY: both ranges are inside their views (checked above); `copy` allows overlap.
        unsafe { core::ptr::copy(s, d, len) };
        Ok(())
    }
}

/// An owned view of shared bytes: keeps its backing alive, so a queue can hold its rings.
#[derive(Clone)]
pub struct SharedArea {
    ptr: NonNull<u8>,
    len: usize,
    backing: Arc<dyn SharedBacking>,
}

// SAFETY: SharedArea is a SharedSlice (Send + Sync, see above) plus an Arc to a backing that is
// Send + Sync by the SharedBacking bound.
unsafe impl Send for SharedArea {}
// SAFETY: as for Send above.
unsafe impl Sync for SharedArea {}

impl fmt::Debug for SharedArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedArea")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl SharedArea {
    /// The whole of `backing`. Fails with [`MemoryError::EmptyRegion`] when it has no bytes.
    pub fn new(backing: Arc<dyn SharedBacking>) -> Result<Self, MemoryError> {
        let len = backing.len();
        let ptr = NonNull::new(backing.as_ptr()).ok_or(MemoryError::EmptyRegion)?;
        if len == 0 {
            return Err(MemoryError::EmptyRegion);
        }
        Ok(SharedArea { ptr, len, backing })
    }

    /// Borrowed view of the whole area.
    #[inline]
    pub fn slice(&self) -> SharedSlice<'_> {
        // SAFETY: ptr..ptr+len lies inside the backing (established in `new`/`sub_area`), which
        // `self` keeps alive for the borrow, and SharedBacking promises no references exist.
        unsafe { SharedSlice::from_raw_parts(self.ptr, self.len) }
    }

    /// Number of bytes in the area.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the area has no bytes (never, for an area made by [`SharedArea::new`]).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// An owned view of `len` bytes at `offset`, sharing the backing.
    pub fn sub_area(&self, offset: usize, len: usize) -> Result<SharedArea, MemoryError> {
        let sub = self.slice().subslice(offset, len)?;
        Ok(SharedArea {
            // SAFETY-free: a SharedSlice's pointer is never null.
            ptr: NonNull::new(sub.as_ptr()).ok_or(MemoryError::EmptyRegion)?,
            len,
            backing: Arc::clone(&self.backing),
        })
    }
}

/// A zeroed, page-aligned heap allocation usable as shared memory between threads of this process
/// (the loopback, tests and benchmarks).
pub struct OwnedRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: OwnedRegion owns its allocation exclusively; the bytes are only reached via SharedSlice.
unsafe impl Send for OwnedRegion {}
// SAFETY: as for Send above.
unsafe impl Sync for OwnedRegion {}

impl fmt::Debug for OwnedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRegion")
            .field("len", &self.layout.size())
            .finish()
    }
}

impl OwnedRegion {
    /// Allocates `len` zeroed bytes aligned to 4096.
    pub fn new(len: usize) -> Result<Self, MemoryError> {
        if len == 0 {
            return Err(MemoryError::EmptyRegion);
        }
        let layout =
            Layout::from_size_align(len, 4096).map_err(|_| MemoryError::MapFailed { errno: 0 })?;
        // SAFETY: layout has a non-zero size (checked above).
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or(MemoryError::MapFailed { errno: 0 })?;
        Ok(OwnedRegion { ptr, layout })
    }

    /// Allocates a region and wraps it as a [`SharedArea`].
    pub fn new_area(len: usize) -> Result<SharedArea, MemoryError> {
        SharedArea::new(Arc::new(Self::new(len)?))
    }
}

impl Drop for OwnedRegion {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: the allocation is valid for layout.size() bytes, never moves, lives until drop, and the
// type hands out no references to it.
unsafe impl SharedBacking for OwnedRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_little_endian() {
        let area = OwnedRegion::new_area(64).unwrap();
        let s = area.slice();
        s.store_u32(4, 0x1122_3344, Ordering::Relaxed).unwrap();
        let mut raw = [0u8; 4];
        s.read(4, &mut raw).unwrap();
        assert_eq!(raw, [0x44, 0x33, 0x22, 0x11]);
        assert_eq!(s.load_u16(4, Ordering::Acquire).unwrap(), 0x3344);
        assert_eq!(
            s.load_u64(0, Ordering::Relaxed).unwrap(),
            0x1122_3344_0000_0000
        );
    }

    #[test]
    fn out_of_bounds_and_misaligned_are_errors() {
        let area = OwnedRegion::new_area(16).unwrap();
        let s = area.slice();
        assert!(matches!(
            s.load_u16(15, Ordering::Relaxed),
            Err(MemoryError::OutOfBounds { .. })
        ));
        assert!(matches!(
            s.load_u16(1, Ordering::Relaxed),
            Err(MemoryError::Misaligned { .. })
        ));
        assert!(matches!(
            s.read(8, &mut [0; 9]),
            Err(MemoryError::OutOfBounds { .. })
        ));
        assert!(matches!(
            s.subslice(usize::MAX, 2),
            Err(MemoryError::OutOfBounds { .. })
        ));
        assert!(s.write(8, &[1; 8]).is_ok());
        assert!(matches!(
            s.fill(17, 0, 0),
            Err(MemoryError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn subslice_and_sub_area_stay_inside() {
        let area = OwnedRegion::new_area(4096).unwrap();
        let sub = area.sub_area(1024, 16).unwrap();
        sub.slice().store_u16(0, 7, Ordering::Relaxed).unwrap();
        assert_eq!(area.slice().load_u16(1024, Ordering::Relaxed).unwrap(), 7);
        assert!(sub.slice().load_u16(16, Ordering::Relaxed).is_err());
        assert!(area.sub_area(4090, 7).is_err());
        let a = sub.slice();
        a.copy_to(0, &area.slice(), 0, 2).unwrap();
        assert_eq!(area.slice().load_u16(0, Ordering::Relaxed).unwrap(), 7);
    }

    #[test]
    fn empty_region_is_refused() {
        assert_eq!(OwnedRegion::new(0).unwrap_err(), MemoryError::EmptyRegion);
    }
}
