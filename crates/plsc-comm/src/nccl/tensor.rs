//! `TensorComm<Cuda>` for [`NcclComm`]: burn-cuda tensors' device buffers go to NCCL
//! directly, with no host round trip.
//!
//! How: a tensor's primitive (`burn_cubecl::tensor::CubeTensor`) is made contiguous, its
//! buffer's device address is read with `ComputeClient::get_resource` (cubecl-cuda 0.10
//! allocates in the device's primary context, the one [`NcclComm`] uses), the backend is
//! synchronised (`Backend::sync`: cubecl's streams are private, so NCCL cannot simply queue
//! behind them), and NCCL runs on the communicator's stream, which has finished when the call
//! returns. Outputs are fresh contiguous burn-cuda tensors; inputs are never written.
//!
//! Float tensors travel as `f32` (or `f64`), like the host path: `f16`/`bf16` are cast on the
//! device first and the result cast back. Sums in [`Reduction::RankOrder`] mode are formed
//! on the device from the gathered blocks, added in rank order with burn's element-wise add
//! (IEEE, so bit for bit the host path's fold); max/min use NCCL's reduction (exact, as order
//! does not matter, but NaN propagation is NCCL's). Element types NCCL cannot take (quantized,
//! bool) fall back to the host path.

use burn::backend::Cuda;
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{
    DType as BurnDType, FloatDType, Int, Shape, Tensor, TensorData, TensorPrimitive,
};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;

use super::comm::{NcclComm, Reduction};
use super::dtype::DeviceDType;
use super::ptr::DeviceAddr;
use crate::communicator::{Communicator, ReduceOp};
use crate::error::CommError;
use crate::tensor::{TensorComm, host};

/// burn-cuda's tensor primitive.
type Prim = <Cuda as BackendTypes>::FloatTensorPrimitive;

fn device_dtype(d: BurnDType) -> Option<DeviceDType> {
    Some(match d {
        BurnDType::F64 => DeviceDType::F64,
        BurnDType::F32 => DeviceDType::F32,
        BurnDType::F16 => DeviceDType::F16,
        BurnDType::BF16 => DeviceDType::BF16,
        BurnDType::I64 => DeviceDType::I64,
        BurnDType::I32 => DeviceDType::I32,
        BurnDType::I8 => DeviceDType::I8,
        BurnDType::U64 => DeviceDType::U64,
        BurnDType::U32 => DeviceDType::U32,
        BurnDType::U8 => DeviceDType::U8,
        _ => return None,
    })
}

/// A contiguous primitive with its device address (valid while `prim` lives).
struct DevBuf {
    prim: Prim,
    ptr: DeviceAddr,
    len: usize,
    dtype: DeviceDType,
}

fn backend_err(rank: usize, op: &'static str, e: impl std::fmt::Debug) -> CommError {
    CommError::Backend {
        rank,
        op,
        detail: format!("burn-cuda: {e:?}"),
    }
}

impl DevBuf {
    fn address(rank: usize, op: &'static str, prim: &Prim) -> Result<DeviceAddr, CommError> {
        let res = prim
            .client
            .get_resource(prim.handle.clone())
            .map_err(|e| backend_err(rank, op, e))?;
        Ok(DeviceAddr::from_raw(res.resource().ptr))
    }

    /// The buffer of `prim` (made contiguous first if it is a strided view).
    fn of(
        rank: usize,
        op: &'static str,
        prim: Prim,
        len: usize,
    ) -> Result<Option<DevBuf>, CommError> {
        let Some(dtype) = device_dtype(prim.dtype) else {
            return Ok(None);
        };
        let prim = if prim.is_contiguous() {
            prim
        } else {
            into_contiguous(prim)
        };
        // An empty tensor may own no allocation; NCCL never reads an address with count 0.
        let ptr = if len == 0 {
            DeviceAddr::from_raw(0)
        } else {
            Self::address(rank, op, &prim)?
        };
        Ok(Some(DevBuf {
            prim,
            ptr,
            len,
            dtype,
        }))
    }

