//! What the driver asks for (feature negotiation, virtio 1.2 §2.2, §5.2.3) and the device
//! limits it then obeys (configuration space, virtio 1.2 §5.2.4).

use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkConfig, BlkFeatures, DEPENDENCIES, SECTOR_SIZE};
use vireo_spec::negotiation::{NegotiationError, Negotiator};
use vireo_spec::Features;

use super::BlkDriverError;

/// The virtio-blk features this driver uses when offered (virtio 1.2 §5.2.3): segment limits,
/// block size, flush, discard, write zeroes, several queues; RO is accepted so writes are
/// refused locally (§5.2.6.1: "A driver SHOULD accept the VIRTIO_BLK_F_RO feature if offered").
pub const DRIVER_BLK_FEATURES: BlkFeatures = BlkFeatures::SIZE_MAX
    .union(BlkFeatures::SEG_MAX)
    .union(BlkFeatures::GEOMETRY)
    .union(BlkFeatures::RO)
    .union(BlkFeatures::BLK_SIZE)
    .union(BlkFeatures::FLUSH)
    .union(BlkFeatures::TOPOLOGY)
    .union(BlkFeatures::MQ)
    .union(BlkFeatures::DISCARD)
    .union(BlkFeatures::WRITE_ZEROES);

/// The ring features the driver-side virtqueue implements (indirect descriptors, event index).
pub const DRIVER_RING_FEATURES: Features = Features::INDIRECT_DESC.union(Features::EVENT_IDX);

/// What the caller wants from negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationOptions {
    /// Ring format to insist on: [`RingFormat::Packed`] fails unless the device offers
    /// RING_PACKED; [`RingFormat::Split`] never accepts it.
    pub format: RingFormat,
    /// Ring features to leave out even when offered (for example to test without
    /// EVENT_IDX).
    pub without: Features,
}

impl Default for NegotiationOptions {
    fn default() -> Self {
        NegotiationOptions {
            format: RingFormat::Split,
            without: Features::empty(),
        }
    }
}

/// Why negotiation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegotiateError {
    /// Device does not offer VIRTIO_F_VERSION_1; this driver is modern only (virtio 1.2 §6.1).
    NotModern,
    /// Device does not offer VIRTIO_F_RING_PACKED, which was asked for (virtio 1.2 §2.8).
    PackedNotOffered,
    /// Feature selection broke a negotiation rule (virtio 1.2 §2.2.1).
    Rules(NegotiationError),
}

impl core::fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NegotiateError::NotModern => write!(
                f,
                "device does not offer VIRTIO_F_VERSION_1; this driver is modern only"
            ),
            NegotiateError::PackedNotOffered => write!(
                f,
                "device does not offer VIRTIO_F_RING_PACKED, which was asked for"
            ),
            NegotiateError::Rules(e) => {
                write!(f, "feature selection broke a negotiation rule: {e}")
            }
        }
    }
}

impl core::error::Error for NegotiateError {}

/// Every feature the driver would accept for `options` (a transport that negotiates by
/// itself takes this as its wish list).
pub fn wanted_features(options: &NegotiationOptions) -> Features {
    let mut wants = Features::VERSION_1
        | DRIVER_BLK_FEATURES.to_features()
        | DRIVER_RING_FEATURES.difference(options.without);
    if options.format == RingFormat::Packed {
        wants |= Features::RING_PACKED;
    }
    wants
}

/// The features to accept from those the device `offered` (virtio 1.2 §3.1.1 step 5).
pub fn negotiate(
    offered: Features,
    options: &NegotiationOptions,
) -> Result<Features, NegotiateError> {
    if !offered.contains(Features::VERSION_1) {
        return Err(NegotiateError::NotModern);
    }
    if options.format == RingFormat::Packed && !offered.contains(Features::RING_PACKED) {
        return Err(NegotiateError::PackedNotOffered);
    }
    let wants = wanted_features(options);
    Negotiator::modern(DEPENDENCIES)
        .select(offered, wants)
        .map_err(NegotiateError::Rules)
}

