//! The connection: one file descriptor (the xenstored socket or `/dev/xen/xenbus`), shared by
//! any number of threads. Requests carry a request id and may be in flight together; whichever
//! thread needs a message takes the *reader* role, reads without holding the state lock, and
//! files what it read: replies for their waiters, watch events in their token's bounded queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xen_sys::xs_wire::{XS_ERROR, XS_WATCH_EVENT};

use crate::error::{Error, Op, Result};
use crate::wire::{self, Msg, HEADER, PAYLOAD_MAX};

/// The transport.
#[derive(Debug)]
pub(crate) enum Io {
    Socket(UnixStream),
    Device(File),
}

impl Io {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Io::Socket(s) => s.as_fd(),
            Io::Device(f) => f.as_fd(),
        }
    }

    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Socket(s) => (&*s).read(buf),
            Io::Device(f) => (&*f).read(buf),
        }
    }

    /// Writes one message in one call where possible (the xenbus device also accepts it in
    /// pieces).
    fn write_all(&self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Socket(s) => (&*s).write_all(buf),
            Io::Device(f) => (&*f).write_all(buf),
        }
    }
}

/// At most this many undelivered watch events are kept per token.
pub(crate) const EVENT_QUEUE_MAX: usize = 1024;

/// One delivered watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed (or the watched path itself, for the event every new watch gets).
    pub path: String,
    /// The watch's token.
    pub token: String,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<WatchEvent>,
    lost: u64,
}

#[derive(Debug, Default)]
struct State {
    /// A thread is reading the fd.
    reading: bool,
    /// Request ids whose callers wait for a reply.
    waiting: HashSet<u32>,
    replies: HashMap<u32, Msg>,
    /// Events by token (tokens of live watches only).
    queues: HashMap<String, Queue>,
    /// Set after a protocol violation or a failed read: every later call fails.
    broken: Option<String>,
    next_req: u32,
}

#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    /// Bytes read and not yet a whole message; only the reader touches it.
    inbuf: Mutex<Vec<u8>>,
    /// Serialises whole requests on the wire.
    wlock: Mutex<()>,
    state: Mutex<State>,
    cv: Condvar,
}

/// What a waiter waits for.
enum Want<'a> {
    Reply(u32),
    Event(&'a str),
}

