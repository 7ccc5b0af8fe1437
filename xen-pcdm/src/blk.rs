//! virtio-blk requests: the disk behind the device ([`Disk`]) and the processing of one
//! virtqueue's available chains against guest memory.
//!
//! Facts from the virtio 1.1 specification, section 5.2: a request is a chain whose
//! device-readable part starts with a 16-byte header (`type: le32`, `reserved: le32`,
//! `sector: le64`), then data (`OUT`: to the disk); the device-writable part holds data
//! (`IN`: from the disk) and ends with one status byte (`OK` 0, `IOERR` 1, `UNSUPP` 2).
//! Sectors are 512 bytes whatever the block size.
//!
//! Every chain is walked twice without allocation: once to size and check it (each
//! descriptor inside guest RAM, the chain properly ended, a status byte present), then to
//! move the data through a bounce buffer the device owns. A request beyond the disk gets
//! `IOERR`; a chain that cannot be a request (a loop, a bad index, memory outside RAM, no
//! status byte) makes the queue broken: the caller marks the device `DEVICE_NEEDS_RESET`.

use std::io;
use std::os::unix::fs::FileExt;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Sector size of the virtio-blk protocol.
pub const SECTOR: u64 = 512;
/// `VIRTIO_BLK_T_IN`: read from the disk.
pub const T_IN: u32 = 0;
/// `VIRTIO_BLK_T_OUT`: write to the disk.
pub const T_OUT: u32 = 1;
/// `VIRTIO_BLK_T_FLUSH`.
pub const T_FLUSH: u32 = 4;
/// `VIRTIO_BLK_T_GET_ID`: a 20-byte identifier.
pub const T_GET_ID: u32 = 8;
/// Status `VIRTIO_BLK_S_OK`.
pub const S_OK: u8 = 0;
/// Status `VIRTIO_BLK_S_IOERR`.
pub const S_IOERR: u8 = 1;
/// Status `VIRTIO_BLK_S_UNSUPP`.
pub const S_UNSUPP: u8 = 2;
/// Bytes moved between the disk and guest memory at a time: a Linux guest's largest
/// request (1 MiB) is one `pread` and one copy into its buffers.
pub const BOUNCE: usize = 1024 * 1024;

/// The storage behind a virtio-blk device.
pub trait Disk: Send {
    /// Its size in bytes (a multiple of [`SECTOR`] is expected; a partial last sector is
    /// not served).
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset` (inside `0..len()`, checked by the caller).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset` (inside `0..len()`, checked by the caller).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the writes so far durable.
    fn flush(&mut self) -> io::Result<()>;
}

/// A raw image file.
#[derive(Debug)]
pub struct FileDisk {
    file: std::fs::File,
    len: u64,
}

impl FileDisk {
    /// Opens `path` read-write as a raw image.
    pub fn open(path: &std::path::Path) -> io::Result<FileDisk> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(FileDisk { file, len })
    }
}

