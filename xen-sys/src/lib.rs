//! Raw Xen ABI (placeholder until the generated bindings land).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
