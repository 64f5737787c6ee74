//! Test helpers: pickles laid out exactly as Python writes InsightFace's `.bin` files, and test
//! images.
//!
//! The opcode sequences follow Python's pickler: `pickletools.dis` of Python 3.11's
//! `pickle.dumps(([b'ab', b'c' * 300], [True]), protocol=4)` and of the Python 2 layout
//! (`str` items) were compared with what these functions produce (see the byte literals in
//! `tests/bin_file.rs`).
#![allow(dead_code)]

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage};

/// Python 2 `pickle.dump((bins, issame), f, protocol=2)` with `bins` a list of `str`: the layout
/// of InsightFace's published `lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`.
pub fn py2_pickle(images: &[Vec<u8>], labels: &[bool]) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    let mut memo = 0u32;
    let mut put = |out: &mut Vec<u8>| {
        if memo < 256 {
            out.extend_from_slice(&[b'q', memo as u8]);
        } else {
            out.push(b'r');
            out.extend_from_slice(&memo.to_le_bytes());
        }
        memo += 1;
    };
    // The images list.
    out.push(b']');
    put(&mut out);
    batched_appends(&mut out, images.len(), |out, i| {
        let b = &images[i];
        if b.len() < 256 {
            out.extend_from_slice(&[b'U', b.len() as u8]);
        } else {
            out.push(b'T');
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
        }
        out.extend_from_slice(b);
        put(out);
    });
    // The labels list (bools are not memoised).
    out.push(b']');
    put(&mut out);
    batched_appends(&mut out, labels.len(), |out, i| {
        out.push(if labels[i] { 0x88 } else { 0x89 })
    });
    out.push(0x86); // TUPLE2
    put(&mut out);
    out.push(b'.');
    out
}

/// Python's protocol-4 framer: at the start of every object's save, a frame of 64 KiB or more is
/// flushed (`FRAME` + length, data); byte strings of 64 KiB or more are written outside frames
/// (the current frame is flushed first); frames under 4 bytes get no `FRAME` header.
struct Framer {
    out: Vec<u8>,
    frame: Vec<u8>,
}

impl Framer {
    const TARGET: usize = 64 * 1024;

    fn flush(&mut self) {
        if self.frame.len() >= 4 {
            self.out.push(0x95);
            self.out
                .extend_from_slice(&(self.frame.len() as u64).to_le_bytes());
        }
        self.out.append(&mut self.frame);
    }

    /// Called where Python's `save()` starts.
    fn save_start(&mut self) {
        if self.frame.len() >= Self::TARGET {
            self.flush();
        }
    }

    fn write(&mut self, data: &[u8]) {
        self.frame.extend_from_slice(data);
    }

    fn write_large(&mut self, header: &[u8], payload: &[u8]) {
        self.flush();
        self.out.extend_from_slice(header);
        self.out.extend_from_slice(payload);
    }
}

/// Python 3 `pickle.dump((bins, issame), f, protocol=4)` (or 5: only the PROTO byte differs) with
/// `bins` a list of `bytes`, framed as Python frames it.
pub fn py3_pickle(images: &[Vec<u8>], labels: &[bool], protocol: u8) -> Vec<u8> {
    const MEMOIZE: u8 = 0x94;
    let mut f = Framer {
        out: vec![0x80, protocol],
        frame: Vec::new(),
    };
    f.save_start(); // the tuple
    f.save_start(); // the images list
    f.write(&[b']', MEMOIZE]);
    for_batches(images.len(), |batch| {
        if batch.len() > 1 {
            f.write(b"(");
        }
        for i in batch.clone() {
            f.save_start();
            let b = &images[i];
            if b.len() < 256 {
                f.write(&[b'C', b.len() as u8]);
                f.write(b);
            } else if b.len() >= Framer::TARGET {
                let mut header = vec![b'B'];
                header.extend_from_slice(&(b.len() as u32).to_le_bytes());
                f.write_large(&header, b);
            } else {
                f.write(b"B");
                f.write(&(b.len() as u32).to_le_bytes());
                f.write(b);
            }
            f.write(&[MEMOIZE]);
        }
        f.write(if batch.len() > 1 { b"e" } else { b"a" });
    });
    f.save_start(); // the labels list
    f.write(&[b']', MEMOIZE]);
    for_batches(labels.len(), |batch| {
        if batch.len() > 1 {
            f.write(b"(");
        }
        for i in batch.clone() {
            f.save_start();
            f.write(&[if labels[i] { 0x88 } else { 0x89 }]);
        }
        f.write(if batch.len() > 1 { b"e" } else { b"a" });
    });
    f.write(&[0x86, MEMOIZE, b'.']);
    f.flush();
    f.out
}

/// Index ranges of Python's `_batch_appends` batches (1000 items each).
fn for_batches(n: usize, mut each: impl FnMut(std::ops::Range<usize>)) {
    let mut start = 0;
    while start < n {
        let end = (start + 1000).min(n);
        each(start..end);
        start = end;
    }
}

/// Python's `_batch_appends`: batches of 1000, `MARK items APPENDS`, a lone item as `APPEND`.
fn batched_appends(out: &mut Vec<u8>, n: usize, mut item: impl FnMut(&mut Vec<u8>, usize)) {
    let mut start = 0;
    while start < n {
        let end = (start + 1000).min(n);
        if end - start > 1 {
            out.push(b'(');
            for i in start..end {
                item(out, i);
            }
            out.push(b'e');
        } else {
            item(out, start);
            out.push(b'a');
        }
        start = end;
    }
}

/// A w x h RGB test pattern, different for every `seed`.
pub fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + seed * 31) % 256) as u8,
            ((y * 5 + seed * 17) % 256) as u8,
            ((x * y + seed * 3) % 256) as u8,
        ])
    })
}

/// Encodes an image in a format.
pub fn encode(img: impl Into<DynamicImage>, format: ImageFormat) -> Vec<u8> {
    let mut cur = Cursor::new(Vec::new());
    img.into().write_to(&mut cur, format).unwrap();
    cur.into_inner()
}
