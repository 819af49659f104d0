//! Packed virtqueue layout (virtio 1.2 §2.8).
//!
//! Three areas in guest memory: the descriptor ring (16-byte descriptors, 16-byte aligned),
//! the driver event suppression structure and the device event suppression structure (4 bytes
//! each, 4-byte aligned). All fields are little-endian. The queue size need not be a power of
//! two (§2.8.10.1 "Structure Size and Alignment": any size from 1 to 32768).

mod layout;
mod view;

pub use crate::layout::{LayoutError, RingArea, RingAreas};
pub use crate::notification::NotificationData;
pub use layout::{layout, PackedLayout};
pub use view::{
    Descriptor, EventFlags, EventSuppress, EventSuppression, PackedDescFlags, PackedDescriptor,
};

/// Largest queue size a packed ring may have (§2.8.10.1).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Descriptor ring entry, `struct pvirtq_desc` (§2.8.13 "The Virtqueue Descriptor Format").
/// Indirect descriptor tables use the same layout (§2.8.7).
pub mod desc {
    /// Size of one descriptor in bytes.
    pub const SIZE: usize = 16;
    /// Alignment of the descriptor ring.
    pub const ALIGN: u64 = 16;
    /// Offset of `addr: le64`.
    pub const ADDR: usize = 0;
    /// Offset of `len: le32`.
    pub const LEN: usize = 8;
    /// Offset of `id: le16` (buffer id).
    pub const ID: usize = 12;
    /// Offset of `flags: le16`.
    pub const FLAGS: usize = 14;
    /// The buffer continues in the next descriptor.
    pub const F_NEXT: u16 = 1;
    /// The buffer is device write-only.
    pub const F_WRITE: u16 = 2;
    /// The buffer holds a table of indirect descriptors.
    pub const F_INDIRECT: u16 = 4;
    /// Available flag (§2.8.1): equals the driver's wrap counter when made available.
    pub const F_AVAIL: u16 = 1 << 7;
    /// Used flag (§2.8.1): equals the device's wrap counter when used.
    pub const F_USED: u16 = 1 << 15;
}

/// Event suppression structure, `struct pvirtq_event_suppress` (§2.8.14 "Event Suppression
/// Structure Format", semantics in §2.8.10): `le16 desc` (offset 15 bits + wrap bit 15), `le16 flags` (2 bits).
pub mod event {
    /// Size of the structure in bytes.
    pub const SIZE: usize = 4;
    /// Alignment of each event suppression area.
    pub const ALIGN: u64 = 4;
    /// Offset of `desc: le16`, the descriptor event offset and wrap counter.
    pub const OFF_WRAP: usize = 0;
    /// Offset of `flags: le16`.
    pub const FLAGS: usize = 2;
    /// Bits of `desc` holding the descriptor ring offset.
    pub const OFF_MASK: u16 = 0x7fff;
    /// Bit of `desc` holding the wrap counter.
    pub const WRAP_BIT: u16 = 1 << 15;
    /// Bits of `flags` that carry the mode (the other 14 bits are reserved).
    pub const FLAGS_MASK: u16 = 0x3;
    /// Notifications enabled.
    pub const FLAGS_ENABLE: u16 = 0;
    /// Notifications disabled.
    pub const FLAGS_DISABLE: u16 = 1;
    /// Notify only for the descriptor at `desc` (needs VIRTIO_F_EVENT_IDX).
    pub const FLAGS_DESC: u16 = 2;
}

/// A ring wrap counter (§2.8.1): one bit, starting at 1, flipped each time the ring index
/// wraps past the end of the descriptor ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrapCounter {
    set: bool,
}

impl WrapCounter {
    /// The value both sides start with after (re)initialisation: 1.
    pub const INITIAL: WrapCounter = WrapCounter { set: true };
    /// The counter with value 0.
    pub const ZERO: WrapCounter = WrapCounter { set: false };

    /// The counter from a bit value (only the lowest bit of `bit` counts).
    pub const fn from_bit(bit: u16) -> WrapCounter {
        WrapCounter { set: bit & 1 != 0 }
    }

    /// 1 or 0.
    pub const fn bit(self) -> u16 {
        self.set as u16
    }

    /// True for 1.
    pub const fn is_set(self) -> bool {
        self.set
    }

