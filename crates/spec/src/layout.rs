//! Ring area addresses and the size/alignment checks shared by both ring formats
//! (virtio 1.2 §2.7 "Split Virtqueues" table "Virtqueue Part Alignment", §2.8).

use crate::spec_error;

/// The three areas of a virtqueue (virtio 1.2 §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RingArea {
    /// Descriptor table (split) or descriptor ring (packed).
    Descriptors,
    /// Available ring (split) or driver event suppression structure (packed).
    Driver,
    /// Used ring (split) or device event suppression structure (packed).
    Device,
}

/// Guest addresses of the three areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingAreas {
    /// Descriptor table or ring.
    pub desc: u64,
    /// Driver area.
    pub driver: u64,
    /// Device area.
    pub device: u64,
}

spec_error! {
    /// Why a queue size or ring placement is invalid.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum LayoutError {
        /// split queue size must be a power of two from 1 to 32768 (virtio 1.2 §2.7)
        SplitQueueSize { size: u16 },
        /// packed queue size must be from 1 to 32768 (virtio 1.2 §2.8)
        PackedQueueSize { size: u16 },
        /// a ring area is not aligned as the spec requires
        Misaligned { area: RingArea, addr: u64, align: u64 },
        /// a ring area runs past the end of the 64-bit address space
        Overflow { area: RingArea, addr: u64, size: u64 },
    }
}

/// Size and alignment of one area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaSpec {
    /// Which area.
    pub area: RingArea,
    /// Size in bytes.
    pub size: u64,
    /// Required alignment in bytes (a power of two).
    pub align: u64,
}

impl AreaSpec {
    /// Checks that an area at `addr` is aligned and does not wrap the address space.
    pub fn check(&self, addr: u64) -> Result<(), LayoutError> {
        if addr & self.align.wrapping_sub(1) != 0 {
            return Err(LayoutError::Misaligned {
                area: self.area,
                addr,
                align: self.align,
            });
        }
        // The last byte must be addressable; an empty area always fits.
        let last = match self.size.checked_sub(1) {
            Some(extra) => addr.checked_add(extra),
            None => Some(addr),
        };
        match last {
            Some(_) => Ok(()),
            None => Err(LayoutError::Overflow {
                area: self.area,
                addr,
                size: self.size,
            }),
        }
    }
}

/// Checks the three areas of `areas` against `specs` (descriptor, driver, device).
pub(crate) fn check_areas(specs: [AreaSpec; 3], areas: RingAreas) -> Result<(), LayoutError> {
    let [desc, driver, device] = specs;
    desc.check(areas.desc)?;
    driver.check(areas.driver)?;
    device.check(areas.device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_and_overflow() {
        let spec = AreaSpec {
            area: RingArea::Descriptors,
            size: 32,
            align: 16,
        };
        assert_eq!(spec.check(0x1000), Ok(()));
        assert_eq!(
            spec.check(0x1008),
            Err(LayoutError::Misaligned {
                area: RingArea::Descriptors,
                addr: 0x1008,
                align: 16
            })
        );
        assert!(matches!(
            spec.check(u64::MAX - 15),
            Err(LayoutError::Overflow { .. })
        ));
        // Ending exactly at the top of the address space is fine.
        assert_eq!(spec.check(u64::MAX - 31), Ok(()));
    }
}
