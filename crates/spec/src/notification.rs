//! Notification data for VIRTIO_F_NOTIFICATION_DATA (virtio 1.2 §2.9 "Driver
//! Notifications").
//!
//! With that feature an available-buffer notification carries a 32-bit value: bits 0..16 the
//! virtqueue index (or, with VIRTIO_F_NOTIF_CONFIG_DATA, the device-supplied notification
//! config data), bits 16..31 `next_off` and bit 31 `next_wrap`. For a packed ring these are the
//! offset and wrap counter of the next available descriptor; for a split ring together they
//! are the 16-bit available index (`next_idx`).

use crate::packed::WrapCounter;

/// The 32-bit notification value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationData {
    /// Virtqueue index, or notification config data.
    pub vqn: u16,
    /// Next ring offset, 15 bits.
    pub next_off: u16,
    /// Next wrap counter (split: bit 15 of the available index).
    pub next_wrap: WrapCounter,
}

impl NotificationData {
    /// Packed ring: queue `vqn`, next available descriptor at `next_off` (15 bits kept) with
    /// wrap counter `next_wrap`.
    pub const fn packed(vqn: u16, next_off: u16, next_wrap: WrapCounter) -> Self {
        NotificationData {
            vqn,
            next_off: next_off & 0x7fff,
            next_wrap,
        }
    }

    /// Split ring: queue `vqn`, next available index `next_idx`.
    pub const fn split(vqn: u16, next_idx: u16) -> Self {
        NotificationData {
            vqn,
            next_off: next_idx & 0x7fff,
            next_wrap: WrapCounter::from_bit(next_idx >> 15),
        }
    }

    /// Split ring: the available index this notification announces.
    pub const fn next_idx(&self) -> u16 {
        (self.next_off & 0x7fff) | (self.next_wrap.bit() << 15)
    }

    /// Decodes the 32-bit value (every value is valid).
    pub const fn from_u32(value: u32) -> Self {
        NotificationData {
            vqn: value as u16,
            next_off: ((value >> 16) as u16) & 0x7fff,
            next_wrap: WrapCounter::from_bit((value >> 31) as u16),
        }
    }

    /// Encodes the 32-bit value.
    pub const fn to_u32(&self) -> u32 {
        (self.vqn as u32) | ((self.next_idx() as u32) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bit_layout() {
        // vqn in bits 0..16, next_off in 16..31, next_wrap in bit 31.
        let n = NotificationData::packed(2, 5, WrapCounter::INITIAL);
        assert_eq!(n.to_u32(), 0x8005_0002);
        let s = NotificationData::split(1, 0x8003);
        assert_eq!(s.to_u32(), 0x8003_0001);
        assert_eq!(s.next_wrap, WrapCounter::INITIAL);
        assert_eq!(s.next_off, 3);
        assert_eq!(
            NotificationData::packed(0, 0xffff, WrapCounter::ZERO).next_off,
            0x7fff
        );
    }

    proptest! {
        #[test]
        fn every_value_round_trips(value in any::<u32>()) {
            let n = NotificationData::from_u32(value);
            prop_assert_eq!(n.to_u32(), value);
            prop_assert_eq!(NotificationData::split(n.vqn, n.next_idx()), n);
        }
    }
}
