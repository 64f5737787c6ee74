//! `xtask eval --embeddings E.safetensors --issame I.json [--json]` on hand-made embeddings.

use std::process::Command;

/// 20 pairs (see plsc-eval's tests/metrics.rs, where the figures are worked by hand): same pairs
/// at squared distance 0.5055, different ones at 2.5055, a hard different pair in fold 4 (1.0055)
/// and a hard same pair in fold 9 (1.5055); rows alternate norms 2 and 4. Accuracy 0.9 +- 0.2,
/// TAR@FAR=1e-3 0.9 +- 0.3, FAR 0.1, XNorm 3.
fn write_inputs(dir: &std::path::Path, labels: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let pair_at = |d: f64| {
        let c = 1.0 - d / 2.0;
        let s = (1.0 - c * c).sqrt();
        [2.0, 0.0, (4.0 * c) as f32, (4.0 * s) as f32]
    };
    let mut rows = Vec::new();
    let mut issame = Vec::new();
    for f in 0..10 {
        rows.extend(pair_at(if f == 9 { 1.5055 } else { 0.5055 }));
        issame.push(true);
        rows.extend(pair_at(if f == 4 { 1.0055 } else { 2.5055 }));
        issame.push(false);
    }
    let e = dir.join("emb.safetensors");
    let i = dir.join("issame.json");
    plsc_eval::write_embeddings(&e, &rows, 2).unwrap();
    plsc_eval::write_issame(&i, &issame[..labels]).unwrap();
    (e, i)
}

