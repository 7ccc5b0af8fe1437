//! A pure-Rust XenStore client: the Rust counterpart of Xen's libxenstore, with no C library
//! linked.
//!
//! XenStore is Xen's small shared tree of configuration and status (`/local/domain/<domid>/...`),
//! kept by the `xenstored` daemon in dom0 (or a stub domain). Toolstacks, backends and device
//! models read and write it, watch nodes for changes, and group changes in transactions.
//!
//! ```no_run
//! use xen_store::XenStore;
//!
//! let xs = XenStore::open()?;
//! xs.write("/local/domain/0/device-model/5/state", "running")?;
//! let name = xs.read_string("/local/domain/5/name")?;
//! for child in xs.directory("/local/domain/5")? {
//!     println!("{child}");
//! }
//! // Wait for a node to change:
//! let w = xs.watch("/local/domain/0/device-model/5/command", "dm-command")?;
//! let ev = w.next_event()?; // the first event fires at once, for the watched path
//! # let _ = (name, ev);
//! # Ok::<(), xen_store::Error>(())
//! ```
//!
//! # Transports
//! - The xenstored unix socket ([`XenStore::open_socket`], `/run/xenstored/socket` by default,
//!   or `XENSTORED_PATH` like libxenstore), in the domain running xenstored (dom0).
//! - The kernel's `/dev/xen/xenbus` ([`XenStore::open_device`]), in any domain, including a
//!   driver domain without xenstored: the kernel forwards requests over the shared ring.
//!
//! [`XenStore::open`] tries `XENSTORED_PATH`, then the socket, then the device.
//!
//! # Operations
//! `read`, `write`, `mkdir`, `rm`, `directory` (in parts when the list is longer than one reply),
//! `get_perms`/`set_perms`, `get_domain_path`;
//! watches ([`XenStore::watch`] returns a [`Watch`] that unwatches on drop and delivers events
//! through a blocking iterator); transactions ([`XenStore::transaction`] returns a
//! [`Transaction`] with the same operations, committed by [`Transaction::commit`], aborted on
//! drop; a conflict is [`Error::Retry`]).
//!
//! # Behaviour
//! - One handle serves any number of threads (it is `Send + Sync`); requests are matched to
//!   replies by request id, so threads do not wait on each other's replies.
//! - Reads are bounded: a message whose header announces more than `XENSTORE_PAYLOAD_MAX`
//!   (4096) bytes is refused without allocating ([`Error::Protocol`], and the handle refuses
//!   later calls); requests larger than that are refused before sending ([`Error::Invalid`]).
//! - Each request waits at most the handle's timeout ([`XenStore::set_timeout`], 60 s by
//!   default): a stuck daemon gives [`Error::Timeout`], never a hang.
//! - Watch events wait in a per-watch queue of at most 1024 events; when it overflows, the
//!   next [`Watch::next_event`] says how many were dropped ([`Error::EventsLost`]).
//! - xenstored sends every new watch one event at once, for the watched path itself.
//! - Every refusal of xenstored keeps its errno and name ([`Error::Refused`], `ENOENT`,
//!   `EACCES`, ...), with the operation and the path.
//!
//! The wire format (`xsd_sockmsg`, `XS_*`, `XENSTORE_PAYLOAD_MAX`) comes from
//! `xen_sys::xs_wire` (Xen's `io/xs_wire.h`).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod conn;
mod error;
mod wire;

pub use conn::WatchEvent;
pub use error::{Error, Op, Result};

use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use xen_sys::xs_wire::{
    XS_DIRECTORY, XS_DIRECTORY_PART, XS_GET_DOMAIN_PATH, XS_GET_PERMS, XS_MKDIR, XS_READ, XS_RM,
    XS_SET_PERMS, XS_TRANSACTION_END, XS_TRANSACTION_START, XS_UNWATCH, XS_WATCH, XS_WRITE,
};

use conn::{Conn, Io};

