//! The `define_view!` macro: a checked, smoltcp-style view over a byte buffer.
//!
//! `new_checked` validates the length once; getters and setters then read and write
//! little-endian fields at fixed offsets (through [`crate::bytes`], which cannot panic).

/// Defines `pub struct $name<T>` over `T: AsRef<[u8]>` with one getter (and, for
/// `T: AsMut<[u8]>`, one setter) per field. Field kinds: `u8`, `le16`, `le32`, `le64`.
macro_rules! define_view {
    (
        $(#[$meta:meta])*
        pub struct $name:ident ($size:expr) {
            $(
                $(#[doc = $doc:literal])*
                $get:ident / $set:ident : $kind:ident @ $off:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<T> {
            buffer: T,
        }

        // `len` here is a wire field (a buffer length), not the length of the view.
        #[allow(clippy::len_without_is_empty)]
        impl<T: AsRef<[u8]>> $name<T> {
            /// Size of the structure in bytes.
            pub const SIZE: usize = $size;

            /// Wraps `buffer` without checking its length (getters then read missing bytes
            /// as zero; nothing panics).
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps `buffer` after checking it holds at least [`Self::SIZE`] bytes.
            pub fn new_checked(buffer: T) -> Result<Self, $crate::error::ViewError> {
                $crate::error::check_len(buffer.as_ref().len(), Self::SIZE)?;
                Ok($name { buffer })
            }

            /// The underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            $(
                $(#[doc = $doc])*
                #[inline]
                pub fn $get(&self) -> define_view!(@ty $kind) {
                    define_view!(@get $kind, self.buffer.as_ref(), $off)
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            $(
                $(#[doc = $doc])*
                #[inline]
                pub fn $set(&mut self, value: define_view!(@ty $kind)) {
                    define_view!(@set $kind, self.buffer.as_mut(), $off, value)
                }
            )*
        }
    };
    (@ty u8) => { u8 };
    (@ty le16) => { u16 };
    (@ty le32) => { u32 };
    (@ty le64) => { u64 };
    (@get u8, $buf:expr, $off:expr) => { $crate::bytes::get_u8($buf, $off) };
    (@get le16, $buf:expr, $off:expr) => { $crate::bytes::get_le16($buf, $off) };
    (@get le32, $buf:expr, $off:expr) => { $crate::bytes::get_le32($buf, $off) };
    (@get le64, $buf:expr, $off:expr) => { $crate::bytes::get_le64($buf, $off) };
    (@set u8, $buf:expr, $off:expr, $v:expr) => { $crate::bytes::set_u8($buf, $off, $v) };
    (@set le16, $buf:expr, $off:expr, $v:expr) => { $crate::bytes::set_le16($buf, $off, $v) };
    (@set le32, $buf:expr, $off:expr, $v:expr) => { $crate::bytes::set_le32($buf, $off, $v) };
    (@set le64, $buf:expr, $off:expr, $v:expr) => { $crate::bytes::set_le64($buf, $off, $v) };
}

pub(crate) use define_view;
