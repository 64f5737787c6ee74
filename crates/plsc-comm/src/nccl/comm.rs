//! [`NcclComm`]: construction, the locked session every collective runs in, the raw NCCL
//! calls on device pointers, and waiting for completion with NCCL's error checks.

use std::ffi::CStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::result as nccl;
use cudarc::nccl::sys::{self as nsys, ncclComm_t, ncclRedOp_t, ncclResult_t};

use super::dtype::DeviceDType;
use super::library::{guarded, require_libraries};
use super::ptr::DeviceAddr;
use super::unique_id;
use crate::call::fixed::{DESC_WORDS, Desc, check};
use crate::communicator::ReduceOp;
use crate::error::CommError;

/// How sums (and max/min) over ranks are formed. See the [module documentation](super).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Gather every rank's values, then fold them in rank order 0, 1, ..., N-1: results are
    /// bit for bit those of [`ThreadGroup`](crate::ThreadGroup) (NaN handling included). Moves
    /// `N - 1` times the buffer per rank instead of NCCL's `2 (N - 1) / N`.
    #[default]
    RankOrder,
    /// NCCL's own reduction (ring or tree): identical on every rank, but the order of the sum
    /// is NCCL's, not rank order, and NCCL's max/min need not propagate NaN.
    Nccl,
}

/// Settings of an [`NcclComm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NcclOptions {
    /// Before each collective, all-gather a small call descriptor and check lengths, element
    /// types, roots and counts on every rank, so a mismatch is the same error on every rank
    /// (default `true`). Off saves one small collective per call, but a mismatch then hangs
    /// or corrupts memory inside NCCL.
    pub validate: bool,
    /// How sums and max/min are formed (default [`Reduction::RankOrder`]).
    pub reduction: Reduction,
    /// Longest wait for one collective to finish; past it the communicator is aborted and
    /// the call returns [`CommError::Timeout`] (default: no limit; NCCL's asynchronous errors,
    /// such as a peer's failure, are checked while waiting either way).
    pub timeout: Option<Duration>,
}

impl Default for NcclOptions {
    fn default() -> Self {
        NcclOptions {
            validate: true,
            reduction: Reduction::RankOrder,
            timeout: None,
        }
    }
}

/// An NCCL communicator handle (a raw pointer owned by one [`NcclComm`]).
struct RawComm(ncclComm_t);
// SAFETY: the handle is only used under the `NcclComm`'s mutex, one thread at a time, which
// is what NCCL requires of a communicator.
unsafe impl Send for RawComm {}

/// The mutable state: the NCCL handle and, once a failure aborted it, why.
struct State {
    comm: RawComm,
    broken: Option<String>,
}

/// A [`Communicator`](crate::Communicator) over NCCL: one per process and GPU. See the
/// [module documentation](super).
pub struct NcclComm {
    rank: usize,
    world: usize,
    device: usize,
    options: NcclOptions,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    state: Mutex<State>,
}

impl std::fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("device", &self.device)
            .field("options", &self.options)
            .finish()
    }
}

/// An NCCL error with NCCL's own explanation.
pub(crate) fn nccl_error(
    rank: usize,
    op: &'static str,
    code: ncclResult_t,
    comm: Option<ncclComm_t>,
) -> CommError {
    // NCCL returns static, NUL-terminated strings (or null).
    let text = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, and NCCL's error strings are static and NUL-terminated.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let what = guarded(rank, op, || {
        // SAFETY: takes any result code by value and returns a static string.
        Ok(text(unsafe { nsys::ncclGetErrorString(code) }))
    })
    .unwrap_or_default();
    let last = comm
        .and_then(|c| {
            // SAFETY: `c` is the live communicator the failed call used (callers pass `None`
            // once it is aborted or before it exists).
            guarded(rank, op, || Ok(text(unsafe { nsys::ncclGetLastError(c) }))).ok()
        })
        .filter(|s| !s.is_empty())
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    CommError::Backend {
        rank,
        op,
        detail: format!("NCCL {code:?}: {what}{last}"),
    }
}

/// A CUDA driver error.
pub(crate) fn cuda_error(rank: usize, op: &'static str, e: impl std::fmt::Debug) -> CommError {
    CommError::Backend {
        rank,
        op,
        detail: format!("CUDA: {e:?}"),
    }
}

