//! One request queue's I/O loop: keeps `qd` requests in flight on blocks this queue owns
//! (block `b` belongs to queue `b % queues`, and a block is never in two requests at once, so
//! every read has exactly one expected content), measures each request's latency, and checks
//! every read when verifying.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use vireo_blk::driver::{BlkDriverError, BlkQueue, Notify};
use vireo_queue::driver::DriverQueue;
use vireo_vhost_user::frontend::GuestBuffer;

use super::hist::Histogram;
use super::state::{InFlight, Op, Phase, State};

/// What the workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
}

impl Workload {
    pub(super) fn writes(self) -> bool {
        matches!(self, Workload::Write | Workload::RandWrite)
    }

    pub(super) fn random(self) -> bool {
        matches!(self, Workload::RandRead | Workload::RandWrite)
    }
}

/// How reads are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Not at all.
    Off,
    /// Against the self-describing pattern last written (read workloads write the region
    /// first; write workloads read back every block they wrote at the end).
    Pattern,
    /// Every read must return zeroes (a device that discards writes, such as null-co).
    Zeroes,
}

/// How the loop waits for completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleeps on the call eventfd (used-buffer notifications enabled).
    Notify,
    /// Busy-polls the used ring (notifications disabled).
    Poll,
}

/// The parameters every queue shares.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub workload: Workload,
    /// Bytes per request (a multiple of 512).
    pub bs: usize,
    /// Bytes per data segment (the buffer is split into segments of this size).
    pub seg_size: usize,
    /// Requests in flight per queue.
    pub qd: u16,
    pub duration: Duration,
    /// Blocks of `bs` bytes in the region the run uses.
    pub region_blocks: u64,
    pub queues: u16,
    pub verify: Verify,
    pub wait: Wait,
    pub seed: u64,
    /// Longest wait for a completion before the device counts as hung.
    pub stall: Duration,
}

/// What one queue measured.
#[derive(Debug, Default)]
pub struct QueueReport {
    /// Successful requests in the timed phase.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// Requests the device failed (IOERR / UNSUPP), any phase.
    pub errors: u64,
    /// Reads whose data did not match.
    pub mismatches: u64,
    /// Reads checked.
    pub checked: u64,
    /// Latency of the timed phase's requests, in nanoseconds.
    pub hist: Histogram,
    /// Length of the timed phase.
    pub elapsed: Duration,
    /// The first thing that went wrong.
    pub first_error: Option<String>,
    /// True if the loop stopped early (driver error, device fault, hang).
    pub aborted: bool,
}

/// Kicks through a (duplicated) kick eventfd.
#[derive(Debug)]
pub struct EventfdKick(pub OwnedFd);

impl Notify for EventfdKick {
    fn notify(&mut self, _queue: u16) -> Result<(), BlkDriverError> {
        loop {
            match rustix::io::write(&self.0, &1u64.to_ne_bytes()) {
                Ok(_) | Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(BlkDriverError::NotifyFailed {
                        errno: e.raw_os_error(),
                    })
                }
            }
        }
    }
}

/// Runs queue `index`: optional prefill, `ready` (all queues start the timed phase together),
/// the timed phase, the drain, and the optional read-back.
pub fn run(
    index: u16,
    mut queue: BlkQueue<&mut DriverQueue<u16>>,
    mut kick: EventfdKick,
    call: OwnedFd,
    bufs: &[GuestBuffer],
    plan: Plan,
    ready: &std::sync::Barrier,
) -> QueueReport {
    let mut st = match State::new(index, bufs, plan) {
        Ok(st) => st,
        Err(e) => {
            ready.wait();
            return QueueReport {
                first_error: Some(e),
                aborted: true,
                ..QueueReport::default()
            };
        }
    };
    let setup = match plan.wait {
        Wait::Poll => queue.disable_notifications(),
        Wait::Notify => queue.enable_notifications().map(|_| ()),
    };
    let mut step = |st: &mut State<'_>, phase: Phase| -> Result<(), String> {
        st.phase = phase;
        st.cursor = 0;
        pump(&mut queue, &mut kick, &call, st).map_err(|e| format!("queue {index}: {e}"))
    };
    let mut result = setup.map_err(|e| format!("queue {index}: {e}"));
    if result.is_ok() && plan.verify == Verify::Pattern && !plan.workload.writes() {
        result = step(&mut st, Phase::Prefill);
    }
    ready.wait();
    if result.is_ok() {
        let t0 = Instant::now();
        st.deadline = t0 + plan.duration;
        result = step(&mut st, Phase::Timed);
        st.report.elapsed = t0.elapsed();
    }
    if result.is_ok() && plan.verify != Verify::Off && plan.workload.writes() {
        result = step(&mut st, Phase::ReadBack);
    }
    if let Err(e) = result {
        st.report.aborted = true;
        st.report.first_error.get_or_insert(e);
    }
    st.report
}

