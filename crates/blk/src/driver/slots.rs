//! Request slots: the driver memory each request's header, range list, id buffer and status
//! byte live in, preallocated per queue so an I/O allocates nothing (virtio 1.2 §5.2.6).
//!
//! One slot, `stride` bytes, 16-byte aligned:
//!
//! ```text
//! 0                16                         16 + payload       16 + payload + 1
//! | request header | ranges (16 B each) or id | status byte      | padding to 16 |
//! ```
//!
//! The payload part holds `max_ranges` discard / write-zeroes segments, and at least the 20
//! bytes of a GET_ID answer.

use vireo_memory::{SharedArea, SharedSlice};
use vireo_queue::ordering::FIELD;
use vireo_spec::blk::ID_BYTES;

use super::BlkDriverError;

/// Bytes of the request header (`struct virtio_blk_req` up to `data`, virtio 1.2 §5.2.6).
pub(super) const HEADER_LEN: usize = 16;
/// Bytes of one discard / write-zeroes segment (virtio 1.2 §5.2.6).
pub(super) const RANGE_LEN: usize = 16;
/// Offset of the payload part in a slot.
pub(super) const PAYLOAD_OFFSET: usize = HEADER_LEN;
/// What the driver writes into the status byte before submitting: not a valid status, so a
/// device that never writes the status is caught.
pub(super) const STATUS_MARKER: u8 = 0xff;

/// Memory for a queue's request slots: a [`SharedArea`] the device can read and write, and the
/// guest address at which the device sees its first byte.
#[derive(Debug, Clone)]
pub struct SlotArea {
    /// The bytes.
    pub area: SharedArea,
    /// Guest address of the first byte.
    pub guest_addr: u64,
}

/// How a queue's request slots are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotOptions {
    /// Requests that can be in flight at once on the queue (1 to the queue size).
    pub slots: u16,
    /// Ranges one discard or write-zeroes request may carry (at least 1).
    pub max_ranges: u16,
    /// Data segments one read or write may carry (at least 1; the device's `seg_max` may
    /// lower it).
    pub max_data_segments: u16,
}

impl Default for SlotOptions {
    fn default() -> Self {
        SlotOptions {
            slots: 128,
            max_ranges: 4,
            max_data_segments: 64,
        }
    }
}

impl SlotOptions {
    /// Bytes of the payload part: the ranges, or the GET_ID answer.
    fn payload_len(&self) -> usize {
        let ranges = usize::from(self.max_ranges.max(1)) * RANGE_LEN;
        ranges.max(ID_BYTES)
    }

    /// Offset of the status byte in a slot.
    pub(super) fn status_offset(&self) -> usize {
        PAYLOAD_OFFSET + self.payload_len()
    }

    /// Bytes of one slot.
    pub fn stride(&self) -> usize {
        (self.status_offset() + 1).next_multiple_of(16)
    }

    /// Bytes of slot memory the queue needs ([`SlotArea`] must hold this many).
    pub fn area_size(&self) -> usize {
        self.stride().saturating_mul(usize::from(self.slots))
    }
}

/// The slot memory of one queue, with its layout.
#[derive(Debug)]
pub(super) struct Slots {
    area: SharedArea,
    guest_addr: u64,
    stride: usize,
    status_offset: usize,
    count: u16,
}

impl Slots {
    pub(super) fn new(area: SlotArea, options: &SlotOptions) -> Result<Self, BlkDriverError> {
        let needed = options.area_size();
        if area.area.len() < needed {
            return Err(BlkDriverError::SlotAreaTooSmall {
                needed,
                available: area.area.len(),
            });
        }
        if area.guest_addr % 16 != 0 || (area.area.slice().as_ptr() as usize) % 16 != 0 {
            return Err(BlkDriverError::SlotAreaMisaligned);
        }
        if area.guest_addr.checked_add(needed as u64).is_none() {
            return Err(BlkDriverError::SlotAreaMisaligned);
        }
        Ok(Slots {
            area: area.area,
            guest_addr: area.guest_addr,
            stride: options.stride(),
            status_offset: options.status_offset(),
            count: options.slots,
        })
    }

    fn base(&self, slot: u16) -> usize {
        usize::from(slot) * self.stride
    }

    /// The slot's bytes (the slot index was checked by the caller; an out-of-range one gives
    /// a memory error, never a panic).
    pub(super) fn slice(&self, slot: u16) -> Result<SharedSlice<'_>, BlkDriverError> {
        Ok(self.area.slice().subslice(self.base(slot), self.stride)?)
    }

    /// Guest address of byte `offset` of slot `slot`.
    pub(super) fn guest_addr(&self, slot: u16, offset: usize) -> u64 {
        self.guest_addr + (self.base(slot) + offset) as u64
    }

    pub(super) fn status_offset(&self) -> usize {
        self.status_offset
    }

    pub(super) fn count(&self) -> u16 {
        self.count
    }

    /// Writes the request header (virtio 1.2 §5.2.6) and the status marker.
    pub(super) fn prepare(
        &self,
        slot: u16,
        request_type: u32,
        sector: u64,
    ) -> Result<(), BlkDriverError> {
        let s = self.slice(slot)?;
        s.store_u32(0, request_type, FIELD)?;
        s.store_u32(4, 0, FIELD)?;
        s.store_u64(8, sector, FIELD)?;
        s.store_u8(self.status_offset, STATUS_MARKER, FIELD)?;
        Ok(())
    }

    /// The status byte the device wrote.
    pub(super) fn status(&self, slot: u16) -> Result<u8, BlkDriverError> {
        Ok(self.slice(slot)?.load_u8(self.status_offset, FIELD)?)
    }
}
