//! Checked views of the split ring's structures (virtio 1.2 §2.7.5, §2.7.6, §2.7.8).

use super::{avail, desc, used};
use crate::error::ViewError;
use crate::view::define_view;
use bitflags::bitflags;

define_view! {
    /// One descriptor of the descriptor table, `struct virtq_desc` (§2.7.5).
    pub struct Descriptor(desc::SIZE) {
        /// Guest-physical address of the buffer.
        addr / set_addr: le64 @ desc::ADDR,
        /// Length of the buffer in bytes.
        len / set_len: le32 @ desc::LEN,
        /// `VIRTQ_DESC_F_*` flags.
        flags / set_flags: le16 @ desc::FLAGS,
        /// Index of the next descriptor when `F_NEXT` is set.
        next / set_next: le16 @ desc::NEXT,
    }
}

define_view! {
    /// The header of the available ring, `flags` and `idx` (§2.7.6); the ring entries follow.
    pub struct AvailHeader(avail::RING) {
        /// `VIRTQ_AVAIL_F_*` flags.
        flags / set_flags: le16 @ avail::FLAGS,
        /// Where the driver will put the next entry (free-running, wraps at 2^16).
        idx / set_idx: le16 @ avail::IDX,
    }
}

/// The used ring's header has the same layout as the available ring's (`flags` at 0, `idx` at
/// 2, §2.7.8), so the same view serves both.
pub type UsedHeader<T> = AvailHeader<T>;

define_view! {
    /// One element of the used ring, `struct virtq_used_elem` (§2.7.8).
    pub struct UsedElem(used::ELEM_SIZE) {
        /// Head index of the used descriptor chain (le32, though indices fit 16 bits).
        id / set_id: le32 @ 0,
        /// Bytes written into the device-writable part of the buffer.
        len / set_len: le32 @ 4,
    }
}

bitflags! {
    /// Split descriptor flags (§2.7.5). Unknown bits are kept (`from_bits_retain`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct DescFlags: u16 {
        /// The buffer continues in `next`.
        const NEXT = desc::F_NEXT;
        /// Device write-only buffer.
        const WRITE = desc::F_WRITE;
        /// The buffer is an indirect descriptor table (§2.7.5.3).
        const INDIRECT = desc::F_INDIRECT;
    }
}

/// A split descriptor as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitDescriptor {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// Flags, unknown bits kept.
    pub flags: DescFlags,
    /// Next descriptor index.
    pub next: u16,
}

impl SplitDescriptor {
    /// Reads a descriptor from its first [`desc::SIZE`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ViewError> {
        let view = Descriptor::new_checked(bytes)?;
        Ok(SplitDescriptor {
            addr: view.addr(),
            len: view.len(),
            flags: DescFlags::from_bits_retain(view.flags()),
            next: view.next(),
        })
    }

    /// Writes the descriptor into the first [`desc::SIZE`] bytes of `bytes`.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), ViewError> {
        let mut view = Descriptor::new_checked(bytes)?;
        view.set_addr(self.addr);
        view.set_len(self.len);
        view.set_flags(self.flags.bits());
        view.set_next(self.next);
        Ok(())
    }

    /// The descriptor as its 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; desc::SIZE] {
        let mut out = [0u8; desc::SIZE];
        let mut view = Descriptor::new_unchecked(&mut out[..]);
        view.set_addr(self.addr);
        view.set_len(self.len);
        view.set_flags(self.flags.bits());
        view.set_next(self.next);
        out
    }
}

/// A used-ring element as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitUsedElem {
    /// Chain head index.
    pub id: u32,
    /// Bytes written.
    pub len: u32,
}

impl SplitUsedElem {
    /// Reads an element from its first [`used::ELEM_SIZE`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ViewError> {
        let view = UsedElem::new_checked(bytes)?;
        Ok(SplitUsedElem {
            id: view.id(),
            len: view.len(),
        })
    }

    /// Writes the element into the first [`used::ELEM_SIZE`] bytes of `bytes`.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), ViewError> {
        let mut view = UsedElem::new_checked(bytes)?;
        view.set_id(self.id);
        view.set_len(self.len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn descriptor_wire_layout() {
        // virtio 1.2 §2.7.5: le64 addr, le32 len, le16 flags, le16 next.
        let d = SplitDescriptor {
            addr: 0x1122_3344_5566_7788,
            len: 0x0a0b_0c0d,
            flags: DescFlags::NEXT | DescFlags::WRITE,
            next: 0x0102,
        };
        let expected = [
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x0d, 0x0c, 0x0b, 0x0a, 3, 0, 2, 1,
        ];
        assert_eq!(d.to_bytes(), expected);
        assert_eq!(SplitDescriptor::parse(&expected), Ok(d));
    }

    #[test]
    fn short_buffers_are_refused() {
        assert_eq!(
            SplitDescriptor::parse(&[0u8; 15]),
            Err(ViewError::Truncated {
                needed: 16,
                got: 15
            })
        );
        assert!(SplitUsedElem::emit(&SplitUsedElem::default(), &mut [0u8; 7]).is_err());
        assert!(AvailHeader::new_checked(&[0u8; 3][..]).is_err());
    }

    #[test]
    fn avail_header_and_used_elem() {
        let mut buf = [0u8; 8];
        let mut h = AvailHeader::new_checked(&mut buf[..]).unwrap_or_else(|e| panic!("{e}"));
        h.set_flags(avail::F_NO_INTERRUPT);
        h.set_idx(0xfffe);
        assert_eq!(buf, [1, 0, 0xfe, 0xff, 0, 0, 0, 0]);
        let e = SplitUsedElem { id: 7, len: 4096 };
        e.emit(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(buf, [7, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(SplitUsedElem::parse(&buf), Ok(e));
    }

    proptest! {
        #[test]
        fn descriptor_round_trips(addr in any::<u64>(), len in any::<u32>(), flags in any::<u16>(), next in any::<u16>()) {
            let d = SplitDescriptor { addr, len, flags: DescFlags::from_bits_retain(flags), next };
            let mut buf = [0xaau8; 20];
            d.emit(&mut buf).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
            prop_assert_eq!(SplitDescriptor::parse(&buf), Ok(d));
            prop_assert_eq!(buf.get(16..), Some(&[0xaa; 4][..]), "emit writes only 16 bytes");
        }
    }
}
