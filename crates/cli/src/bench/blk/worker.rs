//! One request queue's I/O loop: keeps `qd` requests in flight on blocks this queue owns
//! (block `b` belongs to queue `b % queues`, and a block is never in two requests at once, so
//! every read has exactly one expected content), measures each request's latency, and checks
//! every read when verifying.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use vireo_blk::driver::{BlkDriverError, BlkQueue, BufferSegment, Completion, Notify};
use vireo_queue::driver::DriverQueue;
use vireo_spec::blk::BlkStatus;
use vireo_vhost_user::frontend::GuestBuffer;

use super::hist::Histogram;
use super::pattern;

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
    fn writes(self) -> bool {
        matches!(self, Workload::Write | Workload::RandWrite)
    }

    fn random(self) -> bool {
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

/// A generation no write produces: the block's content is unknown (a write to it failed).
const UNKNOWN: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prefill,
    Timed,
    ReadBack,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    block: u64,
    op: Op,
    generation: u32,
    start: Instant,
}

/// The queue's state apart from the queue itself (so completions can update it while the
/// queue is borrowed).
struct State<'b> {
    index: u16,
    plan: Plan,
    bufs: &'b [GuestBuffer],
    /// Each slot's scatter list over its buffer.
    segs: Vec<Vec<BufferSegment>>,
    slots: Vec<Option<InFlight>>,
    free: Vec<u16>,
    /// Per local block: generation last written (0: never written this run).
    generations: Vec<u32>,
    busy: Vec<bool>,
    blocks: u64,
    cursor: u64,
    rng: u64,
    phase: Phase,
    deadline: Instant,
    scratch: Vec<u8>,
    report: QueueReport,
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

impl<'b> State<'b> {
    fn new(index: u16, bufs: &'b [GuestBuffer], plan: Plan) -> Result<Self, String> {
        let q = u64::from(plan.queues.max(1));
        let blocks = (plan.region_blocks + q - 1 - u64::from(index)) / q;
        let blocks_len = usize::try_from(blocks).map_err(|_| "region too large")?;
        let mut segs = Vec::with_capacity(bufs.len());
        for b in bufs {
            let mut list = Vec::new();
            let mut at = 0;
            while at < b.len() {
                let len = plan.seg_size.min(b.len() - at);
                list.push(b.segment(at, len).map_err(|e| e.to_string())?);
                at += len;
            }
            segs.push(list);
        }
        let mut st = State {
            index,
            plan,
            bufs,
            segs,
            slots: vec![None; bufs.len()],
            free: (0..bufs.len() as u16).rev().collect(),
            generations: vec![0; blocks_len],
            busy: vec![false; blocks_len],
            blocks,
            cursor: 0,
            rng: plan.seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            phase: Phase::Timed,
            deadline: Instant::now(),
            scratch: vec![0; plan.bs],
            report: QueueReport::default(),
        };
        if blocks == 0 {
            return Err(format!("queue {index} has no blocks in the region"));
        }
        if plan.verify != Verify::Pattern {
            // Writes carry a fixed pattern, set once.
            for (i, b) in bufs.iter().enumerate() {
                pattern::fill(&mut st.scratch, i as u64, 0);
                b.slice().write(0, &st.scratch).map_err(|e| e.to_string())?;
            }
        }
        Ok(st)
    }

    fn offset(&self, block: u64) -> u64 {
        (block * u64::from(self.plan.queues) + u64::from(self.index)) * self.plan.bs as u64
    }

    fn is_busy(&self, block: u64) -> bool {
        self.busy.get(block as usize).copied().unwrap_or(true)
    }

    fn generation(&self, block: u64) -> u32 {
        self.generations
            .get(block as usize)
            .copied()
            .unwrap_or(UNKNOWN)
    }

