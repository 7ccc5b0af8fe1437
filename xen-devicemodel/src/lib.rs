//! `xen-devicemodel`: Xen device-model operations (dm_op): ioreq servers, interrupts, memory types, dirty tracking (the Rust counterpart of libxendevicemodel).
//!
//! This crate is being built; see the workspace README for its status.
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.

#![cfg_attr(docsrs, feature(doc_cfg))]
