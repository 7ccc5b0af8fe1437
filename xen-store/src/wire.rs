//! The wire format (`xen/io/xs_wire.h`, from xen-sys): a 16-byte header (`xsd_sockmsg`: type,
//! request id, transaction id, payload length, in the machine's byte order) and at most
//! `XENSTORE_PAYLOAD_MAX` bytes of payload, usually NUL-terminated strings.

use xen_sys::xs_wire::{xsd_sockmsg, XENSTORE_PAYLOAD_MAX};

/// Header size.
pub(crate) const HEADER: usize = core::mem::size_of::<xsd_sockmsg>();
/// The largest payload either side may send.
pub(crate) const PAYLOAD_MAX: usize = XENSTORE_PAYLOAD_MAX as usize;

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Msg {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

/// Encodes a header.
pub(crate) fn header(ty: u32, req_id: u32, tx_id: u32, len: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&ty.to_ne_bytes());
    h[4..8].copy_from_slice(&req_id.to_ne_bytes());
    h[8..12].copy_from_slice(&tx_id.to_ne_bytes());
    h[12..16].copy_from_slice(&len.to_ne_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

/// Takes one complete message off the front of `buf`: `Ok(None)` when more bytes are needed,
/// `Err` when the header announces more than `XENSTORE_PAYLOAD_MAX` (nothing is allocated for it).
pub(crate) fn take(buf: &mut Vec<u8>) -> Result<Option<Msg>, String> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32_at(buf, 12) as usize;
    if len > PAYLOAD_MAX {
        return Err(format!(
            "message of {len} bytes announced (the limit is {PAYLOAD_MAX})"
        ));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let msg = Msg {
        ty: u32_at(buf, 0),
        req_id: u32_at(buf, 4),
        tx_id: u32_at(buf, 8),
        payload: buf[HEADER..HEADER + len].to_vec(),
    };
    buf.drain(..HEADER + len);
    Ok(Some(msg))
}

/// The errno names xenstored sends in `XS_ERROR` replies (the `xsd_errors[]` table of
/// `xs_wire.h`, which is C data and so not in xen-sys), with this system's numbers.
const ERRNOS: &[(&str, i32)] = &[
    ("EINVAL", libc::EINVAL),
    ("EACCES", libc::EACCES),
    ("EEXIST", libc::EEXIST),
    ("EISDIR", libc::EISDIR),
    ("ENOENT", libc::ENOENT),
    ("ENOMEM", libc::ENOMEM),
    ("ENOSPC", libc::ENOSPC),
    ("EIO", libc::EIO),
    ("ENOTEMPTY", libc::ENOTEMPTY),
    ("ENOSYS", libc::ENOSYS),
    ("EROFS", libc::EROFS),
    ("EBUSY", libc::EBUSY),
    ("EAGAIN", libc::EAGAIN),
    ("EISCONN", libc::EISCONN),
    ("E2BIG", libc::E2BIG),
    ("EPERM", libc::EPERM),
];

/// The errno for an error name; `EIO` for a name not in the table (as libxenstore does).
pub(crate) fn errno_of(name: &str) -> i32 {
    ERRNOS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(libc::EIO, |(_, e)| *e)
}

/// The name for an errno (for stand-in daemons in tests).
#[cfg(test)]
pub(crate) fn name_of(errno: i32) -> &'static str {
    ERRNOS
        .iter()
        .find(|(_, e)| *e == errno)
        .map_or("EIO", |(n, _)| n)
}

/// The payload's text up to its first NUL (or all of it), lossily decoded.
pub(crate) fn text(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// Splits a payload of NUL-terminated strings (a trailing NUL is optional).
pub(crate) fn strings(payload: &[u8]) -> Vec<String> {
    let p = payload.strip_suffix(&[0]).unwrap_or(payload);
    if p.is_empty() {
        return Vec::new();
    }
    p.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut buf = header(2, 7, 9, 3).to_vec();
        buf.extend_from_slice(b"ab\0");
        buf.extend_from_slice(&header(1, 8, 0, 0));
        let m = take(&mut buf).unwrap().unwrap();
        assert_eq!((m.ty, m.req_id, m.tx_id), (2, 7, 9));
        assert_eq!(m.payload, b"ab\0");
        let m = take(&mut buf).unwrap().unwrap();
        assert_eq!((m.ty, m.req_id, m.payload.len()), (1, 8, 0));
        assert!(buf.is_empty());
        assert_eq!(take(&mut buf), Ok(None));
    }

    #[test]
    fn partial_and_oversized() {
        let mut buf = header(2, 1, 0, 10).to_vec();
        buf.extend_from_slice(b"abc");
        assert_eq!(take(&mut buf), Ok(None));
        let mut big = header(2, 1, 0, PAYLOAD_MAX as u32 + 1).to_vec();
        assert!(take(&mut big).is_err());
        let mut max = header(2, 1, 0, u32::MAX).to_vec();
        assert!(take(&mut max).is_err());
    }

    #[test]
    fn errors_and_strings() {
        assert_eq!(errno_of("EAGAIN"), libc::EAGAIN);
        assert_eq!(errno_of("ENOENT"), libc::ENOENT);
        assert_eq!(errno_of("EWHATEVER"), libc::EIO);
        assert_eq!(name_of(libc::EACCES), "EACCES");
        assert_eq!(strings(b"a\0bc\0"), vec!["a", "bc"]);
        assert_eq!(strings(b"a\0bc"), vec!["a", "bc"]);
        assert!(strings(b"").is_empty());
        assert_eq!(text(b"OK\0"), "OK");
    }
}
