//! The firmware configuration device SeaBIOS looks for on a QEMU i440FX: items and named
//! files the firmware reads, through ports (selector 0x510, data 0x511) or by DMA (address
//! register at 0x514/0x518).
//!
//! Facts (QEMU's fw_cfg specification, docs/specs/fw_cfg.rst; SeaBIOS's src/fw/paravirt.c):
//! - the selector is a 16-bit little-endian port write; it resets the data offset; each data
//!   read returns the item's next byte, 0 past its end;
//! - item 0x00 is the signature "QEMU", item 0x01 the features (bit 0: ports, bit 1: DMA),
//!   item 0x19 the file directory: a big-endian count, then per file a big-endian `u32`
//!   size, `u16` selector, `u16` reserved and a 56-byte NUL-padded name; files take
//!   selectors from 0x20;
//! - DMA: the guest writes the big-endian guest-physical address of a 16-byte descriptor
//!   (`control`, `length`: big-endian `u32`; `address`: big-endian `u64`) to 0x514 (high
//!   half) then 0x518 (low half, which starts the transfer). `control` bits: error 0x01,
//!   read 0x02, skip 0x04, select 0x08 (selector in bits 16-31), write 0x10. The device
//!   writes `control` back as 0 when done, or with the error bit. Reading 0x514 gives the
//!   signature "QEMU CFG".
//!
//! Writes to items are not supported (a DMA write reports an error). DMA goes through the
//! [`Ctx`]'s guest-memory access, so a descriptor or buffer outside RAM is an error status
//! for the guest, never a fault of the device model.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use xen_devicemodel::server::{Access, Claim, Ctx, Device};

/// The selector port.
pub const PORT_SELECTOR: u16 = 0x510;
/// The data port.
pub const PORT_DATA: u16 = 0x511;
/// The DMA address register (high half; the low half at +4).
pub const PORT_DMA: u16 = 0x514;

/// Item: the signature.
pub const SIGNATURE: u16 = 0x00;
/// Item: the features.
pub const ID: u16 = 0x01;
/// Item: RAM size.
pub const RAM_SIZE: u16 = 0x03;
/// Item: number of CPUs.
pub const NB_CPUS: u16 = 0x05;
/// Item: the kernel's protected-mode part (after the setup sectors).
pub const KERNEL_DATA: u16 = 0x11;
/// Item: the initial ramdisk.
pub const INITRD_DATA: u16 = 0x12;
/// Item: the kernel command line (NUL-terminated).
pub const CMDLINE_DATA: u16 = 0x15;
/// Item: the kernel's real-mode setup sectors (with the boot header filled in).
pub const SETUP_DATA: u16 = 0x18;
/// Item: the file directory.
pub const FILE_DIR: u16 = 0x19;
/// First file selector.
pub const FILE_FIRST: u16 = 0x20;
/// Longest file name (with its NUL).
pub const MAX_NAME: usize = 56;

const DMA_ERROR: u32 = 0x01;
const DMA_READ: u32 = 0x02;
const DMA_SKIP: u32 = 0x04;
const DMA_SELECT: u32 = 0x08;
const DMA_WRITE: u32 = 0x10;
/// Most zero bytes one DMA read writes past its item's end.
pub const MAX_ZERO_FILL: usize = 1 << 20;
/// Bytes copied to guest memory at a time.
const CHUNK: usize = 4096;

/// An item's content: bytes held, or a range of a file read on demand.
#[derive(Debug)]
enum Item {
    Bytes(Vec<u8>),
    File {
        file: Arc<File>,
        start: u64,
        len: usize,
    },
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Bytes(v) => v.len(),
            Item::File { len, .. } => *len,
        }
    }

    /// Copies the bytes from `off` into `buf` (at most to the item's end); returns how
    /// many. A file that ends early gives fewer; a read error is `Err`.
    fn copy_out(&self, off: usize, buf: &mut [u8]) -> Result<usize, ()> {
        let k = self.len().saturating_sub(off).min(buf.len());
        if k == 0 {
            return Ok(0);
        }
        match self {
            Item::Bytes(v) => {
                buf[..k].copy_from_slice(&v[off..off + k]);
                Ok(k)
            }
            Item::File { file, start, .. } => {
                let mut done = 0;
                while done < k {
                    let at = start + (off + done) as u64;
                    match file.read_at(&mut buf[done..k], at) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return Err(()),
                    }
                }
                Ok(done)
            }
        }
    }
}

