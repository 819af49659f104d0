//! Errors of the back-end: why a request was refused, and why a server stopped.

use core::fmt;

use vireo_memory::MemoryError;

use crate::connection::ConnectionError;
use crate::device::ConfigError;
use crate::message::MessageError;

/// Why the back-end refused a front-end request. With REPLY_ACK and NEED_REPLY the front-end gets
/// a non-zero reply and the session goes on; otherwise the connection is closed (QEMU
/// `docs/interop/vhost-user.rst`, "Communication" and "REPLY_ACK").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Payload is malformed.
    Message(MessageError),
    /// Request code is unknown or not supported by this back-end.
    Unsupported {
        /// The request code.
        code: u32,
    },
    /// Request needs a protocol feature that was not negotiated.
    NotNegotiated {
        /// The request code.
        code: u32,
    },
    /// Message carries file descriptors although its request takes none.
    UnexpectedFds {
        /// How many it carries.
        count: usize,
    },
    /// Message carries the wrong number of file descriptors.
    WrongFdCount {
        /// How many the request takes.
        expected: usize,
        /// How many it carries.
        actual: usize,
    },
    /// Front-end acknowledged virtio features the back-end did not offer.
    FeaturesNotOffered {
        /// The bits acknowledged but not offered.
        bits: u64,
    },
    /// Front-end acknowledged protocol features the back-end did not offer.
    ProtocolFeaturesNotOffered {
        /// The bits acknowledged but not offered.
        bits: u64,
    },
    /// Ring index is not below the number of queues.
    VringIndex {
        /// The index.
        index: u32,
        /// Number of queues.
        num_queues: u16,
    },
    /// Ring size is invalid for the ring format or above the device's maximum.
    VringSize {
        /// The requested size.
        size: u32,
        /// The device's maximum.
        max: u16,
    },
    /// A value does not fit its field (a ring base index or status over their bit widths).
    ValueOutOfRange {
        /// The value.
        value: u64,
    },
    /// A ring address is in no memory region's user address range.
    AddressNotMapped {
        /// The front-end user address.
        user_addr: u64,
    },
    /// A memory region has size zero, or its guest, user or file range overflows.
    InvalidRegion {
        /// The region's guest address.
        guest_addr: u64,
        /// The region's size.
        size: u64,
    },
    /// Two memory regions overlap in the front-end's user address space.
    UserRangeOverlap {
        /// The user address of the later region.
        user_addr: u64,
    },
    /// Adding the region would exceed the advertised number of memory slots.
    TooManyRegions {
        /// The advertised maximum.
        max: usize,
    },
    /// No memory region matches the one to remove.
    RegionNotFound {
        /// The region's guest address.
        guest_addr: u64,
    },
    /// Mapping or inserting a memory region failed.
    Memory(MemoryError),
    /// The device refused a config space access.
    Config(ConfigError),
    /// Creating an eventfd or thread for a queue failed.
    Resource {
        /// The OS error number.
        errno: i32,
    },
    /// Inflight description names no queues, or more than the device has.
    InflightQueues {
        /// Queues named.
        num_queues: u16,
        /// The device's number of queues.
        max: u16,
    },
    /// Inflight description names a queue size of zero or above the device's maximum.
    InflightQueueSize {
        /// The size named.
        queue_size: u16,
        /// The largest the device accepts.
        max: u16,
    },
    /// Inflight region size is not the one this back-end gives for those queues.
    InflightSize {
        /// The size for the queues named.
        expected: u64,
        /// The size sent.
        actual: u64,
    },
    /// Inflight region fd is not sealed against shrinking (the mapping could fault).
    InflightNotSealed,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RequestError::Message(e) => write!(f, "malformed payload: {e}"),
            RequestError::Unsupported { code } => write!(f, "request {code} is not supported"),
            RequestError::NotNegotiated { code } => {
                write!(
                    f,
                    "request {code} needs a protocol feature that was not negotiated"
                )
            }
            RequestError::UnexpectedFds { count } => {
                write!(
                    f,
                    "message carries {count} file descriptors, its request takes none"
                )
            }
            RequestError::WrongFdCount { expected, actual } => {
                write!(
                    f,
                    "message carries {actual} file descriptors, expected {expected}"
                )
            }
            RequestError::FeaturesNotOffered { bits } => {
                write!(f, "features {bits:#x} acknowledged but not offered")
            }
            RequestError::ProtocolFeaturesNotOffered { bits } => {
                write!(
                    f,
                    "protocol features {bits:#x} acknowledged but not offered"
                )
            }
            RequestError::VringIndex { index, num_queues } => {
                write!(
                    f,
                    "ring index {index} is not below the number of queues {num_queues}"
                )
            }
            RequestError::VringSize { size, max } => {
                write!(
                    f,
                    "ring size {size} is invalid (format rules, maximum {max})"
                )
            }
            RequestError::ValueOutOfRange { value } => {
                write!(f, "value {value:#x} does not fit its field")
            }
            RequestError::AddressNotMapped { user_addr } => {
                write!(f, "ring address {user_addr:#x} is in no memory region")
            }
            RequestError::InvalidRegion { guest_addr, size } => write!(
                f,
                "memory region {guest_addr:#x}+{size:#x} has size zero or an overflowing range"
            ),
            RequestError::UserRangeOverlap { user_addr } => {
                write!(
                    f,
                    "memory region at user address {user_addr:#x} overlaps another"
                )
            }
            RequestError::TooManyRegions { max } => {
                write!(f, "more memory regions than the {max} advertised slots")
            }
            RequestError::RegionNotFound { guest_addr } => {
                write!(
                    f,
                    "no memory region at guest address {guest_addr:#x} to remove"
                )
            }
            RequestError::Memory(e) => write!(f, "memory region refused: {e}"),
            RequestError::Config(e) => write!(f, "config access refused: {e}"),
            RequestError::Resource { errno } => {
                write!(f, "creating a queue resource failed (errno {errno})")
            }
            RequestError::InflightQueues { num_queues, max } => write!(
                f,
                "inflight description names {num_queues} queues; the device has 1 to {max}"
            ),
            RequestError::InflightQueueSize { queue_size, max } => write!(
                f,
                "inflight description names queue size {queue_size}; the device takes 1 to {max}"
            ),
            RequestError::InflightSize { expected, actual } => write!(
                f,
                "inflight region size {actual:#x} is not the {expected:#x} this back-end gives \
                 for those queues"
            ),
            RequestError::InflightNotSealed => write!(
                f,
                "inflight region fd is not sealed against shrinking (the mapping could fault)"
            ),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<MessageError> for RequestError {
    fn from(e: MessageError) -> Self {
        RequestError::Message(e)
    }
}

impl From<MemoryError> for RequestError {
    fn from(e: MemoryError) -> Self {
        RequestError::Memory(e)
    }
}

impl From<ConfigError> for RequestError {
    fn from(e: ConfigError) -> Self {
        RequestError::Config(e)
    }
}

/// Why a back-end server failed (its socket, not a front-end's requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// Socket or eventfd operation failed.
    Io {
        /// The OS error number.
        errno: i32,
    },
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BackendError::Io { errno } => {
                write!(f, "server socket operation failed (errno {errno})")
            }
        }
    }
}

impl std::error::Error for BackendError {}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::Io {
            errno: e.raw_os_error().unwrap_or(0),
        }
    }
}

impl From<rustix::io::Errno> for BackendError {
    fn from(e: rustix::io::Errno) -> Self {
        BackendError::Io {
            errno: e.raw_os_error(),
        }
    }
}

/// How a session with one front-end ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The front-end closed the connection between messages.
    Disconnected,
    /// The back-end closed the connection after a refused request it could not answer.
    Refused(RequestError),
    /// The connection broke (I/O error, truncated or malformed message).
    Broken(ConnectionError),
    /// The server was asked to stop.
    Stopped,
}
