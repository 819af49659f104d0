//! The virtio-blk driver (virtio 1.2 §5.2 "Block Device", the driver's side): what a guest
//! kernel's `virtio_blk` does, over Vireo's driver-side virtqueues.
//!
//! Transport-agnostic and `no_std` (with `alloc`): the caller brings the negotiated features
//! and configuration ([`negotiate`], [`BlkDeviceInfo`]), one [`DriverQueue<u16>`] per request
//! queue and the memory for the request slots ([`SlotArea`]); the driver builds requests into
//! preallocated slots (the token of each buffer is its slot), decides about kicks, and
//! validates what the device returns.
//!
//! # Use
//! ```text
//! queue.submit_read(slot, sector, &bufs)?;      // as many as there are free slots
//! queue.submit_write(slot2, sector2, &bufs2)?;
//! queue.kick(&mut notifier)?;                   // one publish and at most one kick per batch
//! queue.poll_completions(|c| ...)?;             // or wait for the call eventfd first
//! ```
//!
//! # Hot path
//! Submitting and completing allocate nothing, take no lock and make no syscall: headers and
//! status bytes live in the slot memory, scatter lists are assembled in a scratch list sized
//! when the queue is made. Kicks are batched by [`BlkQueue::kick`] (and event suppression).
//!
//! # The device is not trusted
//! Besides the virtqueue's own checks (ids, lengths, indices), every completion is checked
//! against the request it answers: the status byte must be OK, IOERR or UNSUPP (the driver
//! writes an invalid marker before submitting, so a status never written is caught), the used
//! length may not be zero, and a successful request must report all its device-writable bytes.
//! A violation is returned as [`BlkDriverError::Device`] and latches the queue broken.

extern crate alloc;

mod error;
mod features;
mod queue;
mod slots;
mod submit;

use alloc::vec::Vec;
use core::borrow::BorrowMut;

pub use error::{BlkDriverError, DeviceFault};
pub use features::{
    negotiate, wanted_features, Access, BlkDeviceInfo, NegotiateError, NegotiationOptions,
    DRIVER_BLK_FEATURES, DRIVER_RING_FEATURES,
};
pub use queue::BlkQueue;
pub use slots::{SlotArea, SlotOptions};
pub use vireo_queue::driver::BufferSegment;
use vireo_queue::driver::DriverQueue;
use vireo_spec::blk::{BlkStatus, ID_BYTES};

/// What a request asks the device to do (virtio 1.2 §5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// VIRTIO_BLK_T_IN.
    Read,
    /// VIRTIO_BLK_T_OUT.
    Write,
    /// VIRTIO_BLK_T_FLUSH.
    Flush,
    /// VIRTIO_BLK_T_GET_ID.
    GetId,
    /// VIRTIO_BLK_T_DISCARD.
    Discard,
    /// VIRTIO_BLK_T_WRITE_ZEROES.
    WriteZeroes,
}

/// One range of a discard or write-zeroes request (`struct virtio_blk_discard_write_zeroes`
/// without its flags, virtio 1.2 §5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlkRange {
    /// First sector.
    pub sector: u64,
    /// Number of sectors (not zero).
    pub num_sectors: u32,
}

/// Whether a write-zeroes request lets the device deallocate the range (the `unmap` flag,
/// virtio 1.2 §5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmap {
    /// The zeroes are written (the flag is clear).
    Keep,
    /// The device may deallocate the range instead (the flag is set).
    Allow,
}

/// The 20-byte device id string of a GET_ID answer (virtio 1.2 §5.2.6: NUL-padded ASCII, not
/// terminated when it is 20 bytes long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkDeviceId(pub [u8; ID_BYTES]);

impl BlkDeviceId {
    /// The id up to its first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(ID_BYTES);
        self.0.get(..end).unwrap_or(&[])
    }
}