/// xenstored's socket on Xen 4.17 and later.
pub const DEFAULT_SOCKET: &str = "/run/xenstored/socket";
/// The kernel's XenStore device.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// The largest child list [`XenStore::directory`] reads in parts (`XS_DIRECTORY_PART`), in bytes
/// of names: beyond it the listing fails with [`Error::Protocol`] rather than growing.
pub const DIRECTORY_MAX: usize = 1 << 20;
/// How many times a listing in parts starts again when the directory changes under it, before
/// giving up with `EAGAIN`.
pub const DIRECTORY_RESTARTS: usize = 8;
/// How long a request waits for its reply unless [`XenStore::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Which transport a handle uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// xenstored's unix socket.
    Socket,
    /// The kernel's `/dev/xen/xenbus` (or another xenbus character device).
    Device,
}

/// An open connection to XenStore. Closes when dropped. `Send + Sync`: share it between threads
/// (by reference or in an `Arc`).
#[derive(Debug)]
pub struct XenStore {
    conn: Conn,
    transport: Transport,
    timeout: Mutex<Option<Duration>>,
    next_token: AtomicU64,
}

/// A node's permission for one domain (the XenStore permission letters `n`, `r`, `w`, `b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`: none.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

/// One entry of a node's permission list. The first entry names the owner and the access of
/// every domain not listed; later entries grant access to one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The domain.
    pub domid: u16,
    /// Its access.
    pub access: Access,
}

impl Perm {
    fn encode(&self) -> String {
        let c = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        format!("{c}{}", self.domid)
    }

    fn decode(s: &str) -> Option<Perm> {
        let mut chars = s.chars();
        let access = match chars.next()? {
            'n' => Access::None,
            'r' => Access::Read,
            'w' => Access::Write,
            'b' => Access::Both,
            _ => return None,
        };
        Some(Perm {
            domid: chars.as_str().parse().ok()?,
            access,
        })
    }
}

fn check_path(op: Op, path: &str) -> Result<()> {
    if path.is_empty() || path.contains('\0') {
        return Err(Error::Invalid {
            op,
            what: format!("path {path:?} is empty or holds a NUL byte"),
        });
    }
    Ok(())
}

impl XenStore {
    /// Opens XenStore the way libxenstore does: the socket named by `XENSTORED_PATH` when set,
    /// else [`DEFAULT_SOCKET`], else [`XENBUS_DEVICE`].
    pub fn open() -> Result<Self> {
        if let Some(p) = std::env::var_os("XENSTORED_PATH") {
            let p = Path::new(&p);
            return if p.starts_with("/dev") {
                Self::open_device_at(p)
            } else {
                Self::open_socket_at(p)
            };
        }
        match Self::open_socket() {
            Ok(xs) => Ok(xs),
            Err(sock_err) => Self::open_device().map_err(|_| sock_err),
        }
    }

    /// Connects to xenstored's socket at [`DEFAULT_SOCKET`].
    pub fn open_socket() -> Result<Self> {
        Self::open_socket_at(DEFAULT_SOCKET)
    }

    /// Connects to xenstored's socket at `path`.
    pub fn open_socket_at(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let s = UnixStream::connect(path).map_err(|source| Error::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::from_io(Io::Socket(s), Transport::Socket))
    }

    /// Opens the kernel's [`XENBUS_DEVICE`].
    pub fn open_device() -> Result<Self> {
        Self::open_device_at(XENBUS_DEVICE)
    }

