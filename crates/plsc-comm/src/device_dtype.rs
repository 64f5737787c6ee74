//! [`DeviceDType`]: the element types NCCL moves and reduces, with the stable numbers the
//! call descriptors carry ([`crate::call::fixed`]). A crate-level module (not under `nccl`) so
//! that the descriptor module and the NCCL backend both use it without depending on each
//! other; the NCCL names of the types stay in `nccl::dtype`.

use crate::element::DType;

/// An element type NCCL moves and reduces, for the raw-pointer entry points of
/// [`NcclComm`](crate::nccl::NcclComm) (burn-cuda tensors of any of these types can be passed).
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
