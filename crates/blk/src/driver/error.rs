//! Errors of the virtio-blk driver.
//!
//! Two kinds, as in the virtqueue layer below: the caller asked for a request the driver may
//! not send (nothing was submitted; the queue keeps working), or the device broke a rule
//! ([`BlkDriverError::Device`], then [`BlkDriverError::Broken`] on every later call: the device
//! needs a reset, virtio 1.2 §2.1.2).

use core::fmt;

use vireo_memory::MemoryError;
use vireo_queue::driver::DriverQueueError;
use vireo_spec::blk::BlkFeatures;

use super::RequestKind;

/// Why a virtio-blk driver operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkDriverError {
    /// Request slot does not exist.
    NoSuchSlot {
        /// The slot asked for.
        slot: u16,
        /// Slots of the queue.
        slots: u16,
    },
    /// Request slot already holds a request in flight.
    SlotBusy {
        /// The slot asked for.
        slot: u16,
    },
    /// Queue does not exist.
    NoSuchQueue {
        /// The queue asked for.
        queue: usize,
        /// Queues of the driver.
        queues: usize,
    },
    /// Transfer has no data.
    EmptyTransfer,
    /// Transfer length is not a multiple of 512 bytes (virtio 1.2 §5.2.6.1).
    LengthNotSectorMultiple {
        /// Bytes in the transfer.
        len: u64,
    },
    /// Transfer is longer than one request can describe (the used length is 32 bits).
    TransferTooLong {
        /// Bytes in the transfer.
        len: u64,
    },
    /// Transfer has more data segments than the device accepts (`seg_max`, virtio 1.2 §5.2.4,
    /// or the driver's own limit).
    TooManyDataSegments {
        /// Segments given.
        count: usize,
        /// Most segments allowed.
        max: usize,
    },
    /// Data segment is longer than the device accepts (`size_max`, virtio 1.2 §5.2.4).
    SegmentTooLarge {
        /// Length of the segment.
        len: u32,
        /// Longest segment allowed.
        size_max: u32,
    },
    /// Request reaches beyond the device's capacity (virtio 1.2 §5.2.6.1).
    BeyondCapacity {
        /// First sector of the request.
        sector: u64,
        /// Sectors in the request.
        sectors: u64,
        /// Capacity in sectors.
        capacity: u64,
    },
    /// Device is read-only (VIRTIO_BLK_F_RO, virtio 1.2 §5.2.3).
    ReadOnly,
    /// Request needs a feature that was not negotiated (virtio 1.2 §5.2.3).
    NotNegotiated {
        /// The missing feature.
        feature: BlkFeatures,
    },
    /// Discard or write-zeroes request has no ranges.
    NoRanges,
    /// Discard or write-zeroes request has more ranges than allowed (`max_discard_seg` /
    /// `max_write_zeroes_seg`, virtio 1.2 §5.2.6.1, or the slot's room).
    TooManyRanges {
        /// Ranges given.
        count: usize,
        /// Most ranges allowed.
        max: usize,
    },
    /// Discard or write-zeroes range is longer than the device accepts
    /// (`max_discard_sectors` / `max_write_zeroes_sectors`, virtio 1.2 §5.2.4).
    RangeTooLarge {
        /// Sectors in the range.
        num_sectors: u32,
        /// Most sectors allowed.
        max: u32,
    },
    /// Discard range asks to unmap, which only write zeroes may (virtio 1.2 §5.2.6.1).
    UnmapOnDiscard,
    /// Request slot memory is smaller than the slots need.
    SlotAreaTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// Request slot memory is not 16-byte aligned (in the process or as the device sees it).
    SlotAreaMisaligned,
    /// Queue options are out of range (the message says which).
    InvalidOptions {
        /// What is wrong.
        reason: &'static str,
    },
    /// Device configuration is inconsistent with the negotiated features (virtio 1.2 §5.2.4).
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// Notifying the device failed.
    NotifyFailed {
        /// The operating system's error number (0 if there is none).
        errno: i32,
    },
    /// Request slot memory could not be accessed.
    Memory(MemoryError),
    /// Virtqueue refused the request (or the device broke a ring rule).
    Queue(DriverQueueError),
    /// Device broke a virtio-blk rule: the queue is now broken.
    Device(DeviceFault),
    /// Queue is broken since the device broke a virtio-blk rule; reset the device.
    Broken(DeviceFault),
}

impl BlkDriverError {
    /// True for errors that mean the device broke a rule (now or earlier), so the device needs
    /// a reset; false for the caller's own mistakes, after which the queue keeps working.
    pub fn is_device_fault(&self) -> bool {
        match self {
            BlkDriverError::Device(_) | BlkDriverError::Broken(_) => true,
            BlkDriverError::Queue(e) => e.is_device_fault(),
            _ => false,
        }
    }
}

