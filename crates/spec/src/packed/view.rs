//! Checked views of the packed ring's structures (virtio 1.2 §2.8.13, §2.8.14).

use super::{desc, event, WrapCounter};
use crate::error::ViewError;
use crate::view::define_view;
use bitflags::bitflags;

define_view! {
    /// One descriptor of the descriptor ring, `struct pvirtq_desc` (§2.8.13).
    pub struct Descriptor(desc::SIZE) {
        /// Buffer address.
        addr / set_addr: le64 @ desc::ADDR,
        /// Buffer length (for a used descriptor: bytes written).
        len / set_len: le32 @ desc::LEN,
        /// Buffer id.
        id / set_id: le16 @ desc::ID,
        /// Flags, including AVAIL and USED.
        flags / set_flags: le16 @ desc::FLAGS,
    }
}

define_view! {
    /// An event suppression structure, `struct pvirtq_event_suppress` (§2.8.14).
    pub struct EventSuppress(event::SIZE) {
        /// `desc`: descriptor ring offset (bits 0..15) and wrap counter (bit 15).
        off_wrap / set_off_wrap: le16 @ event::OFF_WRAP,
        /// `flags`: mode in bits 0..2, the rest reserved.
        flags / set_flags: le16 @ event::FLAGS,
    }
}

bitflags! {
    /// Packed descriptor flags (§2.8.13). Unknown bits are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PackedDescFlags: u16 {
        /// Chained to the next descriptor.
        const NEXT = desc::F_NEXT;
        /// Device write-only.
        const WRITE = desc::F_WRITE;
        /// Indirect descriptor table.
        const INDIRECT = desc::F_INDIRECT;
        /// AVAIL flag (§2.8.1).
        const AVAIL = desc::F_AVAIL;
        /// USED flag (§2.8.1).
        const USED = desc::F_USED;
    }
}

/// A packed descriptor as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackedDescriptor {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// Buffer id.
    pub id: u16,
    /// Flags, unknown bits kept.
    pub flags: PackedDescFlags,
}

impl PackedDescriptor {
    /// Reads a descriptor from its first [`desc::SIZE`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ViewError> {
        let view = Descriptor::new_checked(bytes)?;
        Ok(PackedDescriptor {
            addr: view.addr(),
            len: view.len(),
            id: view.id(),
            flags: PackedDescFlags::from_bits_retain(view.flags()),
        })
    }

    /// Writes the descriptor into the first [`desc::SIZE`] bytes of `bytes`.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), ViewError> {
        let mut view = Descriptor::new_checked(bytes)?;
        view.set_addr(self.addr);
        view.set_len(self.len);
        view.set_id(self.id);
        view.set_flags(self.flags.bits());
        Ok(())
    }
}

/// The mode of an event suppression structure (`flags`, §2.8.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventFlags {
    /// `RING_EVENT_FLAGS_ENABLE`: notify.
    Enable,
    /// `RING_EVENT_FLAGS_DISABLE`: do not notify.
    Disable,
    /// `RING_EVENT_FLAGS_DESC`: notify when the descriptor at `desc` is reached (EVENT_IDX).
    Desc,
    /// Value 3, reserved: a peer that writes it broke the rules; kept for the caller to judge.
    Reserved,
}

impl EventFlags {
    /// The mode from the `flags` field (reserved high bits ignored).
    pub const fn from_bits(flags: u16) -> EventFlags {
        match flags & event::FLAGS_MASK {
            event::FLAGS_ENABLE => EventFlags::Enable,
            event::FLAGS_DISABLE => EventFlags::Disable,
            event::FLAGS_DESC => EventFlags::Desc,
            _ => EventFlags::Reserved,
        }
    }

    /// The `flags` field value.
    pub const fn bits(self) -> u16 {
        match self {
            EventFlags::Enable => event::FLAGS_ENABLE,
            EventFlags::Disable => event::FLAGS_DISABLE,
            EventFlags::Desc => event::FLAGS_DESC,
            EventFlags::Reserved => event::FLAGS_MASK,
        }
    }
}

/// An event suppression structure as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSuppression {
    /// Descriptor ring offset (15 bits) the event refers to.
    pub offset: u16,
    /// Wrap counter the event refers to.
    pub wrap: WrapCounter,
    /// Mode.
    pub flags: EventFlags,
}

impl EventSuppression {
    /// Reads the structure from its first [`event::SIZE`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ViewError> {
        let view = EventSuppress::new_checked(bytes)?;
        let off_wrap = view.off_wrap();
        Ok(EventSuppression {
            offset: off_wrap & event::OFF_MASK,
            wrap: WrapCounter::from_bit(off_wrap >> 15),
            flags: EventFlags::from_bits(view.flags()),
        })
    }

    /// The `desc` field value (offset masked to 15 bits, wrap in bit 15).
    pub const fn off_wrap(&self) -> u16 {
        (self.offset & event::OFF_MASK) | (self.wrap.bit() << 15)
    }

    /// Writes the structure into the first [`event::SIZE`] bytes of `bytes`.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), ViewError> {
        let mut view = EventSuppress::new_checked(bytes)?;
        view.set_off_wrap(self.off_wrap());
        view.set_flags(self.flags.bits());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn descriptor_wire_layout() {
        // §2.8.13: le64 addr, le32 len, le16 id, le16 flags.
        let d = PackedDescriptor {
            addr: 0x1000,
            len: 512,
            id: 0x0304,
            flags: PackedDescFlags::AVAIL | PackedDescFlags::WRITE,
        };
        let mut buf = [0u8; 16];
        d.emit(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(buf, [0, 0x10, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 4, 3, 0x82, 0]);
        assert_eq!(PackedDescriptor::parse(&buf), Ok(d));
        assert!(PackedDescriptor::parse(&buf[..15]).is_err());
    }

    #[test]
    fn event_suppression_wire_layout() {
        let e = EventSuppression {
            offset: 0x1234,
            wrap: WrapCounter::INITIAL,
            flags: EventFlags::Desc,
        };
        let mut buf = [0u8; 4];
        e.emit(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(buf, [0x34, 0x92, 2, 0]);
        assert_eq!(EventSuppression::parse(&buf), Ok(e));
        // Reserved flag bits are ignored; value 3 is reported as reserved.
        assert_eq!(EventFlags::from_bits(0xfffd), EventFlags::Disable);
        assert_eq!(EventFlags::from_bits(3), EventFlags::Reserved);
        assert!(EventSuppression::parse(&buf[..3]).is_err());
    }

    proptest! {
        #[test]
        fn event_suppression_round_trips(off_wrap in any::<u16>(), mode in 0u16..3) {
            let mut buf = [0u8; 4];
            let mut view = EventSuppress::new_unchecked(&mut buf[..]);
            view.set_off_wrap(off_wrap);
            view.set_flags(mode);
            let parsed = EventSuppression::parse(&buf)
                .map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
            prop_assert_eq!(parsed.off_wrap(), off_wrap);
            prop_assert_eq!(parsed.flags.bits(), mode);
        }

        #[test]
        fn descriptor_round_trips(addr in any::<u64>(), len in any::<u32>(), id in any::<u16>(), flags in any::<u16>()) {
            let d = PackedDescriptor { addr, len, id, flags: PackedDescFlags::from_bits_retain(flags) };
            let mut buf = [0u8; 16];
            d.emit(&mut buf).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
            prop_assert_eq!(PackedDescriptor::parse(&buf), Ok(d));
        }
    }
}
