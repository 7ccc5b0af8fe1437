//! `xen-evtchn`: Xen event channels over /dev/xen/evtchn, blocking and async (the Rust counterpart of libxenevtchn).
//!
//! This crate is being built; see the workspace README for its status.
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.

#![cfg_attr(docsrs, feature(doc_cfg))]
