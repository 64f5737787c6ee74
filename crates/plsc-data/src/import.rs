//! Importers into the base64 layout: MXNet RecordIO, a folder per class, and PLSC's
//! `label.txt` (`path label` lines).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{DataError, LineError, Location, Result};
use crate::folder::{Skipped, scan_class_folder};
use crate::format::{CLASS_MAP_NAME, ImageCheck, check_image};
use crate::recordio::RecDataset;
use crate::resize::ResizeTo;
use crate::writer::{WriteOptions, WriteSummary, write_dataset};

fn image_err(location: Location, e: LineError) -> DataError {
    match location {
        Location::Line { .. } => DataError::Line { location, error: e },
        Location::Record { .. } => DataError::Decode {
            location,
            reason: e.to_string(),
        },
    }
}

/// Imports the images of an MXNet `.rec` (InsightFace layout, header record understood).
/// Each image's format is checked from its header; labels must be below the header record's
/// class count when it has one.
pub fn import_rec(rec: &Path, idx: Option<&Path>, opts: &WriteOptions) -> Result<WriteSummary> {
    let data = RecDataset::open(rec, idx)?;
    data.file().advise_random();
    let classes = data.classes();
    tracing::info!(
        "{}: {} image records{}",
        rec.display(),
        data.len(),
        classes.map_or(String::new(), |c| format!(", {c} classes"))
    );
    let mut protect = vec![rec.to_path_buf()];
    protect.extend(idx.map(Path::to_path_buf));
    write_dataset(
        opts,
        data.len(),
        |i| {
            let (img, label) = data.get(i)?;
            if let Some(c) = classes
                && label as u64 >= c
            {
                return Err(image_err(
                    data.location(i),
                    LineError::LabelOutOfRange { label, classes: c },
                ));
            }
            check_image(&img, ImageCheck::Header).map_err(|e| image_err(data.location(i), e))?;
            Ok((img.into_owned(), label))
        },
        &[],
        &protect,
    )
}

/// What `data import-folder` did: the written data set and the files it skipped.
#[derive(Debug, Clone, Serialize)]
pub struct FolderImportSummary {
    /// The data set written.
    #[serde(flatten)]
    pub written: WriteSummary,
    /// Files of the class folders that are not images (by their header), not imported.
    pub skipped: Vec<Skipped>,
    /// The size and policy images were stored at, when one was given.
    pub resized: Option<ResizeTo>,
}

/// Reads an image file whole; with `resize`, decodes it and returns it at the target size (PNG,
/// unless it already had that size). Errors name the file.
pub(crate) fn read_image_file(path: &Path, resize: Option<ResizeTo>) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bad = |reason: String| DataError::ImageFile {
        path: path.to_path_buf(),
        reason,
    };
    match resize {
        Some(r) => r.apply_encoded(bytes).map_err(|e| bad(e.to_string())),
        None => {
            check_image(&bytes, ImageCheck::Header).map_err(|e| bad(e.to_string()))?;
            Ok(bytes)
        }
    }
}

/// Imports `root/<class>/<image>`: one sub-folder per class, class ids assigned by sorted
/// folder name, images by sorted file name. Writes `class_map.tsv` (`id\tname`) next to
/// `file_list.txt`. Only image files (JPEG, PNG, PNM, told by their header) are imported; the
/// others are skipped and listed in the summary. With `resize`, every image is stored at that
/// size by its policy (PNG when resized); without, as it is (training then squashes it).
pub fn import_folder(
    root: &Path,
    opts: &WriteOptions,
    resize: Option<ResizeTo>,
) -> Result<FolderImportSummary> {
    let folder = scan_class_folder(root)?;
    let map: String = folder
        .classes
        .iter()
        .enumerate()
        .map(|(id, name)| format!("{id}\t{name}\n"))
        .collect();
    tracing::info!(
        "{}: {} images in {} classes, {} other files skipped",
        root.display(),
        folder.images.len(),
        folder.classes.len(),
        folder.skipped.len()
    );
    let items = &folder.images;
    let written = write_dataset(
        opts,
        items.len(),
        |i| Ok((read_image_file(&items[i].0, resize)?, i64::from(items[i].1))),
        &[(CLASS_MAP_NAME, map)],
        &[root.to_path_buf()],
    )?;
    Ok(FolderImportSummary {
        written,
        skipped: folder.skipped,
        resized: resize,
    })
}

/// Imports PLSC's `label.txt`: lines `path label` (whitespace-separated; paths relative to the
/// list's folder). Bad lines (no label, non-integer or negative label, label >= `classes`,
/// missing or non-image file) name the list's line.
pub fn import_list(list: &Path, classes: Option<u64>, opts: &WriteOptions) -> Result<WriteSummary> {
    let text = std::fs::read(list).map_err(|e| DataError::io(list, e))?;
    let dir = list.parent().unwrap_or(Path::new("."));
    // (line number, path, label or the line's error)
    let mut items: Vec<(u64, PathBuf, std::result::Result<i64, LineError>)> = Vec::new();
    for (line_no, _, content) in crate::format::lines(&text) {
        let s = String::from_utf8_lossy(content);
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let (path, label) = match s.rsplit_once(char::is_whitespace) {
            Some((p, l)) => (p.trim_end(), l),
            None => (s, ""),
        };
        let label = if label.is_empty() {
            Err(LineError::LabelNotInteger(String::new()))
        } else {
            match label.parse::<i64>() {
                Err(_) => Err(LineError::LabelNotInteger(label.to_string())),
                Ok(l) if l < 0 => Err(LineError::NegativeLabel(l)),
                Ok(l) => match classes {
                    Some(c) if l as u64 >= c => Err(LineError::LabelOutOfRange {
                        label: l,
                        classes: c,
                    }),
                    _ => Ok(l),
                },
            }
        };
        items.push((line_no, dir.join(path), label));
    }
    write_dataset(
        opts,
        items.len(),
        |i| {
            let (line, path, label) = &items[i];
            let at = |error| DataError::line(list, *line, error);
            let label = label.clone().map_err(at)?;
            let bytes = std::fs::read(path).map_err(|e| {
                let reason = if path.is_dir() {
                    format!("{} is a folder, not an image file", path.display())
                } else if e.kind() == std::io::ErrorKind::NotFound {
                    format!("image file {} is missing", path.display())
                } else {
                    format!("image file {}: {e}", path.display())
                };
                at(LineError::UnreadableFile(reason))
            })?;
            check_image(&bytes, ImageCheck::Header).map_err(at)?;
            Ok((bytes, label))
        },
        &[],
        &[list.to_path_buf()],
    )
}
