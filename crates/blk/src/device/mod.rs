//! The virtio-blk device (virtio 1.2 §5.2 "Block Device") served over vhost-user.
//!
//! - [`BlkDevice`]: features, configuration space and queues; implements
//!   [`VhostUserDevice`], so a [`vireo_vhost_user::BackendServer`] can serve it.
//! - One [`QueueHandler`] per started queue (`handler`): it parses each chain (`request`),
//!   answers bad requests at once, and hands the good ones to the queue's I/O thread (`io`),
//!   which keeps many in flight on a [`crate::storage::IoQueue`] (`io_uring` where the kernel
//!   allows it). Completions come back through an eventfd the worker waits on
//!   ([`QueueHandler::completion_fd`]); the handler then writes the status byte and adds the
//!   used element, and the worker publishes and notifies in batches.
//!
//! Nothing the driver sends can make the device touch the image beyond its capacity: every
//! request's range is checked (overflow included) before it reaches the storage.

mod config;
mod handler;
mod io;
mod request;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vireo_spec::blk::{BlkConfig, BlkFeatures};
use vireo_spec::Features;
use vireo_vhost_user::device::{ConfigError, QueueHandler, VhostUserDevice};
use vireo_vhost_user::message::{ConfigAccess, ProtocolFeatures};

use crate::storage::{IoBackend, Storage};

pub use handler::BlkQueueHandler;

/// Largest queue size a virtqueue may have (virtio 1.2 §2.6: at most 32768 entries).
const MAX_QUEUE_SIZE: u16 = 32768;

/// Why a [`BlkDevice`] could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkDeviceError {
    /// a device needs at least one queue
    NoQueues,
    /// queue size {size} is not a power of two between 4 and 32768
    QueueSize {
        /// The size asked for.
        size: u16,
    },
}

impl fmt::Display for BlkDeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkDeviceError::NoQueues => f.write_str("a device needs at least one queue"),
            BlkDeviceError::QueueSize { size } => write!(
                f,
                "queue size {size} is not a power of two between 4 and 32768"
            ),
        }
    }
}

impl std::error::Error for BlkDeviceError {}

/// Which ring formats the device offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingFormats {
    /// Split rings only.
    SplitOnly,
    /// Split and packed rings (`VIRTIO_F_RING_PACKED`).
    #[default]
    SplitAndPacked,
}

/// The cache mode the device starts in (virtio 1.2 §5.2.4 `writeback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// Writes complete when the storage has them; `VIRTIO_BLK_T_FLUSH` makes them durable.
    #[default]
    WriteBack,
    /// Every write is flushed before it completes.
    WriteThrough,
}

/// How a [`BlkDevice`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkOptions {
    /// Number of request queues (`num_queues`; `VIRTIO_BLK_F_MQ` is offered when above 1).
    pub num_queues: u16,
    /// Largest queue size accepted (a power of two, 4..=32768). vhost-user has no message for
    /// it, so the front-end cannot learn it: QEMU on virtio-mmio lets the guest pick 1024 (its
    /// own maximum), hence the default.
    pub max_queue_size: u16,
    /// Most data segments in one request (`seg_max`); clamped to 1..=1024 and to what a
    /// ring of `max_queue_size` without indirect descriptors can carry.
    pub seg_max: u32,
    /// Largest data segment in bytes (`size_max`; at least 4096). Keep `size_max * seg_max`
    /// below 32 MiB: SeaBIOS's virtio-blk driver computes the largest transfer from it in
    /// 512-byte blocks as a 16-bit number, and with a larger product it wraps to zero and
    /// loops forever on empty reads before the guest kernel even starts.
    pub size_max: u32,
    /// The initial cache mode.
    pub cache: CachePolicy,
    /// Which implementation the I/O queues use.
    pub io_backend: IoBackend,
    /// Which ring formats to offer.
    pub rings: RingFormats,
}

impl Default for BlkOptions {
    fn default() -> Self {
        BlkOptions {
            num_queues: 1,
            max_queue_size: 1024,
            seg_max: 128,
            size_max: 1 << 16,
            cache: CachePolicy::WriteBack,
            io_backend: IoBackend::Auto,
            rings: RingFormats::SplitAndPacked,
        }
    }
}

/// What every queue handler of a device shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) limits: config::Limits,
    /// The features the driver acknowledged.
    pub(crate) acked: AtomicU64,
    /// The configuration space (only `writeback` changes).
    pub(crate) config: Mutex<BlkConfig>,
    pub(crate) io_backend: IoBackend,
}

impl Shared {
    /// True when the driver acknowledged all of `features`.
    pub(crate) fn acked(&self, features: BlkFeatures) -> bool {
        let acked = self.acked.load(Ordering::Acquire);
        acked & features.bits() == features.bits()
    }

