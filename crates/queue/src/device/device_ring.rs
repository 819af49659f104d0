//! [`DeviceRing`]: the one device-side interface of a virtqueue, whatever its format.

use core::fmt;

use vireo_memory::GuestMemory;
use vireo_spec::notification::NotificationData;

use super::{
    AvailChain, ChainReader, DeviceQueue, DeviceQueueError, DeviceQueueState, PackedDeviceQueue,
    Segment, SplitDeviceQueue, Violation,
};
use crate::RingFormat;

/// A device-side virtqueue: the calls a device makes on its ring, in either format.
///
/// Implemented by [`SplitDeviceQueue`] (virtio 1.2 §2.7), [`PackedDeviceQueue`] (§2.8) and the
/// [`DeviceQueue`] enum. Write the device loop once, generic over `Q: DeviceRing`; pick the
/// format once (a `match` on [`DeviceQueue`]) and call the generic function from each arm: the
/// compiler makes one copy of the loop per format, so there is no dispatch per call and the
/// loop is exactly as fast as one written against the format's own type (the dispatch bench,
/// `cargo bench -p vireo-queue --bench dispatch`, measures it). Passing the enum itself also
/// works, with a `match` in every call.
///
/// ```
/// use vireo_memory::GuestMemory;
/// use vireo_queue::device::{DeviceQueue, DeviceQueueError, DeviceRing, Direction};
///
/// /// Uses every available chain, reporting its writable bytes as written.
/// fn serve<Q: DeviceRing, M: GuestMemory>(
///     q: &mut Q,
///     mem: &M,
/// ) -> Result<bool, DeviceQueueError> {
///     while let Some(chain) = q.pop()? {
///         let mut written = 0u32;
///         for segment in q.chain(&chain, mem) {
///             let segment = segment?;
///             if segment.direction == Direction::DeviceWritable {
///                 written = written.saturating_add(segment.slice.len() as u32);
///             }
///         }
///         q.add_used(&chain, written)?;
///     }
///     q.publish_used()?;
///     q.needs_notification()
/// }
///
/// /// The format is chosen here, once per call of `serve`, not once per ring operation.
/// fn serve_any<M: GuestMemory>(
///     q: &mut DeviceQueue,
///     mem: &M,
/// ) -> Result<bool, DeviceQueueError> {
///     match q {
///         DeviceQueue::Split(q) => serve(q, mem),
///         DeviceQueue::Packed(q) => serve(q, mem),
///     }
/// }
/// ```
///
/// Each method is the format's own (see [`SplitDeviceQueue`] and [`PackedDeviceQueue`] for the
/// rules, and the [module policy](crate::device) for a driver that breaks one).
pub trait DeviceRing {
    /// The reader [`Self::chain`] returns: the validated segments of one popped chain,
    /// device-readable ones first, ending at the first error. All three implementations return
    /// [`ChainReader`] today; being an associated type, a format's own reader can take its
    /// place without changing code written against the trait.
    type Chain<'q, 'm, M: GuestMemory + 'm>: Iterator<Item = Result<Segment<'m>, DeviceQueueError>>
        + Clone
        + fmt::Debug
    where
        Self: 'q;

    /// The ring format.
    fn format(&self) -> RingFormat;

    /// Takes the next available chain; `Ok(None)` when the ring is empty.
    fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError>;

    /// Walks a popped chain's segments lazily; each buffer is translated through `mem`.
    fn chain<'q, 'm, M: GuestMemory>(
        &'q self,
        chain: &AvailChain,
        mem: &'m M,
    ) -> Self::Chain<'q, 'm, M>;

    /// Writes the used element for `chain` (`written` bytes) without publishing it.
    fn add_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError>;

    /// Publishes every used element added since the last publish, with one store.
    fn publish_used(&mut self) -> Result<(), DeviceQueueError>;

    /// [`Self::add_used`] then [`Self::publish_used`].
    fn push_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError>;

