//! Booting Linux on this PC without a boot loader on disk: the pieces a test, the demo or
//! a benchmark need to start dom0's own kernel in an HVM guest.
//!
//! The path, as QEMU's direct kernel boot does it on Xen: hvmloader and SeaBIOS boot the
//! virtio disk's first sector; that sector ([`LinuxBoot::boot_sector`]) loads the kernel's
//! real-mode setup, the protected-mode kernel, the initramfs and the command line from
//! fw_cfg by DMA (one descriptor each) and enters the setup code at its 16-bit entry (the
//! Linux boot protocol). [`LinuxBoot::install`] puts those four items into [`FwCfg`].
//!
//! - [`LinuxBoot`]: a bzImage split and its setup header filled in as a boot loader would;
//! - [`Cpio`]: a `newc` archive writer for the initramfs;
//! - [`dom0_initramfs`]: busybox, the virtio modules of the running kernel, an init script
//!   and any extra files, all taken from dom0 (the guest runs dom0's kernel);
//! - [`init_script`] and [`cmdline`]: the usual init prelude and command line, with room for
//!   the caller's own commands and words.
//!
//! Everything here is plain data: nothing touches the guest until the device model serves
//! the items.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::fw_cfg::{self, FwCfg};

/// Where the boot sector loads the real-mode setup (segment 0x9000).
pub const SETUP_ADDR: u32 = 0x9_0000;
/// Where the command line goes (inside the setup segment, above its heap).
pub const CMDLINE_ADDR: u32 = 0x9_e000;
/// Where the protected-mode kernel goes.
pub const KERNEL_ADDR: u32 = 0x10_0000;
/// The longest command line that fits between [`CMDLINE_ADDR`] and the EBDA (0x9_fc00).
pub const CMDLINE_MAX: usize = 0x9_fc00 - 0x9_e000;
/// The setup heap's end as an offset in the setup segment (below the command line).
const HEAP_END: u16 = 0xde00;
/// RAM the initramfs keeps free above itself (firmware tables live at the top of RAM).
const TOP_RESERVE: u64 = 8 << 20;

/// The line the guest's init prints once it runs (see [`init_script`]).
pub const INIT_MARKER: &str = "XENPCDM-LINUX-INIT";

/// The modules Linux needs for the virtio disk, in load order: (name, directory under the
/// release's `kernel/drivers/`).
pub const VIRTIO_MODULES: [(&str, &str); 6] = [
    ("virtio_ring", "virtio"),
    ("virtio", "virtio"),
    ("virtio_pci_modern_dev", "virtio"),
    ("virtio_pci_legacy_dev", "virtio"),
    ("virtio_pci", "virtio"),
    ("virtio_blk", "block"),
];

/// The command line every boot gets: the console on the UART, no unplug of emulated devices
/// (we have no PV drivers to take over), the initramfs's `/init`, and a quiet kernel.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 xen_emul_unplug=never rdinit=/init panic=-1 quiet loglevel=1";

/// Why a kernel cannot be booted this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootError {
    /// The image is not a bzImage (no `HdrS`, or too short).
    NotBzImage,
    /// The command line is longer than [`CMDLINE_MAX`] (with its NUL) or holds a NUL.
    BadCmdline(usize),
    /// The initramfs does not fit in RAM above the kernel (its size, the RAM size).
    InitrdTooBig(usize, u64),
    /// A piece is larger than a DMA descriptor can carry (4 GiB).
    TooLarge,
    /// The kernel file could not be read (the error's text).
    Read(String),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::NotBzImage => write!(f, "not a bzImage (no HdrS setup header)"),
            BootError::BadCmdline(n) => write!(
                f,
                "command line of {n} bytes: at most {} without NULs",
                CMDLINE_MAX - 1
            ),
            BootError::InitrdTooBig(n, ram) => write!(
                f,
                "an initramfs of {n} bytes does not fit in {} MiB of RAM above the kernel",
                ram >> 20
            ),
            BootError::TooLarge => write!(f, "a boot piece is 4 GiB or more"),
            BootError::Read(e) => write!(f, "reading the kernel: {e}"),
        }
    }
}

impl std::error::Error for BootError {}

/// A kernel ready to boot: setup (header filled in), kernel, initramfs and command line,
/// with the addresses the boot sector loads them to.
#[derive(Clone)]
pub struct LinuxBoot {
    setup: Vec<u8>,
    kernel: Kernel,
    initrd: Vec<u8>,
    cmdline: Vec<u8>,
    initrd_addr: u32,
}

