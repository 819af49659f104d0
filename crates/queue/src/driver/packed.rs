//! Packed virtqueue, driver side (virtio 1.2 §2.8): laying the ring out and adding buffers.
//! Publishing them, deciding on notifications and notification data are in `kick`; getting
//! used buffers back, used-buffer notification suppression and teardown in `used`.
//!
//! One descriptor ring, written by both sides: the driver writes a buffer's descriptors at its
//! next available position with AVAIL/USED bits from its wrap counter (§2.8.1); the device
//! overwrites one descriptor per buffer with the buffer id and length, both bits equal to its
//! own wrap counter, at its next used position, and moves on by that buffer's descriptor count
//! (§2.8.6). Buffer ids come from a free list; what each id stands for (token, descriptor count,
//! writable bytes) is kept in a private shadow, never read back from the ring.

mod kick;
mod used;

use vireo_memory::{MemoryError, SharedArea};
use vireo_spec::packed::{self, desc, event, WrapCounter};
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

/// A ring position (0..size) and the wrap counter that goes with it (virtio 1.2 §2.8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    offset: u16,
    wrap: WrapCounter,
}

impl Position {
    const START: Position = Position {
        offset: 0,
        wrap: WrapCounter::INITIAL,
    };

    /// `n` descriptors further on in a ring of `size` (`n <= size`).
    fn advanced(self, n: u16, size: u16) -> Position {
        let end = u32::from(self.offset) + u32::from(n);
        if end >= u32::from(size) {
            Position {
                offset: u16::try_from(end - u32::from(size)).unwrap_or(0),
                wrap: self.wrap.toggled(),
            }
        } else {
            Position {
                offset: u16::try_from(end).unwrap_or(0),
                wrap: self.wrap,
            }
        }
    }

    /// The event suppression `desc` value for this position (offset | wrap << 15, §2.8.10).
    fn off_wrap(self) -> u16 {
        (self.offset & event::OFF_MASK) | (self.wrap.bit() << 15)
    }
}

/// The head descriptor whose flags make the buffers added since the last publication
/// available: written last, by `publish` (virtio 1.2 §2.8.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingHead {
    offset: u16,
    flags: u16,
}

/// The driver side of a packed virtqueue, holding a token of type `T` per buffer in flight.
#[derive(Debug)]
pub struct PackedDriverQueue<T> {
    /// The ring memory (descriptor ring, event suppression areas, indirect tables) and the
    /// queue's health.
    mem: RingMemory,
    /// Guest address of the area's first byte.
    guest_addr: u64,
    size: u16,
    features: Features,
    layout: RingLayout,
    event_idx: bool,
    /// VIRTIO_F_IN_ORDER: ids are handed out in order and the device may report a batch with
    /// one used descriptor (virtio 1.2 §2.8.8).
    in_order: bool,
    /// Free buffer ids and buffers in flight (by id).
    shadow: Shadow<T>,
    /// Ids by sequence number, and the IN_ORDER batch being returned.
    order: AddOrder,
    /// Descriptors not in flight.
    free_descs: u16,
    /// Where the next buffer's descriptors go.
    next_avail: Position,
    /// Sequence number of the next buffer to add.
    add_seq: u16,
    /// Sequence number of the first buffer not yet published.
    published_seq: u16,
    /// The first unpublished buffer's head, whose flags are still to be written.
    pending_head: Option<PendingHead>,
    /// Descriptors added since the last publication.
    pending_descs: u32,
    /// Just past the last descriptor published.
    published: Position,
    /// Descriptors published since `kick_prepare` last decided (saturating).
    published_since_decision: u32,
    /// Where the device writes its next used descriptor.
    next_used: Position,
    /// Sequence number of the oldest buffer not yet returned (IN_ORDER).
    returned_seq: u16,
    /// The driver event suppression structure as last written (`desc` | `flags` << 16).
    driver_event: u32,
    /// A full fence followed the last write of `driver_event`.
    driver_event_fenced: bool,
    notifications: UsedNotifications,
}

