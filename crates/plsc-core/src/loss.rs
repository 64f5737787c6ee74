//! The loss settings shared by the API, the command line, config files and checkpoint manifests.
//!
//! Names: `softmax`, `arcface`, `cosface`, `sphereface`, `combined`; a `dist_` prefix
//! (PLSC's `dist_softmax`, `dist_arcface`) selects the class-sharded (model-parallel) head, the
//! plain name the replicated head, as in PLSC. The `sharded` switch can also be set directly.

use crate::error::HeadError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The combined margin `cos(m1 * theta + m2) - m3` at the target, with scale `s`.
///
/// Every non-target logit is `s * cos(theta_j)`; the target logit is `s * psi(cos theta_y)` with
/// `psi(c) = cos(m1 * acos(c) + m2) - m3` (see [`crate::margin::Margin`] for the guard where
/// `m1 * theta + m2` passes pi).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MarginParams {
    /// Multiplicative angular margin (SphereFace).
    pub m1: f64,
    /// Additive angular margin (ArcFace).
    pub m2: f64,
    /// Additive cosine margin (CosFace).
    pub m3: f64,
    /// Logit scale `s`.
    pub scale: f64,
    /// InsightFace's `easy_margin`: apply the margin only where `cos > 0`.
    #[serde(default)]
    pub easy_margin: bool,
    /// Partial FC's inter-class filtering: non-target cosines above this threshold are set to 0
    /// (and get no gradient). `None` turns it off.
    #[serde(default)]
    pub interclass_filter: Option<f64>,
}

impl MarginParams {
    /// ArcFace: (1, 0.5, 0), s = 64.
    pub fn arcface() -> Self {
        Self::new(1.0, 0.5, 0.0, 64.0)
    }
    /// CosFace: (1, 0, 0.35), s = 64.
    pub fn cosface() -> Self {
        Self::new(1.0, 0.0, 0.35, 64.0)
    }
    /// SphereFace: (1.35, 0, 0), s = 64.
    pub fn sphereface() -> Self {
        Self::new(1.35, 0.0, 0.0, 64.0)
    }
    /// Any user triple and scale.
    pub fn new(m1: f64, m2: f64, m3: f64, scale: f64) -> Self {
        Self {
            m1,
            m2,
            m3,
            scale,
            easy_margin: false,
            interclass_filter: None,
        }
    }
    /// Checks the ranges: `m1 > 0`, `0 <= m2 < pi`, `m3 >= 0`, `scale > 0`, all finite.
    pub fn validate(&self) -> Result<(), HeadError> {
        let bad = |name, detail: String| Err(HeadError::Config { name, detail });
        if !(self.m1.is_finite() && self.m1 > 0.0) {
            return bad(
                "m1",
                format!("must be a finite number > 0, got {}", self.m1),
            );
        }
        if !(self.m2.is_finite() && (0.0..std::f64::consts::PI).contains(&self.m2)) {
            return bad("m2", format!("must be in [0, pi), got {}", self.m2));
        }
        if !(self.m3.is_finite() && self.m3 >= 0.0) {
            return bad(
                "m3",
                format!("must be a finite number >= 0, got {}", self.m3),
            );
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return bad(
                "scale",
                format!("must be a finite number > 0, got {}", self.scale),
            );
        }
        if let Some(t) = self.interclass_filter
            && !(t.is_finite() && (-1.0..=1.0).contains(&t))
        {
            return bad("interclass_filter", format!("must be in [-1, 1], got {t}"));
        }
        Ok(())
    }
}

/// Which loss the head computes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LossKind {
    /// Plain softmax: a linear layer with bias, no normalisation, `z = x W^T + b`.
    Softmax,
    /// Normalised cosine logits with the combined margin.
    Margin(MarginParams),
}

/// A loss and whether the head is class-sharded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub kind: LossKind,
    /// `true`: each rank owns a class shard (model parallel, PLSC's `dist_*`); `false`: every rank
    /// holds the whole weight and its gradient is summed across ranks like the backbone's.
    pub sharded: bool,
}

