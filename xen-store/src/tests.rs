//! Host tests against a small stand-in daemon on a socket pair.

use super::*;
use crate::wire::{header, name_of, take};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use xen_sys::xs_wire::{XS_DIRECTORY_PART, XS_ERROR, XS_WATCH_EVENT};

/// A tiny xenstored: a flat map, one watch, transactions that conflict when `conflict` is set.
fn daemon(mut s: UnixStream, conflict: bool) {
    let mut tree: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut watch: Option<(String, String)> = None;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some(m)) = take(&mut buf) {
            let strs = wire::strings(&m.payload);
            let first = strs.first().cloned().unwrap_or_default();
            let mut events = Vec::new();
            let reply: Result<Vec<u8>, i32> = match m.ty {
                XS_READ if first == "/huge" => {
                    // A hostile header: more than the payload limit.
                    let _ = s.write_all(&header(XS_READ, m.req_id, 0, 1 << 30));
                    continue;
                }
                XS_READ => tree.get(&first).cloned().ok_or(libc::ENOENT),
                XS_WRITE => {
                    let value = m.payload[first.len() + 1..].to_vec();
                    tree.insert(first.clone(), value);
                    if let Some((p, t)) = &watch {
                        if first.starts_with(p.as_str()) {
                            events.push((first.clone(), t.clone()));
                        }
                    }
                    Ok(b"OK\0".to_vec())
                }
                XS_DIRECTORY | XS_DIRECTORY_PART => {
                    let pre = format!("{first}/");
                    let mut all = Vec::new();
                    for k in tree.keys().filter_map(|k| k.strip_prefix(&pre)) {
                        all.extend_from_slice(k.as_bytes());
                        all.push(0);
                    }
                    if m.ty == XS_DIRECTORY {
                        // Like xenstored, but with a small limit to exercise the parts.
                        if all.len() > PART {
                            Err(libc::E2BIG)
                        } else {
                            Ok(all)
                        }
                    } else {
                        // generation, then whole names from the offset up to PART bytes, and
                        // an empty name after the last.
                        let off: usize = strs[1].parse().unwrap();
                        let mut out = format!("{}\0", tree.len()).into_bytes();
                        let mut end = off;
                        while end < all.len() {
                            let n = all[end..].iter().position(|&b| b == 0).unwrap() + 1;
                            if end + n - off > PART {
                                break;
                            }
                            end += n;
                        }
                        out.extend_from_slice(&all[off.min(all.len())..end]);
                        if end >= all.len() {
                            out.push(0);
                        }
                        Ok(out)
                    }
                }
                XS_WATCH => {
                    watch = Some((first.clone(), strs[1].clone()));
                    events.push((first.clone(), strs[1].clone()));
                    Ok(b"OK\0".to_vec())
                }
                XS_UNWATCH => {
                    watch = None;
                    Ok(b"OK\0".to_vec())
                }
                XS_TRANSACTION_START => Ok(b"17\0".to_vec()),
                XS_TRANSACTION_END if conflict && first == "T" => Err(libc::EAGAIN),
                XS_TRANSACTION_END => Ok(b"OK\0".to_vec()),
                XS_GET_PERMS => Ok(b"w0\0r5\0".to_vec()),
                _ => Err(libc::EINVAL),
            };
            let (ty, payload) = match reply {
                Ok(p) => (m.ty, p),
                Err(e) => (XS_ERROR, format!("{}\0", name_of(e)).into_bytes()),
            };
            let mut out = header(ty, m.req_id, m.tx_id, payload.len() as u32).to_vec();
            out.extend_from_slice(&payload);
            // Events after the reply, as xenstored does.
            for (p, t) in events {
                let ev = format!("{p}\0{t}\0");
                out.extend_from_slice(&header(XS_WATCH_EVENT, 0, 0, ev.len() as u32));
                out.extend_from_slice(ev.as_bytes());
            }
            if s.write_all(&out).is_err() {
                return;
            }
        }
    }
}

/// The stand-in daemon's limit for one directory reply.
const PART: usize = 64;

fn pair(conflict: bool) -> XenStore {
    let (a, b) = UnixStream::pair().unwrap();
    std::thread::spawn(move || daemon(b, conflict));
    XenStore::from_stream(a)
}

