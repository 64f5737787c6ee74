//! [`TcpComm`]: a [`Communicator`] over the rendezvous's TCP connections, for multi-process
//! CPU runs without MPI (`PLSC_COMM_BACKEND=tcp`, the default of `cargo xtask launch`).
//!
//! Rank 0 is the hub: every rank sends it its call descriptor and data; rank 0 validates the
//! descriptors with the thread group's rules (so a mismatch is the same named error on every
//! rank before any result is written), folds reductions in rank order 0..N-1 with the same
//! element operations as the thread group (so the bits equal a thread-group run), and sends
//! each rank its result. All traffic goes through rank 0: made for correctness and small CPU
//! worlds, not bandwidth.
//!
//! Failures: a rank whose connection breaks (it exited, crashed, or was killed) makes the
//! others' calls fail with [`CommError::PeerLeft`]; the optional timeout gives
//! [`CommError::Timeout`]. Either breaks the group: later calls give [`CommError::Broken`].

mod frame;
mod hub;

use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use frame::Reply;

use crate::call::codec;
use crate::call::{BufDesc, Desc, Failure, OpKind, validate};
use crate::communicator::{Communicator, ReduceOp};
use crate::element::{Element, HostSlice, HostSliceMut, HostVec};
use crate::error::CommError;
use crate::rendezvous::{Links, Rendezvous};

/// One rank of a TCP group (see the module docs).
pub struct TcpComm {
    rank: usize,
    world: usize,
    timeout: Option<Duration>,
    state: Mutex<State>,
}

struct State {
    links: Links,
    /// Why the group is unusable, after a peer left or a timeout.
    broken: Option<String>,
}

impl std::fmt::Debug for TcpComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpComm")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

fn as_bytes<'a>(s: &HostSlice<'a>) -> &'a [u8] {
    match s {
        HostSlice::F32(s) => bytemuck::cast_slice(s),
        HostSlice::F64(s) => bytemuck::cast_slice(s),
        HostSlice::I64(s) => bytemuck::cast_slice(s),
        HostSlice::U8(s) => s,
    }
}

fn as_bytes_mut<'a>(s: &'a mut HostSliceMut<'_>) -> &'a mut [u8] {
    match s {
        HostSliceMut::F32(s) => bytemuck::cast_slice_mut(s),
        HostSliceMut::F64(s) => bytemuck::cast_slice_mut(s),
        HostSliceMut::I64(s) => bytemuck::cast_slice_mut(s),
        HostSliceMut::U8(s) => s,
    }
}

fn host_vec<T: Element + bytemuck::Pod>(bytes: &[u8]) -> HostVec {
    T::into_host_vec(bytemuck::pod_collect_to_vec(bytes))
}

impl TcpComm {
    /// The communicator over a finished rendezvous, without a timeout: a rank waits in a
    /// collective as long as the others take (rank 0 may be evaluating); a rank that exits is
    /// detected at once through its closed connection.
    pub fn new(rendezvous: Rendezvous) -> Self {
        Self::with_timeout(rendezvous, None)
    }

    /// [`TcpComm::new`] with a bound on every wait inside a collective.
    pub fn with_timeout(rendezvous: Rendezvous, timeout: Option<Duration>) -> Self {
        let (rank, world, links) = rendezvous.into_parts();
        Self {
            rank,
            world,
            timeout,
            state: Mutex::new(State {
                links,
                broken: None,
            }),
        }
    }

