//! Request codes (QEMU `docs/interop/vhost-user.rst`, "Front-end message types").

macro_rules! requests {
    ($(#[$enum_doc:meta])* $enum:ident, $prefix:literal {
        $($(#[$doc:meta])* $name:ident = $code:literal,)*
    }) => {
        $(#[$enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        #[allow(non_camel_case_types)]
        pub enum $enum {
            $($(#[$doc])* $name = $code,)*
        }

        impl $enum {
            /// The request with code `code`, or `None` for a code this crate does not know.
            pub fn from_code(code: u32) -> Option<$enum> {
                match code {
                    $($code => Some($enum::$name),)*
                    _ => None,
                }
            }

            /// The protocol's name for the request, e.g. `VHOST_USER_GET_FEATURES`.
            pub fn name(self) -> &'static str {
                match self {
                    $($enum::$name => concat!($prefix, stringify!($name)),)*
                }
            }
        }
    };
}

requests! {
    /// A front-end request code (the `request` header field of a message the front-end sends,
    /// and of the back-end's reply to it).
    Request, "VHOST_USER_" {
    /// Get the offered virtio feature bits (reply: u64).
    GET_FEATURES = 1,
    /// Acknowledge virtio feature bits (u64).
    SET_FEATURES = 2,
    /// Start of a session: the sender owns the back-end.
    SET_OWNER = 3,
    /// Deprecated: disable all rings.
    RESET_OWNER = 4,
    /// Memory regions, one fd each.
    SET_MEM_TABLE = 5,
    /// Dirty log memory (migration).
    SET_LOG_BASE = 6,
    /// Dirty log eventfd (migration).
    SET_LOG_FD = 7,
    /// Size of a ring (vring state).
    SET_VRING_NUM = 8,
    /// Addresses of a ring (vring address).
    SET_VRING_ADDR = 9,
    /// Next available index of a ring (vring state).
    SET_VRING_BASE = 10,
    /// Stop a ring and get its next available index (vring state, reply: vring state).
    GET_VRING_BASE = 11,
    /// Kick eventfd of a ring (u64 index, fd or polling bit).
    SET_VRING_KICK = 12,
    /// Call eventfd of a ring (u64 index, fd or polling bit).
    SET_VRING_CALL = 13,
    /// Error eventfd of a ring (u64 index, fd or no-fd bit).
    SET_VRING_ERR = 14,
    /// Get the offered protocol features (reply: u64).
    GET_PROTOCOL_FEATURES = 15,
    /// Acknowledge protocol features (u64).
    SET_PROTOCOL_FEATURES = 16,
    /// Get the number of queues (reply: u64).
    GET_QUEUE_NUM = 17,
    /// Enable or disable a ring (vring state).
    SET_VRING_ENABLE = 18,
    /// Broadcast a fake RARP (net).
    SEND_RARP = 19,
    /// Set the MTU (net).
    NET_SET_MTU = 20,
    /// Socket for back-end initiated requests.
    SET_BACKEND_REQ_FD = 21,
    /// IOTLB update or invalidation.
    IOTLB_MSG = 22,
    /// Ring endianness (legacy devices).
    SET_VRING_ENDIAN = 23,
    /// Read device configuration space (config, reply: config).
    GET_CONFIG = 24,
    /// Write device configuration space (config).
    SET_CONFIG = 25,
    /// Create a crypto session.
    CREATE_CRYPTO_SESSION = 26,
    /// Close a crypto session.
    CLOSE_CRYPTO_SESSION = 27,
    /// Postcopy migration: open a userfaultfd.
    POSTCOPY_ADVISE = 28,
    /// Postcopy migration: register memory with userfaultfd.
    POSTCOPY_LISTEN = 29,
    /// Postcopy migration finished.
    POSTCOPY_END = 30,
    /// Get a shared buffer for inflight I/O tracking (inflight).
    GET_INFLIGHT_FD = 31,
    /// Hand back the inflight I/O buffer (inflight, one fd).
    SET_INFLIGHT_FD = 32,
    /// GPU protocol socket.
    GPU_SET_SOCKET = 33,
    /// Disable all rings and reset the device state.
    RESET_DEVICE = 34,
    /// In-band kick (vring state).
    VRING_KICK = 35,
    /// Get the maximum number of memory slots (reply: u64).
    GET_MAX_MEM_SLOTS = 36,
    /// Add one memory region (single region, one fd).
    ADD_MEM_REG = 37,
    /// Remove one memory region (single region).
    REM_MEM_REG = 38,
    /// Set the virtio device status (u64).
    SET_STATUS = 39,
    /// Get the virtio device status (reply: u64).
    GET_STATUS = 40,
}
}

requests! {
    /// A back-end request code, on the back-end's request channel (`SET_BACKEND_REQ_FD`;
    /// "Back-end message types").
    BackendRequest, "VHOST_USER_BACKEND_" {
    /// IOTLB miss or access failure.
    IOTLB_MSG = 1,
    /// The device's config space changed.
    CONFIG_CHANGE_MSG = 2,
    /// Set up or remove a host notifier for a queue.
    VRING_HOST_NOTIFIER_MSG = 3,
    /// In-band used-buffer notification.
    VRING_CALL = 4,
    /// In-band error notification.
    VRING_ERR = 5,
}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_doc() {
        for code in 1..=40u32 {
            let r = Request::from_code(code);
            assert_eq!(r.map(|r| r as u32), Some(code), "code {code}");
        }
        assert_eq!(Request::from_code(0), None);
        assert_eq!(Request::from_code(41), None);
        assert_eq!(Request::GET_VRING_BASE as u32, 11);
        assert_eq!(Request::GET_CONFIG as u32, 24);
        assert_eq!(Request::RESET_DEVICE as u32, 34);
        assert_eq!(
            Request::GET_MAX_MEM_SLOTS.name(),
            "VHOST_USER_GET_MAX_MEM_SLOTS"
        );
    }
}
