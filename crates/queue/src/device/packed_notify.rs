//! Notifications of a packed virtqueue, device side: event suppression (virtio 1.2 §2.8.10,
//! §2.8.14), used buffer notifications decided from the driver's structure, available buffer
//! notifications (kicks) requested through the device's; and notification data (§2.9).

use vireo_spec::notification::NotificationData;
use vireo_spec::packed::{event, need_event};

use super::packed::{mem_err, PackedDeviceQueue};
use super::packed_pos::RingPos;
use super::{DeviceQueueError, RingArea, Violation};
use crate::ordering;

impl PackedDeviceQueue {
    /// Whether to send a used-buffer notification for the descriptors published since the
    /// last decision (virtio 1.2 §2.8.10), after a full fence: never when the driver's flags
    /// say RING_EVENT_FLAGS_DISABLE; with EVENT_IDX and RING_EVENT_FLAGS_DESC, when the
    /// published descriptors passed the driver's `off_wrap` (`packed::need_event`); otherwise
    /// when something was published (RING_EVENT_FLAGS_DESC without EVENT_IDX, and the reserved
    /// value 3, count as enabled: a spurious interrupt is harmless, a lost one is not). Call
    /// it after [`Self::publish_used`].
    ///
    /// The first decision after [`Self::new`] or [`Self::reset`] notifies whenever the flags
    /// allow it: the driver's event offset may refer to an earlier life of the queue.
    pub fn needs_notification(&mut self) -> Result<bool, DeviceQueueError> {
        self.check_broken()?;
        let published = self.since_decision.replace(0);
        // Order the flags store that published the descriptors before the event structure
        // load (store-load): see ordering.rs.
        ordering::notify_fence();
        let area = self.driver_event.slice();
        let err = mem_err(RingArea::DriverArea);
        let flags = area.load_u16(event::FLAGS, ordering::FIELD).map_err(&err)? & event::FLAGS_MASK;
        if flags == event::FLAGS_DISABLE {
            return Ok(false);
        }
        let Some(published) = published else {
            return Ok(true);
        };
        if published == 0 {
            return Ok(false);
        }
        if flags != event::FLAGS_DESC || !self.event_idx {
            return Ok(true);
        }
        let off_wrap = area
            .load_u16(event::OFF_WRAP, ordering::FIELD)
            .map_err(&err)?;
        let new = self.published_used;
        let published = u16::try_from(published).unwrap_or(u16::MAX);
        Ok(need_event(
            off_wrap, new.off, new.wrap, published, self.size,
        ))
    }

    /// Asks the driver not to send available-buffer notifications while the device polls
    /// (virtio 1.2 §2.8.10): the device structure's flags become RING_EVENT_FLAGS_DISABLE. Only
    /// a hint: the driver may kick anyway.
    pub fn disable_kicks(&mut self) -> Result<(), DeviceQueueError> {
        self.check_broken()?;
        self.device_event
            .slice()
            .store_u16(event::FLAGS, event::FLAGS_DISABLE, ordering::FIELD)
            .map_err(mem_err(RingArea::DeviceArea))
    }

    /// Asks the driver to kick again for new buffers (virtio 1.2 §2.8.10): without EVENT_IDX
    /// the flags become RING_EVENT_FLAGS_ENABLE; with it, `off_wrap` names the next descriptor
    /// the device reads (offset and the driver's wrap counter there) and the flags become
    /// RING_EVENT_FLAGS_DESC. Then, after a full fence, re-reads that descriptor's flags: true
    /// means a buffer is already available (made available before the driver could see the
    /// request), so poll again instead of waiting for a kick.
    pub fn enable_kicks(&mut self) -> Result<bool, DeviceQueueError> {
        self.check_broken()?;
        let area = self.device_event.slice();
        let err = mem_err(RingArea::DeviceArea);
        if self.event_idx {
            area.store_u16(event::OFF_WRAP, self.next_avail.encode(), ordering::FIELD)
                .map_err(&err)?;
            area.store_u16(event::FLAGS, event::FLAGS_DESC, ordering::FIELD)
                .map_err(&err)?;
        } else {
            area.store_u16(event::FLAGS, event::FLAGS_ENABLE, ordering::FIELD)
                .map_err(&err)?;
        }
        // Order the stores above before the descriptor flags load (store-load): see
        // ordering.rs.
        ordering::notify_fence();
        Ok(self.head_flags(self.next_avail)?.is_some())
    }

    /// Checks an available-buffer notification's data (VIRTIO_F_NOTIFICATION_DATA, virtio 1.2
    /// §2.9): it must name `vqn` (this queue's index, or its notification config data) and an
    /// offset inside the ring. Returns how many descriptors it announces beyond the device's
    /// next position (`next_off`/`next_wrap` against the device's offset and wrap counter: a
    /// position up to `size` ahead; one behind is a notification overtaken by the device and
    /// announces 0).
    ///
    /// Only a hint: [`Self::pop`] still reads each descriptor's flags (the CONSUME load that
    /// makes it visible) and validates everything.
    pub fn apply_notification(
        &mut self,
        vqn: u16,
        data: NotificationData,
    ) -> Result<u16, DeviceQueueError> {
        self.check_broken()?;
        if data.vqn != vqn {
            return Err(DeviceQueueError::NotificationForOtherQueue {
                vqn: data.vqn,
                expected: vqn,
            });
        }
        if data.next_off >= self.size {
            return Err(self.violation(Violation::NotificationOutOfRange {
                next: data.next_off,
                device_next: self.next_avail.off,
                size: self.size,
            }));
        }
        let driver = RingPos {
            off: data.next_off,
            wrap: data.next_wrap,
        };
        let ahead = driver.distance_from(self.next_avail, self.size);
        Ok(if ahead <= u32::from(self.size) {
            ahead as u16
        } else {
            0
        })
    }
}
