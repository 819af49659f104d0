//! The device side of a packed virtqueue (virtio 1.2 §2.8).
//!
//! The device reads available descriptors from the descriptor ring and writes used descriptors
//! back into it, reads the driver event suppression structure and writes the device one. What
//! the driver writes is validated as described in [`crate::device`]; a rule violation latches
//! the queue broken.

use core::cell::Cell;

use vireo_memory::{GuestMemory, SharedArea, SharedSlice};
use vireo_spec::packed::{desc, event, MAX_QUEUE_SIZE};

const _: () = assert!(desc::ID == desc::LEN + 4 && desc::FLAGS == desc::LEN + 6);
use vireo_spec::Features;

use super::in_order::{Batch, Capacities, Run};
use super::inflight::InFlight;
use super::packed_chain::PackedChain;
use super::packed_held::{HeldDesc, HeldStore};
use super::packed_pos::RingPos;
use super::segment::WalkLinks;
use super::{AvailChain, ChainReader, DeviceQueueError, DeviceQueueState, RingArea, Violation};
use crate::{ordering, QueueConfig};

/// The device side of a packed virtqueue.
///
/// Not `Sync` (the broken latch is a `Cell`, so that segment readers borrowing `&self` can set
/// it); `Send`, so it can move to a worker thread.
#[derive(Debug)]
pub struct PackedDeviceQueue {
    pub(super) size: u16,
    /// Negotiated VIRTIO_F_EVENT_IDX (virtio 1.2 §2.8.10: RING_EVENT_FLAGS_DESC).
    pub(super) event_idx: bool,
    /// Negotiated VIRTIO_F_INDIRECT_DESC (virtio 1.2 §2.8.7).
    indirect: bool,
    /// Negotiated VIRTIO_F_IN_ORDER (virtio 1.2 §2.8.8).
    in_order: bool,
    pub(super) ring: SharedArea,
    /// Driver event suppression structure (read by the device).
    pub(super) driver_event: SharedArea,
    /// Device event suppression structure (written by the device).
    pub(super) device_event: SharedArea,
    /// The next descriptor to read, with the driver's wrap counter expected there.
    pub(super) next_avail: RingPos,
    /// Where the next used descriptor goes, with the device's wrap counter.
    next_used: RingPos,
    /// The used position as last published.
    pub(super) published_used: RingPos,
    /// The first used descriptor written since the last publish: its offset and flags, stored
    /// last (PUBLISH) so the whole batch becomes visible at once.
    first_unpublished: Option<(u16, u16)>,
    /// Ring descriptors published since the last notification decision (at most `size`
    /// count); `None` before the first decision.
    pub(super) since_decision: Option<u32>,
    /// Ring descriptors popped and not yet covered by a written used descriptor.
    outstanding: u16,
    /// Buffer ids popped and not yet used.
    in_flight: InFlight,
    /// The held chains' descriptors.
    held: HeldStore,
    /// In-order mode: the position of the chain that must be used next.
    expect: RingPos,
    /// In-order mode: the run of used buffers not yet written.
    batch: Batch,
    /// In-order mode: each chain's writable capacity, once walked.
    capacities: Capacities,
    /// The violation that broke the queue (see the policy in [`crate::device`]).
    pub(super) broken: Cell<Option<Violation>>,
}

/// Translates one ring area after checking its alignment.
fn ring_area(
    mem: &impl GuestMemory,
    area: RingArea,
    addr: u64,
    align: u64,
    len: usize,
) -> Result<SharedArea, DeviceQueueError> {
    if addr % align != 0 {
        return Err(DeviceQueueError::Misaligned { area, addr, align });
    }
    mem.area(addr, len as u64)
        .map_err(|source| DeviceQueueError::Memory { area, source })
}

pub(super) fn mem_err(area: RingArea) -> impl Fn(vireo_memory::MemoryError) -> DeviceQueueError {
    move |source| DeviceQueueError::Memory { area, source }
}

