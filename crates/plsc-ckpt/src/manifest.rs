//! `manifest.json`: what a checkpoint holds and how to check it.
//!
//! The manifest is written last (see [`crate::save`]); a directory `step-<n>/` with a manifest
//! whose every listed file has the recorded size and sha256 is a complete checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use plsc_core::{ClassShard, HeadConfig, HeadStorage};
use serde::{Deserialize, Serialize};

use crate::error::{CkptError, Result, io_err};
use crate::tensor::TensorKind;

/// The `format` field of every manifest.
pub const FORMAT: &str = "plsc-ckpt";
/// The manifest version this crate writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a checkpoint directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the backbone state inside a checkpoint directory.
pub const BACKBONE_FILE: &str = "backbone.safetensors";
/// Prefix of a backbone momentum tensor's key in `backbone.safetensors`.
pub const MOMENTUM_PREFIX: &str = "momentum.";
/// Head tensor names inside `head.rank<r>.safetensors`.
pub const HEAD_WEIGHT: &str = "weight";
/// Momentum rows of the head shard.
pub const HEAD_MOMENTUM: &str = "momentum";
/// Bias of plain softmax.
pub const HEAD_BIAS: &str = "bias";
/// Momentum of the bias.
pub const HEAD_BIAS_MOMENTUM: &str = "bias_momentum";

/// File name of rank `rank`'s head shard.
pub fn head_file(rank: usize) -> String {
    format!("head.rank{rank}.safetensors")
}

/// The backbone's architecture and input, enough to rebuild it and feed it (`model.json` of an
/// export holds the same fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Registry name of the backbone (`iresnet50`, `mbf`, ...).
    pub architecture: String,
    /// Embedding size `D`.
    pub embedding_size: usize,
    /// Input height and width in pixels.
    pub input_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Per-channel mean subtracted from 0..255 pixel values.
    pub mean: Vec<f32>,
    /// Per-channel divisor applied after the mean.
    pub std: Vec<f32>,
    /// How an image of another size or aspect ratio becomes the input (`squash`, `pad`,
    /// `center-crop`); files written before the field existed read as `squash`, what was done
    /// then.
    #[serde(default)]
    pub resize: plsc_data::Resize,
}

impl ModelSpec {
    /// The face-recognition default input: 112x112 RGB, `(x - 127.5) / 128`, squashed to size.
    pub fn face(architecture: impl Into<String>, embedding_size: usize) -> Self {
        Self {
            architecture: architecture.into(),
            embedding_size,
            input_size: 112,
            in_channels: 3,
            mean: vec![127.5; 3],
            std: vec![128.0; 3],
            resize: plsc_data::Resize::Squash,
        }
    }

    /// Checks sizes and the normalisation (`path` names the file in errors).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |detail: String| CkptError::BadManifest {
            path: path.to_path_buf(),
            detail,
        };
        if self.architecture.is_empty() {
            return Err(bad("model architecture is empty".into()));
        }
        if self.embedding_size == 0 || self.input_size == 0 || self.in_channels == 0 {
            return Err(bad(format!(
                "model sizes must be > 0: embedding_size {}, input_size {}, in_channels {}",
                self.embedding_size, self.input_size, self.in_channels
            )));
        }
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Err(bad(format!(
                "normalisation needs as many means as stds (at least one): {} and {}",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(bad(format!(
                "normalisation std must be finite and > 0, got {s}"
            )));
        }
        Ok(())
    }
}

/// f64 written as the shortest decimal string that reads back to the same bits (`"0.1"`,
/// `"0.09970000000000001"`, `"inf"`): serde_json's default number parser is not exact beyond
/// 15 significant digits, and a resumed run needs the learning rate and loss scale bit for bit.
/// Plain JSON numbers are accepted on input.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Repr {
        Text(String),
        Number(f64),
    }

    impl Repr {
        pub(super) fn value<E: Error>(self) -> Result<f64, E> {
            match self {
                Repr::Text(t) => t
                    .trim()
                    .parse()
                    .map_err(|_| E::custom(format!("`{t}` is not a number"))),
                Repr::Number(n) => Ok(n),
            }
        }
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Repr::deserialize(d)?.value()
    }
}

/// [`exact_f64`] for the values of a map.
mod exact_f64_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, format!("{v:?}"))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        BTreeMap::<String, super::exact_f64::Repr>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| v.value().map(|v| (k, v)))
            .collect()
    }
}

