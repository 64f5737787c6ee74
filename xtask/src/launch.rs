//! `cargo xtask launch`: starts one process per rank of this node, torchrun style.
//!
//! Each child is this same binary with the given subcommand, and the rank layout in its
//! environment (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `GROUP_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`, `PLSC_COMM_BACKEND`); every line it prints is prefixed with
//! `[rank r]`. SIGINT and SIGTERM are forwarded to the children. When a child fails, the others
//! get SIGTERM, then SIGKILL after the grace period, and launch exits non-zero: it never waits
//! on a stuck rank. With `--backend mpi` it runs the ranks under `mpirun` instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The communicator backend the ranks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// TCP through rank 0 (plsc-comm's `TcpComm` over the rendezvous): CPU ranks without MPI.
    Tcp,
    /// NCCL between GPUs, one process per device, bootstrapped through the TCP rendezvous on
    /// the master (feature `nccl`).
    Nccl,
    /// MPI between CPU hosts: runs the ranks under `mpirun` (feature `mpi`); single node here,
    /// use `mpirun` with a host file across nodes.
    Mpi,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Tcp => "tcp",
            Backend::Nccl => "nccl",
            Backend::Mpi => "mpi",
        }
    }
}

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Processes (ranks) on this node, one per device.
    #[arg(long)]
    nproc_per_node: usize,
    /// Nodes in the job (every node runs `launch` with the same settings and its own
    /// `--node-rank`).
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's index in `0..nnodes`; its ranks are `node_rank * nproc_per_node + local`.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Address of node 0, where rank 0 listens for the rendezvous (only on this address).
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    /// Port of the rendezvous on the master.
    #[arg(long, default_value_t = 29500)]
    master_port: u16,
    /// Communicator backend the ranks use (`PLSC_COMM_BACKEND` in their environment).
    #[arg(long, value_enum, default_value_t = Backend::Tcp)]
    backend: Backend,
    /// Seconds a rank gets to exit after SIGTERM (when another rank failed or on Ctrl-C)
    /// before it is killed.
    #[arg(long, default_value_t = 10.0)]
    grace_s: f64,
    /// The xtask subcommand and its arguments that every rank runs, after `--`
    /// (for example `-- train --config job.toml`).
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

/// Hidden test helper: a rank that reports its environment, sleeps, and maybe fails.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The rank (from `RANK`) that fails.
    #[arg(long)]
    fail_rank: Option<usize>,
    /// How long the failing rank runs before it fails, in milliseconds.
    #[arg(long, default_value_t = 200)]
    fail_after_ms: u64,
    /// Exit status of the failing rank.
    #[arg(long, default_value_t = 3)]
    exit_code: i32,
    /// How long the other ranks run, in milliseconds.
    #[arg(long, default_value_t = 0)]
    sleep_ms: u64,
    /// The other ranks ignore SIGTERM (so only SIGKILL stops them).
    #[arg(long)]
    ignore_term: bool,
    /// Build the communicator the environment names and run plsc-comm's collective suite.
    #[arg(long)]
    suite: bool,
}

pub fn run(args: LaunchArgs) -> anyhow::Result<()> {
    if args.nproc_per_node == 0 || args.nnodes == 0 {
        bail!("--nproc-per-node and --nnodes must be at least 1");
    }
    if args.node_rank >= args.nnodes {
        bail!(
            "--node-rank {} is out of range for --nnodes {}",
            args.node_rank,
            args.nnodes
        );
    }
    if !(args.grace_s.is_finite() && args.grace_s >= 0.0) {
        bail!("--grace-s must be a non-negative number of seconds");
    }
    let grace = Duration::from_secs_f64(args.grace_s);
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let signals = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Store the signal number; the supervisor loop forwards it.
        let s = Arc::clone(&signals);
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe {
            signal_hook::low_level::register(sig, move || s.store(sig as usize, Ordering::SeqCst))
        }
        .with_context(|| format!("installing the handler of signal {sig}"))?;
    }

    let world = args.nnodes * args.nproc_per_node;
    let mut ranks = Vec::new();
    if args.backend == Backend::Mpi {
        if args.nnodes != 1 {
            bail!(
                "--backend mpi starts the ranks of one node; across nodes run mpirun with a host \
                 file (see docs/distributed.md)"
            );
        }
        let mut cmd = Command::new("mpirun");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--allow-run-as-root");
        }
        cmd.args(["--oversubscribe", "--tag-output", "-np"])
            .arg(args.nproc_per_node.to_string())
            .args(["-x", "PLSC_COMM_BACKEND=mpi"])
            .arg(&exe)
            .args(&args.command);
        ranks.push(spawn(cmd, "mpirun".to_string())?);
    } else {
        for local in 0..args.nproc_per_node {
            let rank = args.node_rank * args.nproc_per_node + local;
            let mut cmd = Command::new(&exe);
            cmd.args(&args.command)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", local.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_WORLD_SIZE", args.nproc_per_node.to_string())
                .env("GROUP_RANK", args.node_rank.to_string())
                .env("MASTER_ADDR", &args.master_addr)
                .env("MASTER_PORT", args.master_port.to_string())
                .env("PLSC_COMM_BACKEND", args.backend.name());
            match spawn(cmd, format!("rank {rank}")) {
                Ok(r) => ranks.push(r),
                Err(e) => {
                    stop_all(&mut ranks, libc::SIGTERM, grace);
                    return Err(e);
                }
            }
        }
    }
    tracing::info!(
        world,
        node_rank = args.node_rank,
        backend = args.backend.name(),
        "launched {} processes",
        ranks.len()
    );
    supervise(ranks, &signals, grace)
}

