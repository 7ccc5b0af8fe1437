//! Shared by the machine tests of this crate.

use std::sync::{Arc, Mutex};

/// A serial output that collects what the guest writes, for the test to read.
pub struct Out(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Out {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
