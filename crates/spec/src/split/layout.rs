//! Sizes and placement of a split ring's areas (virtio 1.2 §2.7, table "Virtqueue Part
//! Alignment" and "Queue Size").

use super::{avail, desc, used, MAX_QUEUE_SIZE};
use crate::layout::{check_areas, AreaSpec, LayoutError, RingArea, RingAreas};

/// Sizes of the three areas of a split ring of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLayout {
    /// Queue size (a power of two, 1..=32768).
    pub queue_size: u16,
    /// Descriptor table: 16 bytes per descriptor, 16-byte aligned.
    pub desc: AreaSpec,
    /// Available ring with `used_event`: 6 + 2 × size bytes, 2-byte aligned.
    pub avail: AreaSpec,
    /// Used ring with `avail_event`: 6 + 8 × size bytes, 4-byte aligned.
    pub used: AreaSpec,
}

/// The layout of a split ring of `queue_size` entries, if the size is valid (§2.7: "Queue Size
/// ... a power of 2 ... maximum Queue Size value is 32768").
pub fn layout(queue_size: u16) -> Result<SplitLayout, LayoutError> {
    if !queue_size.is_power_of_two() || queue_size > MAX_QUEUE_SIZE {
        return Err(LayoutError::SplitQueueSize { size: queue_size });
    }
    let n = u64::from(queue_size);
    Ok(SplitLayout {
        queue_size,
        desc: AreaSpec {
            area: RingArea::Descriptors,
            size: desc::SIZE as u64 * n,
            align: desc::ALIGN,
        },
        avail: AreaSpec {
            area: RingArea::Driver,
            size: avail::size(queue_size) as u64,
            align: avail::ALIGN,
        },
        used: AreaSpec {
            area: RingArea::Device,
            size: used::size(queue_size) as u64,
            align: used::ALIGN,
        },
    })
}

impl SplitLayout {
    /// Checks a placement: each area aligned and inside the 64-bit address space.
    pub fn check(&self, areas: RingAreas) -> Result<(), LayoutError> {
        check_areas([self.desc, self.avail, self.used], areas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_spec_table() {
        let l = layout(256).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.desc.size, 4096);
        assert_eq!(l.avail.size, 518);
        assert_eq!(l.used.size, 2054);
        let max = layout(32768).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(max.desc.size, 16 * 32768);
        assert!(layout(1).is_ok());
    }

    #[test]
    fn invalid_sizes_are_refused() {
        for size in [0u16, 3, 255, 257, 40000, u16::MAX] {
            assert_eq!(layout(size), Err(LayoutError::SplitQueueSize { size }));
        }
    }

    #[test]
    fn placement_alignment() {
        let l = layout(8).unwrap_or_else(|e| panic!("{e}"));
        let ok = RingAreas {
            desc: 0x1000,
            driver: 0x1082,
            device: 0x10a4,
        };
        assert_eq!(l.check(ok), Ok(()));
        let bad_desc = RingAreas { desc: 0x1008, ..ok };
        assert!(matches!(
            l.check(bad_desc),
            Err(LayoutError::Misaligned {
                area: RingArea::Descriptors,
                ..
            })
        ));
        let bad_avail = RingAreas {
            driver: 0x1081,
            ..ok
        };
        assert!(matches!(
            l.check(bad_avail),
            Err(LayoutError::Misaligned {
                area: RingArea::Driver,
                ..
            })
        ));
        let bad_used = RingAreas {
            device: 0x10a2,
            ..ok
        };
        assert!(matches!(
            l.check(bad_used),
            Err(LayoutError::Misaligned {
                area: RingArea::Device,
                ..
            })
        ));
        let wraps = RingAreas {
            device: u64::MAX - 3,
            ..ok
        };
        assert!(matches!(l.check(wraps), Err(LayoutError::Overflow { .. })));
    }
}