    /// A new contiguous buffer of `len` elements like `like`'s.
    fn empty_like(
        rank: usize,
        op: &'static str,
        like: &Prim,
        len: usize,
    ) -> Result<DevBuf, CommError> {
        let dtype = device_dtype(like.dtype).expect("callers pass NCCL types");
        let prim = empty_device_contiguous_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([len.max(1)]),
            like.dtype,
        );
        let ptr = Self::address(rank, op, &prim)?;
        Ok(DevBuf {
            prim,
            ptr,
            len,
            dtype,
        })
    }

    /// The buffer as a 1-D burn tensor of `len` elements (an empty buffer, which holds one
    /// padding element, becomes an empty tensor built like the host path builds it).
    fn into_float(self) -> Tensor<Cuda, 1> {
        if self.len == 0 {
            let dtype = self.prim.dtype;
            let data = TensorData::new(Vec::<f32>::new(), [0]);
            return Tensor::from_data(data, (&self.prim.device, dtype));
        }
        Tensor::<Cuda, 1>::from_primitive(TensorPrimitive::Float(self.prim))
    }

    fn into_int(self) -> Tensor<Cuda, 1, Int> {
        if self.len == 0 {
            let dtype = self.prim.dtype;
            let data = TensorData::new(Vec::<i64>::new(), [0]);
            return Tensor::from_data(data, (&self.prim.device, dtype));
        }
        Tensor::<Cuda, 1, Int>::from_primitive(self.prim)
    }
}

/// A float tensor in the precision the collectives use (`f32`, or `f64` when it is `f64`),
/// flattened, with what is needed to rebuild the result.
struct FloatIn {
    buf: DevBuf,
    shape: Shape,
    dtype: BurnDType,
}

fn float_in<const D: usize>(
    comm: &NcclComm,
    op: &'static str,
    x: Tensor<Cuda, D>,
) -> Result<Option<FloatIn>, CommError> {
    let (shape, dtype) = (x.shape(), x.dtype());
    if !matches!(
        dtype,
        BurnDType::F32 | BurnDType::F64 | BurnDType::F16 | BurnDType::BF16
    ) {
        return Ok(None);
    }
    let x = if matches!(dtype, BurnDType::F16 | BurnDType::BF16) {
        x.cast(FloatDType::F32)
    } else {
        x
    };
    let n = shape.num_elements();
    let flat = x.reshape([n]);
    let prim = flat.into_primitive().tensor();
    Ok(DevBuf::of(comm.rank(), op, prim, n)?.map(|buf| FloatIn { buf, shape, dtype }))
}

fn float_out<const D: usize>(
    t: Tensor<Cuda, 1>,
    shape: Shape,
    dtype: BurnDType,
) -> Tensor<Cuda, D> {
    let t = if t.dtype() != dtype { t.cast(dtype) } else { t };
    t.reshape(shape)
}

/// Waits for burn-cuda's queued work on `device`, so NCCL reads finished inputs.
fn sync(
    comm: &NcclComm,
    op: &'static str,
    device: &<Cuda as BackendTypes>::Device,
) -> Result<(), CommError> {
    <Cuda as Backend>::sync(device).map_err(|e| backend_err(comm.rank(), op, e))
}

/// Rank-order sum of `world` blocks of `n` elements (`[world * n]`): block 0 + block 1 + ...
fn fold_blocks(all: Tensor<Cuda, 1>, world: usize, n: usize) -> Tensor<Cuda, 1> {
    if n == 0 {
        // `all` is empty too; burn does not take zero-length narrows.
        return all;
    }
    let mut acc = all.clone().narrow(0, 0, n);
    for r in 1..world {
        acc = acc + all.clone().narrow(0, r * n, n);
    }
    acc
}

impl NcclComm {
    /// Gathers (equal counts) `buf` from every rank into a new buffer of `world * len`.
    fn gather_buf(&self, op: &'static str, buf: &DevBuf) -> Result<DevBuf, CommError> {
        let world = self.world_size();
        let out = DevBuf::empty_like(self.rank(), op, &buf.prim, buf.len * world)?;
        sync(self, op, &buf.prim.device)?;
        // SAFETY: both buffers are contiguous burn-cuda allocations of the stated lengths on
        // this device, alive for the call, and the backend has finished writing them.
        unsafe { self.all_gather_ptr_checked(buf.ptr, buf.len, out.ptr, out.len, buf.dtype)? };
        Ok(out)
    }