impl Disk for FileDisk {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A disk in memory (tests, scratch disks).
#[derive(Debug, Clone, Default)]
pub struct MemDisk(pub Vec<u8>);

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let o = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let src = self
            .0
            .get(o..o + buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let o = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let dst = self
            .0
            .get_mut(o..o + data.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a queue cannot be served any more (the device then needs a reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The available ring's index is more than the queue size ahead.
    AvailIndex,
    /// A chain loops, or names a descriptor beyond the table.
    Chain,
    /// A descriptor's buffer is not guest RAM.
    Memory,
    /// A chain has no room for the status byte, or its header is short.
    Layout,
    /// The used ring could not be written.
    Used,
    /// The driver chose a queue size that is not a power of two (or 0, or above the
    /// maximum).
    QueueSize,
}

/// Requests served, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// `IN` requests completed `OK`.
    pub reads: u64,
    /// `OUT` requests completed `OK`.
    pub writes: u64,
    /// Flushes and identifier requests.
    pub other: u64,
    /// Requests answered `IOERR` or `UNSUPP`.
    pub errors: u64,
    /// Bytes read from the disk.
    pub bytes_read: u64,
    /// Bytes written to the disk.
    pub bytes_written: u64,
    /// Queue notifications from the driver.
    pub notifies: u64,
    /// Interrupts sent as MSI-X messages.
    pub msi: u64,
    /// Interrupts raised on INTA#.
    pub intx: u64,
}

/// The sizes of a checked chain.
struct Shape {
    readable: u64,
    writable: u64,
}

/// Walks `chain` once: every descriptor inside guest RAM, the chain ended by a descriptor
/// without `NEXT` (not cut short by a loop or a bad index), readable ones before writable.
fn check<M: GuestMemory>(chain: &DescriptorChain<&M>, mem: &M) -> Result<Shape, Broken> {
    let mut s = Shape {
        readable: 0,
        writable: 0,
    };
    let mut last: Option<Descriptor> = None;
    for d in chain.clone() {
        if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize, Permissions::Read) {
            return Err(Broken::Memory);
        }
        if d.is_write_only() {
            s.writable += u64::from(d.len());
        } else if s.writable > 0 {
            return Err(Broken::Layout);
        } else {
            s.readable += u64::from(d.len());
        }
        last = Some(d);
    }
    match last {
        Some(d) if !d.has_next() => Ok(s),
        _ => Err(Broken::Chain),
    }
}

/// A cursor over one direction of a chain's buffers.
struct Cursor<'m, M> {
    mem: &'m M,
    chain: DescriptorChain<&'m M>,
    writable: bool,
    cur: Option<(GuestAddress, u32)>,
}

impl<'m, M: GuestMemory> Cursor<'m, M> {
    fn new(mem: &'m M, chain: DescriptorChain<&'m M>, writable: bool) -> Self {
        Cursor {
            mem,
            chain,
            writable,
            cur: None,
        }
    }

