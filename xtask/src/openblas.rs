//! With the feature `blas`: make OpenBLAS use this CPU's vector unit.
//!
//! OpenBLAS picks its kernels when the library loads, from the CPU model. Models newer than the
//! library (Debian 12 ships 0.3.21; e.g. Xeon "Emerald Rapids", model 207) fall back to the
//! SSE3 "Prescott" kernels, 4-6x slower than the AVX-512 or AVX2 ones the CPU runs. Only the
//! `OPENBLAS_CORETYPE` variable, read at load time, overrides the choice, so when it is unset
//! this process sets it from the CPU's features and replaces itself with a copy that has it
//! (`exec`, same arguments). Set `OPENBLAS_CORETYPE` yourself to choose another kernel set.

/// Re-executes this program with `OPENBLAS_CORETYPE` set when it is unset and the CPU has
/// AVX-512 (SkylakeX kernels) or AVX2 + FMA (Haswell kernels); returns otherwise.
pub fn ensure_core_type() {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return;
    }
    let Some(core) = core_type() else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OPENBLAS_CORETYPE", core)
        .exec();
    tracing::warn!("could not restart with OPENBLAS_CORETYPE={core}: {err}");
}

#[cfg(target_arch = "x86_64")]
fn core_type() -> Option<&'static str> {
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512cd")
    {
        Some("SkylakeX")
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        Some("Haswell")
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn core_type() -> Option<&'static str> {
    None
}