    fn gather_rows(
        &self,
        x: Tensor<Cuda, 2>,
        equal_rows: bool,
    ) -> Result<(Tensor<Cuda, 2>, Vec<usize>), CommError> {
        let op = if equal_rows {
            "all_gather_rows"
        } else {
            "all_gather_rows_varcount"
        };
        let [rows, cols] = x.dims();
        let Some(fin) = float_in(self, op, x.clone())? else {
            return host::all_gather_rows(self, x, equal_rows);
        };
        let row_counts = host::gather_row_counts(self, op, rows, cols, equal_rows)?;
        let total_rows: usize = row_counts.iter().sum();
        let counts: Vec<usize> = row_counts.iter().map(|&r| r * cols).collect();
        let out = DevBuf::empty_like(self.rank(), op, &fin.buf.prim, total_rows * cols)?;
        sync(self, op, &fin.buf.prim.device)?;
        // SAFETY: contiguous burn-cuda buffers of the stated sizes, finished by `sync`.
        unsafe {
            self.all_gather_var_ptr(
                fin.buf.ptr,
                fin.buf.len,
                out.ptr,
                out.len,
                &counts,
                fin.buf.dtype,
            )?
        };
        let t = float_out::<2>(out.into_float(), Shape::new([total_rows, cols]), fin.dtype);
        Ok((t, row_counts))
    }
}

impl TensorComm<Cuda> for NcclComm {
    fn communicator(&self) -> &dyn Communicator {
        self
    }

    fn all_gather_rows(&self, x: Tensor<Cuda, 2>) -> Result<Tensor<Cuda, 2>, CommError> {
        self.gather_rows(x, true).map(|(t, _)| t)
    }

    fn all_gather_rows_varcount(
        &self,
        x: Tensor<Cuda, 2>,
    ) -> Result<(Tensor<Cuda, 2>, Vec<usize>), CommError> {
        self.gather_rows(x, false)
    }

    fn all_reduce_tensor<const D: usize>(
        &self,
        x: Tensor<Cuda, D>,
        op: ReduceOp,
    ) -> Result<Tensor<Cuda, D>, CommError> {
        let name = "all_reduce_tensor";
        let Some(fin) = float_in(self, name, x.clone())? else {
            return host::all_reduce(self, x, op);
        };
        let world = self.world_size();
        let n = fin.buf.len;
        let flat = if op == ReduceOp::Sum && self.options().reduction == Reduction::RankOrder {
            let all = self.gather_buf(name, &fin.buf)?;
            fold_blocks(all.into_float(), world, n)
        } else {
            let out = DevBuf::empty_like(self.rank(), name, &fin.buf.prim, n)?;
            sync(self, name, &fin.buf.prim.device)?;
            // SAFETY: contiguous burn-cuda buffers of `n` elements, finished by `sync`.
            unsafe { self.all_reduce_ptr(fin.buf.ptr, out.ptr, n, fin.buf.dtype, op)? };
            out.into_float()
        };
        Ok(float_out(flat, fin.shape, fin.dtype))
    }

    fn all_reduce_sum_fused_tensors<const D: usize>(
        &self,
        xs: Vec<Tensor<Cuda, D>>,
    ) -> Result<Vec<Tensor<Cuda, D>>, CommError> {
        let name = "all_reduce_sum_fused_tensors";
        let mut ins = Vec::with_capacity(xs.len());
        for x in &xs {
            match float_in(self, name, x.clone())? {
                Some(fin) => ins.push(fin),
                None => return host::all_reduce_sum_fused(self, xs),
            }
        }
        let Some(device) = ins.first().map(|f| f.buf.prim.device.clone()) else {
            return Ok(Vec::new());
        };
        let world = self.world_size();
        let rank_order = self.options().reduction == Reduction::RankOrder;
        let outs = ins
            .iter()
            .map(|f| {
                let len = if rank_order {
                    f.buf.len * world
                } else {
                    f.buf.len
                };
                DevBuf::empty_like(self.rank(), name, &f.buf.prim, len)
            })
            .collect::<Result<Vec<_>, _>>()?;
        sync(self, name, &device)?;
        // SAFETY: contiguous burn-cuda buffers of the stated sizes, finished by `sync`.
        unsafe {
            if rank_order {
                let items: Vec<_> = ins
                    .iter()
                    .zip(&outs)
                    .map(|(i, o)| (i.buf.ptr, o.ptr, i.buf.len, i.buf.dtype))
                    .collect();
                self.all_gather_many_ptr(&items)?;
            } else {
                let items: Vec<_> = ins
                    .iter()
                    .zip(&outs)
                    .map(|(i, o)| (i.buf.ptr, o.ptr, i.buf.len, i.buf.dtype))
                    .collect();
                self.all_reduce_sum_many_ptr(&items)?;
            }
        }
        Ok(ins
            .into_iter()
            .zip(outs)
            .map(|(fin, out)| {
                let n = fin.buf.len;
                let flat = if rank_order {
                    fold_blocks(out.into_float(), world, n)
                } else {
                    out.into_float()
                };
                float_out(flat, fin.shape, fin.dtype)
            })
            .collect())
    }

