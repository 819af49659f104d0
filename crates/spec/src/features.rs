//! Device-independent feature bits (virtio 1.2 §6 "Reserved Feature Bits").
//!
//! Device-specific bits (0 to 23, and 50 to 127 for some devices) live with each device type.

use bitflags::bitflags;

bitflags! {
    /// A 64-bit feature word. Device-independent bits have names here; device-specific bits
    /// are kept as they are (`from_bits_retain`), so a round trip never loses a bit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Features: u64 {
        /// Driver can use descriptors with VIRTQ_DESC_F_INDIRECT (§2.7.5.3, §2.8.7).
        const INDIRECT_DESC = 1 << 28;
        /// `used_event` / `avail_event` fields, or descriptor event suppression (§2.7.7, §2.8.10).
        const EVENT_IDX = 1 << 29;
        /// Compliance with virtio 1.x (§6): not a legacy device.
        const VERSION_1 = 1 << 32;
        /// Device is behind an IOMMU or limited by platform access rules (§6).
        const ACCESS_PLATFORM = 1 << 33;
        /// Packed virtqueue layout (§2.8).
        const RING_PACKED = 1 << 34;
        /// Buffers are used in the order they are made available (§2.7.9, §2.8.13... §6).
        const IN_ORDER = 1 << 35;
        /// Memory accesses ordered by the platform (§6).
        const ORDER_PLATFORM = 1 << 36;
        /// Single root I/O virtualization (§6).
        const SR_IOV = 1 << 37;
        /// Driver passes extra data in device notifications (§2.9, §6).
        const NOTIFICATION_DATA = 1 << 38;
        /// Driver uses the device-provided notification data (§6).
        const NOTIF_CONFIG_DATA = 1 << 39;
        /// Driver can reset a queue individually (§2.6.1, §6).
        const RING_RESET = 1 << 40;
        /// Device exposes administration virtqueues (virtio 1.3 draft, "Administration Virtqueues", §6).
        const ADMIN_VQ = 1 << 41;
        /// Driver can suspend the device with the SUSPEND status bit (virtio 1.3 draft §3.4).
        const SUSPEND = 1 << 43;
    }
}

impl Features {
    /// All device-independent bits that have names (bits 28 to 41 and 43; the legacy-only
    /// bits 24 and 27 are named in [`crate::names`] but not here).
    pub const DEVICE_INDEPENDENT: Features = Features::all();

    /// True if every bit of `other` is set.
    #[inline]
    pub fn has(self, other: Features) -> bool {
        self.contains(other)
    }

    /// The feature word with only bit `bit` set, or empty if `bit` is 64 or more.
    #[inline]
    pub const fn bit(bit: u32) -> Features {
        match 1u64.checked_shl(bit) {
            Some(mask) => Features::from_bits_retain(mask),
            None => Features::empty(),
        }
    }
}
