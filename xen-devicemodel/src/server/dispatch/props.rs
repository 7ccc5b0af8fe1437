//! Property tests (proptest): any request a slot can hold, and any buffered page with any
//! pointers, is handled without a panic, with bounded device calls, and reaches devices only
//! with the access sizes the `Device` trait promises. `PROPTEST_CASES` sets the number of
//! cases (CI runs more than the default).

// Unsafe: tests over fake slots in plain memory.
#![allow(unsafe_code)]

use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::server::{Claim, ServerBuilder};
use crate::DomId;

/// Guest memory of three pages at `BASE`; anything else is an error, as an unmapped frame is.
struct Ram(Vec<u8>);
const BASE: u64 = 0x10_0000;

impl Ram {
    fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>> {
        let bad = || crate::Error::os("test ram", None, crate::Errno::EFAULT);
        let o = usize::try_from(gpa.checked_sub(BASE).ok_or_else(bad)?).map_err(|_| bad())?;
        let end = o
            .checked_add(len)
            .filter(|&e| e <= self.0.len())
            .ok_or_else(bad)?;
        Ok(o..end)
    }
}

impl GuestMemory for Ram {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        let r = self.range(gpa, data.len())?;
        self.0[r].copy_from_slice(data);
        Ok(())
    }
    fn invalidate(&mut self) {}
}

/// Checks every access against the `Device` trait's promises and counts them.
#[derive(Default)]
struct Checker {
    calls: u64,
    bad: Option<String>,
}

impl Checker {
    fn check(&mut self, what: &str, size: u8, ok: &[u8]) {
        self.calls += 1;
        if !ok.contains(&size) && self.bad.is_none() {
            self.bad = Some(format!("{what} of size {size}"));
        }
    }
}

impl Device for Checker {
    fn port_read(&mut self, _port: u16, size: u8) -> u32 {
        self.check("port read", size, &[1, 2, 4]);
        u32::MAX
    }
    fn port_write(&mut self, _port: u16, size: u8, value: u32) {
        self.check("port write", size, &[1, 2, 4]);
        if size < 4 && value >> (8 * size) != 0 {
            self.bad = Some(format!("port write of {value:#x} with size {size}"));
        }
    }
    fn mmio_read(&mut self, _addr: u64, size: u8) -> u64 {
        self.check("mmio read", size, &[1, 2, 4, 8]);
        u64::MAX
    }
    fn mmio_write(&mut self, _addr: u64, size: u8, _value: u64) {
        self.check("mmio write", size, &[1, 2, 4, 8]);
    }
    fn pci_config_read(&mut self, _dev: Sbdf, reg: u16, size: u8) -> u32 {
        self.check("pci read", size, &[1, 2, 4]);
        if u32::from(reg) + u32::from(size) > 4096 {
            self.bad = Some(format!("pci read at {reg:#x} size {size}"));
        }
        u32::MAX
    }
    fn pci_config_write(&mut self, _dev: Sbdf, reg: u16, size: u8, _value: u32) {
        self.check("pci write", size, &[1, 2, 4]);
        if u32::from(reg) + u32::from(size) > 4096 {
            self.bad = Some(format!("pci write at {reg:#x} size {size}"));
        }
    }
}

fn dispatch() -> (Dispatch<Ram>, Arc<Mutex<Checker>>) {
    let c = Arc::new(Mutex::new(Checker::default()));
    let b = ServerBuilder::new(DomId::new(1)).device(
        c.clone(),
        [
            Claim::Ports(0..=0xffff),
            Claim::Mmio(0..=u64::MAX),
            Claim::Pci(Sbdf::new(0, 0, 3, 0).unwrap()),
        ],
    );
    (
        Dispatch::new(b.devices, b.keys, Ram(vec![0x5a; 3 * 4096])),
        c,
    )
}

/// Requests as a slot can hold them: any field, with the interesting values made likely.
fn any_ioreq() -> impl Strategy<Value = Ioreq> {
    let kind = prop_oneof![
        0u8..=2,
        Just(slot::IOREQ_TYPE_TIMEOFFSET),
        Just(slot::IOREQ_TYPE_INVALIDATE),
        any::<u8>()
    ];
    let size = prop_oneof![0u32..=9, any::<u32>()];
    let count = prop_oneof![0u32..=4, 4090u32..=4200, any::<u32>()];
    let addr = prop_oneof![
        0u64..0x1_0000,
        Just(u64::from(Sbdf::new(0, 0, 3, 0).unwrap().to_raw()) << 32)
            .prop_flat_map(|b| b..b + 0x1010),
        any::<u64>()
    ];
    let data = prop_oneof![BASE - 16..BASE + 3 * 4096 + 16, any::<u64>()];
    (kind, addr, data, count, size, any::<[bool; 3]>()).prop_map(
        |(kind, addr, data, count, size, [data_is_ptr, read, df])| Ioreq {
            addr,
            data,
            count,
            size,
            data_is_ptr,
            read,
            df,
            kind,
        },
    )
}

proptest! {
    #[test]
    fn any_request_is_bounded_and_well_formed(reqs in proptest::collection::vec(any_ioreq(), 1..8)) {
        let (mut d, c) = dispatch();
        for r in &reqs {
            let before = c.lock().unwrap().calls;
            let answer = d.handle(r);
            let calls = c.lock().unwrap().calls - before;
            prop_assert!(calls <= u64::from(MAX_REP_COUNT), "{calls} calls for {r:?}");
            if let Some(bad) = c.lock().unwrap().bad.take() {
                prop_assert!(false, "{bad} for {r:?}");
            }
            // Answers by value only for reads that are not through guest memory.
            if answer.is_some() {
                prop_assert!(r.read && (r.kind == slot::IOREQ_TYPE_PCI_CONFIG || !r.data_is_ptr), "{r:?}");
            }
        }
    }

    #[test]
    fn any_buffered_page_is_drained_in_bounded_turns(
        words in proptest::collection::vec(any::<u64>(), slot::BUF_SLOTS as usize),
        rd in any::<u32>(),
        ahead in prop_oneof![0u32..=600, any::<u32>()],
    ) {
        #[repr(C, align(4096))]
        struct Page([u8; 4096]);
        let mut page = Box::new(Page([0; 4096]));
        for (i, w) in words.iter().enumerate() {
            page.0[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        page.0[0..4].copy_from_slice(&rd.to_le_bytes());
        page.0[4..8].copy_from_slice(&rd.wrapping_add(ahead).to_le_bytes());
        let (mut d, c) = dispatch();
        // SAFETY: our page, alive for the test.
        let ring = unsafe { Ring::new(page.0.as_mut_ptr()) };
        let more = d.drain_ring(ring);
        let calls = c.lock().unwrap().calls;
        prop_assert!(calls <= u64::from(RING_RECORDS_PER_TURN));
        if let Some(bad) = c.lock().unwrap().bad.take() {
            prop_assert!(false, "{bad}");
        }
        let now = u32::from_le_bytes(page.0[0..4].try_into().unwrap());
        let taken = now.wrapping_sub(rd);
        // At most one ring's worth of records per turn (an 8-byte record takes two slots),
        // never past the write pointer.
        prop_assert!(taken <= ahead && taken <= 2 * RING_RECORDS_PER_TURN, "took {taken} of {ahead}");
        if !more {
            prop_assert!(ahead - taken <= 1, "{taken} of {ahead} taken and nothing left?");
        }
    }
}
