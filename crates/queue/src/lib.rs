//! Virtqueues, both sides of the ring, both formats.
//!
//! - [`driver`]: the driver side (what a guest kernel does): add scatter-gather buffers with a
//!   token, decide whether to notify the device, get used buffers back. Everything the device
//!   writes is validated.
//! - [`device`]: the device side (what a hypervisor or vhost-user backend does): pop available
//!   chains as iterators over validated segments, push used entries, decide whether to notify
//!   the driver. Everything the driver writes is validated.
//! - [`ordering`]: the memory orderings both sides use at each step of the ring protocol, in
//!   one place so the loom model checks the very orderings the code uses.
//!
//! The crate has no `unsafe`: all shared-memory access goes through
//! [`vireo_memory::SharedSlice`].
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod device;
pub mod driver;
#[cfg(feature = "std")]
pub mod loopback;
pub mod ordering;

use vireo_spec::Features;

/// Guest addresses of the three areas of a virtqueue (virtio 1.2 §2.6 "Virtqueues").
///
/// For a split ring: descriptor table, available ring, used ring. For a packed ring: descriptor
/// ring, driver event suppression area, device event suppression area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingAddresses {
    /// Descriptor table (split) or descriptor ring (packed).
    pub desc_table: u64,
    /// Available ring (split) or driver event suppression structure (packed).
    pub driver_area: u64,
    /// Used ring (split) or device event suppression structure (packed).
    pub device_area: u64,
}

/// Everything needed to attach either side to a ring in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Number of descriptors (split: a power of two up to 32768; packed: up to 32768).
    pub size: u16,
    /// Where the three areas are.
    pub addrs: RingAddresses,
    /// The negotiated features (the ring format and ring features are read from these).
    pub features: Features,
}

/// Ring format, chosen by [`Features::RING_PACKED`] (split when nothing was negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingFormat {
    /// Split virtqueue (virtio 1.2 §2.7).
    #[default]
    Split,
    /// Packed virtqueue (virtio 1.2 §2.8).
    Packed,
}

impl RingFormat {
    /// The format the negotiated `features` select.
    pub fn from_features(features: Features) -> Self {
        if features.contains(Features::RING_PACKED) {
            RingFormat::Packed
        } else {
            RingFormat::Split
        }
    }
}
