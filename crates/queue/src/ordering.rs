//! The memory orderings of the ring protocol, named by the step they order.
//!
//! Both sides of every ring format use only these (no ad-hoc `Ordering` in ring code), and the
//! loom model (`tests/loom_*.rs`, run with `RUSTFLAGS="--cfg loom"`) checks the protocol with
//! exactly these values; its negative controls weaken one of them and must fail.
//!
//! virtio 1.2 §2.7.13 "Supplying Buffers to The Device" (split) and §2.8.21 (packed): the driver
//! writes descriptors, then (memory barrier) the index or flags that make them available; the
//! device reads the index, then (barrier) the descriptors. The same holds for used entries in
//! the other direction. Event suppression (§2.7.10, §2.8.10) additionally needs a full barrier
//! between publishing one's own index and reading the other side's event field.

use core::sync::atomic::{fence, Ordering};

/// Storing the index (split `avail.idx`/`used.idx`) or flags (packed descriptor flags) that
/// publishes entries written before it.
pub const PUBLISH: Ordering = Ordering::Release;

/// Loading the other side's index or flags before reading the entries they publish.
pub const CONSUME: Ordering = Ordering::Acquire;

/// Plain field accesses whose ordering is established by a PUBLISH/CONSUME pair or a fence.
pub const FIELD: Ordering = Ordering::Relaxed;

/// The ordering of [`notify_fence`]: it must be `SeqCst`, the only fence that orders a store
/// before a later load (store-load); `AcqRel` or `Release` fences do not, and the loom model's
/// negative controls show the lost wakeup they allow.
pub const NOTIFY_FENCE: Ordering = Ordering::SeqCst;

/// The full fence between publishing an index and reading the other side's event-suppression
/// field (or between re-enabling notifications and re-checking for work), so that at least one
/// side sees the other's write and no notification is lost.
#[inline]
pub fn notify_fence() {
    fence(NOTIFY_FENCE);
}
