//! The PLSC base64 layout: a `file_list.txt` naming part files (relative to its folder), each
//! part line `<base64 of an encoded image>\t<integer label>`, LF or CRLF line endings.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{DataError, LineError, Result};

/// Name of the list of part files in a data folder.
pub const FILE_LIST_NAME: &str = "file_list.txt";

/// Side file of a data folder (class id -> name, `id\tname` lines), written by the folder
/// importer.
pub const CLASS_MAP_NAME: &str = "class_map.tsv";

/// Standard base64 alphabet; padding optional when reading, always written.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How much of the image a line check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageCheck {
    /// Do not look at the image bytes (base64 is still decoded).
    None,
    /// Recognise the format and read the dimensions from the header (cheap).
    #[default]
    Header,
    /// Decode the whole image.
    Full,
}

/// One parsed line: the raw base64 field and the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// The base64 text of the encoded image.
    pub image_b64: &'a [u8],
    /// The class label (non-negative).
    pub label: i64,
}

/// Strips a trailing `\r` (CRLF line ending) from a line without its `\n`.
pub fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Iterates over the lines of `data`: `(1-based line number, byte offset, content)`, where the
/// content excludes `\n` and a `\r` before it. A last line without newline is included; an empty
/// `data` has no lines.
pub fn lines(data: &[u8]) -> impl Iterator<Item = (u64, usize, &[u8])> {
    let mut start = 0usize;
    let mut line_no = 0u64;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |p| start + p);
        let content = strip_cr(&data[start..end]);
        let offset = start;
        start = end + 1;
        line_no += 1;
        Some((line_no, offset, content))
    })
}

/// Splits a line (without terminator) into its base64 field and label, checking the label
/// against `classes` when given.
pub fn parse_line(line: &[u8], classes: Option<u64>) -> Result<RawRecord<'_>, LineError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(LineError::Empty);
    }
    let tab = memchr::memchr(b'\t', line).ok_or(LineError::MissingTab)?;
    let image_b64 = &line[..tab];
    let label_text = String::from_utf8_lossy(&line[tab + 1..]);
    let label_text = label_text.trim();
    let label: i64 = label_text
        .parse()
        .map_err(|_| LineError::LabelNotInteger(label_text.to_string()))?;
    if label < 0 {
        return Err(LineError::NegativeLabel(label));
    }
    if let Some(classes) = classes
        && label as u64 >= classes
    {
        return Err(LineError::LabelOutOfRange { label, classes });
    }
    Ok(RawRecord { image_b64, label })
}

/// Decodes the base64 field of a line.
pub fn decode_base64(b64: &[u8]) -> Result<Vec<u8>, LineError> {
    B64.decode(b64.trim_ascii())
        .map_err(|e| LineError::Base64(e.to_string()))
}

/// Checks a line cheaply: tab, label (against `classes`), base64 of the whole image field
/// (decoded into `buf`, reused between calls) and a known image signature (JPEG, PNG, PNM).
pub fn check_line_quick(
    line: &[u8],
    classes: Option<u64>,
    buf: &mut Vec<u8>,
) -> Result<(), LineError> {
    let rec = parse_line(line, classes)?;
    buf.clear();
    B64.decode_vec(rec.image_b64.trim_ascii(), buf)
        .map_err(|e| LineError::Base64(e.to_string()))?;
    match image::guess_format(buf) {
        Ok(image::ImageFormat::Jpeg | image::ImageFormat::Png | image::ImageFormat::Pnm) => Ok(()),
        Ok(f) => Err(LineError::NotAnImage(format!("unsupported format {f:?}"))),
        Err(_) => Err(LineError::NotAnImage(
            "no JPEG, PNG or PNM signature".into(),
        )),
    }
}

/// Encodes bytes as standard padded base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Checks that `bytes` is an image in a supported format; returns its (width, height) unless
/// `check` is [`ImageCheck::None`].
pub fn check_image(bytes: &[u8], check: ImageCheck) -> Result<Option<(u32, u32)>, LineError> {
    match check {
        ImageCheck::None => Ok(None),
        ImageCheck::Header => {
            let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| LineError::NotAnImage(e.to_string()))?;
            if reader.format().is_none() {
                return Err(LineError::NotAnImage("unknown format".into()));
            }
            let dims = reader
                .into_dimensions()
                .map_err(|e| LineError::NotAnImage(e.to_string()))?;
            Ok(Some(dims))
        }
        ImageCheck::Full => {
            let img =
                image::load_from_memory(bytes).map_err(|e| LineError::NotAnImage(e.to_string()))?;
            Ok(Some((img.width(), img.height())))
        }
    }
}

/// A fully checked line: encoded image bytes, label, and dimensions when the image was checked.
pub type CheckedLine = (Vec<u8>, i64, Option<(u32, u32)>);

