//! virtio-blk wire formats (virtio 1.2 §5.2 "Block Device").

mod config;

pub use config::{BlkConfig, ConfigWindow, Geometry, Topology, ZonedCharacteristics};

use crate::error::ViewError;
use crate::negotiation::FeatureDependency;
use crate::view::define_view;
use bitflags::bitflags;

/// Sector size: capacity and request sectors are in 512-byte units (§5.2.4, §5.2.6).
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the GET_ID answer: a NUL-padded ASCII string, not terminated at 20 bytes
/// (§5.2.6).
pub const ID_BYTES: usize = 20;

bitflags! {
    /// virtio-blk feature bits (§5.2.3). Device-independent bits share the word: convert with
    /// [`BlkFeatures::to_features`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct BlkFeatures: u64 {
        /// Maximum size of one segment is in `size_max`.
        const SIZE_MAX = 1 << 1;
        /// Maximum number of segments is in `seg_max`.
        const SEG_MAX = 1 << 2;
        /// Disk geometry is in `geometry`.
        const GEOMETRY = 1 << 4;
        /// The device is read-only.
        const RO = 1 << 5;
        /// Block size is in `blk_size`.
        const BLK_SIZE = 1 << 6;
        /// Cache flush command.
        const FLUSH = 1 << 9;
        /// I/O alignment information is in `topology`.
        const TOPOLOGY = 1 << 10;
        /// The driver can switch the cache between writeback and writethrough.
        const CONFIG_WCE = 1 << 11;
        /// Multiqueue; `num_queues` is valid.
        const MQ = 1 << 12;
        /// Discard command.
        const DISCARD = 1 << 13;
        /// Write-zeroes command.
        const WRITE_ZEROES = 1 << 14;
        /// Storage lifetime information (GET_LIFETIME).
        const LIFETIME = 1 << 15;
        /// Secure erase command.
        const SECURE_ERASE = 1 << 16;
        /// Zoned block device (§5.2.3; a newer addition than the other bits).
        const ZONED = 1 << 17;
    }
}

impl BlkFeatures {
    /// As a full feature word.
    pub const fn to_features(self) -> crate::Features {
        crate::Features::from_bits_retain(self.bits())
    }

    /// The block-specific bits of a feature word.
    pub const fn from_features(features: crate::Features) -> Self {
        BlkFeatures::from_bits_truncate(features.bits())
    }
}

/// Feature dependencies of virtio-blk: §5.2.3 lists none, so the table is empty.
pub const DEPENDENCIES: &[FeatureDependency] = &[];

/// Names of the virtio-blk feature bits, including the legacy ones (§5.2.3.1).
pub const FEATURE_NAMES: &[(u32, &str)] = &[
    (0, "VIRTIO_BLK_F_BARRIER (legacy)"),
    (1, "VIRTIO_BLK_F_SIZE_MAX"),
    (2, "VIRTIO_BLK_F_SEG_MAX"),
    (4, "VIRTIO_BLK_F_GEOMETRY"),
    (5, "VIRTIO_BLK_F_RO"),
    (6, "VIRTIO_BLK_F_BLK_SIZE"),
    (7, "VIRTIO_BLK_F_SCSI (legacy)"),
    (9, "VIRTIO_BLK_F_FLUSH"),
    (10, "VIRTIO_BLK_F_TOPOLOGY"),
    (11, "VIRTIO_BLK_F_CONFIG_WCE"),
    (12, "VIRTIO_BLK_F_MQ"),
    (13, "VIRTIO_BLK_F_DISCARD"),
    (14, "VIRTIO_BLK_F_WRITE_ZEROES"),
    (15, "VIRTIO_BLK_F_LIFETIME"),
    (16, "VIRTIO_BLK_F_SECURE_ERASE"),
    (17, "VIRTIO_BLK_F_ZONED"),
];

/// Request types (`type` of `struct virtio_blk_req`, §5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// `VIRTIO_BLK_T_IN`: read.
    In,
    /// `VIRTIO_BLK_T_OUT`: write.
    Out,
    /// `VIRTIO_BLK_T_FLUSH`.
    Flush,
    /// `VIRTIO_BLK_T_GET_ID`: 20-byte device id string.
    GetId,
    /// `VIRTIO_BLK_T_GET_LIFETIME`.
    GetLifetime,
    /// `VIRTIO_BLK_T_DISCARD`.
    Discard,
    /// `VIRTIO_BLK_T_WRITE_ZEROES`.
    WriteZeroes,
    /// `VIRTIO_BLK_T_SECURE_ERASE`.
    SecureErase,
}

impl RequestType {
    /// The type for a raw value; `None` for types this table does not know (the device
    /// answers those with [`BlkStatus::Unsupp`]).
    pub const fn from_u32(value: u32) -> Option<RequestType> {
        Some(match value {
            0 => RequestType::In,
            1 => RequestType::Out,
            4 => RequestType::Flush,
            8 => RequestType::GetId,
            10 => RequestType::GetLifetime,
            11 => RequestType::Discard,
            13 => RequestType::WriteZeroes,
            14 => RequestType::SecureErase,
            _ => return None,
        })
    }

