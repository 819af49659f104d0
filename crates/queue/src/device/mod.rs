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
//! The device's own misuse of a chain handle (using a chain twice, a handle from another
//! queue, or with IN_ORDER a chain used before an older one) is refused with its own error and
//! does not latch the queue.
//!
//! # Formats and ring features
//! [`DeviceQueue::new`] picks the split (virtio 1.2 §2.7) or packed (§2.8) format from
//! VIRTIO_F_RING_PACKED; both answer the same calls, the ones of the [`DeviceRing`] trait
//! (implemented by [`SplitDeviceQueue`], [`PackedDeviceQueue`] and [`DeviceQueue`]). Write the
//! device loop generic over [`DeviceRing`] and `match` on the [`DeviceQueue`] once to call it:
//! each format gets its own copy of the loop, with no dispatch per call.
//!
//! A packed chain's ring descriptors are copied at pop (used descriptors overwrite ring slots
//! of chains still held, §2.8), its indirect table is walked lazily like a split one. With
//! VIRTIO_F_IN_ORDER (§2.7.9, §2.8.8) used entries are written back one per run of completely
//! used buffers (see `in_order.rs`).
//! [`DeviceQueue::apply_notification`] checks VIRTIO_F_NOTIFICATION_DATA (§2.9), and
//! [`DeviceQueue::reset`] resets one queue for VIRTIO_F_RING_RESET (§2.6.1).
//!
//! # Hot path
//! No allocation, lock or syscall per buffer: the rings are held as [`SharedArea`]s translated
//! once, every per-buffer table (in-flight ids, packed held descriptors, in-order capacities) is
//! allocated when the queue is made; `avail.idx` is read (with [`crate::ordering::CONSUME`])
//! only when the cached copy says the ring is empty (packed: one CONSUME load of the next
//! descriptor's flags); used elements are published with one [`crate::ordering::PUBLISH`]
//! store per batch (split: `used.idx`; packed: the first used descriptor's flags).
//!
//! [`SharedArea`]: vireo_memory::SharedArea

mod chain;
mod device_ring;
mod error;
mod in_order;
mod inflight;
mod packed;
mod packed_chain;
mod packed_held;
mod packed_notify;
mod packed_pos;
mod resume;
mod segment;
mod split;
mod split_chain;

pub use chain::{ChainReader, ChainTotals};
pub use device_ring::DeviceRing;
pub use error::{DeviceQueueError, RingArea, Violation};
pub use packed::PackedDeviceQueue;
pub use resume::InflightJournal;
pub use split::SplitDeviceQueue;

use vireo_memory::{GuestMemory, SharedSlice};
use vireo_spec::notification::NotificationData;
use vireo_spec::packed::WrapCounter;

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

/// The positions that resume a queue where it stopped (what vhost-user `SET_VRING_BASE` and
/// `GET_VRING_BASE` carry, see [`Self::from_vring_base`]).
///
/// Split rings (virtio 1.2 §2.7): `next_avail` and `next_used` are free-running 16-bit indices
/// and the wrap counters are unused. Packed rings (§2.8): `next_avail`/`next_used` are
/// descriptor offsets (below the queue size) and `avail_wrap`/`used_wrap` the driver's and the
/// device's ring wrap counters there (§2.8.1). The default is a fresh queue of either format:
/// positions 0, wrap counters 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceQueueState {
    /// Next available entry (split: avail ring index) or descriptor (packed: offset) the
    /// device will consume.
    pub next_avail: u16,
    /// Packed: the driver's wrap counter expected at `next_avail`.
    pub avail_wrap: WrapCounter,
    /// Next used entry (split: used ring index) or descriptor (packed: offset) the device will
    /// write.
    pub next_used: u16,
    /// Packed: the device's wrap counter at `next_used`.
    pub used_wrap: WrapCounter,
}

impl Default for DeviceQueueState {
    fn default() -> Self {
        DeviceQueueState {
            next_avail: 0,
            avail_wrap: WrapCounter::INITIAL,
            next_used: 0,
            used_wrap: WrapCounter::INITIAL,
        }
    }
}

/// Bit 15 of a packed position: the wrap counter.
const WRAP_BIT: u16 = 1 << 15;

