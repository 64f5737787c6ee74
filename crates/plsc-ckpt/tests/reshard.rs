//! Save at N = 4 ranks, load at M = 3 and M = 1: every row bit for bit, and the head's loss
//! and gradients for a fixed batch equal the original's.

mod common;

use common::*;
use plsc_ckpt::{
    BackboneRef, Checkpoint, CkptError, HeadShardRef, SaveOptions, latest_valid,
    latest_valid_shared, reshard, save, save_rank,
};
use plsc_comm::{Communicator, run_ranks};
use plsc_core::{HeadConfig, ShardedHead, WeightUpdate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const GLOBAL_BATCH: usize = 12;

/// Loss, feature gradients (global row order) and weight / bias gradients (class order) of
/// one gradient-mode step over `heads.len()` rank threads.
struct StepResult {
    loss: f64,
    grad_features: Vec<f32>,
    grad_weight: Vec<f32>,
    grad_bias: Vec<f32>,
}

fn batch(dim: usize, classes: usize) -> (Vec<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let x = (0..GLOBAL_BATCH * dim)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let y = (0..GLOBAL_BATCH)
        .map(|_| rng.random_range(0..classes as i64))
        .collect();
    (x, y)
}

/// Runs the step on rank threads; each rank builds its head with `make(rank, world)`.
fn step_all<F>(config: &HeadConfig, world: usize, make: F) -> StepResult
where
    F: Fn(usize, usize) -> Result<ShardedHead<f32>, CkptError> + Sync,
{
    let d = config.embedding_size;
    let (x, y) = batch(d, config.num_classes);
    let per = GLOBAL_BATCH / world;
    let results = run_ranks(world, |comm| {
        let r = comm.rank();
        let mut head = make(r, world)?;
        let mut gw = vec![0.0f32; head.weight().len()];
        let mut gb = head.bias().map(|b| vec![0.0f32; b.len()]);
        let out = head.step(
            &comm,
            &x[r * per * d..(r + 1) * per * d],
            &y[r * per..(r + 1) * per],
            3,
            WeightUpdate::Gradient {
                weight: &mut gw,
                bias: gb.as_deref_mut(),
            },
        )?;
        Ok::<_, CkptError>((out.loss, out.grad_features, gw, gb.unwrap_or_default()))
    });
    let mut res = StepResult {
        loss: 0.0,
        grad_features: Vec::new(),
        grad_weight: Vec::new(),
        grad_bias: Vec::new(),
    };
    for (r, out) in results.into_iter().enumerate() {
        let (loss, gx, gw, gb) = out.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        res.loss = loss;
        res.grad_features.extend(gx);
        res.grad_weight.extend(gw);
        res.grad_bias.extend(gb);
    }
    res
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    let mut nonzero = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} vs {w} (max |value| {scale})"
        );
        nonzero += usize::from(*w != 0.0);
    }
    assert!(
        nonzero > 0,
        "{what}: all zero, the comparison would be empty"
    );
}

/// Saves `heads` (N ranks) through the per-rank API; returns the committed directory.
fn save_per_rank(
    root: &std::path::Path,
    config: &HeadConfig,
    heads: &[ShardedHead<f32>],
    step: u64,
) -> std::path::PathBuf {
    let (tensors, momentum) = backbone(1);
    let meta = meta(config, heads.len(), step, true);
    let dirs = run_ranks(heads.len(), |comm| {
        let r = comm.rank();
        let bb = BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        };
        save_rank(
            &comm,
            root,
            &meta,
            (r == 0).then_some(bb),
            HeadShardRef::from_head(&heads[r]),
            SaveOptions::default(),
        )
    });
    let dirs: Vec<_> = dirs.into_iter().map(|d| d.expect("save_rank")).collect();
    assert!(dirs.iter().all(|d| d == &dirs[0]));
    dirs[0].clone()
}

