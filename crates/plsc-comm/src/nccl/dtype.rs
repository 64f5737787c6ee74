//! NCCL's names of the device element types, and the Rust types that have one.

use cudarc::nccl::sys::ncclDataType_t;

pub use crate::device_dtype::DeviceDType;

impl DeviceDType {
    /// NCCL's name for the type.
    pub(crate) fn nccl(self) -> ncclDataType_t {
        match self {
            DeviceDType::F16 => ncclDataType_t::ncclFloat16,
            DeviceDType::BF16 => ncclDataType_t::ncclBfloat16,
            DeviceDType::F32 => ncclDataType_t::ncclFloat32,
            DeviceDType::F64 => ncclDataType_t::ncclFloat64,
            DeviceDType::I8 => ncclDataType_t::ncclInt8,
            DeviceDType::I32 => ncclDataType_t::ncclInt32,
            DeviceDType::I64 => ncclDataType_t::ncclInt64,
            DeviceDType::U8 => ncclDataType_t::ncclUint8,
            DeviceDType::U32 => ncclDataType_t::ncclUint32,
            DeviceDType::U64 => ncclDataType_t::ncclUint64,
        }
    }
}

/// Rust element types with a [`DeviceDType`], for the typed device entry points.
pub trait DeviceElement: cudarc::driver::DeviceRepr + Copy + 'static {
    /// The element's device type.
    const DEVICE_DTYPE: DeviceDType;
}

macro_rules! device_element {
    ($($t:ty => $d:ident),*) => {
        $(impl DeviceElement for $t {
            const DEVICE_DTYPE: DeviceDType = DeviceDType::$d;
        })*
    };
}
device_element!(f32 => F32, f64 => F64, i8 => I8, i32 => I32, i64 => I64, u8 => U8, u32 => U32, u64 => U64);
