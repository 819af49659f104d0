//! The strict fake device of a split ring (virtio 1.2 §2.7), plus raw access to every ring
//! field so tests can play a misbehaving device.

use std::collections::{HashMap, HashSet};

use vireo_memory::{GuestMemory, GuestMemoryMap, SharedSlice};
use vireo_queue::ordering::{CONSUME, FIELD, PUBLISH};
use vireo_queue::RingAddresses;
use vireo_spec::split::{avail, desc, need_event, used};
use vireo_spec::Features;

use vireo_queue::driver::{required_size, DriverQueueOptions, SplitDriverQueue};
use vireo_queue::RingFormat;

use super::{guest_memory, FakeDevice, SeenBuffer, SeenSeg, RING_BASE};

/// A split driver queue at [`RING_BASE`] and a strict fake device on its ring.
pub fn split_pair(
    size: u16,
    features: Features,
    options: DriverQueueOptions,
) -> (SplitDriverQueue<u32>, SplitFakeDevice) {
    let mem = guest_memory(required_size(RingFormat::Split, size, features, &options));
    let area = mem.regions()[0].area().clone();
    let q = SplitDriverQueue::new(area, RING_BASE, size, features, options).unwrap();
    let dev = SplitFakeDevice::new(mem, size, q.addresses(), features);
    (q, dev)
}

/// One descriptor as stored in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// `addr`.
    pub addr: u64,
    /// `len`.
    pub len: u32,
    /// `flags`.
    pub flags: u16,
    /// `next`.
    pub next: u16,
}

/// A split ring's device, strict about the driver.
#[derive(Debug)]
pub struct SplitFakeDevice {
    mem: GuestMemoryMap,
    size: u16,
    addrs: RingAddresses,
    features: Features,
    /// Next available-ring position to take.
    last_avail: u16,
    /// Next used-ring position to write.
    used_next: u16,
    /// `used.idx` as last published.
    used_published: u16,
    /// Descriptors (of the main table) each held buffer occupies, by id.
    held: HashMap<u16, Vec<u16>>,
    /// Held buffers in the order taken.
    taken: Vec<u16>,
}

impl SplitFakeDevice {
    /// A device for the ring of `size` at `addrs` in `mem`.
    pub fn new(mem: GuestMemoryMap, size: u16, addrs: RingAddresses, features: Features) -> Self {
        SplitFakeDevice {
            mem,
            size,
            addrs,
            features,
            last_avail: 0,
            used_next: 0,
            used_published: 0,
            held: HashMap::new(),
            taken: vec![],
        }
    }

