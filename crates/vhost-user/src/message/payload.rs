//! Payloads ("Message Specification", "Payload"): each one parsed from exactly its bytes.

use super::view::{
    ConfigView, InflightView, MemoryRegionView, MemoryTableView, VringAddrView, VringStateView,
};
use super::{MessageError, Payload};

/// Most regions a `SET_MEM_TABLE` message carries ("Memory regions description":
/// region0 to region7).
pub const MAX_MEMORY_REGIONS: usize = 8;

/// Largest virtio config space access this crate handles (the front-end's config buffer).
pub const MAX_CONFIG_SIZE: usize = 256;

/// `flags` bit of a vring address: log used-ring writes ("Migration", `VHOST_VRING_F_LOG`).
pub const VRING_F_LOG: u32 = 1;

/// Checks that `bytes` is exactly `expected` long.
fn exact(bytes: &[u8], expected: usize) -> Result<(), MessageError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(MessageError::WrongSize {
            expected,
            actual: bytes.len(),
        })
    }
}

/// Emits a fixed-size structure through its view.
fn emit_fixed<const N: usize>(out: &mut Vec<u8>, fill: impl FnOnce(&mut [u8])) {
    let mut buf = [0u8; N];
    fill(&mut buf);
    out.extend_from_slice(&buf);
}

/// "A vring state description": `SET_VRING_NUM`, `SET_VRING_BASE`, `GET_VRING_BASE`,
/// `SET_VRING_ENABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VringState {
    /// Ring index.
    pub index: u32,
    /// Size, base index or enable flag, depending on the request.
    pub num: u32,
}

impl Payload for VringState {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        exact(bytes, VringStateView::<&[u8]>::SIZE)?;
        let v = VringStateView::new_checked(bytes)?;
        Ok(VringState {
            index: v.index(),
            num: v.num(),
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        emit_fixed::<8>(out, |b| {
            let mut v = VringStateView::new_unchecked(b);
            v.set_index(self.index);
            v.set_num(self.num);
        });
    }
}

/// "A vring address description" (`SET_VRING_ADDR`). The addresses are front-end user
/// addresses ("Memory access"), unless an IOMMU is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VringAddr {
    /// Ring index.
    pub index: u32,
    /// [`VRING_F_LOG`] or 0.
    pub flags: u32,
    /// Descriptor table (split) or descriptor ring (packed).
    pub desc: u64,
    /// Used ring (split) or device event suppression area (packed).
    pub used: u64,
    /// Available ring (split) or driver event suppression area (packed).
    pub avail: u64,
    /// Guest address for logging used-ring writes.
    pub log: u64,
}

impl Payload for VringAddr {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        exact(bytes, VringAddrView::<&[u8]>::SIZE)?;
        let v = VringAddrView::new_checked(bytes)?;
        Ok(VringAddr {
            index: v.index(),
            flags: v.flags(),
            desc: v.desc(),
            used: v.used(),
            avail: v.avail(),
            log: v.log(),
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        emit_fixed::<40>(out, |b| {
            let mut v = VringAddrView::new_unchecked(b);
            v.set_index(self.index);
            v.set_flags(self.flags);
            v.set_desc(self.desc);
            v.set_used(self.used);
            v.set_avail(self.avail);
            v.set_log(self.log);
        });
    }
}

/// The u64 payload of `SET_VRING_KICK`/`CALL`/`ERR`: bits 0-7 the ring index, bit 8 set when
/// no fd is attached (kick, call: polling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringFd {
    /// Ring index.
    pub index: u8,
    /// True when the message carries no fd ("invalid FD flag").
    pub no_fd: bool,
}

impl VringFd {
    const INDEX_MASK: u64 = 0xff;
    const NO_FD: u64 = 0x100;

    /// Decodes the u64; bits above 8 are ignored, as the doc defines none.
    pub fn from_u64(v: u64) -> Self {
        VringFd {
            index: (v & Self::INDEX_MASK) as u8,
            no_fd: v & Self::NO_FD != 0,
        }
    }
    /// Encodes as the u64 payload.
    pub fn to_u64(self) -> u64 {
        u64::from(self.index) | if self.no_fd { Self::NO_FD } else { 0 }
    }
}

/// One memory region ("Memory regions description").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryRegion {
    /// Guest physical address of the first byte.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Front-end user (virtual) address of the first byte.
    pub user_addr: u64,
    /// Offset of the first byte in the region's fd.
    pub mmap_offset: u64,
}

impl MemoryRegion {
    /// Wire size of one region.
    pub const SIZE: usize = 32;

    fn from_view<T: AsRef<[u8]>>(v: &MemoryRegionView<T>) -> Self {
        MemoryRegion {
            guest_addr: v.guest_addr(),
            size: v.size(),
            user_addr: v.user_addr(),
            mmap_offset: v.mmap_offset(),
        }
    }
}

