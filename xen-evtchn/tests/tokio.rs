//! The tokio form against a real Xen: `cargo xtask xen-test -p xen-evtchn` (built with all
//! features). Fails, never skips, when Xen is missing.
#![cfg(feature = "tokio")]

use std::time::Duration;

use xen_evtchn::{AsyncEventChannels, DomId, EventChannels, Port};

/// Prints a report line that shows even when the test passes (libtest captures `println!`,
/// not direct writes to stderr).
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
const WAIT: Duration = Duration::from_secs(10);

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn thousand_notifications_no_loss_no_busy_loop() {
    xen_testkit::require_xen();
    runtime().block_on(async {
        let a = AsyncEventChannels::open().expect("open async handle");
        let pa = a.channels().bind_unbound_port(DomId::SELF).unwrap();
        let a_port = pa.port();

        // Idle: waiting for an event that does not come costs (almost) no CPU.
        let idle = Duration::from_millis(1500);
        let cpu0 = cpu_time();
        let r = tokio::time::timeout(idle, a.pending()).await;
        let idle_cpu = cpu_time() - cpu0;
        assert!(r.is_err(), "nothing should be pending: {r:?}");
        report!("evtchn tokio: CPU time while idle-waiting {idle:?}: {idle_cpu:?}");
        assert!(
            idle_cpu < Duration::from_millis(150),
            "pending().await burned {idle_cpu:?} of CPU in {idle:?} of idle waiting"
        );

        // 1000 notifications from a plain thread with a blocking handle, each acknowledged,
        // so none can coalesce with the next: every one must arrive, once.
        const N: u32 = 1000;
        let sender = std::thread::spawn(move || {
            let b = EventChannels::open().unwrap();
            let pb = b.bind_interdomain(DomId::SELF, a_port).unwrap();
            // Xen raises a freshly bound interdomain port once: not an ack.
            assert_eq!(b.pending_timeout(WAIT).unwrap(), Some(pb.port()));
            pb.unmask().unwrap();
            for i in 0..N {
                pb.notify().unwrap();
                let ack = b
                    .pending_timeout(WAIT)
                    .unwrap()
                    .unwrap_or_else(|| panic!("no ack for notification {i}"));
                assert_eq!(ack, pb.port());
                pb.unmask().unwrap();
            }
            // Wait for the receiver to have checked quiet, then unbind.
            std::thread::sleep(Duration::from_millis(800));
        });
        let cpu0 = cpu_time();
        let t0 = std::time::Instant::now();
        for i in 0..N {
            let p = tokio::time::timeout(WAIT, a.pending())
                .await
                .unwrap_or_else(|_| panic!("notification {i} lost"))
                .unwrap();
            assert_eq!(p, a_port);
            pa.unmask().unwrap();
            pa.notify().unwrap(); // ack
        }
        let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
        report!("evtchn tokio: {N} notifications received in {wall:?} (process CPU {cpu:?})");
        // Exactly N: nothing more queued.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), a.pending())
                .await
                .is_err()
        );
        tokio::task::spawn_blocking(move || sender.join().unwrap())
            .await
            .unwrap();
    });
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn many_ports_on_one_async_handle() {
    xen_testkit::require_xen();
    runtime().block_on(async {
        let a = std::sync::Arc::new(AsyncEventChannels::open().unwrap());
        let b = EventChannels::open().unwrap();
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..8 {
            let pa = a
                .channels()
                .bind_unbound_port(DomId::SELF)
                .unwrap()
                .with_handle(a.clone())
                .unwrap();
            let pb = b.bind_interdomain(DomId::SELF, pa.port()).unwrap();
            assert_eq!(b.pending_timeout(WAIT).unwrap(), Some(pb.port()));
            pb.unmask().unwrap();
            theirs.push(pb);
            ours.push(pa);
        }
        let mut want: Vec<Port> = ours.iter().map(|p| p.port()).collect();
        want.sort();
        // A task collects them while the main task notifies.
        let collector = {
            let a = a.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [Port::default(); 4];
                while got.len() < 8 {
                    let ports = tokio::time::timeout(WAIT, a.pending_many(&mut buf))
                        .await
                        .expect("ports lost")
                        .unwrap();
                    got.extend_from_slice(ports);
                }
                got
            })
        };
        for pb in &theirs {
            pb.notify().unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut got = collector.await.unwrap();
        got.sort();
        assert_eq!(got, want);
        // Owned ports (Arc handles) unbind on drop.
        let raw = ours[0].port();
        drop(ours);
        assert!(a.channels().notify(raw).is_err());
    });
}
