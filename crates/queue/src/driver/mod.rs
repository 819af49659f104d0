//! The driver side of a virtqueue: what a guest kernel (or our vhost-user frontend) runs.
//!
//! The driver owns the ring memory: it lays the ring out, adds scatter-gather buffers (each with
//! a caller token), publishes them, decides whether the device needs a notification, and gets
//! used buffers back with their tokens (virtio 1.2 §2.7.13 "Supplying Buffers to The Device",
//! §2.7.14 "Receiving Used Buffers From The Device").
//!
//! The device is not trusted: the driver keeps a private shadow of every descriptor it wrote
//! and never reads one back; every used element is validated (id in range and the head of a
//! buffer made available, length within the buffer's writable bytes, used index not ahead of
//! the buffers in flight). A violation latches the queue broken ([`DriverQueueError::Broken`]):
//! the device needs a reset, after which [`DriverQueue::detach_unused`] returns the tokens and
//! [`DriverQueue::reset`] makes the queue usable again.
//!
//! Hot path (`add`, `publish`, `kick_prepare`, `pop_used`): no allocation, lock or syscall.
//! Memory is allocated only when a queue is made.
//!
//! [`DriverQueue`] is the format-independent face; [`SplitDriverQueue`] is the split ring
//! (virtio 1.2 §2.7), [`PackedDriverQueue`] the packed one (§2.8). All three implement
//! [`DriverRing`]: write the driver loop generic over it and `match` on the [`DriverQueue`] once
//! to call it, so each format gets its own copy of the loop, with no dispatch per call. Both understand IN_ORDER
//! (§2.7.9, §2.8.8: ids handed out in order, a batch reported by its last buffer) and give the
//! NOTIFICATION_DATA value (§2.9).

mod buffer;
mod driver_ring;
mod error;
mod in_order;
mod layout;
mod packed;
mod ring;
mod shadow;
mod split;

use vireo_memory::SharedArea;
use vireo_spec::notification::NotificationData;
use vireo_spec::Features;

pub use driver_ring::DriverRing;
pub use error::{DeviceViolation, DriverQueueError};
pub use layout::RingLayout;
pub use packed::PackedDriverQueue;
pub use split::SplitDriverQueue;

use crate::{QueueConfig, RingAddresses, RingFormat};

/// One segment of a buffer: `len` bytes at guest address `addr` (virtio 1.2 §2.7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSegment {
    /// Guest address of the first byte (as the device addresses memory).
    pub addr: u64,
    /// Length in bytes (not zero).
    pub len: u32,
}

impl BufferSegment {
    /// `len` bytes at `addr`.
    pub const fn new(addr: u64, len: u32) -> Self {
        BufferSegment { addr, len }
    }
}

/// A buffer the device has finished with (virtio 1.2 §2.7.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedBuffer<T> {
    /// The token given when the buffer was added.
    pub token: T,
    /// Bytes the device wrote into the buffer's device-writable segments, from the first of
    /// them on (validated: never more than those segments hold).
    pub written: u32,
}

/// How a driver-side queue uses its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverQueueOptions {
    /// Entries per indirect descriptor table (virtio 1.2 §2.7.5.3), when INDIRECT_DESC is
    /// negotiated: a buffer of 2 up to this many segments takes one descriptor slot and one
    /// table. Capped at the queue size; 0 or 1 means no indirect descriptors. Each descriptor slot
    /// gets its own table, so the ring memory grows by `size * indirect_table_len * 16` bytes.
    pub indirect_table_len: u16,
}

impl Default for DriverQueueOptions {
    fn default() -> Self {
        DriverQueueOptions {
            indirect_table_len: 16,
        }
    }
}

/// Bytes of ring memory a driver-side queue of `size` descriptors needs, for the ring `format`,
/// the negotiated `features` and `options` (a size that [`DriverQueue::new`] refuses gives a
/// meaningless number, never a panic).
pub fn required_size(
    format: RingFormat,
    size: u16,
    features: Features,
    options: &DriverQueueOptions,
) -> usize {
    RingLayout::new(format, size, features, options).total
}

/// Whether the driver wants used-buffer notifications (virtio 1.2 §2.7.7, §2.8.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UsedNotifications {
    Enabled,
    Disabled,
}

/// A driver-side virtqueue of either ring format, holding a token of type `T` per buffer.
#[derive(Debug)]
pub enum DriverQueue<T> {
    /// Split virtqueue (virtio 1.2 §2.7).
    Split(SplitDriverQueue<T>),
    /// Packed virtqueue (virtio 1.2 §2.8).
    Packed(PackedDriverQueue<T>),
}

/// `$body` with `$q` bound to the queue of whichever format `$self` holds.
macro_rules! each {
    ($self:expr, $q:ident => $body:expr) => {
        match $self {
            DriverQueue::Split($q) => $body,
            DriverQueue::Packed($q) => $body,
        }
    };
}