/// A request the device returned, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The queue it was submitted on.
    pub queue: u16,
    /// The slot it was submitted in (now free again).
    pub slot: u16,
    /// What it was.
    pub request: RequestKind,
    /// The device's answer: [`BlkStatus::Ok`], or the request failed ([`BlkStatus::IoErr`])
    /// or is not supported ([`BlkStatus::Unsupp`]).
    pub status: BlkStatus,
    /// The used length the device reported (device-writable bytes, status byte included).
    pub written: u32,
    /// The id, for a successful GET_ID request.
    pub device_id: Option<BlkDeviceId>,
}

/// How the driver tells the device about new requests (a kick: an eventfd write for
/// vhost-user, a doorbell write for PCI, a condition variable in tests).
pub trait Notify {
    /// Notifies the device that queue `queue` has new buffers (virtio 1.2 §2.9).
    fn notify(&mut self, queue: u16) -> Result<(), BlkDriverError>;
}

/// A notifier that does nothing: the device polls.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotify;

impl Notify for NoNotify {
    fn notify(&mut self, _queue: u16) -> Result<(), BlkDriverError> {
        Ok(())
    }
}

/// A virtio-blk driver: the device's limits and one [`BlkQueue`] per request queue (each
/// holding its virtqueue as `Q`, see [`BlkQueue`]).
#[derive(Debug)]
pub struct BlkDriver<Q = DriverQueue<u16>> {
    info: BlkDeviceInfo,
    queues: Vec<BlkQueue<Q>>,
}

impl<Q: BorrowMut<DriverQueue<u16>>> BlkDriver<Q> {
    /// A driver over `queues` (request queue 0 first, each with its slot memory), for a device
    /// described by `info`. More queues than the device has (`num_queues`, virtio 1.2 §5.2.4)
    /// are refused.
    pub fn new(
        info: BlkDeviceInfo,
        queues: Vec<(Q, SlotArea)>,
        options: &SlotOptions,
    ) -> Result<Self, BlkDriverError> {
        if queues.is_empty() || queues.len() > usize::from(info.num_queues) {
            return Err(BlkDriverError::InvalidOptions {
                reason: "the number of queues must be between 1 and the device's num_queues",
            });
        }
        let mut made = Vec::with_capacity(queues.len());
        for (index, (queue, area)) in queues.into_iter().enumerate() {
            let index = u16::try_from(index).map_err(|_| BlkDriverError::InvalidOptions {
                reason: "too many queues",
            })?;
            made.push(BlkQueue::new(index, queue, area, info, options)?);
        }
        Ok(BlkDriver { info, queues: made })
    }

    /// What the driver knows of the device.
    pub fn info(&self) -> &BlkDeviceInfo {
        &self.info
    }

    /// Number of request queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Request queue `queue`.
    pub fn queue(&mut self, queue: usize) -> Result<&mut BlkQueue<Q>, BlkDriverError> {
        let queues = self.queues.len();
        self.queues
            .get_mut(queue)
            .ok_or(BlkDriverError::NoSuchQueue { queue, queues })
    }

    /// All request queues (to drive them from one thread).
    pub fn queues_mut(&mut self) -> &mut [BlkQueue<Q>] {
        &mut self.queues
    }

    /// The request queues, to move each to its own thread.
    pub fn into_queues(self) -> Vec<BlkQueue<Q>> {
        self.queues
    }

    /// Hands every request returned on `queue` to `on_completion`; returns how many.
    pub fn poll_completions(
        &mut self,
        queue: usize,
        on_completion: impl FnMut(Completion),
    ) -> Result<usize, BlkDriverError> {
        self.queue(queue)?.poll_completions(on_completion)
    }

    /// A new capacity (after a configuration change notification, virtio 1.2 §5.2.6.1).
    pub fn set_capacity(&mut self, capacity: u64) {
        self.info.capacity = capacity;
        for q in &mut self.queues {
            q.set_capacity(capacity);
        }
    }
}