/// The protected-mode kernel: in memory, or a range of the bzImage file that fw_cfg reads
/// on demand.
#[derive(Clone)]
enum Kernel {
    Bytes(Vec<u8>),
    File {
        file: Arc<File>,
        start: u64,
        len: usize,
    },
}

impl Kernel {
    fn len(&self) -> usize {
        match self {
            Kernel::Bytes(v) => v.len(),
            Kernel::File { len, .. } => *len,
        }
    }
}

impl fmt::Debug for LinuxBoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinuxBoot")
            .field("setup", &self.setup.len())
            .field("kernel", &self.kernel.len())
            .field("initrd", &self.initrd.len())
            .field("initrd_addr", &format_args!("{:#x}", self.initrd_addr))
            .field("cmdline", &String::from_utf8_lossy(&self.cmdline))
            .finish()
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl LinuxBoot {
    /// Splits `bzimage` into setup and kernel, places `initrd` in a guest of `ram_bytes`
    /// (at half of RAM, rounded down to a MiB: above where the kernel decompresses itself,
    /// below the firmware's tables at the top), and fills in the setup header as a boot
    /// loader does (loader type, heap, command line and initramfs addresses).
    pub fn new(
        bzimage: &[u8],
        initrd: Vec<u8>,
        cmdline: &str,
        ram_bytes: u64,
    ) -> Result<LinuxBoot, BootError> {
        LinuxBoot::from_bzimage(bzimage.to_vec(), initrd, cmdline, ram_bytes)
    }

    /// As [`LinuxBoot::new`], taking the bzImage by value: the kernel part stays in its
    /// buffer (the setup moves out), so the image is never held twice.
    pub fn from_bzimage(
        mut bzimage: Vec<u8>,
        initrd: Vec<u8>,
        cmdline: &str,
        ram_bytes: u64,
    ) -> Result<LinuxBoot, BootError> {
        if bzimage.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
            return Err(BootError::NotBzImage);
        }
        let sects = match bzimage[0x1f1] {
            0 => 4,
            n => usize::from(n),
        };
        let setup_len = (sects + 1) * 512;
        if bzimage.len() <= setup_len {
            return Err(BootError::NotBzImage);
        }
        let setup = bzimage[..setup_len].to_vec();
        bzimage.drain(..setup_len);
        LinuxBoot::build(setup, Kernel::Bytes(bzimage), initrd, cmdline, ram_bytes)
    }

    /// As [`LinuxBoot::new`], reading only the setup from `bzimage`: fw_cfg serves the
    /// kernel from the file, a bounded `pread` per DMA chunk, so it is never held in
    /// memory. The file must not change while the guest boots (a short read past a
    /// truncation gives zeros, a read error an error status to the guest).
    pub fn from_file(
        bzimage: File,
        initrd: Vec<u8>,
        cmdline: &str,
        ram_bytes: u64,
    ) -> Result<LinuxBoot, BootError> {
        let size = bzimage
            .metadata()
            .map_err(|e| BootError::Read(e.to_string()))?
            .len();
        let mut head = [0u8; 0x206];
        if size <= head.len() as u64 {
            return Err(BootError::NotBzImage);
        }
        bzimage
            .read_exact_at(&mut head, 0)
            .map_err(|e| BootError::Read(e.to_string()))?;
        if head[0x202..0x206] != *b"HdrS" {
            return Err(BootError::NotBzImage);
        }
        let sects = match head[0x1f1] {
            0 => 4,
            n => usize::from(n),
        };
        let setup_len = (sects + 1) * 512;
        if size <= setup_len as u64 {
            return Err(BootError::NotBzImage);
        }
        let len = usize::try_from(size - setup_len as u64).map_err(|_| BootError::TooLarge)?;
        let mut setup = vec![0u8; setup_len];
        bzimage
            .read_exact_at(&mut setup, 0)
            .map_err(|e| BootError::Read(e.to_string()))?;
        let kernel = Kernel::File {
            file: Arc::new(bzimage),
            start: setup_len as u64,
            len,
        };
        LinuxBoot::build(setup, kernel, initrd, cmdline, ram_bytes)
    }

    /// Checks the pieces, places the initramfs and fills in the setup header.
    fn build(
        mut setup: Vec<u8>,
        kernel: Kernel,
        initrd: Vec<u8>,
        cmdline: &str,
        ram_bytes: u64,
    ) -> Result<LinuxBoot, BootError> {
        let mut c = cmdline.as_bytes().to_vec();
        if c.len() >= CMDLINE_MAX || c.contains(&0) {
            return Err(BootError::BadCmdline(c.len()));
        }
        c.push(0);
        // Where the kernel decompresses itself: from 1 MiB, init_size bytes (protocol 2.10+).
        let init_size = le32(&setup, 0x260).unwrap_or(0);
        let addr_max = u64::from(le32(&setup, 0x22c).unwrap_or(0x37ff_ffff));
        let kernel_end = u64::from(KERNEL_ADDR) + u64::from(init_size).max(kernel.len() as u64);
        let at = (ram_bytes / 2) & !0xf_ffff;
        let end = at + initrd.len() as u64;
        if at < kernel_end || end + TOP_RESERVE > ram_bytes || end > addr_max {
            return Err(BootError::InitrdTooBig(initrd.len(), ram_bytes));
        }
        let initrd_addr = u32::try_from(at).map_err(|_| BootError::TooLarge)?;
        let initrd_len = u32::try_from(initrd.len()).map_err(|_| BootError::TooLarge)?;
        u32::try_from(kernel.len()).map_err(|_| BootError::TooLarge)?;
        setup[0x210] = 0xff; // type_of_loader: undefined
        setup[0x211] |= 0x80; // loadflags: CAN_USE_HEAP
        setup[0x224..0x226].copy_from_slice(&HEAP_END.to_le_bytes()); // heap_end_ptr
        setup[0x228..0x22c].copy_from_slice(&CMDLINE_ADDR.to_le_bytes()); // cmd_line_ptr
        setup[0x218..0x21c].copy_from_slice(&initrd_addr.to_le_bytes()); // ramdisk_image
        setup[0x21c..0x220].copy_from_slice(&initrd_len.to_le_bytes()); // ramdisk_size
        Ok(LinuxBoot {
            setup,
            kernel,
            initrd,
            cmdline: c,
            initrd_addr,
        })
    }

    /// The guest-physical address of the initramfs.
    pub fn initrd_addr(&self) -> u32 {
        self.initrd_addr
    }

    /// The command line as the kernel gets it (NUL-terminated).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline
    }

    /// The four fw_cfg items: (selector, length, guest address), in load order.
    fn pieces(&self) -> [(u16, u32, u32); 4] {
        // Lengths were checked to fit in `new`.
        let len = |v: &Vec<u8>| v.len() as u32;
        [
            (fw_cfg::SETUP_DATA, len(&self.setup), SETUP_ADDR),
            (fw_cfg::KERNEL_DATA, self.kernel.len() as u32, KERNEL_ADDR),
            (fw_cfg::INITRD_DATA, len(&self.initrd), self.initrd_addr),
            (fw_cfg::CMDLINE_DATA, len(&self.cmdline), CMDLINE_ADDR),
        ]
    }

    /// Moves setup, kernel, initramfs and command line into `fw` as the fw_cfg items the
    /// boot sector reads (no copy: fw_cfg then holds the only one; take the
    /// [`boot_sector`](LinuxBoot::boot_sector) first).
    pub fn install(self, fw: &mut FwCfg) {
        fw.set_item(fw_cfg::SETUP_DATA, self.setup);
        match self.kernel {
            Kernel::Bytes(v) => fw.set_item(fw_cfg::KERNEL_DATA, v),
            Kernel::File { file, start, len } => {
                fw.set_file_item(fw_cfg::KERNEL_DATA, file, start, len)
            }
        }
        fw.set_item(fw_cfg::INITRD_DATA, self.initrd);
        fw.set_item(fw_cfg::CMDLINE_DATA, self.cmdline);
    }

    /// The disk's first sector: it loads the four pieces through fw_cfg DMA (one descriptor
    /// each, kept in the sector itself) and jumps to the setup's 16-bit entry.
    pub fn boot_sector(&self) -> [u8; 512] {
        boot_sector(self.pieces())
    }
}