/// Submits and completes requests until the phase has nothing more to do.
fn pump(
    queue: &mut BlkQueue<&mut DriverQueue<u16>>,
    kick: &mut EventfdKick,
    call: &OwnedFd,
    st: &mut State<'_>,
) -> Result<(), String> {
    let sector_shift = 9;
    loop {
        let mut now = Instant::now();
        let mut submitted = false;
        while let Some(&slot) = st.free.last() {
            let Some((op, block)) = st.next(now) else {
                break;
            };
            let generation = st.prepare(slot, op, block)?;
            let sector = st.offset(block) >> sector_shift;
            let segs = st
                .segs
                .get(usize::from(slot))
                .ok_or("no segments for slot")?;
            let r = match op {
                Op::Read => queue.submit_read(slot, sector, segs),
                Op::Write => queue.submit_write(slot, sector, segs),
            };
            r.map_err(|e| e.to_string())?;
            st.free.pop();
            if let Some(b) = st.busy.get_mut(block as usize) {
                *b = true;
            }
            if let Some(s) = st.slots.get_mut(usize::from(slot)) {
                *s = Some(InFlight {
                    block,
                    op,
                    generation,
                    start: now,
                });
            }
            submitted = true;
            now = Instant::now();
        }
        if submitted {
            queue.kick(kick).map_err(|e| e.to_string())?;
        }
        if queue.in_flight() == 0 {
            return Ok(());
        }
        reap(queue, call, st)?;
    }
}

/// Waits until at least one request completes and hands every completed one to `st`.
fn reap(
    queue: &mut BlkQueue<&mut DriverQueue<u16>>,
    call: &OwnedFd,
    st: &mut State<'_>,
) -> Result<(), String> {
    let waiting_since = Instant::now();
    loop {
        let n = queue
            .poll_completions(|c| st.complete(c))
            .map_err(|e| e.to_string())?;
        if n > 0 {
            return Ok(());
        }
        let waited = waiting_since.elapsed();
        if waited >= st.plan.stall {
            return Err(format!(
                "no completion for {:?} with {} requests in flight",
                waited,
                queue.in_flight()
            ));
        }
        match st.plan.wait {
            Wait::Poll => std::hint::spin_loop(),
            Wait::Notify => {
                if queue.enable_notifications().map_err(|e| e.to_string())? {
                    continue;
                }
                wait_call(call, st.plan.stall.saturating_sub(waited))?;
            }
        }
    }
}

/// Sleeps until the call eventfd is signalled (or `timeout` passes), consuming the signal.
fn wait_call(call: &OwnedFd, timeout: Duration) -> Result<(), String> {
    let ts = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let mut fds = [PollFd::new(call, PollFlags::IN)];
    match poll(&mut fds, Some(&ts)) {
        Ok(_) | Err(Errno::INTR) => {}
        Err(e) => return Err(format!("waiting for the call eventfd: {e}")),
    }
    let mut buf = [0u8; 8];
    match rustix::io::read(call, &mut buf) {
        Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(format!("reading the call eventfd: {e}")),
    }
}