/// Whether the device takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads and writes.
    ReadWrite,
    /// VIRTIO_BLK_F_RO: reads only.
    ReadOnly,
}

/// What the driver knows of the device: the negotiated features and the limits from its
/// configuration space that apply to them (virtio 1.2 §5.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkDeviceInfo {
    /// The negotiated feature word.
    pub features: Features,
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Reads and writes, or reads only.
    pub access: Access,
    /// Most data segments per request (SEG_MAX), `None` when not negotiated.
    pub seg_max: Option<u32>,
    /// Longest data segment in bytes (SIZE_MAX), `None` when not negotiated or 0.
    pub size_max: Option<u32>,
    /// Logical block size in bytes (BLK_SIZE), 512 when not negotiated.
    pub blk_size: u32,
    /// Request queues (MQ), 1 when not negotiated.
    pub num_queues: u16,
    /// Most ranges per discard request (DISCARD); a device's 0 is read as 1.
    pub max_discard_seg: u32,
    /// Most sectors per discard range (DISCARD); 0 means no limit was given.
    pub max_discard_sectors: u32,
    /// Most ranges per write-zeroes request (WRITE_ZEROES); a device's 0 is read as 1.
    pub max_write_zeroes_seg: u32,
    /// Most sectors per write-zeroes range (WRITE_ZEROES); 0 means no limit was given.
    pub max_write_zeroes_sectors: u32,
}

impl BlkDeviceInfo {
    /// The limits that the `negotiated` features make valid in `config`.
    pub fn new(negotiated: Features, config: &BlkConfig) -> Result<Self, BlkDriverError> {
        let blk = BlkFeatures::from_features(negotiated);
        let has = |f: BlkFeatures| blk.contains(f);
        let seg_max = if has(BlkFeatures::SEG_MAX) {
            if config.seg_max == 0 {
                return Err(BlkDriverError::InvalidConfig {
                    reason: "SEG_MAX negotiated with seg_max 0",
                });
            }
            Some(config.seg_max)
        } else {
            None
        };
        // QEMU's vhost-user-blk export (7.2) offers SIZE_MAX with size_max 0: read as "no
        // limit given", like Linux's virtio_blk does.
        let size_max = match (has(BlkFeatures::SIZE_MAX), config.size_max) {
            (false, _) | (true, 0) => None,
            (true, v) if u64::from(v) < SECTOR_SIZE => {
                return Err(BlkDriverError::InvalidConfig {
                    reason: "SIZE_MAX negotiated with size_max below 512",
                })
            }
            (true, v) => Some(v),
        };
        let blk_size = if has(BlkFeatures::BLK_SIZE) {
            if !config.blk_size.is_power_of_two() || u64::from(config.blk_size) < SECTOR_SIZE {
                return Err(BlkDriverError::InvalidConfig {
                    reason: "blk_size is not a power of two of at least 512",
                });
            }
            config.blk_size
        } else {
            SECTOR_SIZE as u32
        };
        let num_queues = if has(BlkFeatures::MQ) {
            if config.num_queues == 0 {
                return Err(BlkDriverError::InvalidConfig {
                    reason: "MQ negotiated with num_queues 0",
                });
            }
            config.num_queues
        } else {
            1
        };
        Ok(BlkDeviceInfo {
            features: negotiated,
            capacity: config.capacity,
            access: if has(BlkFeatures::RO) {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            },
            seg_max,
            size_max,
            blk_size,
            num_queues,
            max_discard_seg: config.max_discard_seg.max(1),
            max_discard_sectors: config.max_discard_sectors,
            max_write_zeroes_seg: config.max_write_zeroes_seg.max(1),
            max_write_zeroes_sectors: config.max_write_zeroes_sectors,
        })
    }

    /// The negotiated virtio-blk feature bits.
    pub fn blk_features(&self) -> BlkFeatures {
        BlkFeatures::from_features(self.features)
    }

    /// The ring format the features select.
    pub fn format(&self) -> RingFormat {
        RingFormat::from_features(self.features)
    }

    /// Capacity in bytes (saturating).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity.saturating_mul(SECTOR_SIZE)
    }
}
