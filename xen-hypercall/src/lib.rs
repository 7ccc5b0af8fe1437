//! `xen-hypercall`: Safe access to Xen's privcmd driver: hypercalls, hypercall buffers, dm_op plumbing and restriction (the Rust counterpart of libxencall and libxentoolcore).
//!
//! This crate is being built; see the workspace README for its status.
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.

#![cfg_attr(docsrs, feature(doc_cfg))]