impl Payload for MemoryRegion {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        exact(bytes, Self::SIZE)?;
        Ok(MemoryRegion::from_view(&MemoryRegionView::new_checked(
            bytes,
        )?))
    }
    fn emit(&self, out: &mut Vec<u8>) {
        emit_fixed::<32>(out, |b| {
            let mut v = MemoryRegionView::new_unchecked(b);
            v.set_guest_addr(self.guest_addr);
            v.set_size(self.size);
            v.set_user_addr(self.user_addr);
            v.set_mmap_offset(self.mmap_offset);
        });
    }
}

/// "Memory regions description" (`SET_MEM_TABLE`): `num_regions`, padding, then exactly
/// `num_regions` regions (at most [`MAX_MEMORY_REGIONS`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryTable {
    /// The regions, in the order of the message's fds.
    pub regions: Vec<MemoryRegion>,
}

impl Payload for MemoryTable {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let head = MemoryTableView::new_checked(bytes)?;
        let num = head.num_regions();
        if num as usize > MAX_MEMORY_REGIONS {
            return Err(MessageError::TooManyRegions { num });
        }
        let fixed = MemoryTableView::<&[u8]>::SIZE;
        exact(bytes, fixed + num as usize * MemoryRegion::SIZE)?;
        let regions = bytes
            .get(fixed..)
            .unwrap_or_default()
            .chunks_exact(MemoryRegion::SIZE)
            .map(|c| MemoryRegion::from_view(&MemoryRegionView::new_unchecked(c)))
            .collect();
        Ok(MemoryTable { regions })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        emit_fixed::<8>(out, |b| {
            MemoryTableView::new_unchecked(b).set_num_regions(self.regions.len() as u32);
        });
        for region in &self.regions {
            region.emit(out);
        }
    }
}

/// "Single memory region description" (`ADD_MEM_REG`, `REM_MEM_REG`): 64-bit padding, then a
/// region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SingleRegion {
    /// The region.
    pub region: MemoryRegion,
}

impl Payload for SingleRegion {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        exact(bytes, 8 + MemoryRegion::SIZE)?;
        let region = MemoryRegion::parse(bytes.get(8..).unwrap_or_default())?;
        Ok(SingleRegion { region })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0u8; 8]);
        self.region.emit(out);
    }
}

/// The `flags` of a config space access ("Virtio device config space").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigAccess {
    /// 0: a front-end write of writable fields.
    Writable,
    /// 1: live migration (may write read-only fields).
    Migration,
    /// Any other value.
    Other(u32),
}

impl ConfigAccess {
    /// Decodes the flags field.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => ConfigAccess::Writable,
            1 => ConfigAccess::Migration,
            other => ConfigAccess::Other(other),
        }
    }
    /// Encodes the flags field.
    pub fn to_u32(self) -> u32 {
        match self {
            ConfigAccess::Writable => 0,
            ConfigAccess::Migration => 1,
            ConfigAccess::Other(v) => v,
        }
    }
}

/// "Virtio device config space" (`GET_CONFIG`, `SET_CONFIG`): offset, size, flags, then
/// exactly `size` bytes (at most [`MAX_CONFIG_SIZE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpace {
    /// Offset into the device's config space.
    pub offset: u32,
    /// Access kind.
    pub flags: ConfigAccess,
    /// The bytes (their length is the `size` field).
    pub payload: Vec<u8>,
}

impl Payload for ConfigSpace {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let head = ConfigView::new_checked(bytes)?;
        let size = head.size();
        if size as usize > MAX_CONFIG_SIZE {
            return Err(MessageError::ConfigTooLarge { size });
        }
        let fixed = ConfigView::<&[u8]>::SIZE;
        exact(bytes, fixed + size as usize)?;
        Ok(ConfigSpace {
            offset: head.offset(),
            flags: ConfigAccess::from_u32(head.flags()),
            payload: bytes.get(fixed..).unwrap_or_default().to_vec(),
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        emit_fixed::<12>(out, |b| {
            let mut v = ConfigView::new_unchecked(b);
            v.set_offset(self.offset);
            v.set_size(self.payload.len() as u32);
            v.set_flags(self.flags.to_u32());
        });
        out.extend_from_slice(&self.payload);
    }
}

/// "Inflight description" (`GET_INFLIGHT_FD`, `SET_INFLIGHT_FD`). On the wire it is a C struct
/// of two u64 and two u16, padded to 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inflight {
    /// Size of the tracking area.
    pub mmap_size: u64,
    /// Offset of the area in the fd.
    pub mmap_offset: u64,
    /// Number of queues.
    pub num_queues: u16,
    /// Size of each queue.
    pub queue_size: u16,
}

