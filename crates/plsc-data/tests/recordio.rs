//! RecordIO read back from files written here byte by byte per the dmlc/MXNet spec
//! (independently of the crate's writer), including a payload holding the magic number
//! (split record), InsightFace's header record 0, the .idx file, and the importer.

mod common;

use std::path::Path;

use plsc_data::format::read_file_list;
use plsc_data::inspect::inspect_one;
use plsc_data::recordio::{IrHeader, RecDataset, RecordIoWriter, pack};
use plsc_data::shuffle::Remainder;
use plsc_data::writer::WriteOptions;

const MAGIC: [u8; 4] = [0x0a, 0x23, 0xd7, 0xce]; // 0xced7230a little-endian

/// IRHeader (`IfQQ`, little-endian) + optional label array + image.
fn payload(flag: u32, label: f32, id: u64, labels: &[f32], image: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&flag.to_le_bytes());
    v.extend_from_slice(&label.to_le_bytes());
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    for l in labels {
        v.extend_from_slice(&l.to_le_bytes());
    }
    v.extend_from_slice(image);
    v
}

/// One segment: magic, lrecord = cflag << 29 | len, data, zero pad to 4.
fn segment(out: &mut Vec<u8>, cflag: u32, data: &[u8]) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&((cflag << 29) | data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

struct Built {
    images: Vec<(Vec<u8>, i64)>,
}

/// InsightFace layout: record 0 header (flag 2, labels [n+1, n+1+classes]), images 1..=n,
/// then one identity record per class. Image 2's payload contains the magic twice at
/// 4-aligned offsets, so it is written as three segments (cflag 1, 2, 3).
fn write_insightface(dir: &Path, with_idx: bool) -> Built {
    let classes = 3u32;
    let imgs: Vec<(Vec<u8>, i64)> = (0..5)
        .map(|i| {
            (
                common::pgm(6 + i, 5, |x, y| (x * 10 + y + i) as u8),
                (i % classes) as i64,
            )
        })
        .collect();
    let n = imgs.len() as u32;
    let mut rec = Vec::new();
    let mut idx = String::new();
    let mut key = 0u64;
    let mut add = |rec: &mut Vec<u8>, idx: &mut String, segs: Vec<(u32, Vec<u8>)>| {
        idx.push_str(&format!("{key}\t{}\n", rec.len()));
        for (f, d) in segs {
            segment(rec, f, &d);
        }
        key += 1;
    };
    let head = payload(2, 0.0, 0, &[(n + 1) as f32, (n + 1 + classes) as f32], b"");
    add(&mut rec, &mut idx, vec![(0, head)]);
    for (i, (img, label)) in imgs.iter().enumerate() {
        // Alternate the two label encodings InsightFace files use.
        let p = if i % 2 == 0 {
            payload(0, *label as f32, i as u64 + 1, &[], img)
        } else {
            payload(2, 0.0, i as u64 + 1, &[*label as f32, 0.0], img)
        };
        if i == 2 {
            // Insert the magic at two aligned offsets of a custom payload: split it.
            let mut p2 = p.clone();
            let at = p2.len().div_ceil(4) * 4;
            p2.resize(at, 0);
            p2.extend_from_slice(&MAGIC);
            p2.extend_from_slice(b"tail");
            p2.extend_from_slice(&MAGIC);
            p2.extend_from_slice(b"xy");
            // Segments: [0, at) cflag 1, [at+4, at+8) cflag 2, [at+12, end) cflag 3.
            let segs = vec![
                (1, p2[..at].to_vec()),
                (2, p2[at + 4..at + 8].to_vec()),
                (3, p2[at + 12..].to_vec()),
            ];
            add(&mut rec, &mut idx, segs);
        } else {
            add(&mut rec, &mut idx, vec![(0, p)]);
        }
    }
    for c in 0..classes {
        let id = payload(2, 0.0, 0, &[c as f32, c as f32 + 1.0], b"");
        add(&mut rec, &mut idx, vec![(0, id)]);
    }
    std::fs::write(dir.join("train.rec"), rec).unwrap();
    if with_idx {
        std::fs::write(dir.join("train.idx"), idx).unwrap();
    }
    let mut images = imgs;
    // The split record's image carries the appended bytes.
    let mut tail = images[2].0.clone();
    let base = payload(0, 0.0, 3, &[], &tail).len();
    tail.resize(tail.len() + (base.div_ceil(4) * 4 - base), 0);
    tail.extend_from_slice(&MAGIC);
    tail.extend_from_slice(b"tail");
    tail.extend_from_slice(&MAGIC);
    tail.extend_from_slice(b"xy");
    images[2].0 = tail;
    Built { images }
}

#[test]
fn reads_insightface_rec_with_and_without_idx() {
    for with_idx in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let built = write_insightface(dir.path(), with_idx);
        let idx = dir.path().join("train.idx");
        let ds = RecDataset::open(
            &dir.path().join("train.rec"),
            with_idx.then_some(idx.as_path()),
        )
        .unwrap();
        assert_eq!(ds.len(), 5, "idx={with_idx}");
        assert_eq!(ds.classes(), Some(3));
        for (i, (img, label)) in built.images.iter().enumerate() {
            let (got, l) = ds.get(i).unwrap();
            assert_eq!(l, *label, "record {i}");
            assert_eq!(&*got, img.as_slice(), "record {i} idx={with_idx}");
        }
    }
}