enum Got {
    Reply(Msg),
    Event(WatchEvent),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    pub(crate) fn new(io: Io) -> Self {
        Conn {
            io,
            inbuf: Mutex::new(Vec::with_capacity(HEADER + PAYLOAD_MAX)),
            wlock: Mutex::new(()),
            state: Mutex::new(State {
                next_req: 1,
                ..State::default()
            }),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.io.fd()
    }

    /// Sends a request and waits for its reply; an `XS_ERROR` reply becomes
    /// [`Error::Refused`] (about `path`).
    pub(crate) fn request(
        &self,
        op: Op,
        ty: u32,
        tx_id: u32,
        parts: &[&[u8]],
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > PAYLOAD_MAX {
            return Err(Error::Invalid {
                op,
                what: format!("request of {len} bytes (the limit is {PAYLOAD_MAX})"),
            });
        }
        let mut msg = Vec::with_capacity(HEADER + len);
        let req_id = {
            let mut st = lock(&self.state);
            if let Some(b) = &st.broken {
                return Err(Error::Protocol {
                    op,
                    what: b.clone(),
                });
            }
            let id = st.next_req;
            st.next_req = st.next_req.wrapping_add(1).max(1);
            st.waiting.insert(id);
            id
        };
        // (`len` fits: it is at most PAYLOAD_MAX.)
        msg.extend_from_slice(&wire::header(ty, req_id, tx_id, len as u32));
        for p in parts {
            msg.extend_from_slice(p);
        }
        let sent = {
            let _w = lock(&self.wlock);
            self.io.write_all(&msg)
        };
        if let Err(e) = sent {
            let mut st = lock(&self.state);
            st.waiting.remove(&req_id);
            st.broken = Some(format!("write failed: {e}"));
            return Err(Error::Io { op, source: e });
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let reply = match self.wait(op, Want::Reply(req_id), deadline, timeout) {
            Ok(Got::Reply(m)) => m,
            Ok(Got::Event(_)) => unreachable_event(op)?,
            Err(e) => {
                lock(&self.state).waiting.remove(&req_id);
                return Err(e);
            }
        };
        if reply.ty == XS_ERROR {
            let name = wire::text(&reply.payload);
            return Err(Error::Refused {
                op,
                path: path.to_string(),
                errno: wire::errno_of(&name),
                name,
            });
        }
        if reply.ty != ty {
            return Err(Error::Protocol {
                op,
                what: format!("reply of type {} to a request of type {ty}", reply.ty),
            });
        }
        Ok(reply.payload)
    }

    /// Starts queueing events for `token` (before the watch request, so none is missed).
    pub(crate) fn add_token(&self, token: &str) -> bool {
        let mut st = lock(&self.state);
        if st.queues.contains_key(token) {
            return false;
        }
        st.queues.insert(token.to_string(), Queue::default());
        true
    }

    /// Stops queueing events for `token` and drops the ones queued.
    pub(crate) fn remove_token(&self, token: &str) {
        lock(&self.state).queues.remove(token);
    }

    /// The next event for `token`, waiting until `deadline`: `Ok(None)` when it passed.
    pub(crate) fn next_event(
        &self,
        token: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<WatchEvent>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        match self.wait(Op::WatchEvent, Want::Event(token), deadline, timeout) {
            Ok(Got::Event(e)) => Ok(Some(e)),
            Ok(Got::Reply(_)) => unreachable_event(Op::WatchEvent),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn take(st: &mut State, want: &Want<'_>) -> Result<Option<Got>> {
        match want {
            Want::Reply(id) => Ok(st.replies.remove(id).map(|m| {
                st.waiting.remove(id);
                Got::Reply(m)
            })),
            Want::Event(token) => {
                let Some(q) = st.queues.get_mut(*token) else {
                    return Err(Error::Invalid {
                        op: Op::WatchEvent,
                        what: format!("no watch with token {token:?}"),
                    });
                };
                if q.lost > 0 {
                    let lost = std::mem::take(&mut q.lost);
                    return Err(Error::EventsLost {
                        token: token.to_string(),
                        lost,
                    });
                }
                Ok(q.events.pop_front().map(Got::Event))
            }
        }
    }

    fn wait(
        &self,
        op: Op,
        want: Want<'_>,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Got> {
        let mut st = lock(&self.state);
        loop {
            if let Some(g) = Self::take(&mut st, &want)? {
                return Ok(g);
            }
            if let Some(b) = &st.broken {
                return Err(Error::Protocol {
                    op,
                    what: b.clone(),
                });
            }
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout {
                            op,
                            timeout: timeout.unwrap_or_default(),
                        });
                    }
                    Some(d - now)
                }
                None => None,
            };
            if st.reading {
                st = match left {
                    Some(l) => {
                        self.cv
                            .wait_timeout(st, l)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                };
                continue;
            }
            st.reading = true;
            drop(st);
            let read = self.read_some(op, left);
            st = lock(&self.state);
            st.reading = false;
            match read {
                Ok(msgs) => {
                    for m in msgs {
                        Self::file(&mut st, m);
                    }
                }
                Err(ReadError::Timeout) => {}
                Err(ReadError::Fatal(what, e)) => {
                    st.broken = Some(what);
                    self.cv.notify_all();
                    return Err(e);
                }
            }
            self.cv.notify_all();
        }
    }

    /// Puts a message where its taker will look.
    fn file(st: &mut State, m: Msg) {
        if m.ty == XS_WATCH_EVENT {
            let mut s = wire::strings(&m.payload).into_iter();
            let (Some(path), Some(token)) = (s.next(), s.next()) else {
                return; // malformed: nobody can take it
            };
            if let Some(q) = st.queues.get_mut(&token) {
                if q.events.len() >= EVENT_QUEUE_MAX {
                    q.lost += 1;
                } else {
                    q.events.push_back(WatchEvent { path, token });
                }
            }
        } else if st.waiting.contains(&m.req_id) {
            st.replies.insert(m.req_id, m);
        }
        // Anything else (a reply nobody waits for any more, after a timeout) is dropped.
    }

    /// Waits for the fd to be readable (up to `left`), reads once, returns the whole messages.
    fn read_some(&self, op: Op, left: Option<Duration>) -> Result<Vec<Msg>, ReadError> {
        let mut inbuf = lock(&self.inbuf);
        let mut msgs = Vec::new();
        // Whole messages may already be buffered.
        loop {
            match wire::take(&mut inbuf) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(what) => return Err(ReadError::protocol(op, what)),
            }
        }
        if !msgs.is_empty() {
            return Ok(msgs);
        }
        if !poll_in(self.io.fd(), left).map_err(|e| ReadError::io(op, e))? {
            return Err(ReadError::Timeout);
        }
        let mut chunk = [0u8; 4096];
        // Never buffer more than one whole message.
        let room = (HEADER + PAYLOAD_MAX - inbuf.len()).min(chunk.len());
        let n = loop {
            match self.io.read(&mut chunk[..room]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(msgs),
                Err(e) => return Err(ReadError::io(op, e)),
            }
        };
        if n == 0 {
            return Err(ReadError::io(
                op,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "xenstored closed the connection",
                ),
            ));
        }
        inbuf.extend_from_slice(&chunk[..n]);
        loop {
            match wire::take(&mut inbuf) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(what) => return Err(ReadError::protocol(op, what)),
            }
        }
        Ok(msgs)
    }
}

fn unreachable_event<T>(op: Op) -> Result<T> {
    Err(Error::Protocol {
        op,
        what: "internal: wrong kind of message delivered".into(),
    })
}

enum ReadError {
    Timeout,
    Fatal(String, Error),
}

impl ReadError {
    fn io(op: Op, e: std::io::Error) -> Self {
        ReadError::Fatal(format!("read failed: {e}"), Error::Io { op, source: e })
    }
    fn protocol(op: Op, what: String) -> Self {
        ReadError::Fatal(what.clone(), Error::Protocol { op, what })
    }
}

/// Waits until `fd` is readable (true) or `left` passed (false).
fn poll_in(fd: BorrowedFd<'_>, left: Option<Duration>) -> std::io::Result<bool> {
    let start = Instant::now();
    loop {
        let ms = match left {
            None => -1,
            Some(l) => {
                let rest = l.saturating_sub(start.elapsed());
                // Round up so a short wait does not become a busy loop.
                i32::try_from(rest.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call; the fd is borrowed
        // from the connection, which outlives the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            if left.is_some_and(|l| start.elapsed() >= l) {
                return Ok(false);
            }
            continue;
        }
        return Ok(true);
    }
}
