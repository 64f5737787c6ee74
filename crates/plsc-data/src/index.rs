//! An index of the non-empty lines of part files, held as `u64` offsets into memory-mapped
//! files: the file contents stay in the page cache (file-backed), never in anonymous memory.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::error::{DataError, Location, Result};
use crate::format::{BadPolicy, BadReport, check_line_quick};

/// Per-line checks made while indexing (see [`LineIndex::build_checked`]).
#[derive(Debug, Clone, Default)]
pub struct LineCheck {
    /// Labels must be below this class count.
    pub classes: Option<u64>,
    /// Skip, count and report bad lines instead of failing on the first.
    pub skip_bad: bool,
}

/// One memory-mapped part file.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps `path` read-only (an empty file maps to an empty slice).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only; the tools never write their inputs, and a
            // concurrent writer to the same file from elsewhere is documented as unsupported.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?)
        };
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hints the kernel about the access pattern (no-op where unsupported).
    pub fn advise_random(&self) {
        #[cfg(unix)]
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }
}

/// Non-empty lines of a set of part files, addressed by a global byte offset (the files laid
/// end to end). Empty lines (nothing but a line ending) are not samples; they are counted.
#[derive(Debug)]
pub struct LineIndex {
    files: Vec<MappedFile>,
    /// Global offset of each file's first byte; `bases.len() == files.len()`.
    bases: Vec<u64>,
    /// Global offsets of the non-empty lines, in file order.
    starts: Vec<u64>,
    empty_lines: u64,
    bytes: u64,
}

impl LineIndex {
    /// Maps and indexes `paths` (files scanned in parallel), without checking lines.
    pub fn build(paths: &[PathBuf]) -> Result<Self> {
        Self::build_checked(paths, None).map(|(index, _)| index)
    }

    /// Maps and indexes `paths`; with `check`, every line's tab, label, base64 and image
    /// signature are checked (see [`check_line_quick`]): a bad line is an error naming file
    /// and line, or, with `skip_bad`, left out of the index and reported.
    pub fn build_checked(
        paths: &[PathBuf],
        check: Option<&LineCheck>,
    ) -> Result<(Self, BadReport)> {
        let files: Vec<MappedFile> = paths
            .iter()
            .map(|p| MappedFile::open(p))
            .collect::<Result<_>>()?;
        let mut bases = Vec::with_capacity(files.len());
        let mut total = 0u64;
        for f in &files {
            bases.push(total);
            total += f.bytes().len() as u64;
        }
        let per_file: Vec<(Vec<u64>, u64, BadPolicy)> = files
            .par_iter()
            .zip(bases.par_iter())
            .map(|(f, &base)| -> Result<(Vec<u64>, u64, BadPolicy)> {
                #[cfg(unix)]
                if let Some(m) = &f.map {
                    let _ = m.advise(memmap2::Advice::Sequential);
                }
                let mut starts = Vec::new();
                let mut empty = 0u64;
                let mut bad = BadPolicy::new(check.is_some_and(|c| c.skip_bad));
                let mut buf = Vec::new();
                for (line_no, off, content) in crate::format::lines(f.bytes()) {
                    if content.is_empty() {
                        empty += 1;
                        continue;
                    }
                    if let Some(c) = check
                        && let Err(e) = check_line_quick(content, c.classes, &mut buf)
                    {
                        bad.handle(DataError::line(&f.path, line_no, e))?;
                        continue;
                    }
                    starts.push(base + off as u64);
                }
                Ok((starts, empty, bad))
            })
            .collect::<Result<_>>()?;
        let n: usize = per_file.iter().map(|(s, _, _)| s.len()).sum();
        let mut starts = Vec::with_capacity(n);
        let mut empty_lines = 0;
        let mut bad = BadPolicy::new(true);
        for (s, e, b) in per_file {
            starts.extend_from_slice(&s);
            empty_lines += e;
            bad.merge(b);
        }
        let index = Self {
            files,
            bases,
            starts,
            empty_lines,
            bytes: total,
        };
        Ok((index, bad.report()))
    }

    /// The first file that holds no indexed line (empty, only empty lines, or every line
    /// skipped as bad), if any.
    pub fn first_file_without_lines(&self) -> Option<&Path> {
        self.files
            .iter()
            .zip(&self.bases)
            .find(|(f, base)| {
                let end = **base + f.bytes().len() as u64;
                let k = self.starts.partition_point(|s| s < base);
                self.starts.get(k).is_none_or(|s| *s >= end)
            })
            .map(|(f, _)| f.path.as_path())
    }

    /// Number of non-empty lines.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no non-empty lines.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Number of empty lines seen (not samples).
    pub fn empty_lines(&self) -> u64 {
        self.empty_lines
    }

    /// Total bytes of the indexed files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The mapped files.
    pub fn files(&self) -> &[MappedFile] {
        &self.files
    }

    /// Global offsets of the non-empty lines (the index itself).
    pub fn starts(&self) -> &[u64] {
        &self.starts
    }

    /// Mutable access to the offsets, e.g. to shuffle them in place.
    pub fn starts_mut(&mut self) -> &mut [u64] {
        &mut self.starts
    }

    /// File number holding global offset `off`.
    fn file_of(&self, off: u64) -> usize {
        self.bases.partition_point(|&b| b <= off) - 1
    }

    /// The line at global offset `off` (content without its line ending) and its file number.
    pub fn line_at(&self, off: u64) -> (usize, &[u8]) {
        let fi = self.file_of(off);
        let bytes = self.files[fi].bytes();
        let start = (off - self.bases[fi]) as usize;
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |p| start + p);
        (fi, crate::format::strip_cr(&bytes[start..end]))
    }

    /// Line `i` of the index (content without line ending) and its file number.
    pub fn line(&self, i: usize) -> (usize, &[u8]) {
        self.line_at(self.starts[i])
    }

    /// File and 1-based line number of the line at global offset `off` (counts newlines before
    /// it; meant for error messages).
    pub fn location_at(&self, off: u64) -> Location {
        let fi = self.file_of(off);
        let start = (off - self.bases[fi]) as usize;
        let line = memchr::memchr_iter(b'\n', &self.files[fi].bytes()[..start]).count() as u64 + 1;
        Location::Line {
            file: self.files[fi].path.clone(),
            line,
        }
    }

    /// File and line of index entry `i`.
    pub fn location(&self, i: usize) -> Location {
        self.location_at(self.starts[i])
    }

    /// Hints random access for all mapped files.
    pub fn advise_random(&self) {
        for f in &self.files {
            f.advise_random();
        }
    }
}

/// Counts the non-empty lines of a file without keeping an index.
pub fn count_lines(path: &Path) -> Result<u64> {
    let f = MappedFile::open(path)?;
    Ok(crate::format::lines(f.bytes())
        .filter(|(_, _, c)| !c.is_empty())
        .count() as u64)
}
