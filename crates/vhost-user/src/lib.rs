//! vhost-user (QEMU `docs/interop/vhost-user.rst`): the protocol that lets a device run in a
//! separate process from the VMM that owns the guest.
//!
//! - [`message`]: the wire format, both directions, independent of either side.
//! - [`connection`]: framing over a Unix stream socket with file descriptors.
#![forbid(unsafe_code)]

pub mod connection;
pub mod message;
