//! `struct virtio_blk_config` (virtio 1.2 §5.2.4 "Device configuration layout", with the
//! secure-erase and zoned fields added after virtio 1.1).
//!
//! Offsets (bytes): capacity 0, size_max 8, seg_max 12, geometry 16 (cylinders le16, heads u8,
//! sectors u8), blk_size 20, topology 24 (physical_block_exp u8, alignment_offset u8,
//! min_io_size le16, opt_io_size le32), writeback 32, unused0 33, num_queues 34,
//! max_discard_sectors 36, max_discard_seg 40, discard_sector_alignment 44,
//! max_write_zeroes_sectors 48, max_write_zeroes_seg 52, write_zeroes_may_unmap 56,
//! unused1[3] 57, max_secure_erase_sectors 60, max_secure_erase_seg 64,
//! secure_erase_sector_alignment 68, zoned 72 (zone_sectors, max_open_zones,
//! max_active_zones, max_append_sectors, write_granularity: le32 each; model u8 at 92;
//! unused2[3]); 96 bytes in all.

use crate::bytes::{get_le16, get_le32, get_le64, get_u8, set_le16, set_le32, set_le64, set_u8};
use crate::error::{check_len, ViewError};

/// Field offsets.
pub mod offset {
    /// `capacity: le64`, in 512-byte sectors.
    pub const CAPACITY: usize = 0;
    /// `size_max: le32`.
    pub const SIZE_MAX: usize = 8;
    /// `seg_max: le32`.
    pub const SEG_MAX: usize = 12;
    /// `geometry.cylinders: le16`.
    pub const CYLINDERS: usize = 16;
    /// `geometry.heads: u8`.
    pub const HEADS: usize = 18;
    /// `geometry.sectors: u8`.
    pub const SECTORS: usize = 19;
    /// `blk_size: le32`.
    pub const BLK_SIZE: usize = 20;
    /// `topology.physical_block_exp: u8`.
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    /// `topology.alignment_offset: u8`.
    pub const ALIGNMENT_OFFSET: usize = 25;
    /// `topology.min_io_size: le16`.
    pub const MIN_IO_SIZE: usize = 26;
    /// `topology.opt_io_size: le32`.
    pub const OPT_IO_SIZE: usize = 28;
    /// `writeback: u8` (driver-writable with CONFIG_WCE).
    pub const WRITEBACK: usize = 32;
    /// `num_queues: le16`.
    pub const NUM_QUEUES: usize = 34;
    /// `max_discard_sectors: le32`.
    pub const MAX_DISCARD_SECTORS: usize = 36;
    /// `max_discard_seg: le32`.
    pub const MAX_DISCARD_SEG: usize = 40;
    /// `discard_sector_alignment: le32`.
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    /// `max_write_zeroes_sectors: le32`.
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    /// `max_write_zeroes_seg: le32`.
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    /// `write_zeroes_may_unmap: u8`.
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
    /// `max_secure_erase_sectors: le32`.
    pub const MAX_SECURE_ERASE_SECTORS: usize = 60;
    /// `max_secure_erase_seg: le32`.
    pub const MAX_SECURE_ERASE_SEG: usize = 64;
    /// `secure_erase_sector_alignment: le32`.
    pub const SECURE_ERASE_SECTOR_ALIGNMENT: usize = 68;
    /// `zoned.zone_sectors: le32`.
    pub const ZONE_SECTORS: usize = 72;
    /// `zoned.max_open_zones: le32`.
    pub const MAX_OPEN_ZONES: usize = 76;
    /// `zoned.max_active_zones: le32`.
    pub const MAX_ACTIVE_ZONES: usize = 80;
    /// `zoned.max_append_sectors: le32`.
    pub const MAX_APPEND_SECTORS: usize = 84;
    /// `zoned.write_granularity: le32`.
    pub const WRITE_GRANULARITY: usize = 88;
    /// `zoned.model: u8`.
    pub const ZONED_MODEL: usize = 92;
    /// Size of the whole structure.
    pub const SIZE: usize = 96;
}

/// `struct virtio_blk_geometry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

/// `struct virtio_blk_topology`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Topology {
    /// log2 of logical blocks per physical block.
    pub physical_block_exp: u8,
    /// Offset of the first aligned logical block.
    pub alignment_offset: u8,
    /// Suggested minimum I/O size in blocks.
    pub min_io_size: u16,
    /// Optimal I/O size in blocks.
    pub opt_io_size: u32,
}

/// `struct virtio_blk_zoned_characteristics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZonedCharacteristics {
    /// Zone size in 512-byte sectors.
    pub zone_sectors: u32,
    /// Maximum open zones.
    pub max_open_zones: u32,
    /// Maximum active zones.
    pub max_active_zones: u32,
    /// Maximum zone-append size in sectors.
    pub max_append_sectors: u32,
    /// Write granularity in bytes.
    pub write_granularity: u32,
    /// Zoned model: 0 none, 1 host-managed, 2 host-aware.
    pub model: u8,
}