impl fmt::Display for BlkDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlkDriverError::NoSuchSlot { slot, slots } => {
                write!(f, "request slot {slot} does not exist ({slots} slots)")
            }
            BlkDriverError::SlotBusy { slot } => {
                write!(f, "request slot {slot} already holds a request in flight")
            }
            BlkDriverError::NoSuchQueue { queue, queues } => {
                write!(f, "queue {queue} does not exist ({queues} queues)")
            }
            BlkDriverError::EmptyTransfer => write!(f, "transfer has no data"),
            BlkDriverError::LengthNotSectorMultiple { len } => {
                write!(f, "transfer length {len} is not a multiple of 512 bytes")
            }
            BlkDriverError::TransferTooLong { len } => write!(
                f,
                "transfer of {len} bytes is longer than one request can describe"
            ),
            BlkDriverError::TooManyDataSegments { count, max } => write!(
                f,
                "transfer has more data segments than the device accepts ({count} > {max})"
            ),
            BlkDriverError::SegmentTooLarge { len, size_max } => write!(
                f,
                "data segment of {len} bytes is longer than the device accepts ({size_max})"
            ),
            BlkDriverError::BeyondCapacity {
                sector,
                sectors,
                capacity,
            } => write!(
                f,
                "request of {sectors} sectors at sector {sector} reaches beyond the capacity of \
                 {capacity} sectors"
            ),
            BlkDriverError::ReadOnly => write!(f, "device is read-only"),
            BlkDriverError::NotNegotiated { feature } => {
                write!(f, "request needs {feature:?}, which was not negotiated")
            }
            BlkDriverError::NoRanges => write!(f, "discard or write-zeroes request has no ranges"),
            BlkDriverError::TooManyRanges { count, max } => write!(
                f,
                "discard or write-zeroes request has more ranges than allowed ({count} > {max})"
            ),
            BlkDriverError::RangeTooLarge { num_sectors, max } => write!(
                f,
                "discard or write-zeroes range of {num_sectors} sectors is longer than the \
                 device accepts ({max})"
            ),
            BlkDriverError::UnmapOnDiscard => write!(
                f,
                "discard range asks to unmap, which only write zeroes may"
            ),
            BlkDriverError::SlotAreaTooSmall { needed, available } => write!(
                f,
                "request slot memory is smaller than the slots need ({available} < {needed} \
                 bytes)"
            ),
            BlkDriverError::SlotAreaMisaligned => {
                write!(f, "request slot memory is not 16-byte aligned")
            }
            BlkDriverError::InvalidOptions { reason } => {
                write!(f, "queue options are out of range: {reason}")
            }
            BlkDriverError::InvalidConfig { reason } => write!(
                f,
                "device configuration is inconsistent with the negotiated features: {reason}"
            ),
            BlkDriverError::NotifyFailed { errno } => {
                write!(f, "notifying the device failed (os error {errno})")
            }
            BlkDriverError::Memory(e) => {
                write!(f, "request slot memory could not be accessed: {e}")
            }
            BlkDriverError::Queue(e) => write!(f, "virtqueue refused the request: {e}"),
            BlkDriverError::Device(d) => write!(
                f,
                "device broke a virtio-blk rule: {d}; the queue is now broken"
            ),
            BlkDriverError::Broken(d) => write!(
                f,
                "queue is broken since the device broke a virtio-blk rule ({d}); reset the device"
            ),
        }
    }
}

impl core::error::Error for BlkDriverError {}

impl From<MemoryError> for BlkDriverError {
    fn from(e: MemoryError) -> Self {
        BlkDriverError::Memory(e)
    }
}

impl From<DriverQueueError> for BlkDriverError {
    fn from(e: DriverQueueError) -> Self {
        BlkDriverError::Queue(e)
    }
}

/// A virtio-blk rule the device broke when it returned a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFault {
    /// Status byte is not OK, IOERR or UNSUPP (virtio 1.2 §5.2.6); a device that never wrote it
    /// leaves the driver's marker 0xff.
    InvalidStatus {
        /// The request's slot.
        slot: u16,
        /// What the request was.
        request: RequestKind,
        /// The byte found.
        value: u8,
    },
    /// Used length is zero, so the status byte was not written (virtio 1.2 §2.7.8.2).
    StatusNotWritten {
        /// The request's slot.
        slot: u16,
        /// What the request was.
        request: RequestKind,
    },
    /// Used length of a successful request does not cover its data and status byte (virtio
    /// 1.2 §2.7.8.2: the driver may not rely on bytes past the used length).
    ShortTransfer {
        /// The request's slot.
        slot: u16,
        /// What the request was.
        request: RequestKind,
        /// The used length the device reported.
        written: u32,
        /// The request's device-writable bytes.
        expected: u32,
    },
    /// Used buffer's token names a slot with no request in flight.
    SlotNotInFlight {
        /// The slot.
        slot: u16,
    },
}

impl fmt::Display for DeviceFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DeviceFault::InvalidStatus {
                slot,
                request,
                value,
            } => write!(
                f,
                "status byte {value:#04x} of {request:?} request in slot {slot} is not OK, IOERR \
                 or UNSUPP"
            ),
            DeviceFault::StatusNotWritten { slot, request } => write!(
                f,
                "used length of {request:?} request in slot {slot} is zero, so the status byte \
                 was not written"
            ),
            DeviceFault::ShortTransfer {
                slot,
                request,
                written,
                expected,
            } => write!(
                f,
                "used length {written} of successful {request:?} request in slot {slot} does not \
                 cover its {expected} device-writable bytes"
            ),
            DeviceFault::SlotNotInFlight { slot } => write!(
                f,
                "used buffer's token names slot {slot}, which has no request in flight"
            ),
        }
    }
}

impl core::error::Error for DeviceFault {}
