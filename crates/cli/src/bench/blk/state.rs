//! One queue's bookkeeping: which blocks it owns and which are busy, the generation last
//! written to each, what each slot carries, and the checks of every completed request.

use std::time::Instant;

use vireo_blk::driver::{BufferSegment, Completion};
use vireo_spec::blk::BlkStatus;
use vireo_vhost_user::frontend::GuestBuffer;

use super::pattern;
use super::worker::{Plan, QueueReport, Verify};

/// A generation no write produces: the block's content is unknown (a write to it failed).
pub(super) const UNKNOWN: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Prefill,
    Timed,
    ReadBack,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) block: u64,
    pub(super) op: Op,
    pub(super) generation: u32,
    pub(super) start: Instant,
}

/// The queue's state apart from the queue itself (so completions can update it while the
/// queue is borrowed).
pub(super) struct State<'b> {
    pub(super) index: u16,
    pub(super) plan: Plan,
    pub(super) bufs: &'b [GuestBuffer],
    /// Each slot's scatter list over its buffer.
    pub(super) segs: Vec<Vec<BufferSegment>>,
    pub(super) slots: Vec<Option<InFlight>>,
    pub(super) free: Vec<u16>,
    /// Per local block: generation last written (0: never written this run).
    pub(super) generations: Vec<u32>,
    pub(super) busy: Vec<bool>,
    pub(super) blocks: u64,
    pub(super) cursor: u64,
    pub(super) rng: u64,
    pub(super) phase: Phase,
    pub(super) deadline: Instant,
    pub(super) scratch: Vec<u8>,
    pub(super) report: QueueReport,
}

impl<'b> State<'b> {
    pub(super) fn new(index: u16, bufs: &'b [GuestBuffer], plan: Plan) -> Result<Self, String> {
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

    pub(super) fn offset(&self, block: u64) -> u64 {
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
    pub(super) fn next(&mut self, now: Instant) -> Option<(Op, u64)> {
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

    pub(super) fn complete(&mut self, c: Completion) {
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
    pub(super) fn prepare(&mut self, slot: u16, op: Op, block: u64) -> Result<u32, String> {
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
