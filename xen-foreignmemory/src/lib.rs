//! Map other domains' memory safely — guest RAM by frame number, and resources such as an
//! ioreq server's pages or a grant table — with volatile, bounds-checked access: the Rust
//! counterpart of libxenforeignmemory, over Linux's `/dev/xen/privcmd`.
//!
//! ```no_run
//! # use xen_foreignmemory::Gfn;
//! use xen_foreignmemory::{field, DomId, ForeignMemory, ReadOnly, ReadWrite, Resource};
//! // An ioreq slot (xen/include/public/hvm/ioreq.h), as plain old data.
//! #[derive(Clone, Copy)]
//! #[repr(C)]
//! struct Ioreq { addr: u64, data: u64, count: u32, size: u32, vp_eport: u32, pad: u16, state: u8, kind: u8 }
//! // SAFETY: integers only, no padding: every bit pattern is valid.
//! unsafe impl xen_foreignmemory::Plain for Ioreq {}
//!
//! let fm = ForeignMemory::open()?;
//! let guest = DomId::new(1);
//!
//! // Guest RAM, by frame number: one mmap and one ioctl, whatever the count.
//! let ram = fm.map(guest, &[Gfn::new(0x100), Gfn::new(0x101), Gfn::new(0x102)], ReadWrite)?;
//! let word: u64 = ram.read(0x10)?;
//! ram.write(0x1008, word)?;
//! let mut buf = [0u8; 64];
//! ram.read_bytes(4096 - 32, &mut buf)?; // across two frames
//!
//! // A read-only mapping has no write methods at all.
//! let ro = fm.map(guest, &[Gfn::new(0x100)], ReadOnly)?;
//! let _: u32 = ro.read(0)?;
//!
//! // An ioreq server's synchronous ioreq page, as typed views.
//! let server = Resource::IoreqServer { id: 0 };
//! let page = fm.map_resource(guest, server, Resource::ioreq_server_ioreq_frame(0), 1, ReadWrite)?;
//! let slot = page.view::<Ioreq>(0)?; // vCPU 0
//! let (addr, size) = (field!(slot, addr)?.read(), field!(slot, size)?.read());
//! # let _ = (addr, size);
//! # Ok::<(), xen_foreignmemory::Error>(())
//! ```
//!
//! # What is here
//! - [`ForeignMemory`]: the handle (an owned [`Privcmd`](xen_hypercall::Privcmd), so it
//!   takes part in [`restrict_all`](xen_hypercall::restrict_all)); [`ForeignMemory::restrict`].
//! - Mapping frames: [`ForeignMemory::map`] (all or nothing: an [`Error::Frame`] names the
//!   first bad frame), [`ForeignMemory::map_partial`] (per-frame errors,
//!   [`Mapping::frame_errors`]), [`ForeignMemory::map_with`] ([`MapOptions`]: a chosen
//!   address as libxenforeignmemory's `map2`, [`FailurePolicy`], [`RetryPolicy`]).
//! - Resources: [`ForeignMemory::resource_size`], [`ForeignMemory::map_resource`],
//!   [`Resource`]; "not supported" is [`Error::is_not_supported`].
//! - [`Mapping`], [`View`], [`field!`]: volatile access, typed by [`ReadOnly`] /
//!   [`ReadWrite`] ([`Access`]). Values are any [`Plain`] type (re-exported from
//!   `xen-hypercall`: integers, arrays, ABI structs; implement it for your `#[repr(C)]`
//!   types). Integer views also have atomic loads, stores and read-modify-writes
//!   ([`View::load_acquire`], [`View::store_release`], [`View::compare_exchange`], ...) for
//!   protocols shared with the guest or Xen ([`AtomicInt`]).
//! - With the `vm-memory` feature: `Mapping::as_volatile_slice` and `GuestRegion`, our
//!   mappings as rust-vmm's `VolatileSlice` and `GuestMemoryRegion`.
//!
//! # How a map call works
//! `mmap` of the privcmd device reserves an empty range with the protection asked for;
//! `IOCTL_PRIVCMD_MMAPBATCH_V2` fills it with the guest's frames and reports one outcome per
//! frame. The kernel returns success even when frames failed (except frames paged out,
//! `ENOENT`), so the outcome array is always read. Paged-out frames are retried — only
//! them, one ioctl per run of consecutive ones — with a bounded exponential backoff
//! ([`RetryPolicy`]). On kernels without the V2 ioctl the old `IOCTL_PRIVCMD_MMAPBATCH` is
//! used instead: a probe before the first map tells whether the V2 ioctl exists, whether the
//! driver answers unknown ioctls with `ENOTTY` or (older drivers) `EINVAL`, and the answer is
//! remembered per handle ([`BatchIoctl`]). Any
//! failure that leaves the call without a result unmaps the range before returning: no
//! failure path leaves anything mapped.
//!
//! # Why volatile, and no `&[u8]`
//! The guest runs while we look at its memory. A `&[u8]` (or `&T`) promises the compiler that
//! the bytes do not change while the reference lives, which the guest can break at any
//! moment: undefined behaviour even if the program "only reads". So a [`Mapping`] gives
//! volatile accesses at offsets instead, each checked against the mapping's length and, for
//! partial mappings, against the frames that did map (touching those would raise `SIGBUS`).
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.

#![cfg_attr(docsrs, feature(doc_cfg))]
// Unsafe code lives in the modules that say so (`#![allow(unsafe_code)]`), each block with
// its `SAFETY:` argument.
#![deny(unsafe_code)]

mod access;
mod atomic;
mod error;
mod foreign;
mod mapping;
mod resource;
mod sys;
#[cfg(feature = "vm-memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "vm-memory")))]
mod vmm;
mod volatile;

pub use access::{Access, Protection, ReadOnly, ReadWrite};
pub use atomic::AtomicInt;
pub use error::{Error, FrameError, Result};
pub use foreign::{BatchIoctl, FailurePolicy, ForeignMemory, MapOptions, RetryPolicy};
pub use mapping::{Mapping, View, PAGE_SIZE};
pub use resource::{GrantTable, Resource};
#[cfg(feature = "vm-memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "vm-memory")))]
pub use vmm::GuestRegion;

/// Domain ids, from `xen-hypercall` (re-exported so one crate is enough).
pub use xen_hypercall::DomId;
/// The errno type of [`Error::errno`] and [`FrameError::errno`].
pub use xen_hypercall::Errno;
/// Guest frame numbers, from `xen-hypercall`.
pub use xen_hypercall::Gfn;
/// The marker for plain-old-data types that can be read from and written to guest memory
/// (from `xen-hypercall`).
pub use xen_hypercall::Plain;
