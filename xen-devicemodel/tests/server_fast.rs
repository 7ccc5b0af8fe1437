//! Doorbells and interrupt triggers in the Xen machine (`cargo xtask xen-test -p
//! xen-devicemodel server_fast`): a virtio-style device asks for its queue-notify register to
//! be a doorbell and for its MSI to be a trigger; the test guest rings the doorbell with an
//! MMIO write and counts the MSI the device fires in answer. On kernels without the privcmd
//! eventfd ioctls (Debian's 6.1 and 6.12 lack `CONFIG_XEN_VIRTIO`) both take the loop: the
//! write arrives as an ordinary MMIO request and the MSI goes out as a dm_op. On kernels with
//! them, the same device and the same guest writes work through the kernel.
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_devicemodel::server::{
    Access, Claim, Ctx, Device, Doorbell, FastPath, Interrupt, IrqTrigger, ServerBuilder,
};
use xen_devicemodel::{BufIoreqMode, DomId};
use xen_testkit::{require_xen, TestGuest};

#[path = "support/running.rs"]
mod running;
use running::spawn;

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-devicemodel server_fast: {}", format!($($t)*));
    }};
}

const PORT: u16 = 0x548;
const WINDOW: u64 = 0xf200_0000;
const WINDOW_LEN: u64 = 0x1000;
/// virtio-mmio's QueueNotify register, the one the kernel's ioeventfd knows.
const NOTIFY: u64 = WINDOW + 0x50;
const QUEUE: u64 = 2;
const MSI_VECTOR: u8 = 0x62;

#[derive(Default, Debug)]
struct Seen {
    doorbell: Option<FastPath>,
    trigger: Option<FastPath>,
    /// Doorbell writes delivered to the device, with their vCPU.
    rings: Vec<Option<u32>>,
    /// Other writes to the notify register (another queue).
    others: u32,
    errors: Vec<String>,
}

/// A write of 1 to `PORT` sets the doorbell and the trigger up; a doorbell write fires the
/// MSI.
struct Virtq {
    trigger: Option<IrqTrigger>,
    seen: Arc<Mutex<Seen>>,
}

impl Virtq {
    fn set_up(&mut self, ctx: &mut Ctx<'_>) -> xen_devicemodel::Result<()> {
        let path = ctx.doorbell(Doorbell::new(NOTIFY, 4).datamatch(QUEUE))?;
        let interrupts = ctx.interrupts().expect("a server in Xen has interrupts");
        let t = interrupts.trigger(Interrupt::Msi {
            addr: 0xfee0_0000,
            data: MSI_VECTOR.into(),
        })?;
        let mut seen = self.seen.lock().unwrap();
        seen.doorbell = Some(path);
        seen.trigger = Some(t.path());
        self.trigger = Some(t);
        Ok(())
    }
}

impl Device for Virtq {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        let r = match access {
            Access::PortWrite {
                port: PORT,
                value: 1,
                ..
            } => self.set_up(ctx),
            Access::MmioWrite {
                addr: NOTIFY,
                size: 4,
                value: QUEUE,
            } => {
                self.seen.lock().unwrap().rings.push(ctx.vcpu());
                match &self.trigger {
                    Some(t) => t.fire(),
                    None => Ok(()),
                }
            }
            Access::MmioWrite { addr: NOTIFY, .. } => {
                self.seen.lock().unwrap().others += 1;
                Ok(())
            }
            Access::MmioRead { addr, .. } => return addr,
            _ => Ok(()),
        };
        if let Err(e) = r {
            self.seen.lock().unwrap().errors.push(e.to_string());
            ctx.report(e);
        }
        0
    }
}

fn wait_vector(g: &TestGuest, vector: u8, above: u32) -> u32 {
    let t0 = Instant::now();
    while g.vector_count(vector) <= above && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let n = g.vector_count(vector);
    assert!(n > above, "vector {vector:#x} not seen in the guest");
    n
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_fast_doorbell_and_trigger_with_their_fallback() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let dev = Virtq {
        trigger: None,
        seen: seen.clone(),
    };
    let server = ServerBuilder::new(DomId::new(g.domid()))
        .buffered(BufIoreqMode::Off)
        .device(
            dev,
            [
                // Xen routes a port access by its whole width: the 4 bytes of the write.
                Claim::Ports(PORT..=PORT + 3),
                Claim::Mmio(WINDOW..=WINDOW + WINDOW_LEN - 1),
            ],
        )
        .build()
        .unwrap();
    assert_eq!(server.irqfd_supported(), None, "nothing asked yet");
    let running = spawn(server);

    g.port_out(PORT, 1, 4).unwrap();
    let (doorbell, trigger) = {
        let s = seen.lock().unwrap();
        assert!(s.errors.is_empty(), "{s:?}");
        (s.doorbell.unwrap(), s.trigger.unwrap())
    };
    report!("doorbell served by {doorbell:?}, MSI trigger by {trigger:?}");

    // Ring the doorbell a few times: each ring reaches the device, which fires the MSI.
    const RINGS: u32 = 5;
    for i in 0..RINGS {
        let c = g.vector_count(MSI_VECTOR);
        g.mem_write(NOTIFY, QUEUE, 4).unwrap();
        let n = wait_vector(&g, MSI_VECTOR, c);
        if i == 0 {
            report!("doorbell write -> device -> MSI: vector {MSI_VECTOR:#x} counted {n}");
        }
    }
    // Another queue's write is not the doorbell's: an ordinary MMIO write either way.
    g.mem_write(NOTIFY, QUEUE + 1, 4).unwrap();
    // The rest of the window is served as before.
    assert_eq!(g.mem_read(WINDOW + 8, 4).unwrap(), WINDOW + 8);

    let (r, server) = running.join();
    r.unwrap();
    let stats = server.stats();
    let s = seen.lock().unwrap();
    report!(
        "irqfd supported: {:?}, ioeventfd supported: {:?}; {stats}; rings seen {}",
        server.irqfd_supported(),
        server.ioeventfd_supported(),
        s.rings.len()
    );
    assert!(s.errors.is_empty(), "{s:?}");
    assert_eq!(s.others, 1, "{s:?}");
    // What the kernel answered decides the path, and the server remembers it (on a PV dom0
    // the loop serves doorbells even where the kernel has ioeventfd).
    assert_eq!(server.irqfd_supported(), Some(trigger == FastPath::Kernel));
    let ioeventfd = server.ioeventfd_supported();
    assert!(ioeventfd.is_some());
    if doorbell == FastPath::Kernel {
        assert_eq!(ioeventfd, Some(true));
    }
    match doorbell {
        FastPath::Loop => {
            // Every ring came through the vCPU's ioreq slot, as an ordinary MMIO write.
            assert_eq!(s.rings.len() as u32, RINGS);
            assert!(s.rings.iter().all(|v| *v == Some(0)), "{s:?}");
            assert_eq!(stats.doorbells, 0);
            assert!(stats.mmio >= u64::from(RINGS) + 2, "{stats:?}");
        }
        FastPath::Kernel => {
            // The kernel completed them; the loop delivered them (coalesced, no vCPU).
            assert!(!s.rings.is_empty() && s.rings.iter().all(Option::is_none));
            assert_eq!(stats.doorbells, s.rings.len() as u64);
        }
    }
    drop(s);
    drop(server);
    g.ping().unwrap();
}
