//! Both sides on one thread, taking turns: the driver adds and publishes a batch, the device
//! serves everything available, the driver reaps and verifies. No scheduling, no spinning: the
//! work per buffer only, so a single-thread timing is far steadier than the two-thread one on a
//! shared machine, and an instruction count (callgrind) is deterministic.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use vireo_queue::loopback::{NotifyMode, PollingNotifier};

use crate::driver::{self, DriverSide, DriverStats};
use crate::{
    setup, vireo_device, Device, DeviceHalf, DeviceStats, Options, Report, Setup, YardstickError,
};

/// Runs `opts.buffers` buffers through `device` on this thread (polling semantics: no
/// notifications; `opts.notify` must be [`NotifyMode::Poll`]).
pub fn run_single_thread(opts: &Options, device: Device) -> Result<Report, YardstickError> {
    if opts.notify != NotifyMode::Poll {
        return Err(YardstickError::Options(
            "a single thread cannot sleep: polling only",
        ));
    }
    let Setup {
        vm,
        mut driver,
        mut half,
        buffers_base,
    } = setup(opts, device)?;
    let (poll, stop) = (PollingNotifier, AtomicBool::new(false));
    let side = DriverSide {
        mem: &vm,
        buffers_base,
        kick: &poll,
        call: &poll,
        stop: &stop,
    };
    let mut free_slots: Vec<u16> = (0..opts.outstanding).rev().collect();
    let mut stats = DriverStats::new(opts.buffers)?;
    let mut device_stats = DeviceStats::default();
    let mut next_seq = 0u64;
    let start = Instant::now();
    while stats.completed < opts.buffers {
        let added = driver::add_batch(&mut driver, &side, opts, &mut free_slots, &mut next_seq)?;
        driver::announce(&mut driver, NotifyMode::Poll)?;
        let used = match &mut half {
            DeviceHalf::RustVmm(d) => d.drain(vm.inner(), opts, &poll, &mut device_stats)?,
            DeviceHalf::Vireo(q) => vireo_device::drain(q, &vm, opts, &poll, &mut device_stats)?,
        };
        let reaped = driver::reap(&mut driver, &side, &mut stats, &mut free_slots)?;
        if added == 0 && used == 0 && reaped == 0 {
            return Err(YardstickError::Verification(
                "no progress: buffers lost",
                stats.completed,
            ));
        }
    }
    let elapsed = start.elapsed();
    Ok(Report {
        completed: stats.completed,
        verified: stats.verified(opts.buffers),
        elapsed,
        kicks: 0,
        calls: 0,
        driver_sleeps: 0,
        device_sleeps: 0,
    })
}
