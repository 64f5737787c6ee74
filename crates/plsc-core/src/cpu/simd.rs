//! [`with_avx2!`]: a function compiled twice, for AVX2 + FMA and for the baseline target, with
//! the choice made at run time. The head's element-wise loops use it.

/// Defines `pub fn $name` that runs its body compiled for AVX2 + FMA when the CPU has them
/// (chosen at run time) and for the baseline target otherwise. The body is the same code; Rust
/// never contracts `a * b + c` into an FMA on its own, so both give the same bits.
macro_rules! with_avx2 {
    ($(#[$meta:meta])* pub fn $name:ident<T: HeadFloat>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name<T: HeadFloat>($($arg: $ty),*) {
            #[inline(always)]
            fn body<T: HeadFloat>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2<T: HeadFloat>($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
