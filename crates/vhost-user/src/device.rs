//! What the back-end drives: a device (features, config space, queues) and its per-queue
//! handlers.

use core::fmt;
use std::os::fd::BorrowedFd;

use vireo_memory::GuestMemoryMap;
use vireo_queue::device::{DeviceQueue, DeviceQueueError};

use crate::message::{ConfigAccess, ProtocolFeatures};

/// Why a device refused a config space access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Access lies outside the device's config space.
    OutOfRange {
        /// Offset of the access.
        offset: u32,
        /// Length of the access.
        len: usize,
    },
    /// Access writes a read-only field.
    ReadOnly {
        /// Offset of the access.
        offset: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::OutOfRange { offset, len } => {
                write!(
                    f,
                    "access {offset:#x}+{len:#x} lies outside the config space"
                )
            }
            ConfigError::ReadOnly { offset } => {
                write!(f, "access at {offset:#x} writes a read-only field")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A virtio device served over vhost-user.
///
/// The back-end calls it from its session thread; queue handlers run on one worker thread per
/// started queue.
pub trait VhostUserDevice: Send + Sync + 'static {
    /// The virtio feature bits the device offers (the back-end adds
    /// `VHOST_USER_F_PROTOCOL_FEATURES`).
    fn features(&self) -> u64;

    /// The protocol features the device wants offered; the back-end offers those of them it
    /// implements ([`crate::backend::SUPPORTED_PROTOCOL_FEATURES`]).
    ///
    /// The default is all of them but `INFLIGHT_SHMFD` (QEMU `docs/interop/vhost-user.rst`,
    /// "Inflight I/O tracking"), which a device opts into: with it, a restarted back-end
    /// re-delivers the chains the previous one held (split rings), so the device must accept
    /// requests it may already have carried out (a block device's reads and writes are
    /// idempotent; a network device's transmissions are not).
    fn protocol_features(&self) -> ProtocolFeatures {
        crate::backend::SUPPORTED_PROTOCOL_FEATURES.difference(ProtocolFeatures::INFLIGHT_SHMFD)
    }

    /// Number of queues.
    fn num_queues(&self) -> u16;

    /// Largest queue size the device accepts.
    fn max_queue_size(&self) -> u16;

    /// Fills `buf` with the config space bytes at `offset`.
    fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), ConfigError>;

    /// Writes `data` to the config space at `offset`.
    fn write_config(
        &self,
        offset: u32,
        data: &[u8],
        access: ConfigAccess,
    ) -> Result<(), ConfigError>;

    /// A handler for queue `queue_index` (called each time the queue starts).
    fn queue_handler(&self, queue_index: u16) -> Box<dyn QueueHandler>;

    /// Told the virtio features the front-end acknowledged (`SET_FEATURES`), before any queue
    /// starts.
    fn set_features(&self, _features: u64) {}

    /// Back to the initial state: the front-end reset the device or disconnected (all queues are
    /// stopped before this is called).
    fn reset(&self);
}

/// Processes one queue's buffers; runs on the queue's worker thread.
pub trait QueueHandler: Send {
    /// Pops and handles available chains (the worker has disabled kicks, and publishes used
    /// entries and notifies the driver afterwards). An error from the queue means the driver
    /// broke a ring rule: the queue stops.
    ///
    /// A device's own failures (an I/O error on its backing store) are reported to the driver
    /// in the request's status, not here.
    fn process(
        &mut self,
        queue: &mut DeviceQueue,
        mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError>;

    /// An fd the worker also waits on, for a handler that completes requests asynchronously
    /// (an io_uring or an eventfd that signals completions). When it is readable the worker
    /// calls [`QueueHandler::process`] again, which must consume the readiness. `None` (the
    /// default) for handlers that finish every request inside `process`.
    fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Called once when the queue stops (`GET_VRING_BASE`, disable, reconfiguration,
    /// disconnect): finish or cancel in-flight requests and add their used entries, so that
    /// the state the back-end reports is final. The worker publishes and notifies afterwards.
    fn drain(
        &mut self,
        _queue: &mut DeviceQueue,
        _mem: &GuestMemoryMap,
    ) -> Result<(), DeviceQueueError> {
        Ok(())
    }
}
