//! BatchNorm running statistics stay per rank while training and are broadcast from rank 0
//! before evaluation and saving: after a 2-rank run on different data, both replicas hold rank
//! 0's statistics.

mod common;

use common::{B, rank_slices, synthetic};
use plsc_models::{Backbone, BackboneConfig};
use plsc_train::trainer::{Outputs, RunPlan, train};
use plsc_train::{Entry, TrainModel};

const SIDE: usize = 28;

#[test]
fn replicas_end_with_rank_0_running_statistics() {
    let device = Default::default();
    let base: Backbone<B> = BackboneConfig::new("iresnet_tiny".into())
        .with_in_channels(1)
        .with_input_size(SIDE)
        .with_embedding_size(16)
        .init(&device)
        .unwrap();
    let initial = TrainModel::<B>::running_stats(&base);
    assert!(!initial.is_empty(), "iresnet_tiny has BatchNorm buffers");
    // Each rank gets different images (rows [rank*b, (rank+1)*b) of every global batch).
    let batches = synthetic(2, 8, SIDE * SIDE, 4, 0.5, 9);
    let entry = Entry::new()
        .with_num_classes(4)
        .with_embedding_size(16)
        .with_loss("dist_arcface")
        .with_input_size(SIDE)
        .with_in_channels(1)
        .with_ranks(2)
        .with_train_batch_size(4)
        .with_train_steps(2)
        .with_lr_steps(vec![])
        .with_with_test(false);
    let plan = RunPlan {
        steps_per_epoch: 2,
        total_steps: 2,
        start_step: 0,
        data_steps_per_epoch: 2,
    };
    let out = train::<B, _, _>(
        &entry,
        &base,
        &device,
        plan,
        |rank| Ok(rank_slices(&batches, rank, 2)),
        Outputs::default(),
    )
    .unwrap();
    let s0 = TrainModel::<B>::running_stats(&out.ranks[0].model);
    let s1 = TrainModel::<B>::running_stats(&out.ranks[1].model);
    assert!(s0 != initial, "training moved the statistics");
    assert!(
        s0 == s1,
        "rank 1 holds rank 0's statistics after the broadcast"
    );
}
