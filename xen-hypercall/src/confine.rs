//! Process confinement: after set-up, the process opens no file again (seccomp).

// Unsafe: installs a seccomp filter.
#![allow(unsafe_code)]

use crate::Error;

/// Stops every thread of the process, for the rest of its life, from opening files: the last
/// step of dropping privilege in a device model, after every handle is open and
/// [`restrict_all`](crate::restrict_all) has limited them to the guest.
///
/// # What each step guarantees
/// - [`Privcmd::restrict`](crate::Privcmd::restrict) (and each handle type's `restrict`):
///   *that handle* acts on one domain only; the kernel refuses raw hypercalls on it.
/// - [`restrict_all`](crate::restrict_all): every handle of the workspace that is open *and
///   registered* at that moment is restricted. It says nothing about handles opened later
///   (any handle type's `open()` afterwards returns an unrestricted handle), nor
///   about fds that left the registry (`OwnedFd::from(privcmd)`), nor about Xen devices
///   opened by other code in the process.
/// - `confine()`: from now on no thread of the process (nor any program it executes) can open
///   a file: `open`, `openat`, `openat2`, `creat` and `open_by_handle_at` fail with `EPERM`,
///   and so do the calls that would open one another way (`io_uring_setup`, whose requests
///   can open files, and `pidfd_getfd`, which copies another process's fd). So no new,
///   unrestricted `/dev/xen/privcmd`, `/dev/xen/evtchn` or `/dev/xen/hypercall` handle can be
///   made, and a compromised device model is left with the restricted handles it holds.
///   Everything else goes on: the open handles keep working (dm_ops, event channels,
///   foreign mappings of the guest), as do sockets, pipes, eventfds and memory.
///
/// Together, `restrict_all` followed by `confine` confine the process to its guest, with
/// these limits: handles it did not restrict (or took out of the registry) stay as they are;
/// an fd received over a Unix socket (`SCM_RIGHTS`) is not stopped; and opening a file is
/// needed by nothing on this workspace's hot paths, but your own code after `confine` must
/// not need it either (open log files, disk images, `/proc` files first). Hypercall buffers
/// come from the handle's cache or from `/dev/xen/hypercall`: make one hypercall before
/// confining if you need that device afterwards, or the pool falls back to locked
/// anonymous memory.
///
/// Irreversible, and inherited by every thread and child. Implemented with a seccomp filter
/// (`SECCOMP_SET_MODE_FILTER` with `SECCOMP_FILTER_FLAG_TSYNC`, after `PR_SET_NO_NEW_PRIVS`),
/// as sandboxed QEMU does; syscalls of another ABI (32-bit `int 0x80`, x32) are refused
/// wholesale. Fails with the errno of `prctl` or `seccomp` (e.g. `EINVAL` on a kernel
/// without seccomp filters), or `EBUSY` when another thread's filters cannot be
/// synchronised; nothing is confined then.
///
/// ```no_run
/// use xen_hypercall::{DomId, Privcmd};
///
/// let xen = Privcmd::open()?; // open everything first ...
/// xen_hypercall::restrict_all(DomId::new(7))?; // ... restrict it to the guest ...
/// xen_hypercall::confine()?; // ... and open nothing ever again.
/// assert!(Privcmd::open().unwrap_err().is_permission_denied());
/// # Ok::<(), xen_hypercall::Error>(())
/// ```
pub fn confine() -> Result<(), Error> {
    const OP: &str = "confine";
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments and only sets a process flag.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(Error::last_os_error(OP, None));
    }
    let filter = program();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to a valid BPF program that lives across the call (the kernel
    // copies it); the flags make the kernel apply it to every thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_long,
            libc::SECCOMP_FILTER_FLAG_TSYNC as libc::c_long,
            &raw const prog,
        )
    };
    match r {
        0 => Ok(()),
        // With TSYNC, a positive result is the id of a thread that could not be synchronised.
        r if r > 0 => Err(Error::os(OP, None, crate::Errno::EBUSY)),
        _ => Err(Error::last_os_error(OP, None)),
    }
}

/// The architecture the filter accepts syscalls from (`AUDIT_ARCH_*`: the ELF machine with
/// the 64-bit and little-endian flags).
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = libc::EM_X86_64 as u32 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = libc::EM_AARCH64 as u32 | 0x8000_0000 | 0x4000_0000;

/// The syscalls refused: every way to get a new fd for a path (or another process's fd).
#[cfg(target_arch = "x86_64")]
const DENIED: [libc::c_long; 7] = [
    libc::SYS_open,
    libc::SYS_creat,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_open_by_handle_at,
    libc::SYS_io_uring_setup,
    libc::SYS_pidfd_getfd,
];
#[cfg(target_arch = "aarch64")]
const DENIED: [libc::c_long; 5] = [
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_open_by_handle_at,
    libc::SYS_io_uring_setup,
    libc::SYS_pidfd_getfd,
];

/// Syscall numbers at or above this are another ABI sharing the architecture (x86's x32).
#[cfg(target_arch = "x86_64")]
const FOREIGN_NR: u32 = 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const FOREIGN_NR: u32 = u32::MAX;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The BPF program: refuse (EPERM) foreign-ABI syscalls and [`DENIED`], allow the rest.
fn program() -> [libc::sock_filter; 6 + DENIED.len()] {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let deny = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
    let n = DENIED.len();
    // Offsets in `struct seccomp_data`: nr (int) at 0, arch (u32) at 4.
    let mut p = [stmt(BPF_RET | BPF_K, deny); 6 + DENIED.len()];
    p[0] = stmt(BPF_LD | BPF_W | BPF_ABS, 4);
    // Wrong architecture: jump to the final deny.
    p[1] = jump(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 0, (n + 3) as u8);
    p[2] = stmt(BPF_LD | BPF_W | BPF_ABS, 0);
    p[3] = jump(BPF_JMP | BPF_JGE | BPF_K, FOREIGN_NR, (n + 1) as u8, 0);
    for (i, &nr) in DENIED.iter().enumerate() {
        // Match: jump over the rest of the list and the allow, to the deny.
        p[4 + i] = jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, (n - i) as u8, 0);
    }
    p[4 + n] = stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW);
    p[5 + n] = stmt(BPF_RET | BPF_K, deny);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_ends_in_allow_then_deny_and_every_jump_lands_inside() {
        let p = program();
        let n = p.len();
        assert_eq!(p[n - 2].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(p[n - 1].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        for (i, ins) in p.iter().enumerate() {
            if ins.code as u32 & 0x07 == libc::BPF_JMP {
                assert!(i + 1 + (ins.jt as usize) < n && i + 1 + (ins.jf as usize) < n);
                // Every "taken" jump of the checks reaches the deny.
                if ins.jt != 0 {
                    assert_eq!(i + 1 + ins.jt as usize, n - 1, "instruction {i}");
                }
            }
        }
        assert_eq!(p[1].jf as usize + 2, n - 1, "wrong arch is denied");
    }
}
