//! Event channels against a real Xen (dom0 of the Xen test machine):
//! `cargo xtask xen-test -p xen-evtchn`. They fail, never skip, when Xen is missing.
//!
//! dom0 <-> dom0 pairs are loopbacks: an unbound port for `DOMID_SELF` on one handle and an
//! interdomain bind to it on another, both in this process.

use std::process::Command;
use std::time::{Duration, Instant};

use xen_evtchn::{BoundPort, DomId, Errno, EventChannels, Port, Virq};

/// Prints a report line that shows even when the test passes (libtest captures `println!`,
/// not direct writes to stderr).
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
/// Long enough for QEMU/TCG on a busy host.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(300);

fn require_xen() {
    xen_testkit::require_xen();
    assert!(
        std::path::Path::new(xen_evtchn::EVTCHN_DEVICE).exists(),
        "{} is missing in dom0 (xen-evtchn module not loaded?)",
        xen_evtchn::EVTCHN_DEVICE
    );
}

fn open() -> EventChannels {
    require_xen();
    EventChannels::open().expect("open /dev/xen/evtchn")
}

/// A loopback pair: `a`'s unbound port, and `b`'s port bound to it.
fn pair(a: &EventChannels, b: &EventChannels) -> (BoundPort, BoundPort) {
    let pa = a.bind_unbound_port(DomId::SELF).expect("bind_unbound_port");
    let pb = b
        .bind_interdomain(DomId::SELF, pa.port())
        .expect("bind_interdomain to our own unbound port");
    // Xen raises the new local end once at bind time (in case the other side notified before
    // we were there): take that event, so the tests start quiet.
    expect_event(b, pb.port(), "the bind-time event");
    pb.unmask().unwrap();
    (pa, pb)
}

fn expect_event(ch: &EventChannels, port: Port, what: &str) {
    let got = ch
        .pending_timeout(WAIT)
        .expect("pending")
        .unwrap_or_else(|| panic!("{what}: no event on port {port} within {WAIT:?}"));
    assert_eq!(got, port, "{what}: event on the wrong port");
}

