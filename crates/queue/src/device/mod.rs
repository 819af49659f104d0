//! The device side of a virtqueue: what a hypervisor or vhost-user backend runs.
//!
//! The driver is untrusted. Everything it writes (indices, heads, descriptors, indirect tables,
//! buffer addresses, event fields) is validated before use, and nothing here panics or loops
//! without bound on it.
//!
//! # Use
//! [`DeviceQueue::pop`] returns an [`AvailChain`] handle; [`DeviceQueue::chain`] walks its
//! descriptors lazily as validated [`Segment`]s (device-readable first, then device-writable);
//! [`DeviceQueue::add_used`] writes the used element and [`DeviceQueue::publish_used`] makes
//! every element added since visible with one store (batching); then
//! [`DeviceQueue::needs_notification`] says whether to interrupt the driver. Kicks are
//! suppressed with [`DeviceQueue::disable_kicks`] while the device polls, and re-enabled with
//! [`DeviceQueue::enable_kicks`], which says whether buffers arrived in the meantime:
//!
//! ```text
//! loop {
//!     queue.disable_kicks()?;
//!     while let Some(chain) = queue.pop()? { ...; queue.add_used(&chain, written)?; }
//!     queue.publish_used()?;
//!     if queue.needs_notification()? { interrupt the driver }
//!     if !queue.enable_kicks()? { break } // nothing arrived in the race window: sleep
//! }
//! ```
//!
//! # Policy for a driver that breaks a rule
//! Any violation of a driver requirement (an avail index too far ahead, a head or `next` out of
//! range, a chain that is too long or loops, a malformed or un-negotiated indirect table, a
//! readable descriptor after a writable one, a buffer outside guest memory, ...) is returned
//! once as [`DeviceQueueError::Violation`] and **latches the queue broken**: every later call
//! (pop, chain, add_used, publish_used, notification and kick control; also segment readers
//! already made) returns [`DeviceQueueError::Broken`] carrying the original [`Violation`]. A
//! broken chain is never re-polled, and the queue writes nothing more to the used ring. The
//! device layer then sets DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2) and waits for the driver to
//! reset the device (or the queue).
//!
//! The device's own misuse of a chain handle (using a chain twice, or a handle from another
//! queue) is refused with its own error and does not latch the queue.
//!
//! # Hot path
//! No allocation, lock or syscall per buffer: the rings are held as [`SharedArea`]s translated
//! once, `avail.idx` is read (with [`crate::ordering::CONSUME`]) only when the cached copy says
//! the ring is empty, ring positions are masked with `size - 1`, used elements are published
//! with one [`crate::ordering::PUBLISH`] store per batch.
//!
//! [`SharedArea`]: vireo_memory::SharedArea

mod chain;
mod error;
mod inflight;
mod split;
mod split_chain;

pub use chain::{ChainReader, ChainTotals};
pub use error::{DeviceQueueError, RingArea, Violation};
pub use split::SplitDeviceQueue;

use vireo_memory::{GuestMemory, SharedSlice};

use crate::{QueueConfig, RingFormat};

/// Which way a buffer's bytes flow, from the device's point of view (virtio 1.2 §2.7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The device reads the buffer (the driver filled it).
    DeviceReadable,
    /// The device writes the buffer (the driver reads it after use).
    DeviceWritable,
}

/// One validated buffer of a chain: its guest address, its bytes, and its direction.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m> {
    /// The buffer's guest address (as the descriptor gave it).
    pub addr: u64,
    /// The buffer's bytes, translated and bounds-checked.
    pub slice: SharedSlice<'m>,
    /// Whether the device reads or writes it.
    pub direction: Direction,
}

/// A chain the device popped and holds until it returns it with `add_used`.
///
/// A small `Copy` handle: the chain's id (its head descriptor index, which is also the id that
/// goes into the used ring) plus where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AvailChain {
    /// Head descriptor index (split), or buffer id (packed).
    pub(crate) id: u16,
    /// Free-running position in the available ring (split) or descriptor ring (packed) where the
    /// chain was found.
    pub(crate) pos: u16,
}

impl AvailChain {
    /// The chain's id: the head descriptor index, as written into the used ring.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The free-running ring position where the chain was found (split: the avail ring index
    /// before masking).
    pub fn position(&self) -> u16 {
        self.pos
    }
}

/// The indices that resume a queue where it stopped (what vhost-user `SET_VRING_BASE` and
/// `GET_VRING_BASE` carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct DeviceQueueState {
    /// Next available-ring entry the device will consume (free-running).
    pub next_avail: u16,
    /// Next used-ring entry the device will write (free-running).
    pub next_used: u16,
}

/// A device-side virtqueue of either format.
///
/// Each method delegates to the format; see [`SplitDeviceQueue`] for the details.
#[derive(Debug)]
pub enum DeviceQueue {
    /// Split virtqueue (virtio 1.2 §2.7).
    Split(SplitDeviceQueue),
}

impl DeviceQueue {
    /// Attaches to the rings `config` describes, in the format its features select.
    pub fn new(
        mem: &impl GuestMemory,
        config: &QueueConfig,
        state: DeviceQueueState,
    ) -> Result<Self, DeviceQueueError> {
        match RingFormat::from_features(config.features) {
            RingFormat::Split => SplitDeviceQueue::new(mem, config, state).map(DeviceQueue::Split),
            RingFormat::Packed => Err(DeviceQueueError::UnsupportedFormat),
        }
    }

    /// Takes the next available chain, if any. See [`SplitDeviceQueue::pop`].
    pub fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.pop(),
        }
    }

    /// Walks a popped chain's segments. See [`SplitDeviceQueue::chain`].
    pub fn chain<'q, 'm, M: GuestMemory>(
        &'q self,
        chain: &AvailChain,
        mem: &'m M,
    ) -> ChainReader<'q, 'm, M> {
        match self {
            DeviceQueue::Split(q) => q.chain(chain, mem),
        }
    }

    /// Writes a used element without publishing it. See [`SplitDeviceQueue::add_used`].
    pub fn add_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.add_used(chain, written),
        }
    }

    /// Publishes every used element added since the last publish. See
    /// [`SplitDeviceQueue::publish_used`].
    pub fn publish_used(&mut self) -> Result<(), DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.publish_used(),
        }
    }

    /// [`Self::add_used`] then [`Self::publish_used`].
    pub fn push_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.push_used(chain, written),
        }
    }

    /// Whether the driver wants an interrupt for what was published since the last decision.
    /// See [`SplitDeviceQueue::needs_notification`].
    pub fn needs_notification(&mut self) -> Result<bool, DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.needs_notification(),
        }
    }

    /// Asks the driver not to kick. See [`SplitDeviceQueue::disable_kicks`].
    pub fn disable_kicks(&mut self) -> Result<(), DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.disable_kicks(),
        }
    }

    /// Asks the driver to kick again; true if buffers are already available (poll again). See
    /// [`SplitDeviceQueue::enable_kicks`].
    pub fn enable_kicks(&mut self) -> Result<bool, DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.enable_kicks(),
        }
    }

    /// The indices to resume from.
    pub fn state(&self) -> DeviceQueueState {
        match self {
            DeviceQueue::Split(q) => q.state(),
        }
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        match self {
            DeviceQueue::Split(q) => q.size(),
        }
    }

    /// True once the driver broke a rule (see the module's policy).
    pub fn is_broken(&self) -> bool {
        self.broken_by().is_some()
    }

    /// The rule the driver broke, once the queue is broken.
    pub fn broken_by(&self) -> Option<Violation> {
        match self {
            DeviceQueue::Split(q) => q.broken_by(),
        }
    }
}
