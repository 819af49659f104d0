//! Names of feature bits, for listing what a device offers (`vireo probe`).
//!
//! [`feature_names`] walks the set bits of a feature word, lowest first, and names each from
//! the device's table ([`device_feature_names`]) or the device-independent table
//! ([`DEVICE_INDEPENDENT_NAMES`], virtio 1.2 §6); a bit in neither is
//! [`FeatureName::Unknown`]. No allocation.

use crate::device_id::DeviceId;
use crate::features::Features;

/// A table of `(bit number, name)`.
pub type NameTable = &'static [(u32, &'static str)];

/// Device-independent feature names (virtio 1.2 §6 "Reserved Feature Bits", 1.3 draft for
/// ADMIN_VQ and SUSPEND; legacy-only bits marked).
pub const DEVICE_INDEPENDENT_NAMES: NameTable = &[
    (24, "VIRTIO_F_NOTIFY_ON_EMPTY (legacy)"),
    (27, "VIRTIO_F_ANY_LAYOUT (legacy)"),
    (28, "VIRTIO_F_INDIRECT_DESC"),
    (29, "VIRTIO_F_EVENT_IDX"),
    (30, "UNUSED (legacy, bit 30)"),
    (32, "VIRTIO_F_VERSION_1"),
    (33, "VIRTIO_F_ACCESS_PLATFORM"),
    (34, "VIRTIO_F_RING_PACKED"),
    (35, "VIRTIO_F_IN_ORDER"),
    (36, "VIRTIO_F_ORDER_PLATFORM"),
    (37, "VIRTIO_F_SR_IOV"),
    (38, "VIRTIO_F_NOTIFICATION_DATA"),
    (39, "VIRTIO_F_NOTIF_CONFIG_DATA"),
    (40, "VIRTIO_F_RING_RESET"),
    (41, "VIRTIO_F_ADMIN_VQ"),
    (43, "VIRTIO_F_SUSPEND"),
];

/// The device-specific name table for `device` (empty for types without one here).
pub fn device_feature_names(device: DeviceId) -> NameTable {
    match device {
        DeviceId::Block => crate::blk::FEATURE_NAMES,
        DeviceId::Net => crate::net::FEATURE_NAMES,
        _ => &[],
    }
}

/// The name of one feature bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureName {
    /// A bit with a name.
    Known {
        /// Bit number.
        bit: u32,
        /// Spec name.
        name: &'static str,
    },
    /// A bit no table names.
    Unknown {
        /// Bit number.
        bit: u32,
    },
}

impl FeatureName {
    /// The bit number.
    pub const fn bit(&self) -> u32 {
        match *self {
            FeatureName::Known { bit, .. } | FeatureName::Unknown { bit } => bit,
        }
    }
}

impl core::fmt::Display for FeatureName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FeatureName::Known { name, .. } => f.write_str(name),
            FeatureName::Unknown { bit } => write!(f, "bit {bit}"),
        }
    }
}

/// Looks `bit` up in `device` then the device-independent table. Device-specific names win
/// (bits 41 and 42 are device-specific for some devices, §2.2).
pub fn feature_name(bit: u32, device: Option<DeviceId>) -> FeatureName {
    let find = |table: NameTable| table.iter().find(|(b, _)| *b == bit).map(|(_, n)| *n);
    let name = device
        .and_then(|d| find(device_feature_names(d)))
        .or_else(|| find(DEVICE_INDEPENDENT_NAMES));
    match name {
        Some(name) => FeatureName::Known { bit, name },
        None => FeatureName::Unknown { bit },
    }
}

/// Iterator over the names of the set bits of a feature word.
#[derive(Debug, Clone)]
pub struct FeatureNames {
    remaining: u64,
    device: Option<DeviceId>,
}

impl Iterator for FeatureNames {
    type Item = FeatureName;

    fn next(&mut self) -> Option<FeatureName> {
        if self.remaining == 0 {
            return None;
        }
        let bit = self.remaining.trailing_zeros();
        self.remaining &= self.remaining.wrapping_sub(1);
        Some(feature_name(bit, self.device))
    }
}

/// Names of every set bit of `features`, lowest bit first.
pub fn feature_names(features: Features, device: Option<DeviceId>) -> FeatureNames {
    FeatureNames {
        remaining: features.bits(),
        device,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn names_of_a_block_device_offer() {
        let word =
            Features::VERSION_1 | Features::from_bits_retain((1 << 9) | (1 << 3) | (1 << 41));
        let names: Vec<_> = feature_names(word, Some(DeviceId::Block))
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "bit 3",
                "VIRTIO_BLK_F_FLUSH",
                "VIRTIO_F_VERSION_1",
                "VIRTIO_F_ADMIN_VQ"
            ]
        );
    }

    #[test]
    fn device_names_win_over_device_independent() {
        assert_eq!(
            feature_name(41, Some(DeviceId::Net)).to_string(),
            "VIRTIO_NET_F_GUEST_RSC4 (legacy)"
        );
        assert_eq!(feature_name(5, None), FeatureName::Unknown { bit: 5 });
        assert_eq!(feature_names(Features::empty(), None).count(), 0);
        assert_eq!(
            feature_names(Features::from_bits_retain(u64::MAX), None).count(),
            64
        );
    }

    #[test]
    fn every_named_features_flag_has_a_name() {
        for flag in Features::all().iter() {
            let bit = flag.bits().trailing_zeros();
            assert!(
                matches!(feature_name(bit, None), FeatureName::Known { .. }),
                "bit {bit}"
            );
        }
    }
}
