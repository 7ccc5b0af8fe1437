//! The tiny test guest, driven through its mailbox (see [`crate::protocol`]).

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::guest::{Guest, GuestConfig, GuestType};
use crate::privcmd::ForeignMapping;
use crate::protocol::{self as p, offsets};
use crate::{xl, Error, Result};

/// Default deadline for one command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for the guest's boot report after unpause.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command may go unanswered before the test sends the vCPU a wake-up call
/// ([`p::NUDGE_VECTOR`]), and the interval between further ones. The guest answers within a
/// tick or two when it runs; in the Xen machine a vCPU sleeping in `hlt` was seen, rarely,
/// to never be woken again (its tick stopped: `ticks` frozen in the header). The wake-up
/// call is logged, so such a stall shows in the run's output instead of failing the test.
pub const NUDGE_AFTER: Duration = Duration::from_secs(1);

const DOMID_SELF: u16 = 0x7ff0;
const HYPERVISOR_MEMORY_OP: u64 = 12;
const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
const HYPERVISOR_HVM_OP: u64 = 34;
const EVTCHNOP_SEND: u64 = 4;
const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
const HVMOP_SET_PARAM: u64 = 0;
const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// Guest-physical base of the (HVM) IOAPIC.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;

/// What the guest answered to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// `STATUS_*` ([`p::STATUS_OK`] when the command ran).
    pub status: u32,
    /// First result.
    pub result: u64,
    /// Second result.
    pub result2: u64,
}

/// `SCHEDOP_shutdown` reasons for [`TestGuest::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`.
    Poweroff = 0,
    /// `SHUTDOWN_reboot`.
    Reboot = 1,
    /// `SHUTDOWN_suspend`.
    Suspend = 2,
    /// `SHUTDOWN_crash`.
    Crash = 3,
}

/// What a silent vCPU's slot showed: (at the command, now) of its tick and poll counters, and
/// the last `seq` it read.
#[derive(Debug, Clone, Copy)]
struct Progress {
    ticks: (u32, u32),
    polls: (u32, u32),
    seen: u32,
}

/// A running test guest (HVM or PVH) with its mailbox mapped; destroyed on drop.
#[derive(Debug)]
pub struct TestGuest {
    // Field order matters: the mapping goes before the domain is destroyed.
    mailbox: ForeignMapping,
    slots: [Mutex<()>; p::MAX_VCPUS],
    timeout: Duration,
    boot_time: Duration,
    /// Opened on the first wake-up call.
    dm: Mutex<Option<xen_devicemodel::DeviceModel>>,
    nudges: AtomicU32,
    guest: Guest,
}

impl TestGuest {
    /// Creates an HVM test guest (firmware_override + fake device model), starts it and waits for
    /// its boot report.
    pub fn hvm() -> Result<TestGuest> {
        TestGuest::start(GuestConfig::hvm())
    }

    /// Creates a PVH test guest, starts it and waits for its boot report.
    pub fn pvh() -> Result<TestGuest> {
        TestGuest::start(GuestConfig::pvh())
    }

    /// Creates a test guest from `config` (which must run the test guest image: made from
    /// [`GuestConfig::hvm`] or [`GuestConfig::pvh`]), maps its mailbox, unpauses it and waits for
    /// its boot report.
    pub fn start(config: GuestConfig) -> Result<TestGuest> {
        if config.kind() == GuestType::Pv {
            return Err(Error::Invalid(
                "the test guest runs as HVM or PVH, not PV".into(),
            ));
        }
        let vcpus = config.vcpu_count().min(p::MAX_VCPUS as u32);
        let guest = Guest::create(&config.paused(true))?;
        let gfns: Vec<u64> = (0..p::MAILBOX_PAGES as u64)
            .map(|i| p::MAILBOX_GFN + i)
            .collect();
        let mailbox = ForeignMapping::map(guest.domid(), &gfns)?;
        let mut tg = TestGuest {
            mailbox,
            slots: Default::default(),
            timeout: COMMAND_TIMEOUT,
            boot_time: Duration::ZERO,
            dm: Mutex::new(None),
            nudges: AtomicU32::new(0),
            guest,
        };
        let t0 = Instant::now();
        tg.guest.unpause()?;
        let h = tg.wait_ready(BOOT_TIMEOUT)?;
        if h.vcpus_online < vcpus {
            return Err(Error::Guest(format!(
                "{} of {vcpus} vCPUs came up",
                h.vcpus_online
            )));
        }
        tg.boot_time = t0.elapsed();
        Ok(tg)
    }

