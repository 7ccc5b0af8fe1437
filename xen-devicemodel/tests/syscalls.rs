//! Each simple operation is exactly one syscall: counted with a seccomp filter.
//!
//! A worker thread installs a seccomp filter (on itself only: no `TSYNC`) that traps every
//! syscall except the few its own exit needs; a `SIGSYS` handler counts the trapped ones and
//! makes them fail (`ENOTTY` for ioctls, as a stand-in device would, `ENOSYS` for anything
//! else). Each operation then runs on a stand-in handle, and the counts must be exactly one
//! ioctl and nothing else. x86_64 glibc only (the handler edits the saved `rax`).
#![cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
#![allow(missing_docs)]

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use xen_devicemodel::*;
use xen_hypercall::DmOpPath;

static IOCTLS: AtomicU64 = AtomicU64::new(0);
static OTHERS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: for a seccomp SIGSYS, siginfo's `_sigsys` fields start at offset 16:
    // `void *_call_addr; int _syscall; unsigned _arch;` — the syscall number is at 24.
    let nr = unsafe { *info.cast::<u8>().add(24).cast::<i32>() };
    let ret = if i64::from(nr) == libc::SYS_ioctl {
        IOCTLS.fetch_add(1, Ordering::SeqCst);
        -i64::from(libc::ENOTTY)
    } else {
        OTHERS.fetch_add(1, Ordering::SeqCst);
        -i64::from(libc::ENOSYS)
    };
    // SAFETY: `ctx` is the ucontext of the trapped thread; its saved rax becomes the
    // syscall's return value when the handler returns.
    unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RAX as usize] = ret };
}

fn install_handler() {
    // SAFETY: a plain SA_SIGINFO handler that only touches atomics and the ucontext.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(libc::SIGSYS, &sa, core::ptr::null_mut()), 0);
    }
}

/// Traps every syscall of the calling thread except those in `allowed`.
fn trap_all_but(allowed: &[i64]) {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let n = allowed.len();
    let mut prog = vec![stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0)];
    for (i, nr) in allowed.iter().enumerate() {
        prog.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: (n - i) as u8,
            jf: 0,
            k: *nr as u32,
        });
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_TRAP));
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with valid arguments; the filter program outlives the call (the kernel
    // copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0
        );
    }
}

