//! Both sides of one virtqueue in one process, on two threads, over one shared region: the
//! loop shape of the Linux kernel's `tools/virtio/ringtest` (`run_guest` adds and reaps,
//! `run_host` pops and completes), with every token verified to come back exactly once with the
//! length and data the device wrote.
//!
//! Used by `vireo bench ring` and by the concurrent exactly-once tests. Notification is pluggable
//! ([`Notifier`]): busy polling, or a blocking primitive (eventfd in the CLI, a condition
//! variable in tests). The hot path allocates nothing and takes no lock; a notifier's `wait` is
//! only reached when a side has nothing to do and has re-enabled notifications.

mod device_loop;
mod driver_loop;
mod notify;

use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vireo_memory::{GuestMemoryMap, MemoryError, OwnedRegion};
use vireo_spec::Features;

use crate::device::{DeviceQueue, DeviceQueueError, DeviceQueueState};
use crate::driver::{DriverQueue, DriverQueueError, DriverQueueOptions};
use crate::{QueueConfig, RingFormat};

pub use notify::{CondvarNotifier, Notifier, PollingNotifier};

/// Guest address of the loopback's shared region (not zero, so an address bug shows).
pub const REGION_BASE: u64 = 0x4000_0000;
/// Bytes of each buffer's device-readable segment (carries the sequence number).
pub const READABLE_LEN: u32 = 16;
/// Bytes of each buffer's device-writable segment.
pub const WRITABLE_LEN: u32 = 16;
/// XOR mask the device applies to the sequence number it echoes back.
pub const ECHO_MASK: u64 = 0x5a5a_a5a5_0f0f_f0f0;

/// The length the device reports for buffer `seq` (8 to 16 bytes, varying so that a mixed-up
/// completion shows as a wrong length).
#[inline]
pub fn expected_written(seq: u64) -> u32 {
    8 + (seq % 9) as u32
}

/// What each buffer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payload {
    /// A device-readable segment with the sequence number and a device-writable segment the
    /// device echoes it into: data is checked both ways.
    #[default]
    Echo,
    /// One device-writable segment and no data touched (the shape of ringtest's buffers): the
    /// device derives the used length from the buffer's address, so tokens and lengths are
    /// still verified.
    None,
}

/// The used length for a buffer at `addr` in [`Payload::None`] mode.
#[inline]
pub fn expected_written_at(addr: u64) -> u32 {
    8 + ((addr / u64::from(READABLE_LEN + WRITABLE_LEN)) % 9) as u32
}

/// How notifications travel between the two threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyMode {
    /// Neither side ever sleeps: both poll the ring.
    Poll,
    /// Each side sleeps on its notifier when idle, with notifications enabled.
    Block,
}

/// Parameters of a loopback run.
#[derive(Debug, Clone, Copy)]
pub struct LoopbackOptions {
    /// Ring format.
    pub format: RingFormat,
    /// Ring features to negotiate (EVENT_IDX, INDIRECT_DESC, IN_ORDER ...); VERSION_1 and the
    /// format bit are added.
    pub ring_features: Features,
    /// Queue size.
    pub queue_size: u16,
    /// Buffers to move in total.
    pub buffers: u64,
    /// Buffers the driver adds before publishing and deciding to kick, and the device uses
    /// before publishing and deciding to notify.
    pub batch: u16,
    /// Most buffers in flight at once (at most the queue size).
    pub outstanding: u16,
    /// Polling or blocking.
    pub notify: NotifyMode,
    /// What each buffer carries.
    pub payload: Payload,
}

impl Default for LoopbackOptions {
    fn default() -> Self {
        LoopbackOptions {
            format: RingFormat::Split,
            ring_features: Features::empty(),
            queue_size: 256,
            buffers: 100_000,
            batch: 32,
            outstanding: 128,
            notify: NotifyMode::Poll,
            payload: Payload::Echo,
        }
    }
}

/// What a loopback run measured and verified.
#[derive(Debug, Clone, Copy)]
pub struct LoopbackReport {
    /// Buffers that came back to the driver.
    pub completed: u64,
    /// True when every token came back exactly once with the expected length and data.
    pub verified: bool,
    /// Wall time from the first add to the last reap.
    pub elapsed: Duration,
    /// Kicks the driver sent.
    pub kicks: u64,
    /// Used-buffer notifications the device sent.
    pub calls: u64,
    /// Times the driver slept waiting for a used-buffer notification (each needs one call;
    /// calls beyond these found the driver awake).
    pub driver_sleeps: u64,
    /// Times the device slept waiting for a kick.
    pub device_sleeps: u64,
}

impl LoopbackReport {
    /// Nanoseconds per buffer.
    pub fn ns_per_buffer(&self) -> f64 {
        if self.completed == 0 {
            return 0.0;
        }
        self.elapsed.as_nanos() as f64 / self.completed as f64
    }
}

