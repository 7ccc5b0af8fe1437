//! Safe access to Xen's privcmd driver: hypercalls, hypercall buffers, dm_op plumbing and
//! restriction — the Rust counterpart of libxencall and libxentoolcore, talking to Linux's
//! `/dev/xen/privcmd` and `/dev/xen/hypercall` directly.
//!
//! ```no_run
//! use xen_hypercall::{DomId, DmOpBuf, Privcmd};
//!
//! let xen = Privcmd::open()?;
//! let v = xen.xen_version()?;
//! println!("Xen {}.{}{} ({})", v.major, v.minor, xen.xen_extraversion()?, xen.xen_capabilities()?);
//!
//! // A device-model operation: the request struct lives on the stack, no allocation, one ioctl.
//! let mut request = [0u8; 64]; // in practice a xen_sys `xen_dm_op`, filled in
//! match xen.dm_op("dm_op example", DomId::new(7), &[DmOpBuf::from_bytes(&mut request)]) {
//!     Ok(()) => {}
//!     Err(e) if e.is_permission_denied() => eprintln!("{e}"), // "... on domain 7: Operation not permitted"
//!     Err(e) => return Err(e),
//! }
//!
//! // Drop privilege: every open handle of every xen-rs crate now acts on domain 7 only,
//! // and the process can open no new (unrestricted) handle.
//! xen_hypercall::restrict_all(DomId::new(7))?;
//! xen_hypercall::confine()?;
//! # Ok::<(), xen_hypercall::Error>(())
//! ```
//!
//! # What is here
//! - [`Privcmd`]: the owned handle. Raw [`Privcmd::hypercall`] (`unsafe`), typed calls
//!   ([`Privcmd::xen_version`] and friends, [`Privcmd::populate_physmap`],
//!   [`Privcmd::hvm_get_param`] / [`Privcmd::hvm_set_param`],
//!   [`Privcmd::remote_shutdown`]), [`Privcmd::dm_op`], restriction, and the mapping
//!   plumbing ([`Privcmd::mmapbatch_v2`], [`Privcmd::mmap_resource`]).
//! - [`BufferPool`], [`HypercallBuffer`], [`HypercallSlice`]: hypercall buffers with a small
//!   per-handle cache, and the [`Plain`] marker for types Xen may write.
//! - [`DomId`], [`Error`]: the typed ids and the error type of the whole workspace.
//! - [`restrict_all`], [`RestrictRegistry`]: the process-wide "restrict everything" registry.
//! - The newer kernels' fast paths, probed at run time: [`Irqfd`] and [`Ioeventfd`] (Linux 6.7,
//!   [`Privcmd::probe_irqfd`], [`Privcmd::probe_ioeventfd`]), [`Privcmd::pcidev_get_gsi`]
//!   (Linux 6.12); kernels without them answer [`Error::NotSupported`].
//!
//! # Errors and Xen's error codes
//! Xen reports failure as a negative `XEN_E*` code (`xen/include/public/errno.h`); privcmd
//! passes it to user space unchanged as the ioctl's errno. That is faithful only because Linux
//! on x86 and Arm numbers its errnos exactly as Xen does: this crate checks every code of Xen
//! 4.17's `errno.h` (49 distinct values) against the target's errnos at compile time, so a
//! target where they differ would not build. Codes Xen writes into memory (per-frame
//! `MMAPBATCH_V2` results) go through [`errno_from_xen`]. Every error names its operation and
//! domain ([`Error`]); arguments that can never work are refused before any syscall with a
//! typed variant.
//!
//! # Hypercall buffers
//! Xen reads and writes hypercall arguments by virtual address, so they must be in memory the
//! kernel will not move or make copy-on-write behind Xen's back: pages of
//! `/dev/xen/hypercall`, or (older kernels) locked `MADV_DONTFORK` anonymous pages. A
//! [`HypercallBuffer`] owns such pages; dropping it returns them to its pool's cache, so a
//! repeated call maps nothing. Handing out `&T` into them is sound because Xen writes only
//! during a hypercall that borrows the buffer exclusively (see [`HypercallBuffer`]).
//!
//! # dm_op
//! [`Privcmd::dm_op`] takes `&[DmOpBuf]`, a borrowed type laid out as the kernel's
//! `privcmd_dm_op_buf`, so the list goes to `IOCTL_PRIVCMD_DM_OP` without copying: no heap
//! allocation and exactly one syscall. The kernel's limits (16 buffers of 4096 bytes by
//! default, [`DmOpLimits`]) and the domain id (no reserved ids) are checked first with typed
//! errors. Kernels without the ioctl get the `__HYPERVISOR_dm_op` hypercall instead: probed
//! once per handle ([`Privcmd::has_ioctl`], reliable whether the kernel answers unknown
//! ioctls with `ENOTTY` or, as older ones did, `EINVAL`) and remembered ([`DmOpPath`]).
//!
//! # Restriction and confinement
//! [`Privcmd::restrict`] limits one handle to one domain. [`restrict_all`] restricts every
//! registered handle of the process: each handle type of the workspace registers its fd and a
//! restrict function in [`RestrictRegistry::global`] when created and leaves it when dropped.
//! Neither stops the process from opening a new, unrestricted handle afterwards: [`confine`]
//! does (a seccomp filter that refuses every way of opening a file), so a device model that
//! opens its handles, calls `restrict_all` and then `confine` is left with handles that reach
//! its guest only. [`confine`] lists exactly what each step guarantees and what it does not.
//!
//! # The syscall layer
//! [`sys`] holds every system call the xen-rs crates make on Xen's devices and the
//! descriptors around them, with one `EINTR` policy: calls a signal interrupts before they do
//! anything are retried inside the layer; privcmd ioctls are not (their errno may be Xen's own
//! answer). Crates that talk to other Xen devices can use it too.
//!
//! # Handles
//! [`Privcmd`] is a cheap clonable handle: clones share one open file, its restriction and
//! its buffer pool, and the file closes with the last clone. Handles of the other crates
//! (`xen_devicemodel::DeviceModel`, `xen_foreignmemory::ForeignMemory`) hold a clone, so build
//! them from one [`Privcmd`] to use one file for all.
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.

