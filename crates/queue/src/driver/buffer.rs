//! What both ring formats do with a buffer before it goes into the ring: check its segments,
//! count its device-writable bytes, and write its indirect table (virtio 1.2 §2.7.5.3 for the
//! split format, §2.8.7 for the packed one).

use vireo_memory::{MemoryError, SharedSlice};
use vireo_spec::{packed, split};

use super::error::DriverQueueError;
use super::BufferSegment;
use crate::ordering::FIELD;

/// Checks a buffer of `readable` then `writable` segments for a queue of `size` descriptors:
/// at least one segment, at most `size` (virtio 1.2 §2.7.5.3.1, §2.8.7), none empty, none
/// wrapping around the address space. Returns the number of segments.
pub(super) fn check_segments(
    readable: &[BufferSegment],
    writable: &[BufferSegment],
    size: u16,
) -> Result<u16, DriverQueueError> {
    let count = readable.len().saturating_add(writable.len());
    let n = match u16::try_from(count) {
        Ok(0) => return Err(DriverQueueError::EmptyBuffer),
        Ok(n) if n <= size => n,
        _ => {
            let max = usize::from(size);
            return Err(DriverQueueError::TooManySegments { count, max });
        }
    };
    for (index, seg) in readable.iter().chain(writable).enumerate() {
        if seg.len == 0 {
            return Err(DriverQueueError::ZeroLengthSegment { index });
        }
        let len = u64::from(seg.len);
        if seg.addr.checked_add(len).is_none() {
            return Err(DriverQueueError::AddressOverflow {
                addr: seg.addr,
                len,
            });
        }
    }
    Ok(n)
}

/// Device-writable bytes of a buffer.
pub(super) fn writable_bytes(writable: &[BufferSegment]) -> u64 {
    writable.iter().map(|s| u64::from(s.len)).sum()
}

/// The segments in chain order, each with the WRITE flag it gets (readable first, §2.7.4.2).
/// Both formats give WRITE the same value.
pub(super) fn segments<'s>(
    readable: &'s [BufferSegment],
    writable: &'s [BufferSegment],
) -> impl Iterator<Item = (&'s BufferSegment, u16)> {
    const _: () = assert!(split::desc::F_WRITE == packed::desc::F_WRITE);
    readable
        .iter()
        .map(|s| (s, 0))
        .chain(writable.iter().map(|s| (s, split::desc::F_WRITE)))
}

/// Which descriptor format an indirect table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TableFormat {
    /// Split descriptors chained by NEXT and `next` (virtio 1.2 §2.7.5.3).
    Split,
    /// Packed descriptors, chained implicitly by their order, WRITE the only flag (§2.8.7).
    Packed,
}

/// Writes the `n` segments of a buffer into the indirect table at byte `table` of `ring`;
/// returns the table's length in bytes (the indirect descriptor's `len`).
pub(super) fn write_table(
    ring: &SharedSlice<'_>,
    table: usize,
    readable: &[BufferSegment],
    writable: &[BufferSegment],
    n: u16,
    format: TableFormat,
) -> Result<u32, MemoryError> {
    const _: () = assert!(split::desc::SIZE == packed::desc::SIZE);
    for (i, (seg, flags)) in (1u16..).zip(segments(readable, writable)) {
        let at = table + split::desc::SIZE * usize::from(i - 1);
        ring.store_u64(at + split::desc::ADDR, seg.addr, FIELD)?;
        ring.store_u32(at + split::desc::LEN, seg.len, FIELD)?;
        match format {
            TableFormat::Split => {
                let (flags, next) = if i < n {
                    (flags | split::desc::F_NEXT, i)
                } else {
                    (flags, 0)
                };
                ring.store_u16(at + split::desc::FLAGS, flags, FIELD)?;
                ring.store_u16(at + split::desc::NEXT, next, FIELD)?;
            }
            TableFormat::Packed => {
                ring.store_u16(at + packed::desc::ID, 0, FIELD)?;
                ring.store_u16(at + packed::desc::FLAGS, flags, FIELD)?;
            }
        }
    }
    Ok(u32::from(n) * split::desc::SIZE as u32)
}
