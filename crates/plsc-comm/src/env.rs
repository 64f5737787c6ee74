//! Ranks from the launcher's environment: [`RankEnv::from_env`].
//!
//! Accepted, first match wins:
//! 1. ours and torchrun's: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
//!    `MASTER_ADDR`, `MASTER_PORT` (set by `cargo xtask launch`);
//! 2. PaddlePaddle / PLSC's: `PADDLE_TRAINER_ID`, `PADDLE_TRAINERS_NUM`,
//!    `PADDLE_TRAINER_ENDPOINTS` (`host:port,host:port,...`, one per rank; the master is the
//!    first one unless `MASTER_ADDR`/`MASTER_PORT` are set; the local rank is
//!    `PADDLE_RANK_IN_NODE`/`PADDLE_LOCAL_RANK`, or counted from the endpoints on the same host);
//! 3. Open MPI's: `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_LOCAL_RANK`,
//!    `OMPI_COMM_WORLD_LOCAL_SIZE`;
//! 4. MPICH / Intel MPI's: `PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID`.
//!
//! `PLSC_COMM_BACKEND` (set by `cargo xtask launch`) names the communicator backend.
//! `PLSC_RENDEZVOUS_TIMEOUT_S` bounds the TCP rendezvous (default 300 s).

use std::time::Duration;

use crate::error::CommError;

/// The variable that names the communicator backend (`tcp`, `mpi`, `nccl`).
pub const BACKEND_VAR: &str = "PLSC_COMM_BACKEND";
/// The variable that bounds the rendezvous, in seconds.
pub const RENDEZVOUS_TIMEOUT_VAR: &str = "PLSC_RENDEZVOUS_TIMEOUT_S";
/// The rendezvous timeout when [`RENDEZVOUS_TIMEOUT_VAR`] is unset.
pub const DEFAULT_RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

/// Which launcher's variables a [`RankEnv`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `RANK` / `WORLD_SIZE` (`cargo xtask launch`, torchrun).
    Torchrun,
    /// `PADDLE_TRAINER_ID` / `PADDLE_TRAINERS_NUM` (PaddlePaddle, PLSC).
    Paddle,
    /// `OMPI_COMM_WORLD_RANK` / `OMPI_COMM_WORLD_SIZE` (Open MPI's mpirun).
    OpenMpi,
    /// `PMI_RANK` / `PMI_SIZE` (MPICH, Intel MPI).
    Pmi,
}

/// This process's place in a multi-process world, as the launcher described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    /// Global rank in `0..world_size`.
    pub rank: usize,
    /// Number of ranks (processes) in the world.
    pub world_size: usize,
    /// Rank among the processes of this node (selects the device); 0 when the launcher
    /// does not say.
    pub local_rank: usize,
    /// Number of processes on this node, when the launcher says.
    pub local_world_size: Option<usize>,
    /// Address of rank 0's rendezvous (`MASTER_ADDR`), when given.
    pub master_addr: Option<String>,
    /// Port of rank 0's rendezvous (`MASTER_PORT`), when given.
    pub master_port: Option<u16>,
    /// The communicator backend named by `PLSC_COMM_BACKEND`, when set.
    pub backend: Option<String>,
    /// How long the rendezvous may take (`PLSC_RENDEZVOUS_TIMEOUT_S`, default 300 s).
    pub rendezvous_timeout: Duration,
    /// Which launcher's variables these came from.
    pub launcher: Launcher,
}

