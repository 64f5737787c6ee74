//! Which f32 kernel the `gemm` crate picked at run time on this machine.
//!
//! The workspace builds gemm with its `x86-v4` feature (AVX-512 kernels, root Cargo.toml); gemm
//! chooses among its kernels once, at the first product, with `is_x86_feature_detected!`. This
//! test asks gemm for the function it chose (`gemm_f32::gemm::f32::get_gemm_fn`, the pointer
//! every f32 product of the head and of burn-flex goes through) and reads that function's
//! symbol name from the test binary: on a CPU with AVX-512F it must be the `avx512f` kernel,
//! on one without it the AVX2+FMA (`fma`) kernel, so the same binary runs on both. CI also runs
//! this test under valgrind (`.ci/run`, step `gemm-avx2-fallback`), whose virtual CPU has no
//! AVX-512: there the `fma` kernel must be the one taken.

#![cfg(target_arch = "x86_64")]

/// The demangled symbol name of the code at `addr`, if the binary has one.
fn symbol_name(addr: usize) -> Option<String> {
    let mut name = None;
    // `resolve` takes a return address and looks up the byte before it; a function's first
    // byte is its entry, so pass the address of its second.
    backtrace::resolve((addr + 1) as *mut std::ffi::c_void, |symbol| {
        if name.is_none() {
            name = symbol.name().map(|n| n.to_string());
        }
    });
    name
}

#[test]
fn gemm_runs_the_widest_kernel_this_cpu_has() {
    let chosen = gemm_f32::gemm::f32::get_gemm_fn() as usize;
    let name = symbol_name(chosen).unwrap_or_else(|| {
        panic!("no symbol for gemm's chosen kernel at {chosen:#x}; is the test binary stripped?")
    });
    let expected = if std::arch::is_x86_feature_detected!("avx512f") {
        "::avx512f::gemm_basic"
    } else if std::arch::is_x86_feature_detected!("fma") {
        "::fma::gemm_basic"
    } else {
        "::scalar::gemm_basic"
    };
    println!("gemm's f32 kernel on this CPU: {name}");
    assert!(
        name.contains(expected),
        "gemm chose `{name}`, expected the `{expected}` kernel for this CPU (is gemm's `x86-v4` \
         feature on in the root Cargo.toml?)"
    );
}

/// The chosen kernel is the one products actually run: a product through `gemm::gemm` gives
/// the exact result on small integers (every kernel is exact there), after which the chosen
/// pointer is unchanged.
#[test]
fn a_product_goes_through_the_chosen_kernel() {
    let (m, n, k) = (33, 17, 40);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
    let mut c = vec![0.0f32; m * n];
    // SAFETY: `a` is m x k, `b` k x n and `c` m x n, all column-major with the given strides
    // (row stride 1, column stride = rows), and `c` does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            m as isize,
            1,
            false,
            a.as_ptr(),
            m as isize,
            1,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for j in 0..n {
        for i in 0..m {
            let want: f32 = (0..k).map(|p| a[i + p * m] * b[p + j * k]).sum();
            assert_eq!(c[i + j * m], want, "c[{i}, {j}]");
        }
    }
    let name = symbol_name(gemm_f32::gemm::f32::get_gemm_fn() as usize).unwrap_or_default();
    assert!(name.contains("::gemm_basic"), "chosen kernel `{name}`");
}
