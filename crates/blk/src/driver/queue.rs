//! One request queue: its slots, kicks, and the validation of what the device returns
//! (virtio 1.2 §5.2.6). Building requests is in `submit`.

use core::borrow::BorrowMut;

use super::alloc::vec::Vec;

use vireo_queue::driver::{BufferSegment, DriverQueue};
use vireo_spec::blk::{BlkStatus, ID_BYTES};

use super::slots::{Slots, PAYLOAD_OFFSET};
use super::{
    BlkDeviceId, BlkDeviceInfo, BlkDriverError, Completion, DeviceFault, Notify, RequestKind,
    SlotArea, SlotOptions,
};

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    InFlight {
        request: RequestKind,
        /// The request's device-writable bytes (data the device fills, then the status byte).
        writable: u32,
    },
}

/// One virtio-blk request queue on the driver side: a [`DriverQueue`] whose tokens are request
/// slots, and the slots' memory.
///
/// `Q` is how the virtqueue is held: owned (the default) or borrowed (`&mut DriverQueue<u16>`,
/// for a queue that a transport object owns, such as a vhost-user front-end's queue).
#[derive(Debug)]
pub struct BlkQueue<Q = DriverQueue<u16>> {
    pub(super) index: u16,
    pub(super) queue: Q,
    pub(super) slots: Slots,
    pub(super) state: Vec<SlotState>,
    /// Scatter list assembled per request (capacity fixed when the queue is made).
    pub(super) scratch: Vec<BufferSegment>,
    pub(super) info: BlkDeviceInfo,
    pub(super) max_data_segments: usize,
    pub(super) max_ranges: usize,
    pub(super) in_flight: u16,
    pub(super) broken: Option<DeviceFault>,
}

impl<Q: BorrowMut<DriverQueue<u16>>> BlkQueue<Q> {
    /// Request queue number `index` over `queue`, with its slots in `area`.
    pub fn new(
        index: u16,
        queue: Q,
        area: SlotArea,
        info: BlkDeviceInfo,
        options: &SlotOptions,
    ) -> Result<Self, BlkDriverError> {
        if options.slots == 0 || options.slots > queue.borrow().size() {
            return Err(BlkDriverError::InvalidOptions {
                reason: "slots must be between 1 and the queue size",
            });
        }
        if options.max_ranges == 0 || options.max_data_segments == 0 {
            return Err(BlkDriverError::InvalidOptions {
                reason: "max_ranges and max_data_segments must be at least 1",
            });
        }
        let slots = Slots::new(area, options)?;
        let seg_max = info
            .seg_max
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let max_data_segments = usize::from(options.max_data_segments).min(seg_max);
        Ok(BlkQueue {
            index,
            queue,
            slots,
            state: alloc_slots(options.slots),
            scratch: Vec::with_capacity(max_data_segments + 1),
            info,
            max_data_segments,
            max_ranges: usize::from(options.max_ranges),
            in_flight: 0,
            broken: None,
        })
    }

    /// The queue's number (0 is the first request queue).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The virtqueue underneath (for its addresses and configuration).
    pub fn virtqueue(&self) -> &DriverQueue<u16> {
        self.queue.borrow()
    }

    pub(super) fn vq(&mut self) -> &mut DriverQueue<u16> {
        self.queue.borrow_mut()
    }

    /// What the driver knows of the device.
    pub fn info(&self) -> &BlkDeviceInfo {
        &self.info
    }

    /// Number of slots.
    pub fn slots(&self) -> u16 {
        self.slots.count()
    }

    /// Requests submitted and not yet completed.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// True if `slot` exists and holds no request.
    pub fn is_slot_free(&self, slot: u16) -> bool {
        matches!(self.state.get(usize::from(slot)), Some(SlotState::Free))
    }

    /// Most data segments one read or write may carry here.
    pub fn max_data_segments(&self) -> usize {
        self.max_data_segments
    }

