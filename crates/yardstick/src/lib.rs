//! rust-vmm's `virtio-queue` as an interop peer and a speed yardstick for Vireo's split rings.
//!
//! One split virtqueue in a `vm_memory::GuestMemoryMmap` (the guest memory of rust-vmm VMMs),
//! two threads: Vireo's driver ([`vireo_queue::driver::DriverQueue`], seeing the memory through
//! [`VmMemory`]) adds buffers and verifies every one that comes back; the device is either
//! rust-vmm's [`virtio_queue::Queue`] ([`Device::RustVmm`], an implementation we did not write) or
//! Vireo's own [`vireo_queue::device::DeviceQueue`] over the same memory ([`Device::Vireo`]), doing
//! the same work per buffer, so the two devices can be compared on identical work.
//!
//! Each buffer is a 16-byte device-readable segment carrying a sequence number and a 16-byte
//! device-writable segment: the device reads the number and writes it back XORed with
//! [`ECHO_MASK`], and reports a used length that depends on the number (virtio 1.2 §2.7.8), so a
//! mixed-up completion shows. With INDIRECT_DESC the two segments go in an indirect table
//! (virtio 1.2 §2.7.5.3); with EVENT_IDX both sides suppress notifications by index (§2.7.7,
//! §2.7.10).

#![forbid(unsafe_code)]

mod driver;
mod error;
mod notify;
mod rust_vmm;
mod single;
mod vireo_device;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vireo_memory::vm_memory_adapter::VmMemory;
use vireo_memory::GuestMemory as _;
use vireo_queue::device::{DeviceQueue, DeviceQueueState};
use vireo_queue::driver::{DriverQueue, DriverQueueOptions};
use vireo_queue::RingFormat;
use vireo_spec::Features;
use vm_memory::{GuestAddress, GuestMemoryMmap};

pub use error::YardstickError;
pub use notify::{EventFdNotifier, NotifierPair, NotifyKind};
pub use single::run_single_thread;
pub use vireo_queue::loopback::{
    expected_written, CondvarNotifier, Notifier, NotifyMode, PollingNotifier, ECHO_MASK,
};

/// Guest address of the one memory region (not zero, so an address bug shows).
pub const REGION_BASE: u64 = 0x4000_0000;

/// Which device serves the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// rust-vmm's `virtio_queue::Queue`, taking chains with `iter` a batch at a time.
    RustVmm,
    /// rust-vmm's `virtio_queue::Queue`, taking chains with `pop_descriptor_chain` one at a time
    /// (the loop of Firecracker-style devices).
    RustVmmPop,
    /// Vireo's `DeviceQueue` over `VmMemory`.
    Vireo,
}

impl Device {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Device::RustVmm => "virtio-queue",
            Device::RustVmmPop => "virtio-queue-pop",
            Device::Vireo => "vireo",
        }
    }
}

/// A deliberate device-side mistake, to show that the driver's verification catches it (the
/// negative controls of the interop tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// For buffer `seq`, echo a wrong value.
    WrongData {
        /// The sequence number of the buffer to get wrong.
        seq: u64,
    },
    /// For buffer `seq`, report a used length one byte short.
    WrongLength {
        /// The sequence number of the buffer to get wrong.
        seq: u64,
    },
}

/// The value the device echoes for buffer `seq` and the used length it reports.
#[inline]
pub(crate) fn echo(seq: u64, fault: Option<Fault>) -> (u64, u32) {
    let (mut value, mut len) = (seq ^ ECHO_MASK, expected_written(seq));
    match fault {
        Some(Fault::WrongData { seq: s }) if s == seq => value ^= 1,
        Some(Fault::WrongLength { seq: s }) if s == seq => len -= 1,
        _ => {}
    }
    (value, len)
}

/// Parameters of one run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Ring features besides VERSION_1: EVENT_IDX and/or INDIRECT_DESC (split ring only).
    pub ring_features: Features,
    /// Queue size (a power of two).
    pub queue_size: u16,
    /// Buffers to pass through the ring.
    pub buffers: u64,
    /// Buffers the driver adds, and the device uses, before publishing and deciding on a
    /// notification.
    pub batch: u16,
    /// Buffers in flight at most.
    pub outstanding: u16,
    /// Polling or sleeping when idle.
    pub notify: NotifyMode,
    /// A deliberate device mistake (negative controls only).
    pub fault: Option<Fault>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ring_features: Features::empty(),
            queue_size: 256,
            buffers: 100_000,
            batch: 32,
            outstanding: 128,
            notify: NotifyMode::Poll,
            fault: None,
        }
    }
}

/// What the device thread counted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeviceStats {
    pub used: u64,
    pub calls: u64,
    pub sleeps: u64,
}

/// What a run measured and verified.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Buffers that came back to the driver.
    pub completed: u64,
    /// True when every token came back exactly once with the expected length and data.
    pub verified: bool,
    /// Wall time from the driver's first add to its last reap.
    pub elapsed: Duration,
    /// Kicks the driver sent.
    pub kicks: u64,
    /// Used-buffer notifications the device sent.
    pub calls: u64,
    /// Times the driver slept waiting for a used-buffer notification.
    pub driver_sleeps: u64,
    /// Times the device slept waiting for a kick.
    pub device_sleeps: u64,
}

impl Report {
    /// Nanoseconds per buffer.
    pub fn ns_per_buffer(&self) -> f64 {
        if self.completed == 0 {
            return 0.0;
        }
        self.elapsed.as_nanos() as f64 / self.completed as f64
    }
}

