//! Per-rank batch streams: coverage per epoch for 2 ranks (own parts and strided), equal
//! batch counts, counted tail, determinism, resume, decoding/augmentation values.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use plsc_data::decode::{ImageSpec, decode_into};
use plsc_data::format::{encode_base64, read_file_list};
use plsc_data::shuffle::{Remainder, ShuffleSplitOptions, shuffle_split};
use plsc_data::source::{Base64Source, SampleSource};
use plsc_data::stream::{BatchStream, Position, StreamConfig};

/// 23 PGM samples of 6x6 (label = i % 5) in one part; its file list.
fn write_data(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let img = common::pgm(6, 6, |x, y| (i * 7 + x as usize * 3 + y as usize) as u8);
        text.push_str(&format!("{}\t{}\n", encode_base64(&img), i % 5));
    }
    std::fs::write(dir.join("all.txt"), text).unwrap();
    std::fs::write(dir.join("file_list.txt"), "all.txt\n").unwrap();
    dir.join("file_list.txt")
}

fn cfg(rank: usize, world: usize, b: usize) -> StreamConfig {
    StreamConfig {
        rank,
        world,
        batch_size: b,
        seed: 42,
        spec: ImageSpec {
            height: 6,
            width: 6,
            channels: 1,
            ..ImageSpec::default()
        },
        flip: true,
        prefetch: 2,
        classes: Some(5),
        skip_bad: false,
        threads: Some(2),
    }
}

/// Lines (as text) of the samples a batch holds, looked up through `source`.
fn check_coverage(streams: &[BatchStream], total: u64, epochs: u64) {
    let steps = streams[0].steps_per_epoch();
    assert!(streams.iter().all(|s| s.steps_per_epoch() == steps));
    let dropped = streams[0].dropped_per_epoch();
    let world = streams.len() as u64;
    let b = streams[0].config().batch_size as u64;
    assert_eq!(steps * b * world + dropped, total);
    assert!(dropped < b * world, "dropped a whole global batch");
    let mut orders = Vec::new();
    for epoch in 0..epochs {
        let mut seen = HashSet::new();
        for s in streams {
            let batches: Vec<_> = s
                .iter(Position { epoch, step: 0 }, Some(epoch + 1))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(batches.len() as u64, steps);
            for (k, bt) in batches.iter().enumerate() {
                assert_eq!(
                    bt.position,
                    Position {
                        epoch,
                        step: k as u64
                    }
                );
                assert_eq!(bt.labels.len() as u64, b);
                assert_eq!(bt.images.len(), b as usize * 36);
                for (&id, &l) in bt.samples.iter().zip(&bt.labels) {
                    assert!(id < total);
                    assert!(seen.insert(id), "sample {id} twice in epoch {epoch}");
                    assert!((0..5).contains(&l));
                }
            }
            orders.push(s.epoch_samples(epoch));
        }
        assert_eq!(seen.len() as u64, total - dropped, "epoch {epoch}");
    }
    // Epochs reshuffle.
    assert_ne!(orders[0], orders[streams.len()]);
}

#[test]
fn two_ranks_strided_cover_each_sample_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_data(dir.path(), 23);
    let streams: Vec<BatchStream> = (0..2)
        .map(|r| BatchStream::from_file_list(&list, cfg(r, 2, 4)).unwrap())
        .collect();
    assert_eq!(streams[0].steps_per_epoch(), 2); // 23 / 8
    assert_eq!(streams[0].dropped_per_epoch(), 7);
    check_coverage(&streams, 23, 3);
}

#[test]
fn two_ranks_own_parts_cover_each_sample_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_data(dir.path(), 23);
    let out = dir.path().join("split");
    shuffle_split(
        &[list],
        &out,
        &ShuffleSplitOptions {
            parts: 2,
            seed: 1,
            remainder: Remainder::Drop,
            progress: false,
            check: None,
        },
    )
    .unwrap();
    let list = out.join("file_list.txt");
    let streams: Vec<BatchStream> = (0..2)
        .map(|r| BatchStream::from_file_list(&list, cfg(r, 2, 3)).unwrap())
        .collect();
    // 11 lines per part (1 dropped by the split): 3 batches of 3, 2 per rank left over.
    assert_eq!(streams[0].steps_per_epoch(), 3);
    assert_eq!(streams[0].dropped_per_epoch(), 4);
    check_coverage(&streams, 22, 3);
    // Labels match the lines the sample ids name.
    let parts = read_file_list(&list).unwrap();
    let src = Base64Source::open(&parts).unwrap();
    let bt = streams[1].batch_at(Position { epoch: 0, step: 1 }).unwrap();
    for (&id, &l) in bt.samples.iter().zip(&bt.labels) {
        assert_eq!(src.get(id as usize).unwrap().1, l);
    }
}

