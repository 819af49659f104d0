//! Building requests into slots (virtio 1.2 §5.2.6): the header and status byte in the slot,
//! the data in the caller's buffers, checked against the driver requirements of §5.2.6.1
//! before anything reaches the ring.

use core::borrow::BorrowMut;

use vireo_queue::driver::{BufferSegment, DriverQueue};
use vireo_queue::ordering::FIELD;
use vireo_spec::blk::{BlkFeatures, RequestType, ID_BYTES, SECTOR_SIZE, SEGMENT_F_UNMAP};

use super::queue::SlotState;
use super::slots::{HEADER_LEN, PAYLOAD_OFFSET, RANGE_LEN};
use super::{Access, BlkDriverError, BlkQueue, BlkRange, RequestKind, Unmap};

/// Which way the data of a read or write flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataDirection {
    /// The device fills the buffers (VIRTIO_BLK_T_IN).
    FromDevice,
    /// The device reads the buffers (VIRTIO_BLK_T_OUT).
    ToDevice,
}

impl<Q: BorrowMut<DriverQueue<u16>>> BlkQueue<Q> {
    /// Reads `bufs` (lengths adding up to a multiple of 512) from `sector` on, in slot `slot`
    /// (VIRTIO_BLK_T_IN). Visible to the device after [`Self::kick`].
    pub fn submit_read(
        &mut self,
        slot: u16,
        sector: u64,
        bufs: &[BufferSegment],
    ) -> Result<(), BlkDriverError> {
        self.submit_data(slot, sector, bufs, DataDirection::FromDevice)
    }

    /// Writes `bufs` (lengths adding up to a multiple of 512) from `sector` on, in slot `slot`
    /// (VIRTIO_BLK_T_OUT). Visible to the device after [`Self::kick`].
    pub fn submit_write(
        &mut self,
        slot: u16,
        sector: u64,
        bufs: &[BufferSegment],
    ) -> Result<(), BlkDriverError> {
        if self.info.access == Access::ReadOnly {
            return Err(BlkDriverError::ReadOnly);
        }
        self.submit_data(slot, sector, bufs, DataDirection::ToDevice)
    }

    /// Flushes the device's write cache, in slot `slot` (VIRTIO_BLK_T_FLUSH, sector 0 and no
    /// data, virtio 1.2 §5.2.6.1). Needs VIRTIO_BLK_F_FLUSH.
    pub fn submit_flush(&mut self, slot: u16) -> Result<(), BlkDriverError> {
        self.check_slot(slot)?;
        self.needs(BlkFeatures::FLUSH)?;
        self.slots.prepare(slot, RequestType::Flush.as_u32(), 0)?;
        let header = self.header(slot);
        let status = self.status(slot);
        self.add(slot, RequestKind::Flush, &[header], &[status], 1)
    }

    /// Asks for the device id string, in slot `slot` (VIRTIO_BLK_T_GET_ID: 20 bytes of data,
    /// virtio 1.2 §5.2.6.1); the completion carries it.
    pub fn submit_get_id(&mut self, slot: u16) -> Result<(), BlkDriverError> {
        self.check_slot(slot)?;
        self.slots.prepare(slot, RequestType::GetId.as_u32(), 0)?;
        self.slots.slice(slot)?.fill(PAYLOAD_OFFSET, ID_BYTES, 0)?;
        let header = self.header(slot);
        let id = BufferSegment::new(self.slots.guest_addr(slot, PAYLOAD_OFFSET), ID_BYTES as u32);
        let status = self.status(slot);
        self.add(
            slot,
            RequestKind::GetId,
            &[header],
            &[id, status],
            ID_BYTES as u32 + 1,
        )
    }

    /// Discards `ranges`, in slot `slot` (VIRTIO_BLK_T_DISCARD, `unmap` clear as virtio 1.2
    /// §5.2.6.1 requires). Needs VIRTIO_BLK_F_DISCARD.
    pub fn submit_discard(&mut self, slot: u16, ranges: &[BlkRange]) -> Result<(), BlkDriverError> {
        self.needs(BlkFeatures::DISCARD)?;
        if self.info.access == Access::ReadOnly {
            return Err(BlkDriverError::ReadOnly);
        }
        let limits = (self.info.max_discard_seg, self.info.max_discard_sectors, 0);
        self.submit_ranges(slot, RequestKind::Discard, ranges, limits)
    }

    /// Writes zeroes over `ranges`, in slot `slot` (VIRTIO_BLK_T_WRITE_ZEROES); `unmap` lets the
    /// device deallocate them instead. Needs VIRTIO_BLK_F_WRITE_ZEROES.
    pub fn submit_write_zeroes(
        &mut self,
        slot: u16,
        ranges: &[BlkRange],
        unmap: Unmap,
    ) -> Result<(), BlkDriverError> {
        self.needs(BlkFeatures::WRITE_ZEROES)?;
        if self.info.access == Access::ReadOnly {
            return Err(BlkDriverError::ReadOnly);
        }
        let flags = match unmap {
            Unmap::Keep => 0,
            Unmap::Allow => SEGMENT_F_UNMAP,
        };
        let limits = (
            self.info.max_write_zeroes_seg,
            self.info.max_write_zeroes_sectors,
            flags,
        );
        self.submit_ranges(slot, RequestKind::WriteZeroes, ranges, limits)
    }