type Op = (&'static str, Box<dyn Fn(&DeviceModel) -> bool + Send>);

#[test]
fn every_simple_op_is_exactly_one_syscall() {
    let dm = {
        let p = Privcmd::from(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        p.set_dm_op_path(DmOpPath::Ioctl);
        DeviceModel::from_privcmd(p)
    };
    let d = DomId::new(7);
    let irq = IsaIrq::new(4).unwrap();
    let pci = Sbdf::new(0, 0, 3, 0).unwrap();
    let ops: Vec<Op> = vec![
        ("nr_vcpus", Box::new(move |dm| dm.nr_vcpus(d).is_err())),
        ("shutdown", Box::new(move |dm| dm.reboot(d).is_err())),
        (
            "set_isa_irq_level",
            Box::new(move |dm| dm.set_isa_irq_level(d, irq, true).is_err()),
        ),
        (
            "set_pci_intx_level",
            Box::new(move |dm| dm.set_pci_intx_level(d, pci, IntxPin::A, true).is_err()),
        ),
        (
            "set_pci_link_route",
            Box::new(move |dm| dm.set_pci_link_route(d, PciLink::A, Some(irq)).is_err()),
        ),
        (
            "set_irq_level",
            Box::new(move |dm| dm.set_irq_level(d, 33, true).is_err()),
        ),
        (
            "inject_msi",
            Box::new(move |dm| dm.inject_msi(d, 0xfee0_0000, 0x40).is_err()),
        ),
        (
            "inject_event",
            Box::new(move |dm| dm.inject_event(d, Event::interrupt(0, 0x40)).is_err()),
        ),
        (
            "track_dirty_vram",
            Box::new(move |dm| {
                let mut bm = [0u64; 4];
                dm.track_dirty_vram(d, Gfn::new(0x100), 256, &mut bm)
                    .is_err()
            }),
        ),
        (
            "modified_memory",
            Box::new(move |dm| dm.modified_memory(d, Gfn::new(0x100), 4).is_err()),
        ),
        (
            "set_mem_type",
            Box::new(move |dm| dm.make_ram_region_ro(d, Gfn::new(0x100), 4).is_err()),
        ),
        (
            "relocate_memory",
            Box::new(move |dm| {
                dm.relocate_memory(d, Gfn::new(0x100), Gfn::new(0x200), 4)
                    .is_err()
            }),
        ),
        (
            "pin_memory_cacheattr",
            Box::new(move |dm| {
                dm.pin_memory_cacheattr(
                    d,
                    Gfn::new(0x100)..=Gfn::new(0x1ff),
                    CacheAttr::WriteCombining,
                )
                .is_err()
            }),
        ),
        (
            "create_ioreq_server",
            Box::new(move |dm| dm.create_ioreq_server(d, BufIoreqMode::Atomic).is_err()),
        ),
        (
            "map_io_range (port)",
            Box::new(move |dm| {
                let s = IoreqServer::from_id(dm, d, IoreqServerId::new(1), BufIoreqMode::Off);
                let r = s.map_port_range(0x3f8..=0x3ff).is_err();
                let _ = s.into_id();
                r
            }),
        ),
        (
            "map_io_range (pci)",
            Box::new(move |dm| {
                let s = IoreqServer::from_id(dm, d, IoreqServerId::new(1), BufIoreqMode::Off);
                let r = s.map_pci(pci).is_err();
                let _ = s.into_id();
                r
            }),
        ),
        (
            "get_ioreq_server_info",
            Box::new(move |dm| {
                let s = IoreqServer::from_id(dm, d, IoreqServerId::new(1), BufIoreqMode::Off);
                let r = s.info().is_err();
                let _ = s.into_id();
                r
            }),
        ),
        (
            "set_ioreq_server_state",
            Box::new(move |dm| {
                let s = IoreqServer::from_id(dm, d, IoreqServerId::new(1), BufIoreqMode::Off);
                let r = s.enable().is_err();
                let _ = s.into_id();
                r
            }),
        ),
        (
            "destroy_ioreq_server (drop)",
            Box::new(move |dm| {
                drop(IoreqServer::from_id(
                    dm,
                    d,
                    IoreqServerId::new(1),
                    BufIoreqMode::Off,
                ));
                true
            }),
        ),
    ];
    install_handler();
    let results = std::thread::spawn(move || {
        // Warm up every path (first-use effects), then trap and count.
        for (_, op) in &ops {
            op(&dm);
        }
        let mut counts = Vec::with_capacity(ops.len());
        trap_all_but(&[
            libc::SYS_rt_sigreturn,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_futex,
            libc::SYS_munmap,
            libc::SYS_madvise,
            libc::SYS_sigaltstack,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sched_yield,
        ]);
        for (name, op) in &ops {
            let (i0, o0) = (IOCTLS.load(Ordering::SeqCst), OTHERS.load(Ordering::SeqCst));
            let failed = op(&dm);
            let (i1, o1) = (IOCTLS.load(Ordering::SeqCst), OTHERS.load(Ordering::SeqCst));
            counts.push((*name, failed, i1 - i0, o1 - o0));
        }
        counts
    })
    .join()
    .unwrap();
    for (name, failed, ioctls, others) in &results {
        println!("{name}: {ioctls} ioctl, {others} other syscalls");
        assert!(
            failed,
            "{name}: the stand-in's ENOTTY came back as an error"
        );
        assert_eq!(
            (*ioctls, *others),
            (1, 0),
            "{name}: exactly one syscall (the dm_op ioctl)"
        );
    }
    assert_eq!(results.len(), 19);
}
