//! A strict fake packed-ring driver (virtio 1.2 §2.8.21 "Supplying Buffers to The Device",
//! §2.8.22 "Receiving Used Buffers From The Device"), and raw ring access for tests that write
//! malformed rings on purpose.
//!
//! A chain with an indirect part is written as one indirect descriptor whose table holds all
//! its buffers: a packed list either is direct or is a single indirect descriptor (§2.8.19).
//! The buffer id goes into the last descriptor of a list only (§2.8.6); the others carry a
//! junk id the device must ignore. With IN_ORDER the fake accepts one used descriptor for a
//! batch (§2.8.8) and takes the skipped buffers as used completely.

use std::collections::{HashMap, VecDeque};

use vireo_memory::{GuestMemory, GuestMemoryMap, OwnedRegion, SharedSlice};
use vireo_queue::device::Direction;
use vireo_queue::{ordering, QueueConfig, RingAddresses};
use vireo_spec::packed::{desc, event, WrapCounter};
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

/// Where everything is, for a queue of `size`.
#[derive(Debug, Clone, Copy)]
pub struct PackedLayout {
    /// Queue size.
    pub size: u16,
    /// Descriptor ring.
    pub desc: u64,
    /// Driver event suppression structure.
    pub driver_event: u64,
    /// Device event suppression structure.
    pub device_event: u64,
    /// Indirect tables: one slot of [`MAX_INDIRECT`] entries per buffer id.
    pub itables: u64,
    /// Buffers: [`MAX_INDIRECT`] slots of [`MAX_BUF`] bytes per buffer id.
    pub bufs: u64,
    /// One past the end of the region.
    pub end: u64,
}

impl PackedLayout {
    /// The layout for a queue of `size`.
    pub fn new(size: u16) -> Self {
        let n = u64::from(size);
        let desc = GUEST_BASE;
        let driver_event = page_up(desc + 16 * n);
        let device_event = driver_event + 16;
        let itables = page_up(device_event + 4);
        let bufs = page_up(itables + n * u64::from(MAX_INDIRECT) * 16);
        let end = page_up(bufs + n * u64::from(MAX_INDIRECT) * u64::from(MAX_BUF)) + PAGE;
        PackedLayout {
            size,
            desc,
            driver_event,
            device_event,
            itables,
            bufs,
            end,
        }
    }

    /// Address of buffer id `id`'s indirect table slot.
    pub fn itable(&self, id: u16) -> u64 {
        self.itables + u64::from(id) * u64::from(MAX_INDIRECT) * 16
    }

    /// Address of buffer `j` of buffer id `id`.
    pub fn buf(&self, id: u16, j: u16) -> u64 {
        self.bufs + (u64::from(id) * u64::from(MAX_INDIRECT) + u64::from(j)) * u64::from(MAX_BUF)
    }
}

/// A raw packed descriptor (virtio 1.2 §2.8.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawPacked {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// Buffer id.
    pub id: u16,
    /// Flags, AVAIL and USED included.
    pub flags: u16,
}

/// Raw access to a packed ring in guest memory: what a driver (or a broken one) can write.
#[derive(Debug, Clone)]
pub struct PackedRing {
    /// The guest memory.
    pub mem: GuestMemoryMap,
    /// Where things are.
    pub layout: PackedLayout,
    /// Negotiated features (RING_PACKED is added).
    pub features: Features,
}

impl PackedRing {
    /// A zeroed ring of `size` in fresh memory.
    pub fn new(size: u16, features: Features) -> Self {
        let layout = PackedLayout::new(size);
        let area = OwnedRegion::new_area((layout.end - GUEST_BASE) as usize).unwrap();
        let mem = GuestMemoryMap::single(GUEST_BASE, area).unwrap();
        PackedRing {
            mem,
            layout,
            features: features | Features::RING_PACKED,
        }
    }

    /// The queue configuration for this ring.
    pub fn config(&self) -> QueueConfig {
        QueueConfig {
            size: self.layout.size,
            addrs: RingAddresses {
                desc_table: self.layout.desc,
                driver_area: self.layout.driver_event,
                device_area: self.layout.device_event,
            },
            features: self.features,
        }
    }

