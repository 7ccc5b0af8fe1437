//! `xen-bench-guest`: what the benchmark's Linux guest runs (a static executable in its
//! initramfs; `cargo xtask bench` builds it with `-C target-feature=+crt-static`).
//!
//! ```text
//! xen-bench-guest seq DEVICE MIB          sequential O_DIRECT read, 1 MiB requests
//! xen-bench-guest rand DEVICE COUNT SEED  COUNT random 4 KiB O_DIRECT reads
//! xen-bench-guest lsr COUNT               COUNT reads of the UART's line status (port 0x3fd)
//! ```
//!
//! Each prints `BENCH-BEGIN <name>`, waits half a second (so that the host sees the device
//! model idle at the start of the measured part), runs, prints one line
//! `BENCH-RESULT <name> key=value ...` timed by the guest's monotonic clock, and waits half a
//! second again.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// COM1's line status register.
#[cfg(target_arch = "x86_64")]
const LSR: u16 = 0x3fd;
/// The pause around each measured part.
const PAUSE: Duration = Duration::from_millis(500);

/// A heap buffer aligned for O_DIRECT (4 KiB), freed on drop.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Result<Aligned, String> {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096)
            .map_err(|e| format!("buffer layout: {e}"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(format!("cannot allocate {len} bytes"));
        }
        Ok(Aligned { ptr, layout })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live, initialised allocation of `layout.size()` bytes owned by
        // `self`, borrowed mutably once through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

fn begin(name: &str) {
    println!("BENCH-BEGIN {name}");
    let _ = std::io::stdout().flush();
    std::thread::sleep(PAUSE);
}

fn end(name: &str, fields: &str) {
    println!("BENCH-RESULT {name} {fields}");
    let _ = std::io::stdout().flush();
    std::thread::sleep(PAUSE);
}

fn open_direct(dev: &str) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("{dev}: {e}"))
}

fn seq(dev: &str, mib: u64) -> Result<(), String> {
    let f = open_direct(dev)?;
    let mut buf = Aligned::new(1 << 20)?;
    begin("seq");
    let t = Instant::now();
    for i in 0..mib {
        let n = f
            .read_at(buf.as_mut(), i << 20)
            .map_err(|e| format!("{dev}: read at {i} MiB: {e}"))?;
        if n != 1 << 20 {
            return Err(format!("{dev}: short read at {i} MiB: {n} bytes"));
        }
    }
    let s = t.elapsed().as_secs_f64();
    end(
        "seq",
        &format!(
            "mib={mib} secs={s:.4} mbs={:.2}",
            (mib << 20) as f64 / 1e6 / s.max(1e-9)
        ),
    );
    Ok(())
}

/// xorshift64*: a fixed sequence for a fixed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn rand(dev: &str, count: u64, seed: u64) -> Result<(), String> {
    let mut f = open_direct(dev)?;
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("{dev}: size: {e}"))?;
    let blocks = size / 4096;
    if blocks == 0 {
        return Err(format!("{dev}: {size} bytes, less than one block"));
    }
    let mut buf = Aligned::new(4096)?;
    let mut state = seed | 1;
    begin("rand");
    let t = Instant::now();
    for _ in 0..count {
        let at = (next(&mut state) % blocks) * 4096;
        let n = f
            .read_at(buf.as_mut(), at)
            .map_err(|e| format!("{dev}: read at {at}: {e}"))?;
        if n != 4096 {
            return Err(format!("{dev}: short read at {at}: {n} bytes"));
        }
    }
    let s = t.elapsed().as_secs_f64();
    end(
        "rand",
        &format!(
            "count={count} seed={seed} secs={s:.4} iops={:.1}",
            count as f64 / s.max(1e-9)
        ),
    );
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port I/O on a port this process was granted with ioperm; it reads a device
    // register and touches no memory.
    unsafe {
        std::arch::asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags));
    }
    v
}

#[cfg(not(target_arch = "x86_64"))]
fn lsr(_count: u64) -> Result<(), String> {
    Err("port I/O is x86 only".into())
}

#[cfg(target_arch = "x86_64")]
fn lsr(count: u64) -> Result<(), String> {
    // SAFETY: a plain system call with integer arguments.
    if unsafe { libc::ioperm(0x3f8, 8, 1) } != 0 {
        return Err(format!("ioperm: {}", std::io::Error::last_os_error()));
    }
    begin("lsr");
    let t = Instant::now();
    let mut or = 0u8;
    for _ in 0..count {
        or |= inb(LSR);
    }
    let s = t.elapsed().as_secs_f64();
    end(
        "lsr",
        &format!(
            "count={count} secs={s:.4} per_sec={:.1} lsr_or={or:#x}",
            count as f64 / s.max(1e-9)
        ),
    );
    Ok(())
}

fn num(a: Option<&String>, what: &str) -> Result<u64, String> {
    a.ok_or(format!("missing {what}"))?
        .parse()
        .map_err(|e| format!("{what}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dev = || args.get(1).map(String::as_str).ok_or("missing DEVICE");
    let r = match args.first().map(String::as_str) {
        Some("seq") => dev()
            .map_err(String::from)
            .and_then(|d| seq(d, num(args.get(2), "MIB")?)),
        Some("rand") => dev()
            .map_err(String::from)
            .and_then(|d| rand(d, num(args.get(2), "COUNT")?, num(args.get(3), "SEED")?)),
        Some("lsr") => num(args.get(1), "COUNT").and_then(lsr),
        _ => {
            Err("usage: xen-bench-guest seq DEVICE MIB | rand DEVICE COUNT SEED | lsr COUNT".into())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("BENCH-ERROR {e}");
            ExitCode::FAILURE
        }
    }
}
