//! Where each part of a driver-side ring goes inside the memory given to the queue.
//!
//! Split (virtio 1.2 §2.7, table "Virtqueue Part Alignment"): descriptor table (16-byte
//! aligned, 16 bytes per descriptor), available ring (2-byte aligned, with `used_event`), used
//! ring (4-byte aligned, with `avail_event`). Packed (virtio 1.2 §2.8): descriptor ring (16-byte
//! aligned), driver and device event suppression structures (4 bytes each, 4-byte aligned).
//! Both formats are followed, when indirect descriptors are in use, by a pool of indirect tables
//! (16-byte aligned), one table per descriptor slot, so a buffer never allocates.

use vireo_memory::SharedArea;
use vireo_spec::packed;
use vireo_spec::split::{avail, desc, used};
use vireo_spec::Features;

use super::error::DriverQueueError;
use super::DriverQueueOptions;
use crate::{RingAddresses, RingFormat};

/// Alignment of the descriptor table or ring, and of each indirect table.
const DESC_ALIGN: usize = desc::ALIGN as usize;

/// Byte offsets of a ring's parts inside the queue's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Descriptor table (split) or descriptor ring (packed).
    pub desc_table: usize,
    /// Available ring (split) or driver event suppression (packed).
    pub driver_area: usize,
    /// Used ring (split) or device event suppression (packed).
    pub device_area: usize,
    /// First indirect table (meaningful only when `indirect_table_len` is not 0).
    pub indirect_pool: usize,
    /// Entries per indirect table; 0 when indirect descriptors are not used.
    pub indirect_table_len: u16,
    /// Bytes the whole layout needs.
    pub total: usize,
}

impl RingLayout {
    /// Guest addresses of the three areas for a ring laid out at `guest_addr` (what the device
    /// is told: descriptor table/ring, driver area, device area).
    pub fn addresses(&self, guest_addr: u64) -> RingAddresses {
        let at = |offset: usize| guest_addr.wrapping_add(offset as u64);
        RingAddresses {
            desc_table: at(self.desc_table),
            driver_area: at(self.driver_area),
            device_area: at(self.device_area),
        }
    }

    /// The layout for `format`.
    pub fn new(
        format: RingFormat,
        size: u16,
        features: Features,
        options: &DriverQueueOptions,
    ) -> Self {
        match format {
            RingFormat::Split => Self::split(size, features, options),
            RingFormat::Packed => Self::packed(size, features, options),
        }
    }

    /// The layout of a split ring of `size` descriptors.
    pub fn split(size: u16, features: Features, options: &DriverQueueOptions) -> Self {
        let n = usize::from(size);
        let driver_area = desc::SIZE * n;
        let device_area = align_up(driver_area + avail::size(size), used::ALIGN as usize);
        let end = device_area + used::size(size);
        Self::with_pool(0, driver_area, device_area, end, size, features, options)
    }

    /// The layout of a packed ring of `size` descriptors.
    pub fn packed(size: u16, features: Features, options: &DriverQueueOptions) -> Self {
        let event_align = packed::event::ALIGN as usize;
        let driver_area = align_up(packed::desc::SIZE * usize::from(size), event_align);
        let device_area = driver_area + packed::event::SIZE;
        let end = device_area + packed::event::SIZE;
        Self::with_pool(0, driver_area, device_area, end, size, features, options)
    }

    fn with_pool(
        desc_table: usize,
        driver_area: usize,
        device_area: usize,
        end: usize,
        size: u16,
        features: Features,
        options: &DriverQueueOptions,
    ) -> Self {
        let indirect_table_len = indirect_table_len(size, features, options);
        let indirect_pool = align_up(end, DESC_ALIGN);
        let total = if indirect_table_len == 0 {
            end
        } else {
            let pool = usize::from(size)
                .saturating_mul(usize::from(indirect_table_len))
                .saturating_mul(desc::SIZE);
            indirect_pool.saturating_add(pool)
        };
        RingLayout {
            desc_table,
            driver_area,
            device_area,
            indirect_pool,
            indirect_table_len,
            total,
        }
    }

    /// Checks that `area`, seen by the device at `guest_addr`, can hold this layout: large
    /// enough, 16-byte aligned on both sides (the strictest alignment of either format, virtio
    /// 1.2 §2.7, §2.8), and not running past the end of the address space.
    pub fn check_area(&self, area: &SharedArea, guest_addr: u64) -> Result<(), DriverQueueError> {
        if area.len() < self.total {
            return Err(DriverQueueError::AreaTooSmall {
                needed: self.total,
                available: area.len(),
            });
        }
        let total = self.total as u64;
        if guest_addr.checked_add(total).is_none() {
            return Err(DriverQueueError::AddressOverflow {
                addr: guest_addr,
                len: total,
            });
        }
        if guest_addr % desc::ALIGN != 0 || (area.slice().as_ptr() as usize) % DESC_ALIGN != 0 {
            return Err(DriverQueueError::AreaMisaligned { align: desc::ALIGN });
        }
        Ok(())
    }

    /// Byte offset of the indirect table that belongs to descriptor slot `slot`.
    pub fn indirect_table(&self, slot: u16) -> usize {
        let table = usize::from(self.indirect_table_len) * desc::SIZE;
        self.indirect_pool + usize::from(slot) * table
    }
}

/// Entries per indirect table: the option, capped at the queue size (a chain may not be longer,
/// virtio 1.2 §2.7.5.3.1), or 0 when INDIRECT_DESC is not negotiated or a table would hold fewer
/// than two entries (a one-segment buffer is cheaper as a direct descriptor).
fn indirect_table_len(size: u16, features: Features, options: &DriverQueueOptions) -> u16 {
    let len = options.indirect_table_len.min(size);
    if features.has(Features::INDIRECT_DESC) && len >= 2 {
        len
    } else {
        0
    }
}

/// `n` rounded up to a multiple of `align` (a power of two); saturates instead of overflowing.
const fn align_up(n: usize, align: usize) -> usize {
    n.saturating_add(align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_layout_follows_the_alignment_table() {
        let opts = DriverQueueOptions {
            indirect_table_len: 0,
        };
        // 4 descriptors: table 64 bytes, avail 6 + 8 = 14 bytes (ends at 78), used at 80.
        let l = RingLayout::split(4, Features::empty(), &opts);
        assert_eq!((l.desc_table, l.driver_area, l.device_area), (0, 64, 80));
        assert_eq!(l.total, 80 + 6 + 8 * 4);
        assert_eq!(l.indirect_table_len, 0);
    }

    #[test]
    fn indirect_pool_only_with_the_feature() {
        let opts = DriverQueueOptions {
            indirect_table_len: 8,
        };
        let plain = RingLayout::split(4, Features::empty(), &opts);
        let ind = RingLayout::split(4, Features::INDIRECT_DESC, &opts);
        assert_eq!(plain.indirect_table_len, 0);
        // Capped at the queue size; the pool starts 16-byte aligned after the used ring.
        assert_eq!(ind.indirect_table_len, 4);
        assert_eq!(ind.indirect_pool, 128);
        assert_eq!(ind.total, 128 + 4 * 4 * 16);
        assert_eq!(ind.indirect_table(3), 128 + 3 * 64);
    }

    #[test]
    fn packed_layout() {
        let opts = DriverQueueOptions {
            indirect_table_len: 0,
        };
        let l = RingLayout::new(RingFormat::Packed, 3, Features::empty(), &opts);
        assert_eq!(
            (l.desc_table, l.driver_area, l.device_area, l.total),
            (0, 48, 52, 56)
        );
    }
}