    fn lock(&self, op: &'static str) -> Result<MutexGuard<'_, State>, CommError> {
        let guard = match self.state.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(CommError::Mismatch {
                    rank: self.rank,
                    op,
                    detail: "another collective is already running on this rank's communicator \
                             (calls on one rank must not overlap)"
                        .to_string(),
                });
            }
        };
        if let Some(cause) = &guard.broken {
            return Err(CommError::Broken {
                rank: self.rank,
                op,
                cause: cause.clone(),
            });
        }
        Ok(guard)
    }

    /// Runs one collective: returns this rank's counts and result bytes.
    fn round(&self, desc: Desc, payload: &[&[u8]]) -> Result<(Vec<usize>, Vec<u8>), CommError> {
        let op = desc.op.name();
        let mut state = self.lock(op)?;
        let result = match &mut state.links {
            Links::Worker(stream) => self.worker_round(stream, &desc, payload),
            Links::Master(streams) => self.hub_round(streams, desc, payload),
        };
        if let Err(e) = &result
            && matches!(
                e,
                CommError::PeerLeft { .. } | CommError::Timeout { .. } | CommError::Backend { .. }
            )
        {
            state.broken = Some(e.to_string());
        }
        result
    }

    fn io_error(&self, op: &'static str, peer: usize, e: std::io::Error) -> CommError {
        let timeout = self.timeout.unwrap_or_default();
        crate::rendezvous::io_to_comm(self.rank, op, peer, e, timeout)
    }

    fn worker_round(
        &self,
        stream: &mut TcpStream,
        desc: &Desc,
        payload: &[&[u8]],
    ) -> Result<(Vec<usize>, Vec<u8>), CommError> {
        let op = desc.op.name();
        let words = codec::encode(desc);
        frame::write_request(stream, &words, payload).map_err(|e| self.io_error(op, 0, e))?;
        let reply = stream
            .set_read_timeout(self.timeout)
            .and_then(|()| frame::read_reply(stream))
            .map_err(|e| self.io_error(op, 0, e))?;
        match reply {
            Reply::Ok { counts, bytes } => Ok((counts, bytes)),
            Reply::Refused(f) => Err(f.to_error(self.rank, self.world, op)),
            Reply::PeerLeft { peer, reason } => Err(CommError::PeerLeft {
                rank: self.rank,
                op,
                peer,
                reason,
            }),
            Reply::Timeout { peer, waited_ms } => Err(CommError::Timeout {
                rank: self.rank,
                op,
                waited_ms: u128::from(waited_ms),
                missing: vec![peer],
            }),
        }
    }

    /// Tells every worker but `skip` the same bad news (best effort).
    fn tell_all(streams: &mut [TcpStream], skip: Option<usize>, reply: &Reply) {
        for (i, s) in streams.iter_mut().enumerate() {
            if Some(i + 1) != skip {
                let _ = frame::write_reply(s, reply);
            }
        }
    }

    fn hub_round(
        &self,
        streams: &mut [TcpStream],
        desc: Desc,
        payload: &[&[u8]],
    ) -> Result<(Vec<usize>, Vec<u8>), CommError> {
        let op = desc.op.name();
        let mut descs = Vec::with_capacity(self.world);
        let mut decoded = Vec::with_capacity(self.world);
        let mut payloads = Vec::with_capacity(self.world);
        descs.push(desc);
        payloads.push(payload.concat());
        for (i, s) in streams.iter_mut().enumerate() {
            let peer = i + 1;
            let got = s
                .set_read_timeout(self.timeout)
                .and_then(|()| frame::read_request(s));
            let (words, data) = match got {
                Ok(x) => x,
                Err(e) => {
                    let err = self.io_error(op, peer, e);
                    let reply = match &err {
                        CommError::Timeout { waited_ms, .. } => Reply::Timeout {
                            peer,
                            waited_ms: u64::try_from(*waited_ms).unwrap_or(u64::MAX),
                        },
                        other => Reply::PeerLeft {
                            peer,
                            reason: other.to_string(),
                        },
                    };
                    Self::tell_all(streams, Some(peer), &reply);
                    return Err(err);
                }
            };
            // Words no encoder of this build produced (a different build) stay `None` and
            // are refused below.
            decoded.push(codec::decode(&words));
            payloads.push(data);
        }
        let unreadable = decoded.iter().position(Option::is_none);
        descs.extend(decoded.into_iter().flatten());
        let checked = match unreadable {
            Some(i) => Err(Failure::Mismatch(format!(
                "rank {} sent a call descriptor this build cannot read",
                i + 1
            ))),
            None => validate(&descs),
        };
        let checked = checked.and_then(|()| {
            match payloads
                .iter()
                .enumerate()
                .find(|(r, p)| p.len() != hub::payload_len(&descs[*r], *r))
            {
                Some((r, p)) => Err(Failure::Mismatch(format!(
                    "rank {r} sent {} data bytes for its call, expected {}",
                    p.len(),
                    hub::payload_len(&descs[r], r)
                ))),
                None => Ok(()),
            }
        });
        if let Err(f) = checked {
            Self::tell_all(streams, None, &Reply::Refused(f.clone()));
            return Err(f.to_error(0, self.world, op));
        }
        let mut results = hub::results(&descs, &payloads).into_iter();
        let own = results.next().unwrap_or_default();
        for (i, (s, (counts, bytes))) in streams.iter_mut().zip(results).enumerate() {
            frame::write_reply(s, &Reply::Ok { counts, bytes })
                .map_err(|e| self.io_error(op, i + 1, e))?;
        }
        Ok(own)
    }

    /// Copies result bytes into this rank's buffer (lengths were validated; checked again).
    fn write_back(
        &self,
        op: &'static str,
        dst: &mut HostSliceMut<'_>,
        bytes: &[u8],
    ) -> Result<(), CommError> {
        let d = as_bytes_mut(dst);
        if d.len() != bytes.len() {
            return Err(CommError::Backend {
                rank: self.rank,
                op,
                detail: format!("result has {} bytes, buffer {}", bytes.len(), d.len()),
            });
        }
        d.copy_from_slice(bytes);
        Ok(())
    }
}

