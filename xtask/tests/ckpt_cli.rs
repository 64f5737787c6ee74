//! `xtask reshard` and `xtask export` on a small checkpoint written by plsc-ckpt.

use std::path::Path;
use std::process::Command;

use plsc_ckpt::{
    BackboneRef, Checkpoint, CheckpointMeta, HeadShardRef, ModelSpec, SaveOptions, TrainingState,
    latest_valid, load_exported,
};
use plsc_core::{HeadConfig, ShardedHead};
use plsc_models::{NamedTensor, TensorKind};

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

fn write_checkpoint(root: &Path) -> (HeadConfig, Vec<ShardedHead<f32>>, Vec<NamedTensor>) {
    let config = HeadConfig::new(30, 8).with_seed(3);
    let heads: Vec<ShardedHead<f32>> = (0..4)
        .map(|r| {
            let mut h = ShardedHead::<f32>::new(config.clone(), r, 4).unwrap();
            let m: Vec<f32> = (0..h.weight().len())
                .map(|i| (r * 1000 + i) as f32 * 0.5)
                .collect();
            h.set_velocity(plsc_core::RowStore::Full(m), None).unwrap();
            h
        })
        .collect();
    let tensors = vec![
        NamedTensor::new(
            "conv1.weight",
            vec![2, 3],
            TensorKind::Param,
            vec![1., 2., 3., 4., 5., 6.],
        ),
        NamedTensor::new(
            "bn1.running_var",
            vec![2],
            TensorKind::Buffer,
            vec![0.5, 0.25],
        ),
    ];
    let momentum = vec![NamedTensor::new(
        "conv1.weight",
        vec![2, 3],
        TensorKind::Momentum,
        vec![0.1; 6],
    )];
    let shards: Vec<_> = heads.iter().map(HeadShardRef::from_head).collect();
    plsc_ckpt::save(
        root,
        &CheckpointMeta {
            head: config.clone(),
            world_size: 4,
            model: Some(ModelSpec::face("iresnet_tiny", 8)),
            training: TrainingState {
                step: 12,
                ..TrainingState::default()
            },
        },
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        }),
        &shards,
        SaveOptions::default(),
    )
    .unwrap();
    (config, heads, tensors)
}

#[test]
fn reshard_and_export_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let (config, heads, tensors) = write_checkpoint(&root);

    // Reshard the root's newest checkpoint to 3 ranks.
    let out = tmp.path().join("run3");
    let o = xtask(&[
        "reshard",
        "--ckpt",
        root.to_str().unwrap(),
        "--ranks",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("from 4 to 3 ranks"));
    let c3 = latest_valid(&out).unwrap().expect("a resharded checkpoint");
    assert_eq!((c3.step(), c3.manifest().world_size), (12, 3));
    let mut w = Vec::new();
    let mut m = Vec::new();
    for r in 0..3 {
        let mut h = ShardedHead::<f32>::new(config.clone(), r, 3).unwrap();
        c3.load_into_head(&mut h, true).unwrap();
        w.extend(h.weight().to_vec());
        m.extend(h.velocity().to_vec());
    }
    let want_w: Vec<f32> = heads.iter().flat_map(|h| h.weight().to_vec()).collect();
    let want_m: Vec<f32> = heads.iter().flat_map(|h| h.velocity().to_vec()).collect();
    assert_eq!(w, want_w);
    assert_eq!(m, want_m);

    // More ranks than classes is refused with plsc-core's message.
    let o = xtask(&[
        "reshard",
        "--ckpt",
        root.to_str().unwrap(),
        "--ranks",
        "31",
        "--out",
        tmp.path().join("bad").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot split 30 classes over 31 ranks"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Converting the head's storage happens only with --head-storage (round to nearest).
    let out16 = tmp.path().join("run-bf16");
    let o = xtask(&[
        "reshard",
        "--ckpt",
        root.to_str().unwrap(),
        "--ranks",
        "2",
        "--head-storage",
        "bf16",
        "--out",
        out16.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("converted from f32 to bf16"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let c16 = latest_valid(&out16)
        .unwrap()
        .expect("a converted checkpoint");
    assert_eq!(c16.manifest().head.storage, plsc_core::HeadStorage::Bf16);
    let rows = c16.load_head_range(0, 0, 30).unwrap();
    let rounded = plsc_core::RowStore::from_f32_rounded(plsc_core::HeadStorage::Bf16, &want_m);
    assert_eq!(rows.momentum.raw_bytes_le(), rounded.raw_bytes_le());
    assert_eq!(
        c3.manifest().head.storage,
        plsc_core::HeadStorage::F32,
        "kept without the flag"
    );
    let o = xtask(&[
        "reshard",
        "--ckpt",
        root.to_str().unwrap(),
        "--ranks",
        "2",
        "--head-storage",
        "f64",
        "--out",
        tmp.path().join("bad64").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("expected f32, bf16 or f16"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Export the step directory.
    let step_dir = Checkpoint::open_dir_or_latest(&root)
        .unwrap()
        .dir()
        .to_path_buf();
    let model_dir = tmp.path().join("model");
    let o = xtask(&[
        "export",
        "--ckpt",
        step_dir.to_str().unwrap(),
        "--out",
        model_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = load_exported(&model_dir).unwrap();
    assert_eq!(model.spec, ModelSpec::face("iresnet_tiny", 8));
    assert_eq!(model.tensors, tensors);
    assert_eq!(model.source_step, 12);
}

#[test]
fn reshard_refuses_its_own_source_and_export_says_what_it_did_not_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    write_checkpoint(&root);
    let step = root.join("step-000000012");
    let before: Vec<_> = std::fs::read_dir(&step).unwrap().collect();

    // --out the source checkpoint itself: refused, nothing written inside it.
    let o = xtask(&[
        "reshard",
        "--ckpt",
        step.to_str().unwrap(),
        "--ranks",
        "3",
        "--out",
        step.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("is or lies inside the source checkpoint"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&step).unwrap().count(), before.len());

    // Export of a step directory whose head shard is corrupt: it succeeds (it reads only the
    // backbone) and says which files it did not verify.
    let shard = step.join("head.rank2.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let o = xtask(&[
        "export",
        "--ckpt",
        step.to_str().unwrap(),
        "--out",
        tmp.path().join("model").to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("not verified (export reads only the backbone): 4 file(s)")
            && out.contains(&shard.display().to_string()),
        "{out}"
    );
}