    /// The next piece of at most `max` bytes: its address and length (0 at the end).
    fn next(&mut self, max: usize) -> (GuestAddress, usize) {
        loop {
            if let Some((a, left)) = self.cur {
                if left > 0 {
                    let n = (left as usize).min(max);
                    let rest = left - n as u32;
                    self.cur = Some((a.unchecked_add(n as u64), rest));
                    return (a, n);
                }
            }
            match self.chain.next() {
                Some(d) if d.is_write_only() == self.writable => {
                    self.cur = Some((d.addr(), d.len()));
                }
                Some(_) => {}
                None => return (GuestAddress(0), 0),
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), Broken> {
        let mut done = 0;
        while done < buf.len() {
            let (a, n) = self.next(buf.len() - done);
            if n == 0 {
                return Err(Broken::Layout);
            }
            self.mem
                .read_slice(&mut buf[done..done + n], a)
                .map_err(|_| Broken::Memory)?;
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Broken> {
        let mut done = 0;
        while done < data.len() {
            let (a, n) = self.next(data.len() - done);
            if n == 0 {
                return Err(Broken::Layout);
            }
            self.mem
                .write_slice(&data[done..done + n], a)
                .map_err(|_| Broken::Memory)?;
            done += n;
        }
        Ok(())
    }
}

/// Serves one chain; returns the bytes written into the guest's buffers.
fn serve_chain<M: GuestMemory, D: Disk + ?Sized>(
    chain: DescriptorChain<&M>,
    mem: &M,
    disk: &mut D,
    bounce: &mut [u8],
    id: &[u8; 20],
    stats: &mut BlkStats,
) -> Result<u32, Broken> {
    let shape = check(&chain, mem)?;
    if shape.readable < 16 || shape.writable < 1 {
        return Err(Broken::Layout);
    }
    let mut rd = Cursor::new(mem, chain.clone(), false);
    let mut wr = Cursor::new(mem, chain, true);
    let mut hdr = [0u8; 16];
    rd.read(&mut hdr)?;
    let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    let out_len = shape.readable - 16;
    let in_len = shape.writable - 1;
    let capacity = disk.size() / SECTOR * SECTOR;
    // The byte range a data request covers, if it lies inside the disk.
    let range = |len: u64| {
        let start = sector.checked_mul(SECTOR)?;
        let end = start.checked_add(len)?;
        (end <= capacity).then_some(start)
    };
    let mut written = 0u64;
    let status = match kind {
        T_IN => match range(in_len) {
            Some(mut off) => {
                let mut left = in_len;
                let mut st = S_OK;
                while left > 0 {
                    let n = (left as usize).min(bounce.len());
                    if disk.read_at(off, &mut bounce[..n]).is_err() {
                        st = S_IOERR;
                        break;
                    }
                    wr.write(&bounce[..n])?;
                    off += n as u64;
                    left -= n as u64;
                    written += n as u64;
                }
                if st == S_OK {
                    stats.reads += 1;
                    stats.bytes_read += in_len;
                } else {
                    skip(&mut wr, in_len - written)?;
                }
                st
            }
            None => {
                skip(&mut wr, in_len)?;
                S_IOERR
            }
        },
        T_OUT => match range(out_len) {
            Some(mut off) => {
                let mut left = out_len;
                let mut st = S_OK;
                while left > 0 {
                    let n = (left as usize).min(bounce.len());
                    rd.read(&mut bounce[..n])?;
                    if disk.write_at(off, &bounce[..n]).is_err() {
                        st = S_IOERR;
                        break;
                    }
                    off += n as u64;
                    left -= n as u64;
                }
                skip(&mut wr, in_len)?;
                if st == S_OK {
                    stats.writes += 1;
                    stats.bytes_written += out_len;
                }
                st
            }
            None => {
                skip(&mut wr, in_len)?;
                S_IOERR
            }
        },
        T_FLUSH => {
            skip(&mut wr, in_len)?;
            stats.other += 1;
            if disk.flush().is_ok() {
                S_OK
            } else {
                S_IOERR
            }
        }
        T_GET_ID => {
            let n = (in_len as usize).min(id.len());
            wr.write(&id[..n])?;
            written = n as u64;
            skip(&mut wr, in_len - n as u64)?;
            stats.other += 1;
            S_OK
        }
        _ => {
            skip(&mut wr, in_len)?;
            S_UNSUPP
        }
    };
    if status != S_OK {
        stats.errors += 1;
    }
    wr.write(&[status])?;
    Ok(u32::try_from(written + 1).unwrap_or(u32::MAX))
}

/// Moves a cursor `n` bytes on without touching memory.
fn skip<M: GuestMemory>(c: &mut Cursor<'_, M>, mut n: u64) -> Result<(), Broken> {
    while n > 0 {
        let (_, k) = c.next(usize::try_from(n).unwrap_or(usize::MAX));
        if k == 0 {
            return Err(Broken::Layout);
        }
        n -= k as u64;
    }
    Ok(())
}

/// Serves every chain the driver made available on `queue`, at most one queue's worth per
/// call; returns whether the driver should be interrupted (something was used).
pub fn process_queue<M: GuestMemory, D: Disk + ?Sized>(
    queue: &mut Queue,
    mem: &M,
    disk: &mut D,
    bounce: &mut [u8],
    id: &[u8; 20],
    stats: &mut BlkStats,
) -> Result<bool, Broken> {
    let mut used = false;
    for _ in 0..queue.size() {
        let chain = match queue.iter(mem) {
            Ok(mut it) => it.next(),
            Err(_) => return Err(Broken::AvailIndex),
        };
        let Some(chain) = chain else {
            break;
        };
        let head = chain.head_index();
        let len = serve_chain(chain, mem, disk, bounce, id, stats)?;
        queue.add_used(mem, head, len).map_err(|_| Broken::Used)?;
        used = true;
    }
    Ok(used)
}

/// Whether `q`'s rings lie in guest memory (checked when the driver enables it).
pub fn queue_is_valid<M: GuestMemory>(q: &Queue, mem: &M) -> bool {
    q.is_valid(mem)
}

/// The guest-physical address as a `u64` (for messages).
pub fn raw(a: GuestAddress) -> u64 {
    a.raw_value()
}
