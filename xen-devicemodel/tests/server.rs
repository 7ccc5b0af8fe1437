//! The ioreq-server runtime in the Xen machine (`cargo xtask xen-test -p xen-devicemodel
//! server`): the project's test guest driving port I/O, string I/O, buffered MMIO, two vCPUs,
//! and stopping the loop. (hvmloader + SeaBIOS on a whole device set: `xen-firmware-dm`.)
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_devicemodel::server::{Claim, Device, Server, ServerBuilder, Stats};

#[path = "support/running.rs"]
mod running;
use running::{spawn, Running};
use xen_devicemodel::{BufIoreqMode, DomId};
use xen_testkit::protocol as p;
use xen_testkit::{require_xen, GuestConfig, TestGuest};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-devicemodel server: {}", format!($($t)*));
    }};
}

/// Stops the loop, checks it ended well, drops the server (unmapping its pages, destroying the
/// ioreq server) and returns its counters.
fn finish(running: Running<(xen_devicemodel::Result<()>, Server)>) -> Stats {
    let (r, server) = running.join();
    r.unwrap();
    let s = server.stats();
    drop(server);
    s
}

// ---- the test guest ----

/// A byte FIFO at one port: writes append, reads take from the front (0xff.. when empty).
#[derive(Default)]
struct Fifo {
    q: VecDeque<u8>,
}

impl Device for Fifo {
    fn port_write(&mut self, _port: u16, size: u8, value: u32) {
        self.q
            .extend(value.to_le_bytes().iter().take(usize::from(size)));
    }
    fn port_read(&mut self, _port: u16, size: u8) -> u32 {
        let mut b = [0xffu8; 4];
        for x in b.iter_mut().take(usize::from(size)) {
            *x = self.q.pop_front().unwrap_or(0xff);
        }
        u32::from_le_bytes(b)
    }
}

const FIFO_PORT: u16 = 0x510;

/// A server for `g` whose only device is a [`Fifo`] at [`FIFO_PORT`], and the FIFO.
fn fifo_server(g: &TestGuest, mode: BufIoreqMode) -> (Server, Arc<Mutex<Fifo>>) {
    let fifo = Arc::new(Mutex::new(Fifo::default()));
    let server = ServerBuilder::new(DomId::new(g.domid()))
        .buffered(mode)
        .device(fifo.clone(), [Claim::Ports(FIFO_PORT..=FIFO_PORT + 3)])
        .build()
        .unwrap();
    (server, fifo)
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_rep_outs_and_ins_are_byte_exact_both_ways() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let (server, fifo) = fifo_server(&g, BufIoreqMode::Off);
    let running = spawn(server);
    for (size, n, backwards) in [
        (1u8, 4096usize, false),
        (2, 2000, true),
        (4, 4096, false),
        (1, 777, true),
    ] {
        let d = data(n, size.wrapping_add(n as u8));
        g.rep_outs(FIFO_PORT, size, &d, backwards).unwrap();
        let got: Vec<u8> = fifo.lock().unwrap().q.drain(..).collect();
        // Backwards, the units reach the port last-first.
        let mut want: Vec<u8> = Vec::new();
        let units: Vec<&[u8]> = d.chunks(usize::from(size)).collect();
        if backwards {
            units.iter().rev().for_each(|u| want.extend_from_slice(u));
        } else {
            units.iter().for_each(|u| want.extend_from_slice(u));
        }
        assert!(
            got == want,
            "rep outs size {size} n {n} backwards {backwards}: got {} bytes, first {:02x?}, want first {:02x?}",
            got.len(),
            &got[..got.len().min(8)],
            &want[..8]
        );
        // Put the units back in the order the guest sent them, for the way back.
        fifo.lock().unwrap().q.extend(want.iter().copied());
        // Reading back in the same direction restores the buffer order.
        let back = g
            .rep_ins(FIFO_PORT, size, n / usize::from(size), backwards)
            .unwrap();
        // Backwards, the first unit read lands at the end of the buffer.
        let mut expect: Vec<u8> = Vec::new();
        let wu: Vec<&[u8]> = want.chunks(usize::from(size)).collect();
        if backwards {
            wu.iter().rev().for_each(|u| expect.extend_from_slice(u));
        } else {
            wu.iter().for_each(|u| expect.extend_from_slice(u));
        }
        assert_eq!(
            back, expect,
            "rep ins size {size} n {n} backwards {backwards}"
        );
        assert_eq!(back, d);
        assert!(fifo.lock().unwrap().q.is_empty());
    }
    // Plain in/out still answer through the same device.
    g.port_out(FIFO_PORT, 0x5a, 1).unwrap();
    assert_eq!(g.port_in(FIFO_PORT, 1).unwrap(), 0x5a);
    let stats = finish(running);
    report!("rep test: {stats:?}");
    assert!(stats.port >= 8, "{stats:?}");
}

