//! MXNet RecordIO as InsightFace ships MS1M, Glint360K and WebFace (`train.rec` + `train.idx`).
//!
//! File layout (dmlc-core): each record is `magic: u32 = 0xced7230a`, `lrecord: u32` (upper 3
//! bits `cflag`, lower 29 bits the length), the data, zero padding to a multiple of 4 bytes.
//! A payload containing the magic at a 4-aligned position is split there into segments
//! (cflag 1 = first, 2 = middle, 3 = last; 0 = whole record) and the magic is re-inserted
//! between segments when reading. All integers are little-endian.
//!
//! An image record's payload starts with MXNet's `IRHeader` (`flag: u32, label: f32, id: u64,
//! id2: u64`, 24 bytes); when `flag > 0`, `flag` f32 labels follow and the header's `label`
//! is unused. The encoded image follows. The `.idx` file has `key\toffset` lines. InsightFace's
//! record 0 is a header record: with `flag > 0`, its labels `(a, b)` say that records
//! `1..a` are images and `a..b` are per-identity records (so `b - a` classes).

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Location, Result};
use crate::index::MappedFile;

/// The RecordIO magic number.
pub const MAGIC: u32 = 0xced7_230a;
/// Size of MXNet's `IRHeader`.
pub const IR_HEADER_SIZE: usize = 24;
const LEN_MASK: u32 = (1 << 29) - 1;

/// MXNet's image record header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IrHeader {
    /// 0: `label` is the label; n > 0: n f32 labels follow the header.
    pub flag: u32,
    /// The label when `flag == 0`.
    pub label: f32,
    /// Record id.
    pub id: u64,
    /// Second id (usually 0).
    pub id2: u64,
}

/// An unpacked image record.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord<'a> {
    /// The header.
    pub header: IrHeader,
    /// The label array (`flag` entries), empty when `flag == 0`.
    pub labels: Vec<f32>,
    /// The encoded image.
    pub image: &'a [u8],
}

impl ImageRecord<'_> {
    /// The class label: `labels[0]` when a label array is present, else `header.label`.
    pub fn label(&self) -> f32 {
        self.labels.first().copied().unwrap_or(self.header.label)
    }
}

