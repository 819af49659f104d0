//! A strict fake split-ring driver (virtio 1.2 §2.7.13 "Supplying Buffers to The Device"), and
//! raw ring access for tests that write malformed rings on purpose.

use std::collections::{HashMap, VecDeque};

use vireo_memory::{GuestMemory, GuestMemoryMap, OwnedRegion, SharedSlice};
use vireo_queue::device::Direction;
use vireo_queue::{ordering, QueueConfig, RingAddresses};
use vireo_spec::split::{avail, desc, used};
use vireo_spec::Features;

use super::{
    pattern, Added, BufSpec, ChainSpec, ExpectedSeg, FakeDriver, Reaped, MAX_BUF, MAX_INDIRECT,
};

/// Guest address of the fake's one memory region.
pub const GUEST_BASE: u64 = 0x10_0000;

const PAGE: u64 = 4096;

fn page_up(x: u64) -> u64 {
    x.div_ceil(PAGE) * PAGE
}

/// Where everything is, for a queue of `size`: each area starts on its own page.
#[derive(Debug, Clone, Copy)]
pub struct SplitLayout {
    /// Queue size.
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
    /// Indirect tables: one slot of [`MAX_INDIRECT`] entries per descriptor index.
    pub itables: u64,
    /// Buffers: one slot of [`MAX_BUF`] bytes per descriptor index.
    pub bufs: u64,
    /// Buffers of indirect entries: one slot per (descriptor index, entry).
    pub ibufs: u64,
    /// One past the end of the region.
    pub end: u64,
}

impl SplitLayout {
    /// The layout for a queue of `size`.
    pub fn new(size: u16) -> Self {
        let n = u64::from(size);
        let desc = GUEST_BASE;
        let avail = page_up(desc + 16 * n);
        let used = page_up(avail + avail::size(size) as u64);
        let itables = page_up(used + used::size(size) as u64);
        let bufs = page_up(itables + n * u64::from(MAX_INDIRECT) * 16);
        let ibufs = page_up(bufs + n * u64::from(MAX_BUF));
        let end = page_up(ibufs + n * u64::from(MAX_INDIRECT) * u64::from(MAX_BUF)) + PAGE;
        SplitLayout {
            size,
            desc,
            avail,
            used,
            itables,
            bufs,
            ibufs,
            end,
        }
    }

    /// Address of the indirect table slot of descriptor `d`.
    pub fn itable(&self, d: u16) -> u64 {
        self.itables + u64::from(d) * u64::from(MAX_INDIRECT) * 16
    }

    /// Address of the buffer slot of descriptor `d`.
    pub fn buf(&self, d: u16) -> u64 {
        self.bufs + u64::from(d) * u64::from(MAX_BUF)
    }

    /// Address of the buffer slot of entry `j` of descriptor `d`'s indirect table.
    pub fn ibuf(&self, d: u16, j: u16) -> u64 {
        self.ibufs + (u64::from(d) * u64::from(MAX_INDIRECT) + u64::from(j)) * u64::from(MAX_BUF)
    }
}

/// A raw descriptor, as the driver writes it (virtio 1.2 §2.7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawDesc {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// VIRTQ_DESC_F_* flags.
    pub flags: u16,
    /// Next descriptor index.
    pub next: u16,
}

/// Raw access to a split ring in guest memory: what a driver (or a broken one) can write.
#[derive(Debug, Clone)]
pub struct SplitRing {
    /// The guest memory.
    pub mem: GuestMemoryMap,
    /// Where things are.
    pub layout: SplitLayout,
    /// Negotiated features.
    pub features: Features,
}

impl SplitRing {
    /// A zeroed ring of `size` in fresh memory.
    pub fn new(size: u16, features: Features) -> Self {
        let layout = SplitLayout::new(size);
        let area = OwnedRegion::new_area((layout.end - GUEST_BASE) as usize).unwrap();
        let mem = GuestMemoryMap::single(GUEST_BASE, area).unwrap();
        SplitRing {
            mem,
            layout,
            features,
        }
    }

    /// The queue configuration for this ring.
    pub fn config(&self) -> QueueConfig {
        QueueConfig {
            size: self.layout.size,
            addrs: RingAddresses {
                desc_table: self.layout.desc,
                driver_area: self.layout.avail,
                device_area: self.layout.used,
            },
            features: self.features,
        }
    }

