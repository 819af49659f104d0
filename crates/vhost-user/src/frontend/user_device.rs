//! [`UserDevice`]: a virtio device driven from this process through a vhost-user back-end
//! (DPDK calls the same thing "virtio-user"): connect, negotiate, share one memfd region with
//! the rings and a buffer pool, start the queues, and tear them down in order.
//!
//! The sequence follows QEMU's front-end (`hw/virtio/vhost-user.c`) and QEMU
//! `docs/interop/vhost-user.rst`: `SET_OWNER`, `GET_FEATURES`, protocol feature negotiation
//! ("Communication"), `GET_QUEUE_NUM` ("Multiple queue support"), `GET_MAX_MEM_SLOTS`,
//! `SET_FEATURES`, `SET_MEM_TABLE`, then per ring `SET_VRING_NUM`, `SET_VRING_BASE`,
//! `SET_VRING_ADDR`, `SET_VRING_KICK`, `SET_VRING_CALL` and `SET_VRING_ENABLE` ("Ring states":
//! with `VHOST_USER_F_PROTOCOL_FEATURES` rings start disabled), and `SET_STATUS` DRIVER_OK when
//! offered. [`UserDevice::shutdown`] stops each ring with `GET_VRING_BASE`.

use std::path::Path;
use std::time::Duration;

use vireo_queue::driver::{required_size, DriverQueue, DriverQueueOptions};
use vireo_queue::RingFormat;
use vireo_spec::{DeviceStatus, Features};

use super::memory::{align_up, BufferPool, SharedRegion, PAGE_SIZE};
use super::queue::{new_eventfd, CallWait, UserQueue};
use super::{Frontend, FrontendError, FrontendOptions, RingEnable};
use crate::message::{ProtocolFeatures, VringAddr, VHOST_USER_F_PROTOCOL_FEATURES};

/// Guest address of the first byte of the shared region (any page-aligned value works; a
/// non-zero one makes a zero address in a descriptor an obvious bug).
pub const GUEST_BASE: u64 = 0x1_0000_0000;

/// Most queues a front-end can set up: `SET_VRING_KICK`/`CALL` carry the ring index in 8 bits
/// (vhost-user.rst, "Front-end message types").
pub const MAX_QUEUES: u16 = 256;

/// Largest queue count a back-end may report before it counts as nonsense (virtio 1.2 §4.1.4.3:
/// `num_queues` is 16 bits).
const MAX_REPORTED_QUEUES: u64 = 0xffff;

/// Features this front-end never accepts, even when asked: an eventfd kick carries no
/// notification data (virtio 1.2 §2.9), and there is no IOTLB here for ACCESS_PLATFORM
/// (vhost-user.rst, "IOMMU support").
pub const UNSUPPORTED: Features = Features::NOTIFICATION_DATA.union(Features::ACCESS_PLATFORM);

/// The protocol features the front-end uses when offered.
pub const WANTED_PROTOCOL_FEATURES: ProtocolFeatures = ProtocolFeatures::MQ
    .union(ProtocolFeatures::REPLY_ACK)
    .union(ProtocolFeatures::CONFIG)
    .union(ProtocolFeatures::RESET_DEVICE)
    .union(ProtocolFeatures::CONFIGURE_MEM_SLOTS)
    .union(ProtocolFeatures::STATUS);

/// What to ask of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserDeviceOptions {
    /// Feature bits to accept when offered (device-specific bits, EVENT_IDX, INDIRECT_DESC,
    /// RING_PACKED...; never those in [`UNSUPPORTED`]).
    pub features: Features,
    /// Feature bits the device must offer ([`Features::VERSION_1`] is always required; bits
    /// in [`UNSUPPORTED`] are refused).
    pub required: Features,
    /// Queues to set up; 0 means every queue the back-end reports (1 without `MQ`).
    pub queues: u16,
    /// Descriptors per queue.
    pub queue_size: u16,
    /// Bytes of the buffer pool (rounded up to a page).
    pub pool_size: usize,
    /// Ring memory options (indirect tables).
    pub queue_options: DriverQueueOptions,
    /// Socket options (reply timeout).
    pub frontend: FrontendOptions,
}

impl Default for UserDeviceOptions {
    fn default() -> Self {
        UserDeviceOptions {
            features: Features::VERSION_1,
            required: Features::VERSION_1,
            queues: 1,
            queue_size: 256,
            pool_size: 1 << 20,
            queue_options: DriverQueueOptions::default(),
            frontend: FrontendOptions::default(),
        }
    }
}

/// A started device: negotiated, memory shared, queues running.
#[derive(Debug)]
pub struct UserDevice<T> {
    frontend: Frontend,
    offered: u64,
    features: Features,
    protocol: ProtocolFeatures,
    max_queues: u16,
    max_mem_slots: Option<u64>,
    region: SharedRegion,
    pool: BufferPool,
    queues: Vec<UserQueue<T>>,
}

