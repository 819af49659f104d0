//! Split virtqueue, driver side (virtio 1.2 §2.7): laying the ring out and adding buffers.
//! Publishing them and deciding on notifications are in `kick`; getting used buffers back,
//! used-buffer notification suppression and teardown in `used`.

mod kick;
mod used;

use vireo_memory::{MemoryError, SharedArea, SharedSlice};
use vireo_spec::split::{avail, desc, used as used_ring, MAX_QUEUE_SIZE};
use vireo_spec::Features;

use super::buffer::{self, TableFormat};
use super::error::{DeviceViolation, DriverQueueError};
use super::in_order::AddOrder;
use super::layout::RingLayout;
use super::ring::RingMemory;
use super::shadow::{FreeOrder, InFlight, Shadow};
use super::{BufferSegment, DriverQueueOptions, UsedNotifications};
use crate::ordering::FIELD;
use crate::{QueueConfig, RingAddresses};

/// The driver side of a split virtqueue, holding a token of type `T` per buffer in flight.
#[derive(Debug)]
pub struct SplitDriverQueue<T> {
    /// The ring memory (descriptor table, available ring, used ring, indirect tables) and the
    /// queue's health.
    mem: RingMemory,
    /// Guest address of the area's first byte.
    guest_addr: u64,
    size: u16,
    features: Features,
    layout: RingLayout,
    event_idx: bool,
    /// VIRTIO_F_IN_ORDER: descriptors go round the table in order and the device may report a
    /// batch with one used element (virtio 1.2 §2.7.9).
    in_order: bool,
    /// Free descriptors and buffers in flight.
    shadow: Shadow<T>,
    /// The head written in each available-ring slot (private copy: the sequence number of a
    /// buffer is its available-ring index), and the IN_ORDER batch being returned.
    order: AddOrder,
    /// Free-running index of the next available-ring slot to fill.
    avail_next: u16,
    /// The `avail.idx` last published.
    avail_published: u16,
    /// `avail.idx` when `kick_prepare` last decided.
    avail_decided: u16,
    /// Buffers published since `kick_prepare` last decided (saturating: only "2^16 or more"
    /// matters, because `need_event` cannot see further).
    published_since_decision: u32,
    /// The `avail.flags` last written.
    avail_flags: u16,
    /// Free-running index of the next used element to read.
    last_used: u16,
    /// The `used.idx` last read (validated).
    used_seen: u16,
    /// The `used_event` last written (EVENT_IDX only).
    used_event: u16,
    /// A full fence followed the last write of `used_event`.
    used_event_fenced: bool,
    notifications: UsedNotifications,
}

