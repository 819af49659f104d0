//! Errors of the device side of a virtqueue.
//!
//! Two kinds, kept apart so that a latched queue can carry its original cause by value:
//! - [`Violation`]: a rule of virtio 1.2 that the driver broke. It latches the queue broken
//!   (see the policy in [`crate::device`]).
//! - [`DeviceQueueError`]: everything a device-side call can return: a configuration refused at
//!   setup, a [`Violation`] (first time), [`DeviceQueueError::Broken`] (every later call), or the
//!   device's own misuse of a chain handle.

use core::fmt;

use vireo_memory::MemoryError;

/// The part of a queue that an access or a layout check concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingArea {
    /// The descriptor table (split) or descriptor ring (packed).
    DescriptorTable,
    /// The available ring (split) or driver event suppression area (packed).
    DriverArea,
    /// The used ring (split) or device event suppression area (packed).
    DeviceArea,
}

impl fmt::Display for RingArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RingArea::DescriptorTable => "descriptor table",
            RingArea::DriverArea => "available ring (driver area)",
            RingArea::DeviceArea => "used ring (device area)",
        })
    }
}

/// A rule the driver broke. The queue that saw it is latched broken, and the device should set
/// DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The available index is more than the queue size ahead of the next entry to consume
    /// (virtio 1.2 §2.7.6).
    AvailIndexTooFarAhead {
        /// The `avail.idx` the driver published.
        avail_idx: u16,
        /// The next available-ring entry the device would consume.
        next_avail: u16,
        /// Queue size.
        size: u16,
    },
    /// A chain head in the available ring is not below the queue size (virtio 1.2 §2.7.6).
    HeadOutOfRange {
        /// The head descriptor index.
        head: u16,
        /// Queue size.
        size: u16,
    },
    /// A chain head was made available again while the device still holds it (virtio 1.2
    /// §2.7.13.1: descriptors belong to the device until used).
    HeadInFlight {
        /// The head descriptor index.
        head: u16,
    },
    /// A descriptor's `next` index is not below the size of its table (virtio 1.2 §2.7.5).
    NextOutOfRange {
        /// The `next` field.
        next: u16,
        /// Entries in the table (queue size, or indirect table entries).
        table_len: u32,
    },
    /// A chain visits more descriptors than its table holds: it is too long or loops (virtio 1.2
    /// §2.7.5.2, §2.7.5.3.1).
    ChainTooLong {
        /// Most descriptors the table allows.
        limit: u32,
    },
    /// A chain's buffers add up to more than 2^32 bytes (virtio 1.2 §2.7.5.2).
    ChainTooLarge,
    /// An indirect descriptor inside an indirect table (virtio 1.2 §2.7.5.3.1).
    IndirectInIndirect,
    /// An indirect descriptor that also has VIRTQ_DESC_F_NEXT (virtio 1.2 §2.7.5.3.1).
    IndirectWithNext,
    /// An indirect table length that is zero, not a multiple of 16, or over 32768 entries
    /// (virtio 1.2 §2.7.5.3).
    IndirectTableSize {
        /// The descriptor's `len` field.
        len: u32,
    },
    /// An indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated (virtio 1.2
    /// §2.7.5.3.1).
    IndirectNotNegotiated,
    /// A device-readable descriptor after a device-writable one (virtio 1.2 §2.7.4.2).
    ReadableAfterWritable,
    /// An indirect table is not in guest memory.
    IndirectTableMemory(MemoryError),
    /// A buffer is not in guest memory.
    BufferMemory(MemoryError),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::AvailIndexTooFarAhead {
                avail_idx,
                next_avail,
                size,
            } => write!(
                f,
                "the available index {avail_idx} is more than the queue size {size} ahead of the \
                 next entry to consume ({next_avail}) (virtio 1.2 §2.7.6)"
            ),
            Violation::HeadOutOfRange { head, size } => write!(
                f,
                "chain head {head} in the available ring is not below the queue size {size} \
                 (virtio 1.2 §2.7.6)"
            ),
            Violation::HeadInFlight { head } => write!(
                f,
                "chain head {head} was made available again while the device still holds it \
                 (virtio 1.2 §2.7.13.1)"
            ),
            Violation::NextOutOfRange { next, table_len } => write!(
                f,
                "descriptor's next index {next} is not below the size of its table \
                 ({table_len}) (virtio 1.2 §2.7.5)"
            ),
            Violation::ChainTooLong { limit } => write!(
                f,
                "chain visits more than {limit} descriptors: it is too long or loops \
                 (virtio 1.2 §2.7.5.2, §2.7.5.3.1)"
            ),
            Violation::ChainTooLarge => {
                f.write_str("chain's buffers add up to more than 2^32 bytes (virtio 1.2 §2.7.5.2)")
            }
            Violation::IndirectInIndirect => {
                f.write_str("indirect descriptor inside an indirect table (virtio 1.2 §2.7.5.3.1)")
            }
            Violation::IndirectWithNext => f.write_str(
                "indirect descriptor that also has VIRTQ_DESC_F_NEXT (virtio 1.2 §2.7.5.3.1)",
            ),
            Violation::IndirectTableSize { len } => write!(
                f,
                "indirect table length {len} is zero, not a multiple of 16, or over 32768 \
                 entries (virtio 1.2 §2.7.5.3)"
            ),
            Violation::IndirectNotNegotiated => f.write_str(
                "indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated \
                 (virtio 1.2 §2.7.5.3.1)",
            ),
            Violation::ReadableAfterWritable => f.write_str(
                "device-readable descriptor after a device-writable one (virtio 1.2 §2.7.4.2)",
            ),
            Violation::IndirectTableMemory(e) => {
                write!(f, "indirect table is not in guest memory: {e}")
            }
            Violation::BufferMemory(e) => write!(f, "buffer is not in guest memory: {e}"),
        }
    }
}

