//! vhost-user (QEMU `docs/interop/vhost-user.rst`): the protocol that lets a device run in a
//! separate process from the VMM that owns the guest.
//!
//! - [`message`]: the wire format, both directions, independent of either side.
//! - [`connection`]: framing over a Unix stream socket with file descriptors.
//! - [`device`]: what a back-end drives ([`VhostUserDevice`], [`QueueHandler`]).
//! - [`backend`]: the back-end server and its session state machine.
//!
//! Nothing here panics on what a peer sends: malformed requests get an error reply or close the
//! connection, and received file descriptors are owned, so they cannot leak.
#![forbid(unsafe_code)]

pub mod backend;
pub mod connection;
pub mod device;
pub mod frontend;
pub mod message;
mod worker;

pub use backend::{BackendServer, StopHandle};
pub use device::{ConfigError, QueueHandler, VhostUserDevice};
