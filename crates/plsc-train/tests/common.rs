//! A tiny linear backbone (no batch statistics) and synthetic batches for the loop's tests.

#![allow(dead_code)]

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use plsc_models::ModelError;
use plsc_train::{BatchIter, Entry, LocalBatch, TrainModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub type B = Autodiff<Flex>;

/// Side of the synthetic one-channel images.
pub const SIDE: usize = 4;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Embedding size of [`LinearNet`] in the loop tests.
pub const DIM: usize = 8;

/// The loop tests' settings: `dist_arcface` (m = 0.5, s = 16) over `classes`, `ranks` ranks
/// sharing a global batch of `global_batch`, `steps` steps at lr 0.1 (for that batch, no decay),
/// no verification, a log record every 5 steps.
pub fn small_entry(ranks: usize, global_batch: usize, classes: usize, steps: u64) -> Entry {
    Entry::new()
        .with_num_classes(classes)
        .with_embedding_size(DIM)
        .with_loss("dist_arcface")
        .with_margins(1.0, 0.5, 0.0, 16.0)
        .with_input_size(SIDE)
        .with_in_channels(1)
        .with_ranks(ranks)
        .with_train_batch_size(global_batch / ranks)
        .with_train_steps(steps)
        .with_lr(0.1)
        .with_lr_reference_batch(global_batch)
        .with_lr_steps(vec![])
        .with_log_period(5)
        .with_with_test(false)
        .with_sample_ratio(1.0)
}

/// `embedding = W * flatten(image) + b`.
#[derive(Module, Debug)]
pub struct LinearNet<B: Backend> {
    pub fc: Linear<B>,
}

impl<B: Backend> LinearNet<B> {
    pub fn new(inputs: usize, dim: usize, seed: u64, device: &B::Device) -> Self {
        // The backend's generator is process-wide and the tests of a binary run in parallel:
        // seed and draw every value under one lock, so a test's model does not depend on what
        // another test draws meanwhile (burn draws lazily, at a parameter's first read).
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, seed);
        let fc = LinearConfig::new(inputs, dim).init(device);
        let _ = (fc.weight.val(), fc.bias.as_ref().map(|b| b.val()));
        Self { fc }
    }

    fn run(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, h, w] = x.dims();
        self.fc.forward(x.reshape([n, c * h * w]))
    }

    /// Weight then bias values.
    pub fn values(&self) -> Vec<f32> {
        let mut v = self.fc.weight.val().into_data().to_vec::<f32>().unwrap();
        if let Some(b) = &self.fc.bias {
            v.extend(b.val().into_data().to_vec::<f32>().unwrap());
        }
        v
    }
}

impl<B: AutodiffBackend> TrainModel<B> for LinearNet<B> {
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.run(images)
    }
    fn embed_valid(
        inner: &LinearNet<B::InnerBackend>,
        images: Tensor<B::InnerBackend, 4>,
    ) -> Tensor<B::InnerBackend, 2> {
        inner.run(images)
    }
    fn replica(&self) -> Self {
        self.clone()
    }
    fn state_tensors(&self) -> Vec<plsc_models::NamedTensor> {
        let w = self.fc.weight.val();
        let [i, o] = w.dims();
        let mut out = vec![plsc_models::NamedTensor {
            name: "fc.weight".into(),
            shape: vec![i, o],
            kind: plsc_models::TensorKind::Param,
            values: w.into_data().to_vec::<f32>().unwrap(),
        }];
        if let Some(b) = &self.fc.bias {
            out.push(plsc_models::NamedTensor {
                name: "fc.bias".into(),
                shape: vec![o],
                kind: plsc_models::TensorKind::Param,
                values: b.val().into_data().to_vec::<f32>().unwrap(),
            });
        }
        out
    }
    fn load_state_tensors(
        self,
        tensors: &[plsc_models::NamedTensor],
        label: &str,
    ) -> Result<Self, ModelError> {
        let find = |name: &str| {
            tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| ModelError::InvalidConfig(format!("{label}: no tensor {name}")))
        };
        let w = find("fc.weight")?;
        let device = self.fc.weight.val().device();
        let [i, o] = self.fc.weight.val().dims();
        let weight = Tensor::<B, 2>::from_data(TensorData::new(w.values.clone(), [i, o]), &device);
        let mut fc = self.fc;
        fc.weight = fc.weight.map(|_| weight.require_grad());
        if let Some(bias) = fc.bias.take() {
            let b = find("fc.bias")?;
            let t = Tensor::<B, 1>::from_data(TensorData::new(b.values.clone(), [o]), &device);
            fc.bias = Some(bias.map(|_| t.require_grad()));
        }
        Ok(Self { fc })
    }
    fn save(&self, path: &Path) -> Result<(), ModelError> {
        let text = serde_json::to_string(&self.values()).unwrap();
        std::fs::write(path, text).map_err(|e| ModelError::InvalidConfig(e.to_string()))
    }
}

/// A global batch: `rows` images of `pixels` floats and their labels.
#[derive(Clone)]
pub struct GlobalBatch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
}

/// Images that are a class prototype plus noise (learnable), `steps` global batches.
pub fn synthetic(
    steps: usize,
    rows: usize,
    pixels: usize,
    classes: usize,
    noise: f32,
    seed: u64,
) -> Vec<GlobalBatch> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let protos: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..pixels).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    (0..steps)
        .map(|_| {
            let labels: Vec<i64> = (0..rows)
                .map(|_| rng.random_range(0..classes as i64))
                .collect();
            let images = labels
                .iter()
                .flat_map(|&l| {
                    protos[l as usize]
                        .iter()
                        .map(|&p| p + noise * rng.random_range(-1.0f32..1.0))
                        .collect::<Vec<_>>()
                })
                .collect();
            GlobalBatch { images, labels }
        })
        .collect()
}

/// Rank `rank`'s slice of each global batch (rows `[rank*b, (rank+1)*b)`).
pub fn rank_slices(batches: &[GlobalBatch], rank: usize, ranks: usize) -> BatchIter {
    let rows = batches[0].labels.len();
    let b = rows / ranks;
    let pixels = batches[0].images.len() / rows;
    let mine: Vec<LocalBatch> = batches
        .iter()
        .map(|g| LocalBatch {
            images: g.images[rank * b * pixels..(rank + 1) * b * pixels].to_vec(),
            labels: g.labels[rank * b..(rank + 1) * b].to_vec(),
        })
        .collect();
    Box::new(mine.into_iter().map(Ok))
}
