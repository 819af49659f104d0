//! Packed virtqueue, driver side: publishing available buffers, deciding whether the device
//! needs a notification (virtio 1.2 §2.8.21, §2.8.10) and the notification data (§2.9).

use vireo_spec::notification::NotificationData;
use vireo_spec::packed::{event, need_event, EventFlags};

use super::PackedDriverQueue;
use crate::driver::error::DriverQueueError;
use crate::ordering::{self, FIELD, PUBLISH};

impl<T> PackedDriverQueue<T> {
    /// Makes every buffer added so far visible to the device at once: stores the flags of the
    /// first head added since the last publication, after every other descriptor of the batch
    /// (virtio 1.2 §2.8.21, ordering::PUBLISH).
    pub fn publish(&mut self) -> Result<(), DriverQueueError> {
        self.mem.check_usable()?;
        let Some(head) = self.pending_head.take() else {
            return Ok(());
        };
        self.mem
            .store_u16(self.flags_offset(head.offset), head.flags, PUBLISH)?;
        self.published_seq = self.add_seq;
        self.published = self.next_avail;
        self.published_since_decision = self
            .published_since_decision
            .saturating_add(self.pending_descs);
        self.pending_descs = 0;
        Ok(())
    }

    /// Publishes, then answers whether the device wants a notification for the descriptors
    /// published since the last answer (virtio 1.2 §2.8.10, §2.8.21). A full fence
    /// (ordering::notify_fence) separates the publication from reading the device event
    /// suppression structure (read as one 32-bit value). DISABLE: no; DESC with EVENT_IDX: yes
    /// if the published descriptors cover the one at the structure's offset and wrap counter
    /// (`packed::need_event`); anything else (ENABLE, or a value the device should not have
    /// written): yes. `false` when nothing was published since the last answer.
    pub fn kick_prepare(&mut self) -> Result<bool, DriverQueueError> {
        self.publish()?;
        ordering::notify_fence();
        let count = self.published_since_decision;
        self.published_since_decision = 0;
        if count == 0 {
            return Ok(false);
        }
        let device_event = self
            .mem
            .load_u32(self.layout.device_area + event::OFF_WRAP, FIELD)?;
        let off_wrap = device_event as u16;
        let flags = (device_event >> 16) as u16;
        Ok(match EventFlags::from_bits(flags) {
            EventFlags::Disable => false,
            EventFlags::Desc if self.event_idx => {
                let published = u16::try_from(count).unwrap_or(u16::MAX);
                let at = self.published;
                need_event(off_wrap, at.offset, at.wrap, published, self.size)
            }
            _ => true,
        })
    }

    /// The value to send with an available-buffer notification when VIRTIO_F_NOTIFICATION_DATA
    /// is negotiated (virtio 1.2 §2.9): queue `queue_index`, and the offset and wrap counter of
    /// the next descriptor the driver will make available (everything before it is published).
    pub fn notification_data(&self, queue_index: u16) -> NotificationData {
        NotificationData::packed(queue_index, self.published.offset, self.published.wrap)
    }
}