impl Communicator for TcpComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_raw(&self, mut buf: HostSliceMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        let kind = OpKind::AllReduce(op);
        let desc = Desc::new(kind, vec![BufDesc::of_mut(&mut buf)]);
        let (_, bytes) = self.round(desc, &[as_bytes_mut(&mut buf)])?;
        self.write_back(kind.name(), &mut buf, &bytes)
    }

    fn all_reduce_sum_fused_raw(&self, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError> {
        let kind = OpKind::AllReduceSumFused;
        let desc = Desc::new(kind, bufs.iter_mut().map(BufDesc::of_mut).collect());
        let (_, bytes) = {
            let parts: Vec<&[u8]> = bufs.iter_mut().map(|b| &*as_bytes_mut(b)).collect();
            self.round(desc, &parts)?
        };
        let mut off = 0;
        for b in bufs.iter_mut() {
            let n = as_bytes_mut(b).len();
            let piece = bytes.get(off..off + n).unwrap_or_default();
            self.write_back(kind.name(), b, piece)?;
            off += n;
        }
        Ok(())
    }

    fn all_gather_raw(
        &self,
        send: HostSlice<'_>,
        mut recv: HostSliceMut<'_>,
    ) -> Result<(), CommError> {
        let kind = OpKind::AllGather;
        let desc = Desc::new(kind, vec![BufDesc::of(&send), BufDesc::of_mut(&mut recv)]);
        let (_, bytes) = self.round(desc, &[as_bytes(&send)])?;
        self.write_back(kind.name(), &mut recv, &bytes)
    }

    fn all_gather_varcount_raw(
        &self,
        send: HostSlice<'_>,
        recv: &mut HostVec,
    ) -> Result<Vec<usize>, CommError> {
        let kind = OpKind::AllGatherVarcount;
        let desc = Desc::new(kind, vec![BufDesc::of(&send)]);
        let (counts, bytes) = self.round(desc, &[as_bytes(&send)])?;
        *recv = match send {
            HostSlice::F32(_) => host_vec::<f32>(&bytes),
            HostSlice::F64(_) => host_vec::<f64>(&bytes),
            HostSlice::I64(_) => host_vec::<i64>(&bytes),
            HostSlice::U8(_) => host_vec::<u8>(&bytes),
        };
        Ok(counts)
    }

    fn reduce_scatter_raw(
        &self,
        send: HostSlice<'_>,
        mut recv: HostSliceMut<'_>,
        counts: &[usize],
    ) -> Result<(), CommError> {
        let kind = OpKind::ReduceScatter;
        let mut desc = Desc::new(kind, vec![BufDesc::of(&send), BufDesc::of_mut(&mut recv)]);
        desc.counts = counts.to_vec();
        let (_, bytes) = self.round(desc, &[as_bytes(&send)])?;
        self.write_back(kind.name(), &mut recv, &bytes)
    }

    fn broadcast_raw(&self, mut buf: HostSliceMut<'_>, root: usize) -> Result<(), CommError> {
        let kind = OpKind::Broadcast { root };
        let desc = Desc::new(kind, vec![BufDesc::of_mut(&mut buf)]);
        let (_, bytes) = if self.rank == root {
            self.round(desc, &[as_bytes_mut(&mut buf)])?
        } else {
            self.round(desc, &[])?
        };
        self.write_back(kind.name(), &mut buf, &bytes)
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.round(Desc::new(OpKind::Barrier, Vec::new()), &[])?;
        Ok(())
    }
}
