//! Checked, smoltcp-style views over message bytes: `new_checked` validates the length once,
//! then getters and setters read and write native-endian fields at fixed offsets (vhost-user
//! numbers are "in the machine native byte order"). Nothing here panics.

use super::MessageError;

/// A native-endian integer field.
pub(crate) trait Field: Sized + Copy {
    fn get(buf: &[u8], offset: usize) -> Self;
    fn set(self, buf: &mut [u8], offset: usize);
}

macro_rules! field {
    ($t:ty, $n:literal) => {
        impl Field for $t {
            #[inline]
            fn get(buf: &[u8], offset: usize) -> Self {
                // Views check their length on creation; a short unchecked buffer reads zero.
                offset
                    .checked_add($n)
                    .and_then(|end| buf.get(offset..end))
                    .and_then(|s| <[u8; $n]>::try_from(s).ok())
                    .map_or(0, <$t>::from_ne_bytes)
            }
            #[inline]
            fn set(self, buf: &mut [u8], offset: usize) {
                if let Some(dst) = offset
                    .checked_add($n)
                    .and_then(|end| buf.get_mut(offset..end))
                {
                    dst.copy_from_slice(&self.to_ne_bytes());
                }
            }
        }
    };
}

field!(u16, 2);
field!(u32, 4);
field!(u64, 8);

/// Defines a view `$name<T>` of `$size` bytes with one getter (and setter) per field.
macro_rules! view {
    (
        $(#[$meta:meta])*
        $name:ident ($size:expr) {
            $( $(#[doc = $doc:literal])* $get:ident / $set:ident : $t:ident @ $off:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<T> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Size of the structure in bytes.
            pub const SIZE: usize = $size;

            /// Wraps `buffer` after checking it holds at least [`Self::SIZE`] bytes.
            pub fn new_checked(buffer: T) -> Result<Self, MessageError> {
                let actual = buffer.as_ref().len();
                if actual < Self::SIZE {
                    return Err(MessageError::WrongSize { expected: Self::SIZE, actual });
                }
                Ok($name { buffer })
            }

            /// Wraps `buffer` without a length check (missing bytes read as zero and writes to
            /// them are dropped; nothing panics).
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// The underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            $(
                $(#[doc = $doc])*
                #[inline]
                pub fn $get(&self) -> $t {
                    <$t as $crate::message::view::Field>::get(self.buffer.as_ref(), $off)
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            $(
                $(#[doc = $doc])*
                #[inline]
                pub fn $set(&mut self, value: $t) {
                    $crate::message::view::Field::set(value, self.buffer.as_mut(), $off)
                }
            )*
        }
    };
}

view! {
    /// The message header ("Header").
    HeaderView(12) {
        /// Request code.
        request / set_request: u32 @ 0,
        /// Version and flags.
        flags / set_flags: u32 @ 4,
        /// Payload size.
        size / set_size: u32 @ 8,
    }
}

view! {
    /// "A vring state description".
    VringStateView(8) {
        /// Ring index.
        index / set_index: u32 @ 0,
        /// Number.
        num / set_num: u32 @ 4,
    }
}

view! {
    /// "A vring address description".
    VringAddrView(40) {
        /// Ring index.
        index / set_index: u32 @ 0,
        /// Flags.
        flags / set_flags: u32 @ 4,
        /// Descriptor table.
        desc / set_desc: u64 @ 8,
        /// Used ring.
        used / set_used: u64 @ 16,
        /// Available ring.
        avail / set_avail: u64 @ 24,
        /// Log address.
        log / set_log: u64 @ 32,
    }
}

view! {
    /// One memory region ("Memory regions description").
    MemoryRegionView(32) {
        /// Guest address.
        guest_addr / set_guest_addr: u64 @ 0,
        /// Size.
        size / set_size: u64 @ 8,
        /// User address.
        user_addr / set_user_addr: u64 @ 16,
        /// Offset in the fd.
        mmap_offset / set_mmap_offset: u64 @ 24,
    }
}

view! {
    /// The fixed part of "Memory regions description".
    MemoryTableView(8) {
        /// Number of regions that follow.
        num_regions / set_num_regions: u32 @ 0,
        /// Padding.
        padding / set_padding: u32 @ 4,
    }
}

view! {
    /// The fixed part of "Virtio device config space".
    ConfigView(12) {
        /// Offset into config space.
        offset / set_offset: u32 @ 0,
        /// Size of the access.
        size / set_size: u32 @ 4,
        /// Flags.
        flags / set_flags: u32 @ 8,
    }
}

view! {
    /// "Inflight description" (C layout, padded to 24 bytes).
    InflightView(24) {
        /// Size of the area.
        mmap_size / set_mmap_size: u64 @ 0,
        /// Offset in the fd.
        mmap_offset / set_mmap_offset: u64 @ 8,
        /// Number of queues.
        num_queues / set_num_queues: u16 @ 16,
        /// Queue size.
        queue_size / set_queue_size: u16 @ 18,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn views_check_length_and_never_panic() {
        assert!(VringAddrView::new_checked(&[0u8; 39][..]).is_err());
        let mut buf = [0u8; 40];
        let mut v = VringAddrView::new_checked(&mut buf[..]).unwrap();
        v.set_avail(0x1234);
        assert_eq!(v.avail(), 0x1234);
        assert_eq!(u64::from_ne_bytes(buf[24..32].try_into().unwrap()), 0x1234);
        // Unchecked and short: zero reads, dropped writes.
        let mut short = [0xffu8; 4];
        let mut v = InflightView::new_unchecked(&mut short[..]);
        assert_eq!(v.queue_size(), 0);
        v.set_mmap_size(1);
        assert_eq!(short, [0xff; 4]);
    }
}
