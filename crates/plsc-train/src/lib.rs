//! Training for plsc-rs: the PLSC-style `Entry` builder and the loop that links the backbone
//! (`models`), the sharded head (`core`), the data (`data`) and the collectives (`comm`).
//!
//! In the flow it is the top library crate; `xtask train` drives it.
