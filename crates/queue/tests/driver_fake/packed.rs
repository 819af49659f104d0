//! The strict fake device of a packed ring (virtio 1.2 §2.8), plus raw access to every ring
//! field so tests can play a misbehaving device.

use std::collections::HashMap;

use vireo_memory::{GuestMemory, GuestMemoryMap, SharedSlice};
use vireo_queue::driver::{required_size, DriverQueueOptions, PackedDriverQueue};
use vireo_queue::ordering::{notify_fence, CONSUME, FIELD, PUBLISH};
use vireo_queue::{RingAddresses, RingFormat};
use vireo_spec::packed::{desc, event, need_event, EventFlags, WrapCounter};
use vireo_spec::Features;

use super::{guest_memory, FakeDevice, SeenBuffer, SeenSeg, RING_BASE};

/// A packed driver queue at [`RING_BASE`] and a strict fake device on its ring.
pub fn packed_pair(
    size: u16,
    features: Features,
    options: DriverQueueOptions,
) -> (PackedDriverQueue<u32>, PackedFakeDevice) {
    let features = features | Features::RING_PACKED;
    let mem = guest_memory(required_size(RingFormat::Packed, size, features, &options));
    let area = mem.regions()[0].area().clone();
    let q = PackedDriverQueue::new(area, RING_BASE, size, features, options).unwrap();
    let dev = PackedFakeDevice::new(mem, size, q.addresses(), features);
    (q, dev)
}

/// One packed descriptor as stored in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// `addr`.
    pub addr: u64,
    /// `len`.
    pub len: u32,
    /// `id`.
    pub id: u16,
    /// `flags`.
    pub flags: u16,
}

/// A ring position and its wrap counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Offset in the ring.
    pub offset: u16,
    /// Wrap counter.
    pub wrap: WrapCounter,
}

impl Pos {
    const START: Pos = Pos {
        offset: 0,
        wrap: WrapCounter::INITIAL,
    };

    /// `n` descriptors on in a ring of `size`.
    pub fn advanced(self, n: u16, size: u16) -> Pos {
        let end = u32::from(self.offset) + u32::from(n);
        if end >= u32::from(size) {
            Pos {
                offset: (end - u32::from(size)) as u16,
                wrap: self.wrap.toggled(),
            }
        } else {
            Pos {
                offset: end as u16,
                wrap: self.wrap,
            }
        }
    }
}

/// A packed ring's device, strict about the driver.
#[derive(Debug)]
pub struct PackedFakeDevice {
    mem: GuestMemoryMap,
    size: u16,
    addrs: RingAddresses,
    features: Features,
    /// Next ring position to look for an available buffer, with the device's avail wrap.
    next_avail: Pos,
    /// Next ring position to write a used descriptor.
    next_used: Pos,
    /// Used descriptors written and not yet published: (position, flags).
    unpublished: Vec<(Pos, u16)>,
    /// Descriptors written as used since the last publication (for event suppression).
    unpublished_descs: u16,
    /// Descriptors each held buffer occupies in the ring, by id, and the order taken.
    held: HashMap<u16, u16>,
    taken: Vec<u16>,
}

impl PackedFakeDevice {
    /// A device for the ring of `size` at `addrs` in `mem`.
    pub fn new(mem: GuestMemoryMap, size: u16, addrs: RingAddresses, features: Features) -> Self {
        PackedFakeDevice {
            mem,
            size,
            addrs,
            features,
            next_avail: Pos::START,
            next_used: Pos::START,
            unpublished: vec![],
            unpublished_descs: 0,
            held: HashMap::new(),
            taken: vec![],
        }
    }