/// The device: its items, the selected one and the offset in it.
#[derive(Debug, Default)]
pub struct FwCfg {
    items: BTreeMap<u16, Item>,
    files: Vec<(String, u16, u32)>,
    sel: u16,
    off: usize,
    dma_high: u32,
    /// DMA transfers that ended with the error bit.
    pub dma_errors: u64,
}

impl FwCfg {
    /// A device with the signature, the features (ports and DMA) and an empty directory.
    pub fn new() -> FwCfg {
        let mut f = FwCfg::default();
        f.set_item(SIGNATURE, b"QEMU".to_vec());
        f.set_item(ID, 3u32.to_le_bytes().to_vec());
        f.set_item(FILE_DIR, 0u32.to_be_bytes().to_vec());
        f
    }

    /// Its claim: 0x510-0x51b.
    pub fn claims(&self) -> [Claim; 1] {
        [Claim::Ports(PORT_SELECTOR..=PORT_DMA + 7)]
    }

    /// Sets item `key` (e.g. [`RAM_SIZE`], little-endian as the firmware reads numbers).
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, Item::Bytes(data));
    }

    /// Sets item `key` to `len` bytes of `file` from `start`, read when the guest reads
    /// them (a bounded `pread` per DMA chunk, one byte per port read), never held in
    /// memory. If the file ends early the guest gets zeros; a read error fails its DMA.
    pub fn set_file_item(&mut self, key: u16, file: Arc<File>, start: u64, len: usize) {
        self.items.insert(key, Item::File { file, start, len });
    }

    /// Adds file `name` (at most 55 bytes) with `data`; returns its selector, or `None` if
    /// the name is too long or it exists.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Option<u16> {
        if name.len() >= MAX_NAME || self.files.iter().any(|(n, _, _)| n == name) {
            return None;
        }
        let key = FILE_FIRST.checked_add(u16::try_from(self.files.len()).ok()?)?;
        let size = u32::try_from(data.len()).ok()?;
        self.items.insert(key, Item::Bytes(data));
        self.files.push((name.to_owned(), key, size));
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (n, k, s) in &self.files {
            dir.extend_from_slice(&s.to_be_bytes());
            dir.extend_from_slice(&k.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut name = [0u8; MAX_NAME];
            name[..n.len()].copy_from_slice(n.as_bytes());
            dir.extend_from_slice(&name);
        }
        self.items.insert(FILE_DIR, Item::Bytes(dir));
        Some(key)
    }

    fn select(&mut self, key: u16) {
        self.sel = key;
        self.off = 0;
    }

    fn item(&self) -> Option<&Item> {
        // Bit 14 (write channel) and bit 15 (architecture-local) are part of the key.
        self.items.get(&self.sel)
    }

    fn item_len(&self) -> usize {
        self.item().map_or(0, Item::len)
    }

    fn read_byte(&mut self) -> u8 {
        let mut b = [0u8];
        if let Some(i) = self.item() {
            // A read error reads as 0, as past the end.
            let _ = i.copy_out(self.off, &mut b);
        }
        self.off = self.off.saturating_add(1);
        b[0]
    }

    /// Runs the DMA descriptor at `desc`; returns the control word to write back.
    fn dma(&mut self, ctx: &mut Ctx<'_>, desc: u64) -> Result<(), ()> {
        let mut d = [0u8; 16];
        ctx.read_guest(desc, &mut d).map_err(drop)?;
        let control = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let len = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) as usize;
        let mut addr = u64::from_be_bytes([d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]]);
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        if control & DMA_WRITE != 0 {
            return Err(());
        }
        if control & DMA_READ != 0 {
            // Past the item's end the guest gets zeros, as much as it asked, but at most
            // MAX_ZERO_FILL of them: one request's work stays bounded.
            let remaining = self.item_len().saturating_sub(self.off);
            if len > remaining.saturating_add(MAX_ZERO_FILL) {
                return Err(());
            }
            let mut left = len;
            let mut buf = [0u8; CHUNK];
            while left > 0 {
                let n = left.min(CHUNK);
                let k = match self.item() {
                    Some(i) => i.copy_out(self.off, &mut buf[..n])?,
                    None => 0,
                };
                buf[k..n].fill(0);
                ctx.write_guest(addr, &buf[..n]).map_err(drop)?;
                self.off = self.off.saturating_add(n);
                addr = addr.checked_add(n as u64).ok_or(())?;
                left -= n;
            }
        } else if control & DMA_SKIP != 0 {
            self.off = self.off.saturating_add(len);
        }
        Ok(())
    }
}

