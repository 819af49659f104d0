//! Device types and their ids (virtio 1.2 §5 "Device Types", table of device ids, extended by
//! the virtio 1.3 draft).
//!
//! An id this table does not know is not an error: [`DeviceId::from_u32`] returns `None` and
//! [`DeviceType::from_u32`] gives [`DeviceType::Unknown`], so a new device type can still be
//! listed (as a number).

macro_rules! device_ids {
    ($( $(#[doc = $doc:literal])* $variant:ident = $id:literal, $name:literal; )*) => {
        /// A device type the spec assigns an id to (id 0 is reserved as invalid and is not one).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum DeviceId {
            $( $(#[doc = $doc])* $variant = $id, )*
        }

        impl DeviceId {
            /// Every known device type, in id order.
            pub const ALL: &'static [DeviceId] = &[ $( DeviceId::$variant, )* ];

            /// The device type with this id, or `None` for 0, unassigned and unknown ids.
            pub const fn from_u32(id: u32) -> Option<DeviceId> {
                match id {
                    $( $id => Some(DeviceId::$variant), )*
                    _ => None,
                }
            }

            /// The id as the transport reports it.
            pub const fn as_u32(self) -> u32 {
                self as u32
            }

            /// The name the spec's device-id table gives this device.
            pub const fn name(self) -> &'static str {
                match self {
                    $( DeviceId::$variant => $name, )*
                }
            }
        }
    };
}

device_ids! {
    /// Network device (§5.1).
    Net = 1, "network device";
    /// Block device (§5.2).
    Block = 2, "block device";
    /// Console (§5.3).
    Console = 3, "console";
    /// Entropy source (§5.4).
    Entropy = 4, "entropy source";
    /// Traditional memory balloon (§5.5).
    BalloonTraditional = 5, "memory ballooning (traditional)";
    /// ioMemory.
    IoMemory = 6, "ioMemory";
    /// rpmsg.
    Rpmsg = 7, "rpmsg";
    /// SCSI host (§5.6).
    Scsi = 8, "SCSI host";
    /// 9P transport.
    NineP = 9, "9P transport";
    /// mac80211 wlan.
    Mac80211Wlan = 10, "mac80211 wlan";
    /// rproc serial.
    RprocSerial = 11, "rproc serial";
    /// virtio CAIF.
    Caif = 12, "virtio CAIF";
    /// Memory balloon.
    MemoryBalloon = 13, "memory balloon";
    /// GPU device (§5.7).
    Gpu = 16, "GPU device";
    /// Timer/clock device (virtio 1.2), RTC device in the 1.3 draft.
    Clock = 17, "timer/clock (RTC) device";
    /// Input device (§5.8).
    Input = 18, "input device";
    /// Socket device (vsock, §5.10).
    Socket = 19, "socket device";
    /// Crypto device (§5.9).
    Crypto = 20, "crypto device";
    /// Signal distribution module.
    SignalDistribution = 21, "signal distribution module";
    /// pstore device.
    Pstore = 22, "pstore device";
    /// IOMMU device (§5.13).
    Iommu = 23, "IOMMU device";
    /// Memory device (§5.15).
    Mem = 24, "memory device";
    /// Sound device (§5.14).
    Sound = 25, "sound device";
    /// File system device (§5.11).
    Fs = 26, "file system device";
    /// PMEM device (§5.19).
    Pmem = 27, "PMEM device";
    /// RPMB device (§5.12).
    Rpmb = 28, "RPMB device";
    /// mac80211 hwsim wireless simulation device.
    Mac80211Hwsim = 29, "mac80211 hwsim wireless simulation device";
    /// Video encoder device.
    VideoEncoder = 30, "video encoder device";
    /// Video decoder device.
    VideoDecoder = 31, "video decoder device";
    /// SCMI device (§5.17).
    Scmi = 32, "SCMI device";
    /// Nitro secure module.
    NitroSecureModule = 33, "NitroSecureModule";
    /// I2C adapter (§5.16).
    I2c = 34, "I2C adapter";
    /// Watchdog.
    Watchdog = 35, "watchdog";
    /// CAN device.
    Can = 36, "CAN device";
    /// Parameter server.
    ParameterServer = 38, "parameter server";
    /// Audio policy device.
    AudioPolicy = 39, "audio policy device";
    /// Bluetooth device.
    Bluetooth = 40, "Bluetooth device";
    /// GPIO device (§5.18).
    Gpio = 41, "GPIO device";
    /// RDMA device.
    Rdma = 42, "RDMA device";
    /// Camera device (1.3 draft).
    Camera = 43, "camera device";
    /// ISM device (1.3 draft).
    Ism = 44, "ISM device";
    /// SPI controller (1.3 draft).
    Spi = 45, "SPI controller";
    /// TEE device (1.3 draft).
    Tee = 46, "TEE device";
    /// CPU balloon device (1.3 draft).
    CpuBalloon = 47, "CPU balloon device";
    /// Media device (1.3 draft).
    Media = 48, "media device";
    /// USB controller (1.3 draft).
    Usb = 49, "USB controller";
}

impl core::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A device id as read from a transport: a known type, or a number this table does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// A device type the spec names.
    Known(DeviceId),
    /// Id 0 (reserved, invalid), an unassigned id, or one newer than this table.
    Unknown(u32),
}

impl DeviceType {
    /// Classifies a raw device id; never fails.
    pub const fn from_u32(id: u32) -> DeviceType {
        match DeviceId::from_u32(id) {
            Some(known) => DeviceType::Known(known),
            None => DeviceType::Unknown(id),
        }
    }

    /// The raw device id.
    pub const fn as_u32(self) -> u32 {
        match self {
            DeviceType::Known(known) => known.as_u32(),
            DeviceType::Unknown(id) => id,
        }
    }
}

impl core::fmt::Display for DeviceType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceType::Known(known) => write!(f, "{} ({})", known.name(), known.as_u32()),
            DeviceType::Unknown(id) => write!(f, "unknown device type ({id})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_from_the_spec_table() {
        // virtio 1.2 §5, table "Device Types".
        assert_eq!(DeviceId::from_u32(1), Some(DeviceId::Net));
        assert_eq!(DeviceId::from_u32(2), Some(DeviceId::Block));
        assert_eq!(DeviceId::from_u32(19), Some(DeviceId::Socket));
        assert_eq!(DeviceId::from_u32(26), Some(DeviceId::Fs));
        assert_eq!(DeviceId::from_u32(45), Some(DeviceId::Spi));
        assert_eq!(DeviceId::Block.as_u32(), 2);
        assert_eq!(DeviceId::Block.name(), "block device");
    }

    #[test]
    fn reserved_and_unassigned_ids_are_unknown_not_errors() {
        for id in [0, 14, 15, 37, 50, u32::MAX] {
            assert_eq!(DeviceId::from_u32(id), None, "id {id}");
            assert_eq!(DeviceType::from_u32(id), DeviceType::Unknown(id));
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        let ids: std::vec::Vec<u32> = DeviceId::ALL.iter().map(|d| d.as_u32()).collect();
        assert!(ids.windows(2).all(|w| w.first() < w.get(1)));
        assert_eq!(ids.len(), 46);
    }

    proptest! {
        #[test]
        fn raw_ids_round_trip(id in any::<u32>()) {
            let ty = DeviceType::from_u32(id);
            prop_assert_eq!(ty.as_u32(), id);
            if let Some(known) = DeviceId::from_u32(id) {
                prop_assert_eq!(known.as_u32(), id);
                prop_assert_eq!(ty, DeviceType::Known(known));
            }
        }
    }
}
