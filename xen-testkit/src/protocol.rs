//! The mailbox protocol between a test in dom0 and the tiny test guest.
//!
//! This file is the single definition of the protocol. The guest (`xen-testkit/guest`, bare metal)
//! includes it with `#[path]`, and the `xen-testkit` library exposes it as
//! [`xen_testkit::protocol`](crate::protocol). It uses only `core`.
//!
//! # Layout
//!
//! The guest reserves [`MAILBOX_PAGES`] guest frames starting at [`MAILBOX_GFN`] (they are part of
//! its ELF image, so no loader ever puts anything else there), and [`SCRATCH_PAGES`] frames at
//! [`SCRATCH_GFN`] that tests may let the guest fill and dirty.
//!
//! - Page 0 (the control page): a [`Header`] at offset 0, the per-vector interrupt counters
//!   (`[u32; 256]`) at [`VECTOR_COUNTS_OFFSET`], and one command [`Slot`] per vCPU at
//!   [`SLOTS_OFFSET`] (`[Slot; MAX_VCPUS]`).
//! - Pages 1..=[`MAX_VCPUS`]: one data page per vCPU (`rep ins`/`rep outs` buffers, page copies,
//!   hypercall argument structures). Data page of vCPU `v` is at gfn `MAILBOX_GFN + 1 + v`.
//!
//! # One command
//!
//! 1. The test writes the slot's `op` and `args`, then (release) `seq = previous seq + 1`.
//! 2. The guest vCPU that owns the slot sees `seq` change, reads `op`/`args` (acquire), runs the
//!    command, writes `status`, `result`, `result2`, then (release) `ack = seq`, and, unless
//!    [`FLAG_QUIET`] is set, prints one line to Xen's debug port 0xe9 (it shows in `xl dmesg` as
//!    `(dN) xrtg: ...`).
//! 3. The test waits (with a timeout) for `ack == seq` and reads the results (acquire).
//!
//! At boot, vCPU 0 starts every other vCPU the domain has (up to [`MAX_VCPUS`]) with
//! `VCPUOP_initialise`/`VCPUOP_up`, directly in long mode; each serves its own slot, and
//! `Header::vcpus_online` counts them. `READY` is set once they have reported in.
//!
//! The guest polls: between polls it sleeps in `hlt` and is woken by its local APIC timer every
//! [`TICK_US`] microseconds, so a command waits at most about one tick ([`FLAG_SPIN`] makes it
//! spin for a while after each command instead).
//!
//! # Interrupts
//!
//! Every vCPU runs with interrupts enabled and an IDT whose 256 entries all count into
//! `vector_counts[vector]` (the timer's own vector [`TIMER_VECTOR`] included). Vectors >= 32 get a
//! local-APIC EOI. An exception (vector < 32) is recorded in the header's `exc_*` fields; the guest
//! then stops in state [`STATE_CRASHED`], unless [`FLAG_CONTINUE_ON_EXCEPTION`] is set (for tests
//! that inject exceptions), in which case it returns to the interrupted code. The guest does not
//! program the IOAPIC or the PIC: a test does it with [`OP_MEM_WRITE`] / [`OP_PORT_OUT`] commands,
//! then raises the line and watches the counter.
//!
//! # Extending
//!
//! New commands take the next free `OP_*` number; fields are appended to [`Header`]'s reserved
//! area; bump [`VERSION`] when the meaning of an existing field changes.

#![allow(dead_code)]

/// `Header::magic` once the guest has booted: "XRTG" in little-endian bytes.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XRTG");
/// `Header::version`: the protocol version this file describes.
pub const VERSION: u32 = 1;

/// Size of a guest page.
pub const PAGE_SIZE: usize = 4096;
/// Guest-physical address where the guest image is linked (the mailbox is its first part).
pub const IMAGE_BASE: u64 = 0x10_0000;
/// First guest frame of the mailbox (the control page).
pub const MAILBOX_GFN: u64 = IMAGE_BASE >> 12;
/// Most vCPUs the protocol has slots for.
pub const MAX_VCPUS: usize = 4;
/// Frames in the mailbox: the control page and one data page per vCPU.
pub const MAILBOX_PAGES: usize = 1 + MAX_VCPUS;
/// First guest frame of the scratch area the guest keeps free for tests.
pub const SCRATCH_GFN: u64 = MAILBOX_GFN + 16;
/// Frames in the scratch area.
pub const SCRATCH_PAGES: usize = 16;

