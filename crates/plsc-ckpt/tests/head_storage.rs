//! Head storage types in checkpoints: f32, bf16 and f16 rows are saved in their own dtype and
//! come back bit for bit (through a save, and through resharding 2 -> 3 -> 2); another storage
//! on resume is a named error; conversion happens only on request (`reshard_as`) and rounds to
//! the nearest value, ties to even, checked against a brute-force reference.

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::*;
use plsc_ckpt::{
    BackboneRef, Checkpoint, CkptError, HeadShardRef, SaveOptions, reshard, reshard_as, save,
};
use plsc_core::{HeadConfig, HeadStorage, RowStore, ShardedHead, WeightUpdate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: usize = 11;
const DIM: usize = 6;

/// Random bit patterns of `n` values of `storage` (NaNs, infinities, subnormals and signed
/// zeros included), so that every bit is checked.
fn random_rows(storage: HeadStorage, n: usize, seed: u64) -> RowStore<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bytes: Vec<u8> = (0..n * storage.bytes()).map(|_| rng.random()).collect();
    RowStore::from_raw_bytes_le(storage, &bytes).unwrap()
}

/// The heads of `world` ranks of `config`, with random bits in weight and momentum (and
/// random f32 bias and bias momentum for softmax).
fn heads_of(config: &HeadConfig, world: usize, seed: u64) -> Vec<ShardedHead<f32>> {
    (0..world)
        .map(|r| {
            let mut h = ShardedHead::<f32>::new(config.clone(), r, world).unwrap();
            let (n, len) = (h.weight().len(), h.shard().len);
            let s = seed * 100 + r as u64;
            let bias = h.bias().map(|_| values(len, s + 1));
            h.set_weight(random_rows(config.storage, n, s + 2), bias)
                .unwrap();
            let bv = h.bias().map(|_| values(len, s + 3));
            h.set_velocity(random_rows(config.storage, n, s + 4), bv)
                .unwrap();
            h
        })
        .collect()
}

fn save_heads(root: &Path, config: &HeadConfig, heads: &[ShardedHead<f32>]) -> Checkpoint {
    let (tensors, momentum) = backbone(1);
    let shards: Vec<HeadShardRef> = heads.iter().map(HeadShardRef::from_head).collect();
    let dir = save(
        root,
        &meta(config, heads.len(), 7, true),
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        }),
        &shards,
        SaveOptions::default(),
    )
    .unwrap();
    Checkpoint::open(&dir).unwrap()
}

/// Weight and momentum of every class, as stored bits, in class order.
fn stored_bits(heads: &[ShardedHead<f32>]) -> [Vec<u8>; 2] {
    let mut out: [Vec<u8>; 2] = Default::default();
    for h in heads {
        out[0].extend_from_slice(&h.weight().raw_bytes_le());
        out[1].extend_from_slice(&h.velocity().raw_bytes_le());
    }
    out
}

/// The same, read from every class of a checkpoint.
fn loaded_bits(ckpt: &Checkpoint) -> [Vec<u8>; 2] {
    let rows = ckpt.load_head_range(0, 0, CLASSES).unwrap();
    [
        rows.weight.raw_bytes_le().into_owned(),
        rows.momentum.raw_bytes_le().into_owned(),
    ]
}

fn configs(storage: HeadStorage) -> [HeadConfig; 2] {
    [
        arcface(CLASSES, DIM).with_storage(storage),
        softmax(CLASSES, DIM).with_storage(storage),
    ]
}

