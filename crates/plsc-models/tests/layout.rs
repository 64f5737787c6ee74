//! Every tensor name and shape against arcface_torch's `state_dict` layout, written out here
//! from the architecture (iresnet.py / mobilefacenet.py), and the published totals.

use burn::backend::Flex;
use plsc_models::{BackboneConfig, MODEL_NAMES, StateEntry, TensorKind};

type B = Flex;

/// (name, shape, kind) in PyTorch registration order.
struct Expected(Vec<(String, Vec<usize>, TensorKind)>);

impl Expected {
    fn add(&mut self, name: String, shape: Vec<usize>, kind: TensorKind) {
        self.0.push((name, shape, kind));
    }
    fn bn(&mut self, p: &str, c: usize) {
        self.add(format!("{p}.weight"), vec![c], TensorKind::Param);
        self.add(format!("{p}.bias"), vec![c], TensorKind::Param);
        self.add(format!("{p}.running_mean"), vec![c], TensorKind::Buffer);
        self.add(format!("{p}.running_var"), vec![c], TensorKind::Buffer);
    }
    fn conv(&mut self, p: &str, out: usize, inp_per_group: usize, k: usize) {
        self.add(
            format!("{p}.weight"),
            vec![out, inp_per_group, k, k],
            TensorKind::Param,
        );
    }
    fn prelu(&mut self, p: &str, c: usize) {
        self.add(format!("{p}.weight"), vec![c], TensorKind::Param);
    }
}

/// arcface_torch `IResNet(IBasicBlock, layers, num_features=emb)` for 112x112 inputs.
fn iresnet_layout(layers: [usize; 4], emb: usize) -> Expected {
    let mut e = Expected(Vec::new());
    e.conv("conv1", 64, 3, 3);
    e.bn("bn1", 64);
    e.prelu("prelu", 64);
    let mut inplanes = 64;
    for (s, (&n, planes)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
        for b in 0..n {
            let p = format!("layer{}.{b}", s + 1);
            e.bn(&format!("{p}.bn1"), inplanes);
            e.conv(&format!("{p}.conv1"), planes, inplanes, 3);
            e.bn(&format!("{p}.bn2"), planes);
            e.prelu(&format!("{p}.prelu"), planes);
            e.conv(&format!("{p}.conv2"), planes, planes, 3);
            e.bn(&format!("{p}.bn3"), planes);
            if b == 0 {
                e.conv(&format!("{p}.downsample.0"), planes, inplanes, 1);
                e.bn(&format!("{p}.downsample.1"), planes);
            }
            inplanes = planes;
        }
    }
    e.bn("bn2", 512);
    e.add(
        "fc.weight".into(),
        vec![emb, 512 * 7 * 7],
        TensorKind::Param,
    );
    e.add("fc.bias".into(), vec![emb], TensorKind::Param);
    e.bn("features", emb);
    // features.weight has requires_grad = False.
    let i = e.0.iter().position(|x| x.0 == "features.weight").unwrap();
    e.0[i].2 = TensorKind::FrozenParam;
    e
}

/// arcface_torch `get_mbf(fp16=False, num_features=emb)`: blocks (1, 4, 6, 2), scale 2.
fn mbf_layout(emb: usize) -> Expected {
    fn conv_block(e: &mut Expected, p: &str, i: usize, o: usize, k: usize, groups: usize) {
        e.conv(&format!("{p}.layers.0"), o, i / groups, k);
        e.bn(&format!("{p}.layers.1"), o);
        e.prelu(&format!("{p}.layers.2"), o);
    }
    fn linear_block(e: &mut Expected, p: &str, i: usize, o: usize, k: usize, groups: usize) {
        e.conv(&format!("{p}.layers.0"), o, i / groups, k);
        e.bn(&format!("{p}.layers.1"), o);
    }
    fn depthwise(e: &mut Expected, p: &str, i: usize, o: usize, groups: usize) {
        conv_block(e, &format!("{p}.layers.0"), i, groups, 1, 1);
        conv_block(e, &format!("{p}.layers.1"), groups, groups, 3, groups);
        linear_block(e, &format!("{p}.layers.2"), groups, o, 1, 1);
    }
    fn residual(e: &mut Expected, p: &str, c: usize, n: usize, groups: usize) {
        for j in 0..n {
            depthwise(e, &format!("{p}.layers.{j}"), c, c, groups);
        }
    }
    let mut e = Expected(Vec::new());
    conv_block(&mut e, "layers.0", 3, 128, 3, 1);
    conv_block(&mut e, "layers.1", 128, 128, 3, 64);
    depthwise(&mut e, "layers.2", 128, 128, 128);
    residual(&mut e, "layers.3", 128, 4, 128);
    depthwise(&mut e, "layers.4", 128, 256, 256);
    residual(&mut e, "layers.5", 256, 6, 256);
    depthwise(&mut e, "layers.6", 256, 256, 512);
    residual(&mut e, "layers.7", 256, 2, 256);
    conv_block(&mut e, "conv_sep", 256, 512, 1, 1);
    linear_block(&mut e, "features.layers.0", 512, 512, 7, 512);
    e.add(
        "features.layers.2.weight".into(),
        vec![emb, 512],
        TensorKind::Param,
    );
    e.bn("features.layers.3", emb);
    e
}

