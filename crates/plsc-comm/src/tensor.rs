//! Collectives on burn tensors: the [`TensorComm`] adapter.
//!
//! [`TensorComm`] is the extension point between the model code and the communication backend.
//! Its provided methods stage through host memory: read the tensor (`try_into_data`), run the
//! host collective of [`Communicator`], and build the result on the input's device with the
//! input's element type (`Tensor::from_data(data, (&device, dtype))`). That is what a CPU
//! backend such as `Flex` wants, and any [`Communicator`] opts in with three lines:
//!
//! ```text
//! impl<B: burn::tensor::backend::Backend> plsc_comm::tensor::TensorComm<B> for MyComm {
//!     fn communicator(&self) -> &dyn plsc_comm::Communicator { self }
//! }
//! ```
//!
//! A communicator that works on device memory (the NCCL backend of a later issue) implements
//! `TensorComm<Cuda>` itself, overriding the methods to hand device buffers to the library
//! directly, with no host round trip. Callers are written against `C: TensorComm<B>`, so they
//! do not change. [`ThreadComm`](crate::ThreadComm) and `dyn Communicator` use the host path.
//!
//! Float tensors travel as `f32` (or `f64` when the tensor is `f64`), integer tensors as `i64`.
//! The results are new tensors: they are not connected to an autodiff graph (the sharded head
//! computes its gradients explicitly and injects them).

use burn::tensor::backend::Backend;
use burn::tensor::{DType as BurnDType, Int, Shape, Tensor, TensorData};

use crate::communicator::{CommExt, Communicator, ReduceOp};
use crate::error::CommError;

/// Collectives on burn tensors of backend `B`; see the [module documentation](self).
///
/// "Rows" are the first dimension of a 2-D tensor. Every method is a collective: all ranks
/// call it in the same order, and errors are those of the underlying [`Communicator`] (a shape
/// that does not fit is a [`CommError::BadLength`] or [`CommError::Mismatch`] on every rank).
pub trait TensorComm<B: Backend>: Communicator {
    /// This communicator as a host [`Communicator`] object, for code that takes
    /// `&dyn Communicator` (checkpoint saving, host-side collectives of small values).
    fn communicator(&self) -> &dyn Communicator;

    /// Concatenation along rows in rank order of every rank's `x` (`[rows, cols]`, the same
    /// shape on every rank): `[world * rows, cols]`.
    fn all_gather_rows(&self, x: Tensor<B, 2>) -> Result<Tensor<B, 2>, CommError> {
        host::all_gather_rows(self, x, true).map(|(t, _)| t)
    }

    /// Like [`TensorComm::all_gather_rows`], but the row counts may differ across ranks (the
    /// column counts may not). Returns the concatenation and each rank's row count.
    fn all_gather_rows_varcount(
        &self,
        x: Tensor<B, 2>,
    ) -> Result<(Tensor<B, 2>, Vec<usize>), CommError> {
        host::all_gather_rows(self, x, false)
    }

    /// Element-wise reduction over ranks of `x` (same number of elements on every rank).
    fn all_reduce_tensor<const D: usize>(
        &self,
        x: Tensor<B, D>,
        op: ReduceOp,
    ) -> Result<Tensor<B, D>, CommError> {
        host::all_reduce(self, x, op)
    }

    /// Sum all-reduce of several tensors in one collective (one synchronisation), returned in
    /// the order given. Every rank passes the same number of tensors with the same sizes.
    fn all_reduce_sum_fused_tensors<const D: usize>(
        &self,
        xs: Vec<Tensor<B, D>>,
    ) -> Result<Vec<Tensor<B, D>>, CommError> {
        host::all_reduce_sum_fused(self, xs)
    }

    /// Sum reduce-scatter over rows: `x` is `[sum(counts_rows), cols]` on every rank; rank r
    /// gets the sum over ranks of its block of `counts_rows[r]` rows, `[counts_rows[r], cols]`.
    fn reduce_scatter_rows(
        &self,
        x: Tensor<B, 2>,
        counts_rows: &[usize],
    ) -> Result<Tensor<B, 2>, CommError> {
        host::reduce_scatter_rows(self, x, counts_rows)
    }

    /// Every rank gets rank `root`'s `x` (same number of elements on every rank).
    fn broadcast_tensor<const D: usize>(
        &self,
        x: Tensor<B, D>,
        root: usize,
    ) -> Result<Tensor<B, D>, CommError> {
        host::broadcast(self, x, root)
    }

    /// Concatenation in rank order of every rank's integer vector (labels); the lengths may
    /// differ. Returns the concatenation and each rank's length.
    fn all_gather_int(
        &self,
        x: Tensor<B, 1, Int>,
    ) -> Result<(Tensor<B, 1, Int>, Vec<usize>), CommError> {
        host::all_gather_int(self, x)
    }
}

