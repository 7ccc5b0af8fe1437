//! `xen-foreignmemory`: Mapping Xen guest frames and resources safely, with volatile access (the Rust counterpart of libxenforeignmemory).
//!
//! This crate is being built; see the workspace README for its status.
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.

#![cfg_attr(docsrs, feature(doc_cfg))]
