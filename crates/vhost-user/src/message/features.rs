//! Protocol feature bits (QEMU `docs/interop/vhost-user.rst`, "Protocol features").

use bitflags::bitflags;

/// Virtio feature bit 30, `VHOST_USER_F_PROTOCOL_FEATURES`: the back-end supports
/// `GET_PROTOCOL_FEATURES`/`SET_PROTOCOL_FEATURES` (vhost-user.rst, "Communication").
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

bitflags! {
    /// vhost-user protocol extensions, negotiated with `GET_PROTOCOL_FEATURES` /
    /// `SET_PROTOCOL_FEATURES`. Unknown bits are kept as they are (`from_bits_retain`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ProtocolFeatures: u64 {
        /// Multiple queues; `GET_QUEUE_NUM`.
        const MQ = 1 << 0;
        /// Dirty log shared as an fd with `SET_LOG_BASE`.
        const LOG_SHMFD = 1 << 1;
        /// `SEND_RARP`.
        const RARP = 1 << 2;
        /// Replies to any request with NEED_REPLY set (section "REPLY_ACK").
        const REPLY_ACK = 1 << 3;
        /// `NET_SET_MTU`.
        const MTU = 1 << 4;
        /// Back-end initiated requests over `SET_BACKEND_REQ_FD`.
        const BACKEND_REQ = 1 << 5;
        /// `SET_VRING_ENDIAN`.
        const CROSS_ENDIAN = 1 << 6;
        /// Crypto sessions.
        const CRYPTO_SESSION = 1 << 7;
        /// Postcopy migration with userfaultfd.
        const PAGEFAULT = 1 << 8;
        /// `GET_CONFIG` / `SET_CONFIG`.
        const CONFIG = 1 << 9;
        /// The back-end may send fds on its request channel.
        const BACKEND_SEND_FD = 1 << 10;
        /// Host notifiers mapped into the guest.
        const HOST_NOTIFIER = 1 << 11;
        /// Inflight I/O tracking in shared memory.
        const INFLIGHT_SHMFD = 1 << 12;
        /// `RESET_DEVICE`.
        const RESET_DEVICE = 1 << 13;
        /// Kicks and calls as messages.
        const INBAND_NOTIFICATIONS = 1 << 14;
        /// `GET_MAX_MEM_SLOTS`, `ADD_MEM_REG`, `REM_MEM_REG`.
        const CONFIGURE_MEM_SLOTS = 1 << 15;
        /// `SET_STATUS` / `GET_STATUS`.
        const STATUS = 1 << 16;
        /// Xen memory mapping.
        const XEN_MMAP = 1 << 17;
        /// Shared objects.
        const SHARED_OBJECT = 1 << 18;
        /// Device state transfer (migration).
        const DEVICE_STATE = 1 << 19;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bits_match_the_doc() {
        assert_eq!(ProtocolFeatures::REPLY_ACK.bits(), 8);
        assert_eq!(ProtocolFeatures::CONFIG.bits(), 0x200);
        assert_eq!(ProtocolFeatures::CONFIGURE_MEM_SLOTS.bits(), 0x8000);
        assert_eq!(ProtocolFeatures::STATUS.bits(), 0x1_0000);
        assert_eq!(ProtocolFeatures::from_bits_retain(1 << 40).bits(), 1 << 40);
    }
}