/// The virtio-blk configuration space as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Maximum segment size (SIZE_MAX).
    pub size_max: u32,
    /// Maximum segments per request (SEG_MAX).
    pub seg_max: u32,
    /// Geometry (GEOMETRY).
    pub geometry: Geometry,
    /// Block size (BLK_SIZE).
    pub blk_size: u32,
    /// Topology (TOPOLOGY).
    pub topology: Topology,
    /// 1 = writeback cache, 0 = writethrough (CONFIG_WCE).
    pub writeback: u8,
    /// Number of request queues (MQ).
    pub num_queues: u16,
    /// DISCARD limits.
    pub max_discard_sectors: u32,
    /// DISCARD segments per request.
    pub max_discard_seg: u32,
    /// DISCARD alignment in sectors.
    pub discard_sector_alignment: u32,
    /// WRITE_ZEROES limits.
    pub max_write_zeroes_sectors: u32,
    /// WRITE_ZEROES segments per request.
    pub max_write_zeroes_seg: u32,
    /// Whether write zeroes with unmap may deallocate.
    pub write_zeroes_may_unmap: u8,
    /// SECURE_ERASE limits.
    pub max_secure_erase_sectors: u32,
    /// SECURE_ERASE segments per request.
    pub max_secure_erase_seg: u32,
    /// SECURE_ERASE alignment in sectors.
    pub secure_erase_sector_alignment: u32,
    /// Zoned characteristics (ZONED).
    pub zoned: ZonedCharacteristics,
}

/// A window of the configuration space, as [`BlkConfig::read_at`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigWindow {
    bytes: [u8; offset::SIZE],
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for ConfigWindow {
    fn as_ref(&self) -> &[u8] {
        self.bytes.get(self.start..self.end).unwrap_or(&[])
    }
}

impl BlkConfig {
    /// Size of the structure in bytes.
    pub const SIZE: usize = offset::SIZE;

    /// Reads a configuration space. At least `capacity` (8 bytes) must be there; fields past
    /// the end of `bytes` read as 0 (an older device exposes a shorter structure).
    pub fn parse(bytes: &[u8]) -> Result<Self, ViewError> {
        check_len(bytes.len(), 8)?;
        let b = bytes;
        Ok(BlkConfig {
            capacity: get_le64(b, offset::CAPACITY),
            size_max: get_le32(b, offset::SIZE_MAX),
            seg_max: get_le32(b, offset::SEG_MAX),
            geometry: Geometry {
                cylinders: get_le16(b, offset::CYLINDERS),
                heads: get_u8(b, offset::HEADS),
                sectors: get_u8(b, offset::SECTORS),
            },
            blk_size: get_le32(b, offset::BLK_SIZE),
            topology: Topology {
                physical_block_exp: get_u8(b, offset::PHYSICAL_BLOCK_EXP),
                alignment_offset: get_u8(b, offset::ALIGNMENT_OFFSET),
                min_io_size: get_le16(b, offset::MIN_IO_SIZE),
                opt_io_size: get_le32(b, offset::OPT_IO_SIZE),
            },
            writeback: get_u8(b, offset::WRITEBACK),
            num_queues: get_le16(b, offset::NUM_QUEUES),
            max_discard_sectors: get_le32(b, offset::MAX_DISCARD_SECTORS),
            max_discard_seg: get_le32(b, offset::MAX_DISCARD_SEG),
            discard_sector_alignment: get_le32(b, offset::DISCARD_SECTOR_ALIGNMENT),
            max_write_zeroes_sectors: get_le32(b, offset::MAX_WRITE_ZEROES_SECTORS),
            max_write_zeroes_seg: get_le32(b, offset::MAX_WRITE_ZEROES_SEG),
            write_zeroes_may_unmap: get_u8(b, offset::WRITE_ZEROES_MAY_UNMAP),
            max_secure_erase_sectors: get_le32(b, offset::MAX_SECURE_ERASE_SECTORS),
            max_secure_erase_seg: get_le32(b, offset::MAX_SECURE_ERASE_SEG),
            secure_erase_sector_alignment: get_le32(b, offset::SECURE_ERASE_SECTOR_ALIGNMENT),
            zoned: ZonedCharacteristics {
                zone_sectors: get_le32(b, offset::ZONE_SECTORS),
                max_open_zones: get_le32(b, offset::MAX_OPEN_ZONES),
                max_active_zones: get_le32(b, offset::MAX_ACTIVE_ZONES),
                max_append_sectors: get_le32(b, offset::MAX_APPEND_SECTORS),
                write_granularity: get_le32(b, offset::WRITE_GRANULARITY),
                model: get_u8(b, offset::ZONED_MODEL),
            },
        })
    }

