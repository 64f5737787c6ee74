//! Class sharding: which contiguous range of classes each rank owns.
//!
//! The balanced split gives rank `r` of `N` the classes `[start_r, start_r + C_r)` with
//! `C_r = C / N + (r < C mod N)`: the first `C mod N` ranks own one class more. Checkpoint
//! resharding (plsc-ckpt) uses the same rule, through [`ClassShard::for_rank`].

use crate::error::HeadError;
use serde::{Deserialize, Serialize};

/// The contiguous range of classes owned by one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassShard {
    /// The owning rank.
    pub rank: usize,
    /// First class (global index) of the shard.
    pub start: usize,
    /// Number of classes in the shard.
    pub len: usize,
}

impl ClassShard {
    /// The shard of `rank` in the balanced split of `num_classes` over `world_size` ranks.
    pub fn for_rank(num_classes: usize, world_size: usize, rank: usize) -> Result<Self, HeadError> {
        if world_size == 0 || rank >= world_size {
            return Err(HeadError::Config {
                name: "rank",
                detail: format!("rank {rank} is out of range for world size {world_size}"),
            });
        }
        if num_classes < world_size {
            return Err(HeadError::TooFewClasses {
                num_classes,
                world_size,
            });
        }
        let base = num_classes / world_size;
        let extra = num_classes % world_size;
        let len = base + usize::from(rank < extra);
        let start = rank * base + rank.min(extra);
        Ok(Self { rank, start, len })
    }

    /// All shards of the balanced split, in rank order.
    pub fn balanced_split(num_classes: usize, world_size: usize) -> Result<Vec<Self>, HeadError> {
        (0..world_size.max(1))
            .map(|r| Self::for_rank(num_classes, world_size, r))
            .collect()
    }

    /// One past the last class of the shard.
    pub fn end(&self) -> usize {
        self.start + self.len
    }

    /// Whether the global class `class` belongs to this shard.
    pub fn contains(&self, class: usize) -> bool {
        class >= self.start && class < self.end()
    }

    /// The rank that owns `class` in the balanced split (`class < num_classes`).
    pub fn owner_of(class: usize, num_classes: usize, world_size: usize) -> usize {
        let base = num_classes / world_size;
        let extra = num_classes % world_size;
        let boundary = extra * (base + 1);
        if class < boundary {
            class / (base + 1)
        } else {
            extra + (class - boundary) / base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_balanced_contiguous_and_complete() {
        for c in 1..40 {
            for n in 1..=c.min(7) {
                let shards = ClassShard::balanced_split(c, n).unwrap();
                let mut next = 0;
                for s in &shards {
                    assert_eq!(s.start, next);
                    assert!(s.len == c / n || s.len == c / n + 1);
                    for class in s.start..s.end() {
                        assert_eq!(ClassShard::owner_of(class, c, n), s.rank);
                    }
                    next = s.end();
                }
                assert_eq!(next, c);
            }
        }
    }

    #[test]
    fn fewer_classes_than_ranks_is_an_error() {
        assert!(matches!(
            ClassShard::for_rank(3, 4, 0),
            Err(HeadError::TooFewClasses {
                num_classes: 3,
                world_size: 4
            })
        ));
    }
}
