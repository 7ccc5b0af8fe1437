//! The virtio-blk device in the Xen machine (`cargo xtask xen-test -p xen-pcdm`): the
//! project's test guest acts as the driver (config space through 0xcf8/0xcfc, the BAR
//! through MMIO, descriptors in its own RAM), the device serves requests from an image
//! file in dom0 through guest RAM mapped once, and signals completions with MSI-X.
#![allow(missing_docs)]

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_devicemodel::server::{Server, ServerBuilder};
use xen_devicemodel::{BufIoreqMode, DomId, Sbdf};
use xen_foreignmemory::ForeignMemory;
use xen_pcdm::blk::{self, FileDisk};
use xen_pcdm::virtio_pci::{VirtioBlk, S_NEEDS_RESET};
use xen_pcdm::xen_ram::XenRam;
use xen_testkit::protocol as p;
use xen_testkit::{require_xen, TestGuest};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-pcdm virtio-blk: {}", format!($($t)*));
    }};
}

const BAR: u64 = 0xf000_0000;
const VECTOR: u8 = 0x66;
const QSIZE: u64 = 8;
/// Guest frames: descriptors, avail, used, header, data (2), status, write buffer.
const F_DESC: u64 = p::SCRATCH_GFN;
const F_AVAIL: u64 = F_DESC + 1;
const F_USED: u64 = F_DESC + 2;
const F_HDR: u64 = F_DESC + 3;
const F_DATA: u64 = F_DESC + 4;
const F_STATUS: u64 = F_DESC + 6;
const F_WBUF: u64 = F_DESC + 7;

fn addr(gfn: u64) -> u64 {
    gfn << 12
}

struct Drv<'g> {
    g: &'g TestGuest,
    avail_idx: u16,
}