/// Why a device-side queue operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceQueueError {
    /// Queue size is not a power of two between 1 and 32768 (virtio 1.2 §2.7).
    InvalidQueueSize {
        /// The configured size.
        size: u16,
    },
    /// A ring area's address is not aligned as virtio 1.2 §2.7 "Virtqueue Part Alignment"
    /// requires.
    Misaligned {
        /// Which area.
        area: RingArea,
        /// Its guest address.
        addr: u64,
        /// The required alignment.
        align: u64,
    },
    /// A ring area is not in guest memory, or a field inside it could not be accessed.
    Memory {
        /// Which area.
        area: RingArea,
        /// What the memory layer said.
        source: MemoryError,
    },
    /// The ring format the features select has no device-side implementation here.
    UnsupportedFormat,
    /// The driver broke a rule; the queue is now broken.
    Violation(Violation),
    /// The queue is broken by an earlier driver error and must be reset (virtio 1.2 §2.1.2).
    Broken(Violation),
    /// The device passed a chain whose id is not below the queue size (the handle is from
    /// another queue).
    ChainIdOutOfRange {
        /// The chain's head.
        head: u16,
        /// Queue size.
        size: u16,
    },
    /// The device passed a chain it does not hold (already used, or never popped).
    ChainNotInFlight {
        /// The chain's head.
        head: u16,
    },
    /// A chain has more segments than the device's buffer holds (the device's own limit,
    /// virtio 1.2 §2.7.4.1).
    TooManySegments {
        /// Segments the buffer holds.
        capacity: usize,
    },
}

impl DeviceQueueError {
    /// True when the driver broke a rule, now or earlier: the device should set
    /// DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2).
    pub fn needs_reset(&self) -> bool {
        matches!(
            self,
            DeviceQueueError::Violation(_) | DeviceQueueError::Broken(_)
        )
    }

    /// The driver's rule violation behind this error, if there is one.
    pub fn violation(&self) -> Option<Violation> {
        match *self {
            DeviceQueueError::Violation(v) | DeviceQueueError::Broken(v) => Some(v),
            _ => None,
        }
    }
}

impl From<Violation> for DeviceQueueError {
    fn from(v: Violation) -> Self {
        DeviceQueueError::Violation(v)
    }
}

impl fmt::Display for DeviceQueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DeviceQueueError::InvalidQueueSize { size } => write!(
                f,
                "queue size {size} is not a power of two between 1 and 32768 (virtio 1.2 §2.7)"
            ),
            DeviceQueueError::Misaligned { area, addr, align } => write!(
                f,
                "{area} address {addr:#x} is not {align}-byte aligned (virtio 1.2 §2.7 \
                 \"Virtqueue Part Alignment\")"
            ),
            DeviceQueueError::Memory { area, source } => {
                write!(f, "{area} is not in guest memory: {source}")
            }
            DeviceQueueError::UnsupportedFormat => f.write_str(
                "the ring format the features select has no device-side implementation here",
            ),
            DeviceQueueError::Violation(v) => write!(f, "the driver broke a rule: {v}"),
            DeviceQueueError::Broken(v) => write!(
                f,
                "the queue is broken by an earlier driver error and must be reset \
                 (virtio 1.2 §2.1.2): {v}"
            ),
            DeviceQueueError::ChainIdOutOfRange { head, size } => write!(
                f,
                "the device passed a chain whose id {head} is not below the queue size {size} \
                 (the handle is from another queue)"
            ),
            DeviceQueueError::ChainNotInFlight { head } => write!(
                f,
                "the device passed chain {head}, which it does not hold (already used, or never \
                 popped)"
            ),
            DeviceQueueError::TooManySegments { capacity } => write!(
                f,
                "a chain has more segments than the device's buffer holds ({capacity}) \
                 (virtio 1.2 §2.7.4.1)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DeviceQueueError {}

#[cfg(feature = "std")]
impl std::error::Error for Violation {}
