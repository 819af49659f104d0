//! Guest-address translation.

use alloc::vec::Vec;

use crate::{MemoryError, SharedArea, SharedSlice};

/// Memory addressed the way the driver addresses it (guest-physical addresses, or I/O virtual
/// addresses), that the device side translates before touching it.
///
/// Implementations must reject, with an error: a range whose end overflows `u64`, a range not
/// wholly inside one region, and any address outside every region. A zero-length range is
/// accepted when its address lies inside a region (or at its end).
pub trait GuestMemory {
    /// Borrowed view of `len` bytes at guest address `addr`.
    fn translate(&self, addr: u64, len: u64) -> Result<SharedSlice<'_>, MemoryError>;

    /// Owned view of `len` bytes at guest address `addr` (for state that outlives one request,
    /// such as a queue's rings).
    fn area(&self, addr: u64, len: u64) -> Result<SharedArea, MemoryError>;
}

impl<M: GuestMemory + ?Sized> GuestMemory for &M {
    #[inline]
    fn translate(&self, addr: u64, len: u64) -> Result<SharedSlice<'_>, MemoryError> {
        (**self).translate(addr, len)
    }
    fn area(&self, addr: u64, len: u64) -> Result<SharedArea, MemoryError> {
        (**self).area(addr, len)
    }
}

impl<M: GuestMemory + ?Sized> GuestMemory for alloc::sync::Arc<M> {
    #[inline]
    fn translate(&self, addr: u64, len: u64) -> Result<SharedSlice<'_>, MemoryError> {
        (**self).translate(addr, len)
    }
    fn area(&self, addr: u64, len: u64) -> Result<SharedArea, MemoryError> {
        (**self).area(addr, len)
    }
}

/// One region of guest memory: `area.len()` bytes at guest address `guest_addr`.
#[derive(Debug, Clone)]
pub struct GuestRegion {
    guest_addr: u64,
    area: SharedArea,
}

impl GuestRegion {
    /// Guest address of the first byte.
    pub fn guest_addr(&self) -> u64 {
        self.guest_addr
    }
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.area.len() as u64
    }
    /// True when the region has no bytes (never, for a region in a map).
    pub fn is_empty(&self) -> bool {
        self.area.is_empty()
    }
    /// The region's bytes.
    pub fn area(&self) -> &SharedArea {
        &self.area
    }
    /// Guest address one past the last byte (cannot overflow: checked on insertion).
    fn end(&self) -> u64 {
        self.guest_addr.wrapping_add(self.len())
    }
}

/// A set of non-overlapping guest memory regions, sorted by address.
#[derive(Debug, Clone, Default)]
pub struct GuestMemoryMap {
    regions: Vec<GuestRegion>,
}

impl GuestMemoryMap {
    /// An empty map: every translation fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of one region at `guest_addr`.
    pub fn single(guest_addr: u64, area: SharedArea) -> Result<Self, MemoryError> {
        let mut m = Self::new();
        m.add_region(guest_addr, area)?;
        Ok(m)
    }

    /// Adds a region; fails if it is empty, its end overflows, or it overlaps another region.
    pub fn add_region(&mut self, guest_addr: u64, area: SharedArea) -> Result<(), MemoryError> {
        let len = area.len() as u64;
        if len == 0 {
            return Err(MemoryError::EmptyRegion);
        }
        let end = guest_addr.checked_add(len).ok_or(MemoryError::Overflow {
            addr: guest_addr,
            len,
        })?;
        let pos = self.regions.partition_point(|r| r.guest_addr < guest_addr);
        let overlaps_prev = pos
            .checked_sub(1)
            .and_then(|p| self.regions.get(p))
            .is_some_and(|prev| prev.end() > guest_addr);
        let overlaps_next = self
            .regions
            .get(pos)
            .is_some_and(|next| next.guest_addr < end);
        if overlaps_prev || overlaps_next {
            return Err(MemoryError::Overlap {
                addr: guest_addr,
                len,
            });
        }
        self.regions.insert(pos, GuestRegion { guest_addr, area });
        Ok(())
    }

    /// Removes the region that starts at `guest_addr` with size `len`; returns it, or `None` if
    /// there is no such region.
    pub fn remove_region(&mut self, guest_addr: u64, len: u64) -> Option<GuestRegion> {
        let pos = self
            .regions
            .iter()
            .position(|r| r.guest_addr == guest_addr && r.len() == len)?;
        Some(self.regions.remove(pos))
    }