impl PackedDeviceQueue {
    /// Attaches to the packed ring `config` describes, resuming at `state`
    /// (`DeviceQueueState::default()` for a fresh queue).
    ///
    /// Checks the size (1 to 32768, any value, virtio 1.2 §2.8.10.1), each area's alignment and
    /// that each area lies in guest memory. Reads EVENT_IDX, INDIRECT_DESC and IN_ORDER from
    /// `config.features`.
    pub fn new(
        mem: &impl GuestMemory,
        config: &QueueConfig,
        state: DeviceQueueState,
    ) -> Result<Self, DeviceQueueError> {
        let size = config.size;
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(DeviceQueueError::InvalidQueueSize { size });
        }
        let a = &config.addrs;
        let ring = ring_area(
            mem,
            RingArea::DescriptorTable,
            a.desc_table,
            desc::ALIGN,
            desc::SIZE * usize::from(size),
        )?;
        let driver_event = ring_area(
            mem,
            RingArea::DriverArea,
            a.driver_area,
            event::ALIGN,
            event::SIZE,
        )?;
        let device_event = ring_area(
            mem,
            RingArea::DeviceArea,
            a.device_area,
            event::ALIGN,
            event::SIZE,
        )?;
        let (avail, used) = RingPos::from_state(&state, size)?;
        Ok(PackedDeviceQueue {
            size,
            event_idx: config.features.contains(Features::EVENT_IDX),
            indirect: config.features.contains(Features::INDIRECT_DESC),
            in_order: config.features.contains(Features::IN_ORDER),
            ring,
            driver_event,
            device_event,
            next_avail: avail,
            next_used: used,
            published_used: used,
            first_unpublished: None,
            since_decision: None,
            outstanding: 0,
            in_flight: InFlight::new(size),
            held: HeldStore::new(size),
            expect: avail,
            batch: Batch::default(),
            capacities: Capacities::new(size),
            broken: Cell::new(None),
        })
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The positions to resume from. The used position includes descriptors added but not
    /// yet published: publish before saving the state.
    pub fn state(&self) -> DeviceQueueState {
        RingPos::to_state(self.next_avail, self.next_used)
    }

    /// True once the driver broke a rule.
    pub fn is_broken(&self) -> bool {
        self.broken.get().is_some()
    }

    /// The rule the driver broke, once the queue is broken.
    pub fn broken_by(&self) -> Option<Violation> {
        self.broken.get()
    }

    pub(super) fn check_broken(&self) -> Result<(), DeviceQueueError> {
        match self.broken.get() {
            Some(v) => Err(DeviceQueueError::Broken(v)),
            None => Ok(()),
        }
    }

    /// Latches the queue broken and returns the error for this first sighting.
    pub(super) fn violation(&self, v: Violation) -> DeviceQueueError {
        self.broken.set(Some(v));
        DeviceQueueError::Violation(v)
    }

    /// Brings the queue back to its initial state (virtio 1.2 §2.6.1 "Virtqueue Reset", with
    /// VIRTIO_F_RING_RESET): offsets to 0 and both wrap counters to 1 (§2.8.1), nothing in
    /// flight, nothing pending, kicks enabled and the broken latch cleared. Other queues are
    /// not touched.
    ///
    /// Nothing is written to guest memory: after a reset the driver owns (and re-initialises,
    /// or frees) the ring. Buffers the device held are forgotten, not used: the driver reclaims
    /// them itself (its side of the reset, §2.6.1.1), so the device must drop its references
    /// to them and write nothing more into them.
    pub fn reset(&mut self) {
        let start = RingPos::START;
        self.next_avail = start;
        self.next_used = start;
        self.published_used = start;
        self.first_unpublished = None;
        self.since_decision = None;
        self.outstanding = 0;
        self.in_flight.clear();
        self.held.clear();
        self.expect = start;
        self.batch = Batch::default();
        self.capacities.clear();
        self.broken.set(None);
    }