#[test]
fn read_write_directory() {
    let xs = pair(false);
    xs.write("/a/x", "1").unwrap();
    xs.write("/a/y", b"two").unwrap();
    assert_eq!(xs.read_string("/a/x").unwrap(), "1");
    assert_eq!(xs.read("/a/y").unwrap(), b"two");
    assert_eq!(xs.directory("/a").unwrap(), vec!["x", "y"]);
    let e = xs.read("/missing").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.errno(), Some(libc::ENOENT));
    assert!(matches!(e, Error::Refused { op: Op::Read, ref path, .. } if path == "/missing"));
    assert_eq!(
        xs.get_perms("/a").unwrap(),
        vec![
            Perm {
                domid: 0,
                access: Access::Write
            },
            Perm {
                domid: 5,
                access: Access::Read
            }
        ]
    );
}

#[test]
fn long_directories_are_read_in_parts() {
    let xs = pair(false);
    let mut want = Vec::new();
    for i in 0..40 {
        let name = format!("child-with-a-long-name-{i:03}");
        xs.write(&format!("/big/{name}"), "").unwrap();
        want.push(name);
    }
    assert_eq!(xs.directory("/big").unwrap(), want);
}

#[test]
fn refuses_bad_requests() {
    let xs = pair(false);
    assert!(matches!(xs.read("a\0b"), Err(Error::Invalid { .. })));
    let big = vec![b'x'; wire::PAYLOAD_MAX];
    assert!(matches!(
        xs.write("/big", &big),
        Err(Error::Invalid { op: Op::Write, .. })
    ));
}

#[test]
fn hostile_length_is_refused_without_allocating() {
    let xs = pair(false);
    let e = xs.read("/huge").unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    // The handle stays refused.
    assert!(matches!(xs.read("/a"), Err(Error::Protocol { .. })));
}

#[test]
fn watch_fires_and_threads_share_the_handle() {
    let xs = std::sync::Arc::new(pair(false));
    let w = xs.watch("/w", "tok").unwrap();
    assert_eq!(w.next_event().unwrap().path, "/w");
    let xs2 = xs.clone();
    let t = std::thread::spawn(move || xs2.write("/w/k", "v").unwrap());
    let ev = w.next_event().unwrap();
    assert_eq!((ev.path.as_str(), ev.token.as_str()), ("/w/k", "tok"));
    t.join().unwrap();
    assert_eq!(
        w.next_event_timeout(Duration::from_millis(50)).unwrap(),
        None
    );
    assert!(xs.watch("/other", "tok").is_err(), "token in use");
    w.unwatch().unwrap();
}

#[test]
fn transactions_commit_and_conflict() {
    let xs = pair(false);
    let t = xs.transaction().unwrap();
    assert_eq!(t.id(), 17);
    t.write("/t", "1").unwrap();
    t.commit().unwrap();
    let xs = pair(true);
    let t = xs.transaction().unwrap();
    let e = t.commit().unwrap_err();
    assert!(matches!(e, Error::Retry { tx_id: 17 }), "{e}");
    assert_eq!(e.errno(), Some(libc::EAGAIN));
    xs.transaction().unwrap().abort().unwrap();
}

#[test]
fn watch_iterator_ends_when_the_connection_dies() {
    let xs = pair(false);
    let mut w = xs.watch("/w", "tok").unwrap();
    assert!(w.next().unwrap().is_ok());
    // Shut the connection down under the handle (through a duplicate of its socket): the
    // next read sees end of stream.
    let dup = UnixStream::from(xs.as_fd().try_clone_to_owned().unwrap());
    dup.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(matches!(w.next(), Some(Err(Error::Io { .. }))));
    assert!(w.next().is_none());
    // Later requests fail at once, without waiting for the timeout.
    assert!(matches!(xs.read("/a"), Err(Error::Protocol { .. })));
}

#[test]
fn silent_daemon_times_out() {
    let (a, _b) = UnixStream::pair().unwrap();
    let xs = XenStore::from_stream(a);
    xs.set_timeout(Some(Duration::from_millis(50)));
    assert!(matches!(
        xs.read("/x"),
        Err(Error::Timeout { op: Op::Read, .. })
    ));
}

#[test]
fn handle_is_send_and_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<XenStore>();
}
