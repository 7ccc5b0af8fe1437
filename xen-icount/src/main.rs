//! `xen-icount ROW N`: runs one hot-path operation `N` times against a stand-in device that
//! answers every request with success, for `cargo xtask icount`, which runs this binary under
//! valgrind's callgrind with two values of `N` and divides the difference of the instruction
//! counts by the difference of `N`: user-space instructions per operation, set-up excluded.
//! Instruction counts are deterministic, unlike times on a shared machine.
//!
//! The stand-in: a memfd placed at fixed fd numbers (so `mmap` of it works like privcmd's),
//! and a seccomp filter that answers, for those fds only, `ioctl` with 0 without running it.
//! `MMAPBATCH_V2` is answered as the kernel does it: its per-frame error array is zeroed
//! (every frame mapped) by a supervisor process outside callgrind (the filter's listener),
//! which then answers 0. So the success paths run, and only our code and libc are counted.
//!
//! The `floor_*` rows are hand-written: fill the same struct, make the same syscalls, nothing
//! else. Rows: see [`ROWS`].

use std::hint::black_box;
use std::os::fd::{FromRawFd, OwnedFd};

use xen_devicemodel::{BufIoreqMode, DeviceModel, DomId, IoreqServer, IoreqServerId, IsaIrq};
use xen_evtchn::{EventChannels, Port};
use xen_foreignmemory::{ForeignMemory, ReadWrite, Resource};
use xen_hypercall::{DmOpPath, Gfn, Privcmd};

/// The stand-in memfd; every fd numbered from here up is answered by the filter.
const STAND_IN_FD: i32 = 900;
/// The guest the operations name.
const D: DomId = DomId::new(7);
/// The stand-in's size: room for the largest mapping.
const STAND_IN_BYTES: i64 = 1025 * 4096;

/// Every row: its name, for `cargo xtask icount`.
const ROWS: &[&str] = &[
    "dm_op_set_isa_irq_level",
    "dm_op_set_pci_intx_level",
    "dm_op_inject_msi",
    "dm_op_map_io_range",
    "dm_op_track_dirty_vram",
    "dm_op_modified_memory",
    "evtchn_notify",
    "evtchn_pending_unmask",
    "map_1",
    "map_64",
    "map_1024",
    "map_resource_2",
    "dm_op_hypercall_fallback",
    "served_port_read",
    "served_mmio_write",
    "floor_dm_op",
    "floor_notify",
    "floor_pending_unmask",
    "floor_map",
];

fn fail(what: &str) -> ! {
    eprintln!("xen-icount: {what}");
    std::process::exit(2)
}

/// Set (by `--wrap`) when the filter and its supervisor are already in place.
const FILTERED: &str = "XEN_ICOUNT_FILTERED";

/// Makes fd `STAND_IN_FD` a memfd and, unless `--wrap` did, installs the answering filter.
fn stand_in() {
    // SAFETY: plain syscalls on fds this function owns.
    unsafe {
        let m = libc::memfd_create(c"xen-icount".as_ptr(), 0);
        if m < 0 || libc::ftruncate(m, STAND_IN_BYTES) != 0 || libc::dup2(m, STAND_IN_FD) < 0 {
            fail("memfd stand-in");
        }
        libc::close(m);
    }
    if std::env::var_os(FILTERED).is_none() {
        filter();
    }
}

