//! The vhost-user wire format (QEMU `docs/interop/vhost-user.rst`, "Message Specification"),
//! symmetric: every payload can be parsed and emitted, so the back-end and a front-end share it.
//!
//! A message is a 12-byte [`Header`] followed by `size` payload bytes; numbers are in the
//! machine's native byte order ("Message Specification": "All numbers are in the machine native
//! byte order"). Parsing checks every length and count and never panics.

mod features;
mod payload;
mod request;
pub mod view;

use core::fmt;

pub use features::{ProtocolFeatures, VHOST_USER_F_PROTOCOL_FEATURES};
pub use payload::{
    ConfigAccess, ConfigSpace, Inflight, MemoryRegion, MemoryTable, SingleRegion, VringAddr,
    VringFd, VringState, MAX_CONFIG_SIZE, MAX_MEMORY_REGIONS, VRING_F_LOG,
};
pub use request::{BackendRequest, Request};
use view::HeaderView;

/// Size of the message header in bytes.
pub const HEADER_SIZE: usize = 12;

/// Largest payload this crate accepts; a header announcing more is refused before reading it.
/// The largest payload the protocol defines for a block device is a memory table
/// (8 + 8 * 32 bytes) or a config space access (12 + 256 bytes).
pub const MAX_PAYLOAD: usize = 4096 + 256;

/// Protocol version carried in the low two bits of `flags` ("Header": "currently 0x01").
pub const VERSION: u32 = 1;
const VERSION_MASK: u32 = 0x3;
/// Header flag: this message is a reply ("Header", bit 2).
pub const FLAG_REPLY: u32 = 0x4;
/// Header flag: the sender wants a reply ("Header", bit 3; section "REPLY_ACK").
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// Why bytes from the peer are not a valid message or payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// Payload has the wrong size for its request.
    WrongSize {
        /// Size the payload must have.
        expected: usize,
        /// Size it has.
        actual: usize,
    },
    /// Header announces a payload larger than the maximum.
    PayloadTooLarge {
        /// Announced size.
        size: u32,
    },
    /// Header carries an unsupported protocol version.
    BadVersion {
        /// The header's flags.
        flags: u32,
    },
    /// Memory table lists more regions than the protocol allows.
    TooManyRegions {
        /// Announced number of regions.
        num: u32,
    },
    /// Config space access is larger than the maximum.
    ConfigTooLarge {
        /// Announced size.
        size: u32,
    },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MessageError::WrongSize { expected, actual } => {
                write!(f, "payload has {actual} bytes, expected {expected}")
            }
            MessageError::PayloadTooLarge { size } => {
                write!(
                    f,
                    "payload of {size} bytes exceeds the maximum of {MAX_PAYLOAD}"
                )
            }
            MessageError::BadVersion { flags } => {
                write!(f, "unsupported protocol version in flags {flags:#x}")
            }
            MessageError::TooManyRegions { num } => {
                write!(
                    f,
                    "memory table lists {num} regions, more than {MAX_MEMORY_REGIONS}"
                )
            }
            MessageError::ConfigTooLarge { size } => {
                write!(f, "config access of {size} bytes exceeds {MAX_CONFIG_SIZE}")
            }
        }
    }
}

impl std::error::Error for MessageError {}

/// The message header ("Message Specification", "Header").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request code (a [`Request`] for front-end messages and their replies).
    pub request: u32,
    /// Version and flag bits.
    pub flags: u32,
    /// Payload size in bytes.
    pub size: u32,
}

impl Header {
    /// A request header of protocol version 1 with the given extra flags (0 or
    /// [`FLAG_NEED_REPLY`]).
    pub fn for_request(request: Request, size: u32, flags: u32) -> Header {
        Header {
            request: request as u32,
            flags: VERSION | flags,
            size,
        }
    }

    /// The reply header to `self`, for a payload of `size` bytes.
    pub fn reply(&self, size: u32) -> Header {
        Header {
            request: self.request,
            flags: VERSION | FLAG_REPLY,
            size,
        }
    }

    /// Parses and checks a header: version 1, payload size at most [`MAX_PAYLOAD`].
    pub fn parse(bytes: &[u8; HEADER_SIZE]) -> Result<Header, MessageError> {
        let v = HeaderView::new_unchecked(&bytes[..]);
        let h = Header {
            request: v.request(),
            flags: v.flags(),
            size: v.size(),
        };
        if h.flags & VERSION_MASK != VERSION {
            return Err(MessageError::BadVersion { flags: h.flags });
        }
        if h.size as usize > MAX_PAYLOAD {
            return Err(MessageError::PayloadTooLarge { size: h.size });
        }
        Ok(h)
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        let mut v = HeaderView::new_unchecked(&mut out[..]);
        v.set_request(self.request);
        v.set_flags(self.flags);
        v.set_size(self.size);
        out
    }

    /// The request this header names, if known.
    pub fn known_request(&self) -> Option<Request> {
        Request::from_code(self.request)
    }

    /// True when the REPLY flag is set.
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }

    /// True when the NEED_REPLY flag is set.
    pub fn needs_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
}

/// A fixed- or variable-size payload: parsed from exactly the payload bytes, emitted likewise.
pub trait Payload: Sized {
    /// Parses the payload; fails unless `bytes` has exactly the right size.
    fn parse(bytes: &[u8]) -> Result<Self, MessageError>;
    /// Appends the payload's wire bytes to `out`.
    fn emit(&self, out: &mut Vec<u8>);
    /// The payload's wire bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }
}

impl Payload for u64 {
    fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let raw = <[u8; 8]>::try_from(bytes).map_err(|_| MessageError::WrongSize {
            expected: 8,
            actual: bytes.len(),
        })?;
        Ok(u64::from_ne_bytes(raw))
    }
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_round_trip_and_flags() {
        let h = Header::for_request(Request::SET_VRING_NUM, 8, FLAG_NEED_REPLY);
        let back = Header::parse(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
        assert!(back.needs_reply() && !back.is_reply());
        let r = back.reply(8);
        assert!(r.is_reply() && !r.needs_reply());
        assert_eq!(r.flags, 0x5);
        assert_eq!(back.known_request(), Some(Request::SET_VRING_NUM));
    }

    #[test]
    fn header_rejects_bad_version_and_huge_size() {
        let mut h = Header::for_request(Request::GET_FEATURES, 0, 0);
        h.flags = 2;
        assert_eq!(
            Header::parse(&h.to_bytes()),
            Err(MessageError::BadVersion { flags: 2 })
        );
        let h = Header {
            request: 1,
            flags: 1,
            size: MAX_PAYLOAD as u32 + 1,
        };
        assert!(matches!(
            Header::parse(&h.to_bytes()),
            Err(MessageError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn u64_needs_exactly_eight_bytes() {
        assert_eq!(u64::parse(&7u64.to_bytes()), Ok(7));
        assert!(u64::parse(&[0; 7]).is_err());
        assert!(u64::parse(&[0; 9]).is_err());
    }
}
