//! `confine`: after it the process opens no file, and its open handles keep working. Each
//! check runs in a child process (this test executable, run again), because confinement is
//! irreversible and process-wide.

use std::fs::File;
use std::io::Write;
use std::process::Command;

use xen_hypercall::{DmOpBuf, DomId, Errno, Plain, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};

/// Set in the child: which check to run, and for the Xen check the guest's domain id.
const CHILD: &str = "XEN_RS_CONFINE_CHILD";

/// Runs test `name` of this executable in a child with `CHILD=value`, and asserts it passed.
fn run_child(name: &str, value: &str) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, value)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "child {name} failed");
    assert!(text.contains("1 passed"), "the child ran its check");
}

#[test]
fn confined_process_opens_nothing_and_keeps_its_fds() {
    run_child("child_opens_nothing", "host");
}

#[test]
fn child_opens_nothing() {
    if std::env::var(CHILD).as_deref() != Ok("host") {
        return;
    }
    let mut kept = File::options().write(true).open("/dev/null").unwrap();
    // A thread started before confining is confined too.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        rx.recv().unwrap();
        done_tx.send(File::open("/dev/null").map(drop)).unwrap();
    });
    xen_hypercall::confine().unwrap();
    let e = File::open("/dev/null").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert_eq!(
        Privcmd::open().unwrap_err().errno(),
        Errno::EPERM,
        "neither /dev/xen/privcmd nor /proc/xen/privcmd can be opened"
    );
    tx.send(()).unwrap();
    let other = done_rx.recv().unwrap().unwrap_err();
    assert_eq!(other.raw_os_error(), Some(libc::EPERM));
    t.join().unwrap();
    // What was open before keeps working; so do pipes and sockets.
    kept.write_all(b"still writable").unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    drop((a, b));
    // Confining twice only adds the same filter.
    xen_hypercall::confine().unwrap();
}

fn nr_vcpus(xen: &Privcmd, d: DomId) -> Result<u32, xen_hypercall::Error> {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_nr_vcpus;
    xen.dm_op("dm_op nr_vcpus", d, &[DmOpBuf::from_mut(&mut op)])?;
    // SAFETY: Xen wrote the nr_vcpus member of the union; any bits are a valid u32.
    Ok(unsafe { op.u.nr_vcpus.vcpus })
}

/// In dom0: a guest with two vCPUs (created by the parent, which stays unconfined so it can
/// destroy it); the child opens privcmd, restricts everything to the guest, confines itself,
/// and then cannot open privcmd again, while dm_ops on its restricted handle still reach the
/// guest (Xen answers its vCPU count) and nothing else.
#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn after_restrict_all_and_confine_no_new_handle_and_dm_ops_go_on() {
    xen_testkit::require_xen();
    let g = xen_testkit::Guest::create(&xen_testkit::GuestConfig::pvh().vcpus(2))
        .expect("create a paused PVH guest");
    run_child("child_confined_in_dom0", &g.domid().to_string());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn child_confined_in_dom0() {
    let Some(d) = std::env::var(CHILD)
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
    else {
        return;
    };
    let d = DomId::new(d);
    let xen = Privcmd::open().unwrap();
    assert_eq!(nr_vcpus(&xen, d), Ok(2));
    assert!(xen_hypercall::restrict_all(d).unwrap() >= 1);
    xen_hypercall::confine().unwrap();
    let e = Privcmd::open().unwrap_err();
    println!("after confine: {e}");
    assert_eq!(e.errno(), Errno::EPERM);
    assert!(File::open("/dev/xen/evtchn").is_err());
    for _ in 0..3 {
        assert_eq!(
            nr_vcpus(&xen, d),
            Ok(2),
            "dm_ops on the restricted handle go on"
        );
    }
    assert_eq!(
        nr_vcpus(&xen, DomId::DOM0).unwrap_err().errno(),
        Errno::EPERM,
        "and reach the guest only"
    );
}
