//! Finding the CUDA driver and NCCL at run time, and keeping cudarc's panics out of callers.
//!
//! cudarc (built with dynamic loading) opens `libcuda` and `libnccl` on first use and panics
//! when it cannot find them, or when a symbol is missing from an older library. Every entry
//! point of the NCCL backend checks the libraries first ([`require_libraries`]) and runs its
//! cudarc calls under [`guarded`], so both cases are a [`CommError`], never a panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use crate::error::CommError;

/// Advice printed with a missing NCCL.
pub const NCCL_HINT: &str = "NCCL installs `libnccl.so.2`, a name cudarc does not look for: \
     make a link named `libnccl.so` to it in a folder on LD_LIBRARY_PATH \
     (`ln -s /path/to/libnccl.so.2 /some/dir/libnccl.so`; see docs/distributed.md, NCCL)";

/// Advice printed with a missing CUDA driver.
pub const CUDA_HINT: &str = "the NVIDIA driver's `libcuda.so.1` is needed (install the driver, \
     or put its folder on LD_LIBRARY_PATH)";

/// The file names cudarc tries, in order, for the library `name` (`"nccl"`, `"cuda"`).
pub fn searched_names(name: &str) -> Vec<String> {
    cudarc::get_lib_name_candidates(name)
}

fn probe(f: unsafe fn() -> bool) -> bool {
    // SAFETY: the probes only try `dlopen` on fixed library names and close them again.
    catch_unwind(|| unsafe { f() }).unwrap_or(false)
}

/// Whether the CUDA driver library can be loaded (checked once per process).
pub fn cuda_driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| probe(cudarc::driver::sys::is_culib_present))
}

/// Whether the NCCL library can be loaded under a name cudarc searches (checked once per
/// process).
pub fn nccl_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| probe(cudarc::nccl::sys::is_culib_present))
}

/// `Ok` when both the CUDA driver and NCCL can be loaded; otherwise a
/// [`CommError::LibraryMissing`] naming the first one missing, the names searched and the fix.
pub fn require_libraries(rank: usize) -> Result<(), CommError> {
    if !cuda_driver_present() {
        return Err(CommError::LibraryMissing {
            rank,
            library: "CUDA driver (libcuda)",
            searched: searched_names("cuda"),
            hint: CUDA_HINT.to_string(),
        });
    }
    if !nccl_present() {
        return Err(CommError::LibraryMissing {
            rank,
            library: "NCCL (libnccl)",
            searched: searched_names("nccl"),
            hint: NCCL_HINT.to_string(),
        });
    }
    Ok(())
}

/// Runs `f`, turning a panic raised inside cudarc (a symbol missing from an older NCCL, a
/// library that vanished) into [`CommError::Backend`].
pub fn guarded<R>(
    rank: usize,
    op: &'static str,
    f: impl FnOnce() -> Result<R, CommError>,
) -> Result<R, CommError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(CommError::Backend {
                rank,
                op,
                detail: format!("the CUDA/NCCL bindings failed: {msg}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searched_names_include_the_plain_name_but_not_so_2() {
        let names = searched_names("nccl");
        assert!(names.iter().any(|n| n == "libnccl.so"), "{names:?}");
        // The reason for the documented `libnccl.so` link.
        assert!(!names.iter().any(|n| n == "libnccl.so.2"), "{names:?}");
    }

    #[test]
    fn guarded_turns_a_panic_into_a_named_error() {
        let r: Result<(), CommError> = guarded(3, "all_reduce", || panic!("Missing symbol ncclX"));
        match r {
            Err(CommError::Backend { rank, op, detail }) => {
                assert_eq!((rank, op), (3, "all_reduce"));
                assert!(detail.contains("Missing symbol ncclX"), "{detail}");
            }
            other => panic!("expected a Backend error, got {other:?}"),
        }
        assert_eq!(guarded(0, "x", || Ok(7)), Ok(7));
    }

    #[test]
    fn missing_libraries_are_a_named_error() {
        match require_libraries(2) {
            Ok(()) => assert!(cuda_driver_present() && nccl_present()),
            Err(CommError::LibraryMissing {
                rank,
                library,
                searched,
                hint,
            }) => {
                assert_eq!(rank, 2);
                assert!(!searched.is_empty());
                if library.starts_with("NCCL") {
                    assert!(cuda_driver_present() && !nccl_present());
                    assert!(hint.contains("libnccl.so"));
                } else {
                    assert!(!cuda_driver_present());
                }
            }
            Err(other) => panic!("expected LibraryMissing, got {other:?}"),
        }
    }
}