/// Guest frame of vCPU `vcpu`'s data page.
pub const fn data_gfn(vcpu: usize) -> u64 {
    MAILBOX_GFN + 1 + vcpu as u64
}

/// Byte offset of the interrupt counters (`[u32; 256]`) in the control page.
pub const VECTOR_COUNTS_OFFSET: usize = 0x400;
/// Byte offset of the command slots (`[Slot; MAX_VCPUS]`) in the control page.
pub const SLOTS_OFFSET: usize = 0x800;

/// Vector of the guest's periodic local-APIC timer (its wake-up tick).
pub const TIMER_VECTOR: u8 = 0xf0;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Period of the guest's wake-up tick, in microseconds.
pub const TICK_US: u32 = 1000;
/// The wake-up call: the test sends this vector (an MSI to the slot's [`Slot::apic_id`]) to a
/// vCPU that has not answered a command for a long while. The guest counts it like any other
/// vector and restarts its tick (unmasks the timer and rewrites its initial count), so a vCPU whose tick
/// stopped while it slept in `hlt` polls again. No test uses it for anything else.
pub const NUDGE_VECTOR: u8 = 0xee;

/// `Header::state`: the guest has not finished booting.
pub const STATE_BOOTING: u32 = 0;
/// `Header::state`: the guest polls its slots.
pub const STATE_READY: u32 = 1;
/// `Header::state`: the guest stopped on [`OP_HALT`] (interrupts off, `hlt` forever).
pub const STATE_HALTED: u32 = 2;
/// `Header::state`: the guest stopped on an unexpected exception (see `exc_*`).
pub const STATE_CRASHED: u32 = 3;

/// `Header::boot_kind`: booted as an HVM guest (through xl's `firmware_override`).
pub const BOOT_HVM: u32 = 1;
/// `Header::boot_kind`: booted as a PVH guest (through the PVH entry note).
pub const BOOT_PVH: u32 = 2;

/// `Header::flags` bit (test -> guest): do not print a line per command to port 0xe9.
pub const FLAG_QUIET: u32 = 1 << 0;
/// `Header::flags` bit (test -> guest): return from exceptions instead of stopping.
pub const FLAG_CONTINUE_ON_EXCEPTION: u32 = 1 << 1;
/// `Header::flags` bit (test -> guest): after each command, spin (instead of sleeping until the
/// next tick) for a few ticks. Measured in the Xen machine: a ping costs ~1 ms with the guest
/// sleeping between polls and ~5-15 us with it spinning, but a spinning vCPU takes a whole
/// physical CPU from dom0 (with two spinning vCPUs dom0 starves): use it for bursts only.
pub const FLAG_SPIN: u32 = 1 << 2;

/// Does nothing; `result` = [`MAGIC`], `result2` = the vCPU's number.
pub const OP_PING: u32 = 1;
/// `out` of `args[2]` (1, 2 or 4) bytes: port `args[0]`, value `args[1]`.
pub const OP_PORT_OUT: u32 = 2;
/// `in` of `args[2]` (1, 2 or 4) bytes from port `args[0]`; `result` = the value.
pub const OP_PORT_IN: u32 = 3;
/// `rep outs` of `args[3]` units of `args[2]` (1, 2 or 4) bytes to port `args[0]`, from the
/// start of the vCPU's data page. `args[1]` bit 0 set: direction flag set (the guest starts at the
/// last unit and walks down, so the device still sees the buffer's units in reverse order).
pub const OP_REP_OUTS: u32 = 4;
/// `rep ins` into the vCPU's data page, arguments as for [`OP_REP_OUTS`].
pub const OP_REP_INS: u32 = 5;
/// Read `args[2]` (1, 2, 4 or 8) bytes at guest-physical address `args[0]` (RAM or MMIO: the guest
/// identity-maps the low 4 GiB); `result` = the value.
pub const OP_MEM_READ: u32 = 6;
/// Write `args[1]`, `args[2]` (1, 2, 4 or 8) bytes wide, at guest-physical address `args[0]`.
pub const OP_MEM_WRITE: u32 = 7;
/// PCI config read through ports 0xcf8/0xcfc: `args[0]` = [`pci_cfg_address`], `args[2]` = size
/// (1, 2 or 4); `result` = the value.
pub const OP_PCI_CFG_READ: u32 = 8;
/// PCI config write through ports 0xcf8/0xcfc: `args[0]` = [`pci_cfg_address`], `args[1]` =
/// value, `args[2]` = size (1, 2 or 4).
pub const OP_PCI_CFG_WRITE: u32 = 9;
/// Fill frame `args[0]` (0: the first scratch frame) with [`pattern_byte`]`(args[1], i)`;
/// `result` = the frame filled.
pub const OP_FILL: u32 = 10;
/// FNV-1a ([`fnv1a64`]) of frame `args[0]`'s 4096 bytes, read by the guest; `result` = the hash.
pub const OP_CHECKSUM: u32 = 11;
/// Copy frame `args[0]` into the vCPU's data page; `result` = [`fnv1a64`] of what was copied.
pub const OP_COPY_OUT: u32 = 12;
/// Stop: interrupts off, `hlt` forever; state becomes [`STATE_HALTED`] (the ack is written first).
pub const OP_HALT: u32 = 13;
/// `SCHEDOP_shutdown` with reason `args[0]` (0 poweroff, 1 reboot, 2 suspend, 3 crash).
pub const OP_SHUTDOWN: u32 = 14;
/// Raw hypercall through the guest's hypercall page: number `args[0]`, arguments `args[1..6]`;
/// `result` = the return value (negative errno as `i64`). Pointer arguments are guest-physical
/// (= guest-virtual) addresses, typically into the vCPU's data page.
pub const OP_HYPERCALL: u32 = 15;
/// `cpuid` with `eax = args[0]`, `ecx = args[1]`; `result` = `eax | ebx << 32`,
/// `result2` = `ecx | edx << 32`.
pub const OP_CPUID: u32 = 16;

