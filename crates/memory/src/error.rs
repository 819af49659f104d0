use core::fmt;

/// Why a guest memory access was refused.
///
/// Every variant is caused by an address, length or layout that came from outside (usually the
/// other side of the ring); none of them is a bug in the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// Address range wraps around the 64-bit address space.
    Overflow {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
    },
    /// Address range is not inside any memory region.
    OutOfRange {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
    },
    /// Address range starts in one region and ends outside it.
    CrossesRegion {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
    },
    /// Offset range lies outside the shared slice.
    OutOfBounds {
        /// Offset into the slice.
        offset: usize,
        /// Size of the access.
        len: usize,
        /// Size of the slice.
        size: usize,
    },
    /// Field access is not aligned to the field's size.
    Misaligned {
        /// Offset into the slice.
        offset: usize,
        /// Required alignment.
        align: usize,
    },
    /// A new region overlaps an existing one.
    Overlap {
        /// Guest address of the new region.
        addr: u64,
        /// Length of the new region.
        len: u64,
    },
    /// A region could not be mapped or allocated.
    MapFailed {
        /// The OS error number, 0 where there is none (allocation failure).
        errno: i32,
    },
    /// Region is empty.
    EmptyRegion,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemoryError::Overflow { addr, len } => {
                write!(f, "address range {addr:#x}+{len:#x} overflows")
            }
            MemoryError::OutOfRange { addr, len } => {
                write!(f, "address range {addr:#x}+{len:#x} is not in guest memory")
            }
            MemoryError::CrossesRegion { addr, len } => {
                write!(
                    f,
                    "address range {addr:#x}+{len:#x} crosses a memory region boundary"
                )
            }
            MemoryError::OutOfBounds { offset, len, size } => {
                write!(
                    f,
                    "access {offset:#x}+{len:#x} is outside a {size:#x}-byte slice"
                )
            }
            MemoryError::Misaligned { offset, align } => {
                write!(f, "access at {offset:#x} is not {align}-byte aligned")
            }
            MemoryError::Overlap { addr, len } => {
                write!(f, "region {addr:#x}+{len:#x} overlaps an existing region")
            }
            MemoryError::MapFailed { errno } => write!(f, "mapping memory failed (errno {errno})"),
            MemoryError::EmptyRegion => write!(f, "memory region is empty"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MemoryError {}