#[test]
fn every_storage_round_trips_bit_for_bit_through_a_checkpoint() {
    for storage in HeadStorage::ALL {
        for config in configs(storage) {
            let tmp = tempfile::tempdir().unwrap();
            let heads = heads_of(&config, 2, 3);
            let ckpt = save_heads(tmp.path(), &config, &heads);
            ckpt.verify().unwrap();
            assert_eq!(ckpt.manifest().head.storage, storage);
            let text = std::fs::read_to_string(ckpt.dir().join("manifest.json")).unwrap();
            assert!(
                text.contains(&format!("\"storage\": \"{storage}\"")),
                "{text}"
            );
            for (r, head) in heads.iter().enumerate() {
                // The file holds weight and momentum in the storage's own dtype.
                let file = ckpt.dir().join(format!("head.rank{r}.safetensors"));
                let bytes = std::fs::read(&file).unwrap();
                let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
                for name in ["weight", "momentum"] {
                    let t = st.tensor(name).unwrap();
                    let want = match storage {
                        HeadStorage::F32 => safetensors::Dtype::F32,
                        HeadStorage::Bf16 => safetensors::Dtype::BF16,
                        HeadStorage::F16 => safetensors::Dtype::F16,
                    };
                    assert_eq!(t.dtype(), want, "{storage} {name}");
                    assert_eq!(t.data().len(), head.weight().len() * storage.bytes());
                }
                if let Some(b) = head.bias() {
                    assert_eq!(st.tensor("bias").unwrap().dtype(), safetensors::Dtype::F32);
                    assert_eq!(st.tensor("bias").unwrap().data().len(), b.len() * 4);
                }

                // Loaded rows and a head loaded from them are the saved bits.
                let rows = ckpt.load_head_shard(2, r).unwrap();
                assert_eq!(rows.weight.storage(), storage);
                assert_eq!(rows.weight.raw_bytes_le(), head.weight().raw_bytes_le());
                assert_eq!(rows.momentum.raw_bytes_le(), head.velocity().raw_bytes_le());
                let mut fresh = ShardedHead::<f32>::new(config.clone(), r, 2).unwrap();
                ckpt.load_into_head(&mut fresh, true).unwrap();
                assert_eq!(fresh.weight().raw_bytes_le(), head.weight().raw_bytes_le());
                assert_eq!(
                    fresh.velocity().raw_bytes_le(),
                    head.velocity().raw_bytes_le()
                );
                assert_eq!(
                    fresh.bias().map(bits),
                    head.bias().map(bits),
                    "{storage} bias"
                );
                assert_eq!(
                    fresh.bias_velocity().map(bits),
                    head.bias_velocity().map(bits)
                );
            }
        }
    }
}

#[test]
fn every_storage_reshards_2_to_3_and_back_bit_for_bit() {
    for storage in HeadStorage::ALL {
        for config in configs(storage) {
            let tmp = tempfile::tempdir().unwrap();
            let heads = heads_of(&config, 2, 4);
            let src = save_heads(&tmp.path().join("src"), &config, &heads);
            let three =
                Checkpoint::open(&reshard(&src, 3, &tmp.path().join("a")).unwrap()).unwrap();
            three.verify().unwrap();
            assert_eq!(three.manifest().head.storage, storage);
            assert_eq!(three.manifest().world_size, 3);
            assert_eq!(
                loaded_bits(&three),
                stored_bits(&heads),
                "{storage} at 3 ranks"
            );
            let mut bias = Vec::new();
            for r in 0..3 {
                bias.extend(
                    three
                        .load_head_shard(3, r)
                        .unwrap()
                        .bias
                        .unwrap_or_default(),
                );
            }
            assert_eq!(bits(&bias), bits(&concat_rows(&heads)[2]));

            // Back to 2 ranks: the very files of the source, byte for byte.
            let two =
                Checkpoint::open(&reshard(&three, 2, &tmp.path().join("b")).unwrap()).unwrap();
            for r in 0..2 {
                let name = format!("head.rank{r}.safetensors");
                assert_eq!(
                    std::fs::read(two.dir().join(&name)).unwrap(),
                    std::fs::read(src.dir().join(&name)).unwrap(),
                    "{storage}: {name} after 2 -> 3 -> 2"
                );
            }
        }
    }
}

#[test]
fn resuming_with_another_storage_is_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let saved = arcface(CLASSES, DIM).with_storage(HeadStorage::Bf16);
    let ckpt = save_heads(tmp.path(), &saved, &heads_of(&saved, 2, 5));
    let run = arcface(CLASSES, DIM);
    let mut head = ShardedHead::<f32>::new(run.clone(), 0, 2).unwrap();
    let before = head.weight().raw_bytes_le().into_owned();
    let err = ckpt.load_into_head(&mut head, true).unwrap_err();
    match &err {
        CkptError::StorageMismatch {
            checkpoint, run, ..
        } => assert_eq!((*checkpoint, *run), (HeadStorage::Bf16, HeadStorage::F32)),
        other => panic!("expected StorageMismatch, got {other:?}"),
    }
    let text = err.to_string();
    for part in [
        "bf16 in the checkpoint",
        "head_storage is f32",
        "head_storage = \"bf16\"",
        "--head-storage f32",
        "xtask reshard",
    ] {
        assert!(text.contains(part), "`{part}` not in: {text}");
    }
    assert_eq!(*head.weight().raw_bytes_le(), *before, "nothing was loaded");

    // Rows of another storage do not go into a head either.
    let rows = ckpt.load_head_shard(2, 0).unwrap();
    let err = rows.apply_to(&mut head, true).unwrap_err();
    assert!(matches!(err, CkptError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("bf16"), "{err}");
}