    /// Unmaps the mailbox and returns the domain. (A domain whose pages dom0 still maps cannot
    /// finish dying: drop the mapping before waiting for a shut-down guest to disappear.)
    pub fn into_guest(self) -> Guest {
        let TestGuest { mailbox, guest, .. } = self;
        drop(mailbox);
        guest
    }

    /// Keeps this guest for the rest of the process and destroys it when the process exits;
    /// for one test guest shared by all the tests of an executable, e.g.
    /// `static G: OnceLock<&'static TestGuest>` (a static's value is never dropped, so a guest
    /// stored in one directly would be left running after the tests).
    pub fn shared(self) -> &'static TestGuest {
        crate::guest::destroy_at_exit(self.domid());
        Box::leak(Box::new(self))
    }

    /// The guest domain.
    pub fn guest(&self) -> &Guest {
        &self.guest
    }

    /// Its domain id.
    pub fn domid(&self) -> u16 {
        self.guest.domid()
    }

    /// Time from unpause to the guest's boot report.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Sets the deadline for each later command.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The mapped mailbox (control page, then one data page per vCPU).
    pub fn mailbox(&self) -> &ForeignMapping {
        &self.mailbox
    }

    /// A snapshot of the mailbox header.
    pub fn header(&self) -> p::Header {
        let m = &self.mailbox;
        p::Header {
            magic: m.read_u32(offsets::MAGIC),
            version: m.read_u32(offsets::VERSION),
            state: m.read_u32(offsets::STATE),
            boot_kind: m.read_u32(offsets::BOOT_KIND),
            xen_version: m.read_u32(offsets::XEN_VERSION),
            vcpus_online: m.read_u32(offsets::VCPUS_ONLINE),
            flags: m.read_u32(offsets::FLAGS),
            ticks: m.read_u32(offsets::TICKS),
            exc_vector: m.read_u64(32),
            exc_error: m.read_u64(40),
            exc_rip: m.read_u64(48),
            exc_cr2: m.read_u64(56),
            start_info: m.read_u64(64),
        }
    }

    /// Sets the header's `FLAG_*` bits (e.g. [`p::FLAG_QUIET`]).
    pub fn set_flags(&self, flags: u32) {
        self.mailbox.write_u32(offsets::FLAGS, flags);
    }

    /// How many times the guest has taken interrupt/exception `vector`.
    pub fn vector_count(&self, vector: u8) -> u32 {
        self.mailbox
            .read_u32(p::VECTOR_COUNTS_OFFSET + 4 * vector as usize)
    }

    /// Timer ticks vCPU `vcpu` has taken since it started polling its slot (0 for a vCPU
    /// beyond [`p::MAX_VCPUS`]).
    pub fn vcpu_ticks(&self, vcpu: usize) -> u32 {
        if vcpu >= p::MAX_VCPUS {
            return 0;
        }
        self.mailbox
            .read_u32(p::slot_offset(vcpu) + offsets::SLOT_TICKS)
    }

    /// The hypervisor console lines this guest printed (port 0xe9), from `xl dmesg`.
    pub fn console_lines(&self) -> Result<Vec<String>> {
        let tag = format!("(d{})", self.domid());
        Ok(xl::dmesg()?
            .lines()
            .filter_map(|l| l.find(&tag).map(|i| l[i + tag.len()..].trim().to_string()))
            .collect())
    }

    fn stopped_error(&self, h: &p::Header) -> Option<Error> {
        match h.state {
            p::STATE_CRASHED => Some(Error::Guest(format!(
                "crashed: exception vector {} error {:#x} at rip {:#x} (cr2 {:#x})",
                h.exc_vector, h.exc_error, h.exc_rip, h.exc_cr2
            ))),
            p::STATE_HALTED => Some(Error::Guest("halted".into())),
            _ => None,
        }
    }

    /// Waits for the guest's boot report (magic and state READY).
    pub fn wait_ready(&self, timeout: Duration) -> Result<p::Header> {
        let t0 = Instant::now();
        loop {
            let h = self.header();
            if h.magic == p::MAGIC {
                if h.version != p::VERSION {
                    return Err(Error::Guest(format!(
                        "protocol version {} (expected {})",
                        h.version,
                        p::VERSION
                    )));
                }
                if let Some(e) = self.stopped_error(&h) {
                    return Err(e);
                }
                if h.state == p::STATE_READY {
                    return Ok(h);
                }
            }
            if t0.elapsed() > timeout {
                let console = self.console_lines().unwrap_or_default().join("\n");
                let state = self
                    .guest
                    .list_entry()
                    .ok()
                    .flatten()
                    .map(|e| e.state)
                    .unwrap_or_default();
                return Err(Error::Timeout(
                    timeout,
                    format!(
                        "no boot report from test guest d{} (xl state {state:?}, header {h:?}); its console:\n{console}",
                        self.domid()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs one raw command on vCPU `vcpu`'s slot and waits for its reply.
    pub fn command_on(&self, vcpu: usize, op: u32, args: [u64; 6]) -> Result<Reply> {
        if vcpu >= p::MAX_VCPUS {
            return Err(Error::Invalid(format!("vcpu {vcpu} >= {}", p::MAX_VCPUS)));
        }
        let _slot = self.slots[vcpu].lock().unwrap_or_else(|e| e.into_inner());
        let m = &self.mailbox;
        let base = p::slot_offset(vcpu);
        let mut seq = m.read_u32(base + offsets::SLOT_SEQ).wrapping_add(1);
        if seq == 0 {
            seq = 1;
        }
        m.write_u32(base + offsets::SLOT_OP, op);
        for (i, a) in args.iter().enumerate() {
            m.write_u64(base + offsets::SLOT_ARGS + 8 * i, *a);
        }
        fence(Ordering::SeqCst);
        m.write_u32(base + offsets::SLOT_SEQ, seq);
        let t0 = Instant::now();
        let ticks_at = base + offsets::SLOT_TICKS;
        let ticks0 = m.read_u32(ticks_at);
        let polls0 = m.read_u32(base + offsets::SLOT_POLLS);
        let mut spins = 0u32;
        let mut nudged = 0u32;
        let mut next_nudge = NUDGE_AFTER;
        loop {
            if m.read_u32(base + offsets::SLOT_ACK) == seq {
                fence(Ordering::Acquire);
                if nudged > 0 {
                    crate::log(format_args!(
                        "test guest d{} vcpu {vcpu} answered op {op} seq {seq} after {nudged} wake-up call(s), {} ms",
                        self.domid(),
                        t0.elapsed().as_millis()
                    ));
                }
                return Ok(Reply {
                    status: m.read_u32(base + offsets::SLOT_STATUS),
                    result: m.read_u64(base + offsets::SLOT_RESULT),
                    result2: m.read_u64(base + offsets::SLOT_RESULT2),
                });
            }
            let h = self.header();
            if let Some(e) = self.stopped_error(&h) {
                return Err(e);
            }
            let waited = t0.elapsed();
            if waited > self.timeout {
                return Err(Error::Timeout(
                    self.timeout,
                    format!("test guest d{} did not answer command op {op} seq {seq} on vcpu {vcpu} after {nudged} wake-up call(s) (header {h:?})", self.domid()),
                ));
            }
            if waited > next_nudge {
                next_nudge = waited + NUDGE_AFTER;
                nudged += 1;
                let now = Progress {
                    ticks: (ticks0, m.read_u32(ticks_at)),
                    polls: (polls0, m.read_u32(base + offsets::SLOT_POLLS)),
                    seen: m.read_u32(base + offsets::SLOT_SEEN),
                };
                self.nudge(vcpu, op, seq, waited, now);
            }
            spins += 1;
            if spins < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Sends vCPU `vcpu` the wake-up call ([`p::NUDGE_VECTOR`]) and logs why.
    fn nudge(&self, vcpu: usize, op: u32, seq: u32, waited: Duration, now: Progress) {
        self.nudges.fetch_add(1, Ordering::Relaxed);
        let apic_id = self
            .mailbox
            .read_u32(p::slot_offset(vcpu) + offsets::SLOT_APIC_ID);
        let mut dm = self.dm.lock().unwrap_or_else(|e| e.into_inner());
        if dm.is_none() {
            *dm = xen_devicemodel::DeviceModel::open().ok();
        }
        // Fixed delivery, physical destination `apic_id`, edge.
        let addr = 0xfee0_0000 | (u64::from(apic_id & 0xff) << 12);
        let sent = match dm.as_ref() {
            Some(dm) => dm
                .inject_msi(
                    xen_devicemodel::DomId::new(self.domid()),
                    addr,
                    p::NUDGE_VECTOR.into(),
                )
                .map_err(|e| e.to_string()),
            None => Err("no device-model handle".into()),
        };
        crate::log(format_args!(
            "test guest d{} vcpu {vcpu} (APIC {apic_id}) has not answered op {op} seq {seq} for {} ms; its tick {} ({} -> {}), its loop {} ({} -> {} polls, last saw seq {}); wake-up call: {}",
            self.domid(),
            waited.as_millis(),
            if now.ticks.0 == now.ticks.1 { "stopped" } else { "runs" },
            now.ticks.0,
            now.ticks.1,
            if now.polls.0 == now.polls.1 { "stopped" } else { "runs" },
            now.polls.0,
            now.polls.1,
            now.seen,
            match sent {
                Ok(()) => "sent".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        ));
    }

    /// Wake-up calls ([`p::NUDGE_VECTOR`]) sent to this guest because a command went
    /// unanswered for [`NUDGE_AFTER`].
    pub fn nudges(&self) -> u32 {
        self.nudges.load(Ordering::Relaxed)
    }

    /// Runs a command on vCPU 0 and turns a non-OK status into an error.
    pub fn command(&self, op: u32, args: [u64; 6]) -> Result<Reply> {
        let r = self.command_on(0, op, args)?;
        if r.status != p::STATUS_OK {
            return Err(Error::Guest(format!(
                "op {op} {args:x?}: status {}",
                r.status
            )));
        }
        Ok(r)
    }

    /// `ping` on vCPU `vcpu`: that vCPU answers with the magic and its number.
    pub fn ping_on(&self, vcpu: usize) -> Result<()> {
        let r = self.command_on(vcpu, p::OP_PING, [0; 6])?;
        if r.status != p::STATUS_OK || r.result != p::MAGIC as u64 || r.result2 != vcpu as u64 {
            return Err(Error::Guest(format!("ping on vcpu {vcpu} answered {r:?}")));
        }
        Ok(())
    }

    /// `ping`: the guest answers with its magic.
    pub fn ping(&self) -> Result<()> {
        let r = self.command(p::OP_PING, [0; 6])?;
        if r.result != p::MAGIC as u64 {
            return Err(Error::Guest(format!("ping answered {:#x}", r.result)));
        }
        Ok(())
    }

    /// `out` of `size` (1, 2, 4) bytes of `value` to `port`.
    pub fn port_out(&self, port: u16, value: u32, size: u8) -> Result<()> {
        self.command(
            p::OP_PORT_OUT,
            [port.into(), value.into(), size.into(), 0, 0, 0],
        )
        .map(drop)
    }

    /// `in` of `size` (1, 2, 4) bytes from `port`.
    pub fn port_in(&self, port: u16, size: u8) -> Result<u32> {
        Ok(self
            .command(p::OP_PORT_IN, [port.into(), 0, size.into(), 0, 0, 0])?
            .result as u32)
    }

    /// `rep outs` of `data` (a whole number of `size`-byte units, at most a page) to `port`;
    /// `backwards` sets the direction flag.
    pub fn rep_outs(&self, port: u16, size: u8, data: &[u8], backwards: bool) -> Result<()> {
        if !matches!(size, 1 | 2 | 4)
            || data.is_empty()
            || data.len() % size as usize != 0
            || data.len() > p::PAGE_SIZE
        {
            return Err(Error::Invalid(format!(
                "rep_outs of {} bytes in units of {size}",
                data.len()
            )));
        }
        self.mailbox.write_bytes(p::PAGE_SIZE, data);
        let count = (data.len() / size as usize) as u64;
        self.command(
            p::OP_REP_OUTS,
            [port.into(), backwards as u64, size.into(), count, 0, 0],
        )
        .map(drop)
    }

    /// `rep ins` of `count` units of `size` bytes from `port`; returns the bytes in buffer order.
    pub fn rep_ins(&self, port: u16, size: u8, count: usize, backwards: bool) -> Result<Vec<u8>> {
        if !matches!(size, 1 | 2 | 4) || count == 0 || count * size as usize > p::PAGE_SIZE {
            return Err(Error::Invalid(format!(
                "rep_ins of {count} units of {size}"
            )));
        }
        self.command(
            p::OP_REP_INS,
            [
                port.into(),
                backwards as u64,
                size.into(),
                count as u64,
                0,
                0,
            ],
        )?;
        let mut buf = vec![0u8; count * size as usize];
        self.mailbox.read_bytes(p::PAGE_SIZE, &mut buf);
        Ok(buf)
    }

    /// `rep movs` of `data` (whole `size`-byte units, at most a page) from the guest's data page to
    /// guest-physical `addr` (MMIO: the emulator sends `data_is_ptr` requests); `backwards` sets
    /// the direction flag.
    pub fn rep_movs_to(&self, addr: u64, size: u8, data: &[u8], backwards: bool) -> Result<()> {
        if !matches!(size, 1 | 2 | 4 | 8)
            || data.is_empty()
            || data.len() % size as usize != 0
            || data.len() > p::PAGE_SIZE
        {
            return Err(Error::Invalid(format!(
                "rep_movs_to of {} bytes in units of {size}",
                data.len()
            )));
        }
        self.mailbox.write_bytes(p::PAGE_SIZE, data);
        let count = (data.len() / size as usize) as u64;
        self.command(
            p::OP_REP_MOVS_TO,
            [addr, backwards as u64, size.into(), count, 0, 0],
        )
        .map(drop)
    }

    /// `rep movs` of `count` units of `size` (1, 2, 4, 8) bytes from guest-physical `addr` into the
    /// guest's data page; returns the bytes.
    pub fn rep_movs_from(
        &self,
        addr: u64,
        size: u8,
        count: usize,
        backwards: bool,
    ) -> Result<Vec<u8>> {
        if !matches!(size, 1 | 2 | 4 | 8) || count == 0 || count * size as usize > p::PAGE_SIZE {
            return Err(Error::Invalid(format!(
                "rep_movs_from of {count} units of {size}"
            )));
        }
        self.command(
            p::OP_REP_MOVS_FROM,
            [addr, backwards as u64, size.into(), count as u64, 0, 0],
        )?;
        let mut buf = vec![0u8; count * size as usize];
        self.mailbox.read_bytes(p::PAGE_SIZE, &mut buf);
        Ok(buf)
    }

    /// Reads `size` (1, 2, 4, 8) bytes at guest-physical `addr` (RAM or MMIO, below 4 GiB).
    pub fn mem_read(&self, addr: u64, size: u8) -> Result<u64> {
        Ok(self
            .command(p::OP_MEM_READ, [addr, 0, size.into(), 0, 0, 0])?
            .result)
    }

    /// Writes `size` (1, 2, 4, 8) bytes of `value` at guest-physical `addr` (RAM or MMIO).
    pub fn mem_write(&self, addr: u64, value: u64, size: u8) -> Result<()> {
        self.command(p::OP_MEM_WRITE, [addr, value, size.into(), 0, 0, 0])
            .map(drop)
    }

    /// PCI config read through 0xcf8/0xcfc.
    pub fn pci_cfg_read(&self, bus: u8, dev: u8, func: u8, reg: u8, size: u8) -> Result<u32> {
        let a = p::pci_cfg_address(bus, dev, func, reg);
        Ok(self
            .command(p::OP_PCI_CFG_READ, [a, 0, size.into(), 0, 0, 0])?
            .result as u32)
    }

    /// PCI config write through 0xcf8/0xcfc.
    pub fn pci_cfg_write(
        &self,
        bus: u8,
        dev: u8,
        func: u8,
        reg: u8,
        value: u32,
        size: u8,
    ) -> Result<()> {
        let a = p::pci_cfg_address(bus, dev, func, reg);
        self.command(p::OP_PCI_CFG_WRITE, [a, value.into(), size.into(), 0, 0, 0])
            .map(drop)
    }

    /// Has the guest fill frame `gfn` (`None`: its first scratch frame) with
    /// [`p::pattern_byte`]`(seed, i)`; returns the frame filled.
    pub fn fill(&self, gfn: Option<u64>, seed: u64) -> Result<u64> {
        Ok(self
            .command(p::OP_FILL, [gfn.unwrap_or(0), seed, 0, 0, 0, 0])?
            .result)
    }

    /// The guest's FNV-1a of frame `gfn`.
    pub fn checksum(&self, gfn: u64) -> Result<u64> {
        Ok(self.command(p::OP_CHECKSUM, [gfn, 0, 0, 0, 0, 0])?.result)
    }

    /// Frame `gfn`'s bytes as the guest reads them.
    pub fn copy_out(&self, gfn: u64) -> Result<Vec<u8>> {
        let r = self.command(p::OP_COPY_OUT, [gfn, 0, 0, 0, 0, 0])?;
        let mut buf = vec![0u8; p::PAGE_SIZE];
        self.mailbox.read_bytes(p::PAGE_SIZE, &mut buf);
        if p::fnv1a64(buf.iter().copied()) != r.result {
            return Err(Error::Guest("copy_out: checksum mismatch".into()));
        }
        Ok(buf)
    }

    /// A raw hypercall made by the guest; returns its result (negative errno on failure).
    pub fn hypercall(&self, nr: u64, args: [u64; 5]) -> Result<i64> {
        let r = self.command(
            p::OP_HYPERCALL,
            [nr, args[0], args[1], args[2], args[3], args[4]],
        )?;
        Ok(r.result as i64)
    }

    /// `cpuid` in the guest: `[eax, ebx, ecx, edx]`.
    pub fn cpuid(&self, leaf: u32, subleaf: u32) -> Result<[u32; 4]> {
        let r = self.command(p::OP_CPUID, [leaf.into(), subleaf.into(), 0, 0, 0, 0])?;
        Ok([
            r.result as u32,
            (r.result >> 32) as u32,
            r.result2 as u32,
            (r.result2 >> 32) as u32,
        ])
    }

    /// Stops the guest for good (interrupts off, `hlt`); the domain stays.
    pub fn halt(&self) -> Result<()> {
        self.command(p::OP_HALT, [0; 6]).map(drop)
    }

    /// The guest shuts itself down with `reason` (`SCHEDOP_shutdown`).
    pub fn shutdown(&self, reason: ShutdownReason) -> Result<()> {
        self.command(p::OP_SHUTDOWN, [reason as u64, 0, 0, 0, 0, 0])
            .map(drop)
    }

    /// Writes `bytes` at the start of vCPU 0's data page (arguments for [`hypercall`](Self::hypercall)
    /// structures) and returns the page's guest-physical address.
    pub fn write_data(&self, bytes: &[u8]) -> Result<u64> {
        if bytes.len() > p::PAGE_SIZE {
            return Err(Error::Invalid(format!(
                "{} bytes do not fit the data page",
                bytes.len()
            )));
        }
        self.mailbox.write_bytes(p::PAGE_SIZE, bytes);
        Ok(p::data_gfn(0) << 12)
    }

    /// Reads `len` bytes from the start of vCPU 0's data page.
    pub fn read_data(&self, len: usize) -> Result<Vec<u8>> {
        if len > p::PAGE_SIZE {
            return Err(Error::Invalid(format!(
                "{len} bytes do not fit the data page"
            )));
        }
        let mut v = vec![0u8; len];
        self.mailbox.read_bytes(p::PAGE_SIZE, &mut v);
        Ok(v)
    }

    /// The guest allocates an unbound event channel that domain `remote` may bind
    /// (`EVTCHNOP_alloc_unbound`); returns the guest's port.
    pub fn evtchn_alloc_unbound(&self, remote: u16) -> Result<u32> {
        // struct evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; }
        let mut arg = [0u8; 8];
        arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
        arg[2..4].copy_from_slice(&remote.to_le_bytes());
        let addr = self.write_data(&arg)?;
        let rc = self.hypercall(
            HYPERVISOR_EVENT_CHANNEL_OP,
            [EVTCHNOP_ALLOC_UNBOUND, addr, 0, 0, 0],
        )?;
        if rc != 0 {
            return Err(Error::Guest(format!("EVTCHNOP_alloc_unbound: {rc}")));
        }
        let out = self.read_data(8)?;
        Ok(u32::from_le_bytes([out[4], out[5], out[6], out[7]]))
    }

    /// The guest notifies its event-channel port `port` (`EVTCHNOP_send`).
    pub fn evtchn_send(&self, port: u32) -> Result<()> {
        let addr = self.write_data(&port.to_le_bytes())?;
        let rc = self.hypercall(HYPERVISOR_EVENT_CHANNEL_OP, [EVTCHNOP_SEND, addr, 0, 0, 0])?;
        if rc != 0 {
            return Err(Error::Guest(format!("EVTCHNOP_send({port}): {rc}")));
        }
        Ok(())
    }

    /// HVM/PVH: asks Xen to deliver this guest's event-channel upcalls as interrupt `vector`
    /// (`HVM_PARAM_CALLBACK_IRQ`, vector type), so they show in [`vector_count`](Self::vector_count).
    /// The guest never clears the pending bits itself: map its shared info
    /// ([`map_shared_info`](Self::map_shared_info)) to look at or clear them.
    pub fn set_event_callback_vector(&self, vector: u8) -> Result<()> {
        // struct xen_hvm_param { domid_t domid; uint32_t index; uint64_t value; }
        let mut arg = [0u8; 16];
        arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
        arg[4..8].copy_from_slice(&HVM_PARAM_CALLBACK_IRQ.to_le_bytes());
        arg[8..16].copy_from_slice(&((2u64 << 56) | u64::from(vector)).to_le_bytes());
        let addr = self.write_data(&arg)?;
        let rc = self.hypercall(HYPERVISOR_HVM_OP, [HVMOP_SET_PARAM, addr, 0, 0, 0])?;
        if rc != 0 {
            return Err(Error::Guest(format!("HVMOP_set_param(CALLBACK_IRQ): {rc}")));
        }
        Ok(())
    }

    /// The guest places its shared-info page at frame `gfn` (`XENMEM_add_to_physmap`,
    /// `XENMAPSPACE_shared_info`); then dom0 maps it. Use a scratch frame, e.g.
    /// `SCRATCH_GFN + 15`.
    pub fn map_shared_info(&self, gfn: u64) -> Result<ForeignMapping> {
        // struct xen_add_to_physmap { domid_t domid; uint16_t size; unsigned int space;
        //                             xen_ulong_t idx; xen_pfn_t gpfn; }
        let mut arg = [0u8; 24];
        arg[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
        arg[4..8].copy_from_slice(&XENMAPSPACE_SHARED_INFO.to_le_bytes());
        arg[16..24].copy_from_slice(&gfn.to_le_bytes());
        let addr = self.write_data(&arg)?;
        let rc = self.hypercall(HYPERVISOR_MEMORY_OP, [XENMEM_ADD_TO_PHYSMAP, addr, 0, 0, 0])?;
        if rc != 0 {
            return Err(Error::Guest(format!(
                "XENMEM_add_to_physmap(shared_info -> {gfn:#x}): {rc}"
            )));
        }
        self.map_frames(&[gfn])
    }

    /// HVM: routes IOAPIC pin `gsi` to `vector` on vCPU 0 (fixed delivery, physical destination
    /// APIC id 0), unmasked; `level` and `active_low` select the trigger mode and polarity (ISA
    /// IRQs: edge, high; PCI INTx: level, low). Done with two MMIO writes to the IOAPIC.
    pub fn ioapic_route(&self, gsi: u8, vector: u8, level: bool, active_low: bool) -> Result<()> {
        let low = u64::from(vector) | (u64::from(active_low) << 13) | (u64::from(level) << 15);
        self.mem_write(IOAPIC_BASE, 0x10 + 2 * u64::from(gsi) + 1, 4)?;
        self.mem_write(IOAPIC_BASE + 0x10, 0, 4)?; // destination APIC id 0
        self.mem_write(IOAPIC_BASE, 0x10 + 2 * u64::from(gsi), 4)?;
        self.mem_write(IOAPIC_BASE + 0x10, low, 4)
    }

    /// Maps `gfns` of this guest (to check what it wrote, or to write what it will read).
    pub fn map_frames(&self, gfns: &[u64]) -> Result<ForeignMapping> {
        ForeignMapping::map(self.domid(), gfns)
    }
}
