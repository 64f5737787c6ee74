//! Element types on the device and their NCCL names.

use cudarc::nccl::sys::ncclDataType_t;

use crate::element::DType;

/// An element type NCCL moves and reduces, for the raw-pointer entry points of
/// [`NcclComm`](super::NcclComm) (burn-cuda tensors of any of these types can be passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceDType {
    /// `f16`
    F16,
    /// `bf16`
    BF16,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `i8`
    I8,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u8`
    U8,
    /// `u32`
    U32,
    /// `u64`
    U64,
}

impl DeviceDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DeviceDType::I8 | DeviceDType::U8 => 1,
            DeviceDType::F16 | DeviceDType::BF16 => 2,
            DeviceDType::F32 | DeviceDType::I32 | DeviceDType::U32 => 4,
            DeviceDType::F64 | DeviceDType::I64 | DeviceDType::U64 => 8,
        }
    }

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

    /// A stable number for the cross-rank call descriptor.
    pub(crate) fn code(self) -> i64 {
        match self {
            DeviceDType::F16 => 1,
            DeviceDType::BF16 => 2,
            DeviceDType::F32 => 3,
            DeviceDType::F64 => 4,
            DeviceDType::I8 => 5,
            DeviceDType::I32 => 6,
            DeviceDType::I64 => 7,
            DeviceDType::U8 => 8,
            DeviceDType::U32 => 9,
            DeviceDType::U64 => 10,
        }
    }

    /// The inverse of [`DeviceDType::code`].
    pub(crate) fn from_code(code: i64) -> Option<Self> {
        ALL.iter().copied().find(|d| d.code() == code)
    }

    /// The host collectives' type of the same name, where there is one.
    pub(crate) fn host(self) -> Option<DType> {
        match self {
            DeviceDType::F32 => Some(DType::F32),
            DeviceDType::F64 => Some(DType::F64),
            DeviceDType::I64 => Some(DType::I64),
            DeviceDType::U8 => Some(DType::U8),
            _ => None,
        }
    }
}

const ALL: [DeviceDType; 10] = [
    DeviceDType::F16,
    DeviceDType::BF16,
    DeviceDType::F32,
    DeviceDType::F64,
    DeviceDType::I8,
    DeviceDType::I32,
    DeviceDType::I64,
    DeviceDType::U8,
    DeviceDType::U32,
    DeviceDType::U64,
];

impl From<DType> for DeviceDType {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => DeviceDType::F32,
            DType::F64 => DeviceDType::F64,
            DType::I64 => DeviceDType::I64,
            DType::U8 => DeviceDType::U8,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for d in ALL {
            assert_eq!(DeviceDType::from_code(d.code()), Some(d));
        }
        assert_eq!(DeviceDType::from_code(0), None);
        for h in [DType::F32, DType::F64, DType::I64, DType::U8] {
            assert_eq!(DeviceDType::from(h).host(), Some(h));
        }
        assert_eq!(
            DeviceDType::F32.size() * 2,
            DeviceDType::F64.size(),
            "f64 is twice f32"
        );
    }
}
