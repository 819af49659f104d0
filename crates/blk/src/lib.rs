//! virtio-blk (virtio 1.2, 5.2 "Block Device"): device side and driver side.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
