//! virtio-blk (virtio 1.2, 5.2 "Block Device"): device side and driver side.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "std")]
pub mod device;
pub mod driver;
#[cfg(feature = "std")]
pub mod storage;
