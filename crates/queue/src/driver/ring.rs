//! The ring memory of a driver-side queue, with the queue's health: every access that fails,
//! and every rule the device breaks, latches the queue broken (both ring formats).

use core::sync::atomic::Ordering;

use vireo_memory::{SharedArea, SharedSlice};

use super::error::{DeviceViolation, DriverQueueError};

/// The queue's memory and whether the queue may still be used.
#[derive(Debug)]
pub(super) struct RingMemory {
    area: SharedArea,
    /// Buffers were detached: the queue must be reset before reuse.
    detached: bool,
    /// The device violation that broke the queue.
    broken: Option<DeviceViolation>,
}

impl RingMemory {
    /// A healthy queue in `area`.
    pub fn new(area: SharedArea) -> Self {
        RingMemory {
            area,
            detached: false,
            broken: None,
        }
    }

    /// The whole area.
    pub fn slice(&self) -> SharedSlice<'_> {
        self.area.slice()
    }

    /// `Err` if the queue is broken or needs a reset.
    pub fn check_usable(&self) -> Result<(), DriverQueueError> {
        match self.broken {
            Some(v) => Err(DriverQueueError::Broken(v)),
            None if self.detached => Err(DriverQueueError::NeedsReset),
            None => Ok(()),
        }
    }

    /// True once the device broke a ring rule.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Records that buffers were detached (the queue needs a reset).
    pub fn set_detached(&mut self) {
        self.detached = true;
    }

    /// Latches the queue broken by `violation`; returns the error to report now.
    pub fn fail(&mut self, violation: DeviceViolation) -> DriverQueueError {
        self.broken = Some(violation);
        DriverQueueError::Device(violation)
    }

    /// Zeroes the first `len` bytes and makes the queue healthy again.
    pub fn reset(&mut self, len: usize) -> Result<(), DriverQueueError> {
        let filled = self.area.slice().fill(0, len, 0);
        filled.map_err(|e| DriverQueueError::Device(DeviceViolation::Memory(e)))?;
        self.detached = false;
        self.broken = None;
        Ok(())
    }

    pub fn load_u16(&mut self, offset: usize, order: Ordering) -> Result<u16, DriverQueueError> {
        let r = self.slice().load_u16(offset, order);
        r.map_err(|e| self.fail(DeviceViolation::Memory(e)))
    }

    pub fn load_u32(&mut self, offset: usize, order: Ordering) -> Result<u32, DriverQueueError> {
        let r = self.slice().load_u32(offset, order);
        r.map_err(|e| self.fail(DeviceViolation::Memory(e)))
    }

    pub fn load_u64(&mut self, offset: usize, order: Ordering) -> Result<u64, DriverQueueError> {
        let r = self.slice().load_u64(offset, order);
        r.map_err(|e| self.fail(DeviceViolation::Memory(e)))
    }

    pub fn store_u16(
        &mut self,
        offset: usize,
        value: u16,
        order: Ordering,
    ) -> Result<(), DriverQueueError> {
        let r = self.slice().store_u16(offset, value, order);
        r.map_err(|e| self.fail(DeviceViolation::Memory(e)))
    }

    pub fn store_u32(
        &mut self,
        offset: usize,
        value: u32,
        order: Ordering,
    ) -> Result<(), DriverQueueError> {
        let r = self.slice().store_u32(offset, value, order);
        r.map_err(|e| self.fail(DeviceViolation::Memory(e)))
    }
}