/// A running child with its output forwarders.
struct Rank {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    pumps: Vec<JoinHandle<()>>,
}

fn spawn(mut cmd: Command, label: String) -> anyhow::Result<Rank> {
    // Own process group, so that signals reach the child's own children too.
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {label}: {cmd:?}"))?;
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump(out, format!("[{label}] "), false));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump(err, format!("[{label}] "), true));
    }
    Ok(Rank {
        label,
        child,
        status: None,
        pumps,
    })
}

/// Copies a child's output line by line, each line prefixed, to our stdout or stderr.
fn pump(src: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    let mut buf = Vec::with_capacity(prefix.len() + line.len());
                    buf.extend_from_slice(prefix.as_bytes());
                    buf.extend_from_slice(&line);
                    // One write per line under the lock, so lines of ranks never interleave.
                    let _ = if to_stderr {
                        std::io::stderr().lock().write_all(&buf)
                    } else {
                        std::io::stdout().lock().write_all(&buf)
                    };
                }
            }
        }
    })
}

/// Sends `sig` to every child (and its process group) that is still running.
fn signal_all(ranks: &mut [Rank], sig: i32) {
    for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
        if let Ok(pid) = i32::try_from(r.child.id()) {
            // SAFETY: kill has no memory preconditions; a negative pid names the group.
            unsafe {
                libc::kill(-pid, sig);
            }
        }
    }
}

/// Reaps children that have exited; true when all have.
fn reap(ranks: &mut [Rank]) -> anyhow::Result<bool> {
    for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
        if let Some(st) = r
            .child
            .try_wait()
            .with_context(|| format!("waiting for {}", r.label))?
        {
            r.status = Some(st);
        }
    }
    Ok(ranks.iter().all(|r| r.status.is_some()))
}

/// Sends `sig`, waits up to `grace`, then kills whoever is left and reaps everyone.
fn stop_all(ranks: &mut [Rank], sig: i32, grace: Duration) {
    signal_all(ranks, sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if reap(ranks).unwrap_or(true) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stuck: Vec<&str> = ranks
        .iter()
        .filter(|r| r.status.is_none())
        .map(|r| r.label.as_str())
        .collect();
    if !stuck.is_empty() {
        tracing::warn!("killing {stuck:?} after a grace period of {grace:?}");
    }
    signal_all(ranks, libc::SIGKILL);
    for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
        r.status = r.child.wait().ok();
    }
}

fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => st.to_string(),
    }
}

fn supervise(mut ranks: Vec<Rank>, signals: &AtomicUsize, grace: Duration) -> anyhow::Result<()> {
    let outcome = loop {
        let sig = signals.swap(0, Ordering::SeqCst);
        if sig != 0 {
            tracing::warn!("launch received signal {sig}: stopping every rank");
            stop_all(&mut ranks, sig as i32, grace);
            break Err(anyhow::anyhow!(
                "interrupted by signal {sig}; every rank was stopped"
            ));
        }
        let all_done = reap(&mut ranks)?;
        if let Some(failed) = ranks
            .iter()
            .find(|r| r.status.is_some_and(|s| !s.success()))
        {
            let msg = format!(
                "{} failed ({}); stopping the other ranks",
                failed.label,
                describe(failed.status.unwrap_or_default())
            );
            tracing::error!("{msg}");
            stop_all(&mut ranks, libc::SIGTERM, grace);
            break Err(anyhow::anyhow!("{msg}"));
        }
        if all_done {
            break Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in ranks {
        for p in r.pumps {
            let _ = p.join();
        }
    }
    outcome
}

/// The hidden `launch-probe` subcommand (launch's tests).
pub fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let env = plsc_comm::env::RankEnv::from_env()?;
    let rank = env.as_ref().map(|e| e.rank);
    match &env {
        Some(e) => println!(
            "probe rank {} of {} local {} backend {} master {}:{} pid {}",
            e.rank,
            e.world_size,
            e.local_rank,
            e.backend.as_deref().unwrap_or("-"),
            e.master_addr.as_deref().unwrap_or("-"),
            e.master_port
                .map_or_else(|| "-".to_string(), |p| p.to_string()),
            std::process::id()
        ),
        None => println!(
            "probe without a rank environment pid {}",
            std::process::id()
        ),
    }
    eprintln!("probe stderr line");
    if args.suite {
        let rc = plsc_comm::backend::connect_from_env()?
            .context("launch-probe --suite needs a rank environment")?;
        let checked = plsc_comm::testing::collective_suite(&*rc.comm)?;
        println!(
            "suite ok: rank {} of {}: {checked} results equal the serial reference",
            rc.comm.rank(),
            rc.comm.world_size()
        );
    }
    std::io::stdout().flush()?;
    if rank.is_some() && rank == args.fail_rank {
        std::thread::sleep(Duration::from_millis(args.fail_after_ms));
        eprintln!("probe failing on purpose");
        std::process::exit(args.exit_code);
    }
    if args.ignore_term {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, flag)?;
    }
    std::thread::sleep(Duration::from_millis(args.sleep_ms));
    Ok(())
}