impl DeviceQueueState {
    /// The state a vhost-user `SET_VRING_BASE` value `num` describes (QEMU
    /// `docs/interop/vhost-user.rst`, "Front-end message types", VHOST_USER_SET_VRING_BASE).
    ///
    /// Split: `num` is the next available index (at most 16 bits; the used index is the one in
    /// guest memory, so `next_used` must be filled in from `used.idx` by the caller). Packed:
    /// bits 0..15 the next available offset, bit 15 the driver wrap counter; bits 16..31 the
    /// used position in the same way (QEMU sends both halves; a front-end sending only the low
    /// half resumes an idle ring, whose used position equals the available one, so an upper
    /// half of 0 is read as "same as available"). `None` for a split value over 16 bits.
    pub fn from_vring_base(format: RingFormat, num: u32) -> Option<Self> {
        match format {
            RingFormat::Split => Some(DeviceQueueState {
                next_avail: u16::try_from(num).ok()?,
                ..DeviceQueueState::default()
            }),
            RingFormat::Packed => {
                let low = num as u16;
                let high = match (num >> 16) as u16 {
                    0 => low,
                    h => h,
                };
                Some(DeviceQueueState {
                    next_avail: low & !WRAP_BIT,
                    avail_wrap: WrapCounter::from_bit(low >> 15),
                    next_used: high & !WRAP_BIT,
                    used_wrap: WrapCounter::from_bit(high >> 15),
                })
            }
        }
    }

    /// The vhost-user `GET_VRING_BASE` value for this state: split, the next available index;
    /// packed, both positions as in [`Self::from_vring_base`].
    pub fn vring_base(&self, format: RingFormat) -> u32 {
        match format {
            RingFormat::Split => u32::from(self.next_avail),
            RingFormat::Packed => {
                let pos = |off: u16, wrap: WrapCounter| (off & !WRAP_BIT) | (wrap.bit() << 15);
                u32::from(pos(self.next_avail, self.avail_wrap))
                    | u32::from(pos(self.next_used, self.used_wrap)) << 16
            }
        }
    }
}

/// A device-side virtqueue of either format.
///
/// Each method delegates to the format; see [`SplitDeviceQueue`] and [`PackedDeviceQueue`]
/// for the details.
#[derive(Debug)]
pub enum DeviceQueue {
    /// Split virtqueue (virtio 1.2 §2.7).
    Split(SplitDeviceQueue),
    /// Packed virtqueue (virtio 1.2 §2.8).
    Packed(PackedDeviceQueue),
}

/// Calls the same method on either format.
macro_rules! each {
    ($self:expr, $q:ident => $e:expr) => {
        match $self {
            DeviceQueue::Split($q) => $e,
            DeviceQueue::Packed($q) => $e,
        }
    };
}

impl DeviceQueue {
    /// Attaches to the rings `config` describes, in the format its features select
    /// ([`Features::RING_PACKED`](vireo_spec::Features::RING_PACKED)).
    pub fn new(
        mem: &impl GuestMemory,
        config: &QueueConfig,
        state: DeviceQueueState,
    ) -> Result<Self, DeviceQueueError> {
        match RingFormat::from_features(config.features) {
            RingFormat::Split => SplitDeviceQueue::new(mem, config, state).map(DeviceQueue::Split),
            RingFormat::Packed => {
                PackedDeviceQueue::new(mem, config, state).map(DeviceQueue::Packed)
            }
        }
    }

    /// The ring format.
    pub fn format(&self) -> RingFormat {
        match self {
            DeviceQueue::Split(_) => RingFormat::Split,
            DeviceQueue::Packed(_) => RingFormat::Packed,
        }
    }