impl<T> SplitDriverQueue<T> {
    /// A split queue of `size` descriptors (a power of two up to 32768, virtio 1.2 §2.7) laid
    /// out in `area`, whose first byte the device sees at `guest_addr`. `area` must hold
    /// [`super::required_size`] bytes and be 16-byte aligned (on both sides); the ring part of
    /// it is zeroed. `features` are the negotiated ones (INDIRECT_DESC, EVENT_IDX and IN_ORDER
    /// are used).
    pub fn new(
        area: SharedArea,
        guest_addr: u64,
        size: u16,
        features: Features,
        options: DriverQueueOptions,
    ) -> Result<Self, DriverQueueError> {
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(DriverQueueError::InvalidSize { size });
        }
        let layout = RingLayout::split(size, features, &options);
        layout.check_area(&area, guest_addr)?;
        let in_order = features.has(Features::IN_ORDER);
        let free_order = if in_order {
            FreeOrder::Fifo
        } else {
            FreeOrder::Lifo
        };
        let mut q = SplitDriverQueue {
            mem: RingMemory::new(area),
            guest_addr,
            size,
            features,
            layout,
            event_idx: features.has(Features::EVENT_IDX),
            in_order,
            shadow: Shadow::new(size, free_order),
            order: AddOrder::new(size),
            avail_next: 0,
            avail_published: 0,
            avail_decided: 0,
            published_since_decision: 0,
            avail_flags: 0,
            last_used: 0,
            used_seen: 0,
            used_event: 0,
            used_event_fenced: true,
            notifications: UsedNotifications::Enabled,
        };
        q.mem.reset(q.layout.total)?;
        Ok(q)
    }

    /// Guest addresses of the descriptor table, available ring and used ring.
    pub fn addresses(&self) -> RingAddresses {
        self.layout.addresses(self.guest_addr)
    }

    /// Everything the device side needs to attach to this ring (size, addresses, features).
    pub fn config(&self) -> QueueConfig {
        QueueConfig {
            size: self.size,
            addrs: self.addresses(),
            features: self.features,
        }
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.shadow.num_free()
    }

    /// Buffers added and not yet returned (by `pop_used` or `detach_unused`).
    pub fn len_in_flight(&self) -> u16 {
        self.shadow.len_in_flight()
    }

    /// True once the device broke a ring rule (until [`Self::reset`]).
    pub fn is_broken(&self) -> bool {
        self.mem.is_broken()
    }

    /// Adds a buffer of `readable` segments (device-readable) followed by `writable` segments
    /// (device-writable: virtio 1.2 §2.7.4.2, writable after readable), with `token` to get back
    /// when the device has used it. With INDIRECT_DESC and 2 or more segments (up to the indirect
    /// table length) the buffer takes one descriptor and an indirect table (§2.7.5.3); otherwise
    /// one descriptor per segment. The head goes into the next available-ring slot
    /// (§2.7.13.2), but the device does not see it until [`Self::publish`].
    pub fn add(
        &mut self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        token: T,
    ) -> Result<(), DriverQueueError> {
        self.mem.check_usable()?;
        let n = buffer::check_segments(readable, writable, self.size)?;
        let indirect = n >= 2 && n <= self.layout.indirect_table_len;
        let needed = if indirect { 1 } else { n };
        let free = self.shadow.num_free();
        if needed > free {
            return Err(DriverQueueError::QueueFull { needed, free });
        }
        let written = if indirect {
            self.write_indirect(readable, writable, n)
        } else {
            self.write_direct(readable, writable, n)
        };
        let (head, tail) = written.map_err(|e| self.mem.fail(DeviceViolation::Memory(e)))?;
        let seq = self.avail_next;
        // The size is a power of two (checked in `new`).
        let slot = seq & (self.size - 1);
        let avail_slot = self.layout.driver_area + avail::RING + 2 * usize::from(slot);
        self.mem.store_u16(avail_slot, head, FIELD)?;
        self.order.record(seq, head);
        let buffer = InFlight {
            token,
            tail,
            count: needed,
            descs: needed,
            seq,
            writable: buffer::writable_bytes(writable),
        };
        self.shadow.take(buffer);
        self.avail_next = self.avail_next.wrapping_add(1);
        Ok(())
    }

    /// Writes a direct chain of `n` descriptors off the free list; returns (head, tail).
    fn write_direct(
        &self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        n: u16,
    ) -> Result<(u16, u16), MemoryError> {
        let ring = self.mem.slice();
        let mut head_tail = (0, 0);
        let segments = buffer::segments(readable, writable);
        for (i, ((seg, flags), (index, next))) in
            (1u16..).zip(segments.zip(self.shadow.peek_chain(n)))
        {
            let (flags, next) = if i < n {
                (flags | desc::F_NEXT, next)
            } else {
                (flags, 0)
            };
            let offset = self.layout.desc_table + desc::SIZE * usize::from(index);
            write_desc(&ring, offset, seg.addr, seg.len, flags, next)?;
            head_tail = (if i == 1 { index } else { head_tail.0 }, index);
        }
        Ok(head_tail)
    }

    /// Writes `n` segments into the indirect table of the next free descriptor, and that
    /// descriptor pointing at the table (virtio 1.2 §2.7.5.3); returns (head, head).
    fn write_indirect(
        &self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        n: u16,
    ) -> Result<(u16, u16), MemoryError> {
        let ring = self.mem.slice();
        let head = self.shadow.next_free().unwrap_or(0);
        let table = self.layout.indirect_table(head);
        let table_len =
            buffer::write_table(&ring, table, readable, writable, n, TableFormat::Split)?;
        let table_addr = self.guest_addr.wrapping_add(table as u64);
        let offset = self.layout.desc_table + desc::SIZE * usize::from(head);
        write_desc(&ring, offset, table_addr, table_len, desc::F_INDIRECT, 0)?;
        Ok((head, head))
    }

    /// True if the buffer with sequence number (available index) `seq` has been published:
    /// the unpublished ones are exactly those numbered `avail_published..avail_next` (at most
    /// `size` <= 2^15 buffers are in flight, so the 16-bit window cannot be ambiguous).
    #[inline]
    fn is_published(&self, seq: u16) -> bool {
        seq.wrapping_sub(self.avail_published) >= self.avail_next.wrapping_sub(self.avail_published)
    }

    /// Offset of `avail_event` at the end of the used ring.
    fn avail_event_offset(&self) -> usize {
        self.layout.device_area + used_ring::avail_event(self.size)
    }

    /// Offset of `used_event` at the end of the available ring.
    fn used_event_offset(&self) -> usize {
        self.layout.driver_area + avail::used_event(self.size)
    }
}

/// Writes one descriptor (virtio 1.2 §2.7.5) at `offset` of `ring`.
fn write_desc(
    ring: &SharedSlice<'_>,
    offset: usize,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) -> Result<(), MemoryError> {
    // Two 8-byte stores: `len`, `flags` and `next` are the little-endian second half of the
    // descriptor (the device side reads them the same way).
    const _: () = assert!(desc::FLAGS == desc::LEN + 4 && desc::NEXT == desc::LEN + 6);
    let rest = u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48;
    ring.store_u64(offset + desc::ADDR, addr, FIELD)?;
    ring.store_u64(offset + desc::LEN, rest, FIELD)
}