/// Parses a line fully: label (checked against `classes`), base64 and the image as `check` says.
/// Returns the encoded image bytes, the label and the dimensions when checked.
pub fn validate_line(
    line: &[u8],
    classes: Option<u64>,
    check: ImageCheck,
) -> Result<CheckedLine, LineError> {
    let rec = parse_line(line, classes)?;
    let bytes = decode_base64(rec.image_b64)?;
    let dims = check_image(&bytes, check)?;
    Ok((bytes, rec.label, dims))
}

/// Appends `<base64(image)>\t<label>\n` to `out`.
pub fn encode_line(image: &[u8], label: i64, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(image.len(), true).unwrap_or(0),
        0,
    );
    let written = B64
        .encode_slice(image, &mut out[start..])
        .expect("buffer sized by encoded_len");
    out.truncate(start + written);
    out.push(b'\t');
    out.extend_from_slice(label.to_string().as_bytes());
    out.push(b'\n');
}

/// Reads a `file_list.txt`: one part file per non-empty line, relative to the list's folder
/// (absolute paths are kept). Every named file must exist.
pub fn read_file_list(path: &Path) -> Result<Vec<PathBuf>> {
    let text = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut parts = Vec::new();
    for (line_no, _, content) in lines(&text) {
        let name = String::from_utf8_lossy(content);
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let part = dir.join(name);
        if !part.is_file() {
            let what = if part.is_dir() {
                "is a folder, not a part file"
            } else if part.exists() {
                "is not a regular file"
            } else {
                "does not exist"
            };
            return Err(DataError::FileList {
                path: path.to_path_buf(),
                line: line_no,
                reason: format!("part file {} {what}", part.display()),
            });
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
        });
    }
    Ok(parts)
}

/// Writes a `file_list.txt` naming `parts` (relative names, one per line) into `dir`, through a
/// temporary name.
pub fn write_file_list(dir: &Path, parts: &[String]) -> Result<PathBuf> {
    let path = dir.join(FILE_LIST_NAME);
    let tmp = dir.join(format!(".{FILE_LIST_NAME}.tmp"));
    let mut text = String::new();
    for p in parts {
        text.push_str(p);
        text.push('\n');
    }
    let mut f = fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| DataError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))?;
    Ok(path)
}

/// Name of part `j` in an output folder: `part-00000.txt`.
pub fn part_name(j: usize) -> String {
    format!("part-{j:05}.txt")
}

/// Resolves `--input` arguments to part files: a folder means its `file_list.txt`; a file named
/// `file_list.txt` is read as a list; any other file is a part file.
pub fn resolve_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut parts = Vec::new();
    for input in inputs {
        if input.is_dir() {
            parts.extend(read_file_list(&input.join(FILE_LIST_NAME))?);
        } else if input.file_name().is_some_and(|n| n == FILE_LIST_NAME) {
            parts.extend(read_file_list(input)?);
        } else if input.is_file() {
            parts.push(input.clone());
        } else {
            return Err(DataError::io(
                input,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
    }
    if parts.is_empty() {
        return Err(DataError::Config("no input given".into()));
    }
    Ok(parts)
}

/// The error for a part file without a single sample line (empty, or only empty lines).
pub fn empty_part(path: &Path) -> DataError {
    DataError::Empty {
        what: format!("part file {}", path.display()),
    }
}

/// Policy for bad lines or records: fail on the first (default) or skip, count and report.
#[derive(Debug, Default)]
pub struct BadPolicy {
    skip: bool,
    count: u64,
    examples: Vec<String>,
}

/// How many bad-input examples a report keeps.
const MAX_EXAMPLES: usize = 20;

impl BadPolicy {
    /// `skip == false`: the first bad input is an error; `true`: skipped and counted.
    pub fn new(skip: bool) -> Self {
        Self {
            skip,
            ..Self::default()
        }
    }

    /// Returns `err` unless skipping, in which case it is counted, logged and `Ok`.
    pub fn handle(&mut self, err: DataError) -> Result<()> {
        if !self.skip {
            return Err(err);
        }
        self.count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            tracing::warn!("skipping bad input: {err}");
            self.examples.push(err.to_string());
        }
        Ok(())
    }

    /// Merges another policy's counts (parallel workers).
    pub fn merge(&mut self, other: BadPolicy) {
        self.count += other.count;
        let room = MAX_EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }

    /// Whether bad input is skipped.
    pub fn skips(&self) -> bool {
        self.skip
    }

    /// The report: count and the first examples.
    pub fn report(&self) -> BadReport {
        BadReport {
            skipped: self.count,
            examples: self.examples.clone(),
        }
    }
}

/// Bad inputs skipped under `--skip-bad`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BadReport {
    /// How many were skipped.
    pub skipped: u64,
    /// The first few, as error messages naming file and line.
    pub examples: Vec<String>,
}
