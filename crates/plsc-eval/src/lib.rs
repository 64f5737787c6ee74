//! Verification for plsc-rs: InsightFace `.bin` pair sets, 10-fold accuracy with the flip test,
//! TAR at a fixed FAR and XNorm.
//!
//! A leaf crate: it takes an embedding function, so it needs no model. `train` calls it.