impl<B: Backend> TensorComm<B> for crate::ThreadComm {
    fn communicator(&self) -> &dyn Communicator {
        self
    }
}
impl<B: Backend> TensorComm<B> for dyn Communicator + '_ {
    fn communicator(&self) -> &dyn Communicator {
        self
    }
}

/// The host-memory implementations behind [`TensorComm`]'s provided methods, usable by any
/// communicator (for example from an override that falls back to the host path).
pub mod host {
    use super::*;

    /// A float tensor's values on the host, in the precision the collective uses.
    enum HostFloat {
        F32(Vec<f32>),
        F64(Vec<f64>),
    }

    fn backend_error(rank: usize, op: &'static str, detail: impl std::fmt::Display) -> CommError {
        CommError::Backend {
            rank,
            op,
            detail: detail.to_string(),
        }
    }

    /// Reads a float tensor: its values, shape, element type and device.
    fn read_float<B: Backend, const D: usize, C: Communicator + ?Sized>(
        comm: &C,
        op: &'static str,
        x: Tensor<B, D>,
    ) -> Result<(HostFloat, Shape, BurnDType, B::Device), CommError> {
        let (dtype, device) = (x.dtype(), x.device());
        let data = x
            .try_into_data()
            .map_err(|e| backend_error(comm.rank(), op, format!("{e:?}")))?;
        let shape = data.shape.clone();
        let values = if dtype == BurnDType::F64 {
            data.into_vec::<f64>().map(HostFloat::F64)
        } else {
            data.convert::<f32>().into_vec::<f32>().map(HostFloat::F32)
        };
        let values = values.map_err(|e| backend_error(comm.rank(), op, format!("{e:?}")))?;
        Ok((values, shape, dtype, device))
    }

    /// Builds a float tensor with the given element type on `device`.
    fn write_float<B: Backend, const D: usize>(
        values: HostFloat,
        shape: Shape,
        dtype: BurnDType,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let data = match values {
            HostFloat::F32(v) => TensorData::new(v, shape),
            HostFloat::F64(v) => TensorData::new(v, shape),
        };
        Tensor::from_data(data, (device, dtype))
    }

    fn shape2(shape: &Shape) -> (usize, usize) {
        (shape[0], shape[1])
    }

    /// Exchanges `[rows, cols]` and checks that every rank's column count (and, with
    /// `equal_rows`, row count) is rank 0's; returns every rank's row count. All ranks see the
    /// same shapes, so they all return the same error.
    pub(crate) fn gather_row_counts<C: Communicator + ?Sized>(
        comm: &C,
        op: &'static str,
        rows: usize,
        cols: usize,
        equal_rows: bool,
    ) -> Result<Vec<usize>, CommError> {
        let all = comm.all_gather(&[rows as u64 as i64, cols as u64 as i64])?;
        let shapes: Vec<(usize, usize)> = all
            .chunks_exact(2)
            .map(|c| (c[0] as u64 as usize, c[1] as u64 as usize))
            .collect();
        if let Some((r, &(rr, rc))) = shapes
            .iter()
            .enumerate()
            .find(|&(_, &(rr, rc))| rc != shapes[0].1 || (equal_rows && rr != shapes[0].0))
        {
            return Err(CommError::BadLength {
                rank: comm.rank(),
                op,
                detail: format!(
                    "rank 0 has a [{}, {}] tensor but rank {r} has [{rr}, {rc}]{}",
                    shapes[0].0,
                    shapes[0].1,
                    if equal_rows {
                        ""
                    } else {
                        " (column counts must agree)"
                    }
                ),
            });
        }
        Ok(shapes.iter().map(|&(r, _)| r).collect())
    }

    /// See [`TensorComm::all_gather_rows`] (`equal_rows`) and
    /// [`TensorComm::all_gather_rows_varcount`].
    pub fn all_gather_rows<B: Backend, C: Communicator + ?Sized>(
        comm: &C,
        x: Tensor<B, 2>,
        equal_rows: bool,
    ) -> Result<(Tensor<B, 2>, Vec<usize>), CommError> {
        let op = if equal_rows {
            "all_gather_rows"
        } else {
            "all_gather_rows_varcount"
        };
        let (values, shape, dtype, device) = read_float(comm, op, x)?;
        let (rows, cols) = shape2(&shape);
        let row_counts = gather_row_counts(comm, op, rows, cols, equal_rows)?;
        let total_rows: usize = row_counts.iter().sum();
        let gathered = match values {
            HostFloat::F32(v) => HostFloat::F32(comm.all_gather_varcount(&v)?.0),
            HostFloat::F64(v) => HostFloat::F64(comm.all_gather_varcount(&v)?.0),
        };
        Ok((
            write_float(gathered, Shape::new([total_rows, cols]), dtype, &device),
            row_counts,
        ))
    }

