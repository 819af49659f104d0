//! The virtio 1.x specification as Rust types: feature bits, device status, device ids, ring
//! layouts and device configuration, each wire format as a checked view over bytes.
//!
//! Section numbers cite "Virtual I/O Device (VIRTIO) Version 1.2" (OASIS), abbreviated
//! "virtio 1.2 §N"; a few newer items cite the 1.3 draft.
//!
//! | module | what |
//! |---|---|
//! | [`features`] | device-independent feature bits ([`Features`]) |
//! | [`negotiation`] | offered vs accepted features, dependency tables ([`Negotiator`]) |
//! | [`names`] | feature-bit names for listing (`vireo probe`) |
//! | [`status`] | device status bits and the initialisation sequence, device and driver side |
//! | [`device_id`] | the device-type table ([`DeviceId`], [`DeviceType`]) |
//! | [`split`], [`packed`] | ring offsets, flags, views, size/alignment checks |
//! | [`notification`] | VIRTIO_F_NOTIFICATION_DATA values |
//! | [`blk`], [`net`] | device formats: virtio-blk (full), virtio-net (features, header) |
//! | [`error`] | the error enums ([`SpecError`] wraps them all) |
//!
//! Views follow the smoltcp pattern: `Type::new_checked(buffer)` checks the length once,
//! then getters and setters read and write little-endian fields; a parsed form (`parse` /
//! `emit`) holds the values.
//!
//! # Panics
//! Nothing in this crate panics, on any input: views check lengths when they are made (and
//! even an unchecked view reads missing bytes as zero), parsing and every validation return
//! typed errors, arithmetic on peer-supplied numbers is checked or wrapping, and no loop runs
//! longer than a fixed bound. `tests/no_panic.rs` feeds arbitrary input to every entry point.
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
pub use layout::{LayoutError, RingArea, RingAreas};
pub use negotiation::{FeatureDependency, NegotiationError, Negotiator, VersionPolicy};
pub use status::{DeviceStatus, DriverInit, InitStep, StatusError, StatusMachine};