    /// `len` bytes at guest address `addr`.
    pub fn at(&self, addr: u64, len: u64) -> SharedSlice<'_> {
        self.mem.translate(addr, len).unwrap()
    }

    /// Writes descriptor `idx` of the table at `table`.
    pub fn write_desc_at(&self, table: u64, idx: u16, d: RawDesc) {
        let s = self.at(table + u64::from(idx) * 16, 16);
        s.store_u64(desc::ADDR, d.addr, ordering::FIELD).unwrap();
        s.store_u32(desc::LEN, d.len, ordering::FIELD).unwrap();
        s.store_u16(desc::FLAGS, d.flags, ordering::FIELD).unwrap();
        s.store_u16(desc::NEXT, d.next, ordering::FIELD).unwrap();
    }

    /// Writes descriptor `idx` of the queue's descriptor table.
    pub fn write_desc(&self, idx: u16, d: RawDesc) {
        self.write_desc_at(self.layout.desc, idx, d);
    }

    fn avail_ring(&self) -> SharedSlice<'_> {
        self.at(self.layout.avail, avail::size(self.layout.size) as u64)
    }

    fn used_ring(&self) -> SharedSlice<'_> {
        self.at(self.layout.used, used::size(self.layout.size) as u64)
    }

    /// Puts `head` at free-running available-ring position `pos`.
    pub fn set_avail_entry(&self, pos: u16, head: u16) {
        let off = avail::RING + 2 * usize::from(pos & (self.layout.size - 1));
        self.avail_ring()
            .store_u16(off, head, ordering::FIELD)
            .unwrap();
    }

    /// Publishes `avail.idx`.
    pub fn set_avail_idx(&self, idx: u16) {
        self.avail_ring()
            .store_u16(avail::IDX, idx, ordering::PUBLISH)
            .unwrap();
    }

    /// The current `avail.idx`.
    pub fn avail_idx(&self) -> u16 {
        self.avail_ring()
            .load_u16(avail::IDX, ordering::FIELD)
            .unwrap()
    }

    /// Sets `avail.flags`.
    pub fn set_avail_flags(&self, flags: u16) {
        self.avail_ring()
            .store_u16(avail::FLAGS, flags, ordering::FIELD)
            .unwrap();
    }

    /// Sets `used_event` (EVENT_IDX).
    pub fn set_used_event(&self, event: u16) {
        let off = avail::used_event(self.layout.size);
        self.avail_ring()
            .store_u16(off, event, ordering::FIELD)
            .unwrap();
    }

    /// The device's `used.idx`.
    pub fn used_idx(&self) -> u16 {
        self.used_ring()
            .load_u16(used::IDX, ordering::CONSUME)
            .unwrap()
    }

    /// The device's `used.flags`.
    pub fn used_flags(&self) -> u16 {
        self.used_ring()
            .load_u16(used::FLAGS, ordering::FIELD)
            .unwrap()
    }

    /// The device's `avail_event` (EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        let off = used::avail_event(self.layout.size);
        self.used_ring().load_u16(off, ordering::FIELD).unwrap()
    }

    /// The used element `(id, len)` at free-running position `pos`.
    pub fn used_elem(&self, pos: u16) -> (u32, u32) {
        let off = used::RING + used::ELEM_SIZE * usize::from(pos & (self.layout.size - 1));
        let r = self.used_ring();
        (
            r.load_u32(off, ordering::FIELD).unwrap(),
            r.load_u32(off + 4, ordering::FIELD).unwrap(),
        )
    }

    /// Adds one chain of direct descriptors `heads` (in order, linked by NEXT) at avail
    /// position `pos` and publishes `pos + 1`. A helper for hand-written tests.
    pub fn add_direct(&self, pos: u16, descs: &[(u16, RawDesc)]) {
        for (i, &(idx, mut d)) in descs.iter().enumerate() {
            if let Some(&(next, _)) = descs.get(i + 1) {
                d.flags |= desc::F_NEXT;
                d.next = next;
            }
            self.write_desc(idx, d);
        }
        self.set_avail_entry(pos, descs[0].0);
        self.set_avail_idx(pos.wrapping_add(1));
    }
}

