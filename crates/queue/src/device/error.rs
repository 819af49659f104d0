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
    /// A packed ring's buffer id is not below the queue size (virtio 1.2 §2.8.6, §2.8.22).
    BufferIdOutOfRange {
        /// The buffer id in the chain's last descriptor.
        id: u16,
        /// Queue size.
        size: u16,
    },
    /// A packed ring's buffer id was made available again while the device still holds it
    /// (virtio 1.2 §2.8.16: descriptors belong to the device until used).
    BufferIdInFlight {
        /// The buffer id.
        id: u16,
    },
    /// The next descriptor of a packed ring has VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED both
    /// equal to the driver's wrap counter: marked used in a lap the device has not reached
    /// (virtio 1.2 §2.8.1).
    WrapCounterMismatch {
        /// Ring offset of the descriptor.
        offset: u16,
        /// Its flags.
        flags: u16,
    },
    /// A descriptor after the first of a packed ring's list is not marked available: the
    /// driver made the first descriptor available before the rest (virtio 1.2 §2.8.6,
    /// §2.8.17).
    ChainDescriptorNotAvailable {
        /// Ring offset of the descriptor.
        offset: u16,
        /// Its flags.
        flags: u16,
    },
    /// An indirect descriptor inside a packed ring's list linked by VIRTQ_DESC_F_NEXT (virtio
    /// 1.2 §2.8.19).
    IndirectInChain,
    /// A packed ring's list, with the descriptors the device holds, needs more than the ring's
    /// descriptors: the driver made available descriptors the device still holds (virtio 1.2
    /// §2.8.17).
    RingOverfilled {
        /// Descriptors the device holds.
        held: u16,
        /// Queue size.
        size: u16,
    },
    /// Notification data names a ring position no driver could have reached: more than the
    /// queue size away from the device's next position, or an offset outside the ring (virtio
    /// 1.2 §2.9).
    NotificationOutOfRange {
        /// The offset (packed) or index (split) the notification carried.
        next: u16,
        /// The device's next position (offset or index).
        device_next: u16,
        /// Queue size.
        size: u16,
    },
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
            Violation::BufferIdOutOfRange { id, size } => write!(
                f,
                "buffer id {id} is not below the queue size {size} (virtio 1.2 §2.8.6, §2.8.22)"
            ),
            Violation::BufferIdInFlight { id } => write!(
                f,
                "buffer id {id} was made available again while the device still holds it \
                 (virtio 1.2 §2.8.16)"
            ),
            Violation::WrapCounterMismatch { offset, flags } => write!(
                f,
                "descriptor {offset} (flags {flags:#06x}) has VIRTQ_DESC_F_AVAIL and \
                 VIRTQ_DESC_F_USED both equal to the driver's wrap counter: marked used in a lap \
                 the device has not reached (virtio 1.2 §2.8.1)"
            ),
            Violation::ChainDescriptorNotAvailable { offset, flags } => write!(
                f,
                "descriptor {offset} (flags {flags:#06x}) of a list is not marked available: the \
                 driver made the first descriptor available before the rest (virtio 1.2 §2.8.6, \
                 §2.8.17)"
            ),
            Violation::IndirectInChain => f.write_str(
                "indirect descriptor inside a list linked by VIRTQ_DESC_F_NEXT (virtio 1.2 \
                 §2.8.19)",
            ),
            Violation::RingOverfilled { held, size } => write!(
                f,
                "a list with the {held} descriptors the device holds needs more than the ring's \
                 {size}: the driver made available descriptors the device still holds (virtio \
                 1.2 §2.8.17)"
            ),
            Violation::NotificationOutOfRange {
                next,
                device_next,
                size,
            } => write!(
                f,
                "notification data names position {next}, more than the queue size {size} away \
                 from the device's next position {device_next} or outside the ring (virtio 1.2 \
                 §2.9)"
            ),
        }
    }
}

/// Why a device-side queue operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceQueueError {
    /// Queue size is not valid for the ring format: split rings take a power of two up to
    /// 32768, packed rings any size from 1 to 32768 (virtio 1.2 §2.7, §2.8.10.1).
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
    /// A saved packed-ring position to resume from is not inside the ring (virtio 1.2 §2.8).
    StateOutOfRange {
        /// The descriptor offset.
        offset: u16,
        /// Queue size.
        size: u16,
    },
    /// A ring area is not in guest memory, or a field inside it could not be accessed.
    Memory {
        /// Which area.
        area: RingArea,
        /// What the memory layer said.
        source: MemoryError,
    },
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
    /// With VIRTIO_F_IN_ORDER the device used a chain before an older one: used order must be
    /// available order (virtio 1.2 §2.7.9, §2.8.8).
    OutOfOrderUse {
        /// The ring position of the chain that must be used next.
        expected: u16,
        /// The ring position of the chain the device passed.
        got: u16,
    },
    /// Notification data names another queue (or other notification config data) than this
    /// one (virtio 1.2 §2.9).
    NotificationForOtherQueue {
        /// The queue index (or config data) the notification carried.
        vqn: u16,
        /// This queue's.
        expected: u16,
    },
    /// More chains to re-deliver than the queue has descriptors (QEMU
    /// `docs/interop/vhost-user.rst`, "Inflight I/O tracking").
    ResumeTooMany {
        /// How many were given.
        count: usize,
        /// Queue size.
        size: u16,
    },
    /// A chain to re-deliver is named twice.
    ResumeHeadRepeated {
        /// The chain's head.
        head: u16,
    },
    /// Chains can be re-delivered, and journaled, on split rings only.
    ResumeUnsupported,
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
                "queue size {size} is not valid for the ring format: split rings take a power of \
                 two up to 32768, packed rings any size from 1 to 32768 (virtio 1.2 §2.7, \
                 §2.8.10.1)"
            ),
            DeviceQueueError::Misaligned { area, addr, align } => write!(
                f,
                "{area} address {addr:#x} is not {align}-byte aligned (virtio 1.2 §2.7 \
                 \"Virtqueue Part Alignment\")"
            ),
            DeviceQueueError::StateOutOfRange { offset, size } => write!(
                f,
                "a saved packed-ring position to resume from, offset {offset}, is not inside the \
                 ring of {size} descriptors (virtio 1.2 §2.8)"
            ),
            DeviceQueueError::Memory { area, source } => {
                write!(f, "{area} is not in guest memory: {source}")
            }
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
            DeviceQueueError::OutOfOrderUse { expected, got } => write!(
                f,
                "with VIRTIO_F_IN_ORDER the device used the chain at position {got} before the \
                 one at {expected}: used order must be available order (virtio 1.2 §2.7.9, \
                 §2.8.8)"
            ),
            DeviceQueueError::NotificationForOtherQueue { vqn, expected } => write!(
                f,
                "notification data names queue {vqn}, not this queue ({expected}) (virtio 1.2 \
                 §2.9)"
            ),
            DeviceQueueError::ResumeTooMany { count, size } => write!(
                f,
                "more chains to re-deliver ({count}) than the queue has descriptors ({size}) \
                 (vhost-user.rst, \"Inflight I/O tracking\")"
            ),
            DeviceQueueError::ResumeHeadRepeated { head } => {
                write!(f, "a chain to re-deliver is named twice: head {head}")
            }
            DeviceQueueError::ResumeUnsupported => write!(
                f,
                "chains can be re-delivered, and journaled, on split rings only"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DeviceQueueError {}

#[cfg(feature = "std")]
impl std::error::Error for Violation {}
