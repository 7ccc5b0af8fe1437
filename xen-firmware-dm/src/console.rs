//! Where the consoles send what the guest prints: whole lines, tagged with the
//! device that carried them, over a channel (one allocation per line, none per request).

use std::sync::mpsc::Sender;

/// A line the guest printed, and the device it came through (`"debugcon"`, `"serial"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The device.
    pub source: &'static str,
    /// The text, without the line end.
    pub text: String,
}

/// Collects bytes into lines and sends each finished line.
#[derive(Debug)]
pub struct LineBuffer {
    source: &'static str,
    buf: Vec<u8>,
    out: Sender<Line>,
}

impl LineBuffer {
    /// A buffer for `source` sending to `out`.
    pub fn new(source: &'static str, out: Sender<Line>) -> LineBuffer {
        LineBuffer {
            source,
            buf: Vec::with_capacity(256),
            out,
        }
    }

    /// Takes one byte the guest wrote; sends the line at `\n` (a `\r` is dropped).
    pub fn push(&mut self, byte: u8) {
        match byte {
            b'\n' => self.flush(),
            b'\r' => {}
            _ if self.buf.len() >= 4096 => {
                self.flush();
                self.buf.push(byte);
            }
            _ => self.buf.push(byte),
        }
    }

    /// Sends what is buffered as a line (nothing if empty).
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        // The receiver may be gone while shutting down: the line is then dropped.
        let _ = self.out.send(Line {
            source: self.source,
            text,
        });
    }
}
