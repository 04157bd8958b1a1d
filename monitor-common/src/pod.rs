//! [`Pod`]: the records that may be read from, and written as, raw bytes.
//!
//! The daemon reads each ring-buffer record by copying its bytes into one of the structs of
//! [`crate::event`], and tests and benchmarks make records the other way round. Both are sound
//! only for types whose every bit pattern is a valid value and whose bytes are all initialised
//! (no padding): what `Pod` promises. `Copy` promises neither, so the decoder is bounded by this
//! trait instead.
//!
//! Every struct is declared through [`pod_struct!`], which checks at compile time that its
//! fields are `Pod` themselves and lie back to back from offset 0 to the struct's end: a layout
//! that gains padding fails the build.

/// Plain old data: any bytes of the right length are a valid value, and a value's bytes are all
/// initialised.
///
/// # Safety
/// Implement only for `Copy` types that have no padding, no pointers or references, and no
/// field with invalid bit patterns (`bool`, `char`, enums, `NonZero*`). For structs, use
/// [`pod_struct!`], which checks the layout.
pub unsafe trait Pod: Copy + 'static {}

// SAFETY: integers have no padding and every bit pattern is a value.
unsafe impl Pod for u8 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for i32 {}
// SAFETY: as above.
unsafe impl Pod for i64 {}
// SAFETY: an array is its elements back to back, without padding between them.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// A compile-time proof obligation: `T` is `Pod`. Used by [`pod_struct!`] on every field type.
#[doc(hidden)]
pub const fn assert_pod<T: Pod>() {}

/// Declares a `#[repr(C)]` struct and implements [`Pod`] for it, after checking at compile time
/// that each field is `Pod` and that the fields lie back to back from offset 0 to the struct's
/// end: a layout with padding anywhere fails the build.
///
/// ```
/// monitor_common::pod_struct! {
///     /// A doc comment, attributes and field docs as in any struct.
///     #[repr(C)]
///     #[derive(Clone, Copy)]
///     pub struct Pair {
///         pub a: u32,
///         pub b: [u8; 4],
///     }
/// }
/// fn raw<T: monitor_common::Pod>(_: T) {}
/// raw(Pair { a: 1, b: [0; 4] });
/// ```
///
/// A struct with padding does not build:
///
/// ```compile_fail
/// monitor_common::pod_struct! {
///     #[repr(C)]
///     #[derive(Clone, Copy)]
///     pub struct Padded {
///         pub a: u8,
///         pub b: u32,
///     }
/// }
/// ```
#[macro_export]
macro_rules! pod_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(#[$first_meta:meta])*
            $first_vis:vis $first:ident : $first_ty:ty
            $(,
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $field_ty:ty
            )* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(#[$first_meta])*
            $first_vis $first: $first_ty,
            $(
                $(#[$field_meta])*
                $field_vis $field: $field_ty,
            )*
        }

        const _: () = {
            $crate::pod::assert_pod::<$first_ty>();
            $($crate::pod::assert_pod::<$field_ty>();)*
            // Back to back from 0 to the end: no padding anywhere.
            let mut end = 0usize;
            assert!(::core::mem::offset_of!($name, $first) == end, "padding before a field");
            end += ::core::mem::size_of::<$first_ty>();
            $(
                assert!(::core::mem::offset_of!($name, $field) == end, "padding before a field");
                end += ::core::mem::size_of::<$field_ty>();
            )*
            assert!(end == ::core::mem::size_of::<$name>(), "padding at the end");
        };

        // SAFETY: checked just above: every field is Pod and the fields cover the struct
        // without padding; the struct is Copy (required by the trait).
        unsafe impl $crate::pod::Pod for $name {}
    };
}

#[cfg(test)]
mod tests {
    use super::Pod;

    pod_struct! {
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Pair {
            a: u32,
            b: [u8; 4],
        }
    }

    fn is_pod<T: Pod>() -> usize {
        core::mem::size_of::<T>()
    }

    #[test]
    fn a_checked_struct_is_pod() {
        let p = Pair { a: 1, b: [2; 4] };
        assert_eq!(is_pod::<Pair>(), 8);
        assert_eq!(p.a + u32::from(p.b[0]), 3);
        assert_eq!(
            is_pod::<crate::OpenEvent>(),
            core::mem::size_of::<crate::OpenEvent>()
        );
    }
}
