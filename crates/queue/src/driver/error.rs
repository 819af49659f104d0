//! Errors of the driver side of a virtqueue.
//!
//! Two kinds: the caller asked for something the queue cannot do (the queue is unchanged and
//! keeps working), or the device broke a ring rule ([`DriverQueueError::Device`]; the queue is
//! then latched broken and every later call answers [`DriverQueueError::Broken`] with the
//! original violation, until the device is reset and the queue with it).

use core::fmt;

use vireo_memory::MemoryError;

use crate::RingFormat;

/// Why a driver-side queue operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverQueueError {
    /// Not enough free descriptors for the buffer.
    QueueFull {
        /// Descriptors the buffer needs.
        needed: u16,
        /// Descriptors free.
        free: u16,
    },
    /// Buffer has no segments.
    EmptyBuffer,
    /// Buffer has more segments than a descriptor chain may have (the queue size, virtio 1.2
    /// §2.7.5.3.1).
    TooManySegments {
        /// Segments given.
        count: usize,
        /// Most segments allowed.
        max: usize,
    },
    /// Buffer segment has length zero.
    ZeroLengthSegment {
        /// Position of the segment (readable segments first, then writable ones).
        index: usize,
    },
    /// Address range wraps around the 64-bit address space.
    AddressOverflow {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
    },
    /// Queue size is not valid for the ring format (split: a power of two up to 32768, virtio
    /// 1.2 §2.7; packed: 1 to 32768, §2.8).
    InvalidSize {
        /// The size asked for.
        size: u16,
    },
    /// Ring memory is smaller than the ring layout needs.
    AreaTooSmall {
        /// Bytes the layout needs.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// Ring memory is not aligned as the ring layout needs (virtio 1.2 §2.7).
    AreaMisaligned {
        /// Required alignment in bytes.
        align: u64,
    },
    /// Buffers are still in flight (detach them first).
    BuffersInFlight {
        /// Buffers in flight.
        count: u16,
    },
    /// Ring format has no driver-side implementation.
    FormatNotSupported {
        /// The format the features select.
        format: RingFormat,
    },
    /// Buffers were detached from the queue; reset it before using it again.
    NeedsReset,
    /// Device broke a ring rule: the queue is now broken.
    Device(DeviceViolation),
    /// Queue is broken since the device broke a ring rule; reset the device and the queue.
    Broken(DeviceViolation),
}

impl DriverQueueError {
    /// True for errors that mean the device broke a rule (now or earlier), so the device needs a
    /// reset; false for the caller's own mistakes, after which the queue keeps working.
    pub fn is_device_fault(&self) -> bool {
        matches!(
            self,
            DriverQueueError::Device(_) | DriverQueueError::Broken(_)
        )
    }
}

impl fmt::Display for DriverQueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DriverQueueError::QueueFull { needed, free } => write!(
                f,
                "not enough free descriptors for the buffer ({needed} needed, {free} free)"
            ),
            DriverQueueError::EmptyBuffer => write!(f, "buffer has no segments"),
            DriverQueueError::TooManySegments { count, max } => write!(
                f,
                "buffer has more segments than a descriptor chain may have ({count} > {max})"
            ),
            DriverQueueError::ZeroLengthSegment { index } => {
                write!(f, "buffer segment {index} has length zero")
            }
            DriverQueueError::AddressOverflow { addr, len } => {
                write!(
                    f,
                    "address range {addr:#x}+{len:#x} wraps around the address space"
                )
            }
            DriverQueueError::InvalidSize { size } => {
                write!(
                    f,
                    "queue size {size} is not valid for the ring format (split: a power of two \
                     up to 32768; packed: 1 to 32768)"
                )
            }
            DriverQueueError::AreaTooSmall { needed, available } => write!(
                f,
                "ring memory is smaller than the ring layout needs ({available} < {needed} bytes)"
            ),
            DriverQueueError::AreaMisaligned { align } => {
                write!(
                    f,
                    "ring memory is not {align}-byte aligned as the ring layout needs"
                )
            }
            DriverQueueError::BuffersInFlight { count } => {
                write!(f, "{count} buffers are still in flight (detach them first)")
            }
            DriverQueueError::FormatNotSupported { format } => {
                write!(
                    f,
                    "ring format {format:?} has no driver-side implementation"
                )
            }
            DriverQueueError::NeedsReset => {
                write!(
                    f,
                    "buffers were detached from the queue; reset it before using it again"
                )
            }
            DriverQueueError::Device(v) => {
                write!(f, "device broke a ring rule: {v}; the queue is now broken")
            }
            DriverQueueError::Broken(v) => write!(
                f,
                "queue is broken since the device broke a ring rule ({v}); reset the device and \
                 the queue"
            ),
        }
    }
}