/// A boot sector that loads `pieces` (selector, length, address) through fw_cfg DMA, then
/// enters the kernel's real-mode setup at `SETUP_ADDR`.
fn boot_sector(pieces: [(u16, u32, u32); 4]) -> [u8; 512] {
    let mut code: Vec<u8> = vec![
        0xfa, // cli
        0xfc, // cld
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0x8e, 0xd0, // mov ss, ax
        0xbc, 0x00, 0x7c, // mov sp, 0x7c00
        0x66, 0x31, 0xc0, // xor eax, eax
        0xba, 0x14, 0x05, // mov dx, 0x514 (DMA address, high half)
        0x66, 0xef, // out dx, eax (high half: 0)
    ];
    // Four "mov eax, desc; mov dx, 0x518; out dx, eax" (11 bytes each), then the jump (27).
    let tail = 4 * 11 + 27;
    let desc0 = 0x7c00 + (code.len() + tail) as u32;
    for i in 0..4u32 {
        // The DMA register takes the descriptor's address big-endian.
        let d = (desc0 + 16 * i).swap_bytes().to_le_bytes();
        code.extend_from_slice(&[
            0x66, 0xb8, d[0], d[1], d[2], d[3], // mov eax, desc
            0xba, 0x18, 0x05, // mov dx, 0x518 (DMA address, low half: starts it)
            0x66, 0xef, // out dx, eax
        ]);
    }
    code.extend_from_slice(&[
        0xb8, 0x00, 0x90, // mov ax, 0x9000
        0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xe0, 0x8e, 0xe8, 0x8e, 0xd0, // ds es fs gs ss
        0xbc, 0x00, 0xe0, // mov sp, 0xe000
        0xea, 0x00, 0x00, 0x20, 0x90, // jmp 0x9020:0000
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, // padding to the descriptors
    ]);
    debug_assert_eq!(0x7c00 + code.len() as u32, desc0);
    for (key, len, addr) in pieces {
        // FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, the selector in the high half.
        let control = (u32::from(key) << 16) | 0x08 | 0x02;
        code.extend_from_slice(&control.to_be_bytes());
        code.extend_from_slice(&len.to_be_bytes());
        code.extend_from_slice(&u64::from(addr).to_be_bytes());
    }
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// A `newc` cpio archive being written (the initramfs format).
#[derive(Debug, Default, Clone)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

/// Mode bits of a directory (`drwxr-xr-x`).
pub const MODE_DIR: u32 = 0o040755;
/// Mode bits of an executable file.
pub const MODE_EXEC: u32 = 0o100755;
/// Mode bits of a plain file.
pub const MODE_FILE: u32 = 0o100644;

impl Cpio {
    /// An empty archive.
    pub fn new() -> Cpio {
        Cpio::default()
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0 // check
        );
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    /// Adds a directory (a path without a leading `/`).
    pub fn dir(&mut self, name: &str) -> &mut Cpio {
        self.entry(name, MODE_DIR, &[]);
        self
    }

    /// Adds a file with `mode` (e.g. [`MODE_EXEC`]).
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Cpio {
        self.entry(name, mode, data);
        self
    }

    /// Ends the archive (its trailer) and returns it.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// What goes into the guest's initramfs besides busybox and the virtio modules.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    /// The `/init` script (e.g. from [`init_script`]).
    pub init: String,
    /// Extra files: (path without a leading `/`, mode, contents). Their directories must
    /// exist or come first (`bin`, `lib`, `lib/modules` and `etc` always do).
    pub extra: Vec<(String, u32, Vec<u8>)>,
}

/// Builds the guest's initramfs from dom0's own files: `/bin/busybox` (or
/// `/usr/bin/busybox`), the [`VIRTIO_MODULES`] of the running kernel (the guest boots the
/// same kernel) as `/lib/modules/NAME.ko` (those it builds in are left out), `spec.init` as `/init`, then `spec.extra`.
pub fn dom0_initramfs(spec: &Initramfs) -> std::io::Result<Vec<u8>> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let release = release.trim();
    let busybox = std::fs::read("/bin/busybox").or_else(|_| std::fs::read("/usr/bin/busybox"))?;
    let mut c = Cpio::new();
    c.dir("bin").dir("etc").dir("lib").dir("lib/modules");
    c.file("init", MODE_EXEC, spec.init.as_bytes());
    c.file("bin/busybox", MODE_EXEC, &busybox);
    // Linux 6.1 builds the virtio core and PCI transport as modules; 6.12 builds them in
    // (named in modules.builtin) and only virtio_blk is a module.
    let builtin = std::fs::read_to_string(format!("/lib/modules/{release}/modules.builtin"))
        .unwrap_or_default();
    for (m, dir) in VIRTIO_MODULES {
        let rel = format!("kernel/drivers/{dir}/{m}.ko");
        if builtin.lines().any(|l| l == rel) {
            continue;
        }
        let path = format!("/lib/modules/{release}/{rel}");
        let data = std::fs::read(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
        c.file(&format!("lib/modules/{m}.ko"), MODE_FILE, &data);
    }
    for (name, mode, data) in &spec.extra {
        c.file(name, *mode, data);
    }
    Ok(c.finish())
}

/// An init script: busybox installs itself, mounts /proc, /sys and /dev, prints
/// [`INIT_MARKER`] with the guest's uptime, loads the virtio modules, waits (up to 10 s)
/// for `/dev/vda`, then runs `body`.
pub fn init_script(body: &str) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mkdir -p /proc /sys /dev\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n",
    );
    s += &format!("echo {INIT_MARKER} uptime $(cut -d' ' -f1 /proc/uptime)\n");
    s += "for m in";
    for (m, _) in VIRTIO_MODULES {
        s += " ";
        s += m;
    }
    // A module missing from the initramfs is built into the kernel.
    s += "; do\n    [ -f /lib/modules/$m.ko ] || continue\n";
    s += "    insmod /lib/modules/$m.ko || echo \"insmod $m failed\"\ndone\n";
    s += "i=0\nwhile [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n";
    s += body;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// [`BASE_CMDLINE`] followed by `extra` words (e.g. `pci=nomsi`).
