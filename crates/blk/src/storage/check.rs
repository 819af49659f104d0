//! Validation shared by every backend and both queue paths: a request is checked completely
//! before any byte moves.

use vireo_memory::SharedSlice;

use super::{Storage, StorageError};

/// Checks that `len` bytes at `offset` lie inside a device of `capacity` bytes.
pub(crate) fn range(offset: u64, len: u64, capacity: u64) -> Result<(), StorageError> {
    let end = offset
        .checked_add(len)
        .ok_or(StorageError::Overflow { offset, len })?;
    if end > capacity {
        return Err(StorageError::OutOfRange {
            offset,
            len,
            capacity,
        });
    }
    Ok(())
}

/// Total length of `bufs`, refused if it overflows a `u64`.
pub(crate) fn total_len(offset: u64, bufs: &[SharedSlice<'_>]) -> Result<u64, StorageError> {
    bufs.iter().try_fold(0u64, |sum, b| {
        sum.checked_add(b.len() as u64)
            .ok_or(StorageError::Overflow {
                offset,
                len: u64::MAX,
            })
    })
}

/// Checks alignment for direct I/O: offset, length and every buffer's address and length must
/// be multiples of `align` (1 means no requirement).
pub(crate) fn aligned(
    align: u64,
    offset: u64,
    len: u64,
    bufs: &[SharedSlice<'_>],
) -> Result<(), StorageError> {
    if align <= 1 {
        return Ok(());
    }
    let ok = |v: u64| v % align == 0;
    let bufs_ok = bufs
        .iter()
        .all(|b| ok(b.as_ptr() as u64) && ok(b.len() as u64));
    if ok(offset) && ok(len) && bufs_ok {
        Ok(())
    } else {
        Err(StorageError::Misaligned { align })
    }
}

/// Everything a scatter read or gather write needs checked; returns the total length.
pub(crate) fn transfer(
    storage: &dyn Storage,
    offset: u64,
    bufs: &[SharedSlice<'_>],
    write: Direction,
) -> Result<u64, StorageError> {
    if write == Direction::Write && storage.read_only() {
        return Err(StorageError::ReadOnly);
    }
    let len = total_len(offset, bufs)?;
    range(offset, len, storage.capacity())?;
    aligned(storage.alignment(), offset, len, bufs)?;
    Ok(len)
}

/// Everything a discard or write-zeroes request needs checked.
pub(crate) fn modify(storage: &dyn Storage, offset: u64, len: u64) -> Result<(), StorageError> {
    if storage.read_only() {
        return Err(StorageError::ReadOnly);
    }
    range(offset, len, storage.capacity())
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the backend into guest memory.
    Read,
    /// From guest memory into the backend.
    Write,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_at_the_edges() {
        assert_eq!(range(0, 4096, 4096), Ok(()));
        assert_eq!(range(4096, 0, 4096), Ok(()));
        assert_eq!(
            range(4096, 1, 4096),
            Err(StorageError::OutOfRange {
                offset: 4096,
                len: 1,
                capacity: 4096
            })
        );
        assert_eq!(
            range(4097, 0, 4096),
            Err(StorageError::OutOfRange {
                offset: 4097,
                len: 0,
                capacity: 4096
            })
        );
        assert_eq!(
            range(u64::MAX, 1, u64::MAX),
            Err(StorageError::Overflow {
                offset: u64::MAX,
                len: 1
            })
        );
        assert_eq!(
            range(1, u64::MAX, u64::MAX),
            Err(StorageError::Overflow {
                offset: 1,
                len: u64::MAX
            })
        );
    }
}
