//! The reusable collective suite (`plsc_comm::testing`) on the thread group: the same checks
//! that `.ci/run` runs on MPI processes under `mpirun -np 2`.

use plsc_comm::testing::collective_suite;
use plsc_comm::{CommError, Communicator, run_ranks};

#[test]
fn thread_group_passes_the_collective_suite() {
    for n in 1..=4 {
        let results = run_ranks(n, |comm| collective_suite(&comm));
        for (r, res) in results.into_iter().enumerate() {
            let checked = res.unwrap_or_else(|e| panic!("world {n} rank {r}: {e}"));
            assert_eq!(checked, 264, "world {n} rank {r}: results checked");
        }
    }
}

/// A communicator that corrupts one all-reduce result on one rank: the suite must notice.
struct Corrupting<C>(C);

impl<C: Communicator> Communicator for Corrupting<C> {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn world_size(&self) -> usize {
        self.0.world_size()
    }
    fn all_reduce_raw(
        &self,
        mut buf: plsc_comm::HostSliceMut<'_>,
        op: plsc_comm::ReduceOp,
    ) -> Result<(), CommError> {
        self.0.all_reduce_raw(
            match &mut buf {
                plsc_comm::HostSliceMut::F32(b) => plsc_comm::HostSliceMut::F32(b),
                plsc_comm::HostSliceMut::F64(b) => plsc_comm::HostSliceMut::F64(b),
                plsc_comm::HostSliceMut::I64(b) => plsc_comm::HostSliceMut::I64(b),
                plsc_comm::HostSliceMut::U8(b) => plsc_comm::HostSliceMut::U8(b),
            },
            op,
        )?;
        if let plsc_comm::HostSliceMut::F64(b) = buf
            && self.rank() == 1
            && b.len() == 7
        {
            b[3] = f64::from_bits(b[3].to_bits() ^ 1);
        }
        Ok(())
    }
    fn all_reduce_sum_fused_raw(
        &self,
        bufs: &mut [plsc_comm::HostSliceMut<'_>],
    ) -> Result<(), CommError> {
        self.0.all_reduce_sum_fused_raw(bufs)
    }
    fn all_gather_raw(
        &self,
        send: plsc_comm::HostSlice<'_>,
        recv: plsc_comm::HostSliceMut<'_>,
    ) -> Result<(), CommError> {
        self.0.all_gather_raw(send, recv)
    }
    fn all_gather_varcount_raw(
        &self,
        send: plsc_comm::HostSlice<'_>,
        recv: &mut plsc_comm::HostVec,
    ) -> Result<Vec<usize>, CommError> {
        self.0.all_gather_varcount_raw(send, recv)
    }
    fn reduce_scatter_raw(
        &self,
        send: plsc_comm::HostSlice<'_>,
        recv: plsc_comm::HostSliceMut<'_>,
        counts: &[usize],
    ) -> Result<(), CommError> {
        self.0.reduce_scatter_raw(send, recv, counts)
    }
    fn broadcast_raw(
        &self,
        buf: plsc_comm::HostSliceMut<'_>,
        root: usize,
    ) -> Result<(), CommError> {
        self.0.broadcast_raw(buf, root)
    }
    fn barrier(&self) -> Result<(), CommError> {
        self.0.barrier()
    }
}

#[test]
fn the_suite_catches_a_one_bit_error() {
    let results = run_ranks(2, |comm| collective_suite(&Corrupting(comm)));
    // Rank 1 stops after its f64 checks, so rank 0's next collective sees it leave.
    assert!(
        matches!(
            results[0],
            Err(CommError::PeerLeft {
                rank: 0,
                peer: 1,
                ..
            })
        ),
        "rank 0: {:?}",
        results[0]
    );
    match &results[1] {
        Err(CommError::Backend {
            rank: 1,
            op: "collective_suite",
            detail,
        }) => {
            assert!(detail.contains("f64"), "{detail}");
        }
        other => panic!("rank 1: expected the suite to report a difference, got {other:?}"),
    }
}
