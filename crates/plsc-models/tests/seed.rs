//! Seeded initialisation (its own test binary: the backend's generator is process-wide).

use burn::backend::{Autodiff, Flex};
use plsc_models::{Backbone, BackboneConfig};

type AB = Autodiff<Flex>;

#[test]
fn seeded_init_is_reproducible() {
    let dev = Default::default();
    let config = BackboneConfig::new("iresnet_tiny".into()).with_input_size(28);
    let a: Backbone<AB> = config.init_seeded(7, &dev).unwrap();
    let b: Backbone<AB> = config.init_seeded(7, &dev).unwrap();
    let c: Backbone<AB> = config.init_seeded(8, &dev).unwrap();
    let bytes = |m: &Backbone<AB>| m.to_safetensors_bytes().unwrap();
    assert!(bytes(&a) == bytes(&b), "same seed, different weights");
    assert!(bytes(&a) != bytes(&c), "different seeds, same weights");
}
