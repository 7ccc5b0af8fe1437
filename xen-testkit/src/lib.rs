//! `xen-testkit`: test support for the tests that run inside the Xen test machine
//! (`cargo xtask xen-test`).
//!
//! - [`require_xen`]: fail (never skip) a test that is not inside a Xen dom0.
//! - [`Guest`] / [`GuestConfig`]: create a PV, PVH or HVM guest with `xl`, paused or running,
//!   destroyed when dropped.
//! - [`TestGuest`]: the project's tiny test guest (an HVM or PVH kernel of ours, see
//!   `xen-testkit/guest`) and typed methods that make it do port I/O, MMIO, PCI config accesses,
//!   memory fills and hypercalls at run time, through a mailbox page ([`protocol`]).
//! - [`privcmd`]: minimal, test-only raw hypercalls and foreign mappings.
//! - [`ioreq`]: raw ioreq-server scaffolding (an ioreq page, an event channel, a one-request
//!   server) for the device-model tests, and the helpers they share ([`report!`]).
//! - [`alloc`]: a counting global allocator, for "this hot path allocates nothing" tests.
//! - The `xen-testkit-dm` binary: a device model that emulates nothing, so HVM guests run without
//!   QEMU in dom0; it answers libxl's handshake with `xen_devicemodel::libxl`.
//!
//! Payloads (the guest images and the fake device model) are in `XEN_RS_PAYLOAD_DIR`
//! (`/opt/xen-rs` in the machine), put there by `xtask/src/payloads.rs`.
//!
//! ```no_run
//! use xen_testkit::{require_xen, TestGuest};
//! require_xen();
//! let g = TestGuest::hvm().unwrap();
//! g.port_out(0x80, 0x42, 1).unwrap();
//! let gfn = g.fill(None, 7).unwrap();
//! assert_eq!(g.checksum(gfn).unwrap(), xen_testkit::protocol::fnv1a64(
//!     (0..4096).map(|i| xen_testkit::protocol::pattern_byte(7, i))));
//! ```

pub mod alloc;
pub mod guest;
pub mod ioreq;
pub mod privcmd;
pub mod protocol;
pub mod testguest;
pub mod xl;

pub use guest::{Guest, GuestConfig, GuestType};
pub use testguest::{Reply, ShutdownReason, TestGuest};

/// One line on standard error, prefixed `xen-testkit: ` (what the machine's report collects).
pub(crate) fn log(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "xen-testkit: {args}");
}

use std::path::PathBuf;
use std::time::Duration;

/// Errors of the test kit. Its messages say what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A command (`xl ...`) failed; the message carries its output.
    #[error("{0}")]
    Command(String),
    /// Something did not happen in time.
    #[error("timed out after {0:?}: {1}")]
    Timeout(Duration, String),
    /// The test guest reported a failure or stopped.
    #[error("test guest: {0}")]
    Guest(String),
    /// A bad argument, refused before doing anything.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// The test kit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Panics with a clear message unless this process runs in a Xen dom0 with the privcmd device.
///
/// Tests that need Xen call this first: in the Xen machine they must fail, not skip, when Xen is
/// missing.
pub fn require_xen() {
    let p = std::path::Path::new(privcmd::PRIVCMD);
    assert!(
        p.exists(),
        "{} is missing: this test needs a Xen dom0 (run it with `cargo xtask xen-test`)",
        p.display()
    );
}

/// The directory holding the payloads: `$XEN_RS_PAYLOAD_DIR`, else `/opt/xen-rs`.
pub fn payload_dir() -> PathBuf {
    std::env::var_os("XEN_RS_PAYLOAD_DIR")
        .map_or_else(|| PathBuf::from("/opt/xen-rs"), PathBuf::from)
}

/// Names of the payload files (in [`payload_dir`]).
pub mod payload {
    /// The test guest as HVM firmware (ELF32, no Xen notes).
    pub const TESTGUEST_HVM: &str = "testguest-hvm.elf";
    /// The test guest as a PVH kernel (ELF64 with only the PHYS32_ENTRY note).
    pub const TESTGUEST_PVH: &str = "testguest-pvh.elf";
    /// The test guest as a PV kernel (ELF64 with only the PV notes: entry `pv_entry`).
    pub const TESTGUEST_PV: &str = "testguest-pv.elf";
    /// The fake device model.
    pub const FAKE_DM: &str = "xen-testkit-dm";
}

/// Path of payload `name`.
pub fn payload_path(name: &str) -> PathBuf {
    payload_dir().join(name)
}

#[cfg(test)]
mod tests {
    use super::protocol as p;
    use super::GuestConfig;

    #[test]
    fn protocol_helpers() {
        assert_eq!(p::fnv1a64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(p::fnv1a64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(p::pci_cfg_address(1, 2, 3, 0x40), 0x01_1340);
        assert_eq!(p::data_gfn(1), p::MAILBOX_GFN + 2);
        assert_ne!(p::pattern_byte(1, 0), p::pattern_byte(2, 0));
        assert_eq!(&p::MAGIC.to_le_bytes(), b"XRTG");
    }

    #[test]
    fn xl_configs() {
        let hvm = GuestConfig::hvm().vcpus(2).memory_mib(64).to_xl_config("x");
        for line in [
            "type = \"hvm\"",
            "vcpus = 2",
            "memory = 64",
            "firmware_override = ",
            "device_model_override = ",
        ] {
            assert!(hvm.contains(line), "{line} missing in\n{hvm}");
        }
        let pvh = GuestConfig::pvh()
            .extra("on_reboot = \"preserve\"")
            .to_xl_config("y");
        assert!(
            pvh.contains("type = \"pvh\"") && pvh.contains("tsc_mode = \"native\""),
            "{pvh}"
        );
        assert!(
            pvh.trim_end().ends_with("on_reboot = \"preserve\""),
            "extra lines come last: {pvh}"
        );
        assert!(GuestConfig::pv()
            .to_xl_config("z")
            .contains("testguest-pv.elf"));
    }
}
