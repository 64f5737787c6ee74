//! Entry settings: TOML and JSON round trips, file loading and named errors.

use std::path::Path;

use plsc_train::{Entry, LossScaleConfig, LrPolicy, TrainError};

fn custom() -> Entry {
    Entry::new()
        .with_num_classes(93_431)
        .with_embedding_size(256)
        .with_loss("dist_cosface")
        .with_margins(1.0, 0.0, 0.4, 32.0)
        .with_model("iresnet100")
        .with_train_batch_size(96)
        .with_train_steps(12_345)
        .with_lr(0.2)
        .with_lr_policy(LrPolicy::Poly)
        .with_lr_steps(vec![10, 20, 30])
        .with_warmup_epochs(1.5)
        .with_dataset_dir(Path::new("/data/ms1m"))
        .with_train_image_num(5_822_653)
        .with_val_targets(vec!["lfw".into(), "agedb_30".into()])
        .with_checkpoint_dir(Path::new("/ckpt/ms1m"))
        .with_test_period(2000)
        .with_log_period(50)
        .with_calc_acc(true)
        .with_mixed_precision(true)
        .with_loss_scale(LossScaleConfig {
            init_loss_scaling: 65536.0,
            incr_every_n_steps: 500,
            decr_every_n_nan_or_inf: 1,
            incr_ratio: 2.0,
            decr_ratio: 0.25,
        })
        .with_sample_ratio(0.1)
        .with_seed(42)
        .with_ranks(4)
}

#[test]
fn toml_and_json_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let e = custom();
    e.validate().unwrap();
    for name in ["run.toml", "run.json"] {
        let path = dir.path().join(name);
        e.save(&path).unwrap();
        let back = Entry::from_file(&path).unwrap();
        assert_eq!(back, e, "{name}");
    }
    let text = std::fs::read_to_string(dir.path().join("run.toml")).unwrap();
    assert!(text.contains("loss = \"dist_cosface\""), "{text}");
}

#[test]
fn missing_keys_take_the_defaults_and_the_loss_gets_its_margins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.toml");
    std::fs::write(&path, "num_classes = 10\nloss = \"dist_arcface\"\nscale = 30.0\nranks = 2\ntrain_batch_size = 64\n").unwrap();
    let e = Entry::from_file(&path).unwrap();
    assert_eq!(e.num_classes, 10);
    assert_eq!(e.embedding_size, Entry::default().embedding_size);
    let loss = e.loss_config().unwrap();
    assert!(loss.sharded);
    let m = loss.margin().unwrap();
    assert_eq!((m.m1, m.m2, m.m3, m.scale), (1.0, 0.5, 0.0, 30.0));
    // lr = 0.1 * (2 * 64) / 512.
    assert!((e.scaled_lr() - 0.025).abs() < 1e-15);
}

#[test]
fn bad_files_and_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "num_clases = 10\n").unwrap();
    let err = Entry::from_file(&path).unwrap_err();
    assert!(matches!(err, TrainError::ConfigFile { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("bad.toml") && msg.contains("num_clases"),
        "{msg}"
    );

    let err = Entry::new().with_loss("dist_bogus").validate().unwrap_err();
    assert!(
        matches!(err, TrainError::Config { name: "loss", .. }),
        "{err}"
    );
    let err = Entry::new()
        .with_loss("arcface")
        .with_sample_ratio(0.5)
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Config {
                name: "sample_ratio",
                ..
            }
        ),
        "{err}"
    );
    let err = Entry::new()
        .with_loss("softmax")
        .with_margins(1.0, 0.5, 0.0, 64.0)
        .validate()
        .unwrap_err();
    assert!(matches!(err, TrainError::Config { .. }), "{err}");
}

#[test]
fn a_missing_default_verification_set_says_it_is_a_default_and_how_to_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = Entry::new().with_dataset_dir(dir.path());
    assert!(e.uses_default_val_targets());
    let Err(err) = plsc_train::val_sets::load_val_sets(&e) else {
        panic!("no lfw.bin here, yet it loaded")
    };
    let text = err.to_string();
    for part in [
        "setting `val_targets`",
        &format!("{:?}", Entry::default_val_targets()),
        "default targets",
        "val_targets = []",
        &dir.path().join("lfw.bin").display().to_string(),
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }

    // Sets named in the settings: the plain error naming the file, no word about defaults.
    let e = e.with_val_targets(vec!["mine".into()]);
    let Err(err) = plsc_train::val_sets::load_val_sets(&e) else {
        panic!("no mine.bin here, yet it loaded")
    };
    let text = err.to_string();
    assert!(
        text.contains("mine.bin") && !text.contains("default"),
        "{text}"
    );

    // No verification sets: nothing to load.
    let e = e.with_val_targets(vec![]);
    assert!(plsc_train::val_sets::load_val_sets(&e).unwrap().is_empty());
}
