//! safetensors files, written as a stream (header first, then the tensors' bytes in order,
//! hashed on the way), hashed in streamed pieces, and read through a memory map.
//!
//! Writing through [`StWriter`] never needs a tensor's bytes in one piece: the resharder feeds
//! row ranges straight from the mapped source files. The header is built with the safetensors
//! crate's own [`Metadata`] type, so the files are standard safetensors (readable by
//! `safetensors.torch.load_file`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::error::{CkptError, Result, io_err};

/// Size of the little-endian header-length prefix of a safetensors file.
const N_LEN: usize = 8;

/// Buffer of the streaming writer.
const WRITE_BUFFER: usize = 8 << 20;

/// Piece of a file hashed at a time by [`digest_file`].
const DIGEST_CHUNK: usize = 4 << 20;

/// Size and sha256 (lowercase hex) of a written or verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// File size in bytes.
    pub bytes: u64,
    /// Lowercase hex sha256 of the whole file.
    pub sha256: String,
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl HashingWriter {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        self.inner.write_all(buf)
    }
}

/// Streams one safetensors file: declare the tensors (f32, or the head's 16-bit storage), then
/// write their bytes in the declared order, then [`StWriter::finish`] (which checks the byte
/// count and syncs).
pub(crate) struct StWriter {
    path: PathBuf,
    out: HashingWriter,
    data_bytes: u64,
    expected_data_bytes: u64,
}

impl StWriter {
    /// Creates `path` with the header for `tensors` (name and shape, all f32, stored in this
    /// order) and optional string `metadata`.
    pub(crate) fn create(
        path: &Path,
        tensors: &[(String, Vec<usize>)],
        metadata: Option<HashMap<String, String>>,
    ) -> Result<Self> {
        let typed: Vec<(String, Vec<usize>, Dtype)> = tensors
            .iter()
            .map(|(name, shape)| (name.clone(), shape.clone(), Dtype::F32))
            .collect();
        Self::create_typed(path, &typed, metadata)
    }

    /// [`Self::create`] for tensors of any fixed-width dtype (name, shape, dtype).
    pub(crate) fn create_typed(
        path: &Path,
        tensors: &[(String, Vec<usize>, Dtype)],
        metadata: Option<HashMap<String, String>>,
    ) -> Result<Self> {
        let bad = |detail: String| CkptError::Safetensors {
            path: path.to_path_buf(),
            detail,
        };
        let mut offset = 0usize;
        let mut infos = Vec::with_capacity(tensors.len());
        for (name, shape, dtype) in tensors {
            let n = shape.iter().product::<usize>() * dtype.bitsize() / 8;
            infos.push((
                name.clone(),
                TensorInfo {
                    dtype: *dtype,
                    shape: shape.clone(),
                    data_offsets: (offset, offset + n),
                },
            ));
            offset += n;
        }
        let meta = Metadata::new(metadata, infos).map_err(|e| bad(e.to_string()))?;
        let mut header = serde_json::to_string(&meta)
            .map_err(|e| bad(e.to_string()))?
            .into_bytes();
        header.resize(header.len().next_multiple_of(N_LEN), b' ');
        let file = File::create(path).map_err(io_err(path))?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(WRITE_BUFFER, file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        out.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|_| out.write_all(&header))
            .map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            data_bytes: 0,
            expected_data_bytes: offset as u64,
        })
    }

    /// Appends tensor bytes (little-endian), continuing where the last call stopped.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.data_bytes + bytes.len() as u64 > self.expected_data_bytes {
            return Err(CkptError::Invalid {
                what: "tensor data",
                detail: format!(
                    "{}: more bytes than the declared tensors hold ({})",
                    self.path.display(),
                    self.expected_data_bytes
                ),
            });
        }
        self.data_bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(io_err(&self.path))
    }

    /// Checks that every declared byte was written, flushes, syncs to disk and returns the
    /// file's size and sha256.
    pub(crate) fn finish(self) -> Result<FileDigest> {
        if self.data_bytes != self.expected_data_bytes {
            return Err(CkptError::Invalid {
                what: "tensor data",
                detail: format!(
                    "{}: {} bytes written, the declared tensors hold {}",
                    self.path.display(),
                    self.data_bytes,
                    self.expected_data_bytes
                ),
            });
        }
        let HashingWriter {
            inner,
            hasher,
            bytes,
        } = self.out;
        let file = inner.into_inner().map_err(|e| CkptError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.path))?;
        Ok(FileDigest {
            bytes,
            sha256: hex(&hasher.finalize()),
        })
    }
}

/// Size and sha256 of a file, read in [`DIGEST_CHUNK`] pieces through one buffer: hashing a
/// head shard of many GiB needs that buffer only, neither the file in memory nor a mapping of
/// it (whose pages would count towards the process's resident set).
pub(crate) fn digest_file(path: &Path) -> Result<FileDigest> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; DIGEST_CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileDigest {
        bytes,
        sha256: hex(&hasher.finalize()),
    })
}

/// A memory-mapped safetensors file: tensors are byte ranges of the mapping, read on demand.
pub(crate) struct MappedSt {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    meta: Metadata,
}

impl MappedSt {
    /// Maps `path` and parses its header.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_err(path))?;
        // SAFETY: read-only mapping of a finished checkpoint file: plsc-ckpt never writes a
        // file after it is finished, and a concurrent writer would at worst make the header
        // or a checksum check fail.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| CkptError::Safetensors {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: N_LEN + n,
            meta,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors, in file order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.meta.offset_keys()
    }

    /// The string metadata of the header.
    pub(crate) fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.meta.metadata().as_ref()
    }

    /// Shape and little-endian f32 bytes of `name`; errors if it is missing or not f32.
    pub(crate) fn f32_tensor(&self, name: &str) -> Result<(&[usize], &[u8])> {
        self.tensor(name, Dtype::F32)
    }

    /// Shape and little-endian bytes of `name`; errors if it is missing or not `dtype`.
    pub(crate) fn tensor(&self, name: &str, dtype: Dtype) -> Result<(&[usize], &[u8])> {
        let info = self
            .meta
            .info(name)
            .ok_or_else(|| CkptError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        if info.dtype != dtype {
            return Err(CkptError::TensorDtype {
                path: self.path.clone(),
                tensor: name.to_string(),
                found: format!("{:?}", info.dtype),
                expected: format!("{dtype:?}"),
            });
        }
        let (s, e) = info.data_offsets;
        Ok((
            &info.shape,
            &self.map[self.data_start + s..self.data_start + e],
        ))
    }

    /// Like [`Self::f32_tensor`], and checks the shape against `expected`.
    pub(crate) fn f32_tensor_shaped(&self, name: &str, expected: &[usize]) -> Result<&[u8]> {
        self.tensor_shaped(name, Dtype::F32, expected)
    }

    /// Like [`Self::tensor`], and checks the shape against `expected`.
    pub(crate) fn tensor_shaped(
        &self,
        name: &str,
        dtype: Dtype,
        expected: &[usize],
    ) -> Result<&[u8]> {
        let (shape, bytes) = self.tensor(name, dtype)?;
        if shape != expected {
            return Err(CkptError::TensorShape {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: shape.to_vec(),
            });
        }
        Ok(bytes)
    }
}
