//! Random-access sample sources for training: base64 part files and MXNet RecordIO.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Location, Result};
use crate::format::{decode_base64, parse_line};
use crate::index::LineIndex;
use crate::recordio::RecDataset;

/// Samples addressable by index `0..len()`: encoded image bytes and an integer label.
pub trait SampleSource: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `i`: encoded image and label; errors name the file and line or record.
    fn get(&self, i: usize) -> Result<(Cow<'_, [u8]>, i64)>;
    /// Where sample `i` is stored.
    fn location(&self, i: usize) -> Location;
}

/// Lines of base64 part files.
#[derive(Debug)]
pub struct Base64Source {
    index: LineIndex,
}

impl Base64Source {
    /// Indexes `parts`.
    pub fn open(parts: &[PathBuf]) -> Result<Self> {
        let index = LineIndex::build(parts)?;
        index.advise_random();
        Ok(Self { index })
    }

    /// The line index.
    pub fn index(&self) -> &LineIndex {
        &self.index
    }
}

impl SampleSource for Base64Source {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&self, i: usize) -> Result<(Cow<'_, [u8]>, i64)> {
        let (_, line) = self.index.line(i);
        let err = |e| DataError::Line {
            location: self.index.location(i),
            error: e,
        };
        let rec = parse_line(line, None).map_err(err)?;
        let bytes = decode_base64(rec.image_b64).map_err(err)?;
        Ok((Cow::Owned(bytes), rec.label))
    }

    fn location(&self, i: usize) -> Location {
        self.index.location(i)
    }
}

/// Images of an MXNet `.rec` (random access through the `.idx`).
#[derive(Debug)]
pub struct RecSource {
    data: RecDataset,
}

impl RecSource {
    /// Opens `rec` with its optional `idx`.
    pub fn open(rec: &Path, idx: Option<&Path>) -> Result<Self> {
        let data = RecDataset::open(rec, idx)?;
        data.file().advise_random();
        Ok(Self { data })
    }

    /// The dataset (class count from the header record, if any).
    pub fn dataset(&self) -> &RecDataset {
        &self.data
    }
}

impl SampleSource for RecSource {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn get(&self, i: usize) -> Result<(Cow<'_, [u8]>, i64)> {
        self.data.get(i)
    }

    fn location(&self, i: usize) -> Location {
        self.data.location(i)
    }
}