fn xtask(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn eval_prints_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (e, i) = write_inputs(dir.path(), 20);
    let base = [
        "--embeddings".as_ref(),
        e.as_os_str(),
        "--issame".as_ref(),
        i.as_os_str(),
    ];

    let out = xtask(&base);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("20 pairs (10 genuine, 10 impostor), 10 folds"),
        "{text}"
    );
    assert!(text.contains("Accuracy: 0.90000+-0.20000"), "{text}");
    assert!(text.contains("TAR@FAR=1e-3: 0.90000+-0.30000"), "{text}");
    assert!(text.contains("XNorm: 3.0000"), "{text}");

    let mut args = base.to_vec();
    args.push("--json".as_ref());
    let out = xtask(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let num = |k: &str| {
        doc[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {doc}"))
    };
    // The run records' names (plsc_train::records::EvalRecord), as metrics.jsonl says them.
    assert!((num("accuracy") - 0.9).abs() < 1e-12);
    assert!((num("accuracy_std") - 0.2).abs() < 1e-12);
    assert!((num("tar") - 0.9).abs() < 1e-12);
    assert!((num("tar_std") - 0.3).abs() < 1e-12);
    assert_eq!(num("far"), 1e-3);
    assert!((num("far_mean") - 0.1).abs() < 1e-12);
    assert!((num("xnorm") - 3.0).abs() < 1e-6);
    assert!(num("auc") > 0.5 && num("auc") <= 1.0, "{doc}");
    for old in ["accuracy_mean", "tar_mean", "far_target"] {
        assert!(doc.get(old).is_none(), "{old} in {doc}");
    }
    assert_eq!(doc["pairs"], 20);
    assert_eq!(doc["roc"]["tpr"].as_array().unwrap().len(), 400);
    // The text form shows the same AUC.
    let auc_line = format!("AUC: {:.5}", num("auc"));
    assert!(text.contains(&auc_line), "{auc_line} not in {text}");
}

#[test]
fn eval_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let (e, i) = write_inputs(dir.path(), 19);
    let out = xtask(&[
        "--embeddings".as_ref(),
        e.as_os_str(),
        "--issame".as_ref(),
        i.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("emb.safetensors"), "{err}");
    assert!(err.contains("19 labels"), "{err}");
}

/// `--model DIR --bin a.bin,b.bin`: a seeded `iresnet_tiny` saved as a checkpoint and exported
/// with plsc-ckpt; the command's figures must equal those of the same model run in this process
/// through the library (so the export is loaded with every weight in place).
#[test]
fn eval_model_on_bin_files() {
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorData};
    use plsc_ckpt::{BackboneRef, CheckpointMeta, HeadShardRef, ModelSpec};
    use plsc_data::decode::ImageSpec;
    use plsc_eval::{EmbedderError, EvalOptions, PairSet};
    use plsc_models::{Backbone, BackboneConfig, NamedTensor};

    let dir = tempfile::tempdir().unwrap();
    let (dim, size) = (8usize, 28usize);
    let config = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(dim)
        .with_input_size(size);
    let device = Default::default();
    let model: Backbone<Flex> = config.init_seeded(3, &device).unwrap();

    // Checkpoint, then export.
    let tensors: Vec<NamedTensor> = model.state_tensors();
    let head_config = plsc_core::HeadConfig::new(4, dim);
    let head = plsc_core::ShardedHead::<f32>::new(head_config.clone(), 0, 1).unwrap();
    let mut spec = ModelSpec::face("iresnet_tiny", dim);
    spec.input_size = size;
    let meta = CheckpointMeta {
        head: head_config,
        world_size: 1,
        model: Some(spec),
        training: Default::default(),
    };
    let ckpt_dir = plsc_ckpt::save(
        &dir.path().join("run"),
        &meta,
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &[],
        }),
        &[HeadShardRef::from_head(&head)],
        Default::default(),
    )
    .unwrap();
    let export_dir = dir.path().join("model");
    plsc_ckpt::export(
        &plsc_ckpt::Checkpoint::open(&ckpt_dir).unwrap(),
        &export_dir,
    )
    .unwrap();

    // Two pair sets of synthetic 28x28 images, 20 pairs each.
    let opts = plsc_data::synth::SynthOptions {
        size: size as u32,
        ..Default::default()
    };
    let images: Vec<Vec<u8>> = (0..60u64)
        .map(|i| plsc_data::synth::synth_image(&opts, i / 6, i % 6).unwrap())
        .collect();
    let labels: Vec<u32> = (0..60).map(|i| i / 6).collect();
    let mut bins = Vec::new();
    for (name, seed) in [("set_a", 1u64), ("set_b", 2)] {
        let pairs =
            plsc_data::pairs::sample_pairs(&labels, 20, seed, std::path::Path::new("synth"))
                .unwrap();
        let bin =
            plsc_data::pairs::gather_images(&pairs, |i| Ok(images[i].clone()), false).unwrap();
        let path = dir.path().join(format!("{name}.bin"));
        plsc_eval::write_bin(&path, &bin.images, &bin.issame).unwrap();
        bins.push(path);
    }
    let bin_arg = format!("{},{}", bins[0].display(), bins[1].display());

    let out = xtask(&[
        "--model".as_ref(),
        export_dir.as_os_str(),
        "--bin".as_ref(),
        bin_arg.as_ref(),
        "--batch-size".as_ref(),
        "16".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets = doc.as_array().unwrap();
    assert_eq!(sets.len(), 2);

    // The same model, in process.
    let mut embed = |x: &[f32], shape: [usize; 4]| -> Result<Vec<f32>, EmbedderError> {
        let t = Tensor::<Flex, 4>::from_data(TensorData::new(x.to_vec(), shape), &device);
        Ok(model.forward(t).into_data().into_vec::<f32>().unwrap())
    };
    let options = EvalOptions {
        batch_size: 16,
        ..EvalOptions::default()
    };
    let image = ImageSpec {
        height: size as u32,
        width: size as u32,
        ..ImageSpec::default()
    };
    for (path, got) in bins.iter().zip(sets) {
        let set = PairSet::load(path, &image).unwrap();
        let want = plsc_eval::verify_pair_set(&set, &mut embed, &options).unwrap();
        assert_eq!(got["set"], set.name.as_str());
        assert_eq!(got["pairs"], 20);
        // The CPU backend's threaded kernels may sum in another order in another process:
        // the embeddings agree to f32 rounding, not bit for bit.
        let xnorm = got["xnorm"].as_f64().unwrap();
        assert!(
            (xnorm - want.xnorm).abs() < 1e-6 * want.xnorm,
            "{xnorm} vs {}",
            want.xnorm
        );
        assert!(want.xnorm > 0.0);
        assert_eq!(
            got["accuracy"].as_f64().unwrap(),
            want.metrics.accuracy_mean
        );
        assert_eq!(got["tar"].as_f64().unwrap(), want.metrics.tar_mean);
    }

    // --model without --bin, and both input kinds at once, are refused by the parser.
    let out = xtask(&["--model".as_ref(), export_dir.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bin"));
}
