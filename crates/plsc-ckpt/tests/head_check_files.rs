//! `xtask head-check`'s files (plsc_ckpt::head_check): inputs read back as written, in F32 and
//! F64, outputs written in the inputs' float type, bad inputs named by tensor.

use std::collections::HashMap;
use std::path::Path;

use plsc_ckpt::CkptError;
use plsc_ckpt::head_check::{CheckFloat, read_check_inputs, write_check_outputs};
use plsc_core::check::CheckOutputs;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, path).unwrap();
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn inputs_read_back_and_outputs_keep_the_float_type() {
    let dir = tempfile::tempdir().unwrap();
    let (features, weight, bias) = (
        [0.5f64, -1.25, 3.0, 0.375],
        [1.0f64, 2.0, -0.25, 0.75, 9.0, -8.5],
        [0.25f64, -0.5, 1.5],
    );
    for float in [CheckFloat::F32, CheckFloat::F64] {
        let dtype = match float {
            CheckFloat::F32 => Dtype::F32,
            CheckFloat::F64 => Dtype::F64,
        };
        let enc = |v: &[f64]| match float {
            CheckFloat::F32 => f32s(&v.iter().map(|x| *x as f32).collect::<Vec<_>>()),
            CheckFloat::F64 => f64s(v),
        };
        let input = dir.path().join(format!("in-{dtype:?}.safetensors"));
        write(
            &input,
            &[
                ("features", dtype, vec![2, 2], enc(&features)),
                ("labels", Dtype::I64, vec![2], i64s(&[2, 0])),
                ("weight", dtype, vec![3, 2], enc(&weight)),
                ("bias", dtype, vec![3], enc(&bias)),
            ],
        );
        let file = read_check_inputs(&input).unwrap();
        assert_eq!(file.float, float);
        let i = &file.inputs;
        assert_eq!((i.rows, i.dim, i.classes), (2, 2, 3));
        assert_eq!(i.features, features);
        assert_eq!(i.weight, weight);
        assert_eq!(i.bias.as_deref(), Some(&bias[..]));
        assert_eq!(i.labels, [2, 0]);

        let out = CheckOutputs {
            loss: 1.0 / 3.0,
            grad_features: vec![0.1; 4],
            grad_weight: vec![-0.2; 6],
            grad_bias: Some(vec![0.3; 3]),
        };
        let output = dir.path().join(format!("out-{dtype:?}.safetensors"));
        write_check_outputs(&output, &out, &file).unwrap();
        let bytes = std::fs::read(&output).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, shape) in [
            ("loss", vec![]),
            ("grad_features", vec![2, 2]),
            ("grad_weight", vec![3, 2]),
            ("grad_bias", vec![3]),
        ] {
            let t = st.tensor(name).unwrap();
            assert_eq!((t.dtype(), t.shape().to_vec()), (dtype, shape), "{name}");
        }
        let loss = st.tensor("loss").unwrap();
        let want = match float {
            CheckFloat::F32 => (1.0f32 / 3.0).to_le_bytes().to_vec(),
            CheckFloat::F64 => (1.0f64 / 3.0).to_le_bytes().to_vec(),
        };
        assert_eq!(loss.data(), &want[..]);
        assert!(!output.with_extension("safetensors.tmp").exists());
    }
}

#[test]
fn bad_inputs_are_named_by_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let base = |labels: (Dtype, Vec<usize>, Vec<u8>), weight: Vec<usize>| {
        vec![
            ("features", Dtype::F32, vec![2, 2], f32s(&[0.0; 4])),
            ("labels", labels.0, labels.1, labels.2),
            (
                "weight",
                Dtype::F32,
                weight.clone(),
                f32s(&vec![0.0; weight.iter().product()]),
            ),
        ]
    };
    write(
        &input,
        &base((Dtype::I64, vec![2], i64s(&[0, 1])), vec![3, 5]),
    );
    assert!(
        matches!(read_check_inputs(&input), Err(CkptError::TensorShape { tensor, .. }) if tensor == "weight")
    );
    write(
        &input,
        &base((Dtype::I64, vec![3], i64s(&[0, 1, 2])), vec![3, 2]),
    );
    assert!(
        matches!(read_check_inputs(&input), Err(CkptError::TensorShape { tensor, .. }) if tensor == "labels")
    );
    write(
        &input,
        &base((Dtype::F32, vec![2], f32s(&[0.0, 1.0])), vec![3, 2]),
    );
    assert!(
        matches!(read_check_inputs(&input), Err(CkptError::TensorDtype { tensor, .. }) if tensor == "labels")
    );
    std::fs::write(&input, b"not safetensors").unwrap();
    assert!(matches!(
        read_check_inputs(&input),
        Err(CkptError::Safetensors { .. })
    ));
}
