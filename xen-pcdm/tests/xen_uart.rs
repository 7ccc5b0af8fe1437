//! COM1 in the Xen machine (`cargo xtask xen-test -p xen-pcdm uart`): the test guest
//! drives the 16550A, whose interrupts on ISA IRQ 4 the guest counts, raised from the
//! device's callbacks (transmitter empty) and from an input thread (received data).
#![allow(missing_docs)]

mod common;
use common::Out;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{BufIoreqMode, DomId, IsaIrq};
use xen_pcdm::uart::{self, Uart, COM1, COM1_IRQ};
use xen_testkit::{require_xen, TestGuest};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-pcdm uart: {}", format!($($t)*));
    }};
}

const VECTOR: u8 = 0x64;

fn wait_vector(g: &TestGuest, above: u32) -> u32 {
    let t0 = Instant::now();
    while g.vector_count(VECTOR) <= above && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let n = g.vector_count(VECTOR);
    assert!(n > above, "IRQ 4's vector not seen in the guest");
    n
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn xen_uart_interrupts_both_ways_on_irq4() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let dom = DomId::new(g.domid());
    let out = Arc::new(Mutex::new(Vec::new()));
    let u = Uart::new(
        COM1,
        IsaIrq::new(COM1_IRQ).unwrap(),
        Box::new(Out(out.clone())),
    );
    let claims = u.claims();
    let u = Arc::new(Mutex::new(u));
    let server = ServerBuilder::new(dom)
        .buffered(BufIoreqMode::Off)
        .device(u.clone(), claims)
        .build()
        .unwrap();
    let irqs = server.interrupts();
    let stop = server.stop_handle();
    let mut server = server;
    let t = std::thread::spawn(move || (server.run(), server));

    g.ioapic_route(COM1_IRQ, VECTOR, false, false).unwrap();
    let port = |off: u16| COM1 + off;
    // OUT2 on, then the transmitter-empty interrupt: raised at once.
    g.port_out(port(4), 0x0b, 1).unwrap();
    let c = g.vector_count(VECTOR);
    g.port_out(port(1), 0x02, 1).unwrap();
    let n = wait_vector(&g, c);
    assert_eq!(
        g.port_in(port(2), 1).unwrap() & 0x0f,
        0x02,
        "IIR: THR empty"
    );
    for b in b"hello\n" {
        g.port_out(port(0), (*b).into(), 1).unwrap();
    }
    assert_eq!(&out.lock().unwrap()[..], b"hello\n");
    report!("transmitter-empty interrupt counted {n}; the guest's bytes reached the output");

    // Input from another thread: the received-data interrupt.
    g.port_out(port(1), 0x01, 1).unwrap();
    let c = g.vector_count(VECTOR);
    uart::pump_input(&u, &irqs, &b"ok"[..]).unwrap();
    let n = wait_vector(&g, c);
    assert_eq!(g.port_in(port(2), 1).unwrap() & 0x0f, 0x04, "IIR: data");
    assert_eq!(g.port_in(port(0), 1).unwrap(), u32::from(b'o'));
    assert_eq!(g.port_in(port(0), 1).unwrap(), u32::from(b'k'));
    assert_eq!(g.port_in(port(5), 1).unwrap() & 1, 0, "nothing left");
    report!("received-data interrupt from the input thread counted {n}; bytes read back");

    stop.stop();
    let (r, server) = t.join().unwrap();
    r.unwrap();
    report!("{}", server.stats());
}
