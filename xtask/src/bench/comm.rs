//! `cargo xtask bench comm`: bandwidth of the thread-group collectives against a plain memcpy.
//!
//! For each rank count and f32 buffer size: the median time of a sum all-reduce of the buffer,
//! of an all-gather whose result is the buffer size (each rank sends `size / ranks`), and of a
//! `copy_from_slice` of the same size into a reused buffer, all measured in the same run (the
//! memcpy on rank 0's thread, interleaved with the all-reduce iterations, so that both see the
//! same load on a shared machine).
//! Bandwidth is the buffer size divided by the median time.

use std::time::Instant;

use anyhow::{Context, bail};
use plsc_comm::{CommError, CommExt, Communicator, ReduceOp, run_ranks};
use serde::Serialize;

use super::stats::{median, parse_size};

/// Arguments of `cargo xtask bench comm`.
#[derive(clap::Args, Debug)]
pub struct CommArgs {
    /// Buffer sizes in bytes, comma separated; the suffixes KiB and MiB are accepted.
    #[arg(long, value_delimiter = ',', value_parser = parse_f32_buffer_size,
          default_value = "4KiB,64KiB,1MiB,16MiB,64MiB")]
    sizes: Vec<usize>,
    /// Rank counts (threads of one thread group), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    ranks: Vec<usize>,
    /// Timed iterations per measurement [default: 1 GiB / size, clamped to 15..=500].
    #[arg(long)]
    iters: Option<usize>,
}

/// A buffer size for `--sizes` ([`parse_size`]'s forms): a whole number of f32 values.
fn parse_f32_buffer_size(s: &str) -> Result<usize, String> {
    let bytes = parse_size(s)?;
    if bytes % 4 != 0 {
        return Err(format!(
            "size {s:?} must be a positive multiple of 4 bytes (f32)"
        ));
    }
    usize::try_from(bytes).map_err(|_| format!("size {s:?} is too large"))
}

#[derive(Serialize)]
struct Timing {
    median_s: f64,
    bandwidth_bytes_per_s: f64,
}

impl Timing {
    fn new(times: Vec<f64>, bytes: usize) -> Self {
        let median_s = median(&times);
        Self {
            median_s,
            bandwidth_bytes_per_s: bytes as f64 / median_s,
        }
    }
}

#[derive(Serialize)]
struct AllGatherTiming {
    send_bytes_per_rank: usize,
    total_bytes: usize,
    #[serde(flatten)]
    timing: Timing,
}

#[derive(Serialize)]
struct Case {
    ranks: usize,
    size_bytes: usize,
    iters: usize,
    memcpy: Timing,
    all_reduce_sum: Timing,
    all_gather: AllGatherTiming,
    all_reduce_bw_over_memcpy_bw: f64,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    dtype: &'static str,
    cases: Vec<Case>,
    /// The goal case (64 MiB, 2 ranks), when it was measured.
    all_reduce_64mib_2_ranks_over_memcpy: Option<f64>,
    machine: plsc_train::machine::MachineInfo,
}

/// A plain memcpy of the benchmark's size: `copy_from_slice` into a reused buffer.
struct Memcpy {
    src: Vec<f32>,
    dst: Vec<f32>,
}

impl Memcpy {
    fn new(elems: usize) -> Self {
        let mut m = Self {
            src: vec![1.0; elems],
            dst: vec![0.0; elems],
        };
        m.run(); // warm-up: the pages of both buffers are touched
        m
    }

    fn run(&mut self) -> f64 {
        let t = Instant::now();
        self.dst.copy_from_slice(std::hint::black_box(&self.src));
        std::hint::black_box(&mut self.dst);
        t.elapsed().as_secs_f64()
    }
}

/// Times of one collective as seen by rank 0, each iteration starting from a barrier. `setup`
/// makes each rank's buffers once (on the rank's thread); `op` runs the collective on them.
/// With `memcpy_elems`, rank 0 also times a memcpy of that many f32 before each iteration
/// (while the other ranks wait), so both figures see the same machine load; its times come
/// second.
fn time_ranks<S>(
    ranks: usize,
    iters: usize,
    memcpy_elems: Option<usize>,
    setup: impl Fn(&dyn Communicator) -> S + Sync,
    op: impl Fn(&dyn Communicator, &mut S) -> Result<(), CommError> + Sync,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let results = run_ranks(ranks, |comm| {
        let mut state = setup(&comm);
        let mut memcpy = memcpy_elems.filter(|_| comm.rank() == 0).map(Memcpy::new);
        op(&comm, &mut state)?; // warm-up
        let mut times = Vec::with_capacity(iters);
        let mut memcpy_times = Vec::with_capacity(iters);
        for _ in 0..iters {
            if let Some(m) = memcpy.as_mut() {
                memcpy_times.push(m.run());
            }
            comm.barrier()?;
            let t = Instant::now();
            op(&comm, &mut state)?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok::<_, CommError>((times, memcpy_times))
    });
    let mut per_rank = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("collective failed")?;
    Ok(per_rank.swap_remove(0))
}

fn measure(ranks: usize, size: usize, iters: usize) -> anyhow::Result<Case> {
    let elems = size / 4;
    // Zeros stay zeros under repeated sums.
    let (all_reduce, memcpy) = time_ranks(
        ranks,
        iters,
        Some(elems),
        |_| vec![0.0f32; elems],
        |comm, buf| comm.all_reduce(buf, ReduceOp::Sum),
    )?;
    let all_reduce = Timing::new(all_reduce, size);
    let memcpy = Timing::new(memcpy, size);

    let send_elems = elems / ranks;
    let (all_gather, _) = time_ranks(
        ranks,
        iters,
        None,
        |comm| {
            (
                vec![1.0f32; send_elems],
                vec![0.0f32; send_elems * comm.world_size()],
            )
        },
        |comm, (send, recv)| comm.all_gather_into(send, recv),
    )?;
    let total = send_elems * ranks * 4;
    let all_gather = AllGatherTiming {
        send_bytes_per_rank: send_elems * 4,
        total_bytes: total,
        timing: Timing::new(all_gather, total),
    };

    Ok(Case {
        ranks,
        size_bytes: size,
        iters,
        all_reduce_bw_over_memcpy_bw: all_reduce.bandwidth_bytes_per_s
            / memcpy.bandwidth_bytes_per_s,
        memcpy,
        all_reduce_sum: all_reduce,
        all_gather,
    })
}

/// Runs the benchmark and prints its JSON document.
pub fn run(args: CommArgs) -> anyhow::Result<()> {
    if args.ranks.contains(&0) {
        bail!("--ranks must be positive");
    }
    if args.iters == Some(0) {
        bail!("--iters must be positive");
    }
    let mut cases = Vec::new();
    for &ranks in &args.ranks {
        for &size in &args.sizes {
            let iters = args.iters.unwrap_or(((1usize << 30) / size).clamp(15, 500));
            tracing::info!(ranks, size, iters, "measuring");
            cases.push(measure(ranks, size, iters)?);
        }
    }
    let goal = cases
        .iter()
        .find(|c| c.ranks == 2 && c.size_bytes == 64 << 20)
        .map(|c| c.all_reduce_bw_over_memcpy_bw);
    let report = Report {
        bench: "comm",
        dtype: "f32",
        cases,
        all_reduce_64mib_2_ranks_over_memcpy: goal,
        machine: plsc_train::machine::machine_info(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