/// Installs the answering filter and starts its supervisor.
fn filter() {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let ld = |k| libc::sock_filter {
        code: (BPF_LD | BPF_W | BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k, jt, jf| libc::sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ret = |k| libc::sock_filter {
        code: (BPF_RET | BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    // seccomp_data: nr at 0, args[0] (low half) at 16.
    let jge = |k, jt, jf| libc::sock_filter {
        code: (BPF_JMP | BPF_JGE | BPF_K) as u16,
        jt,
        jf,
        k,
    };
    // args[1] (low half: the ioctl's command) at 24.
    let map_v2: u32 = xen_sys::privcmd::IOCTL_PRIVCMD_MMAPBATCH_V2;
    let filter = [
        ld(16),
        jge(STAND_IN_FD as u32, 0, 6),
        ld(0),
        jeq(libc::SYS_ioctl as u32, 0, 4),
        ld(24),
        jeq(map_v2, 0, 1),
        ret(libc::SECCOMP_RET_USER_NOTIF),
        ret(libc::SECCOMP_RET_ERRNO),
        ret(libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: a valid filter program, copied by the kernel.
    let listener = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail("no_new_privs");
        }
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &raw const prog,
        )
    };
    if listener < 0 {
        fail("seccomp stand-in filter");
    }
    // The supervisor: this binary again, started with exec so that callgrind does not
    // follow it (its instructions are the stand-in kernel's, not ours).
    let exe = std::env::current_exe().unwrap_or_else(|_| fail("current_exe"));
    let fd = listener as i32;
    // SAFETY: clears close-on-exec of the listener, which this function owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let child = std::process::Command::new(exe)
        .args([
            "--supervise",
            &fd.to_string(),
            &std::process::id().to_string(),
        ])
        .spawn();
    if child.is_err() {
        fail("supervisor");
    }
    // SAFETY: our copy of the listener, no longer needed.
    unsafe { libc::close(fd) };
}

/// The stand-in kernel's side of `MMAPBATCH_V2`: for each call the filter hands to
/// `listener`, zeroes the `num` outcomes at the request's `err` in process `pid` (as
/// privcmd does before mapping; every frame maps here), and answers 0. Ends when the
/// process does.
fn supervise(listener: i32, pid: i32) -> ! {
    // SAFETY: plain calls. The filter counts this process among its users, so the listener
    // never reports their end: leave with the measured process instead.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != pid {
            std::process::exit(0);
        }
    }
    use std::os::unix::fs::FileExt;
    loop {
        // SAFETY: all-zero is a valid `seccomp_notif` (the kernel wants it zeroed).
        let mut req: libc::seccomp_notif = unsafe { core::mem::zeroed() };
        // SAFETY: `req` is a live `seccomp_notif`.
        if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut req) } != 0 {
            std::process::exit(0);
        }
        // Opened per call: the process may have replaced its image (exec) since the last.
        let Ok(mem) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
        else {
            std::process::exit(0)
        };
        let mut raw = [0u8; core::mem::size_of::<xen_sys::privcmd::privcmd_mmapbatch_v2>()];
        let mut error = 0;
        if mem.read_exact_at(&mut raw, req.data.args[2]).is_ok() {
            // SAFETY: `raw` holds the request's bytes; a plain-data struct, read unaligned.
            let m: xen_sys::privcmd::privcmd_mmapbatch_v2 =
                unsafe { core::ptr::read_unaligned(raw.as_ptr().cast()) };
            let zeros = vec![0u8; m.num as usize * 4];
            if mem.write_all_at(&zeros, m.err as u64).is_err() {
                error = -libc::EFAULT;
            }
        } else {
            error = -libc::EFAULT;
        }
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error,
            flags: 0,
        };
        // SAFETY: `resp` is a live `seccomp_notif_resp`.
        unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &raw mut resp) };
    }
}

/// A new fd on the stand-in, numbered from `STAND_IN_FD` up.
fn stand_in_fd() -> OwnedFd {
    // SAFETY: duplicates our memfd; the new fd is owned by the returned value only.
    unsafe {
        let fd = libc::fcntl(STAND_IN_FD, libc::F_DUPFD_CLOEXEC, STAND_IN_FD);
        if fd < 0 {
            fail("dup");
        }
        OwnedFd::from_raw_fd(fd)
    }
}

/// A FIFO opened read-write, numbered from `STAND_IN_FD` up, holding one port (5).
fn fifo_fd() -> OwnedFd {
    let path = std::env::temp_dir().join(format!("xen-icount-{}", std::process::id()));
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: plain syscalls on a path and fds this function owns.
    unsafe {
        if libc::mkfifo(c.as_ptr(), 0o600) != 0 {
            fail("mkfifo");
        }
        let f = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        libc::unlink(c.as_ptr());
        let fd = libc::fcntl(f, libc::F_DUPFD_CLOEXEC, STAND_IN_FD + 1);
        libc::close(f);
        if f < 0 || fd < 0 || libc::write(fd, (&raw const PORT).cast(), 4) != 4 {
            fail("fifo stand-in");
        }
        OwnedFd::from_raw_fd(fd)
    }
}

/// The port the FIFO stand-in holds.
static PORT: u32 = 5;

fn privcmd(path: DmOpPath) -> Privcmd {
    let p = Privcmd::from(stand_in_fd());
    p.set_dm_op_path(path);
    p
}