/// `rep movs` from the vCPU's data page to guest-physical `args[0]` (typically MMIO: the
/// emulator turns it into `data_is_ptr` requests): `args[3]` units of `args[2]` (1, 2, 4, 8)
/// bytes; `args[1]` bit 0: direction flag set (both pointers start at the last unit).
pub const OP_REP_MOVS_TO: u32 = 17;
/// `rep movs` from guest-physical `args[0]` into the vCPU's data page, arguments as for
/// [`OP_REP_MOVS_TO`].
pub const OP_REP_MOVS_FROM: u32 = 18;

/// `Slot::status`: the command ran.
pub const STATUS_OK: u32 = 0;
/// `Slot::status`: unknown `op`.
pub const STATUS_BAD_OP: u32 = 1;
/// `Slot::status`: an argument was out of range (size, count, frame).
pub const STATUS_BAD_ARG: u32 = 2;
/// `Slot::status`: the guest has no hypercall page (not running on Xen?).
pub const STATUS_NO_HYPERCALLS: u32 = 3;

/// The control page's header (offset 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    /// [`MAGIC`] once booted (written last, after everything else in the header).
    pub magic: u32,
    /// [`VERSION`].
    pub version: u32,
    /// `STATE_*`.
    pub state: u32,
    /// `BOOT_*`.
    pub boot_kind: u32,
    /// What `XENVER_version` returned to the guest (`major << 16 | minor`), 0 if unknown.
    pub xen_version: u32,
    /// vCPUs polling their slots.
    pub vcpus_online: u32,
    /// `FLAG_*`, written by the test.
    pub flags: u32,
    /// Timer ticks seen by all vCPUs (a liveness counter; [`Slot::ticks`] has each vCPU's).
    pub ticks: u32,
    /// Last exception's vector.
    pub exc_vector: u64,
    /// Last exception's error code (0 when the vector has none).
    pub exc_error: u64,
    /// Last exception's instruction pointer.
    pub exc_rip: u64,
    /// `cr2` at the last exception.
    pub exc_cr2: u64,
    /// PVH: guest-physical address of the `hvm_start_info` (ebx at entry); HVM: ebx at entry.
    pub start_info: u64,
}

/// One vCPU's command slot (at `SLOTS_OFFSET + vcpu * size_of::<Slot>()`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    /// Written last by the test: a new value starts a command.
    pub seq: u32,
    /// `OP_*`.
    pub op: u32,
    /// Arguments, meaning per `op`.
    pub args: [u64; 6],
    /// Written last by the guest: equals `seq` when the command is done.
    pub ack: u32,
    /// `STATUS_*`.
    pub status: u32,
    /// First result.
    pub result: u64,
    /// Second result.
    pub result2: u64,
    /// The vCPU's local APIC ID, written by the guest before it first polls the slot (where
    /// the test sends [`NUDGE_VECTOR`]).
    pub apic_id: u32,
    /// Timer ticks this vCPU has seen since it started polling the slot.
    pub ticks: u32,
    /// Times this vCPU has looked at `seq` (a liveness counter of its polling loop).
    pub polls: u32,
    /// The `seq` it saw last.
    pub seen: u32,
    /// Room to grow; zero.
    pub reserved: [u64; 4],
}

