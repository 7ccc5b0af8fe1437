//! libxl's device-model handshake (feature `libxl`): what a device model started by `xl` must
//! answer so that libxl creates, unpauses and destroys the guest, as it does with QEMU.
//!
//! libxl starts the device model (xl's `device_model_override = "/path/to/your-dm"`, with
//! `device_model_version = "qemu-xen"`) with QEMU's command line. From it:
//! - `-xen-domid <domid>`: the guest;
//! - `-chardev socket,id=libxl-cmd,path=<socket>,server=on,wait=off` (or `fd=<n>`, a socket
//!   libxl opened for us) and the same for `libxenstat-cmd`: QMP monitors libxl connects to.
//!
//! Then libxl waits until `/local/domain/0/device-model/<domid>/state` reads `running`,
//! connects to the QMP socket, reads the greeting, sends `qmp_capabilities` and asks
//! `query-chardev` (and `query-vnc` etc. when configured). `xl unpause` sends `cont`;
//! `xl destroy` may send `quit` before killing the process.
//!
//! ```no_run
//! use xen_devicemodel::libxl::{DmArgs, Handshake, QmpEvent};
//!
//! let args = DmArgs::from_env()?;             // QEMU's command line, from libxl
//! let hs = Handshake::start(&args)?;          // QMP served on a thread from now on
//! // ... create the ioreq server for args.domid, map ranges, start serving ...
//! hs.ready()?;                                // device-model/<domid>/state = running
//! while let Some(ev) = hs.next_event() {
//!     match ev {
//!         QmpEvent::Cont => { /* the guest is being unpaused */ }
//!         QmpEvent::Quit => break,
//!         _ => {}
//!     }
//! }
//! # Ok::<(), xen_devicemodel::libxl::Error>(())
//! ```
//!
//! Replies: the greeting names QEMU 7.2 (libxl checks only that it is a greeting);
//! `query-status` says running, `query-chardev`, `query-cpus-fast`, `query-hotpluggable-cpus`
//! and `query-pci` return empty lists, `query-vnc` disabled, anything else `{}`. Each command
//! is also reported as a [`QmpEvent`]. A line longer than 64 KiB closes that connection.

// Unsafe: pipes, polls and adopts the descriptors libxl passes.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Errors of the handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line does not look like libxl's.
    #[error("device-model arguments: {0}")]
    Args(String),
    /// A QMP socket could not be set up.
    #[error("QMP socket {what}: {source}")]
    Socket {
        /// The socket (id and path or fd).
        what: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// XenStore refused or failed.
    #[error(transparent)]
    XenStore(#[from] xen_store::Error),
}

/// Where a QMP socket is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketAddr {
    /// A path to bind and listen on.
    Path(PathBuf),
    /// A listening socket libxl opened and passed to us.
    Fd(RawFd),
}

/// One `-chardev socket,...` of the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QmpSocket {
    /// The chardev id (`libxl-cmd`, `libxenstat-cmd`).
    pub id: String,
    /// Where it is.
    pub addr: SocketAddr,
}

/// What libxl told the device model on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmArgs {
    /// The guest (`-xen-domid`).
    pub domid: u16,
    /// The QMP sockets to serve.
    pub qmp: Vec<QmpSocket>,
    /// The domain the device model runs in, for the xenstore state key (0: dom0).
    pub dm_domid: u16,
    /// The whole command line (without the program name), for whatever else you need from it.
    pub args: Vec<String>,
}

fn chardev_socket(spec: &str) -> Option<QmpSocket> {
    let rest = spec.strip_prefix("socket,")?;
    let mut id = None;
    let mut addr = None;
    for part in rest.split(',') {
        if let Some(v) = part.strip_prefix("id=") {
            id = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("path=") {
            addr = Some(SocketAddr::Path(v.into()));
        } else if let Some(v) = part.strip_prefix("fd=") {
            addr = v.parse().ok().map(SocketAddr::Fd);
        }
    }
    Some(QmpSocket {
        id: id?,
        addr: addr?,
    })
}

impl DmArgs {
    /// Parses libxl's command line (without the program name).
    pub fn parse<I, S>(args: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let mut domid = None;
        let mut qmp = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-xen-domid" => {
                    let v = it
                        .next()
                        .ok_or_else(|| Error::Args("-xen-domid without a value".into()))?;
                    domid = Some(
                        v.parse::<u16>()
                            .map_err(|_| Error::Args(format!("-xen-domid {v:?}")))?,
                    );
                }
                "-chardev" => {
                    if let Some(s) = it.next().and_then(|v| chardev_socket(v)) {
                        qmp.push(s);
                    }
                }
                _ => {}
            }
        }
        let domid = domid.ok_or_else(|| Error::Args("no -xen-domid".into()))?;
        Ok(DmArgs {
            domid,
            qmp,
            dm_domid: 0,
            args,
        })
    }

    /// Parses this process's command line.
    pub fn from_env() -> Result<Self, Error> {
        Self::parse(std::env::args().skip(1))
    }

    /// The xenstore node libxl waits on: `/local/domain/<dm_domid>/device-model/<domid>/state`.
    pub fn state_path(&self) -> String {
        format!(
            "/local/domain/{}/device-model/{}/state",
            self.dm_domid, self.domid
        )
    }
}