/// Splits a record payload into header, label array and image (MXNet `recordio.unpack`).
pub fn unpack(payload: &[u8]) -> std::result::Result<ImageRecord<'_>, String> {
    if payload.len() < IR_HEADER_SIZE {
        return Err(format!(
            "record of {} bytes is shorter than the {IR_HEADER_SIZE}-byte IRHeader",
            payload.len()
        ));
    }
    let u32_at = |o: usize| u32::from_le_bytes(payload[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(payload[o..o + 8].try_into().expect("8 bytes"));
    let header = IrHeader {
        flag: u32_at(0),
        label: f32::from_bits(u32_at(4)),
        id: u64_at(8),
        id2: u64_at(16),
    };
    let n = header.flag as usize;
    let label_end = IR_HEADER_SIZE + 4 * n;
    if payload.len() < label_end {
        return Err(format!(
            "IRHeader flag {n} announces {n} labels but the record has {} bytes",
            payload.len()
        ));
    }
    let labels = (0..n)
        .map(|i| f32::from_bits(u32_at(IR_HEADER_SIZE + 4 * i)))
        .collect();
    Ok(ImageRecord {
        header,
        labels,
        image: &payload[label_end..],
    })
}

/// Builds a record payload (MXNet `recordio.pack`): with an empty `labels`, `header.label`
/// is the label and `flag` is written as 0; otherwise `flag = labels.len()`.
pub fn pack(header: IrHeader, labels: &[f32], image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(IR_HEADER_SIZE + 4 * labels.len() + image.len());
    out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
    let label = if labels.is_empty() { header.label } else { 0.0 };
    out.extend_from_slice(&label.to_le_bytes());
    out.extend_from_slice(&header.id.to_le_bytes());
    out.extend_from_slice(&header.id2.to_le_bytes());
    for l in labels {
        out.extend_from_slice(&l.to_le_bytes());
    }
    out.extend_from_slice(image);
    out
}

/// Writes RecordIO records (and optionally the matching `.idx`).
pub struct RecordIoWriter {
    path: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    idx: Vec<(u64, u64)>,
}

impl RecordIoWriter {
    /// Creates `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(|e| DataError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            pos: 0,
            idx: Vec::new(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| DataError::io(&self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Appends a record with `key`, splitting it where the payload holds the magic.
    pub fn write(&mut self, key: u64, payload: &[u8]) -> Result<()> {
        if payload.len() >= 1 << 29 {
            return Err(DataError::Config(format!(
                "record of {} bytes exceeds RecordIO's 2^29-byte limit",
                payload.len()
            )));
        }
        self.idx.push((key, self.pos));
        let magic = MAGIC.to_le_bytes();
        let mut seg_start = 0usize;
        let aligned = payload.len() / 4 * 4;
        let mut i = 0;
        while i < aligned {
            if payload[i..i + 4] == magic {
                let cflag = if seg_start == 0 { 1u32 } else { 2 };
                self.put(&magic)?;
                self.put(&((cflag << 29) | (i - seg_start) as u32).to_le_bytes())?;
                self.put(&payload[seg_start..i])?;
                seg_start = i + 4;
            }
            i += 4;
        }
        let cflag = if seg_start == 0 { 0u32 } else { 3 };
        let len = payload.len() - seg_start;
        self.put(&magic)?;
        self.put(&((cflag << 29) | len as u32).to_le_bytes())?;
        self.put(&payload[seg_start..])?;
        let pad = (4 - len % 4) % 4;
        self.put(&[0u8; 3][..pad])?;
        Ok(())
    }

    /// Flushes the `.rec` and, when `idx` is given, writes `key\toffset` lines there.
    pub fn finish(mut self, idx: Option<&Path>) -> Result<()> {
        self.out.flush().map_err(|e| DataError::io(&self.path, e))?;
        if let Some(idx) = idx {
            let mut text = String::new();
            for (k, o) in &self.idx {
                text.push_str(&format!("{k}\t{o}\n"));
            }
            std::fs::write(idx, text).map_err(|e| DataError::io(idx, e))?;
        }
        Ok(())
    }
}

/// A memory-mapped `.rec` file with the offsets of its records.
#[derive(Debug)]
pub struct RecordIoFile {
    file: MappedFile,
    /// `(key, byte offset)` in key order.
    entries: Vec<(u64, u64)>,
}

impl RecordIoFile {
    /// Opens `rec`; with `idx`, record offsets come from it, else the file is scanned and
    /// records get keys 0, 1, 2, ... in file order.
    pub fn open(rec: &Path, idx: Option<&Path>) -> Result<Self> {
        let file = MappedFile::open(rec)?;
        let mut entries = match idx {
            Some(idx) => read_idx(idx, file.bytes().len() as u64)?,
            None => scan(rec, file.bytes())?,
        };
        entries.sort_unstable();
        Ok(Self { file, entries })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(key, offset)` of every record, in key order.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// The `.rec` path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Offset of the record with `key`.
    pub fn offset_of(&self, key: u64) -> Option<u64> {
        self.entries
            .binary_search_by_key(&key, |e| e.0)
            .ok()
            .map(|i| self.entries[i].1)
    }

    /// Reads the record payload starting at `offset` (segments joined).
    pub fn read_at(&self, offset: u64) -> Result<Cow<'_, [u8]>> {
        read_record(self.file.path(), self.file.bytes(), offset).map(|(p, _)| p)
    }

    /// Hints random access.
    pub fn advise_random(&self) {
        self.file.advise_random();
    }
}

/// Reads one record at `offset`; returns the payload and the offset after it.
fn read_record<'a>(path: &Path, bytes: &'a [u8], offset: u64) -> Result<(Cow<'a, [u8]>, u64)> {
    let bad = |at: u64, reason: String| DataError::RecordIo {
        path: path.to_path_buf(),
        offset: at,
        reason,
    };
    let mut pos = offset as usize;
    let mut joined: Option<Vec<u8>> = None;
    loop {
        if pos + 8 > bytes.len() {
            return Err(bad(pos as u64, "truncated record header".into()));
        }
        let magic = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
        if magic != MAGIC {
            return Err(bad(
                pos as u64,
                format!("bad magic {magic:#010x} (expected {MAGIC:#010x})"),
            ));
        }
        let lrec = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let cflag = lrec >> 29;
        let len = (lrec & LEN_MASK) as usize;
        let data_start = pos + 8;
        if data_start + len > bytes.len() {
            return Err(bad(
                pos as u64,
                format!("record of {len} bytes runs past the end of the file"),
            ));
        }
        let data = &bytes[data_start..data_start + len];
        pos = data_start + len.div_ceil(4) * 4;
        match (cflag, joined.as_mut()) {
            (0, None) => return Ok((Cow::Borrowed(data), pos.min(bytes.len()) as u64)),
            (1, None) => joined = Some(data.to_vec()),
            (2, Some(j)) | (3, Some(j)) => {
                j.extend_from_slice(&MAGIC.to_le_bytes());
                j.extend_from_slice(data);
                if cflag == 3 {
                    let out = joined.take().expect("present");
                    return Ok((Cow::Owned(out), pos.min(bytes.len()) as u64));
                }
            }
            (f, _) => {
                return Err(bad(
                    (data_start - 8) as u64,
                    format!("unexpected continuation flag {f}"),
                ));
            }
        }
    }
}

/// Scans a `.rec` from the start, returning `(sequential key, offset)` of each record.
fn scan(path: &Path, bytes: &[u8]) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while (pos as usize) < bytes.len() {
        let (_, next) = read_record(path, bytes, pos)?;
        out.push((out.len() as u64, pos));
        pos = next;
    }
    Ok(out)
}

/// Reads `key\toffset` lines of an `.idx` file.
fn read_idx(idx: &Path, rec_len: u64) -> Result<Vec<(u64, u64)>> {
    let text = std::fs::read(idx).map_err(|e| DataError::io(idx, e))?;
    let mut out = Vec::new();
    for (line_no, _, content) in crate::format::lines(&text) {
        let s = String::from_utf8_lossy(content);
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let mut it = s.split_whitespace();
        let parsed = match (it.next(), it.next(), it.next()) {
            (Some(k), Some(o), None) => k.parse::<u64>().ok().zip(o.parse::<u64>().ok()),
            _ => None,
        };
        let (k, o) = parsed.ok_or_else(|| DataError::RecordIo {
            path: idx.to_path_buf(),
            offset: line_no,
            reason: format!("line {line_no}: expected `key<TAB>offset`, got {s:?}"),
        })?;
        if o >= rec_len {
            return Err(DataError::RecordIo {
                path: idx.to_path_buf(),
                offset: line_no,
                reason: format!("line {line_no}: offset {o} is past the end of the .rec"),
            });
        }
        out.push((k, o));
    }
    Ok(out)
}

/// An InsightFace-style image dataset in a `.rec` (+ `.idx`): the image records and their
/// integer labels, with record 0's header record interpreted when present.
#[derive(Debug)]
pub struct RecDataset {
    file: RecordIoFile,
    /// `(key, offset)` of the image records.
    images: Vec<(u64, u64)>,
    classes: Option<u64>,
}

impl RecDataset {
    /// Opens `rec` (and `idx` when given). When record 0 has `flag > 0`, its labels `(a, b)`
    /// select records `1..a` as images and `b - a` as the class count (InsightFace); otherwise
    /// every record is an image.
    pub fn open(rec: &Path, idx: Option<&Path>) -> Result<Self> {
        let file = RecordIoFile::open(rec, idx)?;
        let first = file
            .entries()
            .first()
            .copied()
            .ok_or_else(|| DataError::Empty {
                what: rec.display().to_string(),
            })?;
        let payload = file.read_at(first.1)?;
        let head = unpack(&payload).map_err(|reason| DataError::RecordIo {
            path: rec.to_path_buf(),
            offset: first.1,
            reason,
        })?;
        let (images, classes) = if first.0 == 0 && head.header.flag > 0 && head.labels.len() >= 2 {
            let a = head.labels[0] as u64;
            let b = head.labels[1] as u64;
            let images: Vec<(u64, u64)> = file
                .entries()
                .iter()
                .copied()
                .filter(|&(k, _)| k >= 1 && k < a)
                .collect();
            if images.len() as u64 != a.saturating_sub(1) {
                return Err(DataError::RecordIo {
                    path: rec.to_path_buf(),
                    offset: first.1,
                    reason: format!(
                        "header record says images are records 1..{a}, but {} of them exist",
                        images.len()
                    ),
                });
            }
            (images, Some(b.saturating_sub(a)))
        } else {
            (file.entries().to_vec(), None)
        };
        Ok(Self {
            file,
            images,
            classes,
        })
    }

    /// Number of image records.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no image records.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Class count from the header record, when there is one.
    pub fn classes(&self) -> Option<u64> {
        self.classes
    }

    /// The underlying file.
    pub fn file(&self) -> &RecordIoFile {
        &self.file
    }

    /// Location of image `i` for messages.
    pub fn location(&self, i: usize) -> Location {
        let (key, offset) = self.images[i];
        Location::Record {
            file: self.file.path().to_path_buf(),
            key,
            offset,
        }
    }

    /// Image `i`: its encoded bytes and integer label (a non-integer or negative label is an
    /// error naming the record).
    pub fn get(&self, i: usize) -> Result<(Cow<'_, [u8]>, i64)> {
        let (key, offset) = self.images[i];
        let payload = self.file.read_at(offset)?;
        let bad = |reason: String| DataError::RecordIo {
            path: self.file.path().to_path_buf(),
            offset,
            reason: format!("record {key}: {reason}"),
        };
        let (label, start, end) = {
            let rec = unpack(&payload).map_err(bad)?;
            let start = rec.image.as_ptr() as usize - payload.as_ptr() as usize;
            (rec.label(), start, payload.len())
        };
        if !(label >= 0.0 && label.fract() == 0.0 && label < 9.0e15) {
            return Err(bad(format!("label {label} is not a non-negative integer")));
        }
        let image = match payload {
            Cow::Borrowed(b) => Cow::Borrowed(&b[start..end]),
            Cow::Owned(mut v) => {
                v.drain(..start);
                Cow::Owned(v)
            }
        };
        Ok((image, label as i64))
    }
}