/// The value of `storage` nearest to `x`, ties to the even bit pattern, by searching every
/// finite value of the same sign (a reference independent of the conversion code).
fn nearest(storage: HeadStorage, x: f32) -> Vec<u8> {
    let decode = |bits: u16| -> f64 {
        match storage {
            HeadStorage::Bf16 => f64::from(f32::from_bits(u32::from(bits) << 16)),
            HeadStorage::F16 => {
                let (e, m) = (i32::from(bits >> 10) & 0x1f, f64::from(bits & 0x3ff));
                if e == 0 {
                    m * 2f64.powi(-24)
                } else {
                    (1024.0 + m) * 2f64.powi(e - 25)
                }
            }
            HeadStorage::F32 => unreachable!(),
        }
    };
    let max_finite: u16 = match storage {
        HeadStorage::Bf16 => 0x7f7f,
        _ => 0x7bff,
    };
    let target = f64::from(x).abs();
    let mut best = 0u16;
    for b in 0..=max_finite {
        let (d, db) = ((decode(b) - target).abs(), (decode(best) - target).abs());
        if d < db || (d == db && b % 2 == 0 && best % 2 == 1) {
            best = b;
        }
    }
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    (best | sign).to_le_bytes().to_vec()
}

#[test]
fn conversion_on_request_rounds_to_nearest_even() {
    let config = softmax(CLASSES, DIM);
    // Finite values (with subnormals and signed zeros): every one fits f16's range.
    let mut heads = random_heads(&config, 2, 6);
    // Ties: halfway between two bf16 values (1 + 2^-8 lies between 1 and 1 + 2^-7) and two f16
    // values (1 + 2^-11 between 1 and 1 + 2^-10), both ways to even; and f16 subnormals.
    let ties = [
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        -(1.0 + 2f32.powi(-11)),
        1.0 + 3.0 * 2f32.powi(-11),
        3.0e-6,
        -7.5e-8,
        -0.0,
    ];
    for h in &mut heads {
        let mut w = values(h.weight().len(), 8);
        w[..ties.len()].copy_from_slice(&ties);
        let bias = h.bias().map(<[f32]>::to_vec);
        h.set_weight(RowStore::Full(w), bias).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = save_heads(&tmp.path().join("src"), &config, &heads);
    let original = concat_rows(&heads);
    for to in [HeadStorage::Bf16, HeadStorage::F16] {
        let out = tmp.path().join(to.name());
        let conv = Checkpoint::open(&reshard_as(&src, 3, to, &out).unwrap()).unwrap();
        conv.verify().unwrap();
        assert_eq!(conv.manifest().head.storage, to);
        let got = loaded_bits(&conv);
        for (t, name) in [(0, "weight"), (1, "momentum")] {
            let want: Vec<u8> = original[t].iter().flat_map(|&x| nearest(to, x)).collect();
            assert_eq!(got[t], want, "{name} to {to}");
        }
        // Bias and its momentum stay f32, unchanged.
        let mut bias = Vec::new();
        for r in 0..3 {
            bias.extend(conv.load_head_shard(3, r).unwrap().bias.unwrap());
        }
        assert_eq!(bits(&bias), bits(&original[2]));

        // Back to f32 is exact: the 16-bit values themselves.
        let back = reshard_as(
            &conv,
            2,
            HeadStorage::F32,
            &tmp.path().join("back").join(to.name()),
        )
        .unwrap();
        let back = Checkpoint::open(&back).unwrap();
        let rows = back.load_head_range(0, 0, CLASSES).unwrap();
        assert_eq!(rows.weight.storage(), HeadStorage::F32);
        let half = RowStore::<f32>::from_raw_bytes_le(to, &got[0]).unwrap();
        assert_eq!(bits(&rows.weight.to_vec_f32()), bits(&half.to_vec_f32()));
    }
    // Without a request, resharding keeps the storage.
    let kept = Checkpoint::open(&reshard(&src, 3, &tmp.path().join("kept")).unwrap()).unwrap();
    assert_eq!(kept.manifest().head.storage, HeadStorage::F32);
}

#[test]
fn a_value_f16_cannot_hold_is_an_error_and_leaves_nothing() {
    let config = arcface(CLASSES, DIM);
    let mut heads = random_heads(&config, 2, 7);
    // Class 8 is rank 1's third class (rank 1 holds 6..11); column 2.
    let mut w = values(heads[1].weight().len(), 9);
    w[2 * DIM + 2] = 1.0e5;
    heads[1].set_weight(RowStore::Full(w), None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = save_heads(&tmp.path().join("src"), &config, &heads);
    let out = tmp.path().join("out");
    let err = reshard_as(&src, 3, HeadStorage::F16, &out).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("class 8 column 2") && text.contains("100000") && text.contains("f16"),
        "{text}"
    );
    assert!(!out.exists(), "a failed reshard leaves nothing behind");
    // bf16 has f32's range.
    reshard_as(&src, 3, HeadStorage::Bf16, &out).unwrap();
}

#[test]
fn manifests_without_a_storage_read_as_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let config = arcface(CLASSES, DIM);
    let heads = heads_of(&config, 2, 10);
    let ckpt = save_heads(tmp.path(), &config, &heads);
    let path = ckpt.dir().join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        m["head"]
            .as_object_mut()
            .unwrap()
            .remove("storage")
            .is_some()
    );
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let old = Checkpoint::open(ckpt.dir()).unwrap();
    old.verify().unwrap();
    assert_eq!(old.manifest().head.storage, HeadStorage::F32);
    assert_eq!(loaded_bits(&old), stored_bits(&heads));
}