    /// `len` bytes at guest address `addr`.
    pub fn at(&self, addr: u64, len: u64) -> SharedSlice<'_> {
        self.mem.translate(addr, len).unwrap()
    }

    /// Writes descriptor `idx` of the table at `table`, flags last with PUBLISH.
    pub fn write_desc_at(&self, table: u64, idx: u16, d: RawPacked) {
        let s = self.at(table + u64::from(idx) * 16, 16);
        s.store_u64(desc::ADDR, d.addr, ordering::FIELD).unwrap();
        s.store_u32(desc::LEN, d.len, ordering::FIELD).unwrap();
        s.store_u16(desc::ID, d.id, ordering::FIELD).unwrap();
        s.store_u16(desc::FLAGS, d.flags, ordering::PUBLISH)
            .unwrap();
    }

    /// Writes descriptor `off` of the ring (flags last).
    pub fn write_desc(&self, off: u16, d: RawPacked) {
        self.write_desc_at(self.layout.desc, off, d);
    }

    /// Writes descriptor `off` of the ring but its flags (a head, made available later).
    pub fn write_desc_but_flags(&self, off: u16, d: RawPacked) {
        let s = self.at(self.layout.desc + u64::from(off) * 16, 16);
        s.store_u64(desc::ADDR, d.addr, ordering::FIELD).unwrap();
        s.store_u32(desc::LEN, d.len, ordering::FIELD).unwrap();
        s.store_u16(desc::ID, d.id, ordering::FIELD).unwrap();
    }

    /// Stores only the flags of ring descriptor `off`, with PUBLISH.
    pub fn set_flags(&self, off: u16, flags: u16) {
        self.at(self.layout.desc + u64::from(off) * 16, 16)
            .store_u16(desc::FLAGS, flags, ordering::PUBLISH)
            .unwrap();
    }

    /// Reads ring descriptor `off` (flags first, with CONSUME).
    pub fn desc(&self, off: u16) -> RawPacked {
        let s = self.at(self.layout.desc + u64::from(off) * 16, 16);
        let flags = s.load_u16(desc::FLAGS, ordering::CONSUME).unwrap();
        RawPacked {
            addr: s.load_u64(desc::ADDR, ordering::FIELD).unwrap(),
            len: s.load_u32(desc::LEN, ordering::FIELD).unwrap(),
            id: s.load_u16(desc::ID, ordering::FIELD).unwrap(),
            flags,
        }
    }

    /// Sets the driver event suppression structure (`off_wrap`, `flags`).
    pub fn set_driver_event(&self, off_wrap: u16, flags: u16) {
        let s = self.at(self.layout.driver_event, 4);
        s.store_u16(event::OFF_WRAP, off_wrap, ordering::FIELD)
            .unwrap();
        s.store_u16(event::FLAGS, flags, ordering::FIELD).unwrap();
    }

    /// The device event suppression structure (`off_wrap`, `flags`).
    pub fn device_event(&self) -> (u16, u16) {
        let s = self.at(self.layout.device_event, 4);
        (
            s.load_u16(event::OFF_WRAP, ordering::FIELD).unwrap(),
            s.load_u16(event::FLAGS, ordering::FIELD).unwrap(),
        )
    }
}

/// A ring position as the fake tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Offset.
    pub off: u16,
    /// Wrap counter.
    pub wrap: WrapCounter,
}

impl Pos {
    /// Offset 0, wrap counter 1.
    pub const START: Pos = Pos {
        off: 0,
        wrap: WrapCounter::INITIAL,
    };

    /// `n` descriptors on, in a ring of `size`.
    pub fn advance(self, n: u16, size: u16) -> Pos {
        let mut p = self;
        for _ in 0..n {
            p.off += 1;
            if p.off == size {
                p.off = 0;
                p.wrap = p.wrap.toggled();
            }
        }
        p
    }

    /// Offset | wrap << 15.
    pub fn encode(self) -> u16 {
        self.off | (self.wrap.bit() << 15)
    }
}

/// What the fake remembers about a buffer it made available.
#[derive(Debug, Clone)]
struct Outstanding {
    slots: u16,
    segs: Vec<ExpectedSeg>,
    seed: u8,
}

/// A strict packed-ring driver over a [`PackedRing`].
#[derive(Debug)]
pub struct PackedFake {
    /// The raw ring (tests may poke it directly).
    pub ring: PackedRing,
    free_ids: Vec<u16>,
    free_slots: u16,
    /// Where the next descriptor goes.
    pub next_avail: Pos,
    /// Where the next used descriptor is expected.
    pub next_used: Pos,
    /// Heads written but not yet made available: (offset, flags).
    unpublished: Vec<(u16, u16)>,
    outstanding: HashMap<u16, Outstanding>,
    /// Buffer ids in the order they were made available (for IN_ORDER batches).
    order: VecDeque<u16>,
    /// Buffers taken back from one in-order batch, not yet returned by `reap`.
    ready: VecDeque<Reaped>,
}

