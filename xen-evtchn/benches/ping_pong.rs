//! Event-channel ping-pong: round trips per second between two handles of this process
//! (an unbound port on one, an interdomain bind to it on the other; both in dom0).
//! `cargo bench -p xen-evtchn` in a dom0, and a quick run under `cargo test` /
//! `cargo xtask xen-test -p xen-evtchn` (this target has `test = true`). Without
//! `/dev/xen/evtchn` it says so and measures nothing.
//!
//! A plain `harness = false` main (as xen-hypercall's dm_op bench): one number per setup, best
//! of a few rounds, and an executable that runs in the Xen machine's minimal dom0.
//!
//! One round trip is: notify → the other handle's pending → unmask → notify back → pending →
//! unmask. Two setups:
//! - one thread drives both handles (no wake-ups: the cost of the syscalls and of Xen);
//! - two threads, one per handle, each blocked in `pending()` (adds the wake-ups).
//!
//! Measured in the Xen test machine (Xen 4.17 + Linux 6.1 dom0 under QEMU/TCG, 2026-11-24),
//! quick mode, best of 5 x 2000, setups interleaved:
//!
//! | build | xen-evtchn 1 thread | C 1 thread | xen-evtchn 2 threads | C 2 threads |
//! |---|---|---|---|---|
//! | test profile (opt-level 0, what `xen-test` builds) | 6732/s | 7053/s | 4663/s | 4960/s |
//! | `CARGO_PROFILE_DEV_OPT_LEVEL=3` (host busier) | 4839/s | 4706/s | 3350/s | 3457/s |
//!
//! Same syscalls as the C library (one ioctl, one read, one write per side), so the same
//! speed once optimized; the round trip is the kernel's and Xen's cost (~150-200 us under TCG).
//!
//! When Debian's C `libxenevtchn.so.1` is installed (it is in the Xen machine: xl needs it),
//! the same two setups run through it too, loaded with `dlopen` here only: the crate itself
//! never links it.

use std::ffi::{c_int, c_uint, c_void};
use std::time::Instant;

use xen_evtchn::{DomId, EventChannels, Port};

/// One setup: a name and a function doing `n` round trips.
type Setup<'a> = (&'static str, Box<dyn FnMut(u32) + 'a>);

/// Runs every setup `rounds` times, interleaved (so drift in the host's load hits them
/// alike), and prints and returns each one's best rate in round trips per second.
fn measure(setups: &mut [Setup<'_>], n: u32, rounds: u32) -> Vec<f64> {
    let mut best = vec![0f64; setups.len()];
    for (_, f) in setups.iter_mut() {
        f(n / 10 + 1); // warm up
    }
    for _ in 0..rounds {
        for (i, (_, f)) in setups.iter_mut().enumerate() {
            let t = Instant::now();
            f(n);
            best[i] = best[i].max(f64::from(n) / t.elapsed().as_secs_f64());
        }
    }
    for ((name, _), r) in setups.iter().zip(&best) {
        println!(
            "evtchn ping-pong: {r:>9.0} round trips/s  {name} (best of {rounds} x {n}; {:.1} us each)",
            1e6 / r
        );
    }
    best
}

fn rust_single(a: &EventChannels, b: &EventChannels, pa: Port, pb: Port, n: u32) {
    for _ in 0..n {
        b.notify(pb).unwrap();
        let p = a.pending().unwrap();
        a.unmask(p).unwrap();
        a.notify(pa).unwrap();
        let p = b.pending().unwrap();
        b.unmask(p).unwrap();
    }
}

fn rust_threads(a: &EventChannels, b: &EventChannels, pa: Port, pb: Port, n: u32) {
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..n {
                let p = b.pending().unwrap();
                b.unmask(p).unwrap();
                b.notify(pb).unwrap();
            }
        });
        for _ in 0..n {
            a.notify(pa).unwrap();
            let p = a.pending().unwrap();
            a.unmask(p).unwrap();
        }
    });
}