    fn at(&self, addr: u64, len: usize) -> SharedSlice<'_> {
        self.mem.translate(addr, len as u64).unwrap()
    }

    fn avail(&self) -> SharedSlice<'_> {
        self.at(self.addrs.driver_area, avail::size(self.size))
    }

    fn used(&self) -> SharedSlice<'_> {
        self.at(self.addrs.device_area, used::size(self.size))
    }

    fn event_idx(&self) -> bool {
        self.features.contains(Features::EVENT_IDX)
    }

    /// Descriptor `i` of the table at `table`.
    pub fn desc_at(&self, table: u64, i: u16) -> RawDesc {
        let s = self.at(table + desc::SIZE as u64 * u64::from(i), desc::SIZE);
        RawDesc {
            addr: s.load_u64(desc::ADDR, FIELD).unwrap(),
            len: s.load_u32(desc::LEN, FIELD).unwrap(),
            flags: s.load_u16(desc::FLAGS, FIELD).unwrap(),
            next: s.load_u16(desc::NEXT, FIELD).unwrap(),
        }
    }

    /// Descriptor `i` of the main table.
    pub fn desc(&self, i: u16) -> RawDesc {
        assert!(i < self.size, "descriptor {i} outside the table");
        self.desc_at(self.addrs.desc_table, i)
    }

    /// Overwrites descriptor `i` of the main table (a device scribbling on driver memory).
    pub fn scribble_desc(&self, i: u16, d: RawDesc) {
        let s = self.at(
            self.addrs.desc_table + desc::SIZE as u64 * u64::from(i),
            desc::SIZE,
        );
        s.store_u64(desc::ADDR, d.addr, FIELD).unwrap();
        s.store_u32(desc::LEN, d.len, FIELD).unwrap();
        s.store_u16(desc::FLAGS, d.flags, FIELD).unwrap();
        s.store_u16(desc::NEXT, d.next, FIELD).unwrap();
    }

    /// `avail.idx`.
    pub fn avail_idx(&self) -> u16 {
        self.avail().load_u16(avail::IDX, CONSUME).unwrap()
    }

    /// `avail.flags`.
    pub fn avail_flags(&self) -> u16 {
        self.avail().load_u16(avail::FLAGS, FIELD).unwrap()
    }

    /// `avail.ring[pos % size]`.
    pub fn avail_entry(&self, pos: u16) -> u16 {
        let slot = usize::from(pos % self.size);
        self.avail()
            .load_u16(avail::RING + 2 * slot, FIELD)
            .unwrap()
    }

    /// `used_event` (the end of the available ring).
    pub fn used_event(&self) -> u16 {
        self.avail()
            .load_u16(avail::used_event(self.size), FIELD)
            .unwrap()
    }

    /// Sets `used.flags`.
    pub fn set_used_flags(&self, flags: u16) {
        self.used().store_u16(used::FLAGS, flags, FIELD).unwrap();
    }

    /// Sets `avail_event` (the end of the used ring).
    pub fn set_avail_event(&self, event: u16) {
        self.used()
            .store_u16(used::avail_event(self.size), event, FIELD)
            .unwrap();
    }

    /// Writes used element `pos % size` as is, with no check.
    pub fn write_used_raw(&self, pos: u16, id: u32, len: u32) {
        let off = used::RING + used::ELEM_SIZE * usize::from(pos % self.size);
        self.used().store_u32(off, id, FIELD).unwrap();
        self.used().store_u32(off + 4, len, FIELD).unwrap();
    }

    /// Stores `used.idx` as is, with no check.
    pub fn set_used_idx_raw(&mut self, idx: u16) {
        self.used().store_u16(used::IDX, idx, PUBLISH).unwrap();
    }

    /// The next used position this device writes.
    pub fn used_next(&self) -> u16 {
        self.used_next
    }

    /// Next available position this device takes.
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// Before waiting for a kick (virtio 1.2 §2.7.10): with EVENT_IDX, asks for a notification
    /// at the next position to take (`avail_event`); then a full fence and a fresh look. `true`:
    /// buffers are already available, take them instead of waiting.
    pub fn arm_avail_notifications(&self) -> bool {
        if self.event_idx() {
            self.set_avail_event(self.last_avail);
        }
        vireo_queue::ordering::notify_fence();
        self.avail_idx() != self.last_avail
    }

    /// Walks the chain at `head`: the main-table descriptors it occupies and the buffer.
    fn walk(&self, head: u16) -> (Vec<u16>, SeenBuffer) {
        let mut buf = SeenBuffer {
            id: head,
            readable: vec![],
            writable: vec![],
            indirect: false,
        };
        let mut descs = vec![];
        let mut i = head;
        loop {
            assert!(i < self.size, "chain leaves the table at {i}");
            assert!(!descs.contains(&i), "chain loops at descriptor {i}");
            assert!(
                descs.len() < usize::from(self.size),
                "chain longer than the queue"
            );
            let d = self.desc(i);
            descs.push(i);
            if d.flags & desc::F_INDIRECT != 0 {
                // virtio 1.2 §2.7.5.3.1: only with the feature, alone, no NEXT.
                assert!(
                    self.features.contains(Features::INDIRECT_DESC),
                    "indirect not negotiated"
                );
                assert_eq!(
                    d.flags,
                    desc::F_INDIRECT,
                    "indirect descriptor with other flags"
                );
                assert_eq!(i, head, "indirect descriptor inside a direct chain");
                self.walk_table(d, &mut buf);
                buf.indirect = true;
                return (descs, buf);
            }
            self.push_seg(&mut buf, d);
            if d.flags & desc::F_NEXT == 0 {
                return (descs, buf);
            }
            i = d.next;
        }
    }

    fn walk_table(&self, table: RawDesc, buf: &mut SeenBuffer) {
        assert!(
            table.len >= 16 && table.len % 16 == 0,
            "indirect table length {}",
            table.len
        );
        let n = u16::try_from(table.len / 16).unwrap();
        assert!(n <= self.size, "indirect table longer than the queue");
        assert_eq!(table.addr % 16, 0, "indirect table misaligned");
        let mut seen = vec![];
        let mut i = 0;
        loop {
            assert!(i < n, "indirect chain leaves its table at {i}");
            assert!(!seen.contains(&i), "indirect chain loops at {i}");
            seen.push(i);
            let d = self.desc_at(table.addr, i);
            assert_eq!(d.flags & desc::F_INDIRECT, 0, "nested indirect table");
            self.push_seg(buf, d);
            if d.flags & desc::F_NEXT == 0 {
                assert_eq!(
                    seen.len(),
                    usize::from(n),
                    "indirect table has unused entries"
                );
                return;
            }
            i = d.next;
        }
    }

    fn push_seg(&self, buf: &mut SeenBuffer, d: RawDesc) {
        assert!(d.len > 0, "zero-length segment");
        // The driver passes addresses through: each must be real guest memory.
        self.mem.translate(d.addr, u64::from(d.len)).unwrap();
        let seg = SeenSeg {
            addr: d.addr,
            len: d.len,
        };
        if d.flags & desc::F_WRITE != 0 {
            buf.writable.push(seg);
        } else {
            assert!(
                buf.writable.is_empty(),
                "readable segment after a writable one"
            );
            buf.readable.push(seg);
        }
    }
}

