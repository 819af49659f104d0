//! Payloads ("Message Specification", "Payload"): each one parsed from exactly its bytes.

use super::{MessageError, Payload, Reader};

/// Most regions a `SET_MEM_TABLE` message carries ("Memory regions description":
/// region0 to region7).
pub const MAX_MEMORY_REGIONS: usize = 8;

/// Largest virtio config space access this crate handles (the front-end's config buffer).
pub const MAX_CONFIG_SIZE: usize = 256;

/// `flags` bit of a vring address: log used-ring writes ("Migration", `VHOST_VRING_F_LOG`).
pub const VRING_F_LOG: u32 = 1;

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
        let mut r = Reader::exact(bytes, 8)?;
        Ok(VringState {
            index: r.u32()?,
            num: r.u32()?,
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_ne_bytes());
        out.extend_from_slice(&self.num.to_ne_bytes());
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
        let mut r = Reader::exact(bytes, 40)?;
        Ok(VringAddr {
            index: r.u32()?,
            flags: r.u32()?,
            desc: r.u64()?,
            used: r.u64()?,
            avail: r.u64()?,
            log: r.u64()?,
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        for v in [self.desc, self.used, self.avail, self.log] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
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

    fn read(r: &mut Reader<'_>) -> Result<Self, MessageError> {
        Ok(MemoryRegion {
            guest_addr: r.u64()?,
            size: r.u64()?,
            user_addr: r.u64()?,
            mmap_offset: r.u64()?,
        })
    }
}

impl Payload for MemoryRegion {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        MemoryRegion::read(&mut Reader::exact(bytes, Self::SIZE)?)
    }
    fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.guest_addr, self.size, self.user_addr, self.mmap_offset] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
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
        let mut r = Reader::new(bytes);
        let num = r.u32()?;
        let _padding = r.u32()?;
        if num as usize > MAX_MEMORY_REGIONS {
            return Err(MessageError::TooManyRegions { num });
        }
        let expected = 8 + num as usize * MemoryRegion::SIZE;
        let mut r = Reader::exact(r.rest(), expected - 8).map_err(|_| MessageError::WrongSize {
            expected,
            actual: bytes.len(),
        })?;
        let regions = (0..num)
            .map(|_| MemoryRegion::read(&mut r))
            .collect::<Result<_, _>>()?;
        Ok(MemoryTable { regions })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.regions.len() as u32).to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
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
        let mut r = Reader::exact(bytes, 8 + MemoryRegion::SIZE)?;
        let _padding = r.u64()?;
        Ok(SingleRegion {
            region: MemoryRegion::read(&mut r)?,
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&0u64.to_ne_bytes());
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
        let mut r = Reader::new(bytes);
        let offset = r.u32()?;
        let size = r.u32()?;
        let flags = ConfigAccess::from_u32(r.u32()?);
        if size as usize > MAX_CONFIG_SIZE {
            return Err(MessageError::ConfigTooLarge { size });
        }
        let payload = r.rest();
        if payload.len() != size as usize {
            return Err(MessageError::WrongSize {
                expected: 12 + size as usize,
                actual: bytes.len(),
            });
        }
        Ok(ConfigSpace {
            offset,
            flags,
            payload: payload.to_vec(),
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_ne_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_ne_bytes());
        out.extend_from_slice(&self.flags.to_u32().to_ne_bytes());
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
        let mut r = Reader::exact(bytes, 24)?;
        Ok(Inflight {
            mmap_size: r.u64()?,
            mmap_offset: r.u64()?,
            num_queues: r.u16()?,
            queue_size: r.u16()?,
        })
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.mmap_size.to_ne_bytes());
        out.extend_from_slice(&self.mmap_offset.to_ne_bytes());
        out.extend_from_slice(&self.num_queues.to_ne_bytes());
        out.extend_from_slice(&self.queue_size.to_ne_bytes());
        out.extend_from_slice(&[0u8; 4]);
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