/// The few libxenevtchn entry points, from `dlopen`.
struct CLib {
    open: unsafe extern "C" fn(*mut c_void, c_uint) -> *mut c_void,
    close: unsafe extern "C" fn(*mut c_void) -> c_int,
    bind_unbound_port: unsafe extern "C" fn(*mut c_void, u32) -> c_int,
    bind_interdomain: unsafe extern "C" fn(*mut c_void, u32, u32) -> c_int,
    notify: unsafe extern "C" fn(*mut c_void, u32) -> c_int,
    pending: unsafe extern "C" fn(*mut c_void) -> c_int,
    unmask: unsafe extern "C" fn(*mut c_void, u32) -> c_int,
}

/// A `xenevtchn_handle *` (libxenevtchn handles may be used from any thread).
#[derive(Clone, Copy)]
struct CHandle(*mut c_void);
// SAFETY: libxenevtchn's handle is an fd plus a logger; its calls are plain syscalls.
unsafe impl Send for CHandle {}
// SAFETY: as above.
unsafe impl Sync for CHandle {}

impl CHandle {
    /// The pointer (a method, so closures capture the whole `Send` handle, not the field).
    fn ptr(self) -> *mut c_void {
        self.0
    }
}

impl CLib {
    fn load() -> Option<CLib> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the type
        // of its declaration in xenevtchn.h (4.17).
        unsafe {
            let h = libc::dlopen(c"libxenevtchn.so.1".as_ptr(), libc::RTLD_NOW);
            if h.is_null() {
                return None;
            }
            macro_rules! sym {
                ($name:literal, $ty:ty) => {{
                    let p = libc::dlsym(h, $name.as_ptr());
                    if p.is_null() {
                        return None;
                    }
                    core::mem::transmute::<*mut c_void, $ty>(p)
                }};
            }
            type Open = unsafe extern "C" fn(*mut c_void, c_uint) -> *mut c_void;
            type Handle = unsafe extern "C" fn(*mut c_void) -> c_int;
            type HandlePort = unsafe extern "C" fn(*mut c_void, u32) -> c_int;
            type HandlePortPort = unsafe extern "C" fn(*mut c_void, u32, u32) -> c_int;
            Some(CLib {
                open: sym!(c"xenevtchn_open", Open),
                close: sym!(c"xenevtchn_close", Handle),
                bind_unbound_port: sym!(c"xenevtchn_bind_unbound_port", HandlePort),
                bind_interdomain: sym!(c"xenevtchn_bind_interdomain", HandlePortPort),
                notify: sym!(c"xenevtchn_notify", HandlePort),
                pending: sym!(c"xenevtchn_pending", Handle),
                unmask: sym!(c"xenevtchn_unmask", HandlePort),
            })
        }
    }
}

fn c_single(c: &CLib, a: CHandle, b: CHandle, pa: u32, pb: u32, n: u32) {
    for _ in 0..n {
        // SAFETY: open handles, ports bound on them.
        unsafe {
            assert_eq!((c.notify)(b.ptr(), pb), 0);
            let p = (c.pending)(a.ptr());
            assert!(p > 0);
            assert_eq!((c.unmask)(a.ptr(), p as u32), 0);
            assert_eq!((c.notify)(a.ptr(), pa), 0);
            let p = (c.pending)(b.ptr());
            assert!(p > 0);
            assert_eq!((c.unmask)(b.ptr(), p as u32), 0);
        }
    }
}

