//! The virtio 1.x specification as Rust types: feature bits, device status, device ids, ring
//! layouts and device configuration, each wire format as a checked view over bytes.
//!
//! Section numbers cite "Virtual I/O Device (VIRTIO) Version 1.2" (OASIS), abbreviated
//! "virtio 1.2 §N"; a few newer items cite the 1.3 draft.
//!
//! # Panics
//! Nothing in this crate panics on any input: views check lengths when they are made, and
//! parsing returns errors.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

pub mod blk;
mod bytes;
pub mod device_id;
pub mod error;
pub mod features;
pub mod layout;
pub mod names;
pub mod negotiation;
pub mod net;
pub mod notification;
pub mod packed;
pub mod split;
pub mod status;
mod view;

pub use device_id::{DeviceId, DeviceType};
pub use error::{SpecError, ViewError};
pub use features::Features;
pub use negotiation::{FeatureDependency, Negotiator, VersionPolicy};