    /// True when writes must be flushed before they complete: the driver chose
    /// writethrough (`writeback` = 0), or negotiated neither FLUSH nor CONFIG_WCE
    /// (virtio 1.2 §5.2.5.2: such a driver cannot flush, so the device writes through).
    pub(crate) fn write_through(&self) -> bool {
        if !self.acked(BlkFeatures::FLUSH) && !self.acked(BlkFeatures::CONFIG_WCE) {
            return true;
        }
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .writeback
            == 0
    }
}

/// A virtio-blk device on a [`Storage`] (see the module docs).
#[derive(Debug)]
pub struct BlkDevice {
    shared: Arc<Shared>,
    features: u64,
    num_queues: u16,
    max_queue_size: u16,
    initial_writeback: u8,
}

impl BlkDevice {
    /// A device serving `storage`.
    pub fn new(storage: Arc<dyn Storage>, options: BlkOptions) -> Result<Self, BlkDeviceError> {
        if options.num_queues == 0 {
            return Err(BlkDeviceError::NoQueues);
        }
        let size = options.max_queue_size;
        if !size.is_power_of_two() || !(4..=MAX_QUEUE_SIZE).contains(&size) {
            return Err(BlkDeviceError::QueueSize { size });
        }
        let limits = config::Limits::new(&*storage, &options);
        let features = config::features(&*storage, &options);
        let blk_config = config::config_space(&*storage, &limits, &options);
        Ok(BlkDevice {
            shared: Arc::new(Shared {
                storage,
                limits,
                acked: AtomicU64::new(0),
                config: Mutex::new(blk_config),
                io_backend: options.io_backend,
            }),
            features,
            num_queues: options.num_queues,
            max_queue_size: size,
            initial_writeback: blk_config.writeback,
        })
    }

    /// The configuration space as it is now.
    pub fn config(&self) -> BlkConfig {
        *self
            .shared
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The storage behind the device.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.shared.storage
    }
}

impl VhostUserDevice for BlkDevice {
    fn features(&self) -> u64 {
        self.features
    }

    /// Every protocol feature the back-end implements, INFLIGHT_SHMFD included: reads, writes,
    /// flushes and discards can be carried out twice, so a restarted `vireo blk` may resubmit
    /// what the previous one held (QEMU `docs/interop/vhost-user.rst`, "Inflight I/O
    /// tracking").
    fn protocol_features(&self) -> ProtocolFeatures {
        vireo_vhost_user::backend::SUPPORTED_PROTOCOL_FEATURES
    }

    fn num_queues(&self) -> u16 {
        self.num_queues
    }

    fn max_queue_size(&self) -> u16 {
        self.max_queue_size
    }

    fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), ConfigError> {
        let out_of_range = ConfigError::OutOfRange {
            offset,
            len: buf.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range)?;
        let window = self
            .config()
            .read_at(start, buf.len())
            .map_err(|_| out_of_range)?;
        // Same length by construction; a zip cannot panic even if it were not.
        for (dst, src) in buf.iter_mut().zip(window.as_ref()) {
            *dst = *src;
        }
        Ok(())
    }

    fn write_config(
        &self,
        offset: u32,
        data: &[u8],
        _access: ConfigAccess,
    ) -> Result<(), ConfigError> {
        let start = usize::try_from(offset).map_err(|_| ConfigError::OutOfRange {
            offset,
            len: data.len(),
        })?;
        // Only `writeback` is writable, and only with CONFIG_WCE (virtio 1.2 §5.2.5).
        if !self.shared.acked(BlkFeatures::CONFIG_WCE) {
            return Err(ConfigError::ReadOnly { offset });
        }
        let mut config = self
            .shared
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        config
            .write_at(start, data)
            .map_err(|_| ConfigError::ReadOnly { offset })?;
        tracing::info!(
            writeback = config.writeback,
            "driver changed the cache mode"
        );
        Ok(())
    }

    fn queue_handler(&self, queue_index: u16) -> Box<dyn QueueHandler> {
        Box::new(BlkQueueHandler::new(Arc::clone(&self.shared), queue_index))
    }

    fn set_features(&self, features: u64) {
        self.shared.acked.store(features, Ordering::Release);
        let blk = BlkFeatures::from_bits_truncate(features);
        if blk.contains(BlkFeatures::CONFIG_WCE) && !blk.contains(BlkFeatures::FLUSH) {
            // A driver that can switch the cache but not flush it starts in writethrough
            // (virtio 1.2 §5.2.5.2).
            let mut config = self
                .shared
                .config
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            config.writeback = 0;
        }
        tracing::debug!(
            features = format_args!("{features:#x}"),
            packed = features & Features::RING_PACKED.bits() != 0,
            "driver acknowledged features"
        );
    }

    fn reset(&self) {
        self.shared.acked.store(0, Ordering::Release);
        let mut config = self
            .shared
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        config.writeback = self.initial_writeback;
    }
}
