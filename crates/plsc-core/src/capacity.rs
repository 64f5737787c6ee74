//! Whether a head fits the host's memory, checked before anything is allocated.
//!
//! A shard that does not fit would otherwise be discovered by the kernel's OOM killer halfway
//! through initialisation (a 10M-class f32 head needs 38 GiB). The estimate for the ranks of one
//! host:
//!
//! ```text
//! needed = sum over its ranks of  2 C_r D bytes(storage)     (weight + momentum)
//!                               + min(memory_budget, B C_s 4) (the logits kept between passes)
//! ```
//!
//! with `C_s = ceil(r C_r)` sampled classes and `B` the global batch. The tiles' own buffers,
//! the features and the backbone come on top (tens of MiB for the head; see docs/scale.md).

use crate::error::HeadError;
use crate::head::HeadConfig;
use crate::sampling::sample_count;

/// The bytes the ranks `local_ranks` (of `world_size`) of a head need on one host (see the
/// [module doc](self)).
pub fn host_bytes(
    config: &HeadConfig,
    world_size: usize,
    local_ranks: &[usize],
    global_batch: usize,
) -> Result<u64, HeadError> {
    let mut total = 0u64;
    for &rank in local_ranks {
        let shard = config.shard_of(rank, world_size)?;
        let state = config.storage.shard_bytes(shard.len, config.embedding_size);
        let sampled = sample_count(shard.len, 0, config.sample_ratio) as u64;
        let logits = (global_batch as u64 * sampled * 4).min(config.memory_budget as u64);
        total += state + logits;
    }
    Ok(total)
}

/// `MemAvailable` of `/proc/meminfo` in bytes (`None` where there is no such file).
pub fn available_bytes() -> Option<u64> {
    meminfo_bytes("MemAvailable:")
}

/// A `kB` field (`MemTotal:`, `MemAvailable:`, ...) of `/proc/meminfo`, in bytes.
pub fn meminfo_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&text, field).map(|kib| kib * 1024)
}

/// The value of the `field` line (`Name:   1234 kB`) of a `/proc` text such as `meminfo` or
/// `<pid>/status`, in the kB the kernel writes.
pub fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Refuses, with [`HeadError::Capacity`], a head whose ranks on this host need more than
/// `available` bytes ([`available_bytes`] when `None` is given; no check where it is unknown).
pub fn check_host_capacity(
    config: &HeadConfig,
    world_size: usize,
    local_ranks: &[usize],
    global_batch: usize,
    available: Option<u64>,
) -> Result<(), HeadError> {
    let Some(available) = available.or_else(available_bytes) else {
        return Ok(());
    };
    let needed = host_bytes(config, world_size, local_ranks, global_batch)?;
    if needed > available {
        return Err(HeadError::Capacity {
            needed,
            available,
            classes: config.num_classes,
            dim: config.embedding_size,
            storage: config.storage,
            ranks: local_ranks.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::HeadStorage;

    #[test]
    fn proc_fields_are_read_in_kib() {
        let text = "MemTotal:       24683420 kB\nMemAvailable:   1000 kB\nRssAnon:\t  4404020 kB\n";
        assert_eq!(kib_field(text, "MemTotal:"), Some(24_683_420));
        assert_eq!(kib_field(text, "RssAnon:"), Some(4_404_020));
        assert_eq!(kib_field(text, "MemFree:"), None);
        if cfg!(target_os = "linux") {
            assert!(meminfo_bytes("MemTotal:").is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn ten_million_classes_need_half_the_bytes_in_bf16_and_f32_is_refused() {
        let f32_head = HeadConfig::new(10_000_000, 512).with_sample_ratio(0.1);
        let bf16 = f32_head.clone().with_storage(HeadStorage::Bf16);
        let f = host_bytes(&f32_head, 1, &[0], 128).unwrap();
        let b = host_bytes(&bf16, 1, &[0], 128).unwrap();
        // 2 x 10M x 512 x 4 bytes, plus the 1 GiB budget (B C_s 4 = 512 MB is less).
        assert_eq!(f, 40_960_000_000 + 128 * 1_000_000 * 4);
        assert_eq!(b, 20_480_000_000 + 128 * 1_000_000 * 4);
        let gib23 = 23 << 30;
        let err = check_host_capacity(&f32_head, 1, &[0], 128, Some(gib23)).unwrap_err();
        assert!(
            matches!(err, HeadError::Capacity { needed, available, .. } if needed == f && available == gib23),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("bf16") && msg.contains("GiB"), "{msg}");
        check_host_capacity(&bf16, 1, &[0], 128, Some(gib23)).unwrap();
        // Two ranks on the host hold the same total.
        let two = host_bytes(&bf16, 2, &[0, 1], 128).unwrap();
        assert_eq!(two, 20_480_000_000 + 2 * 128 * 500_000 * 4);
    }
}
