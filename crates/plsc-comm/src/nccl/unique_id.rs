//! The NCCL unique id: 128 opaque bytes made on rank 0 and carried to every rank (by the
//! rendezvous) before the communicator is created.

use cudarc::nccl::sys::ncclUniqueId;

use crate::error::CommError;

/// Size of an NCCL unique id in bytes (`NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = 128;

/// Reads a unique id from the bytes rank 0 sent; any length but 128 is
/// [`CommError::BadUniqueId`].
pub(crate) fn from_bytes(rank: usize, bytes: &[u8]) -> Result<ncclUniqueId, CommError> {
    if bytes.len() != UNIQUE_ID_BYTES {
        return Err(CommError::BadUniqueId {
            rank,
            len: bytes.len(),
            expected: UNIQUE_ID_BYTES,
        });
    }
    let mut internal = [0 as std::ffi::c_char; UNIQUE_ID_BYTES];
    for (dst, &src) in internal.iter_mut().zip(bytes) {
        *dst = src as std::ffi::c_char;
    }
    Ok(ncclUniqueId { internal })
}

/// The id's bytes, as they travel to the other ranks.
pub(crate) fn to_bytes(id: &ncclUniqueId) -> Vec<u8> {
    id.internal.iter().map(|&c| c as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_exactly() {
        let bytes: Vec<u8> = (0..UNIQUE_ID_BYTES).map(|i| (i * 37 % 256) as u8).collect();
        let id = from_bytes(0, &bytes).unwrap();
        assert_eq!(to_bytes(&id), bytes);
    }

    #[test]
    fn wrong_lengths_are_named_errors() {
        for len in [0, 1, 127, 129, 256] {
            let err = from_bytes(5, &vec![0u8; len]).unwrap_err();
            assert_eq!(
                err,
                CommError::BadUniqueId {
                    rank: 5,
                    len,
                    expected: UNIQUE_ID_BYTES
                }
            );
            assert!(err.to_string().contains(&format!("{len} bytes")), "{err}");
        }
    }
}