impl Payload for Inflight {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        exact(bytes, InflightView::<&[u8]>::SIZE)?;
        let v = InflightView::new_checked(bytes)?;
        Ok(Inflight {
            mmap_size: v.mmap_size(),
            mmap_offset: v.mmap_offset(),
            num_queues: v.num_queues(),
            queue_size: v.queue_size(),
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        emit_fixed::<24>(out, |b| {
            let mut v = InflightView::new_unchecked(b);
            v.set_mmap_size(self.mmap_size);
            v.set_mmap_offset(self.mmap_offset);
            v.set_num_queues(self.num_queues);
            v.set_queue_size(self.queue_size);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn round_trip<P: Payload + PartialEq + core::fmt::Debug>(p: P, size: usize) {
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), size);
        assert_eq!(P::parse(&bytes).unwrap(), p);
        // One byte short and one byte long are both refused.
        assert!(P::parse(&bytes[..size - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(P::parse(&long).is_err());
    }

    #[test]
    fn fixed_payloads_round_trip_with_exact_sizes() {
        round_trip(VringState { index: 1, num: 256 }, 8);
        round_trip(
            VringAddr {
                index: 2,
                flags: 1,
                desc: 3,
                used: 4,
                avail: 5,
                log: 6,
            },
            40,
        );
        let region = MemoryRegion {
            guest_addr: 1,
            size: 2,
            user_addr: 3,
            mmap_offset: 4,
        };
        round_trip(region, 32);
        round_trip(SingleRegion { region }, 40);
        round_trip(
            Inflight {
                mmap_size: 1,
                mmap_offset: 2,
                num_queues: 3,
                queue_size: 4,
            },
            24,
        );
    }

    #[test]
    fn vring_addr_field_order_is_desc_used_avail_log() {
        let a = VringAddr {
            index: 0,
            flags: 0,
            desc: 0x10,
            used: 0x20,
            avail: 0x30,
            log: 0x40,
        };
        let b = a.to_bytes();
        assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), 0x10);
        assert_eq!(u64::from_ne_bytes(b[16..24].try_into().unwrap()), 0x20);
        assert_eq!(u64::from_ne_bytes(b[24..32].try_into().unwrap()), 0x30);
    }

    #[test]
    fn memory_table_counts_are_checked() {
        let region = MemoryRegion {
            guest_addr: 0,
            size: 0x1000,
            user_addr: 0,
            mmap_offset: 0,
        };
        let table = MemoryTable {
            regions: vec![region; 3],
        };
        round_trip(table, 8 + 3 * 32);
        round_trip(MemoryTable::default(), 8);
        let full = MemoryTable {
            regions: vec![region; 8],
        }
        .to_bytes();
        assert!(MemoryTable::parse(&full).is_ok());
        let mut nine = full.clone();
        nine[..4].copy_from_slice(&9u32.to_ne_bytes());
        nine.extend_from_slice(&region.to_bytes());
        assert_eq!(
            MemoryTable::parse(&nine),
            Err(MessageError::TooManyRegions { num: 9 })
        );
        // A count that disagrees with the payload length.
        let mut lying = full;
        lying[..4].copy_from_slice(&7u32.to_ne_bytes());
        assert!(matches!(
            MemoryTable::parse(&lying),
            Err(MessageError::WrongSize { .. })
        ));
        assert!(MemoryTable::parse(&[0; 4]).is_err());
    }

    #[test]
    fn config_space_size_must_match_payload() {
        let c = ConfigSpace {
            offset: 4,
            flags: ConfigAccess::Writable,
            payload: vec![1, 2, 3],
        };
        round_trip(c, 15);
        let mut big = ConfigSpace {
            offset: 0,
            flags: ConfigAccess::Migration,
            payload: vec![],
        };
        big.payload = vec![0; MAX_CONFIG_SIZE + 1];
        assert!(matches!(
            ConfigSpace::parse(&big.to_bytes()),
            Err(MessageError::ConfigTooLarge { .. })
        ));
        assert_eq!(ConfigAccess::from_u32(7), ConfigAccess::Other(7));
    }

    #[test]
    fn vring_fd_bits() {
        assert_eq!(
            VringFd::from_u64(0x103),
            VringFd {
                index: 3,
                no_fd: true
            }
        );
        assert_eq!(
            VringFd::from_u64(0x2),
            VringFd {
                index: 2,
                no_fd: false
            }
        );
        assert_eq!(
            VringFd {
                index: 5,
                no_fd: true
            }
            .to_u64(),
            0x105
        );
    }
}

#[cfg(test)]
mod proptests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::message::Header;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes: parsing returns a value or an error, never panics, and what parses
        /// re-emits to the same bytes (exact sizes, no slack).
        #[test]
        fn arbitrary_bytes_never_panic_and_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(v) = VringState::parse(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
            if let Ok(v) = VringAddr::parse(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
            if let Ok(v) = SingleRegion::parse(&bytes) { prop_assert_eq!(v.region, MemoryRegion::parse(&bytes[8..]).unwrap_or_default()); }
            if let Ok(v) = MemoryTable::parse(&bytes) {
                prop_assert!(v.regions.len() <= MAX_MEMORY_REGIONS);
                prop_assert_eq!(v.to_bytes().len(), bytes.len());
            }
            if let Ok(v) = ConfigSpace::parse(&bytes) {
                prop_assert!(v.payload.len() <= MAX_CONFIG_SIZE);
                prop_assert_eq!(v.to_bytes(), bytes.clone());
            }
            let _ = Inflight::parse(&bytes);
            if let Some(h) = bytes.first_chunk::<12>() {
                if let Ok(h) = Header::parse(h) {
                    prop_assert!(h.size as usize <= crate::message::MAX_PAYLOAD);
                    prop_assert_eq!(h.flags & 3, 1);
                }
            }
        }
    }
}
