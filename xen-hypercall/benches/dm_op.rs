//! ns per dm_op call: `cargo bench -p xen-hypercall` (host or Xen), and a quick run under
//! `cargo test` / `cargo xtask xen-test` (this target has `test = true`).
//!
//! A plain `harness = false` main rather than criterion: the quantity is one number per path
//! (a syscall round trip), the best of a few rounds is a stable estimator for it, and the same
//! binary must run inside the minimal dom0 of the Xen machine, where a plain executable with
//! no plotting or output directory is what fits.
//!
//! Paths measured:
//! - stand-in: `/dev/null` adopted as a privcmd fd, dm_op path forced to the ioctl. The kernel
//!   answers `ENOTTY` after its full ioctl dispatch, so this is our code plus one syscall.
//! - with Xen (when `/dev/xen/privcmd` exists): dm_op nr_vcpus to dom0 through the ioctl and
//!   through the hypercall fallback (Xen answers `EPERM` for a PV dom0: the call reaches the
//!   hypervisor), and `xen_version` / `xen_extraversion` hypercalls for comparison.

use std::hint::black_box;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use xen_hypercall::{DmOpBuf, DmOpPath, DomId, Plain, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};

fn measure(name: &str, iters: u32, rounds: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 + 1 {
        f();
    }
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    println!("bench: {name:<52} {best:>9.0} ns/call (best of {rounds} x {iters})");
    best
}

fn dm_op_once(xen: &Privcmd, domid: DomId) {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_nr_vcpus;
    let r = xen.dm_op("dm_op nr_vcpus", domid, &[DmOpBuf::from_mut(&mut op)]);
    black_box(r).ok();
}

fn main() {
    if cfg!(miri) {
        // Syscalls are all this measures; Miri cannot make them.
        println!("test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (iters, rounds) = if full { (200_000, 5) } else { (20_000, 3) };
    let mut measured = 0;

    let stand_in = Privcmd::from(OwnedFd::from(
        std::fs::File::open("/dev/null").expect("/dev/null"),
    ));
    stand_in.set_dm_op_path(DmOpPath::Ioctl);
    let ours = measure(
        "dm_op, ioctl, stand-in device (/dev/null)",
        iters,
        rounds,
        || dm_op_once(&stand_in, DomId::new(7)),
    );
    // Baseline: the same ioctl issued directly, to show what our layer adds.
    let fd = stand_in.as_raw_fd();
    let request = xen_sys::privcmd::IOCTL_PRIVCMD_DM_OP as libc::c_ulong;
    let bare = measure(
        "bare ioctl(IOCTL_PRIVCMD_DM_OP) on /dev/null",
        iters,
        rounds,
        || {
            // SAFETY: /dev/null answers ENOTTY without reading the argument.
            let r = unsafe { libc::ioctl(fd, request, core::ptr::null_mut::<libc::c_void>()) };
            black_box(r);
        },
    );
    println!("bench: our dm_op over a bare ioctl: {:+.0} ns", ours - bare);
    measured += 2;

    if std::path::Path::new("/dev/xen/privcmd").exists() {
        let xen = Privcmd::open().expect("open /dev/xen/privcmd");
        // Xen under QEMU/TCG is slow: fewer iterations.
        let iters = iters / 10;
        let ioctl = measure(
            "dm_op nr_vcpus dom0, ioctl (Xen: EPERM)",
            iters,
            rounds,
            || dm_op_once(&xen, DomId::DOM0),
        );
        xen.set_dm_op_path(DmOpPath::Hypercall);
        let bounce = measure(
            "dm_op nr_vcpus dom0, hypercall fallback (Xen: EPERM)",
            iters,
            rounds,
            || dm_op_once(&xen, DomId::DOM0),
        );
        measure("hypercall xen_version", iters, rounds, || {
            black_box(xen.xen_version()).ok();
        });
        measure(
            "hypercall xen_version extraversion (buffer)",
            iters,
            rounds,
            || {
                black_box(xen.xen_extraversion()).ok();
            },
        );
        println!("bench: hypercall fallback / ioctl = {:.2}", bounce / ioctl);
        println!(
            "bench: buffer stats after the runs: {:?}",
            xen.buffers().stats()
        );
        measured += 4;
    } else {
        println!("bench: no /dev/xen/privcmd here: stand-in only");
    }
    println!("test result: ok. 0 passed; 0 failed; 0 ignored; {measured} measured; 0 filtered out");
}
