//! ns per device-model operation: `cargo bench -p xen-devicemodel` (host or Xen), and a quick
//! run under `cargo test` / `cargo xtask xen-test` (this target has `test = true`).
//!
//! A plain `harness = false` main (as in xen-hypercall's bench): one number per operation, the
//! best of a few rounds, from a binary that also runs in the Xen machine's minimal dom0.
//!
//! - stand-in: `/dev/null` adopted as the privcmd fd (dm_op path forced to the ioctl): the
//!   kernel answers `ENOTTY` after its full ioctl dispatch, so this is our code plus one
//!   syscall — the cost the library adds per operation.
//! - with Xen (when `/dev/xen/privcmd` exists): the same operations on dom0, which Xen refuses
//!   with `EPERM` after decoding the dm_op (dom0 is PV): a round trip into the hypervisor. The
//!   per-operation cost on a real HVM guest is printed by the `guest_dm_op` bench.
//! - Debian's C libxendevicemodel, in the same run when it can be loaded (`dlopen` at run
//!   time: nothing here or in the crate links it): the same two calls on dom0, for the ratio.

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::Instant;
use xen_devicemodel::Gfn;

use xen_devicemodel::{
    BufIoreqMode, DeviceModel, DomId, Event, IoreqServer, IoreqServerId, IsaIrq, Privcmd,
};
use xen_hypercall::DmOpPath;

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
    println!("bench: {name:<56} {best:>9.0} ns/call (best of {rounds} x {iters})");
    best
}

fn run_all(label: &str, dm: &DeviceModel, dom: DomId, iters: u32, rounds: u32) {
    let irq = IsaIrq::new(5).expect("irq");
    // Adopted, never destroyed: the id is a stand-in (into_id at the end).
    let srv = IoreqServer::from_id(dm, dom, IoreqServerId::new(0), BufIoreqMode::Off);
    measure(&format!("{label}: nr_vcpus"), iters, rounds, || {
        black_box(dm.nr_vcpus(black_box(dom))).ok();
    });
    measure(
        &format!("{label}: set_isa_irq_level"),
        iters,
        rounds,
        || {
            black_box(dm.set_isa_irq_level(dom, irq, true)).ok();
        },
    );
    measure(&format!("{label}: inject_msi"), iters, rounds, || {
        black_box(dm.inject_msi(dom, 0xfee0_0000, 0x40)).ok();
    });
    measure(&format!("{label}: inject_event"), iters, rounds, || {
        black_box(dm.inject_event(dom, Event::interrupt(0, 0x40))).ok();
    });
    measure(&format!("{label}: modified_memory"), iters, rounds, || {
        black_box(dm.modified_memory(dom, Gfn::new(0x100), 1)).ok();
    });
    measure(&format!("{label}: map_port_range"), iters, rounds, || {
        black_box(srv.map_port_range(0x3f8..=0x3ff)).ok();
    });
    let _ = srv.into_id();
}

/// Debian's C libxendevicemodel, loaded with `dlopen` (bench-only; never linked).
struct CLib {
    handle: *mut libc::c_void,
    nr_vcpus: unsafe extern "C" fn(*mut libc::c_void, u16, *mut u32) -> libc::c_int,
    set_isa_irq_level:
        unsafe extern "C" fn(*mut libc::c_void, u16, u8, libc::c_uint) -> libc::c_int,
}

