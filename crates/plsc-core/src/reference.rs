//! A single-rank, materialised, float64 reference of the head: the plain textbook computation,
//! row by row, used by the tests (sharded head against it) and by `xtask head-check` users
//! comparing with PyTorch.

use crate::loss::LossKind;
use crate::margin::Margin;

/// Loss and gradients of the reference.
#[derive(Debug, Clone)]
pub struct ReferenceOutput {
    pub loss: f64,
    /// `[B, D]`
    pub grad_features: Vec<f64>,
    /// `[C, D]` (zero rows for classes that did not take part)
    pub grad_weight: Vec<f64>,
    /// `[C]` (plain softmax only)
    pub grad_bias: Option<Vec<f64>>,
}

/// Computes the head's loss (mean over rows) and gradients in float64.
///
/// `classes`: the classes taking part (all when `None`); labels must be among them.
pub fn head_reference(
    kind: &LossKind,
    features: &[f64],
    labels: &[i64],
    weight: &[f64],
    bias: Option<&[f64]>,
    dim: usize,
    classes: Option<&[usize]>,
) -> ReferenceOutput {
    let b = labels.len();
    let c = weight.len() / dim;
    let all: Vec<usize> = (0..c).collect();
    let used = classes.unwrap_or(&all);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let dot = |a: &[f64], w: &[f64]| a.iter().zip(w).map(|(x, y)| x * y).sum::<f64>();
    let row = |m: &[f64], i: usize| m[i * dim..(i + 1) * dim].to_vec();
    let mut grad_features = vec![0.0; b * dim];
    let mut grad_weight = vec![0.0; c * dim];
    let mut grad_bias = bias.map(|_| vec![0.0; c]);
    let mut loss = 0.0;
    for i in 0..b {
        let x = row(features, i);
        let y = labels[i] as usize;
        let xnorm = norm(&x);
        let xn: Vec<f64> = x.iter().map(|v| v / xnorm).collect();
        // logits and d z / d (raw inputs) bookkeeping
        let mut z = Vec::with_capacity(used.len());
        let mut dz_dcos = Vec::with_capacity(used.len());
        for &j in used {
            let w = row(weight, j);
            match kind {
                LossKind::Softmax => {
                    z.push(dot(&x, &w) + bias.map_or(0.0, |bb| bb[j]));
                    dz_dcos.push(1.0);
                }
                LossKind::Margin(p) => {
                    let wn = norm(&w);
                    let cos = (dot(&xn, &w) / wn).clamp(-1.0, 1.0);
                    if j == y {
                        let (psi, dpsi) = Margin::new(p).target(cos);
                        z.push(p.scale * psi);
                        dz_dcos.push(p.scale * dpsi);
                    } else if p.interclass_filter.is_some_and(|t| cos > t) {
                        z.push(0.0);
                        dz_dcos.push(0.0);
                    } else {
                        z.push(p.scale * cos);
                        dz_dcos.push(p.scale);
                    }
                }
            }
        }
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let lse = m + s.ln();
        let ty = used
            .iter()
            .position(|&j| j == y)
            .expect("label must take part");
        loss += lse - z[ty];
        let mut dxn = vec![0.0; dim];
        for (k, &j) in used.iter().enumerate() {
            let p = (z[k] - lse).exp();
            let dz = (p - f64::from(u8::from(k == ty))) / b as f64;
            let w = row(weight, j);
            match kind {
                LossKind::Softmax => {
                    for d in 0..dim {
                        grad_features[i * dim + d] += dz * w[d];
                        grad_weight[j * dim + d] += dz * x[d];
                    }
                    if let Some(gb) = grad_bias.as_mut() {
                        gb[j] += dz;
                    }
                }
                LossKind::Margin(_) => {
                    let g = dz * dz_dcos[k];
                    let wn = norm(&w);
                    let wnv: Vec<f64> = w.iter().map(|v| v / wn).collect();
                    // d cos / d w = (xn - cos wn) / |w|
                    let cos = dot(&xn, &wnv);
                    for d in 0..dim {
                        dxn[d] += g * wnv[d];
                        grad_weight[j * dim + d] += g * (xn[d] - cos * wnv[d]) / wn;
                    }
                }
            }
        }
        if matches!(kind, LossKind::Margin(_)) {
            let proj = dot(&dxn, &xn);
            for d in 0..dim {
                grad_features[i * dim + d] = (dxn[d] - proj * xn[d]) / xnorm;
            }
        }
    }
    ReferenceOutput {
        loss: loss / b as f64,
        grad_features,
        grad_weight,
        grad_bias,
    }
}