    /// The counter after a wrap.
    #[must_use]
    pub const fn toggled(self) -> WrapCounter {
        WrapCounter { set: !self.set }
    }

    /// The AVAIL/USED flag bits a driver writes to make a descriptor available (§2.8.1:
    /// AVAIL equal to its wrap counter, USED the inverse).
    pub const fn avail_flags(self) -> u16 {
        if self.set {
            desc::F_AVAIL
        } else {
            desc::F_USED
        }
    }

    /// The AVAIL/USED flag bits a device writes to mark a descriptor used (§2.8.1: both equal
    /// to its wrap counter).
    pub const fn used_flags(self) -> u16 {
        if self.set {
            desc::F_AVAIL | desc::F_USED
        } else {
            0
        }
    }

    /// True if `flags` mark a descriptor available for this (the device's expected) wrap
    /// counter: AVAIL matches it and USED does not.
    pub const fn is_avail(self, flags: u16) -> bool {
        flags & (desc::F_AVAIL | desc::F_USED) == self.avail_flags()
    }

    /// True if `flags` mark a descriptor used for this (the driver's expected) wrap counter:
    /// AVAIL and USED both match it.
    pub const fn is_used(self, flags: u16) -> bool {
        flags & (desc::F_AVAIL | desc::F_USED) == self.used_flags()
    }
}

/// Event suppression with VIRTIO_F_EVENT_IDX (§2.8.10, flags `RING_EVENT_FLAGS_DESC`): true if
/// publishing the `published` entries that end just before ring offset `new` (whose wrap
/// counter is `new_wrap`) passed the entry the other side asked about in `event_off_wrap`
/// (offset in bits 0..15, wrap counter in bit 15), i.e. a notification is due.
///
/// `published` larger than `queue_size` is treated as `queue_size` (every entry). Wrapping
/// 16-bit arithmetic, like [`crate::split::need_event`]; never panics.
pub const fn need_event(
    event_off_wrap: u16,
    new: u16,
    new_wrap: WrapCounter,
    published: u16,
    queue_size: u16,
) -> bool {
    let published = if published > queue_size {
        queue_size
    } else {
        published
    };
    let mut event = event_off_wrap & event::OFF_MASK;
    if (event_off_wrap >> 15) != new_wrap.bit() {
        // The event refers to the previous lap: move it one ring length back.
        event = event.wrapping_sub(queue_size);
    }
    crate::split::need_event(event, new, new.wrapping_sub(published))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn need_event_matches_walking_the_ring(
            size in 1u16..=64,
            new_raw in any::<u16>(),
            wrap_bit in 0u16..2,
            published_raw in any::<u16>(),
            event_raw in any::<u16>(),
            event_wrap in 0u16..2,
        ) {
            let new = new_raw % size;
            let published = published_raw % (size + 1);
            let event_off = event_raw % size;
            let new_wrap = WrapCounter::from_bit(wrap_bit);
            // Reference: walk back from `new` over the published entries.
            let (mut off, mut wrap) = (new, new_wrap);
            let mut hit = false;
            for _ in 0..published {
                if off == 0 {
                    off = size;
                    wrap = wrap.toggled();
                }
                off -= 1;
                hit |= off == event_off && wrap.bit() == event_wrap;
            }
            let off_wrap = event_off | (event_wrap << 15);
            prop_assert_eq!(need_event(off_wrap, new, new_wrap, published, size), hit);
        }
    }

    #[test]
    fn avail_and_used_flags_follow_the_wrap_counter() {
        // virtio 1.2 §2.8.1: available when AVAIL == wrap and USED != wrap; used when both
        // equal the wrap counter.
        let w = WrapCounter::INITIAL;
        assert_eq!(w.bit(), 1);
        assert!(w.is_avail(desc::F_AVAIL | desc::F_NEXT));
        assert!(!w.is_avail(desc::F_AVAIL | desc::F_USED));
        assert!(w.is_used(desc::F_AVAIL | desc::F_USED));
        assert!(!w.is_used(desc::F_AVAIL));
        let z = w.toggled();
        assert_eq!(z, WrapCounter::ZERO);
        assert!(z.is_avail(desc::F_USED));
        assert!(z.is_used(0));
        assert!(!z.is_used(desc::F_USED));
        assert_eq!(WrapCounter::from_bit(3), WrapCounter::INITIAL);
    }
}