/// The legacy VGA memory window, which Xen's stdvga intercept forwards.
const VGA_WINDOW: std::ops::RangeInclusive<u64> = 0xa_0000..=0xb_ffff;

/// Records MMIO writes.
#[derive(Default)]
struct WriteLog {
    writes: Vec<(u64, u8, u64)>,
}

impl Device for WriteLog {
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        self.writes.push((addr, size, value));
    }
    fn mmio_read(&mut self, _addr: u64, _size: u8) -> u64 {
        0
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_eight_byte_vga_window_write_arrives_through_the_buffered_ring() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let log = Arc::new(Mutex::new(WriteLog::default()));
    let server = ServerBuilder::new(DomId::new(g.domid()))
        .buffered(BufIoreqMode::Atomic)
        .device(log.clone(), [Claim::Mmio(VGA_WINDOW)])
        .build()
        .unwrap();
    let running = spawn(server);
    // Xen 4.17's stdvga intercept sends single writes to 0xa0000-0xbffff as buffered ioreqs.
    g.mem_write(0xa_0008, 0x0102_0304_0506_0708, 8).unwrap();
    g.mem_write(0xa_0010, 0x99, 1).unwrap();
    g.mem_write(0xb_fffc, 0xdead_beef, 4).unwrap();
    // Setting the RTC's seconds (CMOS register 0, outside SET mode) changes the guest's time
    // offset: Xen broadcasts an IOREQ_TYPE_TIMEOFFSET record through the ring.
    for secs in [0x15u32, 0x45] {
        g.port_out(0x70, 0, 1).unwrap();
        g.port_out(0x71, secs, 1).unwrap();
    }
    // A read afterwards is synchronous: the loop drains the ring before serving it.
    let _ = g.mem_read(0xa_0000, 4).unwrap();
    let t0 = Instant::now();
    while log.lock().unwrap().writes.len() < 3 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = finish(running);
    let w = log.lock().unwrap().writes.clone();
    report!("buffered test: writes {w:x?}, {stats:?}");
    assert_eq!(
        w,
        vec![
            (0xa_0008, 8, 0x0102_0304_0506_0708),
            (0xa_0010, 1, 0x99),
            (0xb_fffc, 4, 0xdead_beef)
        ]
    );
    assert_eq!(
        stats.buffered, 3,
        "the three writes came through the ring: {stats:?}"
    );
    assert!(stats.timeoffset >= 1, "RTC offset change: {stats:?}");
}

/// Counts writes per port.
#[derive(Default)]
struct Counter {
    per_port: [u64; 2],
    last: [u32; 2],
}

impl Device for Counter {
    fn port_write(&mut self, port: u16, _size: u8, value: u32) {
        let i = usize::from((port >> 2) & 1);
        self.per_port[i] += 1;
        self.last[i] = value;
    }
    fn port_read(&mut self, port: u16, _size: u8) -> u32 {
        self.last[usize::from((port >> 2) & 1)]
    }
}