/// Position in the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LrScheduleState {
    /// Schedule name as the trainer knows it (`cosine`, `step`, `poly`, ...).
    pub schedule: String,
    /// Base learning rate.
    #[serde(with = "exact_f64")]
    pub base_lr: f64,
    /// The learning rate of the next step.
    #[serde(with = "exact_f64")]
    pub current_lr: f64,
    /// Steps the schedule has advanced.
    pub step: u64,
    /// Any other numbers of the schedule (warm-up steps, total steps, decay points ...).
    #[serde(default, with = "exact_f64_map")]
    pub params: BTreeMap<String, f64>,
}

/// Dynamic loss scaling (mixed precision).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    /// The current scale.
    #[serde(with = "exact_f64")]
    pub scale: f64,
    /// Finite steps in a row since the last change (the growth counter).
    pub good_steps: u64,
    /// Non-finite steps in a row since the last change (the shrink counter).
    #[serde(default)]
    pub bad_steps: u64,
    /// Steps skipped so far (for the logs).
    #[serde(default)]
    pub skipped_total: u64,
}

/// Where the data stream continues: batch `step` of epoch `epoch` (plsc-data's `Position`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DataPosition {
    /// Epoch (0-based).
    pub epoch: u64,
    /// Next batch within the epoch (0-based).
    pub step: u64,
}

/// The run's seeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Seeds {
    /// The run's main seed.
    pub global: u64,
    /// Seed of the data shuffles and augmentation.
    pub data: u64,
    /// Seed of the head's initialisation and class sampling.
    pub head: u64,
    /// Any other named seeds.
    #[serde(default)]
    pub extra: BTreeMap<String, u64>,
}

/// Everything besides tensors that a resumed run needs to continue where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingState {
    /// Optimiser steps done (the `n` of `step-<n>/`).
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Learning-rate schedule position.
    pub lr: LrScheduleState,
    /// Loss scaler state (mixed precision only).
    #[serde(default)]
    pub loss_scale: Option<LossScaleState>,
    /// Data stream position.
    pub data: DataPosition,
    /// Seeds.
    pub seeds: Seeds,
    /// Anything else the trainer wants back (opaque to plsc-ckpt). JSON numbers with more than
    /// 15 significant digits may not read back bit for bit: store exact floats as strings.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// One rank's class range and its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The rank that wrote it.
    pub rank: usize,
    /// First class.
    pub start: usize,
    /// Number of classes.
    pub len: usize,
    /// File name inside the checkpoint directory.
    pub file: String,
}

/// Name, shape and role of one backbone tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Key in `backbone.safetensors` (momentum: `momentum.<param key>`).
    pub key: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Role.
    pub kind: TensorKind,
}

/// The backbone file and its tensors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackboneEntry {
    /// File name inside the checkpoint directory.
    pub file: String,
    /// Its tensors, in file order.
    pub tensors: Vec<TensorEntry>,
}