    fn set_generation(&mut self, block: u64, g: u32) {
        if let Some(x) = self.generations.get_mut(block as usize) {
            *x = g;
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next request to submit, `None` when the phase has nothing more to submit now.
    fn next(&mut self, now: Instant) -> Option<(Op, u64)> {
        match self.phase {
            Phase::Prefill => {
                let b = self.cursor;
                (b < self.blocks).then(|| {
                    self.cursor += 1;
                    (Op::Write, b)
                })
            }
            Phase::ReadBack => {
                while self.cursor < self.blocks {
                    let b = self.cursor;
                    self.cursor += 1;
                    let g = self.generation(b);
                    if g != 0 && g != UNKNOWN {
                        return Some((Op::Read, b));
                    }
                }
                None
            }
            Phase::Timed => {
                if now >= self.deadline {
                    return None;
                }
                let start = if self.plan.workload.random() {
                    self.next_random() % self.blocks
                } else {
                    self.cursor
                };
                // A free block exists: fewer requests are in flight than there are blocks.
                let mut b = start;
                for _ in 0..self.blocks {
                    if !self.is_busy(b) {
                        break;
                    }
                    b = (b + 1) % self.blocks;
                }
                if self.is_busy(b) {
                    return None;
                }
                self.cursor = (b + 1) % self.blocks;
                let op = if self.plan.workload.writes() {
                    Op::Write
                } else {
                    Op::Read
                };
                Some((op, b))
            }
        }
    }

    fn note_error(&mut self, msg: impl FnOnce() -> String) {
        if self.report.first_error.is_none() {
            self.report.first_error = Some(msg());
        }
    }

    fn complete(&mut self, c: Completion) {
        let Some(io) = self
            .slots
            .get_mut(usize::from(c.slot))
            .and_then(Option::take)
        else {
            self.note_error(|| format!("completion for idle slot {}", c.slot));
            self.report.errors += 1;
            return;
        };
        self.free.push(c.slot);
        if let Some(b) = self.busy.get_mut(io.block as usize) {
            *b = false;
        }
        let offset = self.offset(io.block);
        if self.phase == Phase::Timed {
            let ns = u64::try_from(io.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.report.hist.record(ns);
        }
        if c.status != BlkStatus::Ok {
            self.report.errors += 1;
            if io.op == Op::Write {
                self.set_generation(io.block, UNKNOWN);
            }
            self.note_error(|| format!("{:?} at offset {offset:#x} failed: {:?}", io.op, c.status));
            return;
        }
        if self.phase == Phase::Timed {
            self.report.ios += 1;
            self.report.bytes += self.plan.bs as u64;
        }
        match io.op {
            Op::Write => {
                let g = match self.plan.verify {
                    Verify::Pattern => io.generation,
                    _ => 1,
                };
                self.set_generation(io.block, g);
            }
            Op::Read => self.check_read(c.slot, io, offset),
        }
    }

    fn check_read(&mut self, slot: u16, io: InFlight, offset: u64) {
        let expected = match self.plan.verify {
            Verify::Off => return,
            Verify::Zeroes => None,
            Verify::Pattern if io.generation == 0 || io.generation == UNKNOWN => return,
            Verify::Pattern => Some(io.generation),
        };
        let Some(buf) = self.bufs.get(usize::from(slot)) else {
            return;
        };
        if let Err(e) = buf.slice().read(0, &mut self.scratch) {
            self.note_error(|| e.to_string());
            self.report.mismatches += 1;
            return;
        }
        self.report.checked += 1;
        let result = match expected {
            None => pattern::check_zeroes(&self.scratch, offset),
            Some(g) => pattern::check(&self.scratch, offset, g),
        };
        if let Err(m) = result {
            self.report.mismatches += 1;
            self.note_error(|| m.to_string());
        }
    }

    /// Prepares slot `slot`'s buffer for `op` on `block`; returns the generation a write
    /// carries.
    fn prepare(&mut self, slot: u16, op: Op, block: u64) -> Result<u32, String> {
        let buf = self
            .bufs
            .get(usize::from(slot))
            .ok_or("no buffer for slot")?;
        match (op, self.plan.verify) {
            (Op::Write, Verify::Pattern) => {
                let g = match self.generation(block) {
                    UNKNOWN => 1,
                    g if g >= UNKNOWN - 1 => 1,
                    g => g + 1,
                };
                let offset = self.offset(block);
                pattern::fill(&mut self.scratch, offset, g);
                buf.slice()
                    .write(0, &self.scratch)
                    .map_err(|e| e.to_string())?;
                Ok(g)
            }
            (Op::Read, Verify::Off) | (Op::Write, _) => Ok(0),
            (Op::Read, _) => {
                // Poison the buffer, so a device that reports success without writing the data
                // is caught.
                buf.slice()
                    .fill(0, self.plan.bs, 0xa5)
                    .map_err(|e| e.to_string())?;
                Ok(self.generation(block))
            }
        }
    }
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
