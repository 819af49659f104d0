//! Adapter: rust-vmm `vm-memory` guest memory ([`vm_memory::GuestMemoryMmap`]) as Vireo
//! [`GuestMemory`], so the device side of Vireo's queues runs inside VMMs built on rust-vmm
//! (Firecracker, Cloud Hypervisor, crosvm-style stacks) without copying their memory model.
//!
//! Only the mmap backend is supported: its regions are mapped once, at fixed host addresses, for
//! as long as the `GuestMemoryMmap` lives, which is what [`SharedBacking`] requires. (The Xen
//! backend maps on demand and is not supported.)

use std::sync::Arc;

use vm_memory::bitmap::Bitmap;
use vm_memory::{Address, GuestAddress, GuestMemory as _, GuestMemoryMmap, GuestMemoryRegion};

use crate::{GuestMemory, MemoryError, SharedArea, SharedBacking, SharedSlice};

/// A `vm-memory` [`GuestMemoryMmap`] seen as Vireo [`GuestMemory`].
#[derive(Debug, Clone)]
pub struct VmMemory<B: Bitmap + 'static = ()> {
    mem: Arc<GuestMemoryMmap<B>>,
}

impl<B: Bitmap + 'static> VmMemory<B> {
    /// Wraps `mem`; the adapter keeps it alive (and so its mappings) for as long as any view exists.
    pub fn new(mem: Arc<GuestMemoryMmap<B>>) -> Self {
        VmMemory { mem }
    }

    /// The wrapped memory.
    pub fn inner(&self) -> &Arc<GuestMemoryMmap<B>> {
        &self.mem
    }

    /// Host pointer of `len` bytes at `addr`, validated to lie inside one region.
    fn host_range(&self, addr: u64, len: u64) -> Result<(*mut u8, usize), MemoryError> {
        let end = addr
            .checked_add(len)
            .ok_or(MemoryError::Overflow { addr, len })?;
        let Some(region) = self.mem.find_region(GuestAddress(addr)) else {
            return self.empty_at_end(addr, len);
        };
        let region_end = region.start_addr().raw_value().saturating_add(region.len());
        if end > region_end {
            return Err(MemoryError::CrossesRegion { addr, len });
        }
        let size = usize::try_from(len).map_err(|_| MemoryError::OutOfRange { addr, len })?;
        let host = self
            .mem
            .get_host_address(GuestAddress(addr))
            .map_err(|_| MemoryError::OutOfRange { addr, len })?;
        Ok((host, size))
    }
}

impl<B: Bitmap + 'static> VmMemory<B> {
    /// A zero-length range at the end of a region that no other region follows: accepted, as
    /// [`GuestMemory`] requires (one past the region's last byte, no bytes).
    fn empty_at_end(&self, addr: u64, len: u64) -> Result<(*mut u8, usize), MemoryError> {
        let out_of_range = MemoryError::OutOfRange { addr, len };
        let last = addr
            .checked_sub(1)
            .filter(|_| len == 0)
            .ok_or(out_of_range)?;
        let region = self
            .mem
            .find_region(GuestAddress(last))
            .ok_or(out_of_range)?;
        let end = region.start_addr().raw_value().checked_add(region.len());
        if end != Some(addr) {
            return Err(out_of_range);
        }
        let host = self
            .mem
            .get_host_address(GuestAddress(last))
            .map_err(|_| out_of_range)?;
        // One past the region's last byte: in (the end of) the same mapping, never read.
        Ok((host.wrapping_add(1), 0))
    }
}