    fn at(&self, addr: u64, len: usize) -> SharedSlice<'_> {
        self.mem.translate(addr, len as u64).unwrap()
    }

    fn desc_slice(&self, table: u64, i: u16) -> SharedSlice<'_> {
        self.at(table + desc::SIZE as u64 * u64::from(i), desc::SIZE)
    }

    fn event_idx(&self) -> bool {
        self.features.contains(Features::EVENT_IDX)
    }

    /// Descriptor `i` of the table (or ring) at `table`; flags read with CONSUME.
    pub fn desc_at(&self, table: u64, i: u16) -> RawDesc {
        let s = self.desc_slice(table, i);
        let flags = s.load_u16(desc::FLAGS, CONSUME).unwrap();
        RawDesc {
            addr: s.load_u64(desc::ADDR, FIELD).unwrap(),
            len: s.load_u32(desc::LEN, FIELD).unwrap(),
            id: s.load_u16(desc::ID, FIELD).unwrap(),
            flags,
        }
    }

    /// Ring descriptor `i`.
    pub fn desc(&self, i: u16) -> RawDesc {
        assert!(i < self.size, "descriptor {i} outside the ring");
        self.desc_at(self.addrs.desc_table, i)
    }

    /// Writes ring descriptor `i` as a used one, as is, with no check (flags last, PUBLISH).
    pub fn write_used_raw(&self, i: u16, id: u16, len: u32, flags: u16) {
        let s = self.desc_slice(self.addrs.desc_table, i);
        s.store_u16(desc::ID, id, FIELD).unwrap();
        s.store_u32(desc::LEN, len, FIELD).unwrap();
        s.store_u16(desc::FLAGS, flags, PUBLISH).unwrap();
    }

    /// The driver event suppression structure: (`desc`, `flags`).
    pub fn driver_event(&self) -> (u16, u16) {
        let s = self.at(self.addrs.driver_area, event::SIZE);
        let v = s.load_u32(event::OFF_WRAP, FIELD).unwrap();
        (v as u16, (v >> 16) as u16)
    }

    /// Sets the device event suppression structure.
    pub fn set_device_event(&self, off_wrap: u16, flags: u16) {
        let s = self.at(self.addrs.device_area, event::SIZE);
        let v = u32::from(off_wrap) | (u32::from(flags) << 16);
        s.store_u32(event::OFF_WRAP, v, FIELD).unwrap();
    }

    /// Where the next available buffer is looked for.
    pub fn next_avail(&self) -> Pos {
        self.next_avail
    }

    /// Where the next used descriptor goes.
    pub fn next_used(&self) -> Pos {
        self.next_used
    }

    /// Before waiting for a kick (virtio 1.2 §2.8.10): asks for a notification (with
    /// EVENT_IDX: at the next position to look at), then a full fence and a fresh look. `true`:
    /// a buffer is already available.
    pub fn arm_avail_notifications(&self) -> bool {
        if self.event_idx() {
            let p = self.next_avail;
            self.set_device_event(p.offset | (p.wrap.bit() << 15), event::FLAGS_DESC);
        } else {
            self.set_device_event(0, event::FLAGS_ENABLE);
        }
        notify_fence();
        let d = self.desc(self.next_avail.offset);
        self.next_avail.wrap.is_avail(d.flags)
    }

    fn check_driver_event(&self) {
        let (_, flags) = self.driver_event();
        assert_eq!(flags & !event::FLAGS_MASK, 0, "reserved driver event flags");
        match EventFlags::from_bits(flags) {
            EventFlags::Desc => assert!(self.event_idx(), "DESC without EVENT_IDX (§2.8.10)"),
            EventFlags::Reserved => panic!("reserved driver event flags value"),
            EventFlags::Enable | EventFlags::Disable => {}
        }
    }

    fn push_seg(&self, buf: &mut SeenBuffer, addr: u64, len: u32, flags: u16) {
        assert!(len > 0, "zero-length segment");
        self.mem.translate(addr, u64::from(len)).unwrap();
        let seg = SeenSeg { addr, len };
        if flags & desc::F_WRITE != 0 {
            buf.writable.push(seg);
        } else {
            assert!(
                buf.writable.is_empty(),
                "readable segment after a writable one"
            );
            buf.readable.push(seg);
        }
    }

    fn walk_table(&self, table: RawDesc, buf: &mut SeenBuffer) {
        // virtio 1.2 §2.8.7: a table of len / 16 descriptors, WRITE the only flag.
        assert!(
            table.len >= 16 && table.len % 16 == 0,
            "indirect table length {}",
            table.len
        );
        let n = u16::try_from(table.len / 16).unwrap();
        assert!(n <= self.size, "indirect table longer than the queue");
        assert_eq!(table.addr % 16, 0, "indirect table misaligned");
        for i in 0..n {
            let d = self.desc_at(table.addr, i);
            assert_eq!(
                d.flags & !desc::F_WRITE,
                0,
                "flags other than WRITE in a table"
            );
            self.push_seg(buf, d.addr, d.len, d.flags);
        }
        buf.indirect = true;
    }

    fn held_descs(&self) -> u16 {
        self.held.values().sum()
    }

    /// Writes the used descriptor for buffer `id` (which covers `descs` descriptors from the
    /// next used position on) without publishing it.
    fn write_used(&mut self, id: u16, written: u32, descs: u16) {
        let at = self.next_used;
        let s = self.desc_slice(self.addrs.desc_table, at.offset);
        s.store_u16(desc::ID, id, FIELD).unwrap();
        s.store_u32(desc::LEN, written, FIELD).unwrap();
        self.unpublished.push((at, at.wrap.used_flags()));
        self.unpublished_descs += descs;
        self.next_used = at.advanced(descs, self.size);
    }
}

