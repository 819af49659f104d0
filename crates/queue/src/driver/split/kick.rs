//! Split virtqueue, driver side: publishing available buffers and deciding whether the device
//! needs a notification (virtio 1.2 §2.7.13.3, §2.7.13.4, §2.7.10).

use vireo_spec::notification::NotificationData;
use vireo_spec::split::{avail, used as used_ring};

use super::SplitDriverQueue;
use crate::driver::error::DriverQueueError;
use crate::ordering::{self, FIELD, PUBLISH};

impl<T> SplitDriverQueue<T> {
    /// Makes every buffer added so far visible to the device: stores `avail.idx` after the
    /// descriptors and ring slots (virtio 1.2 §2.7.13.3, ordering::PUBLISH).
    pub fn publish(&mut self) -> Result<(), DriverQueueError> {
        self.mem.check_usable()?;
        if self.avail_published == self.avail_next {
            return Ok(());
        }
        self.mem.store_u16(
            self.layout.driver_area + avail::IDX,
            self.avail_next,
            PUBLISH,
        )?;
        let new = self.avail_next.wrapping_sub(self.avail_published);
        self.published_since_decision = self.published_since_decision.saturating_add(new.into());
        self.avail_published = self.avail_next;
        Ok(())
    }

    /// Publishes, then answers whether the device wants a notification for the buffers
    /// published since the last answer (Linux's `virtqueue_kick_prepare`; virtio 1.2 §2.7.13.4
    /// and §2.7.10). A full fence (ordering::notify_fence) separates the publication from reading
    /// the device's wish, so a device going to sleep either sees the new index or asks for a
    /// notification. With EVENT_IDX: `vring_need_event(avail_event, new, old)` over the indices
    /// published since the last answer; otherwise: unless `used.flags` has NO_NOTIFY. `false`
    /// when nothing was published since the last answer.
    pub fn kick_prepare(&mut self) -> Result<bool, DriverQueueError> {
        self.publish()?;
        ordering::notify_fence();
        let (old, new) = (self.avail_decided, self.avail_published);
        let count = self.published_since_decision;
        self.avail_decided = new;
        self.published_since_decision = 0;
        if count == 0 {
            return Ok(false);
        }
        if count > u32::from(u16::MAX) {
            // 2^16 or more indices since the last answer: need_event cannot tell; notify.
            return Ok(true);
        }
        if self.event_idx {
            let event = self.mem.load_u16(self.avail_event_offset(), FIELD)?;
            Ok(vireo_spec::split::need_event(event, new, old))
        } else {
            let flags = self
                .mem
                .load_u16(self.layout.device_area + used_ring::FLAGS, FIELD)?;
            Ok(flags & used_ring::F_NO_NOTIFY == 0)
        }
    }

    /// The value to send with an available-buffer notification when VIRTIO_F_NOTIFICATION_DATA
    /// is negotiated (virtio 1.2 §2.9): queue `queue_index` and `next_idx`, the available index
    /// as published.
    pub fn notification_data(&self, queue_index: u16) -> NotificationData {
        NotificationData::split(queue_index, self.avail_published)
    }
}