/// A foreign-memory handle on the stand-in, using `MMAPBATCH_V2` as on any current kernel
/// (the stand-in answers every ioctl with success, so it cannot be probed).
fn foreign_memory() -> ForeignMemory {
    let fm = ForeignMemory::from_privcmd(privcmd(DmOpPath::Ioctl));
    fm.set_batch_ioctl(xen_foreignmemory::BatchIoctl::V2);
    fm
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--wrap") {
        // `xen-icount --wrap valgrind ... xen-icount ROW N`: the filter is installed here,
        // before the command runs (valgrind does not know the `seccomp` syscall that makes
        // its listener); it stays in force across exec.
        filter();
        let cmd: Vec<std::ffi::CString> = args[2..]
            .iter()
            .map(|a| std::ffi::CString::new(a.as_str()).unwrap_or_default())
            .collect();
        let mut argv: Vec<*const libc::c_char> = cmd.iter().map(|c| c.as_ptr()).collect();
        argv.push(core::ptr::null());
        // SAFETY: sets a variable of this single-threaded process before exec.
        unsafe { std::env::set_var(FILTERED, "1") };
        if let Some(c) = cmd.first() {
            // SAFETY: a NUL-terminated argv of live C strings.
            unsafe { libc::execvp(c.as_ptr(), argv.as_ptr()) };
        }
        fail("--wrap COMMAND...");
    }
    if args.get(1).map(String::as_str) == Some("--supervise") {
        let num = |i: usize| args.get(i).and_then(|v| v.parse().ok());
        match (num(2), num(3)) {
            (Some(l), Some(p)) => supervise(l, p),
            _ => fail("--supervise LISTENER PID"),
        }
    }
    let (Some(row), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u32>().ok()))
    else {
        eprintln!("usage: xen-icount ROW N   (rows: {})", ROWS.join(", "));
        std::process::exit(2)
    };
    stand_in();
    run(row, n);
}

/// Runs `op` `n` times (monomorphised: no dispatch inside the loop); with `strict`, an error
/// ends the run.
#[inline(always)]
fn repeat<E>(n: u32, strict: bool, mut op: impl FnMut(u32) -> Result<(), E>) {
    for i in 0..n {
        if op(i).is_err() && strict {
            fail("an operation failed on the stand-in");
        }
    }
}