#![cfg_attr(docsrs, feature(doc_cfg))]
// Unsafe code lives in the modules that say so (`#![allow(unsafe_code)]`), each block with
// its `SAFETY:` argument.
#![deny(unsafe_code)]

mod abi;
mod buffer;
mod confine;
mod dm_op;
mod domid;
mod errno;
mod error;
mod gfn;
mod irqfd;
mod ops;
mod privcmd;
mod restrict;
pub mod sys;

pub use buffer::{BufferPool, BufferSource, BufferStats, HypercallBuffer, HypercallSlice, Plain};
pub use confine::confine;
pub use dm_op::{DmOpBuf, DmOpLimits, DmOpPath};
pub use domid::DomId;
pub use errno::Errno;
pub use error::{errno_from_xen, Error, FrameError, Result};
pub use gfn::Gfn;
pub use irqfd::{
    EventFd, Ioeventfd, IoeventfdConfig, Irqfd, IOEVENTFD_MAX_VCPUS, VIRTIO_MMIO_QUEUE_NOTIFY,
};
pub use ops::{ShutdownReason, XenVersion};
pub use privcmd::{restrict_privcmd_fd, Privcmd, PrivcmdIoctl};
pub use restrict::{restrict_all, RegisteredFd, RestrictFn, RestrictRegistry};

/// A counting global allocator for the unit tests: per-thread allocation counts, so tests can
/// show that hot paths allocate nothing.
#[cfg(test)]
pub(crate) mod test_alloc {
    #[global_allocator]
    static ALLOC: xen_testkit::alloc::CountingAllocator = xen_testkit::alloc::CountingAllocator;

    #[cfg_attr(miri, allow(unused_imports))]
    pub(crate) use xen_testkit::alloc::allocations;
}
