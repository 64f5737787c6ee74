//! One image pipeline and one model loader: the server's embedding path, `eval --model`'s and
//! verification during training give bit-identical embeddings for the same image files.
//!
//! A small backbone, freshly built (no training needed), is exported with plsc-ckpt's
//! `export_tensors` (through `plsc_serve::write_model_dir`). Two image files of another size
//! and aspect ratio than the model input (so the resize policy runs) go
//! - to a running server (`POST /v1/encode`, raw embeddings), which loads the export;
//! - through `eval --model`'s calls: `ServeModel::load` of the export, `PairSet::load` of a `.bin`
//!   holding the two files with the model's input spec, and the flip test's plain pass;
//! - through verification during training: the run's verification sets
//!   (`val_sets::load_val_sets`), the model with the export's tensors as a training model
//!   (`TrainModel::load_state_tensors`) and the trainer's embedder (`ValidEmbedder`) with its
//!   options (`verify_options`).
//!
//! Every path embeds the two images in one batch of two, so the same kernels see the same
//! inputs: any difference in decoding, resizing, normalisation, channel order or loaded
//! weights shows up as a differing bit.

use std::io::Cursor;

use burn::backend::{Autodiff, Flex};
use image::{DynamicImage, ImageFormat, RgbImage};
use plsc_eval::{EmbedderError, EvalOptions, PairSet, embed_with_flip};
use plsc_models::{Backbone, BackboneConfig};
use plsc_serve::{Client, EncodeOptions, RunningServer, ServeConfig, ServeModel};
use plsc_train::trainer::{ValidEmbedder, verify_options};
use plsc_train::{Entry, TrainModel};

const SIZE: usize = 28;
const DIM: usize = 8;

/// An encoded `w x h` RGB image with a pattern that survives resizing.
fn image(w: u32, h: u32, seed: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + seed * 31) % 256) as u8,
            ((y * 11 + seed * 17) % 256) as u8,
            ((x * y + seed) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn server_eval_and_training_verification_embed_identically() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let backbone: Backbone<Flex> = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(DIM)
        .with_input_size(SIZE)
        .init_seeded(11, &Default::default())
        .unwrap();
    // The training normalisation, (x - 127.5) / 128, as a run's export records it.
    plsc_serve::write_model_dir(
        &backbone,
        "iresnet_tiny",
        vec![127.5; 3],
        vec![128.0; 3],
        0,
        &model_dir,
    )
    .unwrap();

    // Two files: a wide PNG and a tall JPEG, neither of the model's size.
    let files = vec![
        image(40, 30, 1, ImageFormat::Png),
        image(20, 36, 2, ImageFormat::Jpeg),
    ];
    let bin = dir.path().join("pairs.bin");
    plsc_eval::write_bin(&bin, &files, &[true]).unwrap();

    // 1. The server.
    let server = RunningServer::start(
        ServeModel::load(&model_dir).unwrap(),
        ServeConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let client = Client::connect(server.local_addr().to_string()).unwrap();
    let served: Vec<f32> = client
        .encode_with(&files, EncodeOptions::default())
        .unwrap()
        .concat();
    server.shutdown().unwrap();
    assert_eq!(served.len(), 2 * DIM);

    // 2. `eval --model`: the server's loader and forward pass, plsc-eval's pair set decoded by
    // plsc-data with the model's input spec.
    let model = ServeModel::load(&model_dir).unwrap();
    let set = PairSet::load(&bin, model.image_spec()).unwrap();
    let mut embed = |images: &[f32], shape: [usize; 4]| -> Result<Vec<f32>, EmbedderError> {
        Ok(model.embed(images.to_vec(), shape[0])?)
    };
    let evaluated = embed_with_flip(&set, &mut embed, &EvalOptions::default())
        .unwrap()
        .plain;

    // 3. Verification during training: the run's sets and the trainer's embedder.
    let entry = Entry {
        model: "iresnet_tiny".into(),
        embedding_size: DIM,
        input_size: SIZE,
        in_channels: 3,
        with_test: true,
        val_targets: vec!["pairs".into()],
        val_dir: Some(dir.path().to_path_buf()),
        ..Entry::default()
    };
    let sets = plsc_train::val_sets::load_val_sets(&entry).unwrap();
    assert_eq!(sets.len(), 1);
    let device = Default::default();
    let exported = plsc_ckpt::load_exported(&model_dir).unwrap();
    let trained: Backbone<Autodiff<Flex>> = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(DIM)
        .with_input_size(SIZE)
        .init_seeded(99, &device)
        .unwrap()
        .load_state_tensors(&exported.tensors, "export")
        .unwrap();
    let inner = burn::module::AutodiffModule::valid(&trained);
    let mut embedder = ValidEmbedder::<Autodiff<Flex>, Backbone<Autodiff<Flex>>> {
        inner: &inner,
        device: &device,
    };
    let verified = embed_with_flip(&sets[0].1, &mut embedder, &verify_options(&entry))
        .unwrap()
        .plain;

    assert!(served.iter().all(|v| v.is_finite()) && served.iter().any(|v| *v != 0.0));
    assert_eq!(
        bits(&evaluated),
        bits(&served),
        "eval --model vs the server"
    );
    assert_eq!(
        bits(&verified),
        bits(&served),
        "training verification vs the server"
    );
}