    /// The full 96-byte structure (unused bytes zero).
    pub fn to_bytes(&self) -> [u8; offset::SIZE] {
        let mut b = [0u8; offset::SIZE];
        set_le64(&mut b, offset::CAPACITY, self.capacity);
        set_le32(&mut b, offset::SIZE_MAX, self.size_max);
        set_le32(&mut b, offset::SEG_MAX, self.seg_max);
        set_le16(&mut b, offset::CYLINDERS, self.geometry.cylinders);
        set_u8(&mut b, offset::HEADS, self.geometry.heads);
        set_u8(&mut b, offset::SECTORS, self.geometry.sectors);
        set_le32(&mut b, offset::BLK_SIZE, self.blk_size);
        let t = &self.topology;
        set_u8(&mut b, offset::PHYSICAL_BLOCK_EXP, t.physical_block_exp);
        set_u8(&mut b, offset::ALIGNMENT_OFFSET, t.alignment_offset);
        set_le16(&mut b, offset::MIN_IO_SIZE, t.min_io_size);
        set_le32(&mut b, offset::OPT_IO_SIZE, t.opt_io_size);
        set_u8(&mut b, offset::WRITEBACK, self.writeback);
        set_le16(&mut b, offset::NUM_QUEUES, self.num_queues);
        set_le32(
            &mut b,
            offset::MAX_DISCARD_SECTORS,
            self.max_discard_sectors,
        );
        set_le32(&mut b, offset::MAX_DISCARD_SEG, self.max_discard_seg);
        let dsa = self.discard_sector_alignment;
        set_le32(&mut b, offset::DISCARD_SECTOR_ALIGNMENT, dsa);
        let mwz = self.max_write_zeroes_sectors;
        set_le32(&mut b, offset::MAX_WRITE_ZEROES_SECTORS, mwz);
        set_le32(
            &mut b,
            offset::MAX_WRITE_ZEROES_SEG,
            self.max_write_zeroes_seg,
        );
        set_u8(
            &mut b,
            offset::WRITE_ZEROES_MAY_UNMAP,
            self.write_zeroes_may_unmap,
        );
        let mse = self.max_secure_erase_sectors;
        set_le32(&mut b, offset::MAX_SECURE_ERASE_SECTORS, mse);
        set_le32(
            &mut b,
            offset::MAX_SECURE_ERASE_SEG,
            self.max_secure_erase_seg,
        );
        let sea = self.secure_erase_sector_alignment;
        set_le32(&mut b, offset::SECURE_ERASE_SECTOR_ALIGNMENT, sea);
        let z = &self.zoned;
        set_le32(&mut b, offset::ZONE_SECTORS, z.zone_sectors);
        set_le32(&mut b, offset::MAX_OPEN_ZONES, z.max_open_zones);
        set_le32(&mut b, offset::MAX_ACTIVE_ZONES, z.max_active_zones);
        set_le32(&mut b, offset::MAX_APPEND_SECTORS, z.max_append_sectors);
        set_le32(&mut b, offset::WRITE_GRANULARITY, z.write_granularity);
        set_u8(&mut b, offset::ZONED_MODEL, z.model);
        b
    }

    /// Writes the structure into the first [`Self::SIZE`] bytes of `bytes`.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), ViewError> {
        check_len(bytes.len(), Self::SIZE)?;
        if let Some(dst) = bytes.get_mut(..Self::SIZE) {
            dst.copy_from_slice(&self.to_bytes());
        }
        Ok(())
    }

    /// The `len` bytes at `offset` (a partial read, e.g. vhost-user GET_CONFIG or one
    /// transport register). Refused if the window reaches past the structure.
    pub fn read_at(&self, offset: usize, len: usize) -> Result<ConfigWindow, ViewError> {
        match offset.checked_add(len) {
            Some(end) if end <= Self::SIZE => Ok(ConfigWindow {
                bytes: self.to_bytes(),
                start: offset,
                end,
            }),
            _ => Err(ViewError::OutOfRange {
                offset,
                len,
                size: Self::SIZE,
            }),
        }
    }

    /// A driver write of `data` at `offset`. Only `writeback` is writable (§5.2.5: with
    /// CONFIG_WCE the driver may switch the cache mode); everything else is refused.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), ViewError> {
        match (offset, data) {
            (offset::WRITEBACK, [value]) => {
                self.writeback = *value;
                Ok(())
            }
            _ => Err(ViewError::ReadOnly {
                offset,
                len: data.len(),
            }),
        }
    }
}
