//! Partial FC sampling, the sparse SGD step, precision modes, the replicated head, accuracy and
//! the named errors.

mod common;

use common::*;
use plsc_comm::{Communicator, run_ranks};
use plsc_core::reference::head_reference;
use plsc_core::sampling::{SampledClasses, sample_classes, sample_count};
use plsc_core::{
    HeadConfig, HeadError, LossConfig, Precision, RowStore, ShardedHead, WeightUpdate,
};

#[test]
fn sampled_head_equals_reference_on_the_sampled_classes() {
    let p = problem(8, 40, 6, 21);
    let ratio = 0.3;
    let config = HeadConfig::new(p.classes, p.dim)
        .with_sample_ratio(ratio)
        .with_seed(9);
    let mut positives: Vec<usize> = p.labels.iter().map(|y| *y as usize).collect();
    positives.sort_unstable();
    positives.dedup();
    let sampled = sample_classes(p.classes, &positives, ratio, 9, 0, 0);
    let SampledClasses::Subset(classes) = &sampled else {
        panic!("ratio < 1 samples a subset")
    };
    assert_eq!(
        classes.len(),
        sample_count(p.classes, positives.len(), ratio)
    );
    let reference = head_reference(
        &config.loss.kind,
        &p.features,
        &p.labels,
        &p.weight,
        None,
        p.dim,
        Some(classes),
    );
    let r = &run_sharded::<f64>(&p, &config, 1, &p.weight).unwrap()[0];
    assert!((r.loss - reference.loss).abs() < 1e-10 * reference.loss);
    assert!(rel_err(&r.grad_features, &reference.grad_features) < 1e-10);
    assert!(rel_err(&r.grad_weight, &reference.grad_weight) < 1e-10);
    // Rows outside the sampled set get no gradient at all.
    for c in 0..p.classes {
        if !classes.contains(&c) {
            assert!(
                r.grad_weight[c * p.dim..(c + 1) * p.dim]
                    .iter()
                    .all(|v| *v == 0.0),
                "class {c}"
            );
        }
    }
}

#[test]
fn sparse_sgd_moves_only_used_rows_and_matches_the_gradient() {
    let p = problem(8, 50, 6, 5);
    let (lr, n) = (0.2, 2);
    let config = HeadConfig::new(p.classes, p.dim)
        .with_sample_ratio(0.2)
        .with_seed(1);
    let grads = run_sharded::<f64>(&p, &config, n, &p.weight).unwrap();
    let results = run_ranks(n, |comm| {
        let r = comm.rank();
        let mut head = ShardedHead::<f64>::new(config.clone(), r, n)?;
        let s = head.shard();
        head.set_weight(
            RowStore::Full(p.weight[s.start * p.dim..s.end() * p.dim].to_vec()),
            None,
        )?;
        let (lo, hi) = (p.labels.len() * r / n, p.labels.len() * (r + 1) / n);
        let out = head.step(
            &comm,
            &p.features[lo * p.dim..hi * p.dim],
            &p.labels[lo..hi],
            0,
            WeightUpdate::Sgd { lr },
        )?;
        Ok::<_, HeadError>((
            s,
            head.weight().to_vec(),
            head.velocity().to_vec(),
            out.sampled_classes,
        ))
    });
    let wd = config.optimizer.weight_decay;
    for (res, grad) in results.into_iter().zip(&grads) {
        let (s, w, v, used) = res.unwrap();
        let mut moved = 0;
        for c in 0..s.len {
            let row = c * p.dim..(c + 1) * p.dim;
            let g = &grad.grad_weight[row.clone()];
            let w0 = &p.weight[(s.start + c) * p.dim..(s.start + c + 1) * p.dim];
            if g.iter().all(|x| *x == 0.0) {
                assert_eq!(&w[row.clone()], w0, "unused row {c} moved");
                assert!(v[row].iter().all(|x| *x == 0.0));
            } else {
                moved += 1;
                for k in 0..p.dim {
                    let expect_v = g[k] + wd * w0[k];
                    assert!((v[row.start + k] - expect_v).abs() < 1e-14);
                    assert!((w[row.start + k] - (w0[k] - lr * expect_v)).abs() < 1e-14);
                }
            }
        }
        assert!(moved <= used && used < s.len, "sampled {used} of {}", s.len);
    }
}

#[test]
fn half_precision_operands_stay_close_to_f32() {
    let p = problem(16, 37, 32, 8);
    let base = HeadConfig::new(p.classes, p.dim);
    let f32_run = run_sharded::<f32>(&p, &base, 2, &p.weight).unwrap();
    let gx = concat(f32_run.iter().map(|r| r.grad_features.clone()));
    let gw = concat(f32_run.iter().map(|r| r.grad_weight.clone()));
    // Stated tolerances: f16 (11-bit mantissa) within 1e-2, bf16 (8-bit) within 5e-2, norm-wise.
    for (precision, tol) in [(Precision::F16, 1e-2), (Precision::Bf16, 5e-2)] {
        let run =
            run_sharded::<f32>(&p, &base.clone().with_precision(precision), 2, &p.weight).unwrap();
        assert!(
            ((run[0].loss - f32_run[0].loss) / f32_run[0].loss).abs() < tol / 10.0,
            "{precision:?} loss"
        );
        let ex = rel_err(&concat(run.iter().map(|r| r.grad_features.clone())), &gx);
        let ew = rel_err(&concat(run.iter().map(|r| r.grad_weight.clone())), &gw);
        assert!(ex < tol && ew < tol, "{precision:?}: {ex} {ew}");
        assert!(ex > 0.0, "{precision:?} must actually round the operands");
    }
}

