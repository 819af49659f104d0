//! What the device offers: feature bits (virtio 1.2 §5.2.3) and the configuration space
//! (§5.2.4), derived once from the storage and the options.

use vireo_spec::blk::{BlkConfig, BlkFeatures, SECTOR_SIZE};
use vireo_spec::Features;

use super::{BlkOptions, CachePolicy, RingFormats};
use crate::storage::Storage;

/// Most sectors one discard or write-zeroes segment may cover (a little under 2 GiB, so that a
/// range always fits the `fallocate` and `io_uring` length types).
pub(crate) const MAX_RANGE_SECTORS: u32 = 0x003f_ffff;

/// Most data segments the device accepts in one request, whatever it is asked.
const MAX_SEG_MAX: u32 = 1024;

/// The limits the device advertises and enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Capacity in bytes.
    pub(crate) capacity: u64,
    /// Most data segments per read or write (`seg_max`).
    pub(crate) seg_max: u32,
    /// Logical block size in bytes (`blk_size`): reads and writes are multiples of it.
    pub(crate) block_size: u32,
    /// True when the device refuses writes (`VIRTIO_BLK_F_RO`).
    pub(crate) read_only: bool,
    /// Segments per discard / write-zeroes request (`max_discard_seg`,
    /// `max_write_zeroes_seg`).
    pub(crate) max_range_segments: u32,
    /// Sectors per discard / write-zeroes segment.
    pub(crate) max_range_sectors: u32,
}

impl Limits {
    pub(crate) fn new(storage: &dyn Storage, options: &BlkOptions) -> Self {
        // Without indirect descriptors a request also needs its header and status descriptors
        // in the ring (the rule QEMU's devices follow too).
        let ring_bound = u32::from(options.max_queue_size).saturating_sub(2).max(1);
        let seg_max = options.seg_max.clamp(1, MAX_SEG_MAX).min(ring_bound);
        let align = storage.alignment().max(SECTOR_SIZE);
        let block_size = u32::try_from(align).unwrap_or(u32::MAX);
        Limits {
            capacity: storage.capacity(),
            seg_max,
            block_size,
            read_only: storage.read_only(),
            max_range_segments: MAX_RANGE_SEGMENTS,
            max_range_sectors: MAX_RANGE_SECTORS,
        }
    }
}

/// Discard / write-zeroes segments per request (`max_discard_seg`, `max_write_zeroes_seg`).
/// `request::range` carries out exactly one segment and answers UNSUPP for more, so this stays 1
/// until it loops over all of them (the assertion keeps the two in step).
pub(crate) const MAX_RANGE_SEGMENTS: u32 = 1;
const _: () = assert!(
    MAX_RANGE_SEGMENTS == 1,
    "request::range handles one segment"
);

/// The feature bits offered.
pub(crate) fn features(storage: &dyn Storage, options: &BlkOptions) -> u64 {
    let mut blk = BlkFeatures::SIZE_MAX
        | BlkFeatures::SEG_MAX
        | BlkFeatures::BLK_SIZE
        | BlkFeatures::FLUSH
        | BlkFeatures::CONFIG_WCE;
    if options.num_queues > 1 {
        blk |= BlkFeatures::MQ;
    }
    if storage.read_only() {
        blk |= BlkFeatures::RO;
    } else {
        blk |= BlkFeatures::DISCARD | BlkFeatures::WRITE_ZEROES;
    }
    let mut common = Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX;
    // `DeviceQueue` runs both formats (virtio 1.2 §2.7, §2.8).
    if options.rings == RingFormats::SplitAndPacked {
        common |= Features::RING_PACKED;
    }
    blk.bits() | common.bits()
}

/// The initial configuration space.
pub(crate) fn config_space(
    storage: &dyn Storage,
    limits: &Limits,
    options: &BlkOptions,
) -> BlkConfig {
    let block_sectors = u32::try_from(u64::from(limits.block_size) / SECTOR_SIZE).unwrap_or(1);
    let (max_range_sectors, max_range_seg) = if limits.read_only {
        (0, 0)
    } else {
        (limits.max_range_sectors, limits.max_range_segments)
    };
    BlkConfig {
        capacity: storage.capacity() / SECTOR_SIZE,
        size_max: options.size_max.max(4096),
        seg_max: limits.seg_max,
        blk_size: limits.block_size,
        writeback: match options.cache {
            CachePolicy::WriteBack => 1,
            CachePolicy::WriteThrough => 0,
        },
        num_queues: options.num_queues,
        max_discard_sectors: max_range_sectors,
        max_discard_seg: max_range_seg,
        discard_sector_alignment: block_sectors,
        max_write_zeroes_sectors: max_range_sectors,
        max_write_zeroes_seg: max_range_seg,
        write_zeroes_may_unmap: u8::from(!limits.read_only),
        ..BlkConfig::default()
    }
}
