//! The generic burn path (on the `Flex` CPU backend) against the float64 reference, on 1-3
//! rank threads, chunked and whole, sampled and full, sharded and replicated.

mod common;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::*;
use plsc_comm::{Communicator, run_ranks};
use plsc_core::burn_path::burn_head_step;
use plsc_core::reference::head_reference;
use plsc_core::sampling::{SampledClasses, sample_classes};
use plsc_core::{ClassShard, HeadConfig, HeadError, LossConfig, LossKind, MarginParams};

fn f32s<const D: usize>(t: Tensor<Flex, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Per rank: loss, grad_features, grad_weight, grad_bias.
type BurnRank = (f64, Vec<f64>, Vec<f64>, Option<Vec<f64>>);

fn run(p: &Problem, config: &HeadConfig, n: usize) -> Vec<BurnRank> {
    let d = p.dim;
    let out = run_ranks(n, |comm| {
        let r = comm.rank();
        let shard = if config.loss.sharded {
            ClassShard::for_rank(p.classes, n, r)?
        } else {
            ClassShard {
                rank: r,
                start: 0,
                len: p.classes,
            }
        };
        let device = Default::default();
        let rows = p.labels.len();
        let (lo, hi) = (rows * r / n, rows * (r + 1) / n);
        let t = |v: &[f64], shape: [usize; 2]| {
            Tensor::<Flex, 2>::from_data(
                TensorData::new(v.iter().map(|x| *x as f32).collect::<Vec<f32>>(), shape),
                &device,
            )
        };
        let w = t(&p.weight[shard.start * d..shard.end() * d], [shard.len, d]);
        let x = t(&p.features[lo * d..hi * d], [hi - lo, d]);
        let bias = (config.loss.kind == LossKind::Softmax)
            .then(|| Tensor::<Flex, 1>::zeros([shard.len], &device));
        let o = burn_head_step(&comm, config, shard, w, bias, x, &p.labels[lo..hi], 0)?;
        let gb = o.grad_bias.map(f32s);
        Ok::<_, HeadError>((o.loss, f32s(o.grad_features), f32s(o.grad_weight), gb))
    });
    out.into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn burn_path_matches_the_reference() {
    let p = problem(12, 23, 16, 1);
    let mut filtered = MarginParams::new(1.0, 0.4, 0.05, 32.0);
    filtered.interclass_filter = Some(0.05);
    let kinds = [
        LossKind::Softmax,
        LossKind::Margin(MarginParams::arcface()),
        LossKind::Margin(MarginParams::sphereface()),
        LossKind::Margin(filtered),
    ];
    for kind in kinds {
        for sharded in [true, false] {
            for (n, chunk) in [(1, None), (2, Some(5)), (3, Some(1)), (3, None)] {
                let config = HeadConfig::new(p.classes, p.dim)
                    .with_loss(LossConfig { kind, sharded })
                    .with_chunk_size(chunk);
                let r = full_reference(&p, &kind);
                let ranks = run(&p, &config, n);
                let gx = concat(ranks.iter().map(|x| x.1.clone()));
                let gw = if sharded {
                    concat(ranks.iter().map(|x| x.2.clone()))
                } else {
                    ranks[0].2.clone()
                };
                let ctx = format!("{kind:?} sharded={sharded} n={n} chunk={chunk:?}");
                assert!(
                    ((ranks[0].0 - r.loss) / r.loss).abs() < 1e-5,
                    "{ctx}: loss {} vs {}",
                    ranks[0].0,
                    r.loss
                );
                assert!(
                    rel_err(&gx, &r.grad_features) < 1e-5,
                    "{ctx}: grad_features {}",
                    rel_err(&gx, &r.grad_features)
                );
                assert!(
                    rel_err(&gw, &r.grad_weight) < 1e-5,
                    "{ctx}: grad_weight {}",
                    rel_err(&gw, &r.grad_weight)
                );
                if let Some(gb) = &r.grad_bias {
                    let got = if sharded {
                        concat(ranks.iter().map(|x| x.3.clone().unwrap()))
                    } else {
                        ranks[0].3.clone().unwrap()
                    };
                    assert!(rel_err(&got, gb) < 1e-5, "{ctx}: grad_bias");
                }
            }
        }
    }
}

#[test]
fn burn_path_samples_like_the_cpu_kernel() {
    let p = problem(8, 40, 6, 3);
    let config = HeadConfig::new(p.classes, p.dim)
        .with_sample_ratio(0.25)
        .with_seed(4);
    let mut pos: Vec<usize> = p.labels.iter().map(|y| *y as usize).collect();
    pos.sort_unstable();
    pos.dedup();
    let SampledClasses::Subset(classes) = sample_classes(p.classes, &pos, 0.25, 4, 0, 0) else {
        panic!("subset")
    };
    let r = head_reference(
        &config.loss.kind,
        &p.features,
        &p.labels,
        &p.weight,
        None,
        p.dim,
        Some(&classes),
    );
    let out = &run(&p, &config, 1)[0];
    assert!(((out.0 - r.loss) / r.loss).abs() < 1e-5);
    assert!(rel_err(&out.2, &r.grad_weight) < 1e-5);
    let cpu = &run_sharded::<f32>(&p, &config, 1, &p.weight).unwrap()[0];
    assert!(
        rel_err(&out.1, &cpu.grad_features) < 1e-5,
        "burn and CPU kernel agree"
    );
}