impl<T> PackedDriverQueue<T> {
    /// A packed queue of `size` descriptors (1 to 32768, virtio 1.2 §2.8) laid out in `area`,
    /// whose first byte the device sees at `guest_addr`. `area` must hold
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
        if packed::layout(size).is_err() {
            return Err(DriverQueueError::InvalidSize { size });
        }
        let layout = RingLayout::packed(size, features, &options);
        layout.check_area(&area, guest_addr)?;
        let in_order = features.has(Features::IN_ORDER);
        let free_order = if in_order {
            FreeOrder::Fifo
        } else {
            FreeOrder::Lifo
        };
        let mut q = PackedDriverQueue {
            mem: RingMemory::new(area),
            guest_addr,
            size,
            features,
            layout,
            event_idx: features.has(Features::EVENT_IDX),
            in_order,
            shadow: Shadow::new(size, free_order),
            order: AddOrder::new(size),
            free_descs: size,
            next_avail: Position::START,
            add_seq: 0,
            published_seq: 0,
            pending_head: None,
            pending_descs: 0,
            published: Position::START,
            published_since_decision: 0,
            next_used: Position::START,
            returned_seq: 0,
            driver_event: 0,
            driver_event_fenced: true,
            notifications: UsedNotifications::Enabled,
        };
        q.start()?;
        Ok(q)
    }

    /// Guest addresses of the descriptor ring and the driver and device event suppression
    /// structures.
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
        self.free_descs
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
    /// (device-writable), with `token` to get back when the device has used it. With
    /// INDIRECT_DESC and 2 or more segments (up to the indirect table length) the buffer takes
    /// one descriptor and an indirect table (virtio 1.2 §2.8.7); otherwise one descriptor per
    /// segment, chained with NEXT (§2.8.6). Every descriptor carries the buffer's id and the
    /// AVAIL/USED bits of the driver's wrap counter (§2.8.1), but the device does not see the
    /// buffer until [`Self::publish`]: the flags of the first head added since the last
    /// publication are written last (§2.8.21).
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
        let free = self.free_descs;
        // A buffer holds at least one descriptor, so a free descriptor means a free id.
        let id = match self.shadow.next_free() {
            Some(id) if needed <= free => id,
            _ => return Err(DriverQueueError::QueueFull { needed, free }),
        };
        let head_flags = if indirect {
            self.write_indirect(readable, writable, n, id)
        } else {
            self.write_direct(readable, writable, n, id)
        };
        let head_flags = head_flags.map_err(|e| self.mem.fail(DeviceViolation::Memory(e)))?;
        let head = self.next_avail.offset;
        if self.pending_head.is_none() {
            self.pending_head = Some(PendingHead {
                offset: head,
                flags: head_flags,
            });
        } else {
            // The device stops at the pending head, so it cannot see this one yet.
            self.mem
                .store_u16(self.flags_offset(head), head_flags, FIELD)?;
        }
        let seq = self.add_seq;
        self.shadow.take(InFlight {
            token,
            tail: id,
            count: 1,
            descs: needed,
            seq,
            writable: buffer::writable_bytes(writable),
        });
        self.order.record(seq, id);
        self.add_seq = seq.wrapping_add(1);
        self.free_descs = self.free_descs.saturating_sub(needed);
        self.pending_descs = self.pending_descs.saturating_add(needed.into());
        self.next_avail = self.next_avail.advanced(needed, self.size);
        Ok(())
    }

    /// Writes a chain of `n` descriptors from the next available position, all but the head's
    /// flags; returns the head's flags.
    fn write_direct(
        &self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        n: u16,
        id: u16,
    ) -> Result<u16, MemoryError> {
        let ring = self.mem.slice();
        let mut at = self.next_avail;
        let mut head_flags = 0;
        for (i, (seg, flags)) in (1u16..).zip(buffer::segments(readable, writable)) {
            let next = if i < n { desc::F_NEXT } else { 0 };
            let flags = flags | next | at.wrap.avail_flags();
            let offset = self.desc_offset(at.offset);
            ring.store_u64(offset + desc::ADDR, seg.addr, FIELD)?;
            ring.store_u32(offset + desc::LEN, seg.len, FIELD)?;
            ring.store_u16(offset + desc::ID, id, FIELD)?;
            if i == 1 {
                head_flags = flags;
            } else {
                ring.store_u16(offset + desc::FLAGS, flags, FIELD)?;
            }
            at = at.advanced(1, self.size);
        }
        Ok(head_flags)
    }

    /// Writes `n` segments into the indirect table of buffer `id`, and the descriptor at the
    /// next available position pointing at it (virtio 1.2 §2.8.7), all but its flags; returns
    /// its flags.
    fn write_indirect(
        &self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        n: u16,
        id: u16,
    ) -> Result<u16, MemoryError> {
        let ring = self.mem.slice();
        let table = self.layout.indirect_table(id);
        let table_len =
            buffer::write_table(&ring, table, readable, writable, n, TableFormat::Packed)?;
        let offset = self.desc_offset(self.next_avail.offset);
        let table_addr = self.guest_addr.wrapping_add(table as u64);
        ring.store_u64(offset + desc::ADDR, table_addr, FIELD)?;
        ring.store_u32(offset + desc::LEN, table_len, FIELD)?;
        ring.store_u16(offset + desc::ID, id, FIELD)?;
        Ok(desc::F_INDIRECT | self.next_avail.wrap.avail_flags())
    }

    /// True if the buffer with sequence number `seq` has been published: the unpublished ones
    /// are exactly those numbered `published_seq..add_seq` (at most `size` <= 2^15 buffers are
    /// in flight, so the 16-bit window cannot be ambiguous).
    #[inline]
    fn is_published(&self, seq: u16) -> bool {
        seq.wrapping_sub(self.published_seq) >= self.add_seq.wrapping_sub(self.published_seq)
    }

    /// Byte offset of ring descriptor `offset`.
    fn desc_offset(&self, offset: u16) -> usize {
        self.layout.desc_table + desc::SIZE * usize::from(offset)
    }

    /// Byte offset of the flags of ring descriptor `offset`.
    fn flags_offset(&self, offset: u16) -> usize {
        self.desc_offset(offset) + desc::FLAGS
    }

    /// Zeroes the ring and sets the starting state of the driver event suppression structure
    /// (with EVENT_IDX: notify at the first used descriptor).
    fn start(&mut self) -> Result<(), DriverQueueError> {
        self.mem.reset(self.layout.total)?;
        if self.event_idx {
            self.write_driver_event(event::FLAGS_DESC, self.next_used)?;
        }
        Ok(())
    }

    /// Writes the driver event suppression structure (`flags`, and `desc` for `at`) as one
    /// 32-bit store, so the device never sees half of it (virtio 1.2 §2.8.10).
    fn write_driver_event(&mut self, flags: u16, at: Position) -> Result<(), DriverQueueError> {
        let value = u32::from(at.off_wrap()) | (u32::from(flags) << 16);
        if value != self.driver_event {
            self.mem
                .store_u32(self.layout.driver_area + event::OFF_WRAP, value, FIELD)?;
            self.driver_event = value;
            self.driver_event_fenced = false;
        }
        Ok(())
    }
}