    fn reduce_scatter_rows(
        &self,
        x: Tensor<Cuda, 2>,
        counts_rows: &[usize],
    ) -> Result<Tensor<Cuda, 2>, CommError> {
        let name = "reduce_scatter_rows";
        let [_, cols] = x.dims();
        let Some(fin) = float_in(self, name, x.clone())? else {
            return host::reduce_scatter_rows(self, x, counts_rows);
        };
        let counts: Vec<usize> = counts_rows
            .iter()
            .map(|&c| c.saturating_mul(cols))
            .collect();
        let my_rows = counts_rows.get(self.rank()).copied().unwrap_or(0);
        let my_len = my_rows.saturating_mul(cols);
        let world = self.world_size();
        let flat = if self.options().reduction == Reduction::RankOrder {
            let out = DevBuf::empty_like(self.rank(), name, &fin.buf.prim, my_len * world)?;
            sync(self, name, &fin.buf.prim.device)?;
            // SAFETY: contiguous burn-cuda buffers of the stated sizes, finished by `sync`.
            unsafe {
                self.gather_blocks_ptr(fin.buf.ptr, fin.buf.len, out.ptr, &counts, fin.buf.dtype)?
            };
            fold_blocks(out.into_float(), world, my_len)
        } else {
            let out = DevBuf::empty_like(self.rank(), name, &fin.buf.prim, my_len)?;
            sync(self, name, &fin.buf.prim.device)?;
            // SAFETY: as above.
            unsafe {
                self.reduce_scatter_ptr_checked(
                    fin.buf.ptr,
                    fin.buf.len,
                    out.ptr,
                    my_len,
                    &counts,
                    fin.buf.dtype,
                    ReduceOp::Sum,
                )?
            };
            out.into_float()
        };
        Ok(float_out(flat, Shape::new([my_rows, cols]), fin.dtype))
    }

    fn broadcast_tensor<const D: usize>(
        &self,
        x: Tensor<Cuda, D>,
        root: usize,
    ) -> Result<Tensor<Cuda, D>, CommError> {
        let name = "broadcast_tensor";
        let Some(fin) = float_in(self, name, x.clone())? else {
            return host::broadcast(self, x, root);
        };
        let out = DevBuf::empty_like(self.rank(), name, &fin.buf.prim, fin.buf.len)?;
        sync(self, name, &fin.buf.prim.device)?;
        // SAFETY: contiguous burn-cuda buffers of the same length, finished by `sync`.
        unsafe { self.broadcast_ptr(fin.buf.ptr, out.ptr, fin.buf.len, fin.buf.dtype, root)? };
        Ok(float_out(out.into_float(), fin.shape, fin.dtype))
    }

    fn all_gather_int(
        &self,
        x: Tensor<Cuda, 1, Int>,
    ) -> Result<(Tensor<Cuda, 1, Int>, Vec<usize>), CommError> {
        let name = "all_gather_int";
        let n = x.dims()[0];
        let prim = x.clone().into_primitive();
        let Some(buf) = DevBuf::of(self.rank(), name, prim, n)? else {
            return host::all_gather_int(self, x);
        };
        let counts = self.exchange_counts(n, buf.dtype)?;
        let total: usize = counts.iter().sum();
        let out = DevBuf::empty_like(self.rank(), name, &buf.prim, total)?;
        sync(self, name, &buf.prim.device)?;
        // SAFETY: contiguous burn-cuda buffers of the stated sizes, finished by `sync`.
        unsafe { self.all_gather_var_ptr(buf.ptr, n, out.ptr, out.len, &counts, buf.dtype)? };
        Ok((out.into_int(), counts))
    }
}