/// Size and sha256 of a file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this crate.
    pub format_version: u32,
    /// Class count `C`.
    pub num_classes: usize,
    /// Embedding size `D`.
    pub embedding_size: usize,
    /// Ranks of the run that wrote it (`N`).
    pub world_size: usize,
    /// The head's settings: loss and margins, sharding, sampling ratio, seed, optimiser, and
    /// `storage`, the type the head files store weight and momentum in (`f32`, `bf16`, `f16`;
    /// absent in older manifests, which read as `f32`).
    pub head: HeadConfig,
    /// The backbone's architecture and input (absent for head-only checkpoints).
    #[serde(default)]
    pub model: Option<ModelSpec>,
    /// Step, epoch, lr schedule, loss scale, data position, seeds.
    pub training: TrainingState,
    /// Class ranges in rank order: the balanced split of `C` over `N` for a sharded head, one
    /// range `[0, C)` for a replicated head.
    pub shards: Vec<ShardEntry>,
    /// The backbone file (absent for head-only checkpoints).
    #[serde(default)]
    pub backbone: Option<BackboneEntry>,
    /// Size and sha256 of every file of the checkpoint other than the manifest.
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// The class ranges a checkpoint of `head` written by `world_size` ranks holds.
    pub fn expected_shards(head: &HeadConfig, world_size: usize) -> Result<Vec<ClassShard>> {
        if head.loss.sharded {
            Ok(ClassShard::balanced_split(head.num_classes, world_size)?)
        } else {
            Ok(vec![ClassShard {
                rank: 0,
                start: 0,
                len: head.num_classes,
            }])
        }
    }

    /// Reads and validates `path`. A manifest written before the head's storage type existed
    /// (no `head.storage`) reads as f32, what every head was then.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(io_err(path))?;
        let json_err = |source| CkptError::Json {
            path: path.to_path_buf(),
            source,
        };
        let mut value: serde_json::Value = serde_json::from_slice(&text).map_err(json_err)?;
        if let Some(head) = value.get_mut("head").and_then(|h| h.as_object_mut()) {
            head.entry("storage")
                .or_insert_with(|| HeadStorage::F32.name().into());
        }
        let manifest: Self = serde_json::from_value(value).map_err(json_err)?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Checks the manifest against itself: version, sizes, shard ranges (the balanced split
    /// from plsc-core), file list.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |detail: String| CkptError::BadManifest {
            path: path.to_path_buf(),
            detail,
        };
        if self.format != FORMAT {
            return Err(bad(format!(
                "format is `{}`, expected `{FORMAT}`",
                self.format
            )));
        }
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} is not supported (this build reads 1..={FORMAT_VERSION})",
                self.format_version
            )));
        }
        if self.head.num_classes != self.num_classes
            || self.head.embedding_size != self.embedding_size
        {
            return Err(bad(format!(
                "head settings say {} classes x {} but the manifest says {} x {}",
                self.head.num_classes,
                self.head.embedding_size,
                self.num_classes,
                self.embedding_size
            )));
        }
        if self.world_size == 0 {
            return Err(bad("world_size is 0".into()));
        }
        let expected = Self::expected_shards(&self.head, self.world_size)?;
        let found: Vec<ClassShard> = self
            .shards
            .iter()
            .map(|s| ClassShard {
                rank: s.rank,
                start: s.start,
                len: s.len,
            })
            .collect();
        if found != expected {
            return Err(bad(format!(
                "shard ranges {:?} are not the split of {} classes over {} ranks {:?}",
                ranges(&found),
                self.num_classes,
                self.world_size,
                ranges(&expected)
            )));
        }
        for s in &self.shards {
            if !self.files.contains_key(&s.file) {
                return Err(bad(format!(
                    "shard file {} of rank {} has no checksum",
                    s.file, s.rank
                )));
            }
        }
        if let Some(b) = &self.backbone
            && !self.files.contains_key(&b.file)
        {
            return Err(bad(format!("backbone file {} has no checksum", b.file)));
        }
        if let Some(m) = &self.model {
            m.validate(path)?;
            if m.embedding_size != self.embedding_size {
                return Err(bad(format!(
                    "model embedding size {} differs from the head's {}",
                    m.embedding_size, self.embedding_size
                )));
            }
        }
        for name in self.files.keys() {
            if name.contains('/') || name.contains('\\') || name == ".." || name == MANIFEST_FILE {
                return Err(bad(format!("file name `{name}` is not allowed")));
            }
        }
        Ok(())
    }

    /// The optimiser step the checkpoint was taken at.
    pub fn step(&self) -> u64 {
        self.training.step
    }
}

fn ranges(shards: &[ClassShard]) -> Vec<(usize, usize)> {
    shards.iter().map(|s| (s.start, s.end())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_floats_read_back_bit_for_bit() {
        let values = [
            0.1 * (1.0 - 3.0 / 1000.0),
            1.0 / 3.0,
            f64::MIN_POSITIVE / 3.0,
            65536.0,
            f64::INFINITY,
            -0.0,
        ];
        for v in values {
            let state = LrScheduleState {
                schedule: "cosine".into(),
                base_lr: v,
                current_lr: v * 0.7,
                step: 3,
                params: [("x".to_string(), v / 7.0)].into(),
            };
            let text = serde_json::to_string(&state).unwrap();
            let back: LrScheduleState = serde_json::from_str(&text).unwrap();
            assert_eq!(back.base_lr.to_bits(), v.to_bits(), "{text}");
            assert_eq!(back.current_lr.to_bits(), (v * 0.7).to_bits(), "{text}");
            assert_eq!(back.params["x"].to_bits(), (v / 7.0).to_bits(), "{text}");
        }
        // Plain numbers are accepted too.
        let s: LossScaleState =
            serde_json::from_str(r#"{"scale": 1024, "good_steps": 2}"#).unwrap();
        assert_eq!(s.scale, 1024.0);
        assert!(
            serde_json::from_str::<LossScaleState>(r#"{"scale": "x", "good_steps": 2}"#).is_err()
        );
    }
}
