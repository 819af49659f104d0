//! The device side of a split virtqueue (virtio 1.2 §2.7).
//!
//! The device reads the descriptor table and the available ring, and writes the used ring.
//! What the driver writes is validated as described in [`crate::device`]; a rule violation
//! latches the queue broken.

use core::cell::Cell;

use vireo_memory::{GuestMemory, SharedArea};
use vireo_spec::notification::NotificationData;
use vireo_spec::split::{avail, desc, need_event, used, MAX_QUEUE_SIZE};
use vireo_spec::Features;

use super::in_order::{Batch, Capacities, Run};
use super::inflight::InFlight;
use super::resume::Resume;
use super::segment::WalkLinks;
use super::split_chain::SplitChain;
use super::{AvailChain, ChainReader, DeviceQueueError, DeviceQueueState, RingArea, Violation};
use crate::{ordering, QueueConfig};

/// The device side of a split virtqueue.
///
/// Not `Sync` (the broken latch is a `Cell`, so that segment readers borrowing `&self` can set
/// it); `Send`, so it can move to a worker thread.
#[derive(Debug)]
pub struct SplitDeviceQueue {
    size: u16,
    /// Negotiated VIRTIO_F_EVENT_IDX (virtio 1.2 §2.7.7, §2.7.10).
    event_idx: bool,
    /// Negotiated VIRTIO_F_INDIRECT_DESC (virtio 1.2 §2.7.5.3).
    indirect: bool,
    /// Negotiated VIRTIO_F_IN_ORDER (virtio 1.2 §2.7.9): used order is available order, and
    /// used elements are written back one per batch.
    in_order: bool,
    desc: SharedArea,
    avail: SharedArea,
    used: SharedArea,
    /// Next available-ring entry to consume (free-running).
    next_avail: u16,
    /// The last `avail.idx` read: entries up to it are published and need no new read.
    shadow_avail: u16,
    /// Next used-ring entry to write (free-running).
    next_used: u16,
    /// The `used.idx` last stored.
    published_used: u16,
    /// The `used.idx` at the last notification decision; `None` until the first one (then the
    /// driver's event index may refer to an earlier life of the queue, so notify).
    signalled_used: Option<u16>,
    /// Chain ids popped and not yet used.
    in_flight: InFlight,
    /// In-order mode: the avail position of the chain that must be used next.
    expect: u16,
    /// In-order mode: the run of used buffers not yet written.
    batch: Batch,
    /// In-order mode: each chain's writable capacity, once walked.
    capacities: Capacities,
    /// The violation that broke the queue (see the policy in [`crate::device`]).
    broken: Cell<Option<Violation>>,
    /// Inflight journal and chains to re-deliver (see `resume.rs`).
    resume: Resume,
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

impl SplitDeviceQueue {
    /// Attaches to the split rings `config` describes, resuming at `state`
    /// (`DeviceQueueState::default()` for a fresh queue).
    ///
    /// Checks the size (a power of two up to 32768, virtio 1.2 §2.7), each area's alignment
    /// (§2.7 "Virtqueue Part Alignment") and that each area, with its event field, lies in
    /// guest memory. Reads EVENT_IDX and INDIRECT_DESC from `config.features`.
    pub fn new(
        mem: &impl GuestMemory,
        config: &QueueConfig,
        state: DeviceQueueState,
    ) -> Result<Self, DeviceQueueError> {
        let size = config.size;
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(DeviceQueueError::InvalidQueueSize { size });
        }
        let a = &config.addrs;
        let table_len = desc::SIZE * usize::from(size);
        let desc = ring_area(
            mem,
            RingArea::DescriptorTable,
            a.desc_table,
            desc::ALIGN,
            table_len,
        )?;
        let avail = ring_area(
            mem,
            RingArea::DriverArea,
            a.driver_area,
            avail::ALIGN,
            avail::size(size),
        )?;
        let used = ring_area(
            mem,
            RingArea::DeviceArea,
            a.device_area,
            used::ALIGN,
            used::size(size),
        )?;
        Ok(SplitDeviceQueue {
            size,
            event_idx: config.features.contains(Features::EVENT_IDX),
            indirect: config.features.contains(Features::INDIRECT_DESC),
            in_order: config.features.contains(Features::IN_ORDER),
            desc,
            avail,
            used,
            next_avail: state.next_avail,
            shadow_avail: state.next_avail,
            next_used: state.next_used,
            published_used: state.next_used,
            signalled_used: None,
            in_flight: InFlight::new(size),
            expect: state.next_avail,
            batch: Batch::default(),
            capacities: Capacities::new(size),
            broken: Cell::new(None),
            resume: Resume::default(),
        })
    }