    /// Takes the next available chain, if any. See [`SplitDeviceQueue::pop`],
    /// [`PackedDeviceQueue::pop`].
    #[inline]
    pub fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
        each!(self, q => q.pop())
    }

    /// Walks a popped chain's segments. See [`SplitDeviceQueue::chain`],
    /// [`PackedDeviceQueue::chain`].
    #[inline]
    pub fn chain<'q, 'm, M: GuestMemory>(
        &'q self,
        chain: &AvailChain,
        mem: &'m M,
    ) -> ChainReader<'q, 'm, M> {
        each!(self, q => q.chain(chain, mem))
    }

    /// Writes a used element without publishing it (with IN_ORDER, possibly as part of one
    /// element per batch). See [`SplitDeviceQueue::add_used`], [`PackedDeviceQueue::add_used`].
    #[inline]
    pub fn add_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        each!(self, q => q.add_used(chain, written))
    }

    /// Publishes every used element added since the last publish. See
    /// [`SplitDeviceQueue::publish_used`], [`PackedDeviceQueue::publish_used`].
    #[inline]
    pub fn publish_used(&mut self) -> Result<(), DeviceQueueError> {
        each!(self, q => q.publish_used())
    }

    /// [`Self::add_used`] then [`Self::publish_used`].
    #[inline]
    pub fn push_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        each!(self, q => q.push_used(chain, written))
    }

    /// Whether the driver wants an interrupt for what was published since the last decision.
    /// See [`SplitDeviceQueue::needs_notification`], [`PackedDeviceQueue::needs_notification`].
    #[inline]
    pub fn needs_notification(&mut self) -> Result<bool, DeviceQueueError> {
        each!(self, q => q.needs_notification())
    }

    /// Asks the driver not to kick. See [`SplitDeviceQueue::disable_kicks`],
    /// [`PackedDeviceQueue::disable_kicks`].
    #[inline]
    pub fn disable_kicks(&mut self) -> Result<(), DeviceQueueError> {
        each!(self, q => q.disable_kicks())
    }

    /// Asks the driver to kick again; true if buffers are already available (poll again). See
    /// [`SplitDeviceQueue::enable_kicks`], [`PackedDeviceQueue::enable_kicks`].
    #[inline]
    pub fn enable_kicks(&mut self) -> Result<bool, DeviceQueueError> {
        each!(self, q => q.enable_kicks())
    }

    /// Checks VIRTIO_F_NOTIFICATION_DATA (virtio 1.2 §2.9) for this queue (`vqn`: its index, or
    /// its notification config data); returns how many entries it announces. See
    /// [`SplitDeviceQueue::apply_notification`], [`PackedDeviceQueue::apply_notification`].
    #[inline]
    pub fn apply_notification(
        &mut self,
        vqn: u16,
        data: NotificationData,
    ) -> Result<u16, DeviceQueueError> {
        each!(self, q => q.apply_notification(vqn, data))
    }

    /// Resets this queue alone (VIRTIO_F_RING_RESET, virtio 1.2 §2.6.1). See
    /// [`SplitDeviceQueue::reset`], [`PackedDeviceQueue::reset`].
    pub fn reset(&mut self) {
        each!(self, q => q.reset())
    }

    /// The positions to resume from.
    pub fn state(&self) -> DeviceQueueState {
        each!(self, q => q.state())
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        each!(self, q => q.size())
    }

    /// True once the driver broke a rule (see the module's policy).
    pub fn is_broken(&self) -> bool {
        self.broken_by().is_some()
    }

    /// The rule the driver broke, once the queue is broken.
    pub fn broken_by(&self) -> Option<Violation> {
        each!(self, q => q.broken_by())
    }

    /// Attaches an inflight journal, told of every pop, used element and publish from now on
    /// (see [`InflightJournal`]); split rings only ([`DeviceQueueError::ResumeUnsupported`]).
    pub fn set_journal(
        &mut self,
        journal: alloc::boxed::Box<dyn InflightJournal>,
    ) -> Result<(), DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => {
                q.resume_mut().set_journal(Some(journal));
                Ok(())
            }
            DeviceQueue::Packed(_) => Err(DeviceQueueError::ResumeUnsupported),
        }
    }

    /// Re-delivers chains a restarted device held (QEMU `docs/interop/vhost-user.rst`,
    /// "Inflight I/O tracking"): `heads`, oldest first, are held again as the chains at the
    /// `heads.len()` available entries before the resume position, and [`Self::pop`] returns
    /// them before anything new. Call it right after [`Self::new`]; split rings only.
    pub fn redeliver(&mut self, heads: &[u16]) -> Result<(), DeviceQueueError> {
        match self {
            DeviceQueue::Split(q) => q.redeliver(heads),
            DeviceQueue::Packed(_) => Err(DeviceQueueError::ResumeUnsupported),
        }
    }
}