/// A QMP command libxl (or another client) sent, as reported by [`Handshake::next_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QmpEvent {
    /// A client connected to the socket with this id.
    Connected(String),
    /// `cont`: the guest is being unpaused.
    Cont,
    /// `stop`: the guest is being paused.
    Stop,
    /// `quit`: the toolstack wants the device model to exit.
    Quit,
    /// Any other command, by name.
    Command(String),
}

/// Longest QMP line accepted.
const LINE_MAX: usize = 64 * 1024;
const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "xen-rs"}, "capabilities": []}}"#;
/// How often a thread reading an open QMP connection looks at the stop flag.
const TICK: Duration = Duration::from_millis(200);

/// The reply to a command.
fn reply_for(cmd: &str) -> &'static str {
    match cmd {
        "query-status" => r#"{"status": "running", "singlestep": false, "running": true}"#,
        "query-chardev"
        | "query-cpus-fast"
        | "query-cpus"
        | "query-hotpluggable-cpus"
        | "query-pci" => "[]",
        "query-vnc" => r#"{"enabled": false}"#,
        "query-version" => r#"{"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "xen-rs"}"#,
        _ => "{}",
    }
}

/// The value of `"key": "string"` or `"key": number` in a one-line JSON object (enough for
/// QMP's requests; nothing here is trusted beyond picking the reply).
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("\"{key}\"");
    let rest = line[line.find(&k)? + k.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        Some(&s[..s.find('"')?])
    } else {
        let end = rest.find([',', '}', ' ']).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

/// The reply line to one request line, and the command.
fn answer(line: &str) -> (String, String) {
    let cmd = json_field(line, "execute").unwrap_or_default().to_string();
    let ret = reply_for(&cmd);
    let resp = match json_field(line, "id") {
        Some(id) if id.parse::<i64>().is_ok() => format!(r#"{{"return": {ret}, "id": {id}}}"#),
        Some(id) => {
            let id: String = id.chars().filter(|c| *c != '"' && *c != '\\').collect();
            format!(r#"{{"return": {ret}, "id": "{id}"}}"#)
        }
        None => format!(r#"{{"return": {ret}}}"#),
    };
    (resp, cmd)
}

/// Reads one line of at most [`LINE_MAX`] bytes: `Ok(None)` at end of stream or when the
/// stop flag is set, `Err` for an overlong line.
fn read_line(
    r: &mut BufReader<UnixStream>,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
) -> std::io::Result<Option<()>> {
    buf.clear();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let room = (LINE_MAX + 1).saturating_sub(buf.len()) as u64;
        match r.by_ref().take(room).read_until(b'\n', buf) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(_) if buf.ends_with(b"\n") => return Ok(Some(())),
            Ok(0) => return Ok(None),
            Ok(_) if buf.len() > LINE_MAX => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "QMP line too long",
                ))
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

fn serve_conn(stream: UnixStream, id: &str, events: &Sender<QmpEvent>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(TICK));
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let _ = events.send(QmpEvent::Connected(id.to_string()));
    if w.write_all(format!("{GREETING}\r\n").as_bytes()).is_err() {
        return;
    }
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    while let Ok(Some(())) = read_line(&mut r, &mut buf, stop) {
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (resp, cmd) = answer(line);
        if w.write_all(format!("{resp}\r\n").as_bytes()).is_err() {
            return;
        }
        let ev = match cmd.as_str() {
            "cont" => QmpEvent::Cont,
            "stop" => QmpEvent::Stop,
            "quit" => QmpEvent::Quit,
            _ => QmpEvent::Command(cmd),
        };
        let _ = events.send(ev);
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits until `fd` is readable (true) or `wake` is (false: its write end was closed).
fn readable(fd: BorrowedFd<'_>, wake: BorrowedFd<'_>) -> std::io::Result<bool> {
    loop {
        let mut p = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `p` is an array of two valid pollfds for the duration of the call; both
        // descriptors are borrowed for it.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if p[1].revents != 0 {
            return Ok(false);
        }
        if p[0].revents != 0 {
            return Ok(true);
        }
    }
}

/// Descriptors already taken over from the command line: each is adopted once per process.
static ADOPTED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Takes ownership of the listening socket libxl passed as `fd=N`: refused when the descriptor
/// is not open, is not a socket, or was already adopted (so two handshakes never own one fd).
fn adopt(id: &str, fd: RawFd) -> Result<UnixListener, Error> {
    let err = |what: &str| Error::Socket {
        what: format!("{id} fd={fd}"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string()),
    };
    let mut adopted = ADOPTED.lock().unwrap_or_else(|p| p.into_inner());
    if fd < 0 || adopted.contains(&fd) {
        return Err(err("not a descriptor this process may take over"));
    }
    // SAFETY: fstat only writes the stat buffer it is given; an invalid fd gives EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(Error::Socket {
            what: format!("{id} fd={fd}"),
            source: std::io::Error::last_os_error(),
        });
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(err("not a socket"));
    }
    adopted.push(fd);
    // SAFETY: libxl passed this open socket to us on the command line; it is adopted once per
    // process (checked above), so no other owner exists in this process.
    Ok(unsafe { UnixListener::from_raw_fd(fd) })
}