fn run(row: &str, n: u32) {
    match row {
        "dm_op_set_isa_irq_level"
        | "dm_op_set_pci_intx_level"
        | "dm_op_inject_msi"
        | "dm_op_map_io_range"
        | "dm_op_track_dirty_vram"
        | "dm_op_modified_memory"
        | "dm_op_hypercall_fallback" => {
            let path = if row == "dm_op_hypercall_fallback" {
                DmOpPath::Hypercall
            } else {
                DmOpPath::Ioctl
            };
            let dm = DeviceModel::from_privcmd(privcmd(path));
            let srv = IoreqServer::from_id(&dm, D, IoreqServerId::new(1), BufIoreqMode::Atomic);
            let irq = IsaIrq::new(3).unwrap_or_else(|_| fail("irq"));
            let pci = xen_devicemodel::Sbdf::new(0, 0, 3, 0).unwrap_or_else(|_| fail("sbdf"));
            let mut bitmap = [0u64; 2];
            // valgrind has its own model of Xen hypercalls and answers the dm_op hypercall
            // (which it does not know) with an error itself: that row runs the error return
            // too, an overestimate.
            let strict = row != "dm_op_hypercall_fallback";
            match row {
                "dm_op_set_isa_irq_level" | "dm_op_hypercall_fallback" => repeat(n, strict, |i| {
                    dm.set_isa_irq_level(black_box(D), irq, i & 1 == 0)
                }),
                "dm_op_set_pci_intx_level" => repeat(n, strict, |i| {
                    dm.set_pci_intx_level(
                        black_box(D),
                        pci,
                        xen_devicemodel::IntxPin::A,
                        i & 1 == 0,
                    )
                }),
                "dm_op_inject_msi" => repeat(n, strict, |_| {
                    dm.inject_msi(black_box(D), 0xfee0_0000, 0x41)
                }),
                "dm_op_map_io_range" => {
                    repeat(n, strict, |_| srv.map_port_range(black_box(0x3f8..=0x3ff)))
                }
                "dm_op_track_dirty_vram" => repeat(n, strict, |_| {
                    dm.track_dirty_vram(
                        black_box(D),
                        black_box(Gfn::new(0xf0000)),
                        black_box(100),
                        &mut bitmap,
                    )
                }),
                _ => repeat(n, strict, |_| {
                    dm.modified_memory(black_box(D), black_box(Gfn::new(0x100)), black_box(4))
                }),
            }
            std::mem::forget(srv);
        }
        "evtchn_notify" | "evtchn_pending_unmask" => {
            let ch = EventChannels::from_fd(fifo_fd());
            if row == "evtchn_notify" {
                repeat(n, true, |_| ch.notify(black_box(Port::new(5))));
            } else {
                repeat(n, true, |_| {
                    let p = ch.pending()?;
                    ch.unmask(p)
                });
            }
        }
        "map_1" | "map_64" | "map_1024" => {
            let count: usize = row[4..].parse().unwrap_or(1);
            let fm = foreign_memory();
            let gfns: Vec<Gfn> = (0x1000..0x1000 + count as u64).map(Gfn::new).collect();
            repeat(n, true, |_| {
                fm.map(black_box(D), &gfns, ReadWrite)
                    .map(|m| drop(black_box(m)))
            });
        }
        "map_resource_2" => {
            let fm = ForeignMemory::from_privcmd(privcmd(DmOpPath::Ioctl));
            for _ in 0..n {
                match fm.map_resource(
                    black_box(D),
                    black_box(Resource::IoreqServer { id: 0 }),
                    black_box(0),
                    black_box(2),
                    ReadWrite,
                ) {
                    Ok(m) => drop(black_box(m)),
                    Err(_) => fail(row),
                }
            }
        }
        "served_port_read" | "served_mmio_write" => {
            // The loop's per-request path: a port read (or an MMIO write by value) Xen posted
            // in a vCPU's slot, taken, dispatched to a device that answers at once,
            // completed, and the vCPU's channel notified (the stand-in answers the notify
            // ioctl).
            struct Null;
            impl xen_devicemodel::server::Device for Null {
                fn port_read(&mut self, port: u16, _: u8) -> u32 {
                    u32::from(port)
                }
                fn mmio_write(&mut self, addr: u64, _: u8, value: u64) {
                    black_box((addr, value));
                }
            }
            let ch = EventChannels::from_fd(fifo_fd());
            let mmio = row == "served_mmio_write";
            let claim = if mmio {
                xen_devicemodel::server::Claim::Mmio(0xfed0_0000..=0xfed0_0fff)
            } else {
                xen_devicemodel::server::Claim::Ports(0x3f8..=0x3ff)
            };
            let mut l = xen_devicemodel::server::StandInLoop::new(ch, Port::new(5), Null, [claim]);
            // One loop per kind: no test of the kind inside.
            let serve = |l: &mut xen_devicemodel::server::StandInLoop| match l.serve() {
                Ok(Some(v)) => {
                    black_box(v);
                }
                _ => fail(row),
            };
            if mmio {
                for _ in 0..n {
                    l.post_mmio_write(black_box(0xfed0_0040), 4);
                    serve(&mut l);
                }
            } else {
                for _ in 0..n {
                    l.post_port_read(black_box(0x3f8), 1);
                    serve(&mut l);
                }
            }
        }
        "floor_dm_op" => {
            let mut req = [0u8; 40];
            for _ in 0..n {
                req[0] = 5;
                let mut buf = xen_sys::privcmd::privcmd_dm_op_buf {
                    uptr: req.as_mut_ptr().cast(),
                    size: req.len(),
                };
                let mut op = xen_sys::privcmd::privcmd_dm_op {
                    dom: black_box(D.get()),
                    num: 1,
                    ubufs: &mut buf,
                };
                // SAFETY: the stand-in answers without reading.
                let r = unsafe {
                    libc::ioctl(
                        STAND_IN_FD,
                        xen_sys::privcmd::IOCTL_PRIVCMD_DM_OP as _,
                        &mut op,
                    )
                };
                black_box(r);
            }
        }
        "floor_notify" => {
            for _ in 0..n {
                let mut arg = xen_sys::evtchn::ioctl_evtchn_notify { port: black_box(5) };
                // SAFETY: as above.
                let r = unsafe {
                    libc::ioctl(
                        STAND_IN_FD,
                        xen_sys::evtchn::IOCTL_EVTCHN_NOTIFY as _,
                        &mut arg,
                    )
                };
                black_box(r);
            }
        }
        "floor_pending_unmask" => {
            let fifo = fifo_fd();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&fifo);
            for _ in 0..n {
                let mut port = 0u32;
                // SAFETY: reads/writes 4 bytes of a local.
                unsafe {
                    if libc::read(fd, (&raw mut port).cast(), 4) != 4 {
                        fail(row);
                    }
                    libc::write(fd, (&raw const port).cast(), 4);
                }
            }
        }
        "floor_map" => {
            let gfn = [0x1000u64];
            let mut err = [0i32];
            for _ in 0..n {
                // SAFETY: a fresh shared mapping of the stand-in, unmapped again.
                unsafe {
                    let p = libc::mmap(
                        core::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        STAND_IN_FD,
                        0,
                    );
                    let mut req = xen_sys::privcmd::privcmd_mmapbatch_v2 {
                        num: 1,
                        dom: black_box(D.get()),
                        addr: p as u64,
                        arr: gfn.as_ptr(),
                        err: err.as_mut_ptr(),
                    };
                    libc::ioctl(
                        STAND_IN_FD,
                        xen_sys::privcmd::IOCTL_PRIVCMD_MMAPBATCH_V2 as _,
                        &mut req,
                    );
                    libc::munmap(p, 4096);
                }
            }
        }
        _ => fail("unknown row"),
    }
}
