//! Watches a VIRQ in dom0 and prints each time it fires.
//!
//! ```text
//! cargo run -p xen-evtchn --example virq_watch -- [VIRQ number, default 8 = VIRQ_CON_RING] [count]
//! ```
//!
//! With the default, run `xl debug-keys h` in another shell: Xen's console ring gets text and
//! the VIRQ fires. (`VIRQ_DOM_EXC` usually belongs to xenstored: binding it gives EEXIST.)

use std::time::Duration;

use xen_evtchn::{EventChannels, Virq};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let virq = match args.next() {
        Some(n) => Virq::new(n.parse()?)?,
        None => Virq::CON_RING,
    };
    let count: u32 = args.next().map_or(Ok(5), |n| n.parse())?;

    let ch = EventChannels::open()?;
    let port = ch.bind_virq(virq)?;
    println!(
        "{virq} bound to port {}; waiting for {count} events",
        port.port()
    );
    let mut seen = 0;
    while seen < count {
        match ch.pending_timeout(Duration::from_secs(10))? {
            Some(p) if p == port.port() => {
                seen += 1;
                println!("{virq} fired ({seen}/{count})");
                port.unmask()?;
            }
            Some(other) => println!("event on unexpected port {other}"),
            None => println!("(10 s without {virq})"),
        }
    }
    Ok(()) // `port` unbinds here
}