#[test]
fn deterministic_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_data(dir.path(), 23);
    let a = BatchStream::from_file_list(&list, cfg(1, 2, 4)).unwrap();
    let b = BatchStream::from_file_list(&list, cfg(1, 2, 4)).unwrap();
    let run_a: Vec<_> = a
        .iter(Position::default(), Some(3))
        .map(Result::unwrap)
        .collect();
    let run_b: Vec<_> = b
        .iter(Position::default(), Some(3))
        .map(Result::unwrap)
        .collect();
    assert_eq!(run_a, run_b);
    assert_eq!(run_a.len(), 6);
    // Resume at (epoch 1, step 1): exactly the tail of the full run.
    let resumed: Vec<_> = b
        .iter(Position { epoch: 1, step: 1 }, Some(3))
        .map(Result::unwrap)
        .collect();
    assert_eq!(resumed.as_slice(), &run_a[3..]);
    // A position past the epoch's end rolls over.
    assert_eq!(
        a.batch_at(Position { epoch: 0, step: 3 }).unwrap(),
        run_a[3]
    );
    // Another seed gives other batches.
    let mut c = cfg(1, 2, 4);
    c.seed = 43;
    let other = BatchStream::from_file_list(&list, c).unwrap();
    assert_ne!(
        other.batch_at(Position::default()).unwrap().samples,
        run_a[0].samples
    );
    // Flips happen for some samples and not others (seeded, per sample and epoch).
    let src = Base64Source::open(&read_file_list(&list).unwrap()).unwrap();
    let mut flipped = 0;
    let mut plain = 0;
    for bt in &run_a {
        for (j, &id) in bt.samples.iter().enumerate() {
            let (bytes, _) = src.get(id as usize).unwrap();
            let mut straight = vec![0f32; 36];
            decode_into(&bytes, &a.config().spec, false, &mut straight).unwrap();
            let got = &bt.images[j * 36..(j + 1) * 36];
            if got == straight.as_slice() {
                plain += 1;
            } else {
                let mut f = vec![0f32; 36];
                decode_into(&bytes, &a.config().spec, true, &mut f).unwrap();
                assert_eq!(got, f.as_slice());
                flipped += 1;
            }
        }
    }
    assert!(flipped > 0 && plain > 0, "flipped {flipped}, plain {plain}");
}

#[test]
fn decode_normalises_flips_resizes_and_converts() {
    let spec = ImageSpec {
        height: 2,
        width: 3,
        channels: 1,
        ..ImageSpec::default()
    };
    let img = common::pgm(3, 2, |x, y| {
        let _ = y;
        [0u8, 128, 255][x as usize]
    });
    let mut out = vec![0f32; 6];
    decode_into(&img, &spec, false, &mut out).unwrap();
    let n = |v: f32| (v - 127.5) / 128.0;
    assert_eq!(
        out,
        [n(0.0), n(128.0), n(255.0), n(0.0), n(128.0), n(255.0)]
    );
    decode_into(&img, &spec, true, &mut out).unwrap();
    assert_eq!(
        out,
        [n(255.0), n(128.0), n(0.0), n(255.0), n(128.0), n(0.0)]
    );

    // RGB PNG into 3 channels, custom mean/std, CHW order.
    let spec3 = ImageSpec {
        height: 1,
        width: 2,
        channels: 3,
        mean: [0.0, 10.0, 20.0],
        std: [1.0, 2.0, 4.0],
        ..ImageSpec::default()
    };
    let png = common::png_rgb(2, 1, |x, _| [x as u8 * 100, 50, 60]);
    let mut o3 = vec![0f32; 6];
    decode_into(&png, &spec3, false, &mut o3).unwrap();
    assert_eq!(o3, [0.0, 100.0, 20.0, 20.0, 10.0, 10.0]);
    // Grayscale into 3 channels replicates; RGB into 1 channel converts.
    let mut g3 = vec![0f32; 6];
    decode_into(
        &common::pgm(2, 1, |x, _| x as u8 * 200),
        &spec3,
        false,
        &mut g3,
    )
    .unwrap();
    assert_eq!(g3, [0.0, 200.0, -5.0, 95.0, -5.0, 45.0]);
    // Resize: a constant 8x8 image into 4x4 stays constant.
    let spec4 = ImageSpec {
        height: 4,
        width: 4,
        channels: 1,
        ..ImageSpec::default()
    };
    let mut o4 = vec![0f32; 16];
    decode_into(&common::pgm(8, 8, |_, _| 200), &spec4, false, &mut o4).unwrap();
    assert!(o4.iter().all(|&v| (v - n(200.0)).abs() < 1e-6));
    assert!(decode_into(b"nope", &spec4, false, &mut o4).is_err());
}

#[test]
fn bad_sample_errors_or_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..8 {
        if i == 5 {
            text.push_str(&format!("{}\t1\n", encode_base64(b"not an image")));
        } else {
            let img = common::pgm(6, 6, |_, _| i as u8);
            text.push_str(&format!("{}\t{}\n", encode_base64(&img), i % 5));
        }
    }
    std::fs::write(dir.path().join("p.txt"), text).unwrap();
    let src: Arc<dyn SampleSource> =
        Arc::new(Base64Source::open(&[dir.path().join("p.txt")]).unwrap());
    let s = BatchStream::from_source(src.clone(), cfg(0, 1, 8)).unwrap();
    let err = s.batch_at(Position::default()).unwrap_err().to_string();
    assert!(err.contains("p.txt:6"), "{err}");
    let mut c = cfg(0, 1, 8);
    c.skip_bad = true;
    let s = BatchStream::from_source(src, c).unwrap();
    let bt = s.batch_at(Position::default()).unwrap();
    assert_eq!(bt.replaced.len(), 1);
    assert!(bt.replaced[0].contains("p.txt:6"));
    assert!(!bt.samples.contains(&5));
    assert_eq!(s.replaced_total(), 1);
    // Too few samples for one global batch is a clear error.
    let src: Arc<dyn SampleSource> =
        Arc::new(Base64Source::open(&[dir.path().join("p.txt")]).unwrap());
    assert!(BatchStream::from_source(src, cfg(0, 2, 5)).is_err());
}
