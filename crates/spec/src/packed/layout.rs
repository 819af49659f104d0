//! Sizes and placement of a packed ring's areas (virtio 1.2 §2.8.10.1 "Structure Size and
//! Alignment").

use super::{desc, event, MAX_QUEUE_SIZE};
use crate::layout::{check_areas, AreaSpec, LayoutError, RingArea, RingAreas};

/// Sizes of the three areas of a packed ring of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedLayout {
    /// Queue size (1..=32768, any value).
    pub queue_size: u16,
    /// Descriptor ring: 16 bytes per descriptor, 16-byte aligned.
    pub desc: AreaSpec,
    /// Driver event suppression: 4 bytes, 4-byte aligned.
    pub driver_event: AreaSpec,
    /// Device event suppression: 4 bytes, 4-byte aligned.
    pub device_event: AreaSpec,
}

/// The layout of a packed ring of `queue_size` entries, if the size is valid.
pub fn layout(queue_size: u16) -> Result<PackedLayout, LayoutError> {
    if queue_size == 0 || queue_size > MAX_QUEUE_SIZE {
        return Err(LayoutError::PackedQueueSize { size: queue_size });
    }
    let event_area = |area| AreaSpec {
        area,
        size: event::SIZE as u64,
        align: event::ALIGN,
    };
    Ok(PackedLayout {
        queue_size,
        desc: AreaSpec {
            area: RingArea::Descriptors,
            size: desc::SIZE as u64 * u64::from(queue_size),
            align: desc::ALIGN,
        },
        driver_event: event_area(RingArea::Driver),
        device_event: event_area(RingArea::Device),
    })
}

impl PackedLayout {
    /// Checks a placement: each area aligned and inside the 64-bit address space.
    pub fn check(&self, areas: RingAreas) -> Result<(), LayoutError> {
        check_areas([self.desc, self.driver_event, self.device_event], areas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_size_up_to_32768() {
        for size in [1u16, 3, 255, 1000, 32768] {
            let l = layout(size).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(l.desc.size, 16 * u64::from(size));
            assert_eq!(l.driver_event.size, 4);
        }
        for size in [0u16, 32769, u16::MAX] {
            assert_eq!(layout(size), Err(LayoutError::PackedQueueSize { size }));
        }
    }

    #[test]
    fn event_areas_need_4_byte_alignment() {
        let l = layout(3).unwrap_or_else(|e| panic!("{e}"));
        let ok = RingAreas {
            desc: 0x2000,
            driver: 0x2030,
            device: 0x2034,
        };
        assert_eq!(l.check(ok), Ok(()));
        assert!(matches!(
            l.check(RingAreas {
                driver: 0x2032,
                ..ok
            }),
            Err(LayoutError::Misaligned {
                area: RingArea::Driver,
                align: 4,
                ..
            })
        ));
        assert!(matches!(
            l.check(RingAreas { desc: 0x2004, ..ok }),
            Err(LayoutError::Misaligned {
                area: RingArea::Descriptors,
                align: 16,
                ..
            })
        ));
    }
}