    /// Opens a xenbus character device at `path`.
    pub fn open_device_at(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self::from_io(Io::Device(f), Transport::Device))
    }

    /// Uses an already connected socket (a stand-in daemon in tests, a socket passed by a
    /// supervisor).
    pub fn from_stream(s: UnixStream) -> Self {
        Self::from_io(Io::Socket(s), Transport::Socket)
    }

    fn from_io(io: Io, transport: Transport) -> Self {
        XenStore {
            conn: Conn::new(io),
            transport,
            timeout: Mutex::new(Some(DEFAULT_TIMEOUT)),
            next_token: AtomicU64::new(1),
        }
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// How long each request waits for its reply (`None`: forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        *self.timeout.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
    }

    fn timeout(&self) -> Option<Duration> {
        *self.timeout.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn req(&self, op: Op, ty: u32, tx: u32, parts: &[&[u8]], path: &str) -> Result<Vec<u8>> {
        self.conn.request(op, ty, tx, parts, path, self.timeout())
    }

    fn read_tx(&self, tx: u32, path: &str) -> Result<Vec<u8>> {
        check_path(Op::Read, path)?;
        self.req(Op::Read, XS_READ, tx, &[path.as_bytes(), b"\0"], path)
    }

    fn write_tx(&self, tx: u32, path: &str, value: &[u8]) -> Result<()> {
        check_path(Op::Write, path)?;
        self.req(
            Op::Write,
            XS_WRITE,
            tx,
            &[path.as_bytes(), b"\0", value],
            path,
        )?;
        Ok(())
    }

    fn mkdir_tx(&self, tx: u32, path: &str) -> Result<()> {
        check_path(Op::Mkdir, path)?;
        self.req(Op::Mkdir, XS_MKDIR, tx, &[path.as_bytes(), b"\0"], path)?;
        Ok(())
    }

    fn rm_tx(&self, tx: u32, path: &str) -> Result<()> {
        check_path(Op::Rm, path)?;
        self.req(Op::Rm, XS_RM, tx, &[path.as_bytes(), b"\0"], path)?;
        Ok(())
    }

    fn directory_tx(&self, tx: u32, path: &str) -> Result<Vec<String>> {
        check_path(Op::Directory, path)?;
        match self.req(
            Op::Directory,
            XS_DIRECTORY,
            tx,
            &[path.as_bytes(), b"\0"],
            path,
        ) {
            Ok(p) => Ok(wire::strings(&p)),
            // More children than one reply holds: read the list in parts.
            Err(Error::Refused { errno, .. }) if errno == libc::E2BIG => {
                self.directory_parts(tx, path)
            }
            Err(e) => Err(e),
        }
    }

    /// `XS_DIRECTORY_PART`: the child list from byte offset 0 on, one reply at a time. Each reply
    /// is the node's generation count and the children from the offset; the last one ends with an
    /// empty name. A generation that changes between parts restarts the listing (at most
    /// [`DIRECTORY_RESTARTS`] times); the list is bounded by [`DIRECTORY_MAX`] bytes.
    fn directory_parts(&self, tx: u32, path: &str) -> Result<Vec<String>> {
        let bad = |what: String| Error::Protocol {
            op: Op::Directory,
            what,
        };
        'restart: for _ in 0..DIRECTORY_RESTARTS {
            let mut names = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<String> = None;
            loop {
                let off = format!("{offset}\0");
                let p = self.req(
                    Op::Directory,
                    XS_DIRECTORY_PART,
                    tx,
                    &[path.as_bytes(), b"\0", off.as_bytes()],
                    path,
                )?;
                let gen_end = p
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| bad("directory part without a generation".into()))?;
                let gen = String::from_utf8_lossy(&p[..gen_end]).into_owned();
                match &generation {
                    Some(g) if *g != gen => continue 'restart,
                    Some(_) => {}
                    None => generation = Some(gen),
                }
                let list = &p[gen_end + 1..];
                // The last part ends with an empty name: two NULs (or one, when it is empty).
                let last = list.is_empty() || list == b"\0" || list.ends_with(b"\0\0");
                let body = if last {
                    list.strip_suffix(b"\0").unwrap_or(list)
                } else {
                    list
                };
                if !last && body.is_empty() {
                    return Err(bad("directory part made no progress".into()));
                }
                offset += body.len();
                if offset > DIRECTORY_MAX {
                    return Err(bad(format!(
                        "directory {path:?} lists more than {DIRECTORY_MAX} bytes of names"
                    )));
                }
                names.extend(wire::strings(body));
                if last {
                    return Ok(names);
                }
            }
        }
        Err(Error::Refused {
            op: Op::Directory,
            path: path.to_string(),
            errno: libc::EAGAIN,
            name: "EAGAIN".into(),
        })
    }

    fn get_perms_tx(&self, tx: u32, path: &str) -> Result<Vec<Perm>> {
        check_path(Op::GetPerms, path)?;
        let p = self.req(
            Op::GetPerms,
            XS_GET_PERMS,
            tx,
            &[path.as_bytes(), b"\0"],
            path,
        )?;
        wire::strings(&p)
            .iter()
            .map(|s| {
                Perm::decode(s).ok_or_else(|| Error::Protocol {
                    op: Op::GetPerms,
                    what: format!("bad permission {s:?}"),
                })
            })
            .collect()
    }

    fn set_perms_tx(&self, tx: u32, path: &str, perms: &[Perm]) -> Result<()> {
        check_path(Op::SetPerms, path)?;
        if perms.is_empty() {
            return Err(Error::Invalid {
                op: Op::SetPerms,
                what: "an empty permission list".into(),
            });
        }
        let mut payload = Vec::new();
        payload.extend_from_slice(path.as_bytes());
        payload.push(0);
        for p in perms {
            payload.extend_from_slice(p.encode().as_bytes());
            payload.push(0);
        }
        self.req(Op::SetPerms, XS_SET_PERMS, tx, &[&payload], path)?;
        Ok(())
    }

    /// Reads a node's value.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_tx(0, path)
    }

    /// Reads a node's value as text (invalid UTF-8 replaced).
    pub fn read_string(&self, path: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path)?).into_owned())
    }

    /// Writes a node's value, creating the node (and missing parents) when needed.
    pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.write_tx(0, path, value.as_ref())
    }

    /// Creates a node with an empty value (no error if it exists).
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.mkdir_tx(0, path)
    }

    /// Removes a node and everything below it.
    pub fn rm(&self, path: &str) -> Result<()> {
        self.rm_tx(0, path)
    }

    /// The names of a node's children. A list longer than one reply is read in parts
    /// (`XS_DIRECTORY_PART`), up to [`DIRECTORY_MAX`] bytes of names.
    pub fn directory(&self, path: &str) -> Result<Vec<String>> {
        self.directory_tx(0, path)
    }

    /// A node's permissions.
    pub fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
        self.get_perms_tx(0, path)
    }

    /// Sets a node's permissions (the first entry: owner and default access).
    pub fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        self.set_perms_tx(0, path, perms)
    }

    /// The home path of a domain (`/local/domain/<domid>`).
    pub fn get_domain_path(&self, domid: u16) -> Result<String> {
        let d = format!("{domid}\0");
        let p = self.req(
            Op::GetDomainPath,
            XS_GET_DOMAIN_PATH,
            0,
            &[d.as_bytes()],
            "",
        )?;
        Ok(wire::text(&p))
    }

    /// Watches `path` (and everything below it) under `token`. Events arrive through the
    /// returned [`Watch`]; the first fires at once. Dropping it unwatches. A token may be used by
    /// one live watch of this handle at a time.
    pub fn watch(&self, path: &str, token: &str) -> Result<Watch<'_>> {
        check_path(Op::Watch, path)?;
        if token.is_empty() || token.contains('\0') {
            return Err(Error::Invalid {
                op: Op::Watch,
                what: format!("token {token:?} is empty or holds a NUL byte"),
            });
        }
        if !self.conn.add_token(token) {
            return Err(Error::Invalid {
                op: Op::Watch,
                what: format!("token {token:?} is in use by another watch of this handle"),
            });
        }
        let r = self.req(
            Op::Watch,
            XS_WATCH,
            0,
            &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"],
            path,
        );
        if let Err(e) = r {
            self.conn.remove_token(token);
            return Err(e);
        }
        Ok(Watch {
            xs: self,
            path: path.to_string(),
            token: token.to_string(),
            ended: false,
        })
    }

    /// Watches `path` under a token this handle makes up.
    pub fn watch_path(&self, path: &str) -> Result<Watch<'_>> {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.watch(path, &format!("xen-store-{}-{n}", std::process::id()))
    }

    /// Starts a transaction.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        let p = self.req(Op::TransactionStart, XS_TRANSACTION_START, 0, &[b"\0"], "")?;
        let t = wire::text(&p);
        let id = t.parse::<u32>().map_err(|_| Error::Protocol {
            op: Op::TransactionStart,
            what: format!("transaction id {t:?}"),
        })?;
        Ok(Transaction {
            xs: self,
            id,
            done: false,
        })
    }
}