    fn desc_slice(&self) -> SharedSlice<'_> {
        self.ring.slice()
    }

    /// The flags at `pos` if the descriptor there is available for `pos`'s wrap counter;
    /// `None` if not (yet). A descriptor marked used for that same wrap counter is a
    /// violation: the device has not written it in this lap (virtio 1.2 §2.8.1).
    pub(super) fn head_flags(&self, pos: RingPos) -> Result<Option<u16>, DeviceQueueError> {
        let flags = self
            .desc_slice()
            .load_u16(pos.byte_offset() + desc::FLAGS, ordering::CONSUME)
            .map_err(mem_err(RingArea::DescriptorTable))?;
        if pos.wrap.is_avail(flags) {
            Ok(Some(flags))
        } else if pos.wrap.is_used(flags) {
            Err(self.violation(Violation::WrapCounterMismatch {
                offset: pos.off,
                flags,
            }))
        } else {
            Ok(None)
        }
    }

    /// Takes the next available buffer (virtio 1.2 §2.8.21), or `Ok(None)` when the descriptor
    /// at the next position is not available.
    ///
    /// Reads the head's flags with CONSUME, then follows VIRTQ_DESC_F_NEXT (§2.8.6) over at
    /// most `size` descriptors, each of which must be available in its lap; copies the list
    /// (the device's used descriptors may overwrite its ring slots later); takes the buffer id
    /// from the last descriptor (§2.8.6), which must be below the size and not held already.
    /// An indirect descriptor needs INDIRECT_DESC, no NEXT, and a list of its own (§2.8.19).
    pub fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
        self.check_broken()?;
        let head = self.next_avail;
        let Some(mut flags) = self.head_flags(head)? else {
            return Ok(None);
        };
        let mut pos = head;
        let mut prev = None;
        let mut first = None;
        let mut n: u16 = 0;
        let ring = self.ring.slice();
        let err = mem_err(RingArea::DescriptorTable);
        let id = loop {
            n += 1;
            if n > self.size {
                return Err(self.violation(Violation::ChainTooLong {
                    limit: u32::from(self.size),
                }));
            }
            if u32::from(self.outstanding) + u32::from(n) > u32::from(self.size) {
                return Err(self.violation(Violation::RingOverfilled {
                    held: self.outstanding,
                    size: self.size,
                }));
            }
            if flags & desc::F_INDIRECT != 0 {
                let v = if !self.indirect {
                    Some(Violation::IndirectNotNegotiated)
                } else if flags & desc::F_NEXT != 0 {
                    Some(Violation::IndirectWithNext)
                } else if n > 1 {
                    Some(Violation::IndirectInChain)
                } else {
                    None
                };
                if let Some(v) = v {
                    return Err(self.violation(v));
                }
            }
            // Field loads: ordered after the CONSUME load of the head's flags (the driver
            // writes the whole list before it, §2.8.21.1).
            // `len` and `id` are read with one 8-byte load of the descriptor's second half
            // (little-endian `len`, `id`, `flags`, §2.8.13; the flags were read above).
            let off = pos.byte_offset();
            let rest = ring
                .load_u64(off + desc::LEN, ordering::FIELD)
                .map_err(&err)?;
            let d = HeldDesc::new(
                ring.load_u64(off + desc::ADDR, ordering::FIELD)
                    .map_err(&err)?,
                rest as u32,
                flags,
            );
            let Some(at) = self.held.push(prev, d) else {
                // Unreachable: at most `size` descriptors are held (checked above).
                return Err(self.violation(Violation::RingOverfilled {
                    held: self.outstanding,
                    size: self.size,
                }));
            };
            first.get_or_insert(at);
            prev = Some(at);
            if flags & desc::F_NEXT == 0 {
                break (rest >> 32) as u16;
            }
            pos = pos.advance(1, self.size);
            flags = ring
                .load_u16(pos.byte_offset() + desc::FLAGS, ordering::FIELD)
                .map_err(&err)?;
            if !pos.wrap.is_avail(flags) {
                return Err(self.violation(Violation::ChainDescriptorNotAvailable {
                    offset: pos.off,
                    flags,
                }));
            }
        };
        if id >= self.size {
            return Err(self.violation(Violation::BufferIdOutOfRange {
                id,
                size: self.size,
            }));
        }
        if !self.in_flight.insert(id) {
            return Err(self.violation(Violation::BufferIdInFlight { id }));
        }
        if let (Some(first), Some(last)) = (first, prev) {
            self.held.set_chain(id, first, last, n);
        }
        self.capacities.forget(id);
        self.outstanding += n;
        self.next_avail = head.advance(n, self.size);
        Ok(Some(AvailChain {
            id,
            pos: head.encode(),
        }))
    }

    /// Walks the segments of a popped buffer (virtio 1.2 §2.8.6, §2.8.7), lazily, as validated
    /// segments; each buffer is translated through `mem`.
    ///
    /// The ring descriptors are the copies made at pop; an indirect table is read from guest
    /// memory, at most its `len / 16` entries (a non-zero multiple of 16 bytes up to 32768
    /// entries, not nested). Readable segments come before writable ones (§2.8.17), 2^32 bytes
    /// in all. A violation latches the queue broken. A buffer not held by the device yields one
    /// error ([`DeviceQueueError::ChainNotInFlight`]).
    #[inline]
    pub fn chain<'q, 'm, M: GuestMemory>(
        &'q self,
        chain: &AvailChain,
        mem: &'m M,
    ) -> ChainReader<'q, 'm, M> {
        let pending = if let Err(e) = self.check_broken() {
            Some(e)
        } else if chain.id >= self.size {
            Some(DeviceQueueError::ChainIdOutOfRange {
                head: chain.id,
                size: self.size,
            })
        } else if !self.in_flight.contains(chain.id) {
            Some(DeviceQueueError::ChainNotInFlight { head: chain.id })
        } else {
            None
        };
        ChainReader::from(PackedChain::new(
            mem,
            &self.held,
            self.held.first(chain.id),
            WalkLinks {
                broken: &self.broken,
                pending,
                // Only IN_ORDER batching needs the capacity (see `in_order.rs`).
                capacity: if self.in_order {
                    self.capacities.cell(chain.id)
                } else {
                    None
                },
            },
        ))
    }

    /// Writes the used descriptor for `chain` (virtio 1.2 §2.8.22: id, `len` = `written`,
    /// AVAIL and USED equal to the device's wrap counter, WRITE if anything was written, §2.8.3)
    /// without making it visible: [`Self::publish_used`] does that, once per batch. The used
    /// position then skips the chain's descriptors (§2.8.6).
    ///
    /// With IN_ORDER, buffers must be used in the order they were popped
    /// ([`DeviceQueueError::OutOfOrderUse`] otherwise), and one used descriptor is written per
    /// run of completely used buffers (§2.8.8; see `in_order.rs`).
    pub fn add_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        self.check_broken()?;
        self.in_flight.check_handle(chain.id, self.size)?;
        let slots = self.held.slots(chain.id);
        if !self.in_order {
            self.release(chain.id);
            return self.write_used(Run::single(chain.id, written).with_slots(slots));
        }
        if chain.pos != self.expect.encode() {
            return Err(DeviceQueueError::OutOfOrderUse {
                expected: self.expect.encode(),
                got: chain.pos,
            });
        }
        self.expect = self.expect.advance(slots, self.size);
        let complete = self.capacities.is_complete(chain.id, written);
        self.release(chain.id);
        match self.batch.push(chain.id, written, slots, complete) {
            Some(run) => self.write_used(run),
            None => Ok(()),
        }
    }

    fn release(&mut self, id: u16) {
        self.in_flight.remove(id);
        self.held.release(id);
    }

    /// Writes one used descriptor for `run` at the used position and skips the run's
    /// descriptors. The flags of the first one since the last publish are held back.
    fn write_used(&mut self, run: Run) -> Result<(), DeviceQueueError> {
        let pos = self.next_used;
        let off = pos.byte_offset();
        let ring = self.ring.slice();
        let err = mem_err(RingArea::DescriptorTable);
        ring.store_u16(off + desc::ID, run.id, ordering::FIELD)
            .map_err(&err)?;
        ring.store_u32(off + desc::LEN, run.len, ordering::FIELD)
            .map_err(&err)?;
        let mut flags = pos.wrap.used_flags();
        if run.len > 0 {
            flags |= desc::F_WRITE;
        }
        if self.first_unpublished.is_none() {
            self.first_unpublished = Some((pos.off, flags));
        } else {
            ring.store_u16(off + desc::FLAGS, flags, ordering::FIELD)
                .map_err(&err)?;
        }
        self.next_used = pos.advance(run.slots, self.size);
        self.outstanding = self.outstanding.saturating_sub(run.slots);
        Ok(())
    }

    /// Makes every used descriptor written since the last publish visible to the driver, by
    /// storing the first one's flags last, with PUBLISH (virtio 1.2 §2.8.9, §2.8.22: the driver
    /// polls only the next descriptor, so it sees the batch whole or not at all). Does nothing
    /// when nothing was added.
    pub fn publish_used(&mut self) -> Result<(), DeviceQueueError> {
        self.check_broken()?;
        if let Some(run) = self.batch.take() {
            self.write_used(run)?;
        }
        let Some((off, flags)) = self.first_unpublished.take() else {
            return Ok(());
        };
        self.ring
            .slice()
            .store_u16(
                usize::from(off) * desc::SIZE + desc::FLAGS,
                flags,
                ordering::PUBLISH,
            )
            .map_err(mem_err(RingArea::DescriptorTable))?;
        let moved = self.next_used.distance_from(self.published_used, self.size);
        self.since_decision = self.since_decision.map(|n| n.saturating_add(moved));
        self.published_used = self.next_used;
        Ok(())
    }

    /// [`Self::add_used`] then [`Self::publish_used`].
    pub fn push_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        self.add_used(chain, written)?;
        self.publish_used()
    }
}