fn c_threads(c: &CLib, a: CHandle, b: CHandle, pa: u32, pb: u32, n: u32) {
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..n {
                // SAFETY: as in c_single.
                unsafe {
                    let p = (c.pending)(b.ptr());
                    assert!(p > 0);
                    assert_eq!((c.unmask)(b.ptr(), p as u32), 0);
                    assert_eq!((c.notify)(b.ptr(), pb), 0);
                }
            }
        });
        for _ in 0..n {
            // SAFETY: as in c_single.
            unsafe {
                assert_eq!((c.notify)(a.ptr(), pa), 0);
                let p = (c.pending)(a.ptr());
                assert!(p > 0);
                assert_eq!((c.unmask)(a.ptr(), p as u32), 0);
            }
        }
    });
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if full { (20_000, 7) } else { (2_000, 5) };
    if !std::path::Path::new(xen_evtchn::EVTCHN_DEVICE).exists() {
        println!(
            "evtchn ping-pong: skipped, no {} (run it in a dom0: cargo xtask xen-test -p xen-evtchn)",
            xen_evtchn::EVTCHN_DEVICE
        );
        println!("test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out");
        return;
    }

    let a = EventChannels::open().expect("open a");
    let b = EventChannels::open().expect("open b");
    let pa = a.bind_unbound_port(DomId::SELF).expect("bind_unbound_port");
    let pb = b
        .bind_interdomain(DomId::SELF, pa.port())
        .expect("bind_interdomain");
    // Xen raises a freshly bound interdomain port once: take that event first.
    assert_eq!(b.pending().unwrap(), pb.port());
    pb.unmask().unwrap();
    let (ra, rb) = (pa.port(), pb.port());
    let (a, b) = (&a, &b);
    let mut setups: Vec<Setup<'_>> = vec![
        (
            "xen-evtchn, one thread",
            Box::new(move |n| rust_single(a, b, ra, rb, n)),
        ),
        (
            "xen-evtchn, two threads",
            Box::new(move |n| rust_threads(a, b, ra, rb, n)),
        ),
    ];
    let clib = CLib::load();
    let mut c_handles = None;
    if let Some(c) = &clib {
        // SAFETY: libxenevtchn calls with a null logger and valid handles/ports.
        let (ha, hb, ca, cb) = unsafe {
            let ha = CHandle((c.open)(core::ptr::null_mut(), 0));
            let hb = CHandle((c.open)(core::ptr::null_mut(), 0));
            assert!(!ha.0.is_null() && !hb.0.is_null(), "xenevtchn_open failed");
            let ca = (c.bind_unbound_port)(ha.0, u32::from(DomId::SELF));
            assert!(ca > 0, "xenevtchn_bind_unbound_port failed");
            let cb = (c.bind_interdomain)(hb.0, u32::from(DomId::SELF), ca as u32);
            assert!(cb > 0, "xenevtchn_bind_interdomain failed");
            assert_eq!((c.pending)(hb.0), cb, "the bind-time event");
            assert_eq!((c.unmask)(hb.0, cb as u32), 0);
            (ha, hb, ca as u32, cb as u32)
        };
        c_handles = Some((ha, hb));
        setups.push((
            "C libxenevtchn, one thread",
            Box::new(move |n| c_single(c, ha, hb, ca, cb, n)),
        ));
        setups.push((
            "C libxenevtchn, two threads",
            Box::new(move |n| c_threads(c, ha, hb, ca, cb, n)),
        ));
    } else {
        println!("evtchn ping-pong: C libxenevtchn.so.1 not found, no comparison");
    }
    let r = measure(&mut setups, n, rounds);
    if r.len() == 4 {
        println!(
            "evtchn ping-pong: xen-evtchn / C: {:.2}x (one thread), {:.2}x (two threads)",
            r[0] / r[2],
            r[1] / r[3]
        );
    }
    let measured = setups.len();
    drop(setups);
    if let (Some(c), Some((ha, hb))) = (&clib, c_handles) {
        // SAFETY: handles from xenevtchn_open, closed once (this unbinds their ports).
        unsafe {
            (c.close)(ha.0);
            (c.close)(hb.0);
        }
    }
    drop((pa, pb));
    println!("test result: ok. 0 passed; 0 failed; 0 ignored; {measured} measured; 0 filtered out");
}