impl Device for FwCfg {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        match access {
            Access::PortWrite { port, value, .. } if port == PORT_SELECTOR => {
                self.select(value as u16);
                0
            }
            Access::PortRead { port, size } if port == PORT_DATA => {
                let mut v = 0u64;
                for i in 0..u32::from(size.min(4)) {
                    v |= u64::from(self.read_byte()) << (8 * i);
                }
                v
            }
            Access::PortWrite { port, value, .. } if port == PORT_DMA => {
                self.dma_high = value.swap_bytes();
                0
            }
            Access::PortWrite { port, value, .. } if port == PORT_DMA + 4 => {
                let desc = (u64::from(self.dma_high) << 32) | u64::from(value.swap_bytes());
                self.dma_high = 0;
                let status = match self.dma(ctx, desc) {
                    Ok(()) => 0u32,
                    Err(()) => {
                        self.dma_errors += 1;
                        DMA_ERROR
                    }
                };
                // The guest polls `control`; if even that is not RAM, there is no one to tell.
                let _ = ctx.write_guest(desc, &status.to_be_bytes());
                0
            }
            Access::PortRead { port, size } if port == PORT_DMA || port == PORT_DMA + 4 => {
                let sig = u64::from_be_bytes(*b"QEMU CFG");
                let half = if port == PORT_DMA { sig >> 32 } else { sig };
                // The register is big-endian: the port's bytes in memory order.
                u64::from((half as u32).swap_bytes()) & if size >= 4 { u64::MAX } else { 0xffff }
            }
            Access::PortRead { .. } => 0,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_devicemodel::server::Harness;
    use xen_devicemodel::DomId;

    fn out(h: &mut Harness, f: &mut FwCfg, port: u16, size: u8, value: u32) {
        h.access(f, Access::PortWrite { port, size, value });
    }

    fn read_item(h: &mut Harness, f: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
        out(h, f, PORT_SELECTOR, 2, key.into());
        (0..n)
            .map(|_| {
                h.access(
                    f,
                    Access::PortRead {
                        port: PORT_DATA,
                        size: 1,
                    },
                ) as u8
            })
            .collect()
    }

    #[test]
    fn signature_features_and_directory_through_the_ports() {
        let mut f = FwCfg::new();
        let mut h = Harness::new(DomId::new(1), 0, 0, f.claims());
        assert_eq!(read_item(&mut h, &mut f, SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut h, &mut f, ID, 4), [3, 0, 0, 0]);
        let k = f.add_file("etc/boot-fail-wait", vec![1, 2, 3]).unwrap();
        assert_eq!(k, FILE_FIRST);
        assert_eq!(f.add_file("etc/boot-fail-wait", vec![]), None);
        assert_eq!(f.add_file(&"x".repeat(56), vec![]), None);
        let dir = read_item(&mut h, &mut f, FILE_DIR, 4 + 64);
        assert_eq!(&dir[..4], &[0, 0, 0, 1]);
        assert_eq!(&dir[4..8], &[0, 0, 0, 3]);
        assert_eq!(&dir[8..10], &[0, 0x20]);
        assert_eq!(&dir[12..30], b"etc/boot-fail-wait");
        assert_eq!(dir[30], 0);
        // Past the end: zeros; an unknown item: zeros.
        assert_eq!(read_item(&mut h, &mut f, k, 5), [1, 2, 3, 0, 0]);
        assert_eq!(read_item(&mut h, &mut f, 0x1234, 2), [0, 0]);
        // The DMA signature.
        let hi = h.access(
            &mut f,
            Access::PortRead {
                port: PORT_DMA,
                size: 4,
            },
        ) as u32;
        let lo = h.access(
            &mut f,
            Access::PortRead {
                port: PORT_DMA + 4,
                size: 4,
            },
        ) as u32;
        assert_eq!([hi.to_le_bytes(), lo.to_le_bytes()].concat(), b"QEMU CFG");
    }

    fn dma(h: &mut Harness, f: &mut FwCfg, desc: u64, control: u32, len: u32, addr: u64) {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&addr.to_be_bytes());
        let o = desc as usize;
        h.ram()[o..o + 16].copy_from_slice(&d);
        out(h, f, PORT_DMA, 4, ((desc >> 32) as u32).swap_bytes());
        out(h, f, PORT_DMA + 4, 4, (desc as u32).swap_bytes());
    }

    fn control(h: &mut Harness, desc: usize) -> u32 {
        let r = h.ram();
        u32::from_be_bytes([r[desc], r[desc + 1], r[desc + 2], r[desc + 3]])
    }

