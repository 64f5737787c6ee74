//! The resize policy in `ModelSpec` (manifest.json's `model`, model.json): written by name,
//! and files written before the field existed read as `squash`.

use plsc_ckpt::ModelSpec;
use plsc_data::Resize;

#[test]
fn model_specs_without_a_resize_field_read_as_squash() {
    let old = r#"{"architecture": "iresnet50", "embedding_size": 512, "input_size": 112,
        "in_channels": 3, "mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0]}"#;
    let spec: ModelSpec = serde_json::from_str(old).unwrap();
    assert_eq!(spec.resize, Resize::Squash);
    assert_eq!(spec, ModelSpec::face("iresnet50", 512));

    for policy in Resize::ALL {
        let spec = ModelSpec {
            resize: policy,
            ..ModelSpec::face("iresnet50", 512)
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert!(
            text.contains(&format!("\"resize\":\"{}\"", policy.name())),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ModelSpec>(&text).unwrap(), spec);
    }
    let bad = old.replace("\"std\"", "\"resize\": \"stretch\", \"std\"");
    let err = serde_json::from_str::<ModelSpec>(&bad).unwrap_err();
    assert!(err.to_string().contains("stretch"), "{err}");
}
