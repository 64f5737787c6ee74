//! A folder of identities, `ROOT/<class>/<image>`: the images it holds, by class, and the files
//! that are not taken as images (and why). Shared by `data import-folder` ([`crate::import`])
//! and `data make-pairs` ([`crate::pairs`]).
//!
//! A file is an image when its header decodes as a JPEG, PNG or PNM image (its name and
//! extension do not matter); anything else in a class folder (notes, `.DS_Store`, an unsupported
//! format, a sub-folder) is skipped and listed.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::format::{ImageCheck, check_image};

/// A file of a class folder that was not taken as an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The file (or folder).
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// The content of `ROOT/<class>/<image>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassFolder {
    /// The root folder.
    pub root: PathBuf,
    /// Class names (the sub-folder names), sorted; class id `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// Image files and their class ids, by class id and then by file name.
    pub images: Vec<(PathBuf, u32)>,
    /// Files of the class folders that are not images, in the same order.
    pub skipped: Vec<Skipped>,
}

impl ClassFolder {
    /// The class id of each image, in [`ClassFolder::images`] order.
    pub fn labels(&self) -> Vec<u32> {
        self.images.iter().map(|(_, l)| *l).collect()
    }
}

/// Lists a folder's entries, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| DataError::io(dir, e))?;
    v.sort();
    Ok(v)
}

/// Why `path` is not an image, or `None` when its header decodes as a supported image. Only the
/// header is read.
fn not_an_image(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    // The largest header the decoders need to find the dimensions is small for PNG and PNM; a
    // JPEG may put its frame header after large metadata segments, so read up to 1 MiB.
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = Vec::new();
    file.take(1 << 20)
        .read_to_end(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    Ok(match check_image(&head, ImageCheck::Header) {
        Ok(_) => None,
        Err(e) if head.is_empty() => Some(format!("empty file ({e})")),
        Err(e) => Some(e.to_string()),
    })
}

/// Reads `root/<class>/<image>`: class ids by sorted folder name (files directly under `root`
/// are ignored), images by sorted file name, each file's header checked (in parallel).
pub fn scan_class_folder(root: &Path) -> Result<ClassFolder> {
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::Empty {
            what: format!("{} (no class sub-folders)", root.display()),
        });
    }
    let mut candidates: Vec<(PathBuf, u32)> = Vec::new();
    let mut skipped_dirs: Vec<(usize, Skipped)> = Vec::new();
    let mut names = Vec::with_capacity(classes.len());
    for (id, dir) in classes.iter().enumerate() {
        names.push(
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        let id = u32::try_from(id)
            .map_err(|_| DataError::Config(format!("{}: too many classes", root.display())))?;
        for f in sorted_entries(dir)? {
            if f.is_file() {
                candidates.push((f, id));
            } else {
                skipped_dirs.push((
                    candidates.len(),
                    Skipped {
                        path: f,
                        reason: "not a file (class folders hold images only)".into(),
                    },
                ));
            }
        }
    }
    let verdicts: Vec<Option<String>> = candidates
        .par_iter()
        .map(|(p, _)| not_an_image(p))
        .collect::<Result<_>>()?;
    let mut images = Vec::with_capacity(candidates.len());
    let mut skipped = Vec::new();
    let mut dirs = skipped_dirs.into_iter().peekable();
    for (i, ((path, id), verdict)) in candidates.into_iter().zip(verdicts).enumerate() {
        while let Some((_, s)) = dirs.next_if(|(at, _)| *at <= i) {
            skipped.push(s);
        }
        match verdict {
            None => images.push((path, id)),
            Some(reason) => skipped.push(Skipped { path, reason }),
        }
    }
    skipped.extend(dirs.map(|(_, s)| s));
    for s in &skipped {
        tracing::warn!("skipped {s}");
    }
    Ok(ClassFolder {
        root: root.to_path_buf(),
        classes: names,
        images,
        skipped,
    })
}