    /// Brings the queue back to its initial state (virtio 1.2 §2.6.1 "Virtqueue Reset", with
    /// VIRTIO_F_RING_RESET): indices to 0, nothing in flight, nothing pending, kicks enabled
    /// and the broken latch cleared. Other queues are not touched.
    ///
    /// Nothing is written to guest memory: after a reset the driver owns (and re-initialises,
    /// or frees) the rings. Buffers the device held are forgotten, not used: the driver
    /// reclaims them itself (its side of the reset, §2.6.1.1), so the device must drop its
    /// references to them and write nothing more into them.
    pub fn reset(&mut self) {
        self.next_avail = 0;
        self.shadow_avail = 0;
        self.next_used = 0;
        self.published_used = 0;
        self.signalled_used = None;
        self.in_flight.clear();
        self.expect = 0;
        self.batch = Batch::default();
        self.capacities.clear();
        self.broken.set(None);
        self.resume.reset();
    }

    /// Checks an available-buffer notification's data (VIRTIO_F_NOTIFICATION_DATA, virtio 1.2
    /// §2.9): it must name `vqn` (this queue's index, or its notification config data) and an
    /// available index at most `size` ahead of the next entry the device consumes. Returns how
    /// many entries it announces beyond that (0 for a notification overtaken by the device,
    /// which is no error: notifications may arrive late).
    ///
    /// Only a hint: [`Self::pop`] still reads `avail.idx` (the CONSUME load that makes the
    /// entries visible) and validates everything.
    pub fn apply_notification(
        &mut self,
        vqn: u16,
        data: NotificationData,
    ) -> Result<u16, DeviceQueueError> {
        self.check_broken()?;
        if data.vqn != vqn {
            return Err(DeviceQueueError::NotificationForOtherQueue {
                vqn: data.vqn,
                expected: vqn,
            });
        }
        let next = data.next_idx();
        let ahead = next.wrapping_sub(self.next_avail);
        if ahead <= self.size {
            Ok(ahead)
        } else if self.next_avail.wrapping_sub(next) <= self.size {
            Ok(0)
        } else {
            Err(self.violation(Violation::NotificationOutOfRange {
                next,
                device_next: self.next_avail,
                size: self.size,
            }))
        }
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The indices to resume from. `next_used` includes elements added but not yet published:
    /// publish before saving the state.
    pub fn state(&self) -> DeviceQueueState {
        DeviceQueueState {
            next_avail: self.next_avail,
            next_used: self.next_used,
            ..DeviceQueueState::default()
        }
    }

    /// True once the driver broke a rule.
    pub fn is_broken(&self) -> bool {
        self.broken.get().is_some()
    }

    /// The rule the driver broke, once the queue is broken.
    pub fn broken_by(&self) -> Option<Violation> {
        self.broken.get()
    }

    fn check_broken(&self) -> Result<(), DeviceQueueError> {
        match self.broken.get() {
            Some(v) => Err(DeviceQueueError::Broken(v)),
            None => Ok(()),
        }
    }

    /// Latches the queue broken and returns the error for this first sighting.
    fn violation(&self, v: Violation) -> DeviceQueueError {
        self.broken.set(Some(v));
        DeviceQueueError::Violation(v)
    }

    #[inline]
    fn mask(&self, idx: u16) -> usize {
        usize::from(idx & (self.size - 1))
    }

    /// Reads `avail.idx` (CONSUME: the entries and descriptors it publishes are visible after
    /// it) and checks it is at most `size` ahead of the next entry to consume (virtio 1.2
    /// §2.7.6: the ring holds `size` entries).
    fn read_avail_idx(&mut self) -> Result<u16, DeviceQueueError> {
        let idx = self
            .avail
            .slice()
            .load_u16(avail::IDX, ordering::CONSUME)
            .map_err(|source| DeviceQueueError::Memory {
                area: RingArea::DriverArea,
                source,
            })?;
        if idx.wrapping_sub(self.next_avail) > self.size {
            return Err(self.violation(Violation::AvailIndexTooFarAhead {
                avail_idx: idx,
                next_avail: self.next_avail,
                size: self.size,
            }));
        }
        self.shadow_avail = idx;
        Ok(idx)
    }

    /// Takes the next available chain (virtio 1.2 §2.7.6), or `Ok(None)` when the ring is empty.
    ///
    /// `avail.idx` is read only when the cached copy says the ring is empty. The head must be
    /// below the queue size and not already held by the device.
    pub fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
        if self.resume.is_active() {
            return self.pop_journaled();
        }
        self.pop_untracked()
    }

    /// [`Self::pop`] with re-delivery first and the journal told (see `resume.rs`): out of
    /// line, so that a queue without them pays one branch.
    #[inline(never)]
    fn pop_journaled(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
        self.check_broken()?;
        if let Some(chain) = self.resume.next() {
            return Ok(Some(chain));
        }
        let chain = self.pop_untracked()?;
        if let Some(c) = &chain {
            self.resume.popped(c.id);
        }
        Ok(chain)
    }