fn expect_quiet(ch: &EventChannels, what: &str) {
    if let Some(p) = ch.pending_timeout(QUIET).expect("pending") {
        panic!("{what}: unexpected event on port {p}");
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn loopback_both_ways_each_once_in_order() {
    let (a, b) = (open(), open());
    let (pa, pb) = pair(&a, &b);
    assert_ne!(pa.port(), pb.port());
    for round in 0..50 {
        pb.notify().unwrap();
        expect_event(&a, pa.port(), "b -> a");
        a.unmask(pa.port()).unwrap();
        pa.notify().unwrap();
        expect_event(&b, pb.port(), "a -> b");
        pb.unmask().unwrap();
        if round % 10 == 0 {
            // Each notification arrives once: nothing more is queued on either side.
            assert_eq!(a.try_pending().unwrap(), None);
            assert_eq!(b.try_pending().unwrap(), None);
        }
    }
    expect_quiet(&a, "a after the rounds");
    expect_quiet(&b, "b after the rounds");

    // Several ports on one handle, notified one after the other (each waited for), come out
    // in that order, and once each.
    let pairs: Vec<_> = (0..4).map(|_| pair(&a, &b)).collect();
    for (pa, pb) in pairs.iter().rev() {
        pb.notify().unwrap();
        expect_event(&a, pa.port(), "ordered");
    }
    let all: Vec<Port> = pairs.iter().map(|(pa, _)| pa.port()).collect();
    a.unmask_many(&all).unwrap();
    expect_quiet(&a, "after the ordered round");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn unmask_rearms() {
    let (a, b) = (open(), open());
    let (pa, pb) = pair(&a, &b);
    pb.notify().unwrap();
    expect_event(&a, pa.port(), "first");
    // Masked now: a second notification is held back...
    pb.notify().unwrap();
    expect_quiet(&a, "while masked");
    // ...and delivered once the port is unmasked.
    pa.unmask().unwrap();
    expect_event(&a, pa.port(), "held event after unmask");
    pa.unmask().unwrap();
    expect_quiet(&a, "after the held event");
    // Notifications while masked coalesce into one.
    pb.notify().unwrap();
    expect_event(&a, pa.port(), "third");
    for _ in 0..5 {
        pb.notify().unwrap();
    }
    std::thread::sleep(QUIET);
    pa.unmask().unwrap();
    expect_event(&a, pa.port(), "coalesced");
    pa.unmask().unwrap();
    expect_quiet(&a, "after coalesced");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn unbind_stops_delivery() {
    let (a, b) = (open(), open());
    let (pa, pb) = pair(&a, &b);
    let raw_a = pa.port();
    pb.notify().unwrap();
    expect_event(&a, raw_a, "before unbind");
    pa.unbind().unwrap();
    // a's end is closed: b's port is now unbound in Xen, and sending on it is dropped.
    pb.notify().unwrap();
    expect_quiet(&a, "after unbind");
    // The number is no longer a's.
    let e = a.notify(raw_a).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOTCONN, "{e}");
    assert_eq!(e.op(), "evtchn notify");
    let e = a.unbind(raw_a).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOTCONN, "{e}");

    // Dropping a BoundPort unbinds too.
    let (pa, pb) = pair(&a, &b);
    let raw_b = pb.port();
    drop(pb);
    assert_eq!(b.notify(raw_b).unwrap_err().errno(), Errno::ENOTCONN);
    pa.notify().unwrap(); // a's end is unbound in Xen now: dropped
    expect_quiet(&b, "after drop");

    // Unbinding with an event still queued: observe what the driver does (documented as
    // "the stale number may still come out").
    let (pa, pb) = pair(&a, &b);
    let raw = pa.port();
    pb.notify().unwrap();
    std::thread::sleep(QUIET);
    drop(pa);
    let stale = a.pending_timeout(QUIET).unwrap();
    report!("evtchn: event queued before unbind -> pending() afterwards gives {stale:?} (port was {raw})");
    drop(pb);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn several_ports_in_one_read_and_partial_reads_lose_nothing() {
    let (a, b) = (open(), open());
    let pairs: Vec<_> = (0..6).map(|_| pair(&a, &b)).collect();
    let mut want: Vec<Port> = pairs.iter().map(|(pa, _)| pa.port()).collect();
    want.sort();

    // All six fire, then one read takes them all.
    for (_, pb) in &pairs {
        pb.notify().unwrap();
    }
    std::thread::sleep(QUIET);
    let mut buf = [Port::default(); 16];
    let mut got = a.pending_many(&mut buf).unwrap().to_vec();
    report!("evtchn: one read returned {} of 6 ports", got.len());
    while got.len() < 6 {
        got.extend_from_slice(a.pending_many_timeout(&mut buf, WAIT).unwrap());
    }
    got.sort();
    assert_eq!(got, want);
    a.unmask_many(&got).unwrap();
    expect_quiet(&a, "after the batch");

    // Again, read through a 4-byte buffer and then a 2-port one: nothing lost or repeated.
    for (_, pb) in &pairs {
        pb.notify().unwrap();
    }
    std::thread::sleep(QUIET);
    let mut got = vec![a.pending().unwrap()];
    let mut two = [Port::default(); 2];
    while got.len() < 6 {
        let ports = a.pending_many_timeout(&mut two, WAIT).unwrap();
        assert!(!ports.is_empty(), "lost ports: have {got:?}");
        got.extend_from_slice(ports);
    }
    got.sort();
    assert_eq!(got, want);
    expect_quiet(&a, "nothing repeated");
    a.unmask_many(&got).unwrap();
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn blocking_nonblocking_and_timeouts() {
    require_xen();
    let a = EventChannels::open_nonblocking().unwrap();
    let b = EventChannels::open().unwrap();
    assert!(a.is_nonblocking() && !b.is_nonblocking());
    let (pa, pb) = pair(&a, &b);

    // Nothing there: None at once, and after the timeout (not before).
    assert_eq!(a.try_pending().unwrap(), None);
    assert_eq!(b.try_pending().unwrap(), None);
    let t = Instant::now();
    assert_eq!(b.pending_timeout(Duration::from_millis(200)).unwrap(), None);
    assert!(t.elapsed() >= Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(a.pending_timeout(Duration::from_millis(200)).unwrap(), None);
    assert!(t.elapsed() >= Duration::from_millis(200));

    // A blocking pending() on each kind of handle wakes when the other side notifies from
    // another thread.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| a.pending().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        pb.notify().unwrap();
        assert_eq!(waiter.join().unwrap(), pa.port());
        a.unmask(pa.port()).unwrap();

        let waiter = s.spawn(|| b.pending().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        pa.notify().unwrap();
        assert_eq!(waiter.join().unwrap(), pb.port());
        b.unmask(pb.port()).unwrap();
    });

    // The mode can be switched.
    let mut c = EventChannels::open().unwrap();
    c.set_nonblocking(true).unwrap();
    assert!(c.is_nonblocking());
    assert_eq!(c.try_pending().unwrap(), None);

    // reset() empties the queue; the port stays bound (and masked until unmasked).
    pb.notify().unwrap();
    std::thread::sleep(QUIET);
    a.reset().unwrap();
    assert_eq!(a.try_pending().unwrap(), None);
    a.unmask(pa.port()).unwrap();
    pb.notify().unwrap();
    expect_event(&a, pa.port(), "after reset");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn bad_ports_and_domains_are_typed_errors_and_leave_nothing_bound() {
    let (a, b) = (open(), open());
    // Never bound here.
    let e = a.notify(Port::new(4000)).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOTCONN, "{e}");
    // A port that is not unbound-for-us: Xen refuses, nothing is bound.
    let (pa, _pb) = pair(&a, &b);
    let e = b
        .bind_interdomain(DomId::SELF, pa.port())
        .map(|_| ())
        .unwrap_err();
    report!("evtchn: bind_interdomain to an already connected port: {e}");
    assert!(e.is_os() && e.domain() == Some(DomId::SELF), "{e}");
    // A domain that does not exist: Xen may allocate the port anyway (the remote end is
    // only checked when it binds); either way, report it.
    match a.bind_unbound_port(DomId::new(31000)) {
        Ok(p) => report!("evtchn: bind_unbound_port to a missing domain: allowed ({p:?})"),
        Err(e) => {
            report!("evtchn: bind_unbound_port to a missing domain: {e}");
            assert!(e.is_os(), "{e}");
        }
    }
    let e = b
        .bind_interdomain(DomId::new(31000), 5u32)
        .map(|_| ())
        .unwrap_err();
    report!("evtchn: bind_interdomain to a missing domain: {e}");
    assert!(e.is_no_such_domain() || e.is_invalid_argument(), "{e}");
    // Refused before any syscall.
    assert!(matches!(
        a.notify(0u32).unwrap_err(),
        xen_evtchn::Error::InvalidArgument { .. }
    ));
    // The handles still work after all that.
    let (pa, pb) = pair(&a, &b);
    pb.notify().unwrap();
    expect_event(&a, pa.port(), "after the errors");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restrict_refuses_other_domains() {
    let r = open();
    let d = DomId::new(77);
    r.restrict(d).unwrap();
    assert_eq!(r.restricted_to(), Some(d));
    for (what, e) in [
        (
            "bind_unbound_port",
            r.bind_unbound_port(d).map(|_| ()).unwrap_err(),
        ),
        (
            "bind_interdomain other",
            r.bind_interdomain(DomId::new(78), 5u32)
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            "bind_interdomain self",
            r.bind_interdomain(DomId::SELF, 5u32)
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            "bind_virq",
            r.bind_virq(Virq::DEBUGGER).map(|_| ()).unwrap_err(),
        ),
        ("restrict twice", r.restrict(DomId::new(78)).unwrap_err()),
    ] {
        assert!(e.is_permission_denied(), "{what}: {e}");
    }
    // Its own domain passes the kernel's check (and then fails in Xen: there is no dom77).
    let e = r.bind_interdomain(d, 5u32).map(|_| ()).unwrap_err();
    assert!(!e.is_permission_denied(), "{e}");
    // dom0 and reserved ids are refused before the syscall.
    let u = open();
    assert!(matches!(
        u.restrict(DomId::DOM0).unwrap_err(),
        xen_evtchn::Error::InvalidArgument { .. }
    ));
    assert_eq!(u.restricted_to(), None);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn virqs() {
    let ch = open();
    // xenstored owns VIRQ_DOM_EXC in dom0 (a global VIRQ binds once per domain); if it is free
    // here, it must fire when a guest is destroyed.
    match ch.bind_virq(Virq::DOM_EXC) {
        Ok(port) => {
            let g = xen_testkit::Guest::create(&xen_testkit::GuestConfig::pvh().paused(true))
                .expect("create a guest");
            while ch.pending_timeout(QUIET).unwrap().is_some() {
                ch.unmask(port.port()).unwrap();
            }
            g.destroy().expect("destroy");
            expect_event(&ch, port.port(), "VIRQ_DOM_EXC on destroy");
            report!("evtchn: VIRQ_DOM_EXC fired on guest destroy");
        }
        Err(e) => {
            report!("evtchn: VIRQ_DOM_EXC not bindable here (xenstored has it): {e}");
            assert_eq!(e.errno(), Errno::EEXIST, "{e}");
        }
    }
    // VIRQ_CON_RING: Xen's console ring got text. `xl debug-keys h` prints the key help.
    let port = ch.bind_virq(Virq::CON_RING).expect("bind VIRQ_CON_RING");
    while ch.pending_timeout(QUIET).unwrap().is_some() {
        port.unmask().unwrap();
    }
    let out = Command::new("xl")
        .args(["debug-keys", "h"])
        .output()
        .expect("run xl debug-keys");
    assert!(out.status.success(), "xl debug-keys: {out:?}");
    expect_event(&ch, port.port(), "VIRQ_CON_RING after xl debug-keys");
    port.unmask().unwrap();
    // Binding it twice in one domain is refused, typed, and leaves the first binding working.
    let e = ch.bind_virq(Virq::CON_RING).map(|_| ()).unwrap_err();
    assert_eq!(e.errno(), Errno::EEXIST, "{e}");
    Command::new("xl")
        .args(["debug-keys", "h"])
        .output()
        .unwrap();
    expect_event(&ch, port.port(), "VIRQ_CON_RING again");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn adopt_fd_and_registry() {
    use std::os::fd::{AsRawFd, OwnedFd};
    let a = open();
    let b = open();
    let (pa, pb) = pair(&a, &b);
    let raw = pa.release();
    // Hand the fd over (as across exec) and adopt it: the port is still bound there.
    let fd: OwnedFd = a.into_owned_fd().expect("the last clone");
    let n = fd.as_raw_fd();
    let a = EventChannels::from(fd);
    assert_eq!(a.as_raw_fd(), n);
    let pa = BoundPort::from_raw_parts(&a, raw);
    pb.notify().unwrap();
    expect_event(&a, pa.port(), "on the adopted fd");
    assert!(xen_hypercall::RestrictRegistry::global()
        .handles()
        .iter()
        .any(|(k, _)| *k == "evtchn"));
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn queue_overflow_is_efbig_and_reset_recovers() {
    // The kernel sizes a handle's queue for the ports bound on it (at least 64), and each
    // bound port is queued at most once. Events of ports unbound before being read stay
    // queued, though: 70 of those overflow a handle that never has more than one port bound.
    let (a, b) = (open(), open());
    for _ in 0..70 {
        let (pa, pb) = pair(&a, &b);
        pb.notify().unwrap();
        // Wait until the event is in a's queue (poll says readable), without reading it.
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&a),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert!(unsafe { libc::poll(&mut pfd, 1, 10_000) } > 0);
        drop(pa);
        drop(pb);
    }
    let e = a.try_pending().unwrap_err();
    report!("evtchn: 70 unread events of unbound ports on one handle: {e}");
    assert_eq!(e.errno(), Errno::EFBIG, "{e}");
    a.reset().unwrap();
    assert_eq!(a.try_pending().unwrap(), None);
    let (pa, pb) = pair(&a, &b);
    pb.notify().unwrap();
    expect_event(&a, pa.port(), "after reset");
}
