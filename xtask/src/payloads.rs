//! Guest payloads and helper programs that go into the Xen test machine's dom0.
//!
//! (Placeholder: the test-guest work fills this in.)

use std::path::PathBuf;

/// A file to place in dom0: where it is on the host, and its path inside dom0.
pub struct Payload {
    /// The file on the host.
    pub host: PathBuf,
    /// Its absolute path inside dom0's initramfs.
    pub dom0: String,
}

/// Builds every payload and returns what must be copied into dom0.
pub fn build() -> Result<Vec<Payload>, String> {
    Ok(Vec::new())
}