impl FakeDevice for PackedFakeDevice {
    fn mem(&self) -> &GuestMemoryMap {
        &self.mem
    }

    fn pop_avail(&mut self) -> Option<SeenBuffer> {
        self.check_driver_event();
        let start = self.next_avail;
        let head = self.desc(start.offset);
        if !start.wrap.is_avail(head.flags) {
            return None;
        }
        let id = head.id;
        assert!(id < self.size, "buffer id {id} out of range");
        assert!(
            !self.held.contains_key(&id),
            "id {id} made available while held"
        );
        let mut buf = SeenBuffer {
            id,
            readable: vec![],
            writable: vec![],
            indirect: false,
        };
        let mut at = start;
        let mut count = 0u16;
        loop {
            let d = self.desc(at.offset);
            assert!(
                at.wrap.is_avail(d.flags),
                "chained descriptor {} not available",
                at.offset
            );
            assert_eq!(d.id, id, "descriptors of one buffer with different ids");
            count += 1;
            assert!(
                count + self.held_descs() <= self.size,
                "chain runs into descriptors the device holds"
            );
            at = at.advanced(1, self.size);
            if d.flags & desc::F_INDIRECT != 0 {
                assert!(
                    self.features.contains(Features::INDIRECT_DESC),
                    "indirect not negotiated"
                );
                assert_eq!(count, 1, "indirect descriptor inside a chain");
                assert_eq!(d.flags & desc::F_NEXT, 0, "INDIRECT with NEXT (§2.8.7)");
                self.walk_table(d, &mut buf);
                break;
            }
            self.push_seg(&mut buf, d.addr, d.len, d.flags);
            if d.flags & desc::F_NEXT == 0 {
                break;
            }
        }
        self.next_avail = at;
        self.held.insert(id, count);
        self.taken.push(id);
        Some(buf)
    }

    fn use_buffer(&mut self, id: u16, written: u32) {
        let descs = self
            .held
            .remove(&id)
            .unwrap_or_else(|| panic!("device test bug: buffer {id} not held"));
        self.taken.retain(|&t| t != id);
        self.write_used(id, written, descs);
    }

    fn use_batch(&mut self, count: usize, written: u32) -> u16 {
        assert!(count >= 1 && count <= self.taken.len(), "device test bug");
        let batch: Vec<u16> = self.taken.drain(..count).collect();
        let descs = batch.iter().map(|id| self.held.remove(id).unwrap()).sum();
        let last = *batch.last().unwrap();
        self.write_used(last, written, descs);
        last
    }

    fn publish_used(&mut self) -> bool {
        // The first used descriptor's flags last (virtio 1.2 §2.8.21, mirrored).
        for &(at, flags) in self.unpublished.iter().rev() {
            let s = self.desc_slice(self.addrs.desc_table, at.offset);
            s.store_u16(desc::FLAGS, flags, PUBLISH).unwrap();
        }
        self.unpublished.clear();
        let published = std::mem::take(&mut self.unpublished_descs);
        notify_fence();
        let (off_wrap, flags) = self.driver_event();
        match EventFlags::from_bits(flags) {
            EventFlags::Disable => false,
            EventFlags::Desc => need_event(
                off_wrap,
                self.next_used.offset,
                self.next_used.wrap,
                published,
                self.size,
            ),
            _ => published != 0,
        }
    }

    fn held(&self) -> usize {
        self.held.len()
    }

    fn arm_avail_notifications(&self) -> bool {
        PackedFakeDevice::arm_avail_notifications(self)
    }

    fn reset(&mut self) {
        self.next_avail = Pos::START;
        self.next_used = Pos::START;
        self.unpublished.clear();
        self.unpublished_descs = 0;
        self.held.clear();
        self.taken.clear();
    }
}
