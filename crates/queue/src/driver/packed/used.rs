//! Packed virtqueue, driver side: getting used buffers back and validating them (virtio 1.2
//! §2.8.22 "Receiving Used Buffers From The Device", §2.8.6, §2.8.8), used-buffer notification
//! suppression (§2.8.10), and teardown.

use vireo_spec::packed::{desc, event};

use super::{PackedDriverQueue, Position};
use crate::driver::error::{DeviceViolation, DriverQueueError};
use crate::driver::in_order::Written;
use crate::driver::{UsedBuffer, UsedNotifications};
use crate::ordering::{self, CONSUME, FIELD};

impl<T> PackedDriverQueue<T> {
    /// The next used buffer, `Ok(None)` if the device has not used another one yet (virtio 1.2
    /// §2.8.22). The descriptor at the next used position is used when its AVAIL and USED bits
    /// both equal the driver's used wrap counter (§2.8.1; its flags are read with
    /// ordering::CONSUME before its id and length). It is validated: its id is below the queue
    /// size and names a buffer published and not yet returned, its length is at most that
    /// buffer's device-writable bytes. The next used position moves on by that buffer's
    /// descriptor count, as the driver recorded it (§2.8.6), wrapping the counter at the end of
    /// the ring. A violation latches the queue broken.
    ///
    /// With IN_ORDER (§2.8.8) a used descriptor naming a buffer after the oldest in flight
    /// stands for every buffer up to that one (the device skipped their descriptors): they come
    /// back one call at a time, oldest first, those before it as used completely (their whole writable length).
    ///
    /// With EVENT_IDX and notifications enabled, the driver event suppression structure
    /// follows the next used position, so the device notifies when it uses more; before
    /// answering `Ok(None)` a full fence orders that store before a last look.
    pub fn pop_used(&mut self) -> Result<Option<UsedBuffer<T>>, DriverQueueError> {
        self.mem.check_usable()?;
        if let Some((id, written)) = self.order.next_in_batch(self.returned_seq) {
            return self.give_back(id, written).map(Some);
        }
        if !self.used_ready()? {
            if self.driver_event_fenced {
                return Ok(None);
            }
            ordering::notify_fence();
            self.driver_event_fenced = true;
            if !self.used_ready()? {
                return Ok(None);
            }
        }
        // `len` and `id` in one 8-byte load of the descriptor's second half (little-endian
        // `len`, `id`, `flags`, virtio 1.2 §2.8.13), after the CONSUME load of its flags.
        const _: () = assert!(desc::ID == desc::LEN + 4 && desc::FLAGS == desc::LEN + 6);
        let rest = self
            .mem
            .load_u64(self.desc_offset(self.next_used.offset) + desc::LEN, FIELD)?;
        let written = rest as u32;
        let id = (rest >> 32) as u16;
        if id >= self.size {
            let v = DeviceViolation::UsedIdOutOfRange {
                id: id.into(),
                size: self.size,
            };
            return Err(self.mem.fail(v));
        }
        let (seq, writable) = match self.shadow.get(id) {
            Some(b) if self.is_published(b.seq) => (b.seq, b.writable),
            _ => {
                let v = DeviceViolation::UsedIdNotInFlight { id: id.into() };
                return Err(self.mem.fail(v));
            }
        };
        if u64::from(written) > writable {
            let v = DeviceViolation::UsedLengthTooLarge { written, writable };
            return Err(self.mem.fail(v));
        }
        if self.in_order {
            self.order.begin_batch(self.returned_seq, seq, written);
            if let Some((oldest, written)) = self.order.next_in_batch(self.returned_seq) {
                return self.give_back(oldest, written).map(Some);
            }
        }
        self.give_back(id, Written::Reported(written)).map(Some)
    }