fn check_reload(config: &HeadConfig) {
    let tmp = tempfile::tempdir().unwrap();
    let heads = random_heads(config, 4, 1);
    let dir = save_per_rank(tmp.path(), config, &heads, 40);
    let ckpt = Checkpoint::open(&dir).unwrap();
    ckpt.verify().unwrap();
    let original = concat_rows(&heads);
    let reference = step_all(config, 4, |r, _| {
        let mut h = ShardedHead::new(config.clone(), r, 4)?;
        let s = HeadShardRef::from_head(&heads[r]);
        h.set_weight(s.weight.clone(), s.bias.map(<[f32]>::to_vec))?;
        Ok(h)
    });
    assert!(reference.loss.is_finite() && reference.loss > 0.0);

    for m in [3usize, 1] {
        // Rows: bit for bit, in the balanced split for M.
        let mut loaded: [Vec<f32>; 4] = Default::default();
        for r in 0..m {
            let rows = ckpt.load_head_shard(m, r).unwrap();
            let want = plsc_core::ClassShard::for_rank(config.num_classes, m, r).unwrap();
            assert_eq!(rows.shard, want);
            loaded[0].extend(rows.weight.to_vec_f32());
            loaded[1].extend(rows.momentum.to_vec_f32());
            loaded[2].extend(rows.bias.unwrap_or_default());
            loaded[3].extend(rows.bias_momentum.unwrap_or_default());
        }
        for (k, name) in ["weight", "momentum", "bias", "bias momentum"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                bits(&loaded[k]),
                bits(&original[k]),
                "M = {m}: {name} rows differ"
            );
        }
        // Loss and gradients of heads built from the loaded shards.
        let got = step_all(config, m, |r, world| {
            let mut h = ShardedHead::new(config.clone(), r, world)?;
            ckpt.load_into_head(&mut h, true)?;
            Ok(h)
        });
        assert!(
            (got.loss - reference.loss).abs() <= 1e-6 * reference.loss.abs().max(1.0),
            "M = {m}: loss {} vs {}",
            got.loss,
            reference.loss
        );
        assert_close(
            "grad features",
            &got.grad_features,
            &reference.grad_features,
            1e-6,
        );
        assert_close(
            "grad weight",
            &got.grad_weight,
            &reference.grad_weight,
            1e-6,
        );
        if config.loss.kind == plsc_core::LossKind::Softmax {
            assert_close("grad bias", &got.grad_bias, &reference.grad_bias, 1e-6);
        }
    }

    // The backbone and the training state come back as saved.
    let (tensors, momentum) = backbone(1);
    let b = ckpt.load_backbone().unwrap();
    assert_eq!(b.tensors, tensors);
    assert_eq!(b.momentum, momentum);
    assert_eq!(ckpt.manifest().training, meta(config, 4, 40, true).training);
    assert_eq!(ckpt.manifest().world_size, 4);
    assert_eq!(ckpt.manifest().head.loss, config.loss);
}

#[test]
fn arcface_saved_at_4_loads_at_3_and_1() {
    check_reload(&arcface(103, 16));
}

#[test]
fn softmax_with_bias_saved_at_4_loads_at_3_and_1() {
    check_reload(&softmax(50, 8));
}

#[test]
fn offline_reshard_is_exact_and_round_trips_to_identical_files() {
    let config = arcface(103, 16);
    let tmp = tempfile::tempdir().unwrap();
    let heads = random_heads(&config, 4, 2);
    let src_dir = save_per_rank(&tmp.path().join("a"), &config, &heads, 8);
    let src = Checkpoint::open(&src_dir).unwrap();

    let dir3 = reshard(&src, 3, &tmp.path().join("b")).unwrap();
    let c3 = Checkpoint::open(&dir3).unwrap();
    c3.verify().unwrap();
    assert_eq!(c3.manifest().world_size, 3);
    assert_eq!(c3.manifest().shards.len(), 3);
    assert_eq!(c3.manifest().training, src.manifest().training);
    assert_eq!(c3.load_backbone().unwrap(), src.load_backbone().unwrap());
    let original = concat_rows(&heads);
    let mut rows3 = Vec::new();
    for r in 0..3 {
        let s = &c3.manifest().shards[r];
        let rows = c3.load_head_range(r, s.start, s.len).unwrap();
        rows3.extend(rows.weight.to_vec_f32());
    }
    assert_eq!(bits(&rows3), bits(&original[0]));

    // 4 -> 3 -> 4 gives the original files byte for byte (same sha256).
    let dir4 = reshard(&c3, 4, &tmp.path().join("c")).unwrap();
    let c4 = Checkpoint::open(&dir4).unwrap();
    assert_eq!(c4.manifest().files, src.manifest().files);

    // Writing into the source's own root is refused.
    assert!(matches!(
        reshard(&src, 2, &tmp.path().join("a")),
        Err(CkptError::Invalid { .. })
    ));
}

#[test]
fn single_process_save_matches_per_rank_save() {
    let config = arcface(37, 4);
    let tmp = tempfile::tempdir().unwrap();
    let heads = random_heads(&config, 3, 3);
    let a = save_per_rank(&tmp.path().join("a"), &config, &heads, 5);
    let (tensors, momentum) = backbone(1);
    let shards: Vec<_> = heads.iter().map(HeadShardRef::from_head).collect();
    let b = save(
        &tmp.path().join("b"),
        &meta(&config, 3, 5, true),
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        }),
        &shards,
        SaveOptions::default(),
    )
    .unwrap();
    let (ma, mb) = (
        Checkpoint::open(&a).unwrap().manifest().files.clone(),
        Checkpoint::open(&b).unwrap().manifest().files.clone(),
    );
    assert_eq!(ma, mb);
}