impl LossConfig {
    /// The sharded ArcFace head (PLSC's `dist_arcface`), the default.
    pub fn dist_arcface() -> Self {
        Self {
            kind: LossKind::Margin(MarginParams::arcface()),
            sharded: true,
        }
    }
    /// Checks the margin parameters.
    pub fn validate(&self) -> Result<(), HeadError> {
        match &self.kind {
            LossKind::Softmax => Ok(()),
            LossKind::Margin(m) => m.validate(),
        }
    }
    /// The margin parameters, if this is a margin loss.
    pub fn margin(&self) -> Option<&MarginParams> {
        match &self.kind {
            LossKind::Margin(m) => Some(m),
            LossKind::Softmax => None,
        }
    }
    /// The canonical name (`dist_arcface`, `cosface`, `combined`, ...).
    pub fn name(&self) -> String {
        let base = match &self.kind {
            LossKind::Softmax => "softmax",
            LossKind::Margin(m)
                if *m
                    == MarginParams {
                        ..MarginParams::arcface()
                    } =>
            {
                "arcface"
            }
            LossKind::Margin(m)
                if *m
                    == MarginParams {
                        ..MarginParams::cosface()
                    } =>
            {
                "cosface"
            }
            LossKind::Margin(m)
                if *m
                    == MarginParams {
                        ..MarginParams::sphereface()
                    } =>
            {
                "sphereface"
            }
            LossKind::Margin(_) => "combined",
        };
        if self.sharded {
            format!("dist_{base}")
        } else {
            base.to_string()
        }
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        Self::dist_arcface()
    }
}

impl FromStr for LossConfig {
    type Err = HeadError;

    /// Parses a loss name. `combined` starts from ArcFace's (1, 0.5, 0, s = 64); set the
    /// margins after parsing.
    fn from_str(name: &str) -> Result<Self, HeadError> {
        let lower = name.trim().to_ascii_lowercase();
        let (sharded, base) = match lower.strip_prefix("dist_") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let kind = match base {
            "softmax" => LossKind::Softmax,
            "arcface" | "combined" => LossKind::Margin(MarginParams::arcface()),
            "cosface" => LossKind::Margin(MarginParams::cosface()),
            "sphereface" => LossKind::Margin(MarginParams::sphereface()),
            _ => return Err(HeadError::UnknownLoss(name.to_string())),
        };
        Ok(Self { kind, sharded })
    }
}

impl fmt::Display for LossConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse() {
        let d: LossConfig = "dist_arcface".parse().unwrap();
        assert!(d.sharded);
        assert_eq!(d.margin().unwrap().m2, 0.5);
        let s: LossConfig = "softmax".parse().unwrap();
        assert!(!s.sharded);
        assert_eq!(s.kind, LossKind::Softmax);
        assert_eq!(
            "dist_softmax".parse::<LossConfig>().unwrap().name(),
            "dist_softmax"
        );
        assert_eq!(
            "CosFace"
                .parse::<LossConfig>()
                .unwrap()
                .margin()
                .unwrap()
                .m3,
            0.35
        );
        assert_eq!(
            "sphereface"
                .parse::<LossConfig>()
                .unwrap()
                .margin()
                .unwrap()
                .m1,
            1.35
        );
        assert!(matches!(
            "focal".parse::<LossConfig>(),
            Err(HeadError::UnknownLoss(_))
        ));
    }

    #[test]
    fn names_round_trip_and_serde_round_trips() {
        for name in [
            "softmax",
            "dist_softmax",
            "arcface",
            "dist_arcface",
            "cosface",
            "dist_sphereface",
        ] {
            let cfg: LossConfig = name.parse().unwrap();
            assert_eq!(cfg.name(), name);
        }
        let mut cfg = LossConfig::dist_arcface();
        if let LossKind::Margin(m) = &mut cfg.kind {
            m.m3 = 0.1;
        }
        assert_eq!(cfg.name(), "dist_combined");
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<LossConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn bad_margins_are_rejected() {
        assert!(MarginParams::new(1.0, 4.0, 0.0, 64.0).validate().is_err());
        assert!(MarginParams::new(0.0, 0.5, 0.0, 64.0).validate().is_err());
        assert!(MarginParams::new(1.0, 0.5, 0.0, -1.0).validate().is_err());
        assert!(MarginParams::arcface().validate().is_ok());
    }
}