/// A range of a `GuestMemoryMmap`, kept mapped by holding the memory.
struct VmMemoryRange<B: Bitmap + 'static> {
    _mem: Arc<GuestMemoryMmap<B>>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the range is plain mapped memory, reachable only through SharedSlice (atomics and
// copies); GuestMemoryMmap is itself Send + Sync.
unsafe impl<B: Bitmap + 'static> Send for VmMemoryRange<B> {}
// SAFETY: as for Send above.
unsafe impl<B: Bitmap + 'static> Sync for VmMemoryRange<B> {}

// SAFETY: `ptr..ptr+len` was validated by `host_range` to lie inside one mmap region of `_mem`;
// GuestMemoryMmap's regions are mapped at fixed addresses until the last Arc to the memory is
// dropped, and this value holds one.
unsafe impl<B: Bitmap + 'static> SharedBacking for VmMemoryRange<B> {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl<B: Bitmap + 'static> GuestMemory for VmMemory<B> {
    fn translate(&self, addr: u64, len: u64) -> Result<SharedSlice<'_>, MemoryError> {
        let (ptr, size) = self.host_range(addr, len)?;
        let ptr = core::ptr::NonNull::new(ptr).ok_or(MemoryError::OutOfRange { addr, len })?;
        // SAFETY: the range lies inside one region of `self.mem` (checked by host_range), which
        // stays mapped for as long as `self` is borrowed; guest memory is only reached through
        // SharedSlice. (Dirty-page bitmaps are not updated: live migration is not supported.)
        Ok(unsafe { SharedSlice::from_raw_parts(ptr, size) })
    }

    fn area(&self, addr: u64, len: u64) -> Result<SharedArea, MemoryError> {
        let (ptr, size) = self.host_range(addr, len)?;
        SharedArea::new(Arc::new(VmMemoryRange {
            _mem: Arc::clone(&self.mem),
            ptr,
            len: size,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;
    use vm_memory::Bytes;

    fn memory() -> VmMemory {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x2000), 0x1000),
        ])
        .unwrap();
        VmMemory::new(Arc::new(mem))
    }

    #[test]
    fn views_see_vm_memory_writes_and_back() {
        let m = memory();
        m.inner()
            .write_obj(0xabcd_u16, GuestAddress(0x1010))
            .unwrap();
        assert_eq!(
            m.translate(0x1010, 2)
                .unwrap()
                .load_u16(0, Ordering::Acquire)
                .unwrap(),
            0xabcd
        );
        let area = m.area(0x2000, 0x100).unwrap();
        area.slice().store_u32(8, 77, Ordering::Release).unwrap();
        assert_eq!(m.inner().read_obj::<u32>(GuestAddress(0x2008)).unwrap(), 77);
    }

    #[test]
    fn an_empty_range_at_the_end_of_the_last_region_is_accepted() {
        let m = memory();
        assert_eq!(m.translate(0x3000, 0).unwrap().len(), 0);
        assert!(matches!(
            m.translate(0x3000, 1),
            Err(MemoryError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.translate(0x3001, 0),
            Err(MemoryError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.translate(0, 0),
            Err(MemoryError::OutOfRange { .. })
        ));
    }

    proptest::proptest! {
        /// The adapter answers like `GuestMemoryMap` over the same regions (a gap, adjacent
        /// regions, the ends), for any range.
        #[test]
        fn answers_like_the_guest_memory_map(
            addr in proptest::prop_oneof![
                proptest::sample::select(alloc::vec![
                    0u64, 0xfff, 0x1000, 0x1fff, 0x2000, 0x2fff, 0x3000, 0x3001, 0x3fff,
                    0x4000, 0x47ff, 0x4800, 0x4801, u64::MAX,
                ]),
                0u64..0x6000,
                proptest::prelude::any::<u64>(),
            ],
            len in proptest::prop_oneof![
                proptest::strategy::Just(0u64),
                proptest::strategy::Just(1u64),
                0u64..0x2100,
                proptest::prelude::any::<u64>(),
            ],
        ) {
            let ranges = [(0x1000u64, 0x1000usize), (0x2000, 0x1000), (0x4000, 0x800)];
            let vm = VmMemory::new(Arc::new(
                GuestMemoryMmap::<()>::from_ranges(
                    &ranges.map(|(a, l)| (GuestAddress(a), l)),
                )
                .unwrap(),
            ));
            let mut map = crate::GuestMemoryMap::new();
            for (a, l) in ranges {
                map.add_region(a, crate::OwnedRegion::new_area(l).unwrap()).unwrap();
            }
            let ours = map.translate(addr, len).map(|s| s.len());
            let theirs = vm.translate(addr, len).map(|s| s.len());
            proptest::prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} vs {:?}", ours, theirs);
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                proptest::prop_assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        let m = memory();
        assert!(matches!(
            m.translate(0x500, 4),
            Err(MemoryError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.translate(0x1ffc, 8),
            Err(MemoryError::CrossesRegion { .. })
        ));
        assert!(matches!(
            m.translate(u64::MAX, 2),
            Err(MemoryError::Overflow { .. })
        ));
        assert!(matches!(
            m.area(0x2ff0, 0x20),
            Err(MemoryError::CrossesRegion { .. })
        ));
    }
}
