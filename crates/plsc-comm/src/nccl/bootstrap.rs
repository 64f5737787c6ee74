//! The whole bootstrap of a launched process: rendezvous, unique id from rank 0, join.

use super::comm::{NcclComm, NcclOptions};
use super::library::require_libraries;
use crate::env::RankEnv;
use crate::error::CommError;
use crate::rendezvous::{Rendezvous, RendezvousConfig};

impl NcclComm {
    /// For a process started by a launcher (`cargo xtask launch`, torchrun, Paddle): checks
    /// that CUDA and NCCL load (every rank, before meeting, so a missing library fails fast
    /// everywhere), meets the world at the TCP rendezvous on the master, lets rank 0 make the
    /// NCCL unique id and the rendezvous carry it, and joins on GPU `env.local_rank`.
    pub fn from_env(env: &RankEnv, options: NcclOptions) -> Result<Self, CommError> {
        require_libraries(env.rank)?;
        let mut rdv = Rendezvous::connect(&RendezvousConfig::from_env(env)?)?;
        let id = if rdv.rank() == 0 {
            Some(Self::unique_id()?)
        } else {
            None
        };
        let id = rdv.broadcast_bootstrap(id.as_deref())?;
        drop(rdv);
        Self::with_options(env.rank, env.world_size, &id, env.local_rank, options)
    }
}