    /// Whether the driver wants an interrupt for what was published since the last decision.
    fn needs_notification(&mut self) -> Result<bool, DeviceQueueError>;

    /// Asks the driver not to kick (the device polls).
    fn disable_kicks(&mut self) -> Result<(), DeviceQueueError>;

    /// Asks the driver to kick again; `true` if buffers are already available (poll again).
    fn enable_kicks(&mut self) -> Result<bool, DeviceQueueError>;

    /// Checks VIRTIO_F_NOTIFICATION_DATA (virtio 1.2 §2.9) for this queue (`vqn`); returns how
    /// many entries the notification announces.
    fn apply_notification(
        &mut self,
        vqn: u16,
        data: NotificationData,
    ) -> Result<u16, DeviceQueueError>;

    /// Resets this queue alone (VIRTIO_F_RING_RESET, virtio 1.2 §2.6.1).
    fn reset(&mut self);

    /// The positions to resume from.
    fn state(&self) -> DeviceQueueState;

    /// Queue size.
    fn size(&self) -> u16;

    /// The rule the driver broke, once the queue is broken.
    fn broken_by(&self) -> Option<Violation>;

    /// True once the driver broke a rule.
    #[inline]
    fn is_broken(&self) -> bool {
        self.broken_by().is_some()
    }
}

/// Implements [`DeviceRing`] for `$t` by calling its inherent methods of the same names (which
/// inherent-method resolution picks over the trait's).
macro_rules! device_ring {
    ($t:ty, $format:expr) => {
        impl DeviceRing for $t {
            type Chain<'q, 'm, M: GuestMemory + 'm> = ChainReader<'q, 'm, M>;

            #[inline]
            fn format(&self) -> RingFormat {
                let format: fn(&Self) -> RingFormat = $format;
                format(self)
            }
            #[inline]
            fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
                <$t>::pop(self)
            }
            #[inline]
            fn chain<'q, 'm, M: GuestMemory>(
                &'q self,
                chain: &AvailChain,
                mem: &'m M,
            ) -> ChainReader<'q, 'm, M> {
                <$t>::chain(self, chain, mem)
            }
            #[inline]
            fn add_used(
                &mut self,
                chain: &AvailChain,
                written: u32,
            ) -> Result<(), DeviceQueueError> {
                <$t>::add_used(self, chain, written)
            }
            #[inline]
            fn publish_used(&mut self) -> Result<(), DeviceQueueError> {
                <$t>::publish_used(self)
            }
            #[inline]
            fn push_used(
                &mut self,
                chain: &AvailChain,
                written: u32,
            ) -> Result<(), DeviceQueueError> {
                <$t>::push_used(self, chain, written)
            }
            #[inline]
            fn needs_notification(&mut self) -> Result<bool, DeviceQueueError> {
                <$t>::needs_notification(self)
            }
            #[inline]
            fn disable_kicks(&mut self) -> Result<(), DeviceQueueError> {
                <$t>::disable_kicks(self)
            }
            #[inline]
            fn enable_kicks(&mut self) -> Result<bool, DeviceQueueError> {
                <$t>::enable_kicks(self)
            }
            #[inline]
            fn apply_notification(
                &mut self,
                vqn: u16,
                data: NotificationData,
            ) -> Result<u16, DeviceQueueError> {
                <$t>::apply_notification(self, vqn, data)
            }
            #[inline]
            fn reset(&mut self) {
                <$t>::reset(self)
            }
            #[inline]
            fn state(&self) -> DeviceQueueState {
                <$t>::state(self)
            }
            #[inline]
            fn size(&self) -> u16 {
                <$t>::size(self)
            }
            #[inline]
            fn broken_by(&self) -> Option<Violation> {
                <$t>::broken_by(self)
            }
        }
    };
}

device_ring!(SplitDeviceQueue, |_| RingFormat::Split);
device_ring!(PackedDeviceQueue, |_| RingFormat::Packed);
device_ring!(DeviceQueue, DeviceQueue::format);