/// The running handshake: QMP served on one thread per socket; stops and joins them when
/// dropped. Events (the commands received) wait in a queue for [`next_event`](Self::next_event).
#[derive(Debug)]
pub struct Handshake {
    args: DmArgs,
    stop: Arc<AtomicBool>,
    /// Closing it wakes the threads waiting for clients.
    wake: Option<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
    events: Mutex<Receiver<QmpEvent>>,
}

impl Handshake {
    /// Listens on every QMP socket of `args` and starts answering QMP on them.
    pub fn start(args: &DmArgs) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake_rd, wake_wr) = pipe().map_err(|source| Error::Socket {
            what: "pipe".into(),
            source,
        })?;
        let wake_rd = Arc::new(wake_rd);
        let (tx, rx) = channel();
        let mut listeners = Vec::new();
        for s in &args.qmp {
            let l = match &s.addr {
                SocketAddr::Path(p) => {
                    let _ = std::fs::remove_file(p);
                    UnixListener::bind(p).map_err(|source| Error::Socket {
                        what: format!("{} at {}", s.id, p.display()),
                        source,
                    })?
                }
                SocketAddr::Fd(fd) => adopt(&s.id, *fd)?,
            };
            l.set_nonblocking(true).map_err(|source| Error::Socket {
                what: s.id.clone(),
                source,
            })?;
            listeners.push((s.id.clone(), l));
        }
        let mut threads = Vec::new();
        for (id, l) in listeners {
            let stop = stop.clone();
            let tx = tx.clone();
            let wake = wake_rd.clone();
            threads.push(std::thread::spawn(move || {
                // Idle, the thread sleeps in poll until a client connects or the handshake is
                // dropped (the pipe's write end closes): no periodic wake-ups.
                while !stop.load(Ordering::Relaxed) {
                    match readable(l.as_fd(), wake.as_fd()) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(_) => {
                            std::thread::sleep(TICK);
                            continue;
                        }
                    }
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            serve_conn(s, &id, &tx, &stop);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // (EMFILE and friends: do not spin.)
                        Err(_) => std::thread::sleep(TICK),
                    }
                }
            }));
        }
        Ok(Handshake {
            args: args.clone(),
            stop,
            wake: Some(wake_wr),
            threads,
            events: Mutex::new(rx),
        })
    }

    /// Tells libxl the device model is up: writes `running` to
    /// [`DmArgs::state_path`] (through `/run/xenstored/socket` or `/dev/xen/xenbus`).
    pub fn ready(&self) -> Result<(), Error> {
        let xs = xen_store::XenStore::open()?;
        self.ready_with(&xs)
    }

    /// [`ready`](Self::ready) through an open XenStore handle.
    pub fn ready_with(&self, xs: &xen_store::XenStore) -> Result<(), Error> {
        xs.write(&self.args.state_path(), "running")?;
        Ok(())
    }

    /// The arguments it serves.
    pub fn args(&self) -> &DmArgs {
        &self.args
    }

    /// Waits for the next QMP command (`None` once every socket thread has ended).
    pub fn next_event(&self) -> Option<QmpEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recv()
            .ok()
    }

    /// Waits at most `timeout` for the next QMP command.
    pub fn next_event_timeout(&self, timeout: Duration) -> Option<QmpEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recv_timeout(timeout)
            .ok()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.wake.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libxl_argv() {
        let a = DmArgs::parse([
            "-xen-domid",
            "7",
            "-chardev",
            "socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-7,server=on,wait=off",
            "-mon",
            "chardev=libxl-cmd,mode=control",
            "-chardev",
            "socket,id=libxenstat-cmd,fd=9,server=on,wait=off",
            "-chardev",
            "pty,id=serial0",
            "-S",
        ])
        .unwrap();
        assert_eq!(a.domid, 7);
        assert_eq!(
            a.qmp,
            vec![
                QmpSocket {
                    id: "libxl-cmd".into(),
                    addr: SocketAddr::Path("/var/run/xen/qmp-libxl-7".into())
                },
                QmpSocket {
                    id: "libxenstat-cmd".into(),
                    addr: SocketAddr::Fd(9)
                },
            ]
        );
        assert_eq!(a.state_path(), "/local/domain/0/device-model/7/state");
        assert!(DmArgs::parse(["-xen-domid", "x"]).is_err());
        assert!(DmArgs::parse(["-S"]).is_err());
    }

    #[test]
    fn adopts_only_open_sockets_once() {
        assert!(adopt("x", -1).is_err());
        // stdin of a test is not a socket (or not open): refused either way.
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        assert!(adopt("x", f.as_raw_fd()).is_err());
        let l = UnixListener::bind(
            std::env::temp_dir().join(format!("xen-dm-adopt-{}", std::process::id())),
        )
        .unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(l);
        let owned = adopt("x", fd).unwrap();
        assert!(adopt("x", fd).is_err(), "adopted twice");
        drop(owned);
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("xen-dm-adopt-{}", std::process::id())),
        );
    }

    #[test]
    fn answers_qmp() {
        let (r, c) = answer(r#"{"execute":"query-chardev","id":2020372736}"#);
        assert_eq!(r, r#"{"return": [], "id": 2020372736}"#);
        assert_eq!(c, "query-chardev");
        let (r, c) = answer(r#"{ "execute" : "cont", "id": "x1" }"#);
        assert_eq!(r, r#"{"return": {}, "id": "x1"}"#);
        assert_eq!(c, "cont");
        assert_eq!(
            answer(r#"{"execute":"qmp_capabilities"}"#).0,
            r#"{"return": {}}"#
        );
    }

    #[test]
    fn serves_a_qmp_client_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("xen-dm-libxl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp");
        let args = DmArgs::parse([
            "-xen-domid".to_string(),
            "3".to_string(),
            "-chardev".to_string(),
            format!(
                "socket,id=libxl-cmd,path={},server=on,wait=off",
                path.display()
            ),
        ])
        .unwrap();
        let hs = Handshake::start(&args).unwrap();
        let s = UnixStream::connect(&path).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(r#"{"QMP""#), "{line}");
        for (req, want) in [
            (
                r#"{"execute":"qmp_capabilities","id":1}"#,
                r#"{"return": {}, "id": 1}"#,
            ),
            (
                r#"{"execute":"query-chardev","id":2}"#,
                r#"{"return": [], "id": 2}"#,
            ),
            (r#"{"execute":"cont","id":3}"#, r#"{"return": {}, "id": 3}"#),
        ] {
            w.write_all(format!("{req}\n").as_bytes()).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), want);
        }
        let t = Duration::from_secs(5);
        assert_eq!(
            hs.next_event_timeout(t),
            Some(QmpEvent::Connected("libxl-cmd".into()))
        );
        assert_eq!(
            hs.next_event_timeout(t),
            Some(QmpEvent::Command("qmp_capabilities".into()))
        );
        assert_eq!(
            hs.next_event_timeout(t),
            Some(QmpEvent::Command("query-chardev".into()))
        );
        assert_eq!(hs.next_event_timeout(t), Some(QmpEvent::Cont));
        // An overlong line closes the connection, nothing else.
        w.write_all(&vec![b'x'; LINE_MAX + 10]).unwrap_or(());
        line.clear();
        assert_eq!(r.read_line(&mut line).unwrap_or(0), 0);
        drop(hs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