    #[inline(always)]
    fn pop_untracked(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
        self.check_broken()?;
        if self.next_avail == self.shadow_avail && self.read_avail_idx()? == self.next_avail {
            return Ok(None);
        }
        let off = avail::RING + 2 * self.mask(self.next_avail);
        let head = self
            .avail
            .slice()
            .load_u16(off, ordering::FIELD)
            .map_err(|source| DeviceQueueError::Memory {
                area: RingArea::DriverArea,
                source,
            })?;
        if head >= self.size {
            return Err(self.violation(Violation::HeadOutOfRange {
                head,
                size: self.size,
            }));
        }
        if !self.in_flight.insert(head) {
            return Err(self.violation(Violation::HeadInFlight { head }));
        }
        self.capacities.forget(head);
        let chain = AvailChain {
            id: head,
            pos: self.next_avail,
        };
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    /// Walks the descriptors of a popped chain (virtio 1.2 §2.7.5), lazily, as validated
    /// segments; each buffer is translated through `mem`.
    ///
    /// Bounds: at most `size` descriptors of the table (an indirect descriptor included) and at
    /// most the indirect table's entries; an indirect table only with INDIRECT_DESC, of a
    /// non-zero multiple of 16 bytes up to 32768 entries, not with NEXT, not nested
    /// (§2.7.5.3.1); readable segments before writable ones (§2.7.4.2); 2^32 bytes in all
    /// (§2.7.5.2). A violation latches the queue broken. A chain not held by the device yields
    /// one error ([`DeviceQueueError::ChainNotInFlight`]).
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
        ChainReader::from(SplitChain::new(
            mem,
            self.desc.slice(),
            self.size,
            chain.id,
            self.indirect,
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

    /// Writes the used element `{id, len: written}` for `chain` into the used ring (virtio 1.2
    /// §2.7.8) without making it visible: [`Self::publish_used`] does that, once per batch.
    ///
    /// `written` is the number of bytes the device wrote into the chain's writable buffers
    /// (§2.7.8.2).
    ///
    /// With IN_ORDER, chains must be used in the order they were popped
    /// ([`DeviceQueueError::OutOfOrderUse`] otherwise), and one used element is written per run
    /// of completely used chains, `used.idx` moving by the run's length (§2.7.9; see
    /// `in_order.rs`).
    pub fn add_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        self.check_broken()?;
        self.in_flight.check_handle(chain.id, self.size)?;
        if !self.in_order {
            self.in_flight.remove(chain.id);
            self.resume.used(chain.id);
            return self.write_used(Run::single(chain.id, written));
        }
        if chain.pos != self.expect {
            return Err(DeviceQueueError::OutOfOrderUse {
                expected: self.expect,
                got: chain.pos,
            });
        }
        self.in_flight.remove(chain.id);
        self.resume.used(chain.id);
        self.expect = self.expect.wrapping_add(1);
        let complete = self.capacities.is_complete(chain.id, written);
        match self.batch.push(chain.id, written, 1, complete) {
            Some(run) => self.write_used(run),
            None => Ok(()),
        }
    }

    /// Writes one used element for `run` at the next used position and moves past the run's
    /// buffers (one, or a whole in-order batch).
    fn write_used(&mut self, run: Run) -> Result<(), DeviceQueueError> {
        let off = used::RING + used::ELEM_SIZE * self.mask(self.next_used);
        let ring = self.used.slice();
        let mem_err = |source| DeviceQueueError::Memory {
            area: RingArea::DeviceArea,
            source,
        };
        ring.store_u32(off, u32::from(run.id), ordering::FIELD)
            .map_err(mem_err)?;
        ring.store_u32(off + 4, run.len, ordering::FIELD)
            .map_err(mem_err)?;
        self.next_used = self.next_used.wrapping_add(run.buffers);
        Ok(())
    }

    /// Makes every used element added since the last publish visible to the driver, with one
    /// PUBLISH store of `used.idx` (virtio 1.2 §2.7.8; the barrier of §2.7.14's device part).
    /// Does nothing when nothing was added.
    pub fn publish_used(&mut self) -> Result<(), DeviceQueueError> {
        self.check_broken()?;
        if let Some(run) = self.batch.take() {
            self.write_used(run)?;
        }
        if self.next_used == self.published_used {
            return Ok(());
        }
        self.used
            .slice()
            .store_u16(used::IDX, self.next_used, ordering::PUBLISH)
            .map_err(|source| DeviceQueueError::Memory {
                area: RingArea::DeviceArea,
                source,
            })?;
        self.published_used = self.next_used;
        self.resume.published(self.next_used);
        Ok(())
    }

    /// The inflight journal and re-delivery state (see `resume.rs`).
    pub(crate) fn resume_mut(&mut self) -> &mut Resume {
        &mut self.resume
    }

    /// Holds `heads` (oldest first) again, as the chains found at the `heads.len()` available
    /// entries before `next_avail`, and re-delivers them through [`Self::pop`] before anything
    /// new. Refused (nothing changes) for a head out of range, named twice, or already held.
    pub(crate) fn redeliver(&mut self, heads: &[u16]) -> Result<(), DeviceQueueError> {
        self.check_broken()?;
        super::resume::check_heads(heads, self.size)?;
        if let Some(&head) = heads.iter().find(|&&h| self.in_flight.contains(h)) {
            return Err(DeviceQueueError::ResumeHeadRepeated { head });
        }
        // At most `size` heads (checked above), so the count fits in u16.
        let first = self.next_avail.wrapping_sub(heads.len() as u16);
        for &head in heads {
            self.in_flight.insert(head);
            self.capacities.forget(head);
        }
        if self.in_order {
            self.expect = first;
        }
        let chains = heads.iter().enumerate().map(|(k, &id)| AvailChain {
            id,
            pos: first.wrapping_add(k as u16),
        });
        self.resume.redeliver(chains);
        Ok(())
    }

    /// [`Self::add_used`] then [`Self::publish_used`].
    pub fn push_used(&mut self, chain: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
        self.add_used(chain, written)?;
        self.publish_used()
    }

    /// Whether to send a used-buffer notification for the elements published since the last
    /// decision (virtio 1.2 §2.7.7): with EVENT_IDX, when `used.idx` moved past the driver's
    /// `used_event` (`vring_need_event`); otherwise when something was published and the driver
    /// did not set VIRTQ_AVAIL_F_NO_INTERRUPT. Call it after [`Self::publish_used`].
    ///
    /// The first decision after [`Self::new`] notifies whenever the flags allow it: the driver's
    /// event index may refer to an earlier life of the queue.
    pub fn needs_notification(&mut self) -> Result<bool, DeviceQueueError> {
        self.check_broken()?;
        let new = self.published_used;
        let old = self.signalled_used.replace(new);
        // Order the used.idx store before the event field load (store-load): see ordering.rs.
        ordering::notify_fence();
        let ring = self.avail.slice();
        let mem_err = |source| DeviceQueueError::Memory {
            area: RingArea::DriverArea,
            source,
        };
        if self.event_idx {
            let event = ring
                .load_u16(avail::used_event(self.size), ordering::FIELD)
                .map_err(mem_err)?;
            Ok(old.is_none_or(|old| need_event(event, new, old)))
        } else {
            let flags = ring
                .load_u16(avail::FLAGS, ordering::FIELD)
                .map_err(mem_err)?;
            Ok(old != Some(new) && flags & avail::F_NO_INTERRUPT == 0)
        }
    }

    /// Asks the driver not to send available-buffer notifications (virtio 1.2 §2.7.10), while
    /// the device polls. Without EVENT_IDX this sets VIRTQ_USED_F_NO_NOTIFY; with it, the
    /// `avail_event` field is simply not advanced, so the driver stops kicking once past it.
    /// Only a hint: the driver may kick anyway.
    pub fn disable_kicks(&mut self) -> Result<(), DeviceQueueError> {
        self.check_broken()?;
        if self.event_idx {
            return Ok(());
        }
        self.used
            .slice()
            .store_u16(used::FLAGS, used::F_NO_NOTIFY, ordering::FIELD)
            .map_err(|source| DeviceQueueError::Memory {
                area: RingArea::DeviceArea,
                source,
            })
    }

    /// Asks the driver to notify again for new buffers (virtio 1.2 §2.7.10): clears
    /// VIRTQ_USED_F_NO_NOTIFY, or with EVENT_IDX sets `avail_event` to the next entry to consume.
    /// Then, after a full fence, re-reads `avail.idx`: true means buffers are already available
    /// (made available before the driver could see the request), so poll again instead of
    /// waiting for a kick.
    pub fn enable_kicks(&mut self) -> Result<bool, DeviceQueueError> {
        self.check_broken()?;
        let ring = self.used.slice();
        let mem_err = |source| DeviceQueueError::Memory {
            area: RingArea::DeviceArea,
            source,
        };
        if self.event_idx {
            ring.store_u16(
                used::avail_event(self.size),
                self.next_avail,
                ordering::FIELD,
            )
            .map_err(mem_err)?;
        } else {
            ring.store_u16(used::FLAGS, 0, ordering::FIELD)
                .map_err(mem_err)?;
        }
        // Order the store above before the avail.idx load (store-load): see ordering.rs.
        ordering::notify_fence();
        Ok(self.read_avail_idx()? != self.next_avail)
    }
}