impl NcclComm {
    /// Makes a new NCCL unique id: call on rank 0 only, and send the bytes to every rank
    /// (the launcher's rendezvous carries them). Needs the NCCL library, not a GPU.
    pub fn unique_id() -> Result<Vec<u8>, CommError> {
        require_libraries(0)?;
        guarded(0, "nccl_unique_id", || {
            let id =
                nccl::get_uniqueid().map_err(|e| nccl_error(0, "nccl_unique_id", e.0, None))?;
            Ok(unique_id::to_bytes(&id))
        })
    }

    /// Joins the group as `rank` of `world` on GPU `device`, with default [`NcclOptions`].
    /// `id` is the 128 bytes [`NcclComm::unique_id`] made on rank 0. Blocks until all `world`
    /// ranks have joined (NCCL's `ncclCommInitRank`).
    pub fn new(rank: usize, world: usize, id: &[u8], device: usize) -> Result<Self, CommError> {
        Self::with_options(rank, world, id, device, NcclOptions::default())
    }

    /// [`NcclComm::new`] with explicit options.
    pub fn with_options(
        rank: usize,
        world: usize,
        id: &[u8],
        device: usize,
        options: NcclOptions,
    ) -> Result<Self, CommError> {
        let op = "nccl_init";
        if rank >= world || world > i32::MAX as usize {
            return Err(CommError::BadRank {
                rank,
                op,
                bad: rank,
                world,
            });
        }
        let id = unique_id::from_bytes(rank, id)?;
        require_libraries(rank)?;
        guarded(rank, op, || {
            let count = CudaContext::device_count().map_err(|e| cuda_error(rank, op, e))?;
            if device >= count.max(0) as usize {
                return Err(CommError::BadDevice {
                    rank,
                    device,
                    count: count.max(0) as usize,
                });
            }
            let ctx = CudaContext::new(device).map_err(|e| cuda_error(rank, op, e))?;
            let stream = ctx.new_stream().map_err(|e| cuda_error(rank, op, e))?;
            let mut raw: ncclComm_t = std::ptr::null_mut();
            // SAFETY: `raw` is a valid out-pointer; the device's context is current on this
            // thread (NCCL binds the communicator to the current device).
            unsafe { nccl::comm_init_rank(&mut raw, world as i32, id, rank as i32) }
                .map_err(|e| nccl_error(rank, op, e.0, None))?;
            tracing::debug!(rank, world, device, "NCCL communicator ready");
            Ok(NcclComm {
                rank,
                world,
                device,
                options,
                ctx,
                stream,
                state: Mutex::new(State {
                    comm: RawComm(raw),
                    broken: None,
                }),
            })
        })
    }

    /// This rank's index (also [`Communicator::rank`](crate::Communicator::rank)).
    pub(crate) fn rank_index(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub(crate) fn world(&self) -> usize {
        self.world
    }

    /// The GPU ordinal this communicator runs on.
    pub fn device(&self) -> usize {
        self.device
    }

    /// The options it was made with.
    pub fn options(&self) -> NcclOptions {
        self.options
    }

    /// The CUDA context (the device's primary context, which burn-cuda also uses).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every collective of this communicator runs on. Each call has finished on
    /// it when the call returns.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The version of the loaded NCCL library, as NCCL encodes it (e.g. 22703 for 2.27.3).
    pub fn nccl_version(&self) -> Result<i32, CommError> {
        guarded(self.rank, "nccl_version", || {
            nccl::get_nccl_version().map_err(|e| nccl_error(self.rank, "nccl_version", e.0, None))
        })
    }

    /// Runs `f` with this communicator locked, its context current on the calling thread,
    /// and cudarc's panics turned into errors. A broken communicator fails at once.
    pub(crate) fn session<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Session<'_>) -> Result<R, CommError>,
    ) -> Result<R, CommError> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cause) = &guard.broken {
            return Err(CommError::Broken {
                rank: self.rank,
                op,
                cause: cause.clone(),
            });
        }
        let session = Session {
            comm: self,
            op,
            state: std::cell::RefCell::new(guard),
        };
        guarded(self.rank, op, || {
            self.ctx
                .bind_to_thread()
                .map_err(|e| cuda_error(self.rank, op, e))?;
            f(&session)
        })
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let raw = std::mem::replace(&mut state.comm.0, std::ptr::null_mut());
        if raw.is_null() {
            return;
        }
        let rank = self.rank;
        let _ = guarded(rank, "nccl_drop", || {
            let _ = self.ctx.bind_to_thread();
            // SAFETY: `raw` came from `ncclCommInitRank` and is destroyed once; every
            // collective has completed (each call waits for its stream).
            if let Err(e) = unsafe { nccl::comm_destroy(raw) } {
                tracing::warn!(rank, "ncclCommDestroy failed: {:?}", e.0);
            }
            Ok(())
        });
    }
}