    /// True once the device broke a rule (of virtio-blk or of the ring).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some() || self.virtqueue().is_broken()
    }

    /// A new capacity, in sectors.
    pub fn set_capacity(&mut self, capacity: u64) {
        self.info.capacity = capacity;
    }

    pub(super) fn check_usable(&self) -> Result<(), BlkDriverError> {
        match self.broken {
            Some(fault) => Err(BlkDriverError::Broken(fault)),
            None => Ok(()),
        }
    }

    /// After the device was reset (virtio 1.2 §2.1.2: the way out of a broken queue): drops
    /// every request still in flight (their slots become free; the device will not complete
    /// them), resets the virtqueue and clears the fault. Returns how many requests were dropped.
    pub fn reset(&mut self) -> Result<u16, BlkDriverError> {
        let mut dropped: u16 = 0;
        while let Some(slot) = self.vq().detach_unused() {
            if let Some(s) = self.state.get_mut(usize::from(slot)) {
                *s = SlotState::Free;
            }
            dropped = dropped.saturating_add(1);
        }
        self.vq().reset()?;
        for s in &mut self.state {
            *s = SlotState::Free;
        }
        self.in_flight = 0;
        self.broken = None;
        Ok(dropped)
    }

    /// Publishes the requests submitted so far and answers whether the device wants a
    /// notification (virtio 1.2 §2.7.13, §2.7.10).
    pub fn kick_prepare(&mut self) -> Result<bool, BlkDriverError> {
        self.check_usable()?;
        Ok(self.vq().kick_prepare()?)
    }

    /// Publishes the requests submitted so far and notifies the device through `notify` if it
    /// wants a notification; returns whether it did.
    pub fn kick(&mut self, notify: &mut impl Notify) -> Result<bool, BlkDriverError> {
        let needed = self.kick_prepare()?;
        if needed {
            notify.notify(self.index)?;
        }
        Ok(needed)
    }

    /// Asks the device not to notify about completions (the caller polls).
    pub fn disable_notifications(&mut self) -> Result<(), BlkDriverError> {
        self.check_usable()?;
        Ok(self.vq().disable_used_notifications()?)
    }

    /// Asks the device to notify about completions again; `true` means completions are
    /// already waiting (poll again instead of waiting for a notification).
    pub fn enable_notifications(&mut self) -> Result<bool, BlkDriverError> {
        self.check_usable()?;
        Ok(self.vq().enable_used_notifications()?)
    }

    /// Hands every request the device has returned to `on_completion`, validated; returns how
    /// many. Stops at the first device fault (the queue is then broken).
    pub fn poll_completions(
        &mut self,
        mut on_completion: impl FnMut(Completion),
    ) -> Result<usize, BlkDriverError> {
        self.check_usable()?;
        let mut n = 0;
        while let Some(used) = self.vq().pop_used()? {
            let completion = self.complete(used.token, used.written)?;
            n += 1;
            on_completion(completion);
        }
        Ok(n)
    }

    /// Frees the slot of a returned request and checks the device's answer.
    fn complete(&mut self, slot: u16, written: u32) -> Result<Completion, BlkDriverError> {
        let (request, writable) = match self.state.get(usize::from(slot)).copied() {
            Some(SlotState::InFlight { request, writable }) => (request, writable),
            _ => return Err(self.fault(DeviceFault::SlotNotInFlight { slot })),
        };
        if let Some(s) = self.state.get_mut(usize::from(slot)) {
            *s = SlotState::Free;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        if written == 0 {
            return Err(self.fault(DeviceFault::StatusNotWritten { slot, request }));
        }
        let value = self.slots.status(slot)?;
        let Some(status) = BlkStatus::from_u8(value) else {
            return Err(self.fault(DeviceFault::InvalidStatus {
                slot,
                request,
                value,
            }));
        };
        // A failed request may report less (the legacy note of virtio 1.2 §5.2.6.3 shows
        // devices disagree); a successful one must cover its data and status (§2.7.8.2).
        if status == BlkStatus::Ok && written != writable {
            return Err(self.fault(DeviceFault::ShortTransfer {
                slot,
                request,
                written,
                expected: writable,
            }));
        }
        let device_id = if request == RequestKind::GetId && status == BlkStatus::Ok {
            let mut id = [0u8; ID_BYTES];
            self.slots.slice(slot)?.read(PAYLOAD_OFFSET, &mut id)?;
            Some(BlkDeviceId(id))
        } else {
            None
        };
        Ok(Completion {
            queue: self.index,
            slot,
            request,
            status,
            written,
            device_id,
        })
    }

    fn fault(&mut self, fault: DeviceFault) -> BlkDriverError {
        self.broken = Some(fault);
        BlkDriverError::Device(fault)
    }
}

fn alloc_slots(n: u16) -> Vec<SlotState> {
    super::alloc::vec![SlotState::Free; usize::from(n)]
}