impl FakeDevice for SplitFakeDevice {
    fn mem(&self) -> &GuestMemoryMap {
        &self.mem
    }

    fn pop_avail(&mut self) -> Option<SeenBuffer> {
        if self.event_idx() {
            assert_eq!(
                self.avail_flags(),
                0,
                "avail.flags must be 0 with EVENT_IDX (§2.7.7.1)"
            );
        } else {
            assert!(
                self.avail_flags() <= avail::F_NO_INTERRUPT,
                "unknown avail.flags"
            );
        }
        let idx = self.avail_idx();
        let pending = idx.wrapping_sub(self.last_avail);
        assert!(
            usize::from(pending) + self.held.len() <= usize::from(self.size),
            "driver published {pending} buffers with {} held, in a ring of {}",
            self.held.len(),
            self.size
        );
        if pending == 0 {
            return None;
        }
        let head = self.avail_entry(self.last_avail);
        assert!(
            !self.held.contains_key(&head),
            "head {head} made available while held"
        );
        let (descs, buf) = self.walk(head);
        let busy: HashSet<u16> = self.held.values().flatten().copied().collect();
        assert!(
            descs.iter().all(|d| !busy.contains(d)),
            "chain shares descriptors"
        );
        self.held.insert(head, descs);
        self.taken.push(head);
        self.last_avail = self.last_avail.wrapping_add(1);
        Some(buf)
    }

    fn use_buffer(&mut self, id: u16, written: u32) {
        assert!(
            self.held.remove(&id).is_some(),
            "device test bug: buffer {id} not held"
        );
        self.taken.retain(|&t| t != id);
        self.write_used_raw(self.used_next, u32::from(id), written);
        self.used_next = self.used_next.wrapping_add(1);
    }

    fn use_batch(&mut self, count: usize, written: u32) -> u16 {
        assert!(count >= 1 && count <= self.taken.len(), "device test bug");
        let batch: Vec<u16> = self.taken.drain(..count).collect();
        for id in &batch {
            self.held.remove(id);
        }
        let last = *batch.last().unwrap();
        self.write_used_raw(self.used_next, u32::from(last), written);
        for i in 1..count as u16 {
            self.write_used_raw(self.used_next.wrapping_add(i), 0xdead, u32::MAX);
        }
        self.used_next = self.used_next.wrapping_add(count as u16);
        last
    }

    fn publish_used(&mut self) -> bool {
        let (old, new) = (self.used_published, self.used_next);
        self.used().store_u16(used::IDX, new, PUBLISH).unwrap();
        self.used_published = new;
        vireo_queue::ordering::notify_fence();
        if self.event_idx() {
            need_event(self.used_event(), new, old)
        } else {
            old != new && self.avail_flags() & avail::F_NO_INTERRUPT == 0
        }
    }

    fn held(&self) -> usize {
        self.held.len()
    }

    fn arm_avail_notifications(&self) -> bool {
        SplitFakeDevice::arm_avail_notifications(self)
    }

    fn reset(&mut self) {
        self.last_avail = 0;
        self.used_next = 0;
        self.used_published = 0;
        self.held.clear();
        self.taken.clear();
    }
}
