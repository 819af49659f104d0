//! Split virtqueue layout (virtio 1.2 §2.7).
//!
//! Three areas in guest memory: the descriptor table (16-byte descriptors, 16-byte aligned),
//! the available ring (driver to device, 2-byte aligned) and the used ring (device to driver,
//! 4-byte aligned). All fields are little-endian.

mod layout;
mod view;

pub use crate::layout::{LayoutError, RingArea, RingAreas};
pub use layout::{layout, SplitLayout};
pub use view::{
    AvailHeader, DescFlags, Descriptor, SplitDescriptor, SplitUsedElem, UsedElem, UsedHeader,
};

/// Largest queue size a split ring may have (§2.7: "Queue Size ... maximum of 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Descriptor table entry (§2.7.5 "The Virtqueue Descriptor Table").
pub mod desc {
    /// Size of one descriptor in bytes.
    pub const SIZE: usize = 16;
    /// Alignment of the descriptor table (§2.7 table "Virtqueue Part Alignment").
    pub const ALIGN: u64 = 16;
    /// Offset of `addr: le64`.
    pub const ADDR: usize = 0;
    /// Offset of `len: le32`.
    pub const LEN: usize = 8;
    /// Offset of `flags: le16`.
    pub const FLAGS: usize = 12;
    /// Offset of `next: le16`.
    pub const NEXT: usize = 14;
    /// The buffer continues via the `next` field.
    pub const F_NEXT: u16 = 1;
    /// The buffer is device write-only (otherwise device read-only).
    pub const F_WRITE: u16 = 2;
    /// The buffer holds a table of indirect descriptors (§2.7.5.3).
    pub const F_INDIRECT: u16 = 4;
}

/// Available ring (§2.7.6 "The Virtqueue Available Ring").
pub mod avail {
    /// Alignment of the available ring.
    pub const ALIGN: u64 = 2;
    /// Offset of `flags: le16`.
    pub const FLAGS: usize = 0;
    /// Offset of `idx: le16`.
    pub const IDX: usize = 2;
    /// Offset of `ring[0]: le16`.
    pub const RING: usize = 4;
    /// Driver does not want used-buffer notifications (ignored with EVENT_IDX).
    pub const F_NO_INTERRUPT: u16 = 1;
    /// Total size in bytes for a queue of `queue_size` entries, including `used_event`.
    pub const fn size(queue_size: u16) -> usize {
        6 + 2 * queue_size as usize
    }
    /// Offset of `used_event: le16` (only with EVENT_IDX).
    pub const fn used_event(queue_size: u16) -> usize {
        RING + 2 * queue_size as usize
    }
}

/// Used ring (§2.7.8 "The Virtqueue Used Ring").
pub mod used {
    /// Alignment of the used ring.
    pub const ALIGN: u64 = 4;
    /// Offset of `flags: le16`.
    pub const FLAGS: usize = 0;
    /// Offset of `idx: le16`.
    pub const IDX: usize = 2;
    /// Offset of `ring[0]`: each element is `{ id: le32, len: le32 }`.
    pub const RING: usize = 4;
    /// Size of one used element.
    pub const ELEM_SIZE: usize = 8;
    /// Device does not want available-buffer notifications (ignored with EVENT_IDX).
    pub const F_NO_NOTIFY: u16 = 1;
    /// Total size in bytes for a queue of `queue_size` entries, including `avail_event`.
    pub const fn size(queue_size: u16) -> usize {
        6 + ELEM_SIZE * queue_size as usize
    }
    /// Offset of `avail_event: le16` (only with EVENT_IDX).
    pub const fn avail_event(queue_size: u16) -> usize {
        RING + ELEM_SIZE * queue_size as usize
    }
}

/// `vring_need_event` (§2.7.10): true if moving an index from `old` to `new` crosses the
/// other side's requested `event` index, i.e. a notification is due. Wrapping 16-bit arithmetic.
#[inline]
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_matches_the_spec_formula() {
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(need_event(5, 10, 3));
        assert!(!need_event(10, 10, 3));
        // Across the 16-bit wrap.
        assert!(need_event(0xffff, 2, 0xfffe));
        assert!(!need_event(3, 2, 0xfffe));
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(avail::size(256), 518);
        assert_eq!(used::size(256), 2054);
        assert_eq!(used::avail_event(4), 36);
    }
}