#[test]
fn replicated_head_sums_weight_gradients_across_ranks() {
    let p = problem(12, 15, 8, 6);
    for name in ["arcface", "softmax"] {
        let loss: LossConfig = name.parse().unwrap();
        let config = HeadConfig::new(p.classes, p.dim).with_loss(loss);
        let reference = full_reference(&p, &loss.kind);
        let ranks = run_sharded::<f64>(&p, &config, 3, &p.weight).unwrap();
        for r in &ranks {
            assert!(
                (r.loss - reference.loss).abs() < 1e-10 * reference.loss,
                "{name}"
            );
            assert!(
                rel_err(&r.grad_weight, &reference.grad_weight) < 1e-10,
                "{name}: every replica holds the summed gradient"
            );
        }
        let gx = concat(ranks.iter().map(|r| r.grad_features.clone()));
        assert!(rel_err(&gx, &reference.grad_features) < 1e-10, "{name}");
    }
}

#[test]
fn accuracy_is_global_and_the_same_on_every_rank_count() {
    let mut p = problem(12, 10, 8, 2);
    // Rows 0..6 are exactly their class's weight row: top-1 hits. The rest stay random.
    for i in 0..6 {
        let y = p.labels[i] as usize;
        let row: Vec<f64> = p.weight[y * p.dim..(y + 1) * p.dim].to_vec();
        p.features[i * p.dim..(i + 1) * p.dim].copy_from_slice(&row);
    }
    let config = HeadConfig::new(p.classes, p.dim).with_calc_acc(true);
    let one = run_sharded::<f64>(&p, &config, 1, &p.weight).unwrap()[0]
        .top1
        .unwrap();
    assert!(one >= 0.5, "the six exact rows must hit: {one}");
    for n in 2..=4 {
        for r in run_sharded::<f64>(&p, &config, n, &p.weight).unwrap() {
            assert_eq!(r.top1.unwrap(), one, "n={n}");
        }
    }
}

#[test]
fn bad_input_gives_named_errors_on_every_rank() {
    let p = problem(4, 9, 4, 3);
    let config = HeadConfig::new(p.classes, p.dim);
    for bad in [9i64, -1] {
        let mut q = Problem {
            labels: p.labels.clone(),
            features: p.features.clone(),
            weight: p.weight.clone(),
            dim: p.dim,
            classes: p.classes,
        };
        q.labels[3] = bad;
        // Row 3 of 4 over 2 ranks is sample 1 of rank 1.
        let err = run_sharded::<f64>(&q, &config, 2, &q.weight).unwrap_err();
        match err {
            HeadError::LabelOutOfRange {
                rank: 1,
                sample: 1,
                label,
                num_classes: 9,
            } => assert_eq!(label, bad),
            other => panic!("wrong error {other}"),
        }
    }
    assert!(matches!(
        ShardedHead::<f32>::new(HeadConfig::new(3, 4), 0, 4),
        Err(HeadError::TooFewClasses {
            num_classes: 3,
            world_size: 4
        })
    ));
    assert!(matches!(
        ShardedHead::<f32>::new(HeadConfig::new(30, 4).with_sample_ratio(0.0), 0, 1),
        Err(HeadError::Config {
            name: "sample_ratio",
            ..
        })
    ));
    let shape_err = run_ranks(1, |comm| {
        let mut head = ShardedHead::<f32>::new(HeadConfig::new(10, 4), 0, 1)?;
        head.step(&comm, &[0.0; 7], &[1, 2], 0, WeightUpdate::Sgd { lr: 0.1 })
            .map(|_| ())
    });
    assert!(
        matches!(
            &shape_err[0],
            Err(HeadError::Shape {
                tensor: "features",
                ..
            })
        ),
        "{shape_err:?}"
    );
}

#[test]
fn setters_reject_rows_of_the_wrong_size() {
    let mut head = ShardedHead::<f32>::new(
        HeadConfig::new(10, 4).with_loss("dist_softmax".parse().unwrap()),
        1,
        3,
    )
    .unwrap();
    // Rank 1 of 3 owns 3 classes.
    assert!(matches!(
        head.set_weight(RowStore::Full(vec![0.0; 11]), None),
        Err(HeadError::Shape {
            tensor: "weight",
            ..
        })
    ));
    assert!(matches!(
        head.set_weight(RowStore::Full(vec![0.0; 12]), Some(vec![0.0; 2])),
        Err(HeadError::Shape { tensor: "bias", .. })
    ));
    assert!(matches!(
        head.set_velocity(RowStore::Full(vec![0.0; 8]), None),
        Err(HeadError::Shape {
            tensor: "momentum",
            ..
        })
    ));
    assert!(matches!(
        head.set_velocity(RowStore::Full(vec![0.0; 12]), Some(vec![0.0; 4])),
        Err(HeadError::Shape {
            tensor: "bias_momentum",
            ..
        })
    ));
    head.set_velocity(RowStore::Full(vec![1.0; 12]), Some(vec![2.0; 3]))
        .unwrap();
    assert_eq!(head.bias_velocity().unwrap(), &[2.0; 3]);
}
