//! A communicator for this process from a backend name: [`connect`].
//!
//! | name      | what                                                           |
//! |-----------|----------------------------------------------------------------|
//! | `tcp`     | [`TcpComm`](crate::tcp::TcpComm) over the rendezvous on `MASTER_ADDR:MASTER_PORT` |
//! | `mpi`     | `MpiComm` (module `mpi`) over `mpirun`'s world (feature `mpi`) |
//! | `threads` | the in-process thread group; across processes only world size 1 |
//! | `nccl`    | `NcclComm::from_env` on GPU `LOCAL_RANK`, bootstrapped through the rendezvous (feature `nccl`) |

use crate::communicator::Communicator;
use crate::env::RankEnv;
use crate::error::CommError;

/// The backend names [`connect`] knows.
pub const BACKENDS: [&str; 4] = ["tcp", "mpi", "threads", "nccl"];

/// The backend to use when the environment names none: `mpi` under an MPI launcher, `threads`
/// for a world of one, otherwise `tcp`.
pub fn default_backend(env: &RankEnv) -> &'static str {
    match env.launcher {
        crate::env::Launcher::OpenMpi | crate::env::Launcher::Pmi => "mpi",
        _ if env.world_size == 1 => "threads",
        _ => "tcp",
    }
}

/// Builds this process's communicator for `backend` (case-insensitive) and checks that its
/// rank and world size agree with `env`. Errors name the missing feature (`mpi` in a build
/// without it), an unknown backend, or a layout that disagrees with the launcher's.
pub fn connect(backend: &str, env: &RankEnv) -> Result<Box<dyn Communicator>, CommError> {
    let name = backend.trim().to_ascii_lowercase();
    let comm: Box<dyn Communicator> = match name.as_str() {
        "mpi" => connect_mpi()?,
        "tcp" => {
            let cfg = crate::rendezvous::RendezvousConfig::from_env(env)?;
            let rdv = crate::rendezvous::Rendezvous::connect(&cfg)?;
            Box::new(crate::tcp::TcpComm::new(rdv))
        }
        "threads" => {
            if env.world_size != 1 {
                return Err(CommError::BackendUnavailable {
                    backend: name,
                    detail: format!(
                        "the thread group lives in one process, but the launcher started {} \
                         processes; use `tcp` or `mpi` across processes (or one process with rank threads)",
                        env.world_size
                    ),
                });
            }
            let comm = crate::ThreadGroup::new(1)
                .pop()
                .ok_or_else(|| CommError::Backend {
                    rank: env.rank,
                    op: "connect",
                    detail: "thread group of one rank is empty".to_string(),
                })?;
            Box::new(comm)
        }
        "nccl" => connect_nccl(env)?,
        _ => {
            return Err(CommError::BackendUnavailable {
                backend: name,
                detail: format!("unknown backend; known: {}", BACKENDS.join(", ")),
            });
        }
    };
    if comm.rank() != env.rank || comm.world_size() != env.world_size {
        return Err(CommError::Env {
            var: "RANK/WORLD_SIZE".to_string(),
            detail: format!(
                "the launcher says rank {} of {}, but the {backend} communicator is rank {} of {}",
                env.rank,
                env.world_size,
                comm.rank(),
                comm.world_size()
            ),
        });
    }
    Ok(comm)
}

/// A process's rank environment with its communicator.
pub struct RankComm {
    /// The launcher's description of this rank.
    pub env: RankEnv,
    /// The communicator of the backend the environment named.
    pub comm: Box<dyn Communicator>,
}

impl std::fmt::Debug for RankComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankComm")
            .field("env", &self.env)
            .field("rank", &self.comm.rank())
            .field("world_size", &self.comm.world_size())
            .finish()
    }
}

/// [`RankEnv::from_env`] and [`connect`] with the backend the environment names
/// (`PLSC_COMM_BACKEND`, else [`default_backend`]); `Ok(None)` when no launcher variable is
/// set (a plain single-process run).
pub fn connect_from_env() -> Result<Option<RankComm>, CommError> {
    let Some(env) = RankEnv::from_env()? else {
        return Ok(None);
    };
    let backend = env
        .backend
        .clone()
        .unwrap_or_else(|| default_backend(&env).to_string());
    let comm = connect(&backend, &env)?;
    Ok(Some(RankComm { env, comm }))
}

#[cfg(feature = "nccl")]
fn connect_nccl(env: &RankEnv) -> Result<Box<dyn Communicator>, CommError> {
    Ok(Box::new(crate::nccl::NcclComm::from_env(
        env,
        crate::nccl::NcclOptions::default(),
    )?))
}

#[cfg(not(feature = "nccl"))]
fn connect_nccl(_env: &RankEnv) -> Result<Box<dyn Communicator>, CommError> {
    Err(CommError::BackendUnavailable {
        backend: "nccl".to_string(),
        detail: "this build has no NCCL: rebuild with the feature `nccl` \
                 (`--features plsc-comm/nccl`, or xtask's `nccl`)"
            .to_string(),
    })
}

#[cfg(feature = "mpi")]
fn connect_mpi() -> Result<Box<dyn Communicator>, CommError> {
    Ok(Box::new(crate::mpi::MpiComm::init()?))
}

#[cfg(not(feature = "mpi"))]
fn connect_mpi() -> Result<Box<dyn Communicator>, CommError> {
    Err(CommError::BackendUnavailable {
        backend: "mpi".to_string(),
        detail: "this build has no MPI: rebuild with the feature `mpi` \
                 (`--features plsc-comm/mpi`, needs libopenmpi-dev)"
            .to_string(),
    })
}
