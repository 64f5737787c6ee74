//! Atomic output folders: everything is written into a staging folder next to the target and
//! moved into place at the end, so a crash leaves either the old output or the full new one.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::format::{CLASS_MAP_NAME, FILE_LIST_NAME, read_file_list, write_file_list};

/// A data folder being written. Call [`StagedOutput::commit`] to publish it; dropping it
/// without committing removes the staging folder.
#[derive(Debug)]
pub struct StagedOutput {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
    /// Folders above the target that `begin` created, deepest first: removed (when empty)
    /// if the output is not committed, so a failed command leaves nothing it created.
    created: Vec<PathBuf>,
}

fn out_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Output {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl StagedOutput {
    /// Prepares to write `target`. The target must not exist, be empty, or be a previous data
    /// folder (only a `file_list.txt` and the parts it names); none of `inputs` may lie in it.
    pub fn begin(target: &Path, inputs: &[PathBuf]) -> Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| out_err(target, "output must name a folder"))?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let created = create_missing(&parent)?;
        let mut this = Self {
            target: target.to_path_buf(),
            staging: PathBuf::new(),
            committed: false,
            created,
        };
        if target.exists() {
            if !target.is_dir() {
                return Err(out_err(target, "exists and is not a folder"));
            }
            if !cfg!(target_os = "linux") {
                return Err(out_err(
                    target,
                    "exists; replacing a folder atomically needs Linux, choose a new folder",
                ));
            }
            check_replaceable(target)?;
            let canon_target = target
                .canonicalize()
                .map_err(|e| DataError::io(target, e))?;
            for input in inputs {
                let c = input.canonicalize().map_err(|e| DataError::io(input, e))?;
                if c.starts_with(&canon_target) {
                    return Err(out_err(
                        target,
                        format!(
                            "input {} lies in the output folder, which would be replaced",
                            input.display()
                        ),
                    ));
                }
            }
        }
        let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
        }
        fs::create_dir(&staging).map_err(|e| DataError::io(&staging, e))?;
        this.staging = staging;
        Ok(this)
    }

    /// The staging folder files are written into.
    pub fn dir(&self) -> &Path {
        &self.staging
    }

    /// The final folder.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes `file_list.txt` naming `parts` (written last) and moves the folder into place.
    pub fn commit(mut self, parts: &[String]) -> Result<PathBuf> {
        write_file_list(&self.staging, parts)?;
        if let Ok(d) = fs::File::open(&self.staging) {
            let _ = d.sync_all();
        }
        if self.target.exists() {
            exchange(&self.staging, &self.target)?;
            // The staging path now holds the old output.
            fs::remove_dir_all(&self.staging).map_err(|e| DataError::io(&self.staging, e))?;
        } else {
            fs::rename(&self.staging, &self.target).map_err(|e| DataError::io(&self.target, e))?;
        }
        self.committed = true;
        Ok(self.target.join(FILE_LIST_NAME))
    }
}

impl Drop for StagedOutput {
    fn drop(&mut self) {
        if !self.committed {
            if !self.staging.as_os_str().is_empty() {
                let _ = fs::remove_dir_all(&self.staging);
            }
            for dir in &self.created {
                // Only if still empty: never removes anything that is not ours.
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// Creates `dir` and its missing ancestors; returns those it created, deepest first.
fn create_missing(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    if let Err(e) = fs::create_dir_all(dir) {
        for d in &missing {
            let _ = fs::remove_dir(d);
        }
        return Err(DataError::io(dir, e));
    }
    Ok(missing)
}

/// An existing output may be replaced only if it is empty or holds exactly a file list, the
/// parts it names and the folder importer's class map.
fn check_replaceable(target: &Path) -> Result<()> {
    let entries: Vec<PathBuf> = fs::read_dir(target)
        .map_err(|e| DataError::io(target, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| DataError::io(target, e))?;
    if entries.is_empty() {
        return Ok(());
    }
    let list = target.join(FILE_LIST_NAME);
    if !list.is_file() {
        return Err(out_err(
            target,
            "exists, is not empty and has no file_list.txt; choose a new or empty folder",
        ));
    }
    let mut allowed: Vec<PathBuf> = read_file_list(&list)?;
    allowed.push(target.join(CLASS_MAP_NAME));
    allowed.push(list);
    for e in &entries {
        if !allowed.iter().any(|a| a == e) {
            return Err(out_err(
                target,
                format!(
                    "holds {} which its file_list.txt does not name; refusing to replace it",
                    e.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Swaps two folders atomically (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())
        .map_err(|_| out_err(a, "path contains a NUL byte"))?;
    let cb = CString::new(b.as_os_str().as_bytes())
        .map_err(|_| out_err(b, "path contains a NUL byte"))?;
    // SAFETY: both paths are valid NUL-terminated strings; the syscall only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(DataError::io(b, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, b: &Path) -> Result<()> {
    Err(out_err(b, "replacing a folder atomically needs Linux"))
}