    fn submit_ranges(
        &mut self,
        slot: u16,
        request: RequestKind,
        ranges: &[BlkRange],
        (max_seg, max_sectors, flags): (u32, u32, u32),
    ) -> Result<(), BlkDriverError> {
        self.check_slot(slot)?;
        if ranges.is_empty() {
            return Err(BlkDriverError::NoRanges);
        }
        let max = self
            .max_ranges
            .min(usize::try_from(max_seg).unwrap_or(usize::MAX));
        if ranges.len() > max {
            return Err(BlkDriverError::TooManyRanges {
                count: ranges.len(),
                max,
            });
        }
        for r in ranges {
            if r.num_sectors == 0 {
                return Err(BlkDriverError::EmptyTransfer);
            }
            if max_sectors != 0 && r.num_sectors > max_sectors {
                return Err(BlkDriverError::RangeTooLarge {
                    num_sectors: r.num_sectors,
                    max: max_sectors,
                });
            }
            self.check_capacity(r.sector, u64::from(r.num_sectors))?;
        }
        let request_type = match request {
            RequestKind::Discard => RequestType::Discard,
            _ => RequestType::WriteZeroes,
        };
        self.slots.prepare(slot, request_type.as_u32(), 0)?;
        let s = self.slots.slice(slot)?;
        for (i, r) in ranges.iter().enumerate() {
            let off = PAYLOAD_OFFSET + i * RANGE_LEN;
            s.store_u64(off, r.sector, FIELD)?;
            s.store_u32(off + 8, r.num_sectors, FIELD)?;
            s.store_u32(off + 12, flags, FIELD)?;
        }
        let header = self.header(slot);
        let list = BufferSegment::new(
            self.slots.guest_addr(slot, PAYLOAD_OFFSET),
            (ranges.len() * RANGE_LEN) as u32,
        );
        let status = self.status(slot);
        self.add(slot, request, &[header, list], &[status], 1)
    }

    fn submit_data(
        &mut self,
        slot: u16,
        sector: u64,
        bufs: &[BufferSegment],
        direction: DataDirection,
    ) -> Result<(), BlkDriverError> {
        self.check_slot(slot)?;
        if bufs.is_empty() {
            return Err(BlkDriverError::EmptyTransfer);
        }
        if bufs.len() > self.max_data_segments {
            return Err(BlkDriverError::TooManyDataSegments {
                count: bufs.len(),
                max: self.max_data_segments,
            });
        }
        let mut len: u64 = 0;
        for b in bufs {
            if let Some(size_max) = self.info.size_max {
                if b.len > size_max {
                    return Err(BlkDriverError::SegmentTooLarge {
                        len: b.len,
                        size_max,
                    });
                }
            }
            len += u64::from(b.len);
        }
        if len == 0 {
            return Err(BlkDriverError::EmptyTransfer);
        }
        if len % SECTOR_SIZE != 0 {
            return Err(BlkDriverError::LengthNotSectorMultiple { len });
        }
        let Some(writable) = u32::try_from(len).ok().and_then(|l| l.checked_add(1)) else {
            return Err(BlkDriverError::TransferTooLong { len });
        };
        self.check_capacity(sector, len / SECTOR_SIZE)?;
        let (request_type, request) = match direction {
            DataDirection::FromDevice => (RequestType::In, RequestKind::Read),
            DataDirection::ToDevice => (RequestType::Out, RequestKind::Write),
        };
        self.slots.prepare(slot, request_type.as_u32(), sector)?;
        let header = self.header(slot);
        let status = self.status(slot);
        let mut scratch = core::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(bufs);
        let result = match direction {
            DataDirection::FromDevice => {
                scratch.push(status);
                self.add(slot, request, &[header], &scratch, writable)
            }
            DataDirection::ToDevice => {
                scratch.insert(0, header);
                self.add(slot, request, &scratch, &[status], 1)
            }
        };
        self.scratch = scratch;
        result
    }

    fn add(
        &mut self,
        slot: u16,
        request: RequestKind,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        writable_len: u32,
    ) -> Result<(), BlkDriverError> {
        self.vq().add(readable, writable, slot)?;
        if let Some(s) = self.state.get_mut(usize::from(slot)) {
            *s = SlotState::InFlight {
                request,
                writable: writable_len,
            };
        }
        self.in_flight = self.in_flight.saturating_add(1);
        Ok(())
    }

    fn check_slot(&self, slot: u16) -> Result<(), BlkDriverError> {
        self.check_usable()?;
        match self.state.get(usize::from(slot)) {
            Some(SlotState::Free) => Ok(()),
            Some(SlotState::InFlight { .. }) => Err(BlkDriverError::SlotBusy { slot }),
            None => Err(BlkDriverError::NoSuchSlot {
                slot,
                slots: self.slots.count(),
            }),
        }
    }

    fn needs(&self, feature: BlkFeatures) -> Result<(), BlkDriverError> {
        if self.info.blk_features().contains(feature) {
            Ok(())
        } else {
            Err(BlkDriverError::NotNegotiated { feature })
        }
    }

    fn check_capacity(&self, sector: u64, sectors: u64) -> Result<(), BlkDriverError> {
        let capacity = self.info.capacity;
        match sector.checked_add(sectors) {
            Some(end) if end <= capacity => Ok(()),
            _ => Err(BlkDriverError::BeyondCapacity {
                sector,
                sectors,
                capacity,
            }),
        }
    }

    fn header(&self, slot: u16) -> BufferSegment {
        BufferSegment::new(self.slots.guest_addr(slot, 0), HEADER_LEN as u32)
    }

    fn status(&self, slot: u16) -> BufferSegment {
        BufferSegment::new(self.slots.guest_addr(slot, self.slots.status_offset()), 1)
    }
}
