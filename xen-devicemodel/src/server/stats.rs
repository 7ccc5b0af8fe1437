//! [`Stats`]: the requests a [`Server`](super::Server) served, by kind.

/// Requests served, by kind. `Display` gives one line:
/// `port=N mmio=N pci-config=N buffered=N other=N`.
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
    /// but a gap between devices, or a request wider than 8 bytes).
    pub unclaimed: u64,
    /// Guest-memory copies of `data_is_ptr` requests that failed (the request was still
    /// completed, with whatever was copied).
    pub memory_errors: u64,
    /// Wake-ups of the loop with at least one port pending.
    pub wakeups: u64,
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
        )
    }
}