impl core::error::Error for DriverQueueError {}

/// A ring rule the device broke (or ring memory that could not be accessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceViolation {
    /// Used element names an id outside the queue (split: a descriptor outside the table,
    /// virtio 1.2 §2.7.8; packed: a buffer id of at least the queue size, §2.8.13).
    UsedIdOutOfRange {
        /// The id the device wrote.
        id: u32,
        /// Queue size.
        size: u16,
    },
    /// Used element names an id that is not that of a buffer made available to the device
    /// (virtio 1.2 §2.7.8, §2.8.13), or a buffer already returned.
    UsedIdNotInFlight {
        /// The id the device wrote.
        id: u32,
    },
    /// Used length exceeds the buffer's device-writable bytes (virtio 1.2 §2.7.8.2).
    UsedLengthTooLarge {
        /// Length the device wrote.
        written: u32,
        /// Device-writable bytes in the buffer.
        writable: u64,
    },
    /// Used index moved further than the buffers made available (virtio 1.2 §2.7.8).
    UsedIndexTooFarAhead {
        /// The used index the device wrote.
        used_idx: u16,
        /// The used index the driver had reached.
        last_used: u16,
        /// Buffers the device could have used.
        available: u16,
    },
    /// With IN_ORDER, a used element names the last buffer of a batch longer than the used
    /// index moved (virtio 1.2 §2.7.9: the index moves by the size of the batch).
    InOrderBatchPastUsedIndex {
        /// The id the device wrote.
        id: u32,
        /// Buffers the batch covers (from the oldest in flight to `id`).
        batch: u32,
        /// Entries the used index moved by that were not consumed yet.
        used: u16,
    },
    /// Ring memory access failed.
    Memory(MemoryError),
}

impl fmt::Display for DeviceViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DeviceViolation::UsedIdOutOfRange { id, size } => write!(
                f,
                "used element names id {id}, outside the queue of {size} descriptors"
            ),
            DeviceViolation::UsedIdNotInFlight { id } => write!(
                f,
                "used element names id {id}, which is not that of a buffer made available to \
                 the device, or a buffer already returned"
            ),
            DeviceViolation::UsedLengthTooLarge { written, writable } => write!(
                f,
                "used length {written} exceeds the buffer's {writable} device-writable bytes"
            ),
            DeviceViolation::UsedIndexTooFarAhead {
                used_idx,
                last_used,
                available,
            } => write!(
                f,
                "used index {used_idx} moved further than the buffers made available \
                 ({available} after {last_used})"
            ),
            DeviceViolation::InOrderBatchPastUsedIndex { id, batch, used } => write!(
                f,
                "in order, used element names id {id}, the last of a batch of {batch} buffers, \
                 but the used index moved by {used} only"
            ),
            DeviceViolation::Memory(e) => write!(f, "ring memory access failed: {e}"),
        }
    }
}

impl core::error::Error for DeviceViolation {}

impl From<DeviceViolation> for DriverQueueError {
    fn from(v: DeviceViolation) -> Self {
        DriverQueueError::Device(v)
    }
}
