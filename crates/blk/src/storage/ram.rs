//! A zeroed in-memory disk (`vireo blk --size`): its bytes are an [`OwnedRegion`], and data
//! moves with [`SharedSlice::copy_to`], so this backend needs no `unsafe`.

use vireo_memory::{OwnedRegion, SharedArea, SharedSlice};

use super::check::{self, Direction};
use super::{
    device_id_from, Access, Storage, StorageError, ZeroesMode, DEVICE_ID_LEN, SECTOR_SIZE,
};

/// A RAM disk: zeroed at creation, gone when dropped.
#[derive(Debug)]
pub struct RamDisk {
    area: SharedArea,
    capacity: u64,
    access: Access,
    id: [u8; DEVICE_ID_LEN],
}

impl RamDisk {
    /// A read-write disk of `size` bytes, rounded down to whole sectors; a size below one
    /// sector is refused (an empty region).
    pub fn new(size: u64) -> Result<Self, StorageError> {
        Self::with_access(size, Access::ReadWrite)
    }

    /// A disk of `size` bytes (rounded down to whole sectors; below one sector it is refused
    /// as an empty region) with the given access; its serial is `vireo-ram`.
    pub fn with_access(size: u64, access: Access) -> Result<Self, StorageError> {
        let capacity = size - size % SECTOR_SIZE;
        let len = usize::try_from(capacity).map_err(|_| StorageError::TooLarge { size })?;
        let area = OwnedRegion::new_area(len)?;
        Ok(RamDisk {
            area,
            capacity,
            access,
            id: device_id_from("vireo-ram"),
        })
    }

    /// Replaces the `VIRTIO_BLK_T_GET_ID` serial.
    pub fn set_device_id(&mut self, id: [u8; DEVICE_ID_LEN]) {
        self.id = id;
    }

    /// Fills `len` bytes at `offset` (already checked) with zeroes.
    fn zero(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        let (offset, len) = (to_usize(offset)?, to_usize(len)?);
        Ok(self.area.slice().fill(offset, len, 0)?)
    }
}

/// A checked in-range offset or length as `usize` (it fits: the disk's size is a `usize`).
fn to_usize(v: u64) -> Result<usize, StorageError> {
    usize::try_from(v).map_err(|_| StorageError::TooLarge { size: v })
}

impl Storage for RamDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    fn device_id(&self) -> [u8; DEVICE_ID_LEN] {
        self.id
    }

    fn read_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError> {
        check::transfer(self, offset, bufs, Direction::Read)?;
        let disk = self.area.slice();
        let mut at = to_usize(offset)?;
        for buf in bufs {
            disk.copy_to(at, buf, 0, buf.len())?;
            at += buf.len();
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, bufs: &[SharedSlice<'_>]) -> Result<(), StorageError> {
        check::transfer(self, offset, bufs, Direction::Write)?;
        let disk = self.area.slice();
        let mut at = to_usize(offset)?;
        for buf in bufs {
            buf.copy_to(0, &disk, at, buf.len())?;
            at += buf.len();
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        check::modify(self, offset, len)?;
        self.zero(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, _mode: ZeroesMode) -> Result<(), StorageError> {
        check::modify(self, offset, len)?;
        self.zero(offset, len)
    }
}
