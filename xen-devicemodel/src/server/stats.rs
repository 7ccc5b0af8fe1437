//! [`Stats`]: the requests a [`Server`](super::Server) served, by kind.

/// Requests served, by kind. `Display` gives one line:
/// `port=N mmio=N pci-config=N buffered=N other=N`, then ` refused=N` when some were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Port I/O requests (`IOREQ_TYPE_PIO`), each `rep` request counted once.
    pub port: u64,
    /// MMIO requests (`IOREQ_TYPE_COPY`), synchronous.
    pub mmio: u64,
    /// PCI configuration requests (`IOREQ_TYPE_PCI_CONFIG`).
    pub pci_config: u64,
    /// Buffered records taken from the ring, except time-offset ones (in `timeoffset`).
    pub buffered: u64,
    /// `IOREQ_TYPE_INVALIDATE` requests.
    pub invalidate: u64,
    /// `IOREQ_TYPE_TIMEOFFSET` requests (Xen sends them through the buffered ring when the
    /// guest sets its RTC).
    pub timeoffset: u64,
    /// Requests of any other type (acknowledged, not dispatched).
    pub other: u64,
    /// Device accesses that fell in no registered device's range (a claim of the server
    /// but a gap between devices).
    pub unclaimed: u64,
    /// Requests refused without reaching a device, because Xen's emulator never sends them
    /// (an access size the [`Device`](super::Device) trait does not take, a `rep` count above
    /// Xen's 4096, a buffered read or 8-byte port write): reads are answered all-ones,
    /// nothing is written. [`Server::last_refusal`](super::Server::last_refusal) tells the
    /// last one.
    pub refused: u64,
    /// Guest-memory copies of `data_is_ptr` requests that failed (the request was still
    /// completed, with whatever was copied).
    pub memory_errors: u64,
    /// Errors devices reported ([`Ctx::report`](super::Ctx::report) and
    /// [`Ctx::fail`](super::Ctx::fail)); [`Server::last_device_error`](super::Server::last_device_error)
    /// tells the last one.
    pub device_errors: u64,
    /// Wake-ups of the loop with at least one port pending.
    pub wakeups: u64,
    /// Doorbell writes the kernel completed itself (ioeventfd) and the loop then delivered
    /// to their device (see [`Ctx::doorbell`](super::Ctx::doorbell)); coalesced writes count
    /// once.
    pub doorbells: u64,
    /// Notifications sent back (one per completed synchronous request).
    pub notifies: u64,
    /// Time spent serving, from reading the pending ports to the last notify of each
    /// wake-up, in nanoseconds (`busy_ns / total()` is the loop's own cost per request).
    pub busy_ns: u64,
}

impl Stats {
    /// Every request served (synchronous and buffered).
    pub fn total(&self) -> u64 {
        self.port
            + self.mmio
            + self.pci_config
            + self.buffered
            + self.invalidate
            + self.timeoffset
            + self.other
    }
}

impl core::fmt::Display for Stats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "port={} mmio={} pci-config={} buffered={} other={}",
            self.port,
            self.mmio,
            self.pci_config,
            self.buffered,
            self.invalidate + self.timeoffset + self.other
        )?;
        if self.refused > 0 {
            write!(f, " refused={}", self.refused)?;
        }
        if self.device_errors > 0 {
            write!(f, " device-errors={}", self.device_errors)?;
        }
        if self.doorbells > 0 {
            write!(f, " doorbells={}", self.doorbells)?;
        }
        Ok(())
    }
}

/// A request the loop refused (see [`Stats::refused`]): what it was and why. The loop keeps
/// the last one ([`Server::last_refusal`](super::Server::last_refusal)); refusals are counted,
/// not printed, so a guest that sends them in a loop costs no more than the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// The ioreq type (`IOREQ_TYPE_PIO` 0, `IOREQ_TYPE_COPY` 1, `IOREQ_TYPE_PCI_CONFIG` 2).
    pub kind: u8,
    /// The port, guest-physical address, or (PCI config) SBDF and register.
    pub addr: u64,
    /// The access size in bytes, as the request gave it.
    pub size: u32,
    /// The `rep` count, as the request gave it.
    pub count: u32,
    /// Whether it came through the buffered ring.
    pub buffered: bool,
    /// Why it was refused.
    pub reason: &'static str,
}

impl Refusal {
    pub(super) fn of(req: &super::slot::Ioreq, reason: &'static str) -> Refusal {
        Refusal {
            kind: req.kind,
            addr: req.addr,
            size: req.size,
            count: req.count,
            buffered: false,
            reason,
        }
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "refused {}: type {} addr {:#x} size {} count {}{}",
            self.reason,
            self.kind,
            self.addr,
            self.size,
            self.count,
            if self.buffered { " (buffered)" } else { "" }
        )
    }
}