impl PackedFake {
    /// A driver of a fresh ring of `size`.
    pub fn new(size: u16, features: Features) -> Self {
        PackedFake {
            ring: PackedRing::new(size, features),
            free_ids: (0..size).rev().collect(),
            free_slots: size,
            next_avail: Pos::START,
            next_used: Pos::START,
            unpublished: Vec::new(),
            outstanding: HashMap::new(),
            order: VecDeque::new(),
            ready: VecDeque::new(),
        }
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

    fn write_flag(b: &BufSpec) -> u16 {
        match b.direction {
            Direction::DeviceReadable => 0,
            Direction::DeviceWritable => desc::F_WRITE,
        }
    }

    /// Checks buffer `id` came back intact and returns what the device wrote; `len` is the
    /// used length, or `None` for a buffer skipped by an in-order batch (used completely).
    fn take_back(&mut self, id: u16, len: Option<u32>) -> Reaped {
        let o = self
            .outstanding
            .remove(&id)
            .unwrap_or_else(|| panic!("device used buffer {id}, which it does not hold"));
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
        self.free_slots += o.slots;
        self.free_ids.push(id);
        Reaped { id, len, written }
    }

    fn in_order(&self) -> bool {
        self.ring.features.contains(Features::IN_ORDER)
    }
}

impl FakeDriver for PackedFake {
    fn mem(&self) -> &GuestMemoryMap {
        &self.ring.mem
    }

    fn config(&self) -> QueueConfig {
        self.ring.config()
    }

    fn add(&mut self, chain: &ChainSpec, seed: u8) -> Option<Added> {
        let bufs: Vec<BufSpec> = chain.buffers().copied().collect();
        assert!(!bufs.is_empty() && bufs.len() <= usize::from(MAX_INDIRECT));
        let indirect = chain.indirect.is_some();
        let n = if indirect { 1 } else { bufs.len() as u16 };
        if self.free_slots < n || self.free_ids.is_empty() {
            return None;
        }
        let id = self.free_ids.pop().unwrap();
        let size = self.ring.layout.size;
        let mut segs = Vec::new();
        for (j, b) in bufs.iter().enumerate() {
            let addr = self.ring.layout.buf(id, j as u16);
            self.fill(b, addr, seed, j);
            segs.push(ExpectedSeg {
                addr,
                len: b.len,
                direction: b.direction,
            });
        }
        let head = self.next_avail;
        let mut head_flags = 0;
        if indirect {
            let table = self.ring.layout.itable(id);
            for (j, b) in bufs.iter().enumerate() {
                let e = RawPacked {
                    addr: segs[j].addr,
                    len: b.len,
                    id: 0,
                    flags: Self::write_flag(b),
                };
                self.ring.write_desc_at(table, j as u16, e);
            }
            head_flags = desc::F_INDIRECT | head.wrap.avail_flags();
            let d = RawPacked {
                addr: table,
                len: 16 * bufs.len() as u32,
                id,
                flags: 0,
            };
            self.ring.write_desc_but_flags(head.off, d);
        } else {
            let mut pos = head;
            for (j, b) in bufs.iter().enumerate() {
                let last = j + 1 == bufs.len();
                let mut flags = Self::write_flag(b) | pos.wrap.avail_flags();
                if !last {
                    flags |= desc::F_NEXT;
                }
                let d = RawPacked {
                    addr: segs[j].addr,
                    len: b.len,
                    // §2.8.6: the id is in the last descriptor; junk elsewhere.
                    id: if last { id } else { u16::MAX },
                    flags,
                };
                if j == 0 {
                    head_flags = flags;
                    self.ring.write_desc_but_flags(pos.off, d);
                } else {
                    self.ring.write_desc(pos.off, d);
                }
                pos = pos.advance(1, size);
            }
        }
        self.next_avail = head.advance(n, size);
        self.free_slots -= n;
        self.unpublished.push((head.off, head_flags));
        if self.in_order() {
            self.order.push_back(id);
        }
        self.outstanding.insert(
            id,
            Outstanding {
                slots: n,
                segs: segs.clone(),
                seed,
            },
        );
        Some(Added { id, segs })
    }

    fn publish(&mut self) {
        for (off, flags) in std::mem::take(&mut self.unpublished) {
            self.ring.set_flags(off, flags);
        }
    }

    fn reap(&mut self) -> Option<Reaped> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        let d = self.ring.desc(self.next_used.off);
        if !self.next_used.wrap.is_used(d.flags) {
            return None;
        }
        assert_eq!(
            d.flags & desc::F_WRITE != 0,
            d.len > 0,
            "VIRTQ_DESC_F_WRITE says whether anything was written (§2.8.3)"
        );
        let size = self.ring.layout.size;
        if !self.in_order() {
            let slots = self.outstanding.get(&d.id).map_or(0, |o| o.slots);
            let r = self.take_back(d.id, Some(d.len));
            self.next_used = self.next_used.advance(slots, size);
            return Some(r);
        }
        // §2.8.8: one used descriptor for the batch ending with buffer d.id.
        assert!(
            self.order.contains(&d.id),
            "device used buffer {}, which it does not hold",
            d.id
        );
        while let Some(id) = self.order.pop_front() {
            let slots = self.outstanding[&id].slots;
            let last = id == d.id;
            let r = self.take_back(id, last.then_some(d.len));
            self.next_used = self.next_used.advance(slots, size);
            self.ready.push_back(r);
            if last {
                break;
            }
        }
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
        *self = PackedFake {
            ring: self.ring.clone(),
            ..PackedFake::new(l.size, self.ring.features)
        };
    }
}
