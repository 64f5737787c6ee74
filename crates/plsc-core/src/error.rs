use plsc_comm::CommError;

/// Everything the head can fail with. Messages name the rank, the tensor or the sample.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Fewer classes than ranks: some rank would own no class.
    #[error(
        "cannot split {num_classes} classes over {world_size} ranks: every rank needs at least one class"
    )]
    TooFewClasses {
        num_classes: usize,
        world_size: usize,
    },
    /// A label is negative or not below the class count.
    #[error("rank {rank}: label {label} of sample {sample} is out of range 0..{num_classes}")]
    LabelOutOfRange {
        rank: usize,
        sample: usize,
        label: i64,
        num_classes: usize,
    },
    /// A tensor has the wrong number of elements or the wrong shape.
    #[error("rank {rank}: tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    Shape {
        rank: usize,
        tensor: &'static str,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// Rows given in another storage type than the head's.
    #[error(
        "rank {rank}: tensor `{tensor}` is stored in {got}, but the head stores {expected} (`head_storage`): convert it first (e.g. `xtask reshard --head-storage {expected}` for a checkpoint)"
    )]
    Storage {
        rank: usize,
        tensor: &'static str,
        got: crate::head_storage::HeadStorage,
        expected: crate::head_storage::HeadStorage,
    },
    /// The head's ranks on this host need more memory than it has available.
    #[error(
        "the head does not fit this host: {ranks} rank(s) of {classes} classes x {dim} with {storage} storage need {:.2} GiB (weight, momentum and work buffers), {:.2} GiB are available: use head_storage = \"bf16\" (half the bytes per class), more hosts, or a smaller sample_ratio/memory budget",
        *needed as f64 / (1u64 << 30) as f64,
        *available as f64 / (1u64 << 30) as f64
    )]
    Capacity {
        needed: u64,
        available: u64,
        classes: usize,
        dim: usize,
        storage: crate::head_storage::HeadStorage,
        ranks: usize,
    },
    /// A setting is out of its range.
    #[error("invalid head setting `{name}`: {detail}")]
    Config { name: &'static str, detail: String },
    /// An unknown loss name.
    #[error(
        "unknown loss `{0}`: expected one of softmax, arcface, cosface, sphereface, combined (optionally with the `dist_` prefix)"
    )]
    UnknownLoss(String),
    /// A collective failed.
    #[error(transparent)]
    Comm(#[from] CommError),
}