/// `steps` SGD steps `from..from + steps` of `heads` on rank threads (a fixed batch per step,
/// from the step number), sampling half the classes.
fn train(heads: Vec<ShardedHead<f32>>, from: u64, steps: u64) -> Vec<ShardedHead<f32>> {
    use plsc_comm::Communicator;
    let world = heads.len();
    let slots: Vec<_> = heads.into_iter().map(|h| Mutex::new(Some(h))).collect();
    let per = 4;
    plsc_comm::run_ranks(world, |comm| {
        let r = comm.rank();
        let mut head = slots[r].lock().unwrap().take().unwrap();
        for step in from..from + steps {
            let mut rng = ChaCha8Rng::seed_from_u64(step);
            let x: Vec<f32> = (0..world * per * DIM)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let y: Vec<i64> = (0..world * per)
                .map(|_| rng.random_range(0..CLASSES as i64))
                .collect();
            head.step(
                &comm,
                &x[r * per * DIM..(r + 1) * per * DIM],
                &y[r * per..(r + 1) * per],
                step,
                WeightUpdate::Sgd { lr: 0.5 },
            )?;
        }
        Ok::<_, CkptError>(head)
    })
    .into_iter()
    .map(|h| h.unwrap())
    .collect()
}

#[test]
fn a_16_bit_head_resumed_from_a_checkpoint_ends_in_the_same_bits() {
    for storage in [HeadStorage::Bf16, HeadStorage::F16] {
        let config = arcface(CLASSES, DIM)
            .with_storage(storage)
            .with_sample_ratio(0.5);
        let fresh = || {
            (0..2)
                .map(|r| ShardedHead::<f32>::new(config.clone(), r, 2).unwrap())
                .collect::<Vec<_>>()
        };
        let whole = train(fresh(), 0, 6);

        // 3 steps, a checkpoint, new heads loaded from it, 3 more steps.
        let tmp = tempfile::tempdir().unwrap();
        let first = train(fresh(), 0, 3);
        let ckpt = save_heads(tmp.path(), &config, &first);
        drop(first);
        let mut resumed = fresh();
        for h in &mut resumed {
            ckpt.load_into_head(h, true).unwrap();
        }
        let resumed = train(resumed, 3, 3);
        assert_eq!(stored_bits(&resumed), stored_bits(&whole), "{storage}");
        // The run moved the rows (the comparison is not of two initial states).
        assert_ne!(stored_bits(&whole), stored_bits(&fresh()), "{storage}");
    }
}
