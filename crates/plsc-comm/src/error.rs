use crate::element::DType;

/// Everything a collective can fail with. Every variant names the rank that saw it.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CommError {
    /// Another rank dropped its communicator (it finished, returned an error or panicked) while
    /// this rank still expected it in a collective.
    #[error("rank {rank}: {op}: rank {peer} left the group ({reason})")]
    PeerLeft {
        rank: usize,
        op: &'static str,
        peer: usize,
        reason: String,
    },
    /// The ranks called different collectives, or the same one with incompatible arguments.
    #[error("rank {rank}: {op}: mismatched call across ranks: {detail}")]
    Mismatch {
        rank: usize,
        op: &'static str,
        detail: String,
    },
    /// The element types differ across ranks.
    #[error("rank {rank}: {op}: element type {mine:?} here but {theirs:?} on rank {peer}")]
    DTypeMismatch {
        rank: usize,
        op: &'static str,
        mine: DType,
        theirs: DType,
        peer: usize,
    },
    /// Buffer lengths are wrong for this collective (checked before any data moves).
    #[error("rank {rank}: {op}: {detail}")]
    BadLength {
        rank: usize,
        op: &'static str,
        detail: String,
    },
    /// The optional timeout passed before every rank arrived.
    #[error("rank {rank}: {op}: timed out after {waited_ms} ms waiting for ranks {missing:?}")]
    Timeout {
        rank: usize,
        op: &'static str,
        waited_ms: u128,
        missing: Vec<usize>,
    },
    /// A rank index is out of range (for example the root of a broadcast).
    #[error("rank {rank}: {op}: rank {bad} is out of range for world size {world}")]
    BadRank {
        rank: usize,
        op: &'static str,
        bad: usize,
        world: usize,
    },
    /// The group is unusable after an earlier failure (timeout or a peer leaving).
    #[error("rank {rank}: {op}: the group is broken: {cause}")]
    Broken {
        rank: usize,
        op: &'static str,
        cause: String,
    },
    /// A rank thread panicked (reported by [`crate::run_ranks`]).
    #[error("rank {rank} panicked: {message}")]
    Panicked { rank: usize, message: String },
    /// A backend-specific failure (NCCL, MPI, rendezvous).
    #[error("rank {rank}: {op}: {detail}")]
    Backend {
        rank: usize,
        op: &'static str,
        detail: String,
    },
    /// A launcher environment variable is missing, malformed or inconsistent with the others.
    #[error("environment variable {var}: {detail}")]
    Env { var: String, detail: String },
    /// Rendezvous: a rank announced a different world size than the master expects.
    #[error(
        "rank {rank}: rendezvous: rank {peer} announced world size {theirs} but the master \
         (rank 0) expects {expected}"
    )]
    WrongWorldSize {
        rank: usize,
        peer: usize,
        theirs: usize,
        expected: usize,
    },
    /// Rendezvous: two processes announced the same rank (or a rank outside the world).
    #[error("rank {rank}: rendezvous: rank {peer} joined twice (world size {world})")]
    DuplicateRank {
        rank: usize,
        peer: usize,
        world: usize,
    },
    /// Rendezvous: a process announced a rank that does not exist in the world.
    #[error("rank {rank}: rendezvous: a process announced rank {peer}, outside world size {world}")]
    RankOutOfRange {
        rank: usize,
        peer: usize,
        world: usize,
    },
    /// Rendezvous: the master (rank 0) could not be reached before the timeout.
    #[error(
        "rank {rank}: rendezvous: master {addr} unreachable for {waited_ms} ms (last error: {last_error})"
    )]
    MasterUnreachable {
        rank: usize,
        addr: String,
        waited_ms: u128,
        last_error: String,
    },
    /// Rendezvous: the two sides speak different protocol versions.
    #[error(
        "rank {rank}: rendezvous: protocol version {ours} here but {theirs} on rank {peer} \
         (mixed plsc-rs builds?)"
    )]
    VersionMismatch {
        rank: usize,
        peer: usize,
        ours: u32,
        theirs: u32,
    },
    /// Rendezvous or a TCP collective: another rank failed and the master aborted the group.
    #[error("rank {rank}: {op}: aborted by the master: {cause}")]
    Aborted {
        rank: usize,
        op: &'static str,
        cause: String,
    },
    /// A backend was asked for that this build does not contain, or that does not exist.
    #[error("backend {backend:?}: {detail}")]
    BackendUnavailable { backend: String, detail: String },
    /// A shared library that a backend loads at run time (the CUDA driver, NCCL) is not on the
    /// library path.
    #[error(
        "rank {rank}: the {library} library could not be loaded (searched {searched:?}): {hint}"
    )]
    LibraryMissing {
        rank: usize,
        library: &'static str,
        searched: Vec<String>,
        hint: String,
    },
    /// An NCCL unique id of the wrong size (it is the 128 bytes that `NcclComm::unique_id`
    /// made on rank 0).
    #[error("rank {rank}: NCCL unique id has {len} bytes, expected {expected}")]
    BadUniqueId {
        rank: usize,
        len: usize,
        expected: usize,
    },
    /// A GPU ordinal this machine does not have.
    #[error("rank {rank}: CUDA device {device} does not exist (this machine has {count})")]
    BadDevice {
        rank: usize,
        device: usize,
        count: usize,
    },
}
