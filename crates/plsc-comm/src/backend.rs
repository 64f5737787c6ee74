//! A communicator for this process from a backend name: [`connect`].
//!
//! | name      | what                                                           |
//! |-----------|----------------------------------------------------------------|
//! | `mpi`     | [`MpiComm`](crate::mpi) over `mpirun`'s world (feature `mpi`) |
//! | `threads` | the in-process thread group; across processes only world size 1 |
//! | `nccl`    | per device: built by the NCCL module (feature `nccl`)          |

use crate::communicator::Communicator;
use crate::env::RankEnv;
use crate::error::CommError;

/// The backend names [`connect`] knows.
pub const BACKENDS: [&str; 3] = ["mpi", "threads", "nccl"];

/// The backend to use when the environment names none: `mpi` under an MPI launcher,
/// otherwise `threads`.
pub fn default_backend(env: &RankEnv) -> &'static str {
    match env.launcher {
        crate::env::Launcher::OpenMpi | crate::env::Launcher::Pmi => "mpi",
        _ => "threads",
    }
}

/// Builds this process's communicator for `backend` (case-insensitive) and checks that its
/// rank and world size agree with `env`. Errors name the missing feature (`mpi` in a build
/// without it), an unknown backend, or a layout that disagrees with the launcher's.
pub fn connect(backend: &str, env: &RankEnv) -> Result<Box<dyn Communicator>, CommError> {
    let name = backend.trim().to_ascii_lowercase();
    let comm: Box<dyn Communicator> = match name.as_str() {
        "mpi" => connect_mpi()?,
        "threads" => {
            if env.world_size != 1 {
                return Err(CommError::BackendUnavailable {
                    backend: name,
                    detail: format!(
                        "the thread group lives in one process, but the launcher started {} \
                         processes; use `mpi` across processes (or one process with rank threads)",
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
        "nccl" => {
            return Err(CommError::BackendUnavailable {
                backend: name,
                detail: "NCCL communicators are bound to a device: build one with the NCCL \
                         module (feature `nccl`), bootstrapped through `rendezvous::Rendezvous`"
                    .to_string(),
            });
        }
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

/// [`RankEnv::from_env`] and [`connect`] with the backend the environment names
/// (`PLSC_COMM_BACKEND`, else [`default_backend`]); `Ok(None)` when no launcher variable is
/// set.
pub fn connect_from_env() -> Result<Option<(RankEnv, Box<dyn Communicator>)>, CommError> {
    let Some(env) = RankEnv::from_env()? else {
        return Ok(None);
    };
    let backend = env
        .backend
        .clone()
        .unwrap_or_else(|| default_backend(&env).to_string());
    let comm = connect(&backend, &env)?;
    Ok(Some((env, comm)))
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
