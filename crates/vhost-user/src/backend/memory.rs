//! The front-end's memory as the back-end maps it (`SET_MEM_TABLE`, `ADD_MEM_REG`,
//! `REM_MEM_REG`; QEMU `docs/interop/vhost-user.rst`, "Memory access").
//!
//! Every region is mapped from its fd and kept with its front-end user address range, because
//! ring addresses arrive as user addresses (`SET_VRING_ADDR`) and buffers as guest addresses.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use vireo_memory::mmap::MmapRegion;
use vireo_memory::{GuestMemoryMap, SharedArea};

use super::RequestError;
use crate::message::MemoryRegion;

/// Memory slots advertised by `GET_MAX_MEM_SLOTS` (and the most regions accepted).
pub const MAX_MEM_SLOTS: usize = 32;

/// mmap offsets that are a multiple of this are mapped directly; others through a larger
/// mapping from offset 0.
const PAGE: u64 = 4096;

#[derive(Debug, Clone)]
struct Mapped {
    region: MemoryRegion,
    area: SharedArea,
}

/// The mapped regions and the guest memory map built from them.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    regions: Vec<Mapped>,
    map: Arc<GuestMemoryMap>,
}

impl Memory {
    /// Guest memory for queue workers (a snapshot: replaced, not mutated, on changes).
    pub(crate) fn guest(&self) -> Arc<GuestMemoryMap> {
        Arc::clone(&self.map)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Replaces all regions (`SET_MEM_TABLE`). On error the old table stays.
    pub(crate) fn set_table(
        &mut self,
        regions: &[MemoryRegion],
        fds: Vec<OwnedFd>,
    ) -> Result<(), RequestError> {
        if fds.len() != regions.len() {
            return Err(RequestError::WrongFdCount {
                expected: regions.len(),
                actual: fds.len(),
            });
        }
        let mut mapped = Vec::with_capacity(regions.len());
        for (region, fd) in regions.iter().zip(fds) {
            mapped.push(map(region, fd)?);
        }
        let map = build(&mapped)?;
        self.regions = mapped;
        self.map = Arc::new(map);
        Ok(())
    }

    /// Adds one region (`ADD_MEM_REG`).
    pub(crate) fn add(&mut self, region: &MemoryRegion, fd: OwnedFd) -> Result<(), RequestError> {
        if self.regions.len() >= MAX_MEM_SLOTS {
            return Err(RequestError::TooManyRegions { max: MAX_MEM_SLOTS });
        }
        let mut regions = self.regions.clone();
        regions.push(map(region, fd)?);
        let map = build(&regions)?;
        self.regions = regions;
        self.map = Arc::new(map);
        Ok(())
    }

    /// Removes the region with the same guest address, user address and size (`REM_MEM_REG`:
    /// "The mmap offset is ignored").
    pub(crate) fn remove(&mut self, region: &MemoryRegion) -> Result<(), RequestError> {
        let pos = self
            .regions
            .iter()
            .position(|m| {
                m.region.guest_addr == region.guest_addr
                    && m.region.user_addr == region.user_addr
                    && m.region.size == region.size
            })
            .ok_or(RequestError::RegionNotFound {
                guest_addr: region.guest_addr,
            })?;
        let mut regions = self.regions.clone();
        regions.remove(pos);
        let map = build(&regions)?;
        self.regions = regions;
        self.map = Arc::new(map);
        Ok(())
    }

    /// Translates a front-end user address to a guest address.
    pub(crate) fn user_to_guest(&self, user_addr: u64) -> Result<u64, RequestError> {
        self.regions
            .iter()
            .find_map(|m| {
                let offset = user_addr.checked_sub(m.region.user_addr)?;
                (offset < m.region.size).then(|| m.region.guest_addr.checked_add(offset))?
            })
            .ok_or(RequestError::AddressNotMapped { user_addr })
    }
}

/// Validates and maps one region.
fn map(region: &MemoryRegion, fd: OwnedFd) -> Result<Mapped, RequestError> {
    let invalid = || RequestError::InvalidRegion {
        guest_addr: region.guest_addr,
        size: region.size,
    };
    let size = region.size;
    if size == 0
        || region.guest_addr.checked_add(size).is_none()
        || region.user_addr.checked_add(size).is_none()
    {
        return Err(invalid());
    }
    let end = region.mmap_offset.checked_add(size).ok_or_else(invalid)?;
    let area = if region.mmap_offset % PAGE == 0 {
        MmapRegion::map_checked(&fd, region.mmap_offset, size)?.into_area()?
    } else {
        let whole = MmapRegion::map_checked(&fd, 0, end)?.into_area()?;
        let offset = usize::try_from(region.mmap_offset).map_err(|_| invalid())?;
        let len = usize::try_from(size).map_err(|_| invalid())?;
        whole.sub_area(offset, len)?
    };
    // The fd is closed here; the mapping stays valid.
    Ok(Mapped {
        region: *region,
        area,
    })
}

/// Builds the guest map (refusing guest-address overlaps) and checks user ranges are disjoint.
fn build(regions: &[Mapped]) -> Result<GuestMemoryMap, RequestError> {
    let mut map = GuestMemoryMap::new();
    for (i, m) in regions.iter().enumerate() {
        let start = m.region.user_addr;
        let end = start.saturating_add(m.region.size);
        let overlaps = regions.iter().take(i).any(|o| {
            let o_end = o.region.user_addr.saturating_add(o.region.size);
            start < o_end && o.region.user_addr < end
        });
        if overlaps {
            return Err(RequestError::UserRangeOverlap { user_addr: start });
        }
        map.add_region(m.region.guest_addr, m.area.clone())?;
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vireo_memory::{GuestMemory, MemoryError};

    fn memfd(len: u64) -> OwnedFd {
        MmapRegion::memfd("vireo-test", len).unwrap().0
    }

    fn region(guest_addr: u64, size: u64, user_addr: u64) -> MemoryRegion {
        MemoryRegion {
            guest_addr,
            size,
            user_addr,
            mmap_offset: 0,
        }
    }

    #[test]
    fn table_maps_and_translates_user_addresses() {
        let mut m = Memory::default();
        let regions = [
            region(0, 0x2000, 0x7f00_0000),
            region(0x10_0000, 0x1000, 0x7f10_0000),
        ];
        m.set_table(&regions, vec![memfd(0x2000), memfd(0x1000)])
            .unwrap();
        assert_eq!(m.user_to_guest(0x7f00_1004).unwrap(), 0x1004);
        assert_eq!(m.user_to_guest(0x7f10_0010).unwrap(), 0x10_0010);
        assert!(matches!(
            m.user_to_guest(0x7f00_2000),
            Err(RequestError::AddressNotMapped { .. })
        ));
        assert_eq!(m.guest().translate(0x10_0ff8, 8).unwrap().len(), 8);
    }

    #[test]
    fn bad_tables_are_refused_and_the_old_one_kept() {
        let mut m = Memory::default();
        m.set_table(&[region(0, 0x1000, 0x1000)], vec![memfd(0x1000)])
            .unwrap();
        // Guest overlap.
        let r = m.set_table(
            &[
                region(0, 0x2000, 0x1_0000),
                region(0x1000, 0x1000, 0x2_0000),
            ],
            vec![memfd(0x2000), memfd(0x1000)],
        );
        assert!(matches!(
            r,
            Err(RequestError::Memory(MemoryError::Overlap { .. }))
        ));
        // User overlap.
        let r = m.set_table(
            &[
                region(0, 0x1000, 0x1_0000),
                region(0x1000, 0x1000, 0x1_0800),
            ],
            vec![memfd(0x1000), memfd(0x1000)],
        );
        assert!(matches!(r, Err(RequestError::UserRangeOverlap { .. })));
        // Zero size, overflow, fd count, file too short.
        let r = m.set_table(&[region(0, 0, 0)], vec![memfd(0x1000)]);
        assert!(matches!(r, Err(RequestError::InvalidRegion { .. })));
        let r = m.set_table(&[region(u64::MAX - 10, 0x1000, 0)], vec![memfd(0x1000)]);
        assert!(matches!(r, Err(RequestError::InvalidRegion { .. })));
        let r = m.set_table(&[region(0, 0x1000, 0)], vec![]);
        assert!(matches!(
            r,
            Err(RequestError::WrongFdCount {
                expected: 1,
                actual: 0
            })
        ));
        let r = m.set_table(&[region(0, 0x4000, 0)], vec![memfd(0x1000)]);
        assert!(matches!(r, Err(RequestError::Memory(_))));
        // The first table is still in place.
        assert_eq!(m.user_to_guest(0x1800).unwrap(), 0x800);
    }

    #[test]
    fn unaligned_mmap_offset_maps_the_right_bytes() {
        let (fd, whole) = MmapRegion::memfd("vireo-test", 0x3000).unwrap();
        let whole = whole.into_area().unwrap();
        whole.slice().write(0x1000, b"vireo").unwrap();
        let mut m = Memory::default();
        let r = MemoryRegion {
            guest_addr: 0x8000,
            size: 0x1000,
            user_addr: 0,
            mmap_offset: 0x800,
        };
        m.set_table(&[r], vec![fd]).unwrap();
        let mut buf = [0u8; 5];
        m.guest()
            .translate(0x8800, 5)
            .unwrap()
            .read(0, &mut buf)
            .unwrap();
        assert_eq!(&buf, b"vireo");
    }

    #[test]
    fn add_and_remove_regions() {
        let mut m = Memory::default();
        m.add(&region(0, 0x1000, 0x1000), memfd(0x1000)).unwrap();
        m.add(&region(0x1000, 0x1000, 0x2000), memfd(0x1000))
            .unwrap();
        let dup = m.add(&region(0x1000, 0x1000, 0x9000), memfd(0x1000));
        assert!(matches!(
            dup,
            Err(RequestError::Memory(MemoryError::Overlap { .. }))
        ));
        assert!(m.remove(&region(0x1000, 0x1000, 0x2001)).is_err());
        m.remove(&region(0x1000, 0x1000, 0x2000)).unwrap();
        assert!(m.guest().translate(0x1000, 1).is_err());
        for i in 1..MAX_MEM_SLOTS as u64 {
            m.add(
                &region(i * 0x1000, 0x1000, i * 0x1000 + 0x100_0000),
                memfd(0x1000),
            )
            .unwrap();
        }
        let r = m.add(&region(0x100_0000, 0x1000, 0x900_0000), memfd(0x1000));
        assert_eq!(
            r.unwrap_err(),
            RequestError::TooManyRegions { max: MAX_MEM_SLOTS }
        );
    }
}