/// One locked collective call: the raw NCCL operations, staging buffers and the wait.
pub(crate) struct Session<'a> {
    pub comm: &'a NcclComm,
    pub op: &'static str,
    state: std::cell::RefCell<MutexGuard<'a, State>>,
}

pub(crate) fn nccl_op(op: ReduceOp) -> ncclRedOp_t {
    match op {
        ReduceOp::Sum => ncclRedOp_t::ncclSum,
        ReduceOp::Max => ncclRedOp_t::ncclMax,
        ReduceOp::Min => ncclRedOp_t::ncclMin,
    }
}

impl Session<'_> {
    pub fn rank(&self) -> usize {
        self.comm.rank
    }
    pub fn world(&self) -> usize {
        self.comm.world
    }
    fn raw(&self) -> ncclComm_t {
        self.state.borrow().comm.0
    }
    fn stream_ptr(&self) -> nsys::cudaStream_t {
        self.comm.stream.cu_stream() as nsys::cudaStream_t
    }
    fn check_nccl(&self, r: Result<nccl::NcclStatus, nccl::NcclError>) -> Result<(), CommError> {
        r.map(|_| ())
            .map_err(|e| nccl_error(self.rank(), self.op, e.0, Some(self.raw())))
    }
    pub fn cuda(&self, e: impl std::fmt::Debug) -> CommError {
        cuda_error(self.rank(), self.op, e)
    }

    /// Aborts the communicator after a failure: later calls return [`CommError::Broken`].
    fn abort(&self, cause: String) {
        let mut state = self.state.borrow_mut();
        let raw = std::mem::replace(&mut state.comm.0, std::ptr::null_mut());
        if !raw.is_null() {
            // SAFETY: `raw` is a live communicator; after abort it is never used again.
            let _ = unsafe { nccl::comm_abort(raw) };
        }
        state.broken = Some(cause);
    }

    /// Runs the NCCL calls of `f` as one group (`ncclGroupStart` / `ncclGroupEnd`), so they
    /// progress together (needed for send/recv pairs and fused collectives).
    pub fn group(&self, f: impl FnOnce() -> Result<(), CommError>) -> Result<(), CommError> {
        self.check_nccl(nccl::group_start())?;
        let r = f();
        let end = self.check_nccl(nccl::group_end());
        r.and(end)
    }

    /// Waits until everything queued on the stream has run, polling NCCL for asynchronous
    /// errors and applying the timeout; either failure aborts the communicator.
    pub fn wait(&self) -> Result<(), CommError> {
        use cudarc::driver::sys::{CUresult, cuStreamQuery};
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            // SAFETY: the stream is alive for the communicator's lifetime.
            match unsafe { cuStreamQuery(self.comm.stream.cu_stream()) } {
                CUresult::CUDA_SUCCESS => return Ok(()),
                CUresult::CUDA_ERROR_NOT_READY => {}
                e => {
                    let err = self.cuda(e);
                    self.abort(err.to_string());
                    return Err(err);
                }
            }
            let mut async_err = ncclResult_t::ncclSuccess;
            // SAFETY: live communicator, valid out-pointer.
            let got = unsafe { nsys::ncclCommGetAsyncError(self.raw(), &mut async_err) };
            let failed = [got, async_err]
                .into_iter()
                .find(|r| !matches!(r, ncclResult_t::ncclSuccess | ncclResult_t::ncclInProgress));
            if let Some(code) = failed {
                let err = nccl_error(self.rank(), self.op, code, Some(self.raw()));
                self.abort(err.to_string());
                return Err(err);
            }
            if let Some(limit) = self.comm.options.timeout
                && start.elapsed() > limit
            {
                let err = CommError::Timeout {
                    rank: self.rank(),
                    op: self.op,
                    waited_ms: start.elapsed().as_millis(),
                    missing: Vec::new(),
                };
                self.abort(err.to_string());
                return Err(err);
            }
            polls += 1;
            if polls < 2000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// A device buffer of `n` zeroed elements (at least one, so empty buffers have an address).
    pub fn alloc<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, CommError> {
        self.comm
            .stream
            .alloc_zeros::<T>(n.max(1))
            .map_err(|e| self.cuda(e))
    }

    /// A device copy of `host` (at least one element long).
    pub fn upload<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        host: &[T],
    ) -> Result<CudaSlice<T>, CommError> {
        let mut d = self.alloc::<T>(host.len())?;
        if !host.is_empty() {
            self.comm
                .stream
                .memcpy_htod(host, &mut d)
                .map_err(|e| self.cuda(e))?;
        }
        Ok(d)
    }

    /// Copies the first `host.len()` elements of `dev` into `host` and waits for the copy.
    pub fn download<T: DeviceRepr>(
        &self,
        dev: &CudaSlice<T>,
        host: &mut [T],
    ) -> Result<(), CommError> {
        if host.is_empty() {
            return Ok(());
        }
        let view = dev.slice(..host.len());
        self.comm
            .stream
            .memcpy_dtoh(&view, host)
            .map_err(|e| self.cuda(e))?;
        self.comm.stream.synchronize().map_err(|e| self.cuda(e))
    }

    /// The device address of a staging buffer.
    pub fn ptr<T>(&self, d: &CudaSlice<T>) -> DeviceAddr {
        let (p, _sync) = d.device_ptr(&self.comm.stream);
        DeviceAddr::from_raw(p)
    }

    // Raw NCCL collectives on device addresses, queued on the communicator's stream.
    //
    // # Safety (every function below)
    // The caller guarantees that the addresses hold the stated number of elements of `dtype`
    // on this communicator's device, that they stay alive until `wait` returns, and that no
    // other stream writes them meanwhile.

    pub unsafe fn all_reduce(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        // SAFETY: the addresses and counts are this function's contract (see above); the
        // communicator and its stream are alive while `self` borrows them.
        let r = unsafe {
            nccl::all_reduce(
                send.as_send(),
                recv.as_recv(),
                count,
                dtype.nccl(),
                nccl_op(op),
                self.raw(),
                self.stream_ptr(),
            )
        };
        self.check_nccl(r)
    }

    pub unsafe fn all_gather(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
    ) -> Result<(), CommError> {
        // SAFETY: the addresses and counts are this function's contract (see above); the
        // communicator and its stream are alive while `self` borrows them.
        let r = unsafe {
            nccl::all_gather(
                send.as_send(),
                recv.as_recv(),
                count,
                dtype.nccl(),
                self.raw(),
                self.stream_ptr(),
            )
        };
        self.check_nccl(r)
    }

    pub unsafe fn reduce_scatter(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        recv_count: usize,
        dtype: DeviceDType,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        // SAFETY: the addresses and counts are this function's contract (see above); the
        // communicator and its stream are alive while `self` borrows them.
        let r = unsafe {
            nccl::reduce_scatter(
                send.as_send(),
                recv.as_recv(),
                recv_count,
                dtype.nccl(),
                nccl_op(op),
                self.raw(),
                self.stream_ptr(),
            )
        };
        self.check_nccl(r)
    }

    /// `send` is read on `root` only; `recv` receives on every rank.
    pub unsafe fn broadcast(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
        root: usize,
    ) -> Result<(), CommError> {
        // SAFETY: the addresses and counts are this function's contract (see above); the
        // communicator and its stream are alive while `self` borrows them.
        let r = unsafe {
            nccl::broadcast(
                send.as_send(),
                recv.as_recv(),
                count,
                dtype.nccl(),
                root as i32,
                self.raw(),
                self.stream_ptr(),
            )
        };
        self.check_nccl(r)
    }

    /// `recv` is written on `root` only.
    pub unsafe fn reduce(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
        op: ReduceOp,
        root: usize,
    ) -> Result<(), CommError> {
        // SAFETY: the addresses and counts are this function's contract (see above); the
        // communicator and its stream are alive while `self` borrows them.
        let r = unsafe {
            nccl::reduce(
                send.as_send(),
                recv.as_recv(),
                count,
                dtype.nccl(),
                nccl_op(op),
                root as i32,
                self.raw(),
                self.stream_ptr(),
            )
        };
        self.check_nccl(r)
    }

    pub unsafe fn send(
        &self,
        send: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
        peer: usize,
    ) -> Result<(), CommError> {
        // SAFETY: the addresses and counts are this function's contract (see above); the
        // communicator and its stream are alive while `self` borrows them.
        let r = unsafe {
            nccl::send(
                send.as_send(),
                count,
                dtype.nccl(),
                peer as i32,
                self.raw(),
                self.stream_ptr(),
            )
        };
        self.check_nccl(r)
    }

    pub unsafe fn recv(
        &self,
        recv: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
        peer: usize,
    ) -> Result<(), CommError> {
        // SAFETY: the addresses and counts are this function's contract (see above); the
        // communicator and its stream are alive while `self` borrows them.
        let r = unsafe {
            nccl::recv(
                recv.as_recv(),
                count,
                dtype.nccl(),
                peer as i32,
                self.raw(),
                self.stream_ptr(),
            )
        };
        self.check_nccl(r)
    }

    /// Rank-order blocks: rank r ends with `[block from rank 0, block from rank 1, ...]` at
    /// `recv`, each `counts[r]` elements, where rank p's block for rank r starts at `send` +
    /// `offsets[r]` elements. (An all-to-all of the reduce-scatter blocks, via send/recv.)
    pub unsafe fn gather_blocks(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        counts: &[usize],
        dtype: DeviceDType,
    ) -> Result<(), CommError> {
        let me = self.rank();
        let mine = counts[me];
        self.group(|| {
            let mut off = 0;
            for (peer, &c) in counts.iter().enumerate() {
                if c > 0 {
                    // SAFETY: rank `peer`'s block is elements `off..off + c` of `send`, inside
                    // its `sum(counts)` elements (this function's contract).
                    unsafe { self.send(send.offset(off, dtype), c, dtype, peer)? };
                }
                off += c;
                if mine > 0 {
                    let dst = recv.offset(peer * mine, dtype);
                    // SAFETY: block `peer` of `recv` is elements `peer * mine..(peer + 1) *
                    // mine`, inside its `world * counts[rank]` elements (the contract).
                    unsafe { self.recv(dst, mine, dtype, peer)? };
                }
            }
            Ok(())
        })
    }

    /// Variable-count all-gather: every rank's `counts[p]` elements (rank p's at `send`)
    /// land at `recv` in rank order, through one group of broadcasts.
    pub unsafe fn all_gather_var(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        counts: &[usize],
        dtype: DeviceDType,
    ) -> Result<(), CommError> {
        let me = self.rank();
        self.group(|| {
            let mut off = 0;
            for (root, &c) in counts.iter().enumerate() {
                let dst = recv.offset(off, dtype);
                if c > 0 {
                    let src = if root == me { send } else { dst };
                    // SAFETY: `dst` is elements `off..off + c` of `recv`, inside its
                    // `sum(counts)` elements; on the root `src` is its own `c` elements at
                    // `send` (the contract), elsewhere NCCL does not read it.
                    unsafe { self.broadcast(src, dst, c, dtype, root)? };
                }
                off += c;
            }
            Ok(())
        })
    }

    /// The cross-rank check (when validation is on): all-gathers `desc` and runs
    /// [`check`] on every rank. Returns every rank's first descriptor word (their lengths),
    /// or, with validation off, this rank's alone repeated.
    pub fn agree(&self, desc: Desc, counts: Option<&[usize]>) -> Result<Vec<usize>, CommError> {
        if !self.comm.options.validate {
            return Ok(vec![desc.words[0].max(0) as usize; self.world()]);
        }
        let descs = self.exchange_descs(desc)?;
        check(self.rank(), self.op, &descs, counts)
    }

    /// All-gathers one descriptor per rank (always, validation or not: the variable-count
    /// gather needs the lengths).
    pub fn exchange_descs(&self, desc: Desc) -> Result<Vec<Desc>, CommError> {
        let words = desc.encode();
        let send = self.upload(&words)?;
        let recv = self.alloc::<i64>(DESC_WORDS * self.world())?;
        // SAFETY: `send` holds DESC_WORDS i64 and `recv` world x DESC_WORDS, both staging
        // buffers alive until after `wait` below.
        unsafe {
            self.all_gather(
                self.ptr(&send),
                self.ptr(&recv),
                DESC_WORDS,
                DeviceDType::I64,
            )?
        };
        self.wait()?;
        let mut all = vec![0i64; DESC_WORDS * self.world()];
        self.download(&recv, &mut all)?;
        all.chunks_exact(DESC_WORDS)
            .enumerate()
            .map(|(r, w)| {
                Desc::decode(w).ok_or_else(|| CommError::Mismatch {
                    rank: self.rank(),
                    op: self.op,
                    detail: format!("rank {r} sent an unreadable call descriptor {w:?}"),
                })
            })
            .collect()
    }
}
