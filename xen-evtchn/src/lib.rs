//! Xen event channels over Linux's `/dev/xen/evtchn`, blocking and async: the Rust
//! counterpart of libxenevtchn, with no C library linked.
//!
//! An event channel is Xen's doorbell between two ends (two domains, or a domain and a
//! virtual IRQ): one end *notifies*, the other sees its port *pending*. A device model learns
//! this way that a guest vCPU wants service, and answers the same way.
//!
//! ```no_run
//! use xen_evtchn::{DomId, EventChannels};
//!
//! let ch = EventChannels::open()?;
//! // Bind to the port a guest (or an ioreq server) set up for us:
//! let port = ch.bind_interdomain(DomId::new(5), 42u32)?;
//! loop {
//!     let p = ch.pending()?;   // one read: waits for the guest's event
//!     // ... handle the request ...
//!     ch.unmask(p)?;           // one write: p may fire again
//!     port.notify()?;          // one ioctl: tell the guest we are done
//! }
//! # Ok::<(), xen_hypercall::Error>(())
//! ```
//!
//! # What is here
//! - [`EventChannels`]: the owned handle (close-on-exec, blocking or not, `AsFd`, adopts an
//!   open fd, joins [`xen_hypercall`]'s restrict-all registry). Every libxenevtchn 4.17
//!   operation: `bind_unbound_port`, `bind_interdomain`, `bind_virq`, `unbind`, `notify`,
//!   `pending` (blocking, `try_`, `_timeout`, and `_many` forms that read several ports in one
//!   call into your buffer), `unmask` / `unmask_many`, `reset`, `restrict`.
//! - [`BoundPort`]: a bound port that unbinds on drop unless released; [`Port`] (plain port
//!   numbers, accepted wherever the C API takes one) and [`Virq`] (checked VIRQ numbers).
//! - `AsyncEventChannels` (feature `tokio`): `pending().await` on tokio's `AsyncFd`.
//! - `examples/virq_watch.rs`: bind a VIRQ and print its events.
//!
//! # How the driver behaves (Linux `drivers/xen/evtchn.c`)
//! - Each handle has a queue of fired ports. A port that fires is queued once and *masked*:
//!   it does not fire again until written back ([`EventChannels::unmask`]). So the queue holds
//!   each bound port at most once, and the kernel sizes it for all of them; it overflows
//!   (`EFBIG` on read, cleared by [`EventChannels::reset`]) only in odd cases such as ports
//!   unbound and rebound while their events still sit in it.
//! - A `read` returns whole port numbers (at most a page, 1024 ports), oldest first, and
//!   leaves what did not fit for the next read: reading into `[Port]` never loses a port.
//! - Unmask writes back port numbers; the kernel ignores ports not bound through the handle.
//! - Notify and unbind on a port not bound through the handle fail with `ENOTCONN`.
//! - Xen raises a port once when it is bound with `bind_interdomain` (a notification the
//!   remote end sent before the bind is not lost that way): the first `pending` after such a
//!   bind returns it even if nobody notified.
//! - Unbinding a port leaves events it already queued in place: a later `pending` may still
//!   return its number.
//! - A restricted handle binds interdomain ports of its domain only.
//!
//! Every syscall is retried on `EINTR`.
//!
//! # Cost
//! [`EventChannels::notify`] is one ioctl; [`EventChannels::pending`] on a blocking handle is
//! one read and [`EventChannels::unmask`] one write; none allocates. `benches/ping_pong.rs`
//! measures round trips between two handles.
//!
//! # Other async runtimes
//! The handle is [`AsFd`](std::os::fd::AsFd) and the device supports `poll`: register the fd
//! of a [non-blocking](EventChannels::open_nonblocking) handle with your reactor for
//! readability (async-io's `Async`, smol, glib's `unix_fd_add`, mio's `SourceFd`, or a plain
//! `poll` loop), and when it is readable call [`EventChannels::try_pending_many`] until it
//! returns nothing. The tokio form does exactly that.
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.

#![cfg_attr(docsrs, feature(doc_cfg))]
// Unsafe code lives in the modules that say so (`#![allow(unsafe_code)]`), each block with
// its `SAFETY:` argument.
#![deny(unsafe_code)]

mod bound;
mod handle;
mod port;
mod sys;
#[cfg(feature = "tokio")]
mod tokio;

pub use bound::{AsEventChannels, BoundPort};
pub use handle::{restrict_evtchn_fd, EventChannels, EVTCHN_DEVICE};
pub use port::{Port, Virq};
#[cfg(feature = "tokio")]
pub use tokio::AsyncEventChannels;

/// Re-exported from `xen-hypercall`, so users need only this crate.
pub use xen_hypercall::{DomId, Errno, Error, Result};
