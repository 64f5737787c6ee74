//! [`DeviceAddr`]: a device-memory address as NCCL takes it, typed so that it cannot be mixed up
//! with the element counts, lengths and byte sizes that travel beside it (all of them were bare
//! integers before), and offset only in elements of a [`DeviceDType`].

use std::ffi::c_void;

use super::dtype::DeviceDType;

/// An address in device memory (CUDA's `CUdeviceptr`): the start of a buffer, or an element
/// inside one. Holding one is safe; only the `unsafe` NCCL calls that take it dereference it,
/// on the device, under their callers' guarantee that the buffer is alive and large enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAddr(u64);

impl DeviceAddr {
    /// Wraps a raw device address (from cudarc's `device_ptr` or a burn-cuda resource).
    pub fn from_raw(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The address `elems` elements of `dtype` further on. Callers offset only inside a buffer
    /// whose length they checked, so the sum stays inside that allocation; the arithmetic
    /// wraps rather than panics, and a wrapped address would be outside every buffer the
    /// caller vouched for (caught by the callers' length checks before any NCCL call).
    pub fn offset(self, elems: usize, dtype: DeviceDType) -> Self {
        Self(
            self.0
                .wrapping_add((elems as u64).wrapping_mul(dtype.size() as u64)),
        )
    }

    /// As NCCL's `const void*` send argument.
    pub(crate) fn as_send(self) -> *const c_void {
        self.0 as *const c_void
    }

    /// As NCCL's `void*` receive argument.
    pub(crate) fn as_recv(self) -> *mut c_void {
        self.0 as *mut c_void
    }
}

#[cfg(test)]
mod tests {
    use super::{DeviceAddr, DeviceDType};

    #[test]
    fn offsets_count_elements_of_the_type() {
        let a = DeviceAddr::from_raw(0x1000);
        assert_eq!(a.offset(3, DeviceDType::F32).raw(), 0x1000 + 12);
        assert_eq!(a.offset(3, DeviceDType::F64).raw(), 0x1000 + 24);
        assert_eq!(a.offset(3, DeviceDType::U8).raw(), 0x1000 + 3);
        assert_eq!(a.offset(0, DeviceDType::I64), a);
        assert_eq!(a.as_send() as u64, 0x1000);
        assert_eq!(a.as_recv() as u64, 0x1000);
    }
}
