//! Backbones for plsc-rs: networks that turn a face image (3x112x112) into an embedding.
//!
//! IResNet-18/34/50/100, MobileFaceNet and a tiny CPU variant on burn, generic over the backend,
//! with a registry by name. In the flow: `data` -> **`models`** -> `core` (the head).