fn layout_of(name: &str, emb: usize) -> Vec<StateEntry> {
    BackboneConfig::new(name.into())
        .with_embedding_size(emb)
        .init::<B>(&Default::default())
        .unwrap()
        .state_layout()
}

fn assert_layout(name: &str, emb: usize, expected: Expected) {
    let got = layout_of(name, emb);
    let got: Vec<(String, Vec<usize>, TensorKind)> =
        got.into_iter().map(|e| (e.name, e.shape, e.kind)).collect();
    for (i, (g, e)) in got.iter().zip(&expected.0).enumerate() {
        assert_eq!(g, e, "{name}: entry {i}");
    }
    assert_eq!(got.len(), expected.0.len(), "{name}: number of tensors");
}

#[test]
fn iresnet_layouts_match_arcface_torch() {
    assert_layout("iresnet18", 512, iresnet_layout([2, 2, 2, 2], 512));
    assert_layout("iresnet34", 512, iresnet_layout([3, 4, 6, 3], 512));
    assert_layout("iresnet50", 512, iresnet_layout([3, 4, 14, 3], 512));
    assert_layout("iresnet100", 512, iresnet_layout([3, 13, 30, 3], 512));
    // Embedding size is configurable.
    assert_layout("iresnet18", 128, iresnet_layout([2, 2, 2, 2], 128));
}

#[test]
fn mbf_layout_matches_arcface_torch() {
    assert_layout("mbf", 512, mbf_layout(512));
    assert_layout("mbf", 256, mbf_layout(256));
}

fn params(expected: &Expected) -> usize {
    expected
        .0
        .iter()
        .filter(|e| e.2 != TensorKind::Buffer)
        .map(|e| e.1.iter().product::<usize>())
        .sum()
}

#[test]
fn parameter_counts_match_the_published_totals() {
    let count = |name: &str| {
        BackboneConfig::new(name.into())
            .init::<B>(&Default::default())
            .unwrap()
            .param_count()
    };
    let r50 = count("iresnet50");
    let r100 = count("iresnet100");
    // arcface_torch's model zoo: IResNet-50 about 43.6M, IResNet-100 about 65.2M parameters.
    assert!((r50 as f64 - 43.6e6).abs() < 0.05e6, "iresnet50 has {r50}");
    assert!(
        (r100 as f64 - 65.2e6).abs() < 0.05e6,
        "iresnet100 has {r100}"
    );
    assert_eq!(r50, params(&iresnet_layout([3, 4, 14, 3], 512)));
    assert_eq!(r100, params(&iresnet_layout([3, 13, 30, 3], 512)));
    assert_eq!(count("mbf"), params(&mbf_layout(512)));
    // Every registered name builds and has parameters; the frozen features.weight is not
    // trainable.
    for name in MODEL_NAMES {
        let m = BackboneConfig::new((*name).into())
            .init::<B>(&Default::default())
            .unwrap();
        assert!(m.param_count() > 0, "{name}");
        if name.starts_with("iresnet") {
            assert_eq!(m.trainable_param_count() + 512, m.param_count(), "{name}");
        } else {
            assert_eq!(m.trainable_param_count(), m.param_count(), "{name}");
        }
    }
}

#[test]
fn registry_rejects_unknown_names_and_bad_sizes() {
    let dev = Default::default();
    let err = BackboneConfig::new("resnet9000".into())
        .init::<B>(&dev)
        .unwrap_err();
    assert!(
        matches!(err, plsc_models::ModelError::UnknownModel { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("iresnet50"));
    let err = BackboneConfig::new("iresnet_tiny".into())
        .with_input_size(20)
        .init::<B>(&dev)
        .unwrap_err();
    assert!(
        matches!(err, plsc_models::ModelError::InvalidConfig(_)),
        "{err}"
    );
    let err = BackboneConfig::new("mbf".into())
        .with_input_size(64)
        .init::<B>(&dev)
        .unwrap_err();
    assert!(
        matches!(err, plsc_models::ModelError::InvalidConfig(_)),
        "{err}"
    );
}