impl AsFd for XenStore {
    /// The connection's descriptor (for polling only: reading it yourself breaks the handle).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.fd()
    }
}

/// A watch; unwatches when dropped. Iterating waits for events.
#[derive(Debug)]
pub struct Watch<'a> {
    xs: &'a XenStore,
    path: String,
    token: String,
    /// The iterator returned a connection failure: it ends.
    ended: bool,
}

impl Watch<'_> {
    /// The watched path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The watch's token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Waits for the next event.
    pub fn next_event(&self) -> Result<WatchEvent> {
        loop {
            if let Some(e) = self.xs.conn.next_event(&self.token, None)? {
                return Ok(e);
            }
        }
    }

    /// Waits at most `timeout` for the next event: `Ok(None)` when none came.
    pub fn next_event_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>> {
        self.xs.conn.next_event(&self.token, Some(timeout))
    }

    /// Unwatches now, reporting xenstored's answer (dropping unwatches too, silently).
    pub fn unwatch(self) -> Result<()> {
        let r = self.send_unwatch();
        self.xs.conn.remove_token(&self.token);
        std::mem::forget(self);
        r
    }

    fn send_unwatch(&self) -> Result<()> {
        self.xs
            .req(
                Op::Unwatch,
                XS_UNWATCH,
                0,
                &[self.path.as_bytes(), b"\0", self.token.as_bytes(), b"\0"],
                &self.path,
            )
            .map(drop)
    }
}

