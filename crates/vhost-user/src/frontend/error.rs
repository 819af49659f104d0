//! The front-end's error enum: every way a back-end (or the socket, or our own setup) can fail
//! a request. Each variant's doc comment is its message.

use core::fmt;

use vireo_memory::MemoryError;
use vireo_queue::driver::DriverQueueError;

use crate::connection::ConnectionError;
use crate::message::{MessageError, Request};

/// Why a front-end request, or the setup of a device through it, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendError {
    /// Connecting to the back-end's socket failed.
    Connect {
        /// The OS error number.
        errno: i32,
    },
    /// Back-end did not reply in time.
    Timeout {
        /// The request left unanswered.
        request: Request,
    },
    /// Back-end closed the connection.
    Disconnected {
        /// The request being sent or answered.
        request: Request,
    },
    /// Socket failed while sending a request or receiving its reply.
    Connection {
        /// The request being sent or answered.
        request: Request,
        /// What the socket layer saw.
        error: ConnectionError,
    },
    /// Reply names another request.
    WrongReply {
        /// The request sent.
        request: Request,
        /// The request code of the reply.
        got: u32,
    },
    /// Reply lacks the REPLY flag.
    NotAReply {
        /// The request sent.
        request: Request,
        /// The reply's flags.
        flags: u32,
    },
    /// Reply payload is malformed.
    BadPayload {
        /// The request sent.
        request: Request,
        /// What is wrong with the payload.
        error: MessageError,
    },
    /// Reply carries file descriptors where none belong.
    UnexpectedFds {
        /// The request sent.
        request: Request,
        /// How many arrived.
        count: usize,
    },
    /// Reply lacks the one file descriptor its request returns.
    MissingFd {
        /// The request sent.
        request: Request,
    },
    /// Back-end reported failure (REPLY_ACK status not zero).
    Refused {
        /// The request refused.
        request: Request,
        /// The status the back-end returned.
        status: u64,
    },
    /// Reply carries a value out of the range its request allows.
    BadValue {
        /// The request sent.
        request: Request,
        /// The value received.
        value: u64,
    },
    /// Back-end refused to read its config space (an empty `GET_CONFIG` reply).
    ConfigRefused {
        /// Offset asked for.
        offset: u32,
        /// Bytes asked for.
        len: usize,
    },
    /// Reply describes another ring, config window or region than the one asked for.
    Mismatch {
        /// The request sent.
        request: Request,
    },
    /// Connection is unusable after an earlier failure.
    Broken,
    /// Back-end does not offer a protocol feature this request needs.
    ProtocolFeatureMissing {
        /// The missing protocol feature bits.
        bits: u64,
    },
    /// Back-end does not offer required virtio features.
    FeatureMissing {
        /// The missing feature bits.
        bits: u64,
    },
    /// Front-end cannot use required feature bits.
    FeatureUnsupported {
        /// The bits.
        bits: u64,
    },
    /// Back-end reports an unusable number of queues.
    BadQueueCount {
        /// The reported number.
        count: u64,
    },
    /// Back-end has fewer queues than wanted.
    TooFewQueues {
        /// Queues wanted.
        wanted: u16,
        /// Queues the back-end has.
        available: u16,
    },
    /// Request names a queue the device does not have.
    NoSuchQueue {
        /// The queue index.
        index: u16,
    },
    /// More memory regions than the back-end or the protocol accepts.
    TooManyRegions {
        /// Regions given.
        count: usize,
        /// Most allowed.
        max: usize,
    },
    /// Config space access is larger than the protocol allows.
    ConfigTooLarge {
        /// Bytes asked for.
        len: usize,
    },
    /// Shared memory could not be created or used.
    Memory(MemoryError),
    /// Eventfd or poll operation failed.
    Io {
        /// The OS error number.
        errno: i32,
    },
    /// Buffer pool has no room for the allocation.
    PoolExhausted {
        /// Bytes asked for.
        len: usize,
        /// Bytes left.
        left: usize,
    },
    /// Queue setup or use failed: the device broke a ring rule, or the queue refused the input.
    Queue {
        /// The queue index.
        index: u16,
        /// What the queue reported.
        error: DriverQueueError,
    },
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrontendError::Connect { errno } => {
                write!(
                    f,
                    "connecting to the back-end's socket failed (errno {errno})"
                )
            }
            FrontendError::Timeout { request } => {
                write!(f, "back-end did not reply in time to {}", request.name())
            }
            FrontendError::Disconnected { request } => {
                write!(
                    f,
                    "back-end closed the connection during {}",
                    request.name()
                )
            }
            FrontendError::Connection { request, error } => {
                write!(f, "socket failed during {}: {error}", request.name())
            }
            FrontendError::WrongReply { request, got } => {
                write!(f, "reply to {} names request {got}", request.name())
            }
            FrontendError::NotAReply { request, flags } => write!(
                f,
                "reply to {} lacks the REPLY flag (flags {flags:#x})",
                request.name()
            ),
            FrontendError::BadPayload { request, error } => {
                write!(f, "reply to {} is malformed: {error}", request.name())
            }
            FrontendError::UnexpectedFds { request, count } => write!(
                f,
                "reply to {} carries {count} file descriptors where none belong",
                request.name()
            ),
            FrontendError::MissingFd { request } => write!(
                f,
                "reply to {} lacks the one file descriptor its request returns",
                request.name()
            ),
            FrontendError::Refused { request, status } => {
                write!(f, "back-end refused {} (status {status})", request.name())
            }
            FrontendError::BadValue { request, value } => write!(
                f,
                "reply to {} carries the out-of-range value {value:#x}",
                request.name()
            ),
            FrontendError::ConfigRefused { offset, len } => write!(
                f,
                "back-end refused to read its config space ({len} bytes at {offset:#x})"
            ),
            FrontendError::Mismatch { request } => write!(
                f,
                "reply to {} describes another ring, config window or region than asked",
                request.name()
            ),
            FrontendError::Broken => f.write_str("connection is unusable after an earlier failure"),
            FrontendError::ProtocolFeatureMissing { bits } => {
                write!(f, "back-end does not offer protocol feature bits {bits:#x}")
            }
            FrontendError::FeatureMissing { bits } => {
                write!(f, "back-end does not offer required feature bits {bits:#x}")
            }
            FrontendError::FeatureUnsupported { bits } => {
                write!(f, "front-end cannot use required feature bits {bits:#x}")
            }
            FrontendError::BadQueueCount { count } => {
                write!(f, "back-end reports an unusable number of queues ({count})")
            }
            FrontendError::TooFewQueues { wanted, available } => write!(
                f,
                "back-end has fewer queues than wanted ({available} < {wanted})"
            ),
            FrontendError::NoSuchQueue { index } => {
                write!(f, "device has no queue {index}")
            }
            FrontendError::TooManyRegions { count, max } => {
                write!(f, "{count} memory regions, more than the {max} allowed")
            }
            FrontendError::ConfigTooLarge { len } => {
                write!(
                    f,
                    "config access of {len} bytes is larger than the protocol allows"
                )
            }
            FrontendError::Memory(e) => {
                write!(f, "shared memory could not be created or used: {e}")
            }
            FrontendError::Io { errno } => {
                write!(f, "eventfd or poll operation failed (errno {errno})")
            }
            FrontendError::PoolExhausted { len, left } => {
                write!(f, "buffer pool has no room for {len} bytes ({left} left)")
            }
            FrontendError::Queue { index, error } => {
                write!(f, "queue {index} failed: {error}")
            }
        }
    }
}

impl std::error::Error for FrontendError {}

impl From<MemoryError> for FrontendError {
    fn from(e: MemoryError) -> Self {
        FrontendError::Memory(e)
    }
}

impl From<rustix::io::Errno> for FrontendError {
    fn from(e: rustix::io::Errno) -> Self {
        FrontendError::Io {
            errno: e.raw_os_error(),
        }
    }
}
