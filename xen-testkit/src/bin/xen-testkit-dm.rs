//! `xen-testkit-dm`: a fake device model, so HVM guests run without QEMU in dom0.
//!
//! libxl starts it (xl's `device_model_override`) with QEMU's command line. It:
//! 1. listens on the QMP sockets libxl names (`-chardev socket,id=libxl-cmd,path=...` and the
//!    libxenstat one), or uses the pre-opened socket `fd=N`;
//! 2. writes `/local/domain/0/device-model/<domid>/state = running` (with `xenstore-write`), which
//!    is what libxl waits for;
//! 3. answers QMP: the greeting, `qmp_capabilities`, `query-status`, `query-chardev`,
//!    `query-vnc`, `query-cpus-fast`, `quit`, and `{}` for anything else;
//! 4. logs its arguments and every QMP message to stderr (libxl's `qemu-dm-<name>.log`) and to
//!    `/var/log/xen/xen-testkit-dm-<domid>.log`.
//!
//! It emulates no device: I/O nobody claims reads as all-ones and writes vanish (Xen's default).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::{Arc, Mutex};

type Log = Arc<Mutex<Option<std::fs::File>>>;

fn log(l: &Log, msg: &str) {
    eprintln!("xen-testkit-dm: {msg}");
    if let Ok(mut g) = l.lock() {
        if let Some(f) = g.as_mut() {
            let _ = writeln!(f, "{msg}");
        }
    }
}

/// A socket libxl told us to serve.
enum Sock {
    Path(String),
    Fd(i32),
}

fn chardev_socket(spec: &str) -> Option<(String, Sock)> {
    let mut id = None;
    let mut sock = None;
    for part in spec.split(',') {
        if let Some(v) = part.strip_prefix("id=") {
            id = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("path=") {
            sock = Some(Sock::Path(v.to_string()));
        } else if let Some(v) = part.strip_prefix("fd=") {
            sock = v.parse().ok().map(Sock::Fd);
        }
    }
    if !spec.starts_with("socket,") {
        return None;
    }
    Some((id?, sock?))
}

/// The value of `"key": "string"` or `"key": number` in a one-line JSON object.
fn json_field(line: &str, key: &str) -> Option<String> {
    let k = format!("\"{key}\"");
    let rest = line[line.find(&k)? + k.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        Some(s[..s.find('"')?].to_string())
    } else {
        let end = rest.find([',', '}', ' ']).unwrap_or(rest.len());
        Some(rest[..end].to_string())
    }
}

fn reply_for(cmd: &str) -> &'static str {
    match cmd {
        "query-status" => r#"{"status": "running", "singlestep": false, "running": true}"#,
        "query-chardev"
        | "query-cpus-fast"
        | "query-cpus"
        | "query-hotpluggable-cpus"
        | "query-pci" => "[]",
        "query-vnc" => r#"{"enabled": false}"#,
        "query-version" => {
            r#"{"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "xen-testkit-dm"}"#
        }
        _ => "{}",
    }
}

fn serve_conn(stream: UnixStream, name: &str, log_: &Log) {
    let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "xen-testkit-dm"}, "capabilities": []}}"#;
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => return log(log_, &format!("{name}: clone: {e}")),
    };
    log(log_, &format!("{name}: connection"));
    if w.write_all(format!("{greeting}\r\n").as_bytes()).is_err() {
        return;
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        log(log_, &format!("{name}: <- {line}"));
        let cmd = json_field(line, "execute").unwrap_or_default();
        let ret = reply_for(&cmd);
        let resp = match json_field(line, "id") {
            Some(id) if id.parse::<i64>().is_ok() => format!(r#"{{"return": {ret}, "id": {id}}}"#),
            Some(id) => format!(r#"{{"return": {ret}, "id": "{id}"}}"#),
            None => format!(r#"{{"return": {ret}}}"#),
        };
        log(log_, &format!("{name}: -> {resp}"));
        if w.write_all(format!("{resp}\r\n").as_bytes()).is_err() {
            break;
        }
        if cmd == "quit" {
            log(log_, "quit");
            std::process::exit(0);
        }
    }
    log(log_, &format!("{name}: closed"));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let domid = args
        .iter()
        .position(|a| a == "-xen-domid")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let file = std::fs::create_dir_all("/var/log/xen").ok().and_then(|()| {
        std::fs::File::create(format!("/var/log/xen/xen-testkit-dm-{domid}.log")).ok()
    });
    let log_: Log = Arc::new(Mutex::new(file));
    log(
        &log_,
        &format!("started for domain {domid}: {}", args.join(" ")),
    );

    let mut listeners = Vec::new();
    for w in args.windows(2) {
        if w[0] != "-chardev" {
            continue;
        }
        let Some((id, sock)) = chardev_socket(&w[1]) else {
            continue;
        };
        let l = match sock {
            Sock::Path(p) => {
                let _ = std::fs::remove_file(&p);
                match UnixListener::bind(&p) {
                    Ok(l) => l,
                    Err(e) => {
                        log(&log_, &format!("{id}: bind {p}: {e}"));
                        continue;
                    }
                }
            }
            // SAFETY: libxl passed us this listening socket's descriptor, which nothing else in
            // this process owns.
            Sock::Fd(fd) => unsafe { UnixListener::from_raw_fd(fd) },
        };
        log(&log_, &format!("{id}: listening"));
        listeners.push((id, l));
    }

    if domid != "unknown" {
        let path = format!("/local/domain/0/device-model/{domid}/state");
        match Command::new("xenstore-write")
            .args([&path, "running"])
            .status()
        {
            Ok(s) if s.success() => log(&log_, &format!("wrote {path} = running")),
            Ok(s) => log(&log_, &format!("xenstore-write {path} failed: {s}")),
            Err(e) => log(&log_, &format!("xenstore-write {path}: {e}")),
        }
    }

    let mut threads = Vec::new();
    for (id, l) in listeners {
        let lg = log_.clone();
        threads.push(std::thread::spawn(move || {
            for conn in l.incoming() {
                match conn {
                    Ok(s) => serve_conn(s, &id, &lg),
                    Err(e) => log(&lg, &format!("{id}: accept: {e}")),
                }
            }
        }));
    }
    if threads.is_empty() {
        // Nothing to serve: stay alive like a device model would, until libxl kills us.
        loop {
            std::thread::park();
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libxl_qmp_requests() {
        let l = r#"{"execute":"query-chardev","id":2020372736}"#;
        assert_eq!(json_field(l, "execute").as_deref(), Some("query-chardev"));
        assert_eq!(json_field(l, "id").as_deref(), Some("2020372736"));
        assert_eq!(
            json_field(r#"{ "execute" : "cont" }"#, "execute").as_deref(),
            Some("cont")
        );
        assert_eq!(json_field(l, "arguments"), None);
        assert_eq!(
            reply_for("query-status"),
            r#"{"status": "running", "singlestep": false, "running": true}"#
        );
        assert_eq!(reply_for("anything-else"), "{}");
    }

    #[test]
    fn finds_the_qmp_sockets() {
        let (id, s) =
            chardev_socket("socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-1,server=on,wait=off")
                .unwrap();
        assert_eq!(id, "libxl-cmd");
        assert!(matches!(s, Sock::Path(p) if p == "/var/run/xen/qmp-libxl-1"));
        let (_, s) = chardev_socket("socket,id=libxl-cmd,fd=7,server=on,wait=off").unwrap();
        assert!(matches!(s, Sock::Fd(7)));
        assert!(chardev_socket("pty,id=libxl-channel0").is_none());
    }
}