#[test]
fn replicated_head_is_saved_once_and_loads_whole_on_any_rank_count() {
    let mut config = arcface(20, 4);
    config.loss.sharded = false;
    let tmp = tempfile::tempdir().unwrap();
    let heads = random_heads(&config, 2, 4);
    let dir = save_per_rank(tmp.path(), &config, &heads, 1);
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.manifest().shards.len(), 1);
    assert_eq!(ckpt.manifest().files.len(), 2, "backbone and one head file");
    for world in [1, 3] {
        let rows = ckpt.load_head_shard(world, world - 1).unwrap();
        assert_eq!(
            bits(&rows.weight.to_vec_f32()),
            bits(&heads[0].weight().to_vec())
        );
        assert_eq!(
            bits(&rows.momentum.to_vec_f32()),
            bits(&heads[0].velocity().to_vec())
        );
    }
}

#[test]
fn latest_valid_shared_agrees_on_every_rank() {
    let config = arcface(10, 4);
    let tmp = tempfile::tempdir().unwrap();
    for step in [1, 2] {
        save_per_rank(tmp.path(), &config, &random_heads(&config, 2, step), step);
    }
    let direct = latest_valid(tmp.path()).unwrap().unwrap();
    assert_eq!(direct.step(), 2);
    let steps = run_ranks(3, |comm| {
        let c = latest_valid_shared(&comm, tmp.path())?;
        Ok::<_, CkptError>(c.map(|c| c.step()))
    });
    for s in steps {
        assert_eq!(s.unwrap(), Some(2));
    }
    let empty = tempfile::tempdir().unwrap();
    let none = run_ranks(2, |comm| {
        latest_valid_shared(&comm, empty.path()).map(|c| c.is_none())
    });
    assert!(none.into_iter().all(|n| n.unwrap()));
}

/// Names under `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn reshard_into_its_own_source_is_refused_and_writes_nothing() {
    let config = arcface(20, 4);
    let tmp = tempfile::tempdir().unwrap();
    let heads = random_heads(&config, 2, 5);
    let src_dir = save_per_rank(&tmp.path().join("a"), &config, &heads, 20);
    let src = Checkpoint::open(&src_dir).unwrap();
    let before = names(&src_dir);

    // The checkpoint itself, a new folder inside it, and the same through `..` and a link.
    std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(&src_dir, tmp.path().join("link")).unwrap();
    for out in [
        src_dir.clone(),
        src_dir.join("new/deeper"),
        tmp.path().join("elsewhere/../a/step-000000020"),
        tmp.path().join("link/inner"),
    ] {
        match reshard(&src, 3, &out) {
            Err(CkptError::Invalid { what, detail }) => {
                assert_eq!(what, "reshard output");
                assert!(detail.contains("source checkpoint"), "{detail}");
            }
            other => panic!("{}: {other:?}", out.display()),
        }
    }
    assert_eq!(names(&src_dir), before, "nothing written into the source");
}

#[test]
fn reshard_never_prunes_or_replaces_checkpoints_of_the_output_root() {
    let config = arcface(20, 4);
    let tmp = tempfile::tempdir().unwrap();
    let heads = random_heads(&config, 2, 6);
    let src = Checkpoint::open(&save_per_rank(&tmp.path().join("a"), &config, &heads, 3)).unwrap();
    // A root holding ten newer checkpoints (and a trace of someone's interrupted save).
    let out = tmp.path().join("out");
    let (tensors, momentum) = backbone(1);
    let shards: Vec<_> = heads.iter().map(HeadShardRef::from_head).collect();
    for step in 10..20 {
        let bb = BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        };
        let m = meta(&config, 2, step, true);
        save(&out, &m, Some(bb), &shards, SaveOptions { keep_last: 0 }).unwrap();
    }
    std::fs::create_dir(out.join(".tmp-step-000000021")).unwrap();
    let before = names(&out);
    assert_eq!(before.len(), 11);

    let dir = reshard(&src, 3, &out).unwrap();
    assert_eq!(dir, out.join("step-000000003"));
    let mut expected = before.clone();
    expected.push("step-000000003".into());
    expected.sort();
    assert_eq!(
        names(&out),
        expected,
        "all ten kept, the trace kept, one added"
    );

    // The same step again is refused, the existing one untouched.
    let sha = |d: &std::path::Path| std::fs::read(d.join("manifest.json")).unwrap();
    let kept = sha(&dir);
    match reshard(&src, 4, &out) {
        Err(CkptError::Invalid { detail, .. }) => {
            assert!(detail.contains("already exists"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sha(&dir), kept);
    assert_eq!(names(&out), expected);
}
