//! Test-only privcmd plumbing: raw hypercalls and foreign mappings of guest frames.
//!
//! This is deliberately minimal and is *not* the project's API (that is `xen-hypercall` and
//! `xen-foreignmemory`): tests use it to look at a guest independently of the crates under test.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::Error;

/// The privcmd device.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

use xen_sys::privcmd::{
    privcmd_hypercall, privcmd_mmapbatch_v2, IOCTL_PRIVCMD_HYPERCALL, IOCTL_PRIVCMD_MMAPBATCH_V2,
};

fn open_privcmd() -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(PRIVCMD)
        .map_err(|e| Error::Io(format!("open {PRIVCMD}"), e))
}

/// Makes hypercall `op` with `args` through `IOCTL_PRIVCMD_HYPERCALL`; returns Xen's (non-negative)
/// result or the errno.
pub fn hypercall(op: u64, args: [u64; 5]) -> Result<i64, Error> {
    let f = open_privcmd()?;
    let mut call = privcmd_hypercall { op, arg: args };
    // SAFETY: the fd is privcmd's, the argument is a valid privcmd_hypercall that outlives the
    // call; any pointers inside `args` are the caller's to make valid.
    let r = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            IOCTL_PRIVCMD_HYPERCALL as _,
            &mut call as *mut privcmd_hypercall,
        )
    };
    if r < 0 {
        return Err(Error::Io(
            format!("privcmd hypercall {op}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(r as i64)
}

/// Guest frames mapped into this process (unmapped on drop). All access is volatile: the guest
/// runs concurrently.
#[derive(Debug)]
pub struct ForeignMapping {
    ptr: *mut u8,
    len: usize,
    _privcmd: File,
}

// SAFETY: the mapping is plain shared memory; all access goes through volatile reads/writes.
unsafe impl Send for ForeignMapping {}
// SAFETY: as above; concurrent volatile access from several threads is the same as the guest's.
unsafe impl Sync for ForeignMapping {}

impl ForeignMapping {
    /// Maps `gfns` of domain `domid`, in order, read-write.
    pub fn map(domid: u16, gfns: &[u64]) -> Result<ForeignMapping, Error> {
        if gfns.is_empty() || gfns.len() > u32::MAX as usize {
            return Err(Error::Invalid("map: need 1.. frames".into()));
        }
        let f = open_privcmd()?;
        let len = gfns.len() * 4096;
        // SAFETY: a fresh shared mapping of privcmd; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Io(
                "mmap privcmd".into(),
                std::io::Error::last_os_error(),
            ));
        }
        let mapping = ForeignMapping {
            ptr: ptr.cast(),
            len,
            _privcmd: f,
        };
        let mut errs = vec![0i32; gfns.len()];
        let mut batch = privcmd_mmapbatch_v2 {
            num: gfns.len() as u32,
            dom: domid,
            addr: ptr as u64,
            arr: gfns.as_ptr() as *const xen_sys::xen::xen_pfn_t,
            err: errs.as_mut_ptr(),
        };
        // SAFETY: `batch` points at live arrays of `num` entries and at our own fresh mapping.
        let r = unsafe {
            libc::ioctl(
                mapping._privcmd.as_raw_fd(),
                IOCTL_PRIVCMD_MMAPBATCH_V2 as _,
                &mut batch as *mut privcmd_mmapbatch_v2,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            let detail: Vec<String> = gfns
                .iter()
                .zip(&errs)
                .filter(|(_, e)| **e != 0)
                .map(|(g, e)| format!("gfn {g:#x}: {e}"))
                .collect();
            return Err(Error::Io(
                format!(
                    "MMAPBATCH_V2 of {} frame(s) of domain {domid} ({})",
                    gfns.len(),
                    detail.join(", ")
                ),
                e,
            ));
        }
        Ok(mapping)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a mapping has at least one frame).
    pub fn is_empty(&self) -> bool {
        false
    }

    fn check(&self, off: usize, size: usize) {
        assert!(
            off % size.min(8) == 0 && off + size <= self.len,
            "offset {off:#x}+{size} out of the mapping"
        );
    }

    /// Volatile 32-bit read at byte offset `off` (aligned). Panics when out of range.
    pub fn read_u32(&self, off: usize) -> u32 {
        self.check(off, 4);
        // SAFETY: in range and aligned (checked), the mapping lives as long as self.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }

    /// Volatile 32-bit write at byte offset `off` (aligned). Panics when out of range.
    pub fn write_u32(&self, off: usize, v: u32) {
        self.check(off, 4);
        // SAFETY: as in read_u32.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) }
    }

    /// Volatile 64-bit read at byte offset `off` (aligned). Panics when out of range.
    pub fn read_u64(&self, off: usize) -> u64 {
        self.check(off, 8);
        // SAFETY: as in read_u32.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u64>()) }
    }

    /// Volatile 64-bit write at byte offset `off` (aligned). Panics when out of range.
    pub fn write_u64(&self, off: usize, v: u64) {
        self.check(off, 8);
        // SAFETY: as in read_u32.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u64>(), v) }
    }

    /// Volatile byte-wise copy of `buf.len()` bytes from offset `off`. Panics when out of range.
    pub fn read_bytes(&self, off: usize, buf: &mut [u8]) {
        self.check(off, 1);
        assert!(off + buf.len() <= self.len, "read past the mapping");
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: in range (checked above).
            *b = unsafe { std::ptr::read_volatile(self.ptr.add(off + i)) };
        }
    }

    /// Volatile byte-wise copy of `data` to offset `off`. Panics when out of range.
    pub fn write_bytes(&self, off: usize, data: &[u8]) {
        self.check(off, 1);
        assert!(off + data.len() <= self.len, "write past the mapping");
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in range (checked above).
            unsafe { std::ptr::write_volatile(self.ptr.add(off + i), *b) };
        }
    }
}

impl Drop for ForeignMapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