    /// The raw value.
    pub const fn as_u32(self) -> u32 {
        match self {
            RequestType::In => 0,
            RequestType::Out => 1,
            RequestType::Flush => 4,
            RequestType::GetId => 8,
            RequestType::GetLifetime => 10,
            RequestType::Discard => 11,
            RequestType::WriteZeroes => 13,
            RequestType::SecureErase => 14,
        }
    }
}

/// Request status, the last byte the device writes (§5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlkStatus {
    /// `VIRTIO_BLK_S_OK`.
    Ok,
    /// `VIRTIO_BLK_S_IOERR`.
    IoErr,
    /// `VIRTIO_BLK_S_UNSUPP`.
    Unsupp,
}

impl BlkStatus {
    /// The byte the device writes.
    pub const fn as_u8(self) -> u8 {
        match self {
            BlkStatus::Ok => 0,
            BlkStatus::IoErr => 1,
            BlkStatus::Unsupp => 2,
        }
    }

    /// The status for a byte, `None` for values other than 0, 1, 2 (zoned statuses included).
    pub const fn from_u8(value: u8) -> Option<BlkStatus> {
        match value {
            0 => Some(BlkStatus::Ok),
            1 => Some(BlkStatus::IoErr),
            2 => Some(BlkStatus::Unsupp),
            _ => None,
        }
    }
}

define_view! {
    /// The 16-byte request header at the start of every request (§5.2.6).
    pub struct ReqHeader(16) {
        /// `type`: a [`RequestType`] value.
        request_type / set_request_type: le32 @ 0,
        /// `reserved` (I/O priority in some implementations).
        reserved / set_reserved: le32 @ 4,
        /// `sector`: offset in 512-byte sectors (IN and OUT).
        sector / set_sector: le64 @ 8,
    }
}

/// A request header as values; the type is kept raw so unknown types can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestHeader {
    /// Raw `type`.
    pub request_type: u32,
    /// Raw `reserved`.
    pub reserved: u32,
    /// Start sector.
    pub sector: u64,
}

impl RequestHeader {
    /// Reads the header from its first 16 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ViewError> {
        let view = ReqHeader::new_checked(bytes)?;
        Ok(RequestHeader {
            request_type: view.request_type(),
            reserved: view.reserved(),
            sector: view.sector(),
        })
    }

    /// The known request type, if it is one.
    pub const fn kind(&self) -> Option<RequestType> {
        RequestType::from_u32(self.request_type)
    }

    /// Writes the header into the first 16 bytes of `bytes`.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), ViewError> {
        let mut view = ReqHeader::new_checked(bytes)?;
        view.set_request_type(self.request_type);
        view.set_reserved(self.reserved);
        view.set_sector(self.sector);
        Ok(())
    }
}

define_view! {
    /// One `struct virtio_blk_discard_write_zeroes` segment (§5.2.6), 16 bytes.
    pub struct Segment(16) {
        /// First sector.
        sector / set_sector: le64 @ 0,
        /// Number of sectors.
        num_sectors / set_num_sectors: le32 @ 8,
        /// Flags: bit 0 `unmap`, the other 31 bits reserved.
        flags / set_flags: le32 @ 12,
    }
}

/// `unmap` bit of a segment's flags (write zeroes only; must be 0 for discard, §5.2.6.1).
pub const SEGMENT_F_UNMAP: u32 = 1;

/// A discard / write-zeroes / secure-erase segment as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiscardSegment {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// Raw flags (reserved bits kept so the device can refuse them).
    pub flags: u32,
}

impl DiscardSegment {
    /// Reads a segment from its first 16 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ViewError> {
        let view = Segment::new_checked(bytes)?;
        Ok(DiscardSegment {
            sector: view.sector(),
            num_sectors: view.num_sectors(),
            flags: view.flags(),
        })
    }

    /// Writes the segment into the first 16 bytes of `bytes`.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), ViewError> {
        let mut view = Segment::new_checked(bytes)?;
        view.set_sector(self.sector);
        view.set_num_sectors(self.num_sectors);
        view.set_flags(self.flags);
        Ok(())
    }

    /// True if the `unmap` bit is set.
    pub const fn unmap(&self) -> bool {
        self.flags & SEGMENT_F_UNMAP != 0
    }

    /// True if reserved flag bits (1..32) are set.
    pub const fn has_reserved_flags(&self) -> bool {
        self.flags & !SEGMENT_F_UNMAP != 0
    }
}

define_view! {
    /// `struct virtio_blk_lifetime`, the GET_LIFETIME answer (§5.2.6), 6 bytes.
    pub struct Lifetime(6) {
        /// Percentage of reserved blocks consumed (`VIRTIO_BLK_PRE_EOL_INFO_*`).
        pre_eol_info / set_pre_eol_info: le16 @ 0,
        /// Lifetime estimate, type A (SLC).
        device_lifetime_est_typ_a / set_device_lifetime_est_typ_a: le16 @ 2,
        /// Lifetime estimate, type B (MLC).
        device_lifetime_est_typ_b / set_device_lifetime_est_typ_b: le16 @ 4,
    }
}

#[cfg(test)]
mod tests;
