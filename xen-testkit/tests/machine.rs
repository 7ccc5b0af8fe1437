//! The first tests of the Xen test machine: the hypervisor answers, guests of every type come and
//! go, and the tiny test guest does what it is told.
//!
//! They need Xen: run them with `cargo xtask xen-test -p xen-testkit`.

use std::time::Instant;

use xen_testkit::protocol as p;
use xen_testkit::{privcmd, require_xen, xl, Guest, GuestConfig, TestGuest};

fn sys_hypervisor(field: &str) -> String {
    let path = format!("/sys/hypervisor/version/{field}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn raw_xen_version_hypercall_matches_sysfs() {
    require_xen();
    let v = privcmd::hypercall(
        xen_sys::xen::__HYPERVISOR_xen_version.into(),
        [xen_sys::version::XENVER_version.into(), 0, 0, 0, 0],
    )
    .unwrap();
    let (major, minor) = (v >> 16, v & 0xffff);
    println!("xen_version hypercall: {major}.{minor}");
    assert_eq!(major.to_string(), sys_hypervisor("major"));
    assert_eq!(minor.to_string(), sys_hypervisor("minor"));
}

fn create_list_destroy(config: GuestConfig) {
    let kind = config.kind();
    let t0 = Instant::now();
    let g = Guest::create(&config).unwrap_or_else(|e| panic!("{kind:?} guest: {e}"));
    let created = t0.elapsed();
    let entry = g
        .list_entry()
        .unwrap()
        .unwrap_or_else(|| panic!("{kind:?} guest {} not in xl list", g.name()));
    println!(
        "{kind:?} guest d{} created paused in {created:?}: xl list state {:?}",
        g.domid(),
        entry.state
    );
    assert!(
        entry.state.contains('p'),
        "created with -p but state is {:?}",
        entry.state
    );
    let domid = g.domid();
    g.destroy().unwrap();
    assert!(
        xl::list().unwrap().iter().all(|e| e.domid != domid),
        "domain {domid} still listed after xl destroy"
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn hvm_guest_created_listed_destroyed() {
    require_xen();
    create_list_destroy(GuestConfig::hvm());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn pvh_guest_created_listed_destroyed() {
    require_xen();
    create_list_destroy(GuestConfig::pvh());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn pv_guest_created_listed_destroyed() {
    require_xen();
    create_list_destroy(GuestConfig::pv());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn pv_test_guest_runs_and_blocks() {
    require_xen();
    let g = Guest::create(&GuestConfig::pv().paused(false)).unwrap();
    // It blocks in SCHEDOP_poll as soon as it runs; a fault would leave it crashed (`c`).
    let t0 = Instant::now();
    loop {
        let e = g.list_entry().unwrap().expect("PV guest vanished");
        assert!(!e.state.contains('c'), "PV test guest crashed: {e:?}");
        if e.state.contains('b') {
            println!("PV test guest blocked after {:?}", t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 20,
            "PV test guest never blocked: {e:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Everything a test guest of either type must do.
fn exercise(g: &TestGuest, expect_kind: u32) {
    let h = g.header();
    println!(
        "test guest d{} up in {:?}: kind {} xen {:#x} ticks {}",
        g.domid(),
        g.boot_time(),
        h.boot_kind,
        h.xen_version,
        h.ticks
    );
    assert_eq!(h.boot_kind, expect_kind);
    assert_eq!(
        h.xen_version >> 16,
        sys_hypervisor("major").parse::<u32>().unwrap()
    );
    g.ping().unwrap();

    // Port output: the debug port's line reaches the hypervisor console. (Quiet, so that the
    // guest's own per-command lines do not interleave with ours: Xen buffers one line per domain.)
    g.set_flags(p::FLAG_QUIET);
    for b in b"xrtg: hello via port-out\n" {
        g.port_out(0xe9, u32::from(*b), 1).unwrap();
    }
    g.set_flags(0);
    let lines = g.console_lines().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("xen-rs test guest up")),
        "no boot line in xl dmesg: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("hello via port-out")),
        "port-out line not in xl dmesg: {lines:?}"
    );

    // Nobody claims port 0x5f0: reads float high.
    assert_eq!(g.port_in(0x5f0, 2).unwrap(), 0xffff);

    // Memory: the guest fills a frame, we see the pattern through our own mapping, and the
    // guest reads back what we write there.
    let t0 = Instant::now();
    let gfn = g.fill(None, 42).unwrap();
    assert_eq!(gfn, p::SCRATCH_GFN);
    let want: Vec<u8> = (0..p::PAGE_SIZE).map(|i| p::pattern_byte(42, i)).collect();
    let frame = g.map_frames(&[gfn]).unwrap();
    let mut seen = vec![0u8; p::PAGE_SIZE];
    frame.read_bytes(0, &mut seen);
    assert!(seen == want, "frame {gfn:#x} does not hold the pattern");
    assert_eq!(g.checksum(gfn).unwrap(), p::fnv1a64(want.iter().copied()));
    frame.write_u64(8, 0x1122_3344_5566_7788);
    assert_eq!(
        g.mem_read((gfn << 12) + 8, 8).unwrap(),
        0x1122_3344_5566_7788
    );
    assert_eq!(g.mem_read((gfn << 12) + 9, 2).unwrap(), 0x6677);
    g.mem_write((gfn << 12) + 16, 0xdead_beef, 4).unwrap();
    assert_eq!(frame.read_u32(16), 0xdead_beef);
    let copy = g.copy_out(gfn).unwrap();
    assert_eq!(&copy[16..20], &0xdead_beefu32.to_le_bytes());
    println!("memory round trips: {:?}", t0.elapsed());

    // A hypercall from inside: xen_version again, and cpuid's Xen leaf.
    assert_eq!(g.hypercall(17, [0; 5]).unwrap() as u32, h.xen_version);
    let leaf = g.cpuid(0x4000_0000, 0).unwrap();
    assert_eq!(&leaf[1].to_le_bytes(), b"XenV");

    // Its timer ticks.
    assert!(g.vector_count(p::TIMER_VECTOR) > 0);

    // The wake-up tick's real rate, and round-trip speed, for the report.
    let (t1, i1) = (g.header().ticks, Instant::now());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (t2, i2) = (g.header().ticks, Instant::now());
    println!(
        "guest ticks: {:.0}/s",
        f64::from(t2 - t1) / (i2 - i1).as_secs_f64()
    );
    g.set_flags(p::FLAG_QUIET | p::FLAG_SPIN);
    let t0 = Instant::now();
    for _ in 0..100 {
        g.ping().unwrap();
    }
    println!("100 pings (spinning guest) in {:?}", t0.elapsed());
    g.set_flags(p::FLAG_QUIET);
    let t0 = Instant::now();
    for _ in 0..100 {
        g.ping().unwrap();
    }
    println!("100 pings in {:?}", t0.elapsed());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn hvm_test_guest_reports_and_obeys() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    exercise(&g, p::BOOT_HVM);
    // Unclaimed MMIO reads float high too (HVM: no device there, Xen's null handler).
    assert_eq!(g.mem_read(0xe000_0000, 4).unwrap(), 0xffff_ffff);
    // PCI config of an absent device reads all-ones.
    assert_eq!(g.pci_cfg_read(0, 31, 0, 0, 4).unwrap(), 0xffff_ffff);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn pvh_test_guest_reports_and_obeys() {
    require_xen();
    let g = TestGuest::pvh().unwrap();
    exercise(&g, p::BOOT_PVH);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn test_guest_shuts_itself_down() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let domid = g.domid();
    g.shutdown(xen_testkit::ShutdownReason::Poweroff).unwrap();
    // Our mapping of its mailbox would keep the dead domain around (state `d`): drop it.
    let g = g.into_guest();
    let t0 = Instant::now();
    while let Some(e) = xl::list().unwrap().into_iter().find(|e| e.domid == domid) {
        if t0.elapsed().as_secs() > 30 {
            let log = std::fs::read_to_string(format!("/var/log/xen/xl-{}.log", g.name()))
                .unwrap_or_default();
            panic!(
                "domain {domid} still there 30 s after poweroff: state {:?}; xl log:\n{log}",
                e.state
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn test_guest_serves_two_vcpus_concurrently() {
    require_xen();
    for config in [GuestConfig::hvm(), GuestConfig::pvh()] {
        let kind = config.kind();
        let g = TestGuest::start(config.vcpus(2)).unwrap();
        assert_eq!(g.header().vcpus_online, 2, "{kind:?}");
        g.set_flags(p::FLAG_QUIET);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for vcpu in 0..2 {
                let g = &g;
                s.spawn(move || {
                    for i in 0..20u64 {
                        g.ping_on(vcpu).unwrap();
                        let r = g.command_on(
                            vcpu,
                            p::OP_MEM_READ,
                            [(p::SCRATCH_GFN << 12) + 8 * vcpu as u64, 0, 8, 0, 0, 0],
                        );
                        assert_eq!(
                            r.unwrap().status,
                            p::STATUS_OK,
                            "{kind:?} vcpu {vcpu} iteration {i}"
                        );
                    }
                });
            }
        });
        println!("{kind:?}: 2 vCPUs x 40 commands in {:?}", t0.elapsed());
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn a_vcpu_whose_tick_stopped_is_woken_by_the_wake_up_call() {
    require_xen();
    for config in [GuestConfig::hvm(), GuestConfig::pvh()] {
        let kind = config.kind();
        let g = TestGuest::start(config.vcpus(2)).unwrap();
        for vcpu in 0..2 {
            // The vCPU masks its own timer: it sleeps in `hlt` with nothing to wake it.
            let lvt = u64::from(p::TIMER_VECTOR) | (1 << 16) | (1 << 17);
            let r = g
                .command_on(vcpu, p::OP_MEM_WRITE, [0xfee0_0320, lvt, 4, 0, 0, 0])
                .unwrap();
            assert_eq!(r.status, p::STATUS_OK);
            let (nudges, calls) = (g.nudges(), g.vector_count(p::NUDGE_VECTOR));
            let masked = g.vcpu_ticks(vcpu);
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(
                g.vcpu_ticks(vcpu) <= masked + 1,
                "{kind:?} vcpu {vcpu}: its tick stopped"
            );
            let mut woken = false;
            for _ in 0..3 {
                std::thread::sleep(std::time::Duration::from_millis(300));
                let t0 = Instant::now();
                g.ping_on(vcpu).unwrap();
                if g.nudges() > nudges {
                    println!(
                        "{kind:?} vcpu {vcpu}: tick masked; answered after a wake-up call, {:?}",
                        t0.elapsed()
                    );
                    woken = true;
                    break;
                }
            }
            assert!(woken, "{kind:?} vcpu {vcpu}: a ping answered without a wake-up call 3 times with its tick masked");
            assert!(
                g.vector_count(p::NUDGE_VECTOR) > calls,
                "{kind:?} vcpu {vcpu}"
            );
            // The wake-up call restarted the tick: the next commands need none.
            let before = g.nudges();
            let ticks = g.vcpu_ticks(vcpu);
            for _ in 0..5 {
                g.ping_on(vcpu).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            g.ping_on(vcpu).unwrap();
            assert_eq!(g.nudges(), before, "{kind:?} vcpu {vcpu}: tick restarted");
            assert!(
                g.vcpu_ticks(vcpu) > ticks,
                "{kind:?} vcpu {vcpu}: its tick runs again"
            );
        }
    }
}

/// Waits up to `secs` for `f` to hold.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed().as_secs() < secs,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn test_guest_event_channel_both_ways() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use xen_sys::evtchn::*;
    require_xen();
    let g = TestGuest::hvm().unwrap();
    const VECTOR: u8 = 0x50;
    g.set_event_callback_vector(VECTOR).unwrap();
    let shared_info = g.map_shared_info(p::SCRATCH_GFN + 15).unwrap();
    let gport = g.evtchn_alloc_unbound(0).unwrap();

    // dom0 binds to it through /dev/xen/evtchn.
    let mut evtchn = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/xen/evtchn")
        .unwrap();
    let mut bind = ioctl_evtchn_bind_interdomain {
        remote_domain: g.domid().into(),
        remote_port: gport,
    };
    // SAFETY: a valid fd and a valid argument struct that outlives the call.
    let local = unsafe {
        libc::ioctl(
            evtchn.as_raw_fd(),
            IOCTL_EVTCHN_BIND_INTERDOMAIN as _,
            &mut bind,
        )
    };
    assert!(
        local >= 0,
        "bind_interdomain: {}",
        std::io::Error::last_os_error()
    );

    // Guest -> dom0.
    g.evtchn_send(gport).unwrap();
    let mut pfd = libc::pollfd {
        fd: evtchn.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(n, 1, "no event from the guest within 5 s");
    let mut buf = [0u8; 4];
    evtchn.read_exact(&mut buf).unwrap();
    assert_eq!(u32::from_le_bytes(buf), local as u32);

    // dom0 -> guest: delivered as the callback vector, and pending in its shared info.
    let before = g.vector_count(VECTOR);
    let mut notify = ioctl_evtchn_notify { port: local as u32 };
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(evtchn.as_raw_fd(), IOCTL_EVTCHN_NOTIFY as _, &mut notify) };
    assert_eq!(r, 0, "notify: {}", std::io::Error::last_os_error());
    wait_for(5, "the callback vector", || g.vector_count(VECTOR) > before);
    // shared_info (x86_64): 32 vcpu_info of 64 bytes, then evtchn_pending[64 x u64].
    let word = shared_info.read_u64(2048 + 8 * (gport as usize / 64));
    assert!(
        word & (1 << (gport % 64)) != 0,
        "port {gport} not pending in the guest's shared info"
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn test_guest_rep_ins_outs_reach_unclaimed_ports() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    // Nobody claims the port: outs are dropped and ins read all-ones, but the data_is_ptr path
    // through guest memory runs end to end (xen-devicemodel's server tests claim the port and check the bytes).
    let data: Vec<u8> = (0..64u8).collect();
    g.rep_outs(0x5f0, 1, &data, false).unwrap();
    g.rep_outs(0x5f0, 2, &data, true).unwrap();
    assert_eq!(g.rep_ins(0x5f0, 4, 16, false).unwrap(), vec![0xff; 64]);
    assert_eq!(g.rep_ins(0x5f0, 1, 8, true).unwrap(), vec![0xff; 8]);
    // rep movs to and from RAM (a scratch frame) round-trips, both directions of the flag.
    let gpa = (p::SCRATCH_GFN + 1) << 12;
    g.rep_movs_to(gpa, 8, &data, false).unwrap();
    assert_eq!(g.rep_movs_from(gpa, 4, 16, true).unwrap(), data);
    // ... and to unclaimed MMIO (data_is_ptr requests nobody serves): reads float high.
    g.rep_movs_to(0xe000_0000, 4, &data, false).unwrap();
    assert_eq!(
        g.rep_movs_from(0xe000_0000, 2, 4, false).unwrap(),
        vec![0xff; 8]
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn fake_device_model_answers_libxl() {
    require_xen();
    // Created running, then paused, unpaused and destroyed: every QMP exchange libxl starts on
    // the way is logged by the fake device model.
    let g = Guest::create(&GuestConfig::hvm().paused(false)).unwrap();
    let domid = g.domid();
    g.pause().unwrap();
    g.unpause().unwrap();
    let state = xl::xl(&["list", &domid.to_string()]).unwrap().stdout;
    g.destroy().unwrap();
    let log = std::fs::read_to_string(format!("/var/log/xen/xen-testkit-dm-{domid}.log")).unwrap();
    println!("xl list while running:\n{state}\nfake device model log:\n{log}");
    assert!(log.contains("wrote /local/domain/0/device-model/"), "{log}");
    assert!(log.contains("qmp_capabilities"), "{log}");
    assert!(log.contains("query-chardev"), "{log}");
    // `xl unpause` reaches the device model as QMP `cont`.
    assert!(log.contains("qmp: Cont"), "{log}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn hvmloader_guest_runs_with_the_fake_device_model() {
    require_xen();
    // Xen's own firmware (hvmloader, then SeaBIOS) with our fake device model: hvmloader prints
    // to Xen's debug port, so its banner shows in the hypervisor console.
    let g = Guest::create(&GuestConfig::hvm_hvmloader().paused(false)).unwrap();
    let tag = format!("(d{})", g.domid());
    let t0 = Instant::now();
    let mut lines = Vec::new();
    while t0.elapsed().as_secs() < 30 {
        lines = xl::dmesg()
            .unwrap()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect();
        if lines.iter().any(|l| l.contains("HVM Loader")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("hvmloader after {:?}:\n{}", t0.elapsed(), lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("HVM Loader")),
        "no hvmloader banner: {lines:?}"
    );
}

/// Where the time of a test guest's life goes (printed past the capture): guest creation is
/// most of every machine test's time, so this shows what to shorten.
#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn guest_lifecycle_timing() {
    use std::io::Write;
    require_xen();
    let report = |s: String| {
        let _ = writeln!(std::io::stdout().lock(), "xen-testkit timing: {s}");
    };
    let t = Instant::now();
    xl::list().unwrap();
    report(format!("xl list {:?}", t.elapsed()));
    let t = Instant::now();
    xl::xl(&["domid", "Domain-0"]).unwrap();
    report(format!("xl domid {:?}", t.elapsed()));
    for (name, config) in [("hvm", GuestConfig::hvm()), ("pvh", GuestConfig::pvh())] {
        let t = Instant::now();
        let g = Guest::create(&config).unwrap();
        let created = t.elapsed();
        let t = Instant::now();
        g.unpause().unwrap();
        let unpaused = t.elapsed();
        let t = Instant::now();
        g.destroy().unwrap();
        report(format!(
            "{name}: create -p {created:?}, unpause {unpaused:?}, destroy {:?}",
            t.elapsed()
        ));
        let t = Instant::now();
        let tg = TestGuest::start(config).unwrap();
        let started = t.elapsed();
        let boot = tg.boot_time();
        let t = Instant::now();
        for _ in 0..100 {
            tg.ping().unwrap();
        }
        let pings = t.elapsed();
        let t = Instant::now();
        drop(tg);
        report(format!(
            "{name}: TestGuest::start {started:?} (boot report {boot:?}), 100 pings {pings:?}, drop {:?}",
            t.elapsed()
        ));
    }
}
