//! An arcface_torch model as PyTorch saved it, imported and served: the embeddings of the
//! committed images equal those PyTorch computed (crates/plsc-models/tests/fixtures/
//! arcface_torch, made by scripts/fixtures/make_arcface_torch_fixture.py) within 1e-4 of
//! their norm, from the `.pth` and from its safetensors twin; with PLSC's `/ 128` instead of
//! arcface_torch's `/ 127.5` they do not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use plsc_ckpt::{ImportOptions, PreprocessingSource};
use plsc_serve::{Client, RunningServer, ServeConfig, ServeModel};

/// The bound of the issue: the difference's norm over the reference's norm.
const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plsc-models/tests/fixtures/arcface_torch")
        .join(name)
}

/// PyTorch's embeddings, the image names, and the input size, from `embeddings.json`.
struct Reference {
    images: Vec<Vec<u8>>,
    embeddings: Vec<Vec<f64>>,
    architecture: String,
    input_size: usize,
}

fn reference() -> Reference {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("embeddings.json")).unwrap()).unwrap();
    let images = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| std::fs::read(fixture(n.as_str().unwrap())).unwrap())
        .collect();
    Reference {
        images,
        embeddings: serde_json::from_value(doc["embeddings"].clone()).unwrap(),
        architecture: doc["architecture"].as_str().unwrap().to_string(),
        input_size: doc["input_size"].as_u64().unwrap() as usize,
    }
}

/// ||got - want|| / ||want|| for each image.
fn relative_errors(got: &[Vec<f32>], want: &[Vec<f64>]) -> Vec<f64> {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            assert_eq!(g.len(), w.len());
            let diff: f64 = g
                .iter()
                .zip(w)
                .map(|(a, b)| (f64::from(*a) - b).powi(2))
                .sum();
            let norm: f64 = w.iter().map(|b| b * b).sum();
            (diff / norm).sqrt()
        })
        .collect()
}

/// Serves the model directory and asks for the embeddings of `images`.
fn serve_and_encode(dir: &Path, images: &[Vec<u8>]) -> Vec<Vec<f32>> {
    let model = ServeModel::load(dir).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = RunningServer::start(model, ServeConfig::default(), addr).unwrap();
    let client = Client::connect(server.local_addr().to_string()).unwrap();
    let embeddings = client.encode(images).unwrap();
    server.shutdown().unwrap();
    embeddings
}

fn import(src: &Path, out: &Path, r: &Reference) -> plsc_ckpt::Imported {
    let options = ImportOptions {
        input_size: r.input_size,
        ..ImportOptions::arcface_torch(r.architecture.clone())
    };
    plsc_ckpt::import(src, &options, out).unwrap()
}

#[test]
fn pth_and_its_safetensors_twin_serve_pytorchs_embeddings() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    for file in ["backbone.pth", "backbone.safetensors"] {
        let dir = tmp.path().join(file);
        let imported = import(&fixture(file), &dir, &r);
        assert_eq!(imported.spec.mean, [127.5; 3]);
        assert_eq!(imported.spec.std, [127.5; 3]);
        let exported = plsc_ckpt::load_exported(&dir).unwrap();
        assert_eq!(
            exported.preprocessing_source,
            PreprocessingSource::ArcfaceTorch
        );
        let errors = relative_errors(&serve_and_encode(&dir, &r.images), &r.embeddings);
        for (i, e) in errors.iter().enumerate() {
            assert!(*e < TOLERANCE, "{file} image {i}: relative error {e:e}");
        }
    }
}

#[test]
fn plsc_normalisation_would_fail_the_bound() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let options = ImportOptions {
        input_size: r.input_size,
        source: PreprocessingSource::Plsc,
        ..ImportOptions::arcface_torch(r.architecture.clone())
    };
    let imported = plsc_ckpt::import(&fixture("backbone.pth"), &options, &dir).unwrap();
    assert_eq!(imported.spec.std, [128.0; 3]);
    let errors = relative_errors(&serve_and_encode(&dir, &r.images), &r.embeddings);
    for (i, e) in errors.iter().enumerate() {
        assert!(
            *e > 10.0 * TOLERANCE,
            "image {i}: (x - 127.5) / 128 gives relative error {e:e}, within the bound"
        );
    }
}