impl<T> DriverQueue<T> {
    /// A queue of `size` descriptors laid out in `area`, whose first byte the device sees at
    /// `guest_addr`; the format is the one `features` select (virtio 1.2 §2.7, §2.8). The area is
    /// zeroed. It must hold [`required_size`] bytes and be 16-byte aligned.
    pub fn new(
        area: SharedArea,
        guest_addr: u64,
        size: u16,
        features: Features,
        options: DriverQueueOptions,
    ) -> Result<Self, DriverQueueError> {
        match RingFormat::from_features(features) {
            RingFormat::Split => {
                SplitDriverQueue::new(area, guest_addr, size, features, options).map(Self::Split)
            }
            RingFormat::Packed => {
                PackedDriverQueue::new(area, guest_addr, size, features, options).map(Self::Packed)
            }
        }
    }

    /// The ring format.
    pub fn format(&self) -> RingFormat {
        match self {
            DriverQueue::Split(_) => RingFormat::Split,
            DriverQueue::Packed(_) => RingFormat::Packed,
        }
    }

    /// Where the ring's parts are, to tell the device.
    pub fn addresses(&self) -> RingAddresses {
        each!(self, q => q.addresses())
    }

    /// Everything the device side needs to attach to this ring (size, addresses, features).
    pub fn config(&self) -> QueueConfig {
        each!(self, q => q.config())
    }

    /// Adds a buffer: `readable` segments (the device reads them), then `writable` ones (the
    /// device writes them). Not visible to the device until [`Self::publish`] or
    /// [`Self::kick_prepare`].
    #[inline]
    pub fn add(
        &mut self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        token: T,
    ) -> Result<(), DriverQueueError> {
        each!(self, q => q.add(readable, writable, token))
    }

    /// Makes every buffer added so far visible to the device.
    #[inline]
    pub fn publish(&mut self) -> Result<(), DriverQueueError> {
        each!(self, q => q.publish())
    }

    /// Publishes, then answers whether the device wants a notification for the buffers
    /// published since the last answer.
    #[inline]
    pub fn kick_prepare(&mut self) -> Result<bool, DriverQueueError> {
        each!(self, q => q.kick_prepare())
    }

    /// The next used buffer, `Ok(None)` if there is none yet.
    #[inline]
    pub fn pop_used(&mut self) -> Result<Option<UsedBuffer<T>>, DriverQueueError> {
        each!(self, q => q.pop_used())
    }

    /// Asks the device not to notify about used buffers (a hint the device may ignore).
    #[inline]
    pub fn disable_used_notifications(&mut self) -> Result<(), DriverQueueError> {
        each!(self, q => q.disable_used_notifications())
    }

    /// Asks the device to notify about used buffers again; `true` means used buffers are
    /// already waiting (no notification will come for them: poll again).
    #[inline]
    pub fn enable_used_notifications(&mut self) -> Result<bool, DriverQueueError> {
        each!(self, q => q.enable_used_notifications())
    }

    /// After a device reset: the token of one buffer not yet returned by `pop_used`, `None`
    /// when there are no more. Then [`Self::reset`] before using the queue again.
    pub fn detach_unused(&mut self) -> Option<T> {
        each!(self, q => q.detach_unused())
    }

    /// The value to send with an available-buffer notification when
    /// VIRTIO_F_NOTIFICATION_DATA is negotiated (virtio 1.2 §2.9): `queue_index` and where the
    /// driver's next available entry goes (split: the available index; packed: offset and
    /// wrap counter), everything before it published.
    pub fn notification_data(&self, queue_index: u16) -> NotificationData {
        each!(self, q => q.notification_data(queue_index))
    }

    /// Zeroes the ring and starts over (no buffer may be in flight: detach them first). After a
    /// device reset (virtio 1.2 §2.4), or a reset of this queue alone with RING_RESET (§2.6.1):
    /// [`Self::detach_unused`] returns each buffer in flight once, then this re-initialises the
    /// ring so the queue can be enabled again.
    pub fn reset(&mut self) -> Result<(), DriverQueueError> {
        each!(self, q => q.reset())
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        each!(self, q => q.num_free())
    }

    /// Buffers added and not yet returned.
    pub fn len_in_flight(&self) -> u16 {
        each!(self, q => q.len_in_flight())
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        each!(self, q => q.size())
    }

    /// True once the device broke a ring rule.
    pub fn is_broken(&self) -> bool {
        each!(self, q => q.is_broken())
    }
}

impl<T> From<SplitDriverQueue<T>> for DriverQueue<T> {
    fn from(q: SplitDriverQueue<T>) -> Self {
        DriverQueue::Split(q)
    }
}

impl<T> From<PackedDriverQueue<T>> for DriverQueue<T> {
    fn from(q: PackedDriverQueue<T>) -> Self {
        DriverQueue::Packed(q)
    }
}
