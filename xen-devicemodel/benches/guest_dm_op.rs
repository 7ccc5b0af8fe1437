//! ns per device-model operation on a real HVM guest (the project's test guest, see
//! `xen-testkit`), inside the Xen machine: `cargo xtask xen-test -p xen-devicemodel` runs a
//! quick round (this target has `test = true`), `cargo bench -p xen-devicemodel --bench
//! guest_dm_op` a longer one. Outside Xen it says so and measures nothing.
//!
//! Ratios only: under QEMU's TCG the times are noisy, and nothing here asserts a time. Each
//! operation on its own, on a guest that has an ioreq server (so the server ops have one).

use std::time::Instant;
use xen_devicemodel::Gfn;

use xen_devicemodel::{BufIoreqMode, DeviceModel, DomId, IsaIrq};
use xen_testkit::protocol as p;
use xen_testkit::TestGuest;

fn time(name: &str, n: u32, f: &mut dyn FnMut()) {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "bench: dm_op on a guest: {name:<46} {:>9} ns/call ({n} calls)",
        t.elapsed().as_nanos() / u128::from(n)
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !std::path::Path::new("/dev/xen/privcmd").exists() {
        println!("bench: dm_op on a guest: not inside Xen, nothing measured");
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        return;
    }
    let n = if full { 2000 } else { 200 };
    let g = TestGuest::hvm().expect("test guest");
    let d = DomId::new(g.domid());
    let dm = DeviceModel::open().expect("privcmd");
    let srv = dm
        .create_ioreq_server(d, BufIoreqMode::Off)
        .expect("ioreq server");
    let irq9 = IsaIrq::new(9).expect("irq");
    time("nr_vcpus", n, &mut || {
        dm.nr_vcpus(d).unwrap();
    });
    time("get_ioreq_server_info", n, &mut || {
        srv.info().unwrap();
    });
    time(
        "map_io_range_to_ioreq_server + unmap (pair)",
        n,
        &mut || {
            srv.map_port_range(0x5f0..=0x5f0).unwrap();
            srv.unmap_port_range(0x5f0..=0x5f0).unwrap();
        },
    );
    time("set_isa_irq_level (deassert)", n, &mut || {
        dm.set_isa_irq_level(d, irq9, false).unwrap();
    });
    time("modified_memory", n, &mut || {
        dm.modified_memory(d, Gfn::new(p::SCRATCH_GFN), 1).unwrap();
    });
    time("set_mem_type ram_rw (1 frame)", n, &mut || {
        dm.make_ram_region_rw(d, Gfn::new(p::SCRATCH_GFN), 1)
            .unwrap();
    });
    let mut bm = [0u64; 1];
    time("track_dirty_vram (16 frames)", n, &mut || {
        dm.track_dirty_vram(d, Gfn::new(p::SCRATCH_GFN), 16, &mut bm)
            .unwrap();
    });
    dm.stop_tracking_dirty_vram(d).unwrap();
    srv.destroy().unwrap();
    println!("test result: ok. 0 passed; 0 failed; 0 ignored; 1 measured; 0 filtered out");
}