/// The device half, made before any loop starts (so a refused ring fails early).
enum DeviceHalf {
    RustVmm(rust_vmm::RustVmmDevice),
    Vireo(Box<DeviceQueue>),
}

/// Memory, driver and device of one run, ready to go.
struct Setup {
    vm: VmMemory,
    driver: DriverQueue<u64>,
    half: DeviceHalf,
    buffers_base: u64,
}

/// Checks `opts`, makes the memory (the ring, then one slot per outstanding buffer), the driver
/// and `device`.
fn setup(opts: &Options, device: Device) -> Result<Setup, YardstickError> {
    if opts.outstanding == 0 || opts.outstanding > opts.queue_size {
        return Err(YardstickError::Options(
            "outstanding must be between 1 and the queue size",
        ));
    }
    if opts.batch == 0 {
        return Err(YardstickError::Options("batch must be at least 1"));
    }
    let allowed = Features::EVENT_IDX | Features::INDIRECT_DESC;
    if !allowed.contains(opts.ring_features) {
        return Err(YardstickError::Options(
            "only EVENT_IDX and INDIRECT_DESC (virtio-queue serves split rings)",
        ));
    }
    let features = opts.ring_features | Features::VERSION_1;
    let driver_options = DriverQueueOptions::default();
    let ring_bytes = vireo_queue::driver::required_size(
        RingFormat::Split,
        opts.queue_size,
        features,
        &driver_options,
    )
    .next_multiple_of(4096);
    let buffers_bytes = usize::from(opts.outstanding) * driver::SLOT_BYTES as usize;
    let mem = Arc::new(
        GuestMemoryMmap::<()>::from_ranges(&[(
            GuestAddress(REGION_BASE),
            ring_bytes + buffers_bytes,
        )])
        .map_err(YardstickError::VmMemoryRegion)?,
    );
    let vm = VmMemory::new(Arc::clone(&mem));
    let ring_area = vm
        .area(REGION_BASE, ring_bytes as u64)
        .map_err(YardstickError::Memory)?;
    let driver = DriverQueue::<u64>::new(
        ring_area,
        REGION_BASE,
        opts.queue_size,
        features,
        driver_options,
    )
    .map_err(YardstickError::Driver)?;
    let config = driver.config();
    let rust_vmm = |style| -> Result<DeviceHalf, YardstickError> {
        Ok(DeviceHalf::RustVmm(rust_vmm::RustVmmDevice::new(
            style,
            rust_vmm::queue(&config, &mem)?,
            opts,
        )))
    };
    let half = match device {
        Device::RustVmm => rust_vmm(rust_vmm::Style::Iter)?,
        Device::RustVmmPop => rust_vmm(rust_vmm::Style::Pop)?,
        Device::Vireo => DeviceHalf::Vireo(Box::new(
            DeviceQueue::new(&vm, &config, DeviceQueueState::default())
                .map_err(YardstickError::Device)?,
        )),
    };
    Ok(Setup {
        vm,
        driver,
        half,
        buffers_base: REGION_BASE + ring_bytes as u64,
    })
}

/// Runs one ring: sets up the memory and both sides, runs the driver on this thread and
/// `device` on a new one, and returns what was measured.
pub fn run(
    opts: &Options,
    device: Device,
    kick: Arc<dyn Notifier>,
    call: Arc<dyn Notifier>,
) -> Result<Report, YardstickError> {
    let Setup {
        vm,
        driver,
        half,
        buffers_base,
    } = setup(opts, device)?;
    let stop = Arc::new(AtomicBool::new(false));
    let device_thread = {
        let (vm, kick, call, stop) = (
            vm.clone(),
            Arc::clone(&kick),
            Arc::clone(&call),
            Arc::clone(&stop),
        );
        let opts = *opts;
        std::thread::Builder::new()
            .name(format!("{}-device", device.name()))
            .spawn(move || {
                let r = match half {
                    DeviceHalf::RustVmm(d) => {
                        rust_vmm::run(d, vm.inner(), &opts, &*kick, &*call, &stop)
                    }
                    DeviceHalf::Vireo(q) => {
                        vireo_device::run(*q, &vm, &opts, &*kick, &*call, &stop)
                    }
                };
                if r.is_err() {
                    stop.store(true, Ordering::SeqCst);
                    call.notify();
                }
                r
            })
            .map_err(YardstickError::Spawn)?
    };
    let side = driver::DriverSide {
        mem: &vm,
        buffers_base,
        kick: &*kick,
        call: &*call,
        stop: &stop,
    };
    let start = Instant::now();
    let driver_result = driver::run(driver, &side, opts);
    let elapsed = start.elapsed();
    if driver_result.is_err() {
        stop.store(true, Ordering::SeqCst);
        kick.notify();
    }
    let device_result = device_thread
        .join()
        .map_err(|_| YardstickError::ThreadPanicked)?;
    // The first failure is the one to report (the other side only saw it stop).
    let (driver_stats, device_stats) = match (driver_result, device_result) {
        (Ok(d), Ok(v)) => (d, v),
        (Err(YardstickError::PeerStopped(_)), Err(e)) | (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(Report {
        completed: driver_stats.completed,
        verified: driver_stats.verified(opts.buffers),
        elapsed,
        kicks: driver_stats.kicks,
        calls: device_stats.calls,
        driver_sleeps: driver_stats.sleeps,
        device_sleeps: device_stats.sleeps,
    })
}
