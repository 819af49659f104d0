//! Split virtqueue, driver side: getting used buffers back and validating them (virtio 1.2
//! §2.7.14, §2.7.8), used-buffer notification suppression (§2.7.7), and teardown.

use vireo_spec::split::{avail, used as used_ring};

use super::SplitDriverQueue;
use crate::driver::error::{DeviceViolation, DriverQueueError};
use crate::driver::in_order::{self, Written};
use crate::driver::UsedBuffer;
use crate::driver::UsedNotifications;
use crate::ordering::{self, CONSUME, FIELD};

impl<T> SplitDriverQueue<T> {
    /// The next used buffer, `Ok(None)` if the device has not used another one yet (virtio 1.2
    /// §2.7.14). `used.idx` is read (ordering::CONSUME) only when every element seen before has
    /// been consumed, so a batch costs one read of it. Each element is validated: its id is a
    /// descriptor index (< size) that heads a buffer made available and not yet returned, its
    /// length is at most the buffer's device-writable bytes, and `used.idx` never runs further
    /// ahead than the buffers in flight. A violation latches the queue broken.
    ///
    /// With IN_ORDER (§2.7.9) an element naming a buffer after the oldest in flight stands for
    /// every buffer up to that one (the used index moved by as many): they come back one call at
    /// a time, oldest first, those before it as used completely (their whole writable length).
    ///
    /// With EVENT_IDX and notifications enabled, `used_event` follows the next element to read
    /// (§2.7.7), so the device notifies when it uses more; before `used.idx` is read again a full
    /// fence orders that store before the read (once per batch, not per buffer). To wait for a
    /// notification safely, call this until `Ok(None)` (or [`Self::enable_used_notifications`]
    /// until it answers `false`) first.
    pub fn pop_used(&mut self) -> Result<Option<UsedBuffer<T>>, DriverQueueError> {
        self.mem.check_usable()?;
        if let Some((head, written)) = self.order.next_in_batch(self.last_used) {
            return self.give_back(head, written).map(Some);
        }
        if self.last_used == self.used_seen {
            self.refresh_used()?;
            if self.last_used == self.used_seen {
                return Ok(None);
            }
        }
        // The size is a power of two (checked in `new`).
        let slot = usize::from(self.last_used & (self.size - 1));
        let elem = self.layout.device_area + used_ring::RING + used_ring::ELEM_SIZE * slot;
        let id = self.mem.load_u32(elem, FIELD)?;
        let written = self.mem.load_u32(elem + 4, FIELD)?;
        let head = match u16::try_from(id) {
            Ok(head) if head < self.size => head,
            _ => {
                return Err(self.mem.fail(DeviceViolation::UsedIdOutOfRange {
                    id,
                    size: self.size,
                }))
            }
        };
        let (seq, writable) = match self.shadow.get(head) {
            Some(b) if self.is_published(b.seq) => (b.seq, b.writable),
            _ => return Err(self.mem.fail(DeviceViolation::UsedIdNotInFlight { id })),
        };
        if u64::from(written) > writable {
            let v = DeviceViolation::UsedLengthTooLarge { written, writable };
            return Err(self.mem.fail(v));
        }
        if self.in_order {
            // virtio 1.2 §2.7.9: the element may stand for every buffer from the oldest in
            // flight to this one; used.idx moved by the size of that batch.
            let batch = in_order::batch_len(self.last_used, seq);
            let used = self.used_seen.wrapping_sub(self.last_used);
            if batch > u32::from(used) {
                let v = DeviceViolation::InOrderBatchPastUsedIndex { id, batch, used };
                return Err(self.mem.fail(v));
            }
            self.order.begin_batch(self.last_used, seq, written);
            if let Some((oldest, written)) = self.order.next_in_batch(self.last_used) {
                return self.give_back(oldest, written).map(Some);
            }
        }
        self.give_back(head, Written::Reported(written)).map(Some)
    }

    /// Returns the (validated) buffer whose chain starts at `head`, consuming one used element.
    fn give_back(
        &mut self,
        head: u16,
        written: Written,
    ) -> Result<UsedBuffer<T>, DriverQueueError> {
        let Some(buffer) = self.shadow.release(head) else {
            let id = u32::from(head);
            return Err(self.mem.fail(DeviceViolation::UsedIdNotInFlight { id }));
        };
        self.last_used = self.last_used.wrapping_add(1);
        if self.event_idx && self.notifications == UsedNotifications::Enabled {
            self.write_used_event(self.last_used)?;
        }
        Ok(UsedBuffer {
            written: written.bytes(buffer.writable),
            token: buffer.token,
        })
    }