/// Byte offsets of the fields both sides access one by one.
pub mod offsets {
    /// `Header::magic`.
    pub const MAGIC: usize = 0;
    /// `Header::version`.
    pub const VERSION: usize = 4;
    /// `Header::state`.
    pub const STATE: usize = 8;
    /// `Header::boot_kind`.
    pub const BOOT_KIND: usize = 12;
    /// `Header::xen_version`.
    pub const XEN_VERSION: usize = 16;
    /// `Header::vcpus_online`.
    pub const VCPUS_ONLINE: usize = 20;
    /// `Header::flags`.
    pub const FLAGS: usize = 24;
    /// `Header::ticks`.
    pub const TICKS: usize = 28;
    /// `Slot::seq`.
    pub const SLOT_SEQ: usize = 0;
    /// `Slot::op`.
    pub const SLOT_OP: usize = 4;
    /// `Slot::args`.
    pub const SLOT_ARGS: usize = 8;
    /// `Slot::ack`.
    pub const SLOT_ACK: usize = 56;
    /// `Slot::status`.
    pub const SLOT_STATUS: usize = 60;
    /// `Slot::result`.
    pub const SLOT_RESULT: usize = 64;
    /// `Slot::result2`.
    pub const SLOT_RESULT2: usize = 72;
    /// `Slot::apic_id`.
    pub const SLOT_APIC_ID: usize = 80;
    /// `Slot::ticks`.
    pub const SLOT_TICKS: usize = 84;
    /// `Slot::polls`.
    pub const SLOT_POLLS: usize = 88;
    /// `Slot::seen`.
    pub const SLOT_SEEN: usize = 92;
}

const _: () = {
    assert!(core::mem::size_of::<Header>() == 72);
    assert!(core::mem::size_of::<Header>() <= VECTOR_COUNTS_OFFSET);
    assert!(core::mem::size_of::<Slot>() == 128);
    assert!(core::mem::offset_of!(Slot, ack) == offsets::SLOT_ACK);
    assert!(core::mem::offset_of!(Slot, result2) == offsets::SLOT_RESULT2);
    assert!(core::mem::offset_of!(Slot, apic_id) == offsets::SLOT_APIC_ID);
    assert!(core::mem::offset_of!(Slot, ticks) == offsets::SLOT_TICKS);
    assert!(core::mem::offset_of!(Slot, seen) == offsets::SLOT_SEEN);
    assert!(core::mem::offset_of!(Header, ticks) == offsets::TICKS);
    assert!(SLOTS_OFFSET + MAX_VCPUS * core::mem::size_of::<Slot>() <= PAGE_SIZE);
    assert!(VECTOR_COUNTS_OFFSET + 256 * 4 <= SLOTS_OFFSET);
    assert!(MAILBOX_GFN + MAILBOX_PAGES as u64 <= SCRATCH_GFN);
};

/// Byte offset of vCPU `vcpu`'s slot in the control page.
pub const fn slot_offset(vcpu: usize) -> usize {
    SLOTS_OFFSET + vcpu * core::mem::size_of::<Slot>()
}

/// The value for `args[0]` of the PCI config commands: bus, device (0-31), function (0-7) and
/// register (0-255), laid out as in the 0xcf8 address register (without the enable bit).
pub const fn pci_cfg_address(bus: u8, dev: u8, func: u8, reg: u8) -> u64 {
    ((bus as u64) << 16) | (((dev & 0x1f) as u64) << 11) | (((func & 7) as u64) << 8) | reg as u64
}

/// Byte `i` of the pattern [`OP_FILL`] writes for `seed`.
pub const fn pattern_byte(seed: u64, i: usize) -> u8 {
    let x = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add((i as u64).wrapping_mul(0x0100_0000_01b3));
    (x ^ (x >> 29) ^ (x >> 47)) as u8
}

/// 64-bit FNV-1a over `bytes`, the checksum of [`OP_CHECKSUM`] and [`OP_COPY_OUT`].
pub fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