impl Drv<'_> {
    fn wr(&self, off: u64, size: u8, v: u64) {
        self.g.mem_write(BAR + off, v, size).unwrap();
    }
    fn rd(&self, off: u64, size: u8) -> u64 {
        self.g.mem_read(BAR + off, size).unwrap()
    }
    fn desc(&self, i: u64, a: u64, len: u32, flags: u16, next: u16) {
        let at = addr(F_DESC) + 16 * i;
        self.g.mem_write(at, a, 8).unwrap();
        let w = u64::from(len) | (u64::from(flags) << 32) | (u64::from(next) << 48);
        self.g.mem_write(at + 8, w, 8).unwrap();
    }
    fn header(&self, kind: u32, sector: u64) {
        self.g.mem_write(addr(F_HDR), u64::from(kind), 8).unwrap();
        self.g.mem_write(addr(F_HDR) + 8, sector, 8).unwrap();
    }
    fn submit(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx) % QSIZE;
        self.g
            .mem_write(addr(F_AVAIL) + 4 + 2 * slot, head.into(), 2)
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.g
            .mem_write(addr(F_AVAIL) + 2, self.avail_idx.into(), 2)
            .unwrap();
        self.wr(0x3000, 2, 0);
    }
    fn used_idx(&self) -> u16 {
        self.g.mem_read(addr(F_USED) + 2, 2).unwrap() as u16
    }
    fn status_byte(&self) -> u8 {
        self.g.mem_read(addr(F_STATUS), 1).unwrap() as u8
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

fn spawn(mut s: Server) -> std::thread::JoinHandle<(xen_devicemodel::Result<()>, Server)> {
    std::thread::spawn(move || (s.run(), s))
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn xen_virtio_blk_serves_the_test_guest_with_msix() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let dom = DomId::new(g.domid());
    // The image: 1 MiB of a known pattern.
    let path = std::env::temp_dir().join(format!("xen-pcdm-test-{}.img", std::process::id()));
    let image: Vec<u8> = (0..1 << 20)
        .map(|i: usize| (i * 7 + i / 4096) as u8)
        .collect();
    std::fs::write(&path, &image).unwrap();
    let disk = FileDisk::open(&path).unwrap();
    // The device reaches the scratch area only: everything else is "outside RAM" for it.
    let ram = XenRam::new(
        ForeignMemory::open().unwrap(),
        dom,
        vec![(
            addr(p::SCRATCH_GFN),
            (p::SCRATCH_PAGES * p::PAGE_SIZE) as u64,
        )],
    );
    let sbdf = Sbdf::new(0, 0, 5, 0).unwrap();
    let dev = Arc::new(Mutex::new(VirtioBlk::new(sbdf, ram, disk, "xen-pcdm")));
    let server = ServerBuilder::new(dom)
        .buffered(BufIoreqMode::Off)
        .device(dev.clone(), [xen_devicemodel::server::Claim::Pci(sbdf)])
        .build()
        .unwrap();
    let stop = server.stop_handle();
    let running = spawn(server);

    // Config space through the guest's 0xcf8/0xcfc.
    assert_eq!(g.pci_cfg_read(0, 5, 0, 0, 4).unwrap(), 0x1042_1af4);
    g.pci_cfg_write(0, 5, 0, 0x10, BAR as u32, 4).unwrap();
    g.pci_cfg_write(0, 5, 0, 0x04, 0x6, 2).unwrap();
    assert_eq!(dev.lock().unwrap().bar(), Some(BAR));
    let mut d = Drv {
        g: &g,
        avail_idx: 0,
    };
    // Driver set-up; MSI-X vector 1 -> APIC 0, VECTOR.
    d.wr(0x14, 1, 0);
    d.wr(0x14, 1, 3);
    d.wr(0x08, 4, 1);
    d.wr(0x0c, 4, 1);
    d.wr(0x14, 1, 0xb);
    assert_eq!(d.rd(0x14, 1) & 8, 8);
    assert_eq!(d.rd(0x2000, 8), (image.len() / 512) as u64, "capacity");
    d.wr(0x18, 2, QSIZE);
    d.wr(0x20, 8, addr(F_DESC));
    d.wr(0x28, 8, addr(F_AVAIL));
    d.wr(0x30, 8, addr(F_USED));
    d.wr(0x3800 + 16, 4, 0xfee0_0000);
    d.wr(0x3800 + 20, 4, 0);
    d.wr(0x3800 + 24, 4, VECTOR.into());
    d.wr(0x3800 + 28, 4, 0);
    g.pci_cfg_write(0, 5, 0, 0x86, 0x8000, 2).unwrap();
    d.wr(0x1a, 2, 1);
    d.wr(0x1c, 2, 1);
    d.wr(0x14, 1, 0xf);

    // Read 8 KiB from sector 16 into two guest frames.
    let c = g.vector_count(VECTOR);
    d.header(blk::T_IN, 16);
    d.desc(0, addr(F_HDR), 16, 1, 1);
    d.desc(1, addr(F_DATA), 8192, 3, 2);
    d.desc(2, addr(F_STATUS), 1, 2, 0);
    d.submit(0);
    let n = wait_vector(&g, VECTOR, c);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.status_byte(), blk::S_OK);
    for k in 0..2u64 {
        let off = 16 * 512 + 4096 * k as usize;
        let want = p::fnv1a64(image[off..off + 4096].iter().copied());
        assert_eq!(g.checksum(F_DATA + k).unwrap(), want, "data frame {k}");
    }
    report!("IN 8 KiB: the guest's checksums match the image; MSI vector {VECTOR:#x} counted {n}");

    // Write a frame the guest filled to sector 100: dom0 finds it in the image file.
    g.fill(Some(F_WBUF), 0xd15c).unwrap();
    d.header(blk::T_OUT, 100);
    d.desc(1, addr(F_WBUF), 4096, 1, 2);
    let c = g.vector_count(VECTOR);
    d.submit(0);
    wait_vector(&g, VECTOR, c);
    assert_eq!(d.used_idx(), 2);
    assert_eq!(d.status_byte(), blk::S_OK);
    let f = std::fs::File::open(&path).unwrap();
    let mut back = vec![0u8; 4096];
    f.read_exact_at(&mut back, 100 * 512).unwrap();
    let want: Vec<u8> = (0..4096).map(|i| p::pattern_byte(0xd15c, i)).collect();
    assert!(back == want, "the image holds what the guest wrote");
    report!("OUT 4 KiB: the image file holds the guest's pattern");

    // Beyond the disk: IOERR, the image unchanged in size.
    d.header(blk::T_OUT, (image.len() / 512) as u64);
    d.submit(0);
    let t0 = Instant::now();
    while d.used_idx() != 3 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(d.status_byte(), blk::S_IOERR);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), image.len() as u64);

    // A descriptor outside the RAM the device may reach: DEVICE_NEEDS_RESET.
    d.header(blk::T_IN, 0);
    d.desc(1, 0x40_0000, 4096, 3, 2);
    d.submit(0);
    assert_eq!(d.rd(0x14, 1) as u8 & S_NEEDS_RESET, S_NEEDS_RESET);
    assert_eq!(d.used_idx(), 3, "nothing used");
    report!("beyond the disk: IOERR; descriptor outside RAM: DEVICE_NEEDS_RESET");

    stop.stop();
    let (r, server) = running.join().unwrap();
    r.unwrap();
    let stats = server.stats();
    drop(server);
    let s = dev.lock().unwrap().stats();
    report!("device {s:?}; server {stats}");
    assert_eq!((s.reads, s.writes, s.errors), (1, 1, 1));
    let _ = std::fs::remove_file(&path);
}