    /// True if the descriptor at the next used position is marked used for the used wrap
    /// counter (ordering::CONSUME: what follows reads the fields it publishes).
    fn used_ready(&mut self) -> Result<bool, DriverQueueError> {
        let at = self.flags_offset(self.next_used.offset);
        let flags = self.mem.load_u16(at, CONSUME)?;
        Ok(self.next_used.wrap.is_used(flags))
    }

    /// Returns the (validated) buffer `id`, moving the next used position past its descriptors.
    fn give_back(&mut self, id: u16, written: Written) -> Result<UsedBuffer<T>, DriverQueueError> {
        let Some(buffer) = self.shadow.release(id) else {
            let v = DeviceViolation::UsedIdNotInFlight { id: id.into() };
            return Err(self.mem.fail(v));
        };
        self.next_used = self.next_used.advanced(buffer.descs, self.size);
        self.free_descs = self.free_descs.saturating_add(buffer.descs);
        self.returned_seq = self.returned_seq.wrapping_add(1);
        if self.event_idx && self.notifications == UsedNotifications::Enabled {
            self.write_driver_event(event::FLAGS_DESC, self.next_used)?;
        }
        Ok(UsedBuffer {
            written: written.bytes(buffer.writable),
            token: buffer.token,
        })
    }

    /// Asks the device not to notify about used buffers (virtio 1.2 §2.8.10, flags DISABLE; a
    /// hint the device may ignore). Works on a broken queue too.
    pub fn disable_used_notifications(&mut self) -> Result<(), DriverQueueError> {
        self.notifications = UsedNotifications::Disabled;
        self.write_driver_event(event::FLAGS_DISABLE, self.next_used)
    }

    /// Asks the device to notify about used buffers again (virtio 1.2 §2.8.10): flags ENABLE,
    /// or with EVENT_IDX flags DESC with the next used position and wrap counter; then a full
    /// fence and a fresh look at that position. `Ok(true)`: used buffers are already waiting and
    /// no notification will come for them, so poll again.
    pub fn enable_used_notifications(&mut self) -> Result<bool, DriverQueueError> {
        self.mem.check_usable()?;
        self.notifications = UsedNotifications::Enabled;
        let flags = if self.event_idx {
            event::FLAGS_DESC
        } else {
            event::FLAGS_ENABLE
        };
        self.write_driver_event(flags, self.next_used)?;
        ordering::notify_fence();
        self.driver_event_fenced = true;
        if self.order.has_batch() {
            return Ok(true);
        }
        self.used_ready()
    }

    /// After a device reset (virtio 1.2 §2.4) or a queue reset (§2.6.1): the token of one
    /// buffer not yet returned by [`Self::pop_used`] (used or not); `None` when there are no
    /// more. Works on a broken queue. From the first call on, the queue refuses new work until
    /// [`Self::reset`].
    pub fn detach_unused(&mut self) -> Option<T> {
        let id = self.shadow.first_in_flight()?;
        self.mem.set_detached();
        let buffer = self.shadow.release(id)?;
        self.free_descs = self.free_descs.saturating_add(buffer.descs);
        Some(buffer.token)
    }

    /// Zeroes the ring and starts over (wrap counters 1, every descriptor and id free,
    /// notifications enabled), clearing a broken state: for a queue whose device, or the queue
    /// alone (§2.6.1), was reset. Refused while buffers are in flight
    /// ([`Self::detach_unused`] them first).
    pub fn reset(&mut self) -> Result<(), DriverQueueError> {
        let count = self.shadow.len_in_flight();
        if count != 0 {
            return Err(DriverQueueError::BuffersInFlight { count });
        }
        self.shadow.reset();
        self.order.reset();
        self.free_descs = self.size;
        self.next_avail = Position::START;
        self.add_seq = 0;
        self.published_seq = 0;
        self.pending_head = None;
        self.pending_descs = 0;
        self.published = Position::START;
        self.published_since_decision = 0;
        self.next_used = Position::START;
        self.returned_seq = 0;
        self.driver_event = 0;
        self.driver_event_fenced = true;
        self.notifications = UsedNotifications::Enabled;
        self.start()
    }
}
