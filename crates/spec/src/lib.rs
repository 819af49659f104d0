//! The virtio 1.x specification as Rust types: feature bits, device status, device ids, ring
//! layouts and device configuration, each wire format as a checked view over bytes.
//!
//! Section numbers cite "Virtual I/O Device (VIRTIO) Version 1.2" (OASIS), abbreviated
//! "virtio 1.2 §N".
//!
//! # Panics
//! Nothing in this crate panics on any input: views check lengths when they are made, and
//! parsing returns errors.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

pub mod features;
pub mod split;

pub use features::Features;