/// Why a loopback run failed.
#[derive(Debug)]
pub enum LoopbackError {
    /// The options are inconsistent (the message says which).
    Options(&'static str),
    /// Setting up the shared region failed.
    Memory(MemoryError),
    /// The driver side reported an error.
    Driver(DriverQueueError),
    /// The device side reported an error.
    Device(DeviceQueueError),
    /// A token came back twice, with a wrong length, or with wrong data.
    Verification(&'static str, u64),
    /// A thread panicked.
    ThreadPanicked,
}

impl fmt::Display for LoopbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopbackError::Options(m) => write!(f, "invalid loopback options: {m}"),
            LoopbackError::Memory(e) => write!(f, "loopback memory: {e}"),
            LoopbackError::Driver(e) => write!(f, "driver side: {e}"),
            LoopbackError::Device(e) => write!(f, "device side: {e}"),
            LoopbackError::Verification(m, seq) => {
                write!(f, "verification failed: {m} (buffer {seq})")
            }
            LoopbackError::ThreadPanicked => write!(f, "a loopback thread panicked"),
        }
    }
}

impl std::error::Error for LoopbackError {}

/// The negotiated feature set for `options`.
pub fn negotiated_features(options: &LoopbackOptions) -> Features {
    let mut f = options.ring_features | Features::VERSION_1;
    if options.format == RingFormat::Packed {
        f |= Features::RING_PACKED;
    }
    f
}

/// Runs one loopback: sets up the region and both queues, runs the driver on this thread and
/// the device on a new one, and returns what was measured.
///
/// Each side's loop is generic over [`crate::driver::DriverRing`] /
/// [`crate::device::DeviceRing`] and the format is matched once per run, so the loops run on
/// the format's own types with no dispatch per call.
pub fn run(
    options: &LoopbackOptions,
    kick: Arc<dyn Notifier>,
    call: Arc<dyn Notifier>,
) -> Result<LoopbackReport, LoopbackError> {
    if options.outstanding == 0 || options.outstanding > options.queue_size {
        return Err(LoopbackError::Options(
            "outstanding must be between 1 and the queue size",
        ));
    }
    if options.batch == 0 {
        return Err(LoopbackError::Options("batch must be at least 1"));
    }
    let features = negotiated_features(options);
    let driver_options = DriverQueueOptions::default();
    let ring_bytes = crate::driver::required_size(
        options.format,
        options.queue_size,
        features,
        &driver_options,
    );
    let ring_bytes = ring_bytes.next_multiple_of(4096);
    let buffers_bytes = usize::from(options.outstanding) * (READABLE_LEN + WRITABLE_LEN) as usize;
    let area = OwnedRegion::new_area(ring_bytes + buffers_bytes).map_err(LoopbackError::Memory)?;
    let mem =
        Arc::new(GuestMemoryMap::single(REGION_BASE, area.clone()).map_err(LoopbackError::Memory)?);
    let ring_area = area
        .sub_area(0, ring_bytes)
        .map_err(LoopbackError::Memory)?;
    let driver = DriverQueue::<u64>::new(
        ring_area,
        REGION_BASE,
        options.queue_size,
        features,
        driver_options,
    )
    .map_err(LoopbackError::Driver)?;
    let config = QueueConfig {
        size: options.queue_size,
        addrs: driver.addresses(),
        features,
    };
    let device = DeviceQueue::new(&*mem, &config, DeviceQueueState::default())
        .map_err(LoopbackError::Device)?;

    let stop = Arc::new(AtomicBool::new(false));
    let device_thread = {
        let (mem, kick, call, stop) = (
            Arc::clone(&mem),
            Arc::clone(&kick),
            Arc::clone(&call),
            Arc::clone(&stop),
        );
        let opts = *options;
        std::thread::Builder::new()
            .name("vireo-device".into())
            .spawn(move || {
                // The format is picked here, once: each arm runs its own copy of the loop.
                let r = match device {
                    DeviceQueue::Split(q) => {
                        device_loop::run(q, &mem, &opts, &*kick, &*call, &stop)
                    }
                    DeviceQueue::Packed(q) => {
                        device_loop::run(q, &mem, &opts, &*kick, &*call, &stop)
                    }
                };
                if r.is_err() {
                    stop.store(true, Ordering::SeqCst);
                    call.notify();
                }
                r
            })
            .map_err(|_| LoopbackError::ThreadPanicked)?
    };
    let buffers_base = REGION_BASE + ring_bytes as u64;
    let start = Instant::now();
    let (kick_ref, call_ref) = (&*kick, &*call);
    let driver_result = match driver {
        DriverQueue::Split(q) => {
            driver_loop::run(q, &mem, buffers_base, options, kick_ref, call_ref, &stop)
        }
        DriverQueue::Packed(q) => {
            driver_loop::run(q, &mem, buffers_base, options, kick_ref, call_ref, &stop)
        }
    };
    let elapsed = start.elapsed();
    if driver_result.is_err() {
        stop.store(true, Ordering::SeqCst);
        kick.notify();
    }
    let device_result = device_thread
        .join()
        .map_err(|_| LoopbackError::ThreadPanicked)?;
    let driver_stats = driver_result?;
    let (calls, device_sleeps) = device_result?;
    Ok(LoopbackReport {
        completed: driver_stats.completed,
        verified: driver_stats.verified(options.buffers),
        elapsed,
        kicks: driver_stats.kicks,
        calls,
        driver_sleeps: driver_stats.sleeps,
        device_sleeps,
    })
}