impl CLib {
    fn load() -> Option<CLib> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols' C signatures are
        // those of xendevicemodel.h (xendevicemodel_open(logger, flags),
        // xendevicemodel_nr_vcpus(dmod, domid, &vcpus),
        // xendevicemodel_set_isa_irq_level(dmod, domid, irq, level)).
        unsafe {
            let lib = libc::dlopen(c"libxendevicemodel.so.1".as_ptr(), libc::RTLD_NOW);
            if lib.is_null() {
                return None;
            }
            let sym = |name: &core::ffi::CStr| libc::dlsym(lib, name.as_ptr());
            let (open, nr, isa) = (
                sym(c"xendevicemodel_open"),
                sym(c"xendevicemodel_nr_vcpus"),
                sym(c"xendevicemodel_set_isa_irq_level"),
            );
            if open.is_null() || nr.is_null() || isa.is_null() {
                return None;
            }
            let open: unsafe extern "C" fn(*mut libc::c_void, libc::c_uint) -> *mut libc::c_void =
                core::mem::transmute(open);
            let handle = open(core::ptr::null_mut(), 0);
            if handle.is_null() {
                return None;
            }
            Some(CLib {
                handle,
                nr_vcpus: core::mem::transmute::<
                    *mut libc::c_void,
                    unsafe extern "C" fn(*mut libc::c_void, u16, *mut u32) -> libc::c_int,
                >(nr),
                set_isa_irq_level: core::mem::transmute::<
                    *mut libc::c_void,
                    unsafe extern "C" fn(*mut libc::c_void, u16, u8, libc::c_uint) -> libc::c_int,
                >(isa),
            })
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (iters, rounds) = if full { (200_000, 5) } else { (20_000, 3) };

    let stand_in = Privcmd::from(OwnedFd::from(
        std::fs::File::open("/dev/null").expect("/dev/null"),
    ));
    stand_in.set_dm_op_path(DmOpPath::Ioctl);
    let stand_in = DeviceModel::from_privcmd(stand_in);
    run_all(
        "stand-in (/dev/null)",
        &stand_in,
        DomId::new(7),
        iters,
        rounds,
    );

    if std::path::Path::new(Privcmd::DEVICE).exists() {
        let dm = DeviceModel::open().expect("open privcmd");
        run_all("Xen, dom0 (EPERM)", &dm, DomId::DOM0, iters / 10, rounds);
        match CLib::load() {
            Some(c) => {
                // Interleaved rounds (Rust, C, Rust, C, ...) so drift in the machine hits
                // both alike; best round of each.
                let irq = IsaIrq::new(5).expect("irq");
                let n = iters / 10;
                let mut v = 0u32;
                let (mut rn, mut cn, mut ri, mut ci) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
                for _ in 0..rounds + 2 {
                    rn = rn.min(measure("Rust nr_vcpus dom0 (EPERM)", n, 1, || {
                        black_box(dm.nr_vcpus(DomId::DOM0)).ok();
                    }));
                    cn = cn.min(measure(
                        "C libxendevicemodel nr_vcpus dom0 (EPERM)",
                        n,
                        1,
                        || {
                            // SAFETY: a live handle and a valid out-pointer.
                            black_box(unsafe { (c.nr_vcpus)(c.handle, 0, &mut v) });
                        },
                    ));
                    ri = ri.min(measure("Rust set_isa_irq_level dom0 (EPERM)", n, 1, || {
                        black_box(dm.set_isa_irq_level(DomId::DOM0, irq, true)).ok();
                    }));
                    ci = ci.min(measure(
                        "C libxendevicemodel set_isa_irq_level dom0 (EPERM)",
                        n,
                        1,
                        || {
                            // SAFETY: a live handle; plain integer arguments.
                            black_box(unsafe { (c.set_isa_irq_level)(c.handle, 0, 5, 1) });
                        },
                    ));
                }
                println!(
                    "bench: best rounds: nr_vcpus Rust {rn:.0} ns, C {cn:.0} ns ({:.2}); set_isa_irq_level Rust {ri:.0} ns, C {ci:.0} ns ({:.2})",
                    rn / cn,
                    ri / ci
                );
            }
            None => println!("bench: libxendevicemodel.so.1 not loadable here: no C comparison"),
        }
    }
    // The summary line `cargo xtask xen-test` expects from every test executable.
    println!("test result: ok. 0 passed; 0 failed; 0 ignored; 1 measured; 0 filtered out");
}
