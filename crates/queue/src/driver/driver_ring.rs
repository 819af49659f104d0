//! [`DriverRing`]: the one driver-side interface of a virtqueue, whatever its format.

use vireo_spec::notification::NotificationData;

use super::{
    BufferSegment, DriverQueue, DriverQueueError, PackedDriverQueue, SplitDriverQueue, UsedBuffer,
};
use crate::{QueueConfig, RingAddresses, RingFormat};

/// A driver-side virtqueue holding a token of type `T` per buffer: the calls a driver makes on
/// its ring, in either format.
///
/// Implemented by [`SplitDriverQueue`] (virtio 1.2 §2.7), [`PackedDriverQueue`] (§2.8) and the
/// [`DriverQueue`] enum. Write the driver loop once, generic over `Q: DriverRing<T>`; pick the
/// format once (a `match` on [`DriverQueue`]) and call the generic function from each arm: the
/// compiler makes one copy of the loop per format, so there is no dispatch per call and the
/// loop is exactly as fast as one written against the format's own type (the dispatch bench,
/// `cargo bench -p vireo-queue --bench dispatch`, measures it). Passing the enum itself also
/// works, with a `match` in every call.
///
/// ```
/// use vireo_queue::driver::{BufferSegment, DriverQueue, DriverQueueError, DriverRing};
///
/// /// Offers `bufs` to the device as writable buffers (token: the index); true if the device
/// /// wants a notification.
/// fn offer<Q: DriverRing<usize>>(
///     q: &mut Q,
///     bufs: &[BufferSegment],
/// ) -> Result<bool, DriverQueueError> {
///     for (i, b) in bufs.iter().enumerate() {
///         q.add(&[], core::slice::from_ref(b), i)?;
///     }
///     q.kick_prepare()
/// }
///
/// /// The format is chosen here, once per call of `offer`, not once per ring operation.
/// fn offer_any(
///     q: &mut DriverQueue<usize>,
///     bufs: &[BufferSegment],
/// ) -> Result<bool, DriverQueueError> {
///     match q {
///         DriverQueue::Split(q) => offer(q, bufs),
///         DriverQueue::Packed(q) => offer(q, bufs),
///     }
/// }
/// ```
///
/// Each method is the format's own (see [`SplitDriverQueue`] and [`PackedDriverQueue`] for the
/// rules, and [`crate::driver`] for how a device that breaks one is handled).
pub trait DriverRing<T> {
    /// The ring format.
    fn format(&self) -> RingFormat;

    /// Where the ring's parts are, to tell the device.
    fn addresses(&self) -> RingAddresses;

    /// Everything the device side needs to attach to this ring (size, addresses, features).
    fn config(&self) -> QueueConfig;

    /// Adds a buffer: `readable` segments, then `writable` ones; not visible to the device
    /// until [`Self::publish`] or [`Self::kick_prepare`].
    fn add(
        &mut self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        token: T,
    ) -> Result<(), DriverQueueError>;

    /// Makes every buffer added so far visible to the device.
    fn publish(&mut self) -> Result<(), DriverQueueError>;

    /// Publishes, then answers whether the device wants a notification for the buffers
    /// published since the last answer.
    fn kick_prepare(&mut self) -> Result<bool, DriverQueueError>;

    /// The next used buffer, `Ok(None)` if there is none yet.
    fn pop_used(&mut self) -> Result<Option<UsedBuffer<T>>, DriverQueueError>;

    /// Asks the device not to notify about used buffers (a hint the device may ignore).
    fn disable_used_notifications(&mut self) -> Result<(), DriverQueueError>;

    /// Asks the device to notify about used buffers again; `true` means used buffers are
    /// already waiting (no notification will come for them: poll again).
    fn enable_used_notifications(&mut self) -> Result<bool, DriverQueueError>;

    /// After a device reset: the token of one buffer not yet returned, `None` when there are
    /// no more. Then [`Self::reset`] before using the queue again.
    fn detach_unused(&mut self) -> Option<T>;

    /// The value to send with an available-buffer notification when
    /// VIRTIO_F_NOTIFICATION_DATA is negotiated (virtio 1.2 §2.9).
    fn notification_data(&self, queue_index: u16) -> NotificationData;

    /// Zeroes the ring and starts over (no buffer may be in flight: detach them first).
    fn reset(&mut self) -> Result<(), DriverQueueError>;

    /// Free descriptors.
    fn num_free(&self) -> u16;

    /// Buffers added and not yet returned.
    fn len_in_flight(&self) -> u16;

    /// Number of descriptors.
    fn size(&self) -> u16;

    /// True once the device broke a ring rule.
    fn is_broken(&self) -> bool;
}

/// Implements [`DriverRing`] for `$t` by calling its inherent methods of the same names (which
/// inherent-method resolution picks over the trait's).
macro_rules! driver_ring {
    ($t:ty, $format:expr) => {
        impl<T> DriverRing<T> for $t {
            #[inline]
            fn format(&self) -> RingFormat {
                let format: fn(&Self) -> RingFormat = $format;
                format(self)
            }
            #[inline]
            fn addresses(&self) -> RingAddresses {
                <$t>::addresses(self)
            }
            #[inline]
            fn config(&self) -> QueueConfig {
                <$t>::config(self)
            }
            #[inline]
            fn add(
                &mut self,
                readable: &[BufferSegment],
                writable: &[BufferSegment],
                token: T,
            ) -> Result<(), DriverQueueError> {
                <$t>::add(self, readable, writable, token)
            }
            #[inline]
            fn publish(&mut self) -> Result<(), DriverQueueError> {
                <$t>::publish(self)
            }
            #[inline]
            fn kick_prepare(&mut self) -> Result<bool, DriverQueueError> {
                <$t>::kick_prepare(self)
            }
            #[inline]
            fn pop_used(&mut self) -> Result<Option<UsedBuffer<T>>, DriverQueueError> {
                <$t>::pop_used(self)
            }
            #[inline]
            fn disable_used_notifications(&mut self) -> Result<(), DriverQueueError> {
                <$t>::disable_used_notifications(self)
            }
            #[inline]
            fn enable_used_notifications(&mut self) -> Result<bool, DriverQueueError> {
                <$t>::enable_used_notifications(self)
            }
            #[inline]
            fn detach_unused(&mut self) -> Option<T> {
                <$t>::detach_unused(self)
            }
            #[inline]
            fn notification_data(&self, queue_index: u16) -> NotificationData {
                <$t>::notification_data(self, queue_index)
            }
            #[inline]
            fn reset(&mut self) -> Result<(), DriverQueueError> {
                <$t>::reset(self)
            }
            #[inline]
            fn num_free(&self) -> u16 {
                <$t>::num_free(self)
            }
            #[inline]
            fn len_in_flight(&self) -> u16 {
                <$t>::len_in_flight(self)
            }
            #[inline]
            fn size(&self) -> u16 {
                <$t>::size(self)
            }
            #[inline]
            fn is_broken(&self) -> bool {
                <$t>::is_broken(self)
            }
        }
    };
}

driver_ring!(SplitDriverQueue<T>, |_| RingFormat::Split);
driver_ring!(PackedDriverQueue<T>, |_| RingFormat::Packed);
driver_ring!(DriverQueue<T>, DriverQueue::format);
