/// Element types the collectives move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `i64`
    I64,
    /// `u8`
    U8,
}

/// A borrowed host buffer of one of the supported element types.
#[derive(Debug, Clone, Copy)]
pub enum HostSlice<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
    U8(&'a [u8]),
}

/// A mutably borrowed host buffer of one of the supported element types.
#[derive(Debug)]
pub enum HostSliceMut<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    I64(&'a mut [i64]),
    U8(&'a mut [u8]),
}

/// An owned host buffer (the receive side of a variable-count all-gather).
#[derive(Debug, Clone, PartialEq)]
pub enum HostVec {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl HostSlice<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            HostSlice::F32(_) => DType::F32,
            HostSlice::F64(_) => DType::F64,
            HostSlice::I64(_) => DType::I64,
            HostSlice::U8(_) => DType::U8,
        }
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostSlice::F32(s) => s.len(),
            HostSlice::F64(s) => s.len(),
            HostSlice::I64(s) => s.len(),
            HostSlice::U8(s) => s.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HostSliceMut<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            HostSliceMut::F32(_) => DType::F32,
            HostSliceMut::F64(_) => DType::F64,
            HostSliceMut::I64(_) => DType::I64,
            HostSliceMut::U8(_) => DType::U8,
        }
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostSliceMut::F32(s) => s.len(),
            HostSliceMut::F64(s) => s.len(),
            HostSliceMut::I64(s) => s.len(),
            HostSliceMut::U8(s) => s.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i64 {}
    impl Sealed for u8 {}
}

/// A type the collectives can move and reduce: `f32`, `f64`, `i64`, `u8`.
pub trait Element: sealed::Sealed + Copy + Default + Send + Sync + PartialOrd + 'static {
    const DTYPE: DType;
    fn slice(s: &[Self]) -> HostSlice<'_>;
    fn slice_mut(s: &mut [Self]) -> HostSliceMut<'_>;
    fn empty_host_vec() -> HostVec;
    fn unwrap_host_vec(v: HostVec) -> Vec<Self>;
    /// Wraps an owned vector of this type (the inverse of [`Element::unwrap_host_vec`]).
    fn into_host_vec(v: Vec<Self>) -> HostVec;
    /// Sum (wrapping for integers).
    fn add(a: Self, b: Self) -> Self;
    /// Maximum, propagating NaN.
    fn max(a: Self, b: Self) -> Self;
    /// Minimum, propagating NaN.
    fn min(a: Self, b: Self) -> Self;
}

macro_rules! float_element {
    ($t:ty, $v:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$v;
            fn slice(s: &[Self]) -> HostSlice<'_> {
                HostSlice::$v(s)
            }
            fn slice_mut(s: &mut [Self]) -> HostSliceMut<'_> {
                HostSliceMut::$v(s)
            }
            fn empty_host_vec() -> HostVec {
                HostVec::$v(Vec::new())
            }
            fn unwrap_host_vec(v: HostVec) -> Vec<Self> {
                match v {
                    HostVec::$v(v) => v,
                    _ => Vec::new(),
                }
            }
            fn into_host_vec(v: Vec<Self>) -> HostVec {
                HostVec::$v(v)
            }
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                if a.is_nan() || b.is_nan() {
                    <$t>::NAN
                } else if b > a {
                    b
                } else {
                    a
                }
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                if a.is_nan() || b.is_nan() {
                    <$t>::NAN
                } else if b < a {
                    b
                } else {
                    a
                }
            }
        }
    };
}

macro_rules! int_element {
    ($t:ty, $v:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$v;
            fn slice(s: &[Self]) -> HostSlice<'_> {
                HostSlice::$v(s)
            }
            fn slice_mut(s: &mut [Self]) -> HostSliceMut<'_> {
                HostSliceMut::$v(s)
            }
            fn empty_host_vec() -> HostVec {
                HostVec::$v(Vec::new())
            }
            fn unwrap_host_vec(v: HostVec) -> Vec<Self> {
                match v {
                    HostVec::$v(v) => v,
                    _ => Vec::new(),
                }
            }
            fn into_host_vec(v: Vec<Self>) -> HostVec {
                HostVec::$v(v)
            }
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                Ord::max(a, b)
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                Ord::min(a, b)
            }
        }
    };
}

float_element!(f32, F32);
float_element!(f64, F64);
int_element!(i64, I64);
int_element!(u8, U8);