    /// Reads `used.idx` (after moving `used_event` and a full fence, when the device is to
    /// notify at the next element) and checks it is not further ahead than the buffers in
    /// flight.
    fn refresh_used(&mut self) -> Result<(), DriverQueueError> {
        if self.event_idx && self.notifications == UsedNotifications::Enabled {
            if self.used_event != self.last_used {
                self.write_used_event(self.last_used)?;
            }
            if !self.used_event_fenced {
                ordering::notify_fence();
                self.used_event_fenced = true;
            }
        }
        let used_idx = self
            .mem
            .load_u16(self.layout.device_area + used_ring::IDX, CONSUME)?;
        let ahead = used_idx.wrapping_sub(self.last_used);
        let available = self.shadow.len_in_flight();
        if ahead > available {
            let last_used = self.last_used;
            let v = DeviceViolation::UsedIndexTooFarAhead {
                used_idx,
                last_used,
                available,
            };
            return Err(self.mem.fail(v));
        }
        self.used_seen = used_idx;
        Ok(())
    }

    fn write_used_event(&mut self, value: u16) -> Result<(), DriverQueueError> {
        self.mem.store_u16(self.used_event_offset(), value, FIELD)?;
        self.used_event = value;
        self.used_event_fenced = false;
        Ok(())
    }

    /// Asks the device not to notify about used buffers (virtio 1.2 §2.7.7; a hint the device
    /// may ignore). Without EVENT_IDX: sets VIRTQ_AVAIL_F_NO_INTERRUPT. With it (the flags must
    /// then stay 0, §2.7.7.1): moves `used_event` just behind the elements already seen, which
    /// the device will not cross for another 2^16 elements. Works on a broken queue too.
    pub fn disable_used_notifications(&mut self) -> Result<(), DriverQueueError> {
        self.notifications = UsedNotifications::Disabled;
        if self.event_idx {
            self.write_used_event(self.last_used.wrapping_sub(1))
        } else if self.avail_flags != avail::F_NO_INTERRUPT {
            let flags = self.layout.driver_area + avail::FLAGS;
            self.mem.store_u16(flags, avail::F_NO_INTERRUPT, FIELD)?;
            self.avail_flags = avail::F_NO_INTERRUPT;
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Asks the device to notify about used buffers again (virtio 1.2 §2.7.7; Linux's
    /// `virtqueue_enable_cb_prepare` then `virtqueue_poll`): clears the flag, or with EVENT_IDX
    /// sets `used_event` to the next element; then a full fence and a fresh read of `used.idx`.
    /// `Ok(true)`: used buffers are already waiting and no notification will come for them, so
    /// poll again.
    pub fn enable_used_notifications(&mut self) -> Result<bool, DriverQueueError> {
        self.mem.check_usable()?;
        self.notifications = UsedNotifications::Enabled;
        if !self.event_idx {
            if self.avail_flags != 0 {
                self.mem
                    .store_u16(self.layout.driver_area + avail::FLAGS, 0, FIELD)?;
                self.avail_flags = 0;
            }
            ordering::notify_fence();
        }
        // With EVENT_IDX, refresh_used moves used_event and fences.
        self.refresh_used()?;
        Ok(self.used_seen != self.last_used)
    }

    /// After a device reset (virtio 1.2 §2.4): the token of one buffer not yet returned by
    /// [`Self::pop_used`] (used or not), freeing its descriptors; `None` when there are no more.
    /// Works on a broken queue. From the first call on, the queue refuses new work until
    /// [`Self::reset`].
    pub fn detach_unused(&mut self) -> Option<T> {
        let head = self.shadow.first_in_flight()?;
        self.mem.set_detached();
        self.shadow.release(head).map(|b| b.token)
    }

    /// Zeroes the ring and starts over with every descriptor free and notifications enabled,
    /// clearing a broken state: for a queue whose device was reset (virtio 1.2 §2.4). Refused
    /// while buffers are in flight ([`Self::detach_unused`] them first).
    pub fn reset(&mut self) -> Result<(), DriverQueueError> {
        let count = self.shadow.len_in_flight();
        if count != 0 {
            return Err(DriverQueueError::BuffersInFlight { count });
        }
        self.mem.reset(self.layout.total)?;
        self.shadow.reset();
        self.order.reset();
        self.avail_next = 0;
        self.avail_published = 0;
        self.avail_decided = 0;
        self.published_since_decision = 0;
        self.avail_flags = 0;
        self.last_used = 0;
        self.used_seen = 0;
        self.used_event = 0;
        self.used_event_fenced = true;
        self.notifications = UsedNotifications::Enabled;
        Ok(())
    }
}
