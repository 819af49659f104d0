//! Guest memory for Vireo: memory that the other side of a virtqueue can write at any time.
//!
//! Layers, bottom up:
//! - [`shared`] (the only module here with `unsafe`): [`SharedSlice`], a bounds-checked view of
//!   shared bytes with atomic little-endian field access and bulk copies, and [`SharedArea`], the
//!   owned form that keeps its backing alive.
//! - [`GuestMemory`]: translation of a guest address range into a [`SharedSlice`], with every
//!   range validated (overflow, out of range, crossing a region boundary).
//! - [`GuestMemoryMap`]: the standard implementation, a sorted set of non-overlapping regions.
//! - [`OwnedRegion`]: a zeroed, page-aligned heap region, for in-process loopback and tests.
//!
//! Nothing in this crate panics on any input: every access is checked and returns a
//! [`MemoryError`].
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod map;
#[cfg(feature = "std")]
#[allow(unsafe_code)]
pub mod mmap;
#[allow(unsafe_code)]
pub mod shared;
#[cfg(feature = "vm-memory")]
#[allow(unsafe_code)]
pub mod vm_memory_adapter;

pub use error::MemoryError;
pub use map::{GuestMemory, GuestMemoryMap, GuestRegion};
pub use shared::{OwnedRegion, SharedArea, SharedBacking, SharedSlice};
