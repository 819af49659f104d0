//! The vhost-user front-end (QEMU `docs/interop/vhost-user.rst`): what a VMM does, here so that
//! Vireo can drive any vhost-user back-end from userspace.
//!
//! - [`Frontend`]: the protocol level, one method per request, every reply validated (request
//!   code, REPLY flag, size, no stray fds, REPLY_ACK status), each awaited with a timeout.
//! - [`UserDevice`]: a device driven through a back-end: negotiation, one shared memfd region
//!   holding the rings and a [`BufferPool`], [`UserQueue`]s with kick and call eventfds, and an
//!   orderly [`UserDevice::shutdown`].
//!
//! Nothing here panics on what the back-end sends: every failure is a [`FrontendError`].

mod client;
mod error;
mod memory;
mod queue;
mod user_device;

pub use client::{Frontend, FrontendOptions, RingEnable};
pub use error::FrontendError;
pub use memory::{BufferPool, GuestBuffer, SharedRegion, PAGE_SIZE};
pub use queue::{CallWait, UserQueue};
pub use user_device::{
    UserDevice, UserDeviceOptions, GUEST_BASE, MAX_QUEUES, UNSUPPORTED, WANTED_PROTOCOL_FEATURES,
};