    /// See [`TensorComm::all_reduce_tensor`].
    pub fn all_reduce<B: Backend, const D: usize, C: Communicator + ?Sized>(
        comm: &C,
        x: Tensor<B, D>,
        op: ReduceOp,
    ) -> Result<Tensor<B, D>, CommError> {
        let (mut values, shape, dtype, device) = read_float(comm, "all_reduce_tensor", x)?;
        match &mut values {
            HostFloat::F32(v) => comm.all_reduce(v, op)?,
            HostFloat::F64(v) => comm.all_reduce(v, op)?,
        }
        Ok(write_float(values, shape, dtype, &device))
    }

    /// See [`TensorComm::all_reduce_sum_fused_tensors`].
    pub fn all_reduce_sum_fused<B: Backend, const D: usize, C: Communicator + ?Sized>(
        comm: &C,
        xs: Vec<Tensor<B, D>>,
    ) -> Result<Vec<Tensor<B, D>>, CommError> {
        let mut staged = xs
            .into_iter()
            .map(|x| read_float(comm, "all_reduce_sum_fused_tensors", x))
            .collect::<Result<Vec<_>, _>>()?;
        let mut views: Vec<crate::HostSliceMut<'_>> = staged
            .iter_mut()
            .map(|(v, ..)| match v {
                HostFloat::F32(v) => crate::HostSliceMut::F32(v),
                HostFloat::F64(v) => crate::HostSliceMut::F64(v),
            })
            .collect();
        comm.all_reduce_sum_fused_raw(&mut views)?;
        drop(views);
        Ok(staged
            .into_iter()
            .map(|(v, shape, dtype, device)| write_float(v, shape, dtype, &device))
            .collect())
    }

    /// See [`TensorComm::reduce_scatter_rows`].
    pub fn reduce_scatter_rows<B: Backend, C: Communicator + ?Sized>(
        comm: &C,
        x: Tensor<B, 2>,
        counts_rows: &[usize],
    ) -> Result<Tensor<B, 2>, CommError> {
        let (values, shape, dtype, device) = read_float(comm, "reduce_scatter_rows", x)?;
        let (_, cols) = shape2(&shape);
        // Wrong counts are reported by the collective itself, on every rank alike.
        let counts: Vec<usize> = counts_rows
            .iter()
            .map(|&c| c.saturating_mul(cols))
            .collect();
        let my_rows = counts_rows.get(comm.rank()).copied().unwrap_or(0);
        let my_len = my_rows.saturating_mul(cols);
        let out = match values {
            HostFloat::F32(v) => {
                let mut recv = vec![0f32; my_len];
                comm.reduce_scatter(&v, &mut recv, &counts)?;
                HostFloat::F32(recv)
            }
            HostFloat::F64(v) => {
                let mut recv = vec![0f64; my_len];
                comm.reduce_scatter(&v, &mut recv, &counts)?;
                HostFloat::F64(recv)
            }
        };
        Ok(write_float(
            out,
            Shape::new([my_rows, cols]),
            dtype,
            &device,
        ))
    }

    /// See [`TensorComm::broadcast_tensor`].
    pub fn broadcast<B: Backend, const D: usize, C: Communicator + ?Sized>(
        comm: &C,
        x: Tensor<B, D>,
        root: usize,
    ) -> Result<Tensor<B, D>, CommError> {
        let (mut values, shape, dtype, device) = read_float(comm, "broadcast_tensor", x)?;
        match &mut values {
            HostFloat::F32(v) => comm.broadcast(v, root)?,
            HostFloat::F64(v) => comm.broadcast(v, root)?,
        }
        Ok(write_float(values, shape, dtype, &device))
    }

    /// See [`TensorComm::all_gather_int`].
    pub fn all_gather_int<B: Backend, C: Communicator + ?Sized>(
        comm: &C,
        x: Tensor<B, 1, Int>,
    ) -> Result<(Tensor<B, 1, Int>, Vec<usize>), CommError> {
        let op = "all_gather_int";
        let (dtype, device) = (x.dtype(), x.device());
        let data = x
            .try_into_data()
            .map_err(|e| backend_error(comm.rank(), op, format!("{e:?}")))?;
        let values = data
            .convert::<i64>()
            .into_vec::<i64>()
            .map_err(|e| backend_error(comm.rank(), op, format!("{e:?}")))?;
        let (all, counts) = comm.all_gather_varcount(&values)?;
        let n = all.len();
        Ok((
            Tensor::from_data(TensorData::new(all, [n]), (&device, dtype)),
            counts,
        ))
    }
}