#[test]
fn writer_round_trip_and_magic_splitting() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("w.rec");
    let idx = dir.path().join("w.idx");
    let mut w = RecordIoWriter::create(&rec).unwrap();
    let mut tricky = vec![1u8, 2, 3, 4];
    tricky.extend_from_slice(&MAGIC);
    tricky.extend_from_slice(&MAGIC);
    tricky.extend_from_slice(&[5, 6, 7]);
    let payloads = [
        pack(
            IrHeader {
                flag: 0,
                label: 4.0,
                id: 0,
                id2: 0,
            },
            &[],
            b"abc",
        ),
        tricky.clone(),
        MAGIC.to_vec(),
        vec![],
    ];
    for (k, p) in payloads.iter().enumerate() {
        w.write(k as u64, p).unwrap();
    }
    w.finish(Some(&idx)).unwrap();
    let bytes = std::fs::read(&rec).unwrap();
    assert_eq!(bytes.len() % 4, 0);
    // The tricky payload is stored as segments with cflag 1, 2, 3.
    let f = plsc_data::recordio::RecordIoFile::open(&rec, Some(&idx)).unwrap();
    let scanned = plsc_data::recordio::RecordIoFile::open(&rec, None).unwrap();
    assert_eq!(f.entries(), scanned.entries());
    for (k, p) in payloads.iter().enumerate() {
        assert_eq!(
            &*f.read_at(f.offset_of(k as u64).unwrap()).unwrap(),
            p.as_slice()
        );
    }
    let off = f.offset_of(1).unwrap() as usize;
    let lrec = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
    assert_eq!(lrec >> 29, 1);
    assert_eq!(lrec & ((1 << 29) - 1), 4);
}

#[test]
fn corrupt_rec_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    write_insightface(dir.path(), true);
    let rec = dir.path().join("train.rec");
    let mut bytes = std::fs::read(&rec).unwrap();
    let idx = std::fs::read_to_string(dir.path().join("train.idx")).unwrap();
    let off: usize = idx
        .lines()
        .nth(2)
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    bytes[off] ^= 0xff; // break record 2's magic
    std::fs::write(&rec, &bytes).unwrap();
    let ds = RecDataset::open(&rec, Some(&dir.path().join("train.idx"))).unwrap();
    let err = ds.get(1).unwrap_err().to_string();
    assert!(
        err.contains("train.rec") && err.contains("bad magic"),
        "{err}"
    );
    assert!(err.contains(&format!("byte {off}")), "{err}");
}

#[test]
fn import_rec_writes_the_base64_layout() {
    let dir = tempfile::tempdir().unwrap();
    let built = write_insightface(dir.path(), true);
    // The split record's image has trailing bytes after the PGM data; PGM decoders accept it.
    let out = dir.path().join("data");
    let opts = WriteOptions {
        output: out.clone(),
        parts: Some(2),
        seed: 5,
        remainder: Remainder::Pad,
        skip_bad: false,
        progress: false,
    };
    let s = plsc_data::import::import_rec(
        &dir.path().join("train.rec"),
        Some(&dir.path().join("train.idx")),
        &opts,
    )
    .unwrap();
    assert_eq!(s.samples, 5);
    assert_eq!(s.split.as_ref().unwrap().per_part, vec![3, 3]);
    assert_eq!(read_file_list(&out.join("file_list.txt")).unwrap().len(), 2);
    let r = inspect_one(&out, Some(3)).unwrap();
    assert_eq!(r.lines, 6);
    assert_eq!(r.bad.skipped, 0);
    assert_eq!((r.label_min, r.label_max), (Some(0), Some(2)));
    // Every imported line decodes to one of the written images.
    let parts = read_file_list(&out.join("file_list.txt")).unwrap();
    for p in parts {
        for line in std::fs::read_to_string(p).unwrap().lines() {
            let (b64, label) = line.split_once('\t').unwrap();
            let img = plsc_data::format::decode_base64(b64.as_bytes()).unwrap();
            let label: i64 = label.parse().unwrap();
            assert!(built.images.contains(&(img, label)));
        }
    }
}