impl RankEnv {
    /// Reads the process environment. `Ok(None)` when no launcher variable is set (a plain,
    /// single-process run); an error names the variable that is missing, malformed or
    /// inconsistent (for example `RANK` without `WORLD_SIZE`, or `RANK >= WORLD_SIZE`).
    pub fn from_env() -> Result<Option<Self>, CommError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`RankEnv::from_env`] over any variable lookup (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, CommError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let Some((launcher, rank_var, world_var)) = [
            (Launcher::Torchrun, "RANK", "WORLD_SIZE"),
            (Launcher::Paddle, "PADDLE_TRAINER_ID", "PADDLE_TRAINERS_NUM"),
            (
                Launcher::OpenMpi,
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
            ),
            (Launcher::Pmi, "PMI_RANK", "PMI_SIZE"),
        ]
        .into_iter()
        .find(|(_, r, w)| get(r).is_some() || get(w).is_some()) else {
            return Ok(None);
        };

        let rank = parse_usize(rank_var, get(rank_var), world_var)?;
        let world_size = parse_usize(world_var, get(world_var), rank_var)?;
        if world_size == 0 {
            return Err(env_err(world_var, "must be at least 1"));
        }
        if rank >= world_size {
            return Err(env_err(
                rank_var,
                format!("rank {rank} is out of range for {world_var}={world_size}"),
            ));
        }

        let opt_usize = |var: &str| -> Result<Option<usize>, CommError> {
            get(var).map(|v| parse_value(var, &v)).transpose()
        };
        let mut master_addr = get("MASTER_ADDR").map(|a| a.trim().to_string());
        let mut master_port = get("MASTER_PORT")
            .map(|p| parse_port("MASTER_PORT", &p))
            .transpose()?;
        let (local_rank, local_world_size) = match launcher {
            Launcher::Torchrun => (opt_usize("LOCAL_RANK")?, opt_usize("LOCAL_WORLD_SIZE")?),
            Launcher::Paddle => {
                let explicit = match opt_usize("PADDLE_RANK_IN_NODE")? {
                    Some(l) => Some(l),
                    None => opt_usize("PADDLE_LOCAL_RANK")?,
                };
                let mut local = explicit;
                let mut local_size = None;
                if let Some(eps) = get("PADDLE_TRAINER_ENDPOINTS") {
                    let eps = parse_endpoints(&eps, world_size)?;
                    if master_addr.is_none() {
                        master_addr = Some(eps[0].0.clone());
                    }
                    if master_port.is_none() {
                        master_port = Some(eps[0].1);
                    }
                    let host = &eps[rank].0;
                    local_size = Some(eps.iter().filter(|(h, _)| h == host).count());
                    if local.is_none() {
                        local = Some(eps[..rank].iter().filter(|(h, _)| h == host).count());
                    }
                }
                (local, local_size)
            }
            Launcher::OpenMpi => (
                opt_usize("OMPI_COMM_WORLD_LOCAL_RANK")?,
                opt_usize("OMPI_COMM_WORLD_LOCAL_SIZE")?,
            ),
            Launcher::Pmi => (opt_usize("MPI_LOCALRANKID")?, opt_usize("MPI_LOCALNRANKS")?),
        };
        let local_rank = local_rank.unwrap_or(0);
        if let Some(size) = local_world_size
            && local_rank >= size
        {
            return Err(env_err(
                "LOCAL_RANK",
                format!("local rank {local_rank} is out of range for a node of {size} processes"),
            ));
        }

        let rendezvous_timeout = match get(RENDEZVOUS_TIMEOUT_VAR) {
            None => DEFAULT_RENDEZVOUS_TIMEOUT,
            Some(v) => {
                let secs: f64 = v.trim().parse().map_err(|_| {
                    env_err(
                        RENDEZVOUS_TIMEOUT_VAR,
                        format!("{v:?} is not a number of seconds"),
                    )
                })?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(env_err(
                        RENDEZVOUS_TIMEOUT_VAR,
                        "must be a positive number of seconds",
                    ));
                }
                Duration::from_secs_f64(secs)
            }
        };

        Ok(Some(RankEnv {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr,
            master_port,
            backend: get(BACKEND_VAR).map(|b| b.trim().to_ascii_lowercase()),
            rendezvous_timeout,
            launcher,
        }))
    }

    /// The master's address and port for the TCP rendezvous; an error names the missing
    /// variable.
    pub fn master(&self) -> Result<(String, u16), CommError> {
        let addr = self.master_addr.clone().ok_or_else(|| {
            env_err(
                "MASTER_ADDR",
                "not set (the address of rank 0's rendezvous)",
            )
        })?;
        let port = self
            .master_port
            .ok_or_else(|| env_err("MASTER_PORT", "not set (the port of rank 0's rendezvous)"))?;
        Ok((addr, port))
    }
}

fn env_err(var: &str, detail: impl Into<String>) -> CommError {
    CommError::Env {
        var: var.to_string(),
        detail: detail.into(),
    }
}

fn parse_value(var: &str, v: &str) -> Result<usize, CommError> {
    v.trim()
        .parse()
        .map_err(|_| env_err(var, format!("{v:?} is not a non-negative integer")))
}

fn parse_usize(var: &str, v: Option<String>, partner: &str) -> Result<usize, CommError> {
    match v {
        Some(v) => parse_value(var, &v),
        None => Err(env_err(var, format!("not set, but {partner} is"))),
    }
}

fn parse_port(var: &str, v: &str) -> Result<u16, CommError> {
    v.trim()
        .parse()
        .map_err(|_| env_err(var, format!("{v:?} is not a port number (0-65535)")))
}

/// `host:port,host:port,...` with exactly `world` entries (IPv6 hosts in brackets).
fn parse_endpoints(v: &str, world: usize) -> Result<Vec<(String, u16)>, CommError> {
    const VAR: &str = "PADDLE_TRAINER_ENDPOINTS";
    let eps: Vec<(String, u16)> = v
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (host, port) = e
                .rsplit_once(':')
                .ok_or_else(|| env_err(VAR, format!("endpoint {e:?} is not host:port")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(env_err(VAR, format!("endpoint {e:?} has an empty host")));
            }
            Ok((host.to_string(), parse_port(VAR, port)?))
        })
        .collect::<Result<_, _>>()?;
    if eps.len() != world {
        return Err(env_err(
            VAR,
            format!(
                "{} endpoints but PADDLE_TRAINERS_NUM={world} (one endpoint per rank)",
                eps.len()
            ),
        ));
    }
    Ok(eps)
}
