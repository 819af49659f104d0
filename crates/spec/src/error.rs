//! Error types of the spec layer.
//!
//! Each concept has its own small enum ([`crate::status::StatusError`],
//! [`crate::negotiation::NegotiationError`], [`crate::split::LayoutError`],
//! [`ViewError`]); [`SpecError`] is the one enum of the layer that all of them convert into.
//! Every variant's doc comment is its message, and `Display` prints exactly that (plus the
//! variant's fields), because the [`spec_error!`](crate::spec_error) macro generates both
//! from the same literal.

/// Declares an error enum whose `Display` is each variant's one-line doc comment followed by
/// its fields (`name=value`, values in `Debug` form).
#[macro_export]
#[doc(hidden)]
macro_rules! spec_error {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                #[doc = $msg:literal]
                $variant:ident $({ $($field:ident : $ty:ty),* $(,)? })?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $(
                #[doc = $msg]
                $variant $({ $(
                    #[allow(missing_docs)]
                    $field: $ty
                ),* })?
            ),*
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self {
                    $(
                        Self::$variant $({ $($field),* })? => {
                            f.write_str($msg.trim())?;
                            $($(
                                write!(f, concat!(" ", stringify!($field), "={:?}"), $field)?;
                            )*)?
                            Ok(())
                        }
                    ),*
                }
            }
        }

        impl core::error::Error for $name {}
    };
}

spec_error! {
    /// A byte buffer is too short for the structure a view was asked to show.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ViewError {
        /// buffer too short for this structure
        Truncated { needed: usize, got: usize },
        /// the window reaches past the end of the structure
        OutOfRange { offset: usize, len: usize, size: usize },
        /// the driver may not write this part of the structure
        ReadOnly { offset: usize, len: usize },
    }
}

/// Checks that `buf_len` is at least `needed`.
#[inline]
pub(crate) fn check_len(buf_len: usize, needed: usize) -> Result<(), ViewError> {
    if buf_len < needed {
        Err(ViewError::Truncated {
            needed,
            got: buf_len,
        })
    } else {
        Ok(())
    }
}

spec_error! {
    /// Any error of the spec layer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SpecError {
        /// a byte view is invalid
        View { source: ViewError },
        /// a device status write breaks the initialisation sequence
        Status { source: crate::status::StatusError },
        /// feature negotiation failed
        Negotiation { source: crate::negotiation::NegotiationError },
        /// a virtqueue layout is invalid
        Layout { source: crate::layout::LayoutError },
    }
}

impl From<ViewError> for SpecError {
    fn from(source: ViewError) -> Self {
        SpecError::View { source }
    }
}

impl From<crate::status::StatusError> for SpecError {
    fn from(source: crate::status::StatusError) -> Self {
        SpecError::Status { source }
    }
}

impl From<crate::negotiation::NegotiationError> for SpecError {
    fn from(source: crate::negotiation::NegotiationError) -> Self {
        SpecError::Negotiation { source }
    }
}

impl From<crate::layout::LayoutError> for SpecError {
    fn from(source: crate::layout::LayoutError) -> Self {
        SpecError::Layout { source }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn display_is_the_doc_message_with_fields() {
        let e = ViewError::Truncated { needed: 16, got: 3 };
        assert_eq!(
            e.to_string(),
            "buffer too short for this structure needed=16 got=3"
        );
        let wrapped: SpecError = e.into();
        assert!(wrapped.to_string().starts_with("a byte view is invalid"));
    }

    #[test]
    fn check_len_refuses_short_buffers() {
        assert_eq!(check_len(16, 16), Ok(()));
        assert_eq!(
            check_len(15, 16),
            Err(ViewError::Truncated {
                needed: 16,
                got: 15
            })
        );
    }
}