    #[test]
    fn dma_select_read_and_skip() {
        let mut f = FwCfg::new();
        let data: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8).collect();
        let k = f.add_file("opt/blob", data.clone()).unwrap();
        let mut h = Harness::new(DomId::new(1), 0, 0x10000, f.claims());
        // Select + read 6000 bytes to 0x2000 (across frames).
        dma(
            &mut h,
            &mut f,
            0x100,
            (u32::from(k) << 16) | DMA_SELECT | DMA_READ,
            6000,
            0x2000,
        );
        assert_eq!(control(&mut h, 0x100), 0);
        assert_eq!(&h.ram()[0x2000..0x2000 + 6000], &data[..6000]);
        // Skip 1000, read the rest and 100 bytes past the end (zeros).
        dma(&mut h, &mut f, 0x100, DMA_SKIP, 1000, 0);
        dma(&mut h, &mut f, 0x100, DMA_READ, 3100, 0x8000);
        assert_eq!(&h.ram()[0x8000..0x8000 + 3000], &data[7000..]);
        assert!(h.ram()[0x8000 + 3000..0x8000 + 3100]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(f.dma_errors, 0);
    }

    #[test]
    fn file_items_are_read_on_demand() {
        let path = std::env::temp_dir().join(format!("fw_cfg-item-{}", std::process::id()));
        let data: Vec<u8> = (0..12_000).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        let mut f = FwCfg::new();
        // 10000 bytes from 1000; the second item claims 500 bytes past the file's end.
        f.set_file_item(KERNEL_DATA, file.clone(), 1000, 10_000);
        f.set_file_item(INITRD_DATA, file, 11_000, 1500);
        let mut h = Harness::new(DomId::new(1), 0, 0x10000, f.claims());
        let ctl = (u32::from(KERNEL_DATA) << 16) | DMA_SELECT | DMA_READ;
        dma(&mut h, &mut f, 0x100, ctl, 6000, 0x2000);
        assert_eq!(control(&mut h, 0x100), 0);
        assert_eq!(&h.ram()[0x2000..0x2000 + 6000], &data[1000..7000]);
        // The rest and 100 bytes past the item's end (zeros, not the file's next bytes).
        dma(&mut h, &mut f, 0x100, DMA_READ, 4100, 0x8000);
        assert_eq!(&h.ram()[0x8000..0x8000 + 4000], &data[7000..11_000]);
        assert!(h.ram()[0x8000 + 4000..0x8000 + 4100]
            .iter()
            .all(|&b| b == 0));
        // Past the file's end: zeros.
        let ctl = (u32::from(INITRD_DATA) << 16) | DMA_SELECT | DMA_READ;
        dma(&mut h, &mut f, 0x100, ctl, 1500, 0xa000);
        assert_eq!(&h.ram()[0xa000..0xa000 + 1000], &data[11_000..]);
        assert!(h.ram()[0xa000 + 1000..0xa000 + 1500]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(f.dma_errors, 0);
        // Through the data port.
        assert_eq!(read_item(&mut h, &mut f, KERNEL_DATA, 5), &data[1000..1005]);
    }

    #[test]
    fn dma_outside_ram_or_writes_report_an_error() {
        let mut f = FwCfg::new();
        let mut h = Harness::new(DomId::new(1), 0, 0x10000, f.claims());
        dma(
            &mut h,
            &mut f,
            0x100,
            (u32::from(SIGNATURE) << 16) | DMA_SELECT | DMA_READ,
            4,
            0x20_0000,
        );
        assert_eq!(control(&mut h, 0x100), DMA_ERROR);
        dma(&mut h, &mut f, 0x100, DMA_WRITE, 4, 0x2000);
        assert_eq!(control(&mut h, 0x100), DMA_ERROR);
        // A huge length: refused before any byte is written.
        dma(&mut h, &mut f, 0x100, DMA_READ, u32::MAX, 0x8000);
        assert_eq!(control(&mut h, 0x100), DMA_ERROR);
        assert!(h.ram()[0x8000..].iter().all(|&b| b == 0));
        // A length that runs out of RAM: an error after what fit, never a fault.
        dma(&mut h, &mut f, 0x100, DMA_READ, 0x2000, 0xf000);
        assert_eq!(control(&mut h, 0x100), DMA_ERROR);
        // A descriptor outside RAM: nothing to tell, nothing written.
        out(&mut h, &mut f, PORT_DMA, 4, 0);
        out(
            &mut h,
            &mut f,
            PORT_DMA + 4,
            4,
            0x0000_0100u32.swap_bytes() | 0x1,
        );
        assert_eq!(f.dma_errors, 5);
    }
}
