//! Running top-k (k <= 5) of a row's logits with their global class indices, for the
//! distributed training accuracy: each rank keeps its own top-k, the ranks all-gather them and
//! merge, and no rank ever gathers the logits.

/// The largest `TOPK` values seen, sorted descending, with their class indices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopK {
    pub values: [f64; TOPK],
    pub classes: [i64; TOPK],
}

/// How many candidates are kept (top-1 and top-5 accuracy).
pub const TOPK: usize = 5;

impl Default for TopK {
    fn default() -> Self {
        Self {
            values: [f64::NEG_INFINITY; TOPK],
            classes: [-1; TOPK],
        }
    }
}

impl TopK {
    /// Offers a candidate; ties keep the smaller class index first.
    #[inline]
    pub fn offer(&mut self, value: f64, class: i64) {
        let last = TOPK - 1;
        if !(value > self.values[last]
            || (value == self.values[last]
                && class < self.classes[last]
                && self.classes[last] >= 0))
        {
            return;
        }
        let mut pos = last;
        while pos > 0
            && (value > self.values[pos - 1]
                || (value == self.values[pos - 1] && class < self.classes[pos - 1]))
        {
            self.values[pos] = self.values[pos - 1];
            self.classes[pos] = self.classes[pos - 1];
            pos -= 1;
        }
        self.values[pos] = value;
        self.classes[pos] = class;
    }

    /// Merges another candidate list into this one.
    pub fn merge(&mut self, other: &TopK) {
        for k in 0..TOPK {
            if other.classes[k] >= 0 {
                self.offer(other.values[k], other.classes[k]);
            }
        }
    }

    /// Whether `label` is among the first `k` candidates.
    pub fn hit(&self, label: i64, k: usize) -> bool {
        self.classes[..k.min(TOPK)].contains(&label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_five_largest_in_order_and_merges() {
        let vals = [0.3, 0.9, -1.0, 0.5, 0.9, 0.1, 2.0, 0.4];
        let mut t = TopK::default();
        for (i, v) in vals.iter().enumerate() {
            t.offer(*v, i as i64);
        }
        assert_eq!(t.classes, [6, 1, 4, 3, 7]);
        let (mut a, mut b) = (TopK::default(), TopK::default());
        for (i, v) in vals.iter().enumerate() {
            if i % 2 == 0 {
                a.offer(*v, i as i64)
            } else {
                b.offer(*v, i as i64)
            }
        }
        a.merge(&b);
        assert_eq!(a, t);
        assert!(t.hit(6, 1) && !t.hit(1, 1) && t.hit(7, 5) && !t.hit(0, 5));
    }
}
