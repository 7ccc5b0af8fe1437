//! The error type: every failure names the operation, and errors xenstored (or the kernel)
//! reports keep their errno.

use std::time::Duration;

/// A XenStore operation, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Opening the connection.
    Open,
    /// `XS_READ`.
    Read,
    /// `XS_WRITE`.
    Write,
    /// `XS_MKDIR`.
    Mkdir,
    /// `XS_RM`.
    Rm,
    /// `XS_DIRECTORY`.
    Directory,
    /// `XS_GET_PERMS`.
    GetPerms,
    /// `XS_SET_PERMS`.
    SetPerms,
    /// `XS_WATCH`.
    Watch,
    /// `XS_UNWATCH`.
    Unwatch,
    /// Waiting for a watch event.
    WatchEvent,
    /// `XS_TRANSACTION_START`.
    TransactionStart,
    /// `XS_TRANSACTION_END`.
    TransactionEnd,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath,
}

/// Errors of the XenStore client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening the transport (`path`) failed.
    #[error("xenstore: opening {path}: {source}")]
    Open {
        /// The socket or device.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A read or write on the connection failed (the connection may be unusable).
    #[error("xenstore {op:?}: {source}")]
    Io {
        /// The operation.
        op: Op,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// xenstored (or the kernel's xenbus driver) refused the request with an errno
    /// (`XS_ERROR`): `ENOENT` for a missing node, `EACCES`, `EEXIST`, `E2BIG`, ...
    #[error("xenstore {op:?} {path:?}: {name} (errno {errno})")]
    Refused {
        /// The operation.
        op: Op,
        /// The path it was about (empty when there is none).
        path: String,
        /// The errno (from the error's name; `EIO` when the name is unknown).
        errno: i32,
        /// The error's name as xenstored sent it, e.g. `"ENOENT"`.
        name: String,
    },
    /// The transaction conflicted with another change and was not committed: run it again
    /// (xenstored's `EAGAIN` on `XS_TRANSACTION_END`).
    #[error("xenstore transaction {tx_id}: conflict, nothing was committed; retry it")]
    Retry {
        /// The transaction's id.
        tx_id: u32,
    },
    /// The daemon sent something that breaks the protocol (a reply longer than
    /// `XENSTORE_PAYLOAD_MAX`, an unexpected message type, malformed text); the connection
    /// is closed for further use.
    #[error("xenstore {op:?}: protocol error: {what}")]
    Protocol {
        /// The operation.
        op: Op,
        /// What was wrong.
        what: String,
    },
    /// A request refused before sending it: a path or value with a NUL byte, a payload
    /// larger than `XENSTORE_PAYLOAD_MAX`, a bad permission string.
    #[error("xenstore {op:?}: invalid argument: {what}")]
    Invalid {
        /// The operation.
        op: Op,
        /// What was wrong.
        what: String,
    },
    /// No reply (or event) within the time allowed.
    #[error("xenstore {op:?}: no answer within {timeout:?}")]
    Timeout {
        /// The operation.
        op: Op,
        /// The time allowed.
        timeout: Duration,
    },
    /// Watch events for this token arrived faster than they were taken and `lost` of them were
    /// dropped (the queue is bounded); re-read the nodes you watch.
    #[error("xenstore watch {token:?}: {lost} events dropped (queue full)")]
    EventsLost {
        /// The watch's token.
        token: String,
        /// How many events were dropped.
        lost: u64,
    },
}

impl Error {
    /// The errno of the failure, when it has one: xenstored's refusals, system errors, and
    /// `EAGAIN` for [`Error::Retry`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Open { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            Error::Refused { errno, .. } => Some(*errno),
            Error::Retry { .. } => Some(libc::EAGAIN),
            Error::Timeout { .. } => Some(libc::ETIMEDOUT),
            _ => None,
        }
    }

    /// Whether this is xenstored's "no such node" (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Refused { errno, .. } if *errno == libc::ENOENT)
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