    /// The regions, sorted by guest address.
    pub fn regions(&self) -> &[GuestRegion] {
        &self.regions
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// True when the map has no regions.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    #[inline]
    fn locate(&self, addr: u64, len: u64) -> Result<(&GuestRegion, usize, usize), MemoryError> {
        let end = addr
            .checked_add(len)
            .ok_or(MemoryError::Overflow { addr, len })?;
        // Fast path for the common single-region map.
        let region = match self.regions.as_slice() {
            [only] => only,
            regions => {
                let pos = regions.partition_point(|r| r.guest_addr <= addr);
                pos.checked_sub(1)
                    .and_then(|p| regions.get(p))
                    .ok_or(MemoryError::OutOfRange { addr, len })?
            }
        };
        if addr < region.guest_addr || addr > region.end() {
            return Err(MemoryError::OutOfRange { addr, len });
        }
        if end > region.end() {
            return Err(MemoryError::CrossesRegion { addr, len });
        }
        // Both fit in usize: they are at most the region's length, which is a usize.
        let offset = usize::try_from(addr - region.guest_addr)
            .map_err(|_| MemoryError::OutOfRange { addr, len })?;
        let size = usize::try_from(len).map_err(|_| MemoryError::OutOfRange { addr, len })?;
        Ok((region, offset, size))
    }
}

impl GuestMemory for GuestMemoryMap {
    #[inline]
    fn translate(&self, addr: u64, len: u64) -> Result<SharedSlice<'_>, MemoryError> {
        let (region, offset, size) = self.locate(addr, len)?;
        region.area.slice().subslice(offset, size)
    }

    fn area(&self, addr: u64, len: u64) -> Result<SharedArea, MemoryError> {
        let (region, offset, size) = self.locate(addr, len)?;
        region.area.sub_area(offset, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OwnedRegion;
    use proptest::prelude::*;

    fn map() -> GuestMemoryMap {
        let mut m = GuestMemoryMap::new();
        m.add_region(0x1000, OwnedRegion::new_area(0x1000).unwrap())
            .unwrap();
        m.add_region(0x2000, OwnedRegion::new_area(0x1000).unwrap())
            .unwrap();
        m.add_region(0x10_0000, OwnedRegion::new_area(0x2000).unwrap())
            .unwrap();
        m
    }

    #[test]
    fn translates_inside_regions() {
        let m = map();
        assert_eq!(m.translate(0x1000, 0x1000).unwrap().len(), 0x1000);
        assert_eq!(m.translate(0x2ff0, 0x10).unwrap().len(), 0x10);
        assert_eq!(m.translate(0x10_1000, 8).unwrap().len(), 8);
        assert_eq!(m.translate(0x2000, 0).unwrap().len(), 0);
    }

    #[test]
    fn rejects_bad_ranges() {
        let m = map();
        assert_eq!(
            m.translate(u64::MAX - 3, 8).unwrap_err(),
            MemoryError::Overflow {
                addr: u64::MAX - 3,
                len: 8
            }
        );
        assert!(matches!(
            m.translate(0x0, 4),
            Err(MemoryError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.translate(0x5000, 4),
            Err(MemoryError::OutOfRange { .. })
        ));
        // Adjacent regions are still separate mappings: a range across the seam is refused.
        assert!(matches!(
            m.translate(0x1ff8, 16),
            Err(MemoryError::CrossesRegion { .. })
        ));
        assert!(matches!(
            m.translate(0x10_1ff8, 9),
            Err(MemoryError::CrossesRegion { .. })
        ));
    }

    #[test]
    fn rejects_overlapping_regions() {
        let mut m = map();
        let r = OwnedRegion::new_area(0x1000).unwrap();
        assert!(matches!(
            m.add_region(0x1800, r.clone()),
            Err(MemoryError::Overlap { .. })
        ));
        assert!(matches!(
            m.add_region(0x800, r.clone()),
            Err(MemoryError::Overlap { .. })
        ));
        assert!(matches!(
            m.add_region(u64::MAX - 10, r.clone()),
            Err(MemoryError::Overflow { .. })
        ));
        assert!(m.add_region(0x3000, r).is_ok());
        assert!(m.remove_region(0x3000, 0x1000).is_some());
        assert!(m.remove_region(0x3000, 0x1000).is_none());
    }

    #[test]
    fn writes_through_translation_reach_the_region() {
        let m = map();
        m.translate(0x2004, 4)
            .unwrap()
            .write(0, &[1, 2, 3, 4])
            .unwrap();
        let mut b = [0; 4];
        m.regions()[1].area().slice().read(4, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
    }

    proptest! {
        /// Any translation that succeeds lies wholly inside exactly one region.
        #[test]
        fn translation_is_inside_one_region(addr in 0u64..0x11_0000, len in 0u64..0x3000) {
            let m = map();
            match m.translate(addr, len) {
                Ok(s) => {
                    prop_assert_eq!(s.len() as u64, len);
                    prop_assert!(m.regions().iter().any(|r| addr >= r.guest_addr()
                        && addr + len <= r.guest_addr() + r.len()));
                }
                Err(_) => prop_assert!(!m.regions().iter().any(|r| addr >= r.guest_addr()
                    && addr + len <= r.guest_addr() + r.len())),
            }
        }
    }
}
