//! The one median of the workspace: run records (`summary.json`'s steady memory) and the
//! benchmarks (`xtask bench`) report medians through it.

use std::cmp::Ordering;

/// The median of `v` under `cmp`: the upper of the two middle values for an even count, `None`
/// for an empty slice. The order of `v` does not matter.
pub fn median_by<T: Copy>(v: &[T], mut cmp: impl FnMut(&T, &T) -> Ordering) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    let mid = s.len() / 2;
    let (_, m, _) = s.select_nth_unstable_by(mid, &mut cmp);
    Some(*m)
}

/// The median of measurements `v` ([`median_by`] in `f64::total_cmp` order); NaN for an empty
/// slice, so an empty measurement shows in a report instead of panicking.
pub fn median(v: &[f64]) -> f64 {
    median_by(v, f64::total_cmp).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_measurements() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&[5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn upper_middle_whatever_the_order() {
        assert_eq!(median_by(&[3u64, 1, 2], Ord::cmp), Some(2));
        assert_eq!(median_by(&[4u64, 1, 3, 2], Ord::cmp), Some(3));
        assert_eq!(
            median_by(&[2.5f64, f64::NAN, 1.0], f64::total_cmp),
            Some(2.5)
        );
        assert_eq!(median_by::<u64>(&[], Ord::cmp), None);
    }
}
