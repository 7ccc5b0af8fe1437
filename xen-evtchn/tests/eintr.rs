//! Signals do not break waits: a thread blocked in `pending()` (a blocking `read`) or in
//! `pending_timeout()` on a non-blocking handle (a `poll`) keeps waiting through signals
//! whose handler does not ask for `SA_RESTART`, and gets the event. Its own test executable:
//! the signal handler is process-wide. Needs Xen: `cargo xtask xen-test -p xen-evtchn`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use xen_evtchn::{DomId, EventChannels};

extern "C" fn on_signal(_: libc::c_int) {}

fn install_handler_without_restart() {
    // SAFETY: a zeroed sigaction with a handler that does nothing, no SA_RESTART, so
    // interrupted syscalls fail with EINTR.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &sa, core::ptr::null_mut()),
            0
        );
    }
}

fn interrupted_wait(a: &EventChannels, b: &EventChannels, use_timeout: bool) {
    let pa = a.bind_unbound_port(DomId::SELF).unwrap();
    let pb = b.bind_interdomain(DomId::SELF, pa.port()).unwrap();
    assert_eq!(b.pending().unwrap(), pb.port()); // the bind-time event
    pb.unmask().unwrap();

    let tid = AtomicU64::new(0);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            // SAFETY: pthread_self has no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            if use_timeout {
                a.pending_timeout(Duration::from_secs(30))
                    .map(|p| p.unwrap())
            } else {
                a.pending()
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..5 {
            // SAFETY: the waiter thread is alive (joined below) and has a handler installed.
            let r = unsafe {
                libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1)
            };
            assert_eq!(r, 0);
            std::thread::sleep(Duration::from_millis(50));
        }
        pb.notify().unwrap();
        let got = waiter.join().unwrap().expect("pending through signals");
        assert_eq!(got, pa.port());
    });
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn waits_survive_signals() {
    xen_testkit::require_xen();
    install_handler_without_restart();
    let b = EventChannels::open().unwrap();
    // Blocking read.
    interrupted_wait(&EventChannels::open().unwrap(), &b, false);
    // poll() with a deadline, non-blocking handle.
    interrupted_wait(&EventChannels::open_nonblocking().unwrap(), &b, true);
    // poll() with a deadline, blocking handle.
    interrupted_wait(&EventChannels::open().unwrap(), &b, true);
}