pub fn cmdline(extra: &[&str]) -> String {
    let mut s = BASE_CMDLINE.to_owned();
    for w in extra {
        s.push(' ');
        s.push_str(w);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(setup_sects: u8, total: usize) -> Vec<u8> {
        let mut b = vec![0u8; total];
        b[0x1f1] = setup_sects;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
        b[0x260..0x264].copy_from_slice(&(16u32 << 20).to_le_bytes());
        b
    }

    #[test]
    fn splits_and_patches_the_header() {
        let bz = fake_bzimage(3, 64 * 1024);
        let b = LinuxBoot::new(&bz, vec![1; 1000], "console=ttyS0", 256 << 20).unwrap();
        assert_eq!(b.setup.len(), 4 * 512);
        assert_eq!(b.kernel.len(), 64 * 1024 - 4 * 512);
        assert_eq!(b.initrd_addr(), 0x800_0000);
        assert_eq!(b.setup[0x210], 0xff);
        assert_eq!(b.setup[0x211] & 0x80, 0x80);
        assert_eq!(le32(&b.setup, 0x218), Some(0x800_0000));
        assert_eq!(le32(&b.setup, 0x21c), Some(1000));
        assert_eq!(le32(&b.setup, 0x228), Some(CMDLINE_ADDR));
        assert_eq!(b.cmdline(), b"console=ttyS0\0");
        // setup_sects 0 means 4.
        let b = LinuxBoot::new(&fake_bzimage(0, 8192), vec![], "", 256 << 20).unwrap();
        assert_eq!(b.setup.len(), 5 * 512);
    }

    #[test]
    fn refuses_what_cannot_boot() {
        assert_eq!(
            LinuxBoot::new(&[0u8; 4096], vec![], "", 256 << 20).unwrap_err(),
            BootError::NotBzImage
        );
        assert_eq!(
            LinuxBoot::new(&fake_bzimage(4, 2560), vec![], "", 256 << 20).unwrap_err(),
            BootError::NotBzImage
        );
        let bz = fake_bzimage(4, 8192);
        assert!(matches!(
            LinuxBoot::new(&bz, vec![], &"x".repeat(CMDLINE_MAX), 256 << 20),
            Err(BootError::BadCmdline(_))
        ));
        assert!(matches!(
            LinuxBoot::new(&bz, vec![], "a\0b", 256 << 20),
            Err(BootError::BadCmdline(_))
        ));
        // 32 MiB: half of RAM is inside the kernel's decompression area.
        assert!(matches!(
            LinuxBoot::new(&bz, vec![], "", 32 << 20),
            Err(BootError::InitrdTooBig(..))
        ));
        // Too big for the upper half of 256 MiB.
        assert!(matches!(
            LinuxBoot::new(&bz, vec![0; 125 << 20], "", 256 << 20),
            Err(BootError::InitrdTooBig(..))
        ));
    }

    #[test]
    fn from_file_reads_only_the_setup() {
        let bz = fake_bzimage(4, 64 * 1024);
        let path = std::env::temp_dir().join(format!("linuxboot-{}", std::process::id()));
        std::fs::write(&path, &bz).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let a = LinuxBoot::from_file(file, vec![1; 100], "quiet", 256 << 20).unwrap();
        let b = LinuxBoot::new(&bz, vec![1; 100], "quiet", 256 << 20).unwrap();
        assert_eq!(a.setup, b.setup);
        assert_eq!(a.kernel.len(), 64 * 1024 - 5 * 512);
        assert_eq!(a.boot_sector(), b.boot_sector());
        match &a.kernel {
            Kernel::File { start, .. } => assert_eq!(*start, 5 * 512),
            Kernel::Bytes(_) => panic!("the kernel was read into memory"),
        }
        let mut fw = FwCfg::new();
        a.install(&mut fw);
        // Not a bzImage, and too short.
        let open = |name: &str, len: usize| {
            let p = std::env::temp_dir().join(format!("linuxboot-{name}-{}", std::process::id()));
            std::fs::write(&p, vec![0u8; len]).unwrap();
            let f = File::open(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            f
        };
        let (f, short) = (open("junk", 4096), open("short", 16));
        assert_eq!(
            LinuxBoot::from_file(f, vec![], "", 256 << 20).unwrap_err(),
            BootError::NotBzImage
        );
        assert_eq!(
            LinuxBoot::from_file(short, vec![], "", 256 << 20).unwrap_err(),
            BootError::NotBzImage
        );
    }

    #[test]
    fn boot_sector_holds_the_four_descriptors() {
        let bz = fake_bzimage(4, 8192);
        let b = LinuxBoot::new(&bz, vec![7; 300], "quiet", 256 << 20).unwrap();
        let s = b.boot_sector();
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        // Descriptors follow the code: 19 + 44 + 27 bytes in.
        let d = 19 + 44 + 27;
        let desc = |i: usize| {
            let r = &s[d + 16 * i..d + 16 * i + 16];
            (
                u32::from_be_bytes(r[0..4].try_into().unwrap()),
                u32::from_be_bytes(r[4..8].try_into().unwrap()),
                u64::from_be_bytes(r[8..16].try_into().unwrap()),
            )
        };
        assert_eq!(
            desc(0),
            (
                (u32::from(fw_cfg::SETUP_DATA) << 16) | 0x0a,
                5 * 512,
                u64::from(SETUP_ADDR)
            )
        );
        assert_eq!(desc(2).1, 300);
        assert_eq!(desc(2).2, 0x800_0000);
        assert_eq!(desc(3).1, 6);
        // The first descriptor's address, as the code loads it (byte-swapped).
        let a = (0x7c00u32 + d as u32).swap_bytes().to_le_bytes();
        assert_eq!(&s[21..25], &a);
        let mut fw = FwCfg::new();
        b.install(&mut fw);
    }

    #[test]
    fn cpio_is_newc() {
        let mut c = Cpio::new();
        c.dir("bin").file("init", MODE_EXEC, b"#!/bin/sh\n");
        let a = c.finish();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("bin\0"));
        assert!(text.contains("init\0"));
        assert!(text.contains("#!/bin/sh\n"));
        assert!(text.contains("TRAILER!!!\0"));
        // The first header: inode 1, a directory, name length 4.
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000041ed");
        assert_eq!(&a[94..102], b"00000004");
    }

    #[test]
    fn init_and_cmdline() {
        let s = init_script("echo hi");
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        assert!(s.contains(INIT_MARKER));
        assert!(s.contains("insmod /lib/modules/$m.ko"));
        let at = |m: &str| s.find(&format!(" {m} ")).unwrap();
        assert!(at("virtio_ring") < at("virtio") && at("virtio") < at("virtio_pci"));
        assert!(s.ends_with("echo hi\n"));
        assert_eq!(cmdline(&[]), BASE_CMDLINE);
        assert!(cmdline(&["pci=nomsi"]).ends_with(" loglevel=1 pci=nomsi"));
    }
}