/// What a stalled two-vCPU round trip looks like from dom0, for the failure message: each
/// vCPU's mailbox slot (command sequence and acknowledgement), its ioreq slot as Xen and the
/// server share it (state, address, data, event channel), what the device saw, and Xen's view
/// of the domain's event channels (debug key `e`, pending and masked bits).
fn two_vcpu_diagnosis(
    g: &TestGuest,
    ioreq: Option<&xen_foreignmemory::Mapping<xen_foreignmemory::ReadWrite>>,
    ctr: &Mutex<Counter>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let h = g.header();
    let _ = writeln!(out, "guest header: state {} ticks {}", h.state, h.ticks);
    for v in 0..2 {
        let m = g.mailbox();
        let base = p::slot_offset(v);
        let _ = write!(
            out,
            "vcpu {v}: mailbox seq {} ack {}",
            m.read_u32(base + p::offsets::SLOT_SEQ),
            m.read_u32(base + p::offsets::SLOT_ACK)
        );
        let mut slot = [0u8; 32];
        match ioreq.map(|page| page.read_bytes(32 * v, &mut slot)) {
            Some(Ok(())) => {
                let u64_at = |o: usize| u64::from_le_bytes(slot[o..o + 8].try_into().unwrap());
                let eport = u32::from_le_bytes(slot[24..28].try_into().unwrap());
                let _ = writeln!(
                    out,
                    "; ioreq slot state {} (0 none, 1 ready, 2 in process, 3 answered) addr {:#x} data {:#x} dir {} event channel {eport}",
                    slot[30] & 0xf,
                    u64_at(0),
                    u64_at(8),
                    if slot[30] & 0x20 != 0 { "read" } else { "write" },
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "; ioreq slot unreadable: {e}");
            }
            None => {
                let _ = writeln!(out, "; ioreq page not mapped");
            }
        }
    }
    if let Ok(c) = ctr.try_lock() {
        let _ = writeln!(
            out,
            "device: writes per port {:?}, last values {:?}",
            c.per_port, c.last
        );
    }
    // Xen's event-channel table for every domain; keep dom0's and the guest's lines.
    let before = xen_testkit::xl::dmesg()
        .map(|d| d.lines().count())
        .unwrap_or(0);
    match xen_testkit::xl::xl(&["debug-keys", "e"]).and_then(|_| xen_testkit::xl::dmesg()) {
        Ok(d) => {
            let _ = writeln!(out, "Xen's event channels (debug key e):");
            for l in d.lines().skip(before.saturating_sub(1)) {
                let _ = writeln!(out, "  {l}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "xl debug-keys e: {e}");
        }
    }
    out
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_two_vcpus_are_served_concurrently() {
    require_xen();
    let g = TestGuest::start(GuestConfig::hvm().vcpus(2)).unwrap();
    let ctr = Arc::new(Mutex::new(Counter::default()));
    let server = ServerBuilder::new(DomId::new(g.domid()))
        .buffered(BufIoreqMode::Off)
        .device(ctr.clone(), [Claim::Ports(0x520..=0x527)])
        .build()
        .unwrap();
    assert_eq!(server.vcpus(), 2);
    // A second mapping of the ioreq page, to show the slots if a vCPU stalls.
    let fm = xen_foreignmemory::ForeignMemory::open().unwrap();
    let ioreq = fm
        .map_resource(
            DomId::new(g.domid()),
            xen_foreignmemory::Resource::IoreqServer {
                id: server.ioreq_server().id().get(),
            },
            xen_foreignmemory::Resource::ioreq_server_ioreq_frame(0),
            1,
            xen_foreignmemory::ReadWrite,
        )
        .ok();
    let running = spawn(server);
    const N: u32 = 200;
    let stalled = Mutex::new(None::<String>);
    std::thread::scope(|s| {
        for vcpu in 0..2usize {
            let (g, ctr, ioreq, stalled) = (&g, &ctr, &ioreq, &stalled);
            s.spawn(move || {
                let port = 0x520 + 4 * vcpu as u64;
                let mut last = None;
                for i in 0..=N {
                    let (op, value) = match i < N {
                        true => (p::OP_PORT_OUT, u64::from(i)),
                        false => (p::OP_PORT_IN, 0),
                    };
                    match g.command_on(vcpu, op, [port, value, 4, 0, 0, 0]) {
                        Ok(r) => last = Some(r),
                        Err(e) => {
                            // The first vCPU to notice describes the state once.
                            let mut st = stalled.lock().unwrap();
                            if st.is_none() {
                                *st = Some(format!(
                                    "{e}\n{}",
                                    two_vcpu_diagnosis(g, ioreq.as_ref(), ctr)
                                ));
                            }
                            return;
                        }
                    }
                }
                let r = last.unwrap();
                assert_eq!(r.result as u32, N - 1, "vCPU {vcpu}");
            });
        }
    });
    if let Some(d) = stalled.into_inner().unwrap() {
        panic!("a vCPU stalled: {d}");
    }
    drop(ioreq);
    let stats = finish(running);
    let c = ctr.lock().unwrap();
    report!("two vCPUs: per port {:?}, {stats:?}", c.per_port);
    assert_eq!(c.per_port, [u64::from(N), u64::from(N)]);
}

/// A port whose reads take a while (so a stop request comes while one is in flight).
struct Slow;

impl Device for Slow {
    fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
        std::thread::sleep(Duration::from_millis(300));
        0x1234
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_stopping_the_loop_releases_the_guest() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let server = ServerBuilder::new(DomId::new(g.domid()))
        .buffered(BufIoreqMode::Off)
        .device(Slow, [Claim::Ports(0x530..=0x531)])
        .build()
        .unwrap();
    let running = spawn(server);
    let stopper = {
        let stop = running.stop_handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stop.stop();
        })
    };
    // The guest's `in` is in flight when the stop comes: it still gets its answer.
    assert_eq!(g.port_in(0x530, 2).unwrap(), 0x1234);
    stopper.join().unwrap();
    let t0 = Instant::now();
    let stats = finish(running);
    report!(
        "stop: loop returned and server dropped in {:?}; {stats:?}",
        t0.elapsed()
    );
    // The server is gone: the port is nobody's now and the guest goes on.
    assert_eq!(g.port_in(0x530, 2).unwrap(), 0xffff);
    g.ping().unwrap();
    let t0 = Instant::now();
    g.into_guest().destroy().unwrap();
    report!("guest destroyed in {:?}", t0.elapsed());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_async_loop_serves_and_stops() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let (mut server, _) = fifo_server(&g, BufIoreqMode::Off);
    let running = Running::new(
        server.stop_handle(),
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            let r = rt.block_on(server.run_async());
            (r, server.stats())
        }),
    );
    let d = data(1000, 3);
    g.rep_outs(FIFO_PORT, 1, &d, false).unwrap();
    assert_eq!(g.rep_ins(FIFO_PORT, 1, 1000, false).unwrap(), d);
    let (r, stats) = running.join();
    r.unwrap();
    report!("async: {stats:?}");
    assert!(stats.port >= 2);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_requests_per_second() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let ctr = Arc::new(Mutex::new(Counter::default()));
    let server = ServerBuilder::new(DomId::new(g.domid()))
        .buffered(BufIoreqMode::Off)
        .device(ctr.clone(), [Claim::Ports(0x520..=0x527)])
        .build()
        .unwrap();
    let running = spawn(server);
    g.set_flags(p::FLAG_SPIN);
    // Each mailbox command does one `out`: the rate includes the mailbox round trip.
    const N: u32 = 2000;
    let t0 = Instant::now();
    for i in 0..N {
        g.port_out(0x520, i, 4).unwrap();
    }
    let out_rate = f64::from(N) / t0.elapsed().as_secs_f64();
    // One `rep outsb` of 4096 bytes = one request with 4096 device accesses.
    let d = data(4096, 1);
    let t0 = Instant::now();
    for _ in 0..50 {
        g.rep_outs(0x520, 1, &d, false).unwrap();
    }
    let rep_secs = t0.elapsed().as_secs_f64();
    g.set_flags(0);
    let stats = finish(running);
    report!(
        "rate: {out_rate:.0} out requests/s (one per mailbox command, guest spinning); \
         rep outsb 4 KiB: {:.1} MB/s; loop's own time per request {:.1} us; {stats:?}",
        50.0 * 4096.0 / rep_secs / 1e6,
        stats.busy_ns as f64 / stats.total() as f64 / 1e3
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_mapcache_invalidate_is_acknowledged() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    // This one serves through run_once, the building block for loops of one's own.
    let (mut server, _) = fifo_server(&g, BufIoreqMode::Atomic);
    let stop = server.stop_handle();
    let running = {
        let stop = stop.clone();
        Running::new(
            stop.clone(),
            std::thread::spawn(move || {
                let mut r = Ok(());
                while !stop.is_stopped() && r.is_ok() {
                    r = server.run_once(Duration::from_millis(200)).map(drop);
                }
                (r, server)
            }),
        )
    };
    // The guest gives a scratch frame back (XENMEM_decrease_reservation): Xen then asks every
    // ioreq server to drop its guest-memory mappings (IOREQ_TYPE_INVALIDATE) before the vCPU
    // goes on. If the loop did not answer it, the guest's hypercall would never return.
    let base = p::data_gfn(0) << 12;
    let mut arg = Vec::new();
    arg.extend_from_slice(&0x11fu64.to_le_bytes()); // the extent list: one gfn
    arg.extend_from_slice(&base.to_le_bytes()); // xen_memory_reservation.extent_start
    arg.extend_from_slice(&1u64.to_le_bytes()); // nr_extents
    arg.extend_from_slice(&0u32.to_le_bytes()); // extent_order
    arg.extend_from_slice(&0u32.to_le_bytes()); // mem_flags
    arg.extend_from_slice(&0x7ff0u16.to_le_bytes()); // domid: DOMID_SELF
    arg.extend_from_slice(&[0u8; 6]);
    assert_eq!(g.write_data(&arg).unwrap(), base);
    let rc = g.hypercall(12, [1, base + 8, 0, 0, 0]).unwrap(); // memory_op(decrease_reservation)
    assert_eq!(rc, 1, "one extent released");
    // The next request still works (and data_is_ptr maps guest memory afresh).
    let d = data(100, 5);
    g.rep_outs(FIFO_PORT, 1, &d, false).unwrap();
    assert_eq!(g.rep_ins(FIFO_PORT, 1, 100, false).unwrap(), d);
    let stats = finish(running);
    report!("invalidate: {stats:?}");
    assert!(stats.invalidate >= 1, "{stats:?}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_stops_promptly_while_the_guest_sends_the_largest_requests() {
    use std::sync::atomic::Ordering;
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let (server, fifo) = fifo_server(&g, BufIoreqMode::Atomic);
    let running = spawn(server);
    let done = std::sync::atomic::AtomicBool::new(false);
    let d = data(4096, 9);
    let (latency, stats, rounds) = std::thread::scope(|s| {
        // The guest sends `rep outsb` of 4096 units, the largest request Xen makes, again and
        // again, until the server is gone.
        let hammer = s.spawn(|| {
            let mut rounds = 0u32;
            while !done.load(Ordering::Acquire) {
                g.rep_outs(FIFO_PORT, 1, &d, false).unwrap();
                fifo.lock().unwrap().q.clear();
                rounds += 1;
            }
            rounds
        });
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = Instant::now();
        let (r, server) = running.join();
        let latency = t0.elapsed();
        r.unwrap();
        let stats = server.stats();
        drop(server);
        done.store(true, Ordering::Release);
        (latency, stats, hammer.join().unwrap())
    });
    report!(
        "stop under load: the loop returned {latency:?} after stop() while the guest sent \
         4096-unit rep outsb ({rounds} commands); {stats:?}"
    );
    assert!(stats.port >= 1, "{stats:?}");
    assert_eq!(stats.refused, 0, "requests Xen sends are never refused");
    // The guest goes on after the server is gone.
    g.ping().unwrap();
}