/// What the fake remembers about a chain it added.
#[derive(Debug, Clone)]
struct Outstanding {
    descs: Vec<u16>,
    segs: Vec<ExpectedSeg>,
    seed: u8,
}

/// A strict split-ring driver over a [`SplitRing`].
#[derive(Debug)]
pub struct SplitFake {
    /// The raw ring (tests may poke it directly).
    pub ring: SplitRing,
    free: Vec<u16>,
    next_avail: u16,
    last_used: u16,
    outstanding: HashMap<u16, Outstanding>,
    /// Chain ids in the order they were made available (for IN_ORDER batches).
    order: VecDeque<u16>,
    /// Chains taken back from one in-order batch, not yet returned by `reap`.
    ready: VecDeque<Reaped>,
}

impl SplitFake {
    /// A driver of a fresh ring of `size`.
    pub fn new(size: u16, features: Features) -> Self {
        SplitFake {
            ring: SplitRing::new(size, features),
            free: (0..size).rev().collect(),
            next_avail: 0,
            last_used: 0,
            outstanding: HashMap::new(),
            order: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    fn in_order(&self) -> bool {
        self.ring.features.contains(Features::IN_ORDER)
    }

    /// Puts the driver where a resumed queue is (after an earlier life of the queue): the next
    /// avail position and the used index it has consumed up to, both also stored in the ring.
    pub fn resume_at(&mut self, next_avail: u16, used_idx: u16) {
        assert!(self.outstanding.is_empty(), "resume an idle driver only");
        self.next_avail = next_avail;
        self.last_used = used_idx;
        self.ring.set_avail_idx(next_avail);
        let used = self.ring.at(self.ring.layout.used, 4);
        used.store_u16(used::IDX, used_idx, ordering::PUBLISH)
            .unwrap();
    }

    fn fill(&self, b: &BufSpec, addr: u64, seed: u8, seg: usize) {
        let s = self.ring.at(addr, u64::from(b.len));
        let bytes: Vec<u8> = match b.direction {
            Direction::DeviceReadable => {
                (0..b.len as usize).map(|o| pattern(seed, seg, o)).collect()
            }
            // Writable buffers start poisoned, so a short write shows.
            Direction::DeviceWritable => vec![0xee; b.len as usize],
        };
        s.write(0, &bytes).unwrap();
    }

    fn flags_of(b: &BufSpec) -> u16 {
        match b.direction {
            Direction::DeviceReadable => 0,
            Direction::DeviceWritable => desc::F_WRITE,
        }
    }
}

impl SplitFake {
    /// Checks chain `id` came back intact and returns what the device wrote; `len` is the used
    /// length, or `None` for a chain skipped by an in-order batch (used completely).
    fn take_back(&mut self, id: u16, len: Option<u32>) -> Reaped {
        let o = self
            .outstanding
            .remove(&id)
            .unwrap_or_else(|| panic!("device used chain {id}, which it does not hold"));
        let capacity: u32 = o
            .segs
            .iter()
            .filter(|s| s.direction == Direction::DeviceWritable)
            .map(|s| s.len)
            .sum();
        let len = len.unwrap_or(capacity);
        assert!(
            len <= capacity,
            "device claims {len} bytes written into {capacity}"
        );
        let mut written = Vec::new();
        for (i, s) in o.segs.iter().enumerate() {
            let mut bytes = vec![0; s.len as usize];
            self.ring
                .at(s.addr, u64::from(s.len))
                .read(0, &mut bytes)
                .unwrap();
            match s.direction {
                Direction::DeviceReadable => {
                    let expected: Vec<u8> = (0..s.len as usize)
                        .map(|o2| pattern(o.seed, i, o2))
                        .collect();
                    assert_eq!(bytes, expected, "device wrote into readable segment {i}");
                }
                Direction::DeviceWritable => written.extend_from_slice(&bytes),
            }
        }
        written.truncate(len as usize);
        self.free.extend(o.descs);
        Reaped { id, len, written }
    }
}

impl FakeDriver for SplitFake {
    fn mem(&self) -> &GuestMemoryMap {
        &self.ring.mem
    }

    fn config(&self) -> QueueConfig {
        self.ring.config()
    }

    fn add(&mut self, chain: &ChainSpec, seed: u8) -> Option<Added> {
        let n = chain.direct.len() + usize::from(chain.indirect.is_some());
        assert!(n > 0, "a chain has at least one descriptor");
        if self.free.len() < n {
            return None;
        }
        let descs: Vec<u16> = (0..n).map(|_| self.free.pop().unwrap()).collect();
        let mut segs = Vec::new();
        for (i, b) in chain.direct.iter().enumerate() {
            let addr = self.ring.layout.buf(descs[i]);
            self.fill(b, addr, seed, segs.len());
            let mut d = RawDesc {
                addr,
                len: b.len,
                flags: Self::flags_of(b),
                next: 0,
            };
            if let Some(&next) = descs.get(i + 1) {
                d.flags |= desc::F_NEXT;
                d.next = next;
            }
            self.ring.write_desc(descs[i], d);
            segs.push(ExpectedSeg {
                addr,
                len: b.len,
                direction: b.direction,
            });
        }
        if let Some(entries) = &chain.indirect {
            assert!(!entries.is_empty() && entries.len() <= usize::from(MAX_INDIRECT));
            let d = descs[n - 1];
            let table = self.ring.layout.itable(d);
            for (j, b) in entries.iter().enumerate() {
                let addr = self.ring.layout.ibuf(d, j as u16);
                self.fill(b, addr, seed, segs.len());
                let mut e = RawDesc {
                    addr,
                    len: b.len,
                    flags: Self::flags_of(b),
                    next: 0,
                };
                if j + 1 < entries.len() {
                    e.flags |= desc::F_NEXT;
                    e.next = j as u16 + 1;
                }
                self.ring.write_desc_at(table, j as u16, e);
                segs.push(ExpectedSeg {
                    addr,
                    len: b.len,
                    direction: b.direction,
                });
            }
            let len = 16 * entries.len() as u32;
            self.ring.write_desc(
                d,
                RawDesc {
                    addr: table,
                    len,
                    flags: desc::F_INDIRECT,
                    next: 0,
                },
            );
        }
        let id = descs[0];
        self.ring.set_avail_entry(self.next_avail, id);
        self.next_avail = self.next_avail.wrapping_add(1);
        if self.in_order() {
            self.order.push_back(id);
        }
        self.outstanding.insert(
            id,
            Outstanding {
                descs,
                segs: segs.clone(),
                seed,
            },
        );
        Some(Added { id, segs })
    }

    fn publish(&mut self) {
        self.ring.set_avail_idx(self.next_avail);
    }

    fn reap(&mut self) -> Option<Reaped> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        let used_idx = self.ring.used_idx();
        let pending = used_idx.wrapping_sub(self.last_used);
        if pending == 0 {
            return None;
        }
        assert!(
            usize::from(pending) <= self.outstanding.len(),
            "device published {pending} used entries but holds {} chains",
            self.outstanding.len()
        );
        let (id, len) = self.ring.used_elem(self.last_used);
        let id = u16::try_from(id).unwrap_or_else(|_| panic!("used id {id} is not a u16"));
        if !self.in_order() {
            self.last_used = self.last_used.wrapping_add(1);
            return Some(self.take_back(id, Some(len)));
        }
        // virtio 1.2 §2.7.9: one used element for the batch ending with chain `id`; used.idx
        // moved by the batch size.
        assert!(
            self.order.contains(&id),
            "device used chain {id}, which it does not hold"
        );
        let mut batch = 0u16;
        while let Some(next) = self.order.pop_front() {
            let last = next == id;
            let r = self.take_back(next, last.then_some(len));
            batch += 1;
            self.ready.push_back(r);
            if last {
                break;
            }
        }
        assert!(
            batch <= pending,
            "a batch of {batch} chains but used.idx moved by {pending}"
        );
        self.last_used = self.last_used.wrapping_add(batch);
        self.ready.pop_front()
    }

    fn outstanding(&self) -> usize {
        self.outstanding.len() + self.ready.len()
    }

    fn reset(&mut self) {
        let l = self.ring.layout;
        let zeros = vec![0; (l.itables - l.desc) as usize];
        self.ring
            .at(l.desc, zeros.len() as u64)
            .write(0, &zeros)
            .unwrap();
        *self = SplitFake {
            ring: self.ring.clone(),
            ..SplitFake::new(l.size, self.ring.features)
        };
    }
}