/// Byte offsets of each queue's ring memory and of the pool inside the shared region.
struct RegionLayout {
    rings: Vec<(usize, usize)>,
    pool: (usize, usize),
    total: usize,
}

fn region_layout(
    count: u16,
    size: u16,
    features: Features,
    options: &UserDeviceOptions,
) -> Result<RegionLayout, FrontendError> {
    let format = RingFormat::from_features(features);
    let ring = required_size(format, size, features, &options.queue_options);
    let too_big = FrontendError::PoolExhausted {
        len: options.pool_size,
        left: 0,
    };
    let ring_pages = align_up(ring.max(1), PAGE_SIZE).ok_or(too_big)?;
    let mut rings = Vec::with_capacity(usize::from(count));
    let mut offset = 0usize;
    for _ in 0..count {
        rings.push((offset, ring));
        offset = offset.checked_add(ring_pages).ok_or(too_big)?;
    }
    let pool_len = align_up(options.pool_size.max(1), PAGE_SIZE).ok_or(too_big)?;
    let total = offset.checked_add(pool_len).ok_or(too_big)?;
    Ok(RegionLayout {
        rings,
        pool: (offset, pool_len),
        total,
    })
}

impl<T> UserDevice<T> {
    /// Connects to the back-end at `path` and starts the device.
    pub fn connect(
        path: impl AsRef<Path>,
        options: &UserDeviceOptions,
    ) -> Result<Self, FrontendError> {
        let frontend = Frontend::connect_with(path, options.frontend)?;
        Self::start(frontend, options)
    }

    /// Starts the device over a connected front-end (nothing sent on it yet).
    pub fn start(
        mut frontend: Frontend,
        options: &UserDeviceOptions,
    ) -> Result<Self, FrontendError> {
        frontend.set_owner()?;
        let offered = frontend.get_features()?;
        let required = (options.required | Features::VERSION_1).bits();
        let unsupported = (options.required & UNSUPPORTED).bits();
        if unsupported != 0 {
            return Err(FrontendError::FeatureUnsupported { bits: unsupported });
        }
        let missing = required & !offered;
        if missing != 0 {
            return Err(FrontendError::FeatureMissing { bits: missing });
        }
        let has_protocol = offered & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        let protocol = if has_protocol {
            let p = frontend.get_protocol_features()? & WANTED_PROTOCOL_FEATURES;
            frontend.set_protocol_features(p)?;
            p
        } else {
            ProtocolFeatures::empty()
        };
        let max_queues = if protocol.contains(ProtocolFeatures::MQ) {
            let n = frontend.get_queue_num()?;
            if n == 0 || n > MAX_REPORTED_QUEUES {
                return Err(FrontendError::BadQueueCount { count: n });
            }
            u16::try_from(n).unwrap_or(u16::MAX).min(MAX_QUEUES)
        } else {
            options.queues.max(1)
        };
        let count = match options.queues {
            0 => max_queues,
            n if n <= max_queues => n,
            wanted => {
                return Err(FrontendError::TooFewQueues {
                    wanted,
                    available: max_queues,
                })
            }
        };
        let max_mem_slots = if protocol.contains(ProtocolFeatures::CONFIGURE_MEM_SLOTS) {
            let slots = frontend.get_max_mem_slots()?;
            if slots == 0 {
                return Err(FrontendError::TooManyRegions { count: 1, max: 0 });
            }
            Some(slots)
        } else {
            None
        };
        let wanted = (options.features | options.required | Features::VERSION_1) - UNSUPPORTED;
        let features = Features::from_bits_retain(offered & wanted.bits());
        let protocol_bit = offered & VHOST_USER_F_PROTOCOL_FEATURES;
        frontend.set_features(features.bits() | protocol_bit)?;

        let layout = region_layout(count, options.queue_size, features, options)?;
        let region = SharedRegion::new("vireo-frontend", layout.total, GUEST_BASE)?;
        frontend.set_mem_table(&[region.region()], &[region.fd()])?;
        let pool = BufferPool::new(&region, layout.pool.0, layout.pool.1)?;

        let mut device = UserDevice {
            frontend,
            offered,
            features,
            protocol,
            max_queues,
            max_mem_slots,
            region,
            pool,
            queues: Vec::with_capacity(usize::from(count)),
        };
        for (index, &(offset, len)) in (0u16..).zip(&layout.rings) {
            device.start_queue(index, offset, len, options)?;
        }
        if has_protocol {
            for index in 0..count {
                device
                    .frontend
                    .set_vring_enable(u32::from(index), RingEnable::Enabled)?;
            }
        }
        if protocol.contains(ProtocolFeatures::STATUS) {
            let status = DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK;
            device.frontend.set_status(status.bits())?;
        }
        Ok(device)
    }

