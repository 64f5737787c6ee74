//! The ONNX model `plsc_models::onnx::to_onnx` writes, parsed back: opset 17, a dynamic batch
//! axis, the metadata, one `Conv` per convolution weight with its initialiser, PReLU slopes
//! `[C, 1, 1]`, only the operators the graph needs. (ONNX Runtime runs it in
//! xtask/tests/onnx_cli.rs under PLSC_TEST_ONNX=1.)

use std::collections::BTreeSet;

use burn::backend::Flex;
use onnx_protobuf::tensor_shape_proto::dimension::Value;
use onnx_protobuf::{Message, ModelProto, ValueInfoProto};
use plsc_models::onnx::{BATCH_DIM, INPUT, OPSET, OUTPUT, to_onnx};
use plsc_models::{Backbone, BackboneConfig};

fn dims(v: &ValueInfoProto) -> Vec<Value> {
    let Some(onnx_protobuf::type_proto::Value::TensorType(t)) = &v.type_.value else {
        panic!("{} is not a tensor", v.name)
    };
    t.shape
        .dim
        .iter()
        .map(|d| d.value.clone().unwrap())
        .collect()
}

#[test]
fn graph_has_opset_17_a_dynamic_batch_and_every_weight() {
    for (name, d, side) in [
        ("iresnet_tiny", 8, 28),
        ("iresnet_nano", 16, 56),
        ("iresnet18", 512, 112),
        ("mbf", 16, 112),
    ] {
        let m: Backbone<Flex> = BackboneConfig::new(name.into())
            .with_embedding_size(d)
            .with_input_size(side)
            .init_seeded(1, &Default::default())
            .unwrap();
        let meta = vec![("plsc.mean".to_string(), "127.5,127.5,127.5".to_string())];
        let bytes = to_onnx(&m, &meta).unwrap();
        let model = ModelProto::parse_from_bytes(&bytes).unwrap();
        assert_eq!(model.opset_import.len(), 1);
        assert_eq!(model.opset_import[0].version, OPSET);
        assert_eq!(OPSET, 17);
        assert_eq!(model.metadata_props.len(), 1);
        assert_eq!(model.metadata_props[0].key, "plsc.mean");
        assert_eq!(model.metadata_props[0].value, "127.5,127.5,127.5");
        let g = model.graph.as_ref().unwrap();
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name, INPUT);
        let side = side as i64;
        assert_eq!(
            dims(&g.input[0]),
            [
                Value::DimParam(BATCH_DIM.into()),
                Value::DimValue(3),
                Value::DimValue(side),
                Value::DimValue(side)
            ]
        );
        assert_eq!(g.output[0].name, OUTPUT);
        assert_eq!(
            dims(&g.output[0]),
            [Value::DimParam(BATCH_DIM.into()), Value::DimValue(d as i64)]
        );
        assert_eq!(g.node.last().unwrap().output, [OUTPUT]);
        let ops: BTreeSet<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        let allowed: BTreeSet<&str> = [
            "Conv",
            "BatchNormalization",
            "PRelu",
            "Add",
            "Flatten",
            "Gemm",
        ]
        .into();
        assert!(ops.is_subset(&allowed), "{name}: {ops:?}");
        // One Conv per 4-d weight of the state, one BatchNormalization per running mean.
        let layout = m.state_layout();
        let convs = layout.iter().filter(|e| e.shape.len() == 4).count();
        let bns = layout
            .iter()
            .filter(|e| e.name.ends_with("running_mean"))
            .count();
        let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
        assert_eq!(count("Conv"), convs, "{name}");
        assert_eq!(count("BatchNormalization"), bns, "{name}");
        // Every node input is the graph input, an initialiser or an earlier node's output.
        let mut known: BTreeSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        known.insert(INPUT.into());
        for n in &g.node {
            for i in &n.input {
                assert!(known.contains(i), "{name}: {} reads unknown `{i}`", n.name);
            }
            known.extend(n.output.iter().cloned());
        }
        // Initialisers hold all their values; PReLU slopes broadcast over NCHW.
        for t in &g.initializer {
            let numel: i64 = t.dims.iter().product();
            assert_eq!(t.raw_data.len() as i64, 4 * numel, "{}", t.name);
        }
        for n in g.node.iter().filter(|n| n.op_type == "PRelu") {
            let slope = g.initializer.iter().find(|t| t.name == n.input[1]).unwrap();
            assert_eq!(slope.dims.len(), 3, "{}", slope.name);
            assert_eq!(&slope.dims[1..], [1, 1], "{}", slope.name);
        }
    }
}