impl Iterator for Watch<'_> {
    type Item = Result<WatchEvent>;

    /// Waits for the next event. After an error that leaves the connection unusable (I/O,
    /// protocol) it returns that error once, then `None`; dropped events
    /// ([`Error::EventsLost`]) do not end it.
    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let r = self.next_event();
        if matches!(r, Err(Error::Io { .. } | Error::Protocol { .. })) {
            self.ended = true;
        }
        Some(r)
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let _ = self.send_unwatch();
        self.xs.conn.remove_token(&self.token);
    }
}

/// A transaction: reads see a snapshot, writes become visible together at
/// [`commit`](Transaction::commit). Dropped without commit, it aborts.
#[derive(Debug)]
pub struct Transaction<'a> {
    xs: &'a XenStore,
    id: u32,
    done: bool,
}

impl Transaction<'_> {
    /// The transaction id xenstored gave.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// [`XenStore::read`] inside the transaction.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.xs.read_tx(self.id, path)
    }

    /// [`XenStore::read_string`] inside the transaction.
    pub fn read_string(&self, path: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path)?).into_owned())
    }

    /// [`XenStore::write`] inside the transaction.
    pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
        self.xs.write_tx(self.id, path, value.as_ref())
    }

    /// [`XenStore::mkdir`] inside the transaction.
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.xs.mkdir_tx(self.id, path)
    }

    /// [`XenStore::rm`] inside the transaction.
    pub fn rm(&self, path: &str) -> Result<()> {
        self.xs.rm_tx(self.id, path)
    }

    /// [`XenStore::directory`] inside the transaction.
    pub fn directory(&self, path: &str) -> Result<Vec<String>> {
        self.xs.directory_tx(self.id, path)
    }

    /// [`XenStore::get_perms`] inside the transaction.
    pub fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
        self.xs.get_perms_tx(self.id, path)
    }

    /// [`XenStore::set_perms`] inside the transaction.
    pub fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        self.xs.set_perms_tx(self.id, path, perms)
    }

    fn end(&mut self, commit: bool) -> Result<()> {
        self.done = true;
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        match self
            .xs
            .req(Op::TransactionEnd, XS_TRANSACTION_END, self.id, &[arg], "")
        {
            Err(Error::Refused { errno, .. }) if commit && errno == libc::EAGAIN => {
                Err(Error::Retry { tx_id: self.id })
            }
            r => r.map(drop),
        }
    }

    /// Commits. [`Error::Retry`] when another change conflicted: nothing was written; run the
    /// transaction again.
    pub fn commit(mut self) -> Result<()> {
        self.end(true)
    }

    /// Aborts: nothing is written.
    pub fn abort(mut self) -> Result<()> {
        self.end(false)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.end(false);
        }
    }
}

#[cfg(test)]
mod tests;

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