    fn start_queue(
        &mut self,
        index: u16,
        offset: usize,
        len: usize,
        options: &UserDeviceOptions,
    ) -> Result<(), FrontendError> {
        let queue_error = |error| FrontendError::Queue { index, error };
        let area = self.region.area().sub_area(offset, len)?;
        let guest = self.region.guest_addr() + offset as u64;
        let queue = DriverQueue::new(
            area,
            guest,
            options.queue_size,
            self.features,
            options.queue_options,
        )
        .map_err(queue_error)?;
        let addrs = queue.addresses();
        let user = |guest: u64| {
            self.region.to_user(guest).ok_or(FrontendError::Memory(
                vireo_memory::MemoryError::OutOfRange {
                    addr: guest,
                    len: 0,
                },
            ))
        };
        let addr = VringAddr {
            index: u32::from(index),
            flags: 0,
            desc: user(addrs.desc_table)?,
            used: user(addrs.device_area)?,
            avail: user(addrs.driver_area)?,
            log: 0,
        };
        let kick = new_eventfd()?;
        let call = new_eventfd()?;
        let ring = u32::from(index);
        // Packed rings: bits 0-14 are the next available position and bit 15 its wrap
        // counter, bits 16-31 the same for used (QEMU's encoding, vhost-user.rst
        // `SET_VRING_BASE`); both counters start at 1 (virtio 1.2 §2.8.1).
        let base = match queue.format() {
            RingFormat::Split => 0,
            RingFormat::Packed => 0x8000_8000,
        };
        let fd_index = u8::try_from(index).map_err(|_| FrontendError::NoSuchQueue { index })?;
        let f = &mut self.frontend;
        f.set_vring_num(ring, u32::from(options.queue_size))?;
        f.set_vring_base(ring, base)?;
        f.set_vring_addr(&addr)?;
        f.set_vring_kick(fd_index, Some(std::os::fd::AsFd::as_fd(&kick)))?;
        f.set_vring_call(fd_index, Some(std::os::fd::AsFd::as_fd(&call)))?;
        self.queues.push(UserQueue::new(index, queue, kick, call));
        Ok(())
    }

    /// The virtio feature bits the back-end offered (including bit 30,
    /// `VHOST_USER_F_PROTOCOL_FEATURES`).
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// The negotiated virtio features (without bit 30).
    pub fn features(&self) -> Features {
        self.features
    }

    /// The negotiated protocol features.
    pub fn protocol_features(&self) -> ProtocolFeatures {
        self.protocol
    }

    /// Queues the back-end supports (capped at [`MAX_QUEUES`]).
    pub fn max_queues(&self) -> u16 {
        self.max_queues
    }

    /// The back-end's memory slot limit, when it reports one.
    pub fn max_mem_slots(&self) -> Option<u64> {
        self.max_mem_slots
    }

    /// Number of queues set up.
    pub fn num_queues(&self) -> u16 {
        u16::try_from(self.queues.len()).unwrap_or(u16::MAX)
    }

    /// Queue `index`.
    pub fn queue_mut(&mut self, index: u16) -> Result<&mut UserQueue<T>, FrontendError> {
        self.queues
            .get_mut(usize::from(index))
            .ok_or(FrontendError::NoSuchQueue { index })
    }

    /// Every queue (for example to hand one to each thread of a `std::thread::scope`).
    pub fn queues_mut(&mut self) -> &mut [UserQueue<T>] {
        &mut self.queues
    }

    /// Every queue and the buffer pool at once (to carve buffers while holding the queues).
    pub fn queues_and_pool(&mut self) -> (&mut [UserQueue<T>], &mut BufferPool) {
        (&mut self.queues, &mut self.pool)
    }

    /// The buffer pool (carve the buffers once, then reuse them).
    pub fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    /// The shared region (rings and pool).
    pub fn region(&self) -> &SharedRegion {
        &self.region
    }

    /// The protocol-level front-end, for requests this type does not wrap.
    pub fn frontend_mut(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    /// Signals queue `index`'s kick eventfd.
    pub fn kick(&self, index: u16) -> Result<(), FrontendError> {
        self.queues
            .get(usize::from(index))
            .ok_or(FrontendError::NoSuchQueue { index })?
            .kick()
    }

    /// Waits up to `timeout` for a used-buffer notification on queue `index`.
    pub fn wait_call(&self, index: u16, timeout: Duration) -> Result<CallWait, FrontendError> {
        self.queues
            .get(usize::from(index))
            .ok_or(FrontendError::NoSuchQueue { index })?
            .wait_call(timeout)
    }

    /// `len` bytes of the device's config space at `offset` (`GET_CONFIG`).
    pub fn read_config(&mut self, offset: u32, len: usize) -> Result<Vec<u8>, FrontendError> {
        self.frontend.get_config(offset, len)
    }

    /// Stops every queue in order (`GET_VRING_BASE`, "Ring states") and returns the
    /// back-end's next available index for each; the connection then closes, which also
    /// resets the device on the back-end's side.
    pub fn shutdown(mut self) -> Result<Vec<u32>, FrontendError> {
        let mut bases = Vec::with_capacity(self.queues.len());
        for index in 0..self.num_queues() {
            bases.push(self.frontend.get_vring_base(u32::from(index))?);
        }
        Ok(bases)
    }
}
