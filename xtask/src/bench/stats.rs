//! The benchmarks' shared helpers: the median they all report, and the byte sizes their
//! arguments take (`--sizes 4KiB,64MiB`, `--split-bytes 2GiB`).

/// The workspace's one median of measurements (NaN for none).
pub use plsc_train::stats::median;

/// Parses a positive byte size: `4096`, `4KiB`, `64MiB`, `1.5GiB` (a fraction is allowed with a
/// unit and rounded down to whole bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (s, 1)
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|e| format!("bad size {s:?} (use e.g. 4096, 4KiB, 64MiB, 2GiB): {e}"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    if bytes < 1.0 {
        return Err(format!("size {s:?} must be at least one byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_their_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4 << 10));
        assert_eq!(parse_size(" 64MiB "), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
    }

    #[test]
    fn bad_sizes_are_errors_naming_the_input() {
        for bad in ["", "0", "-1MiB", "0.1", "12XB", "1e30GiB"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
