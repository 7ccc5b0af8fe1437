//! The xen-rs tiny test guest.
//!
//! A bare-metal x86_64 kernel that boots as an HVM guest (loaded by xl's `firmware_override` in
//! place of hvmloader: entry at the ELF entry point `hvm_entry`) or as a PVH guest (entry
//! `pvh_entry`, named by the `XEN_ELFNOTE_PHYS32_ENTRY` note). Both start in 32-bit protected
//! mode with paging off; the stub below identity-maps the low 4 GiB with 2 MiB pages, enters long
//! mode and calls [`rust_main`], which sets up an IDT, the Xen hypercall page and a local-APIC
//! timer tick, then serves commands a test writes into the mailbox (see `../src/protocol.rs`, the
//! one definition of the protocol).
#![no_std]
#![no_main]

#[path = "../../src/protocol.rs"]
mod protocol;

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{fence, Ordering};
use protocol::*;

// ---------------------------------------------------------------------------------------------
// Entry: 32-bit protected mode -> long mode.
// ---------------------------------------------------------------------------------------------

global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_entry
    .balign 4
    .popsection

    /* The PV notes (a separate section: xtask makes the PV, PVH and HVM images by keeping
     * only the notes each loader wants). */
    .pushsection .note.XenPV, "a", @note
    .macro xen_note type, kind, value
    .balign 4
    .long 4
    .long 8f - 7f
    .long \type
    .asciz "Xen"
    .balign 4
7:
    .if \kind == 0
    .asciz "\value"
    .else
    .quad \value
    .endif
8:
    .balign 4
    .endm
    xen_note 6, 0, "xen-rs-testguest"   /* GUEST_OS */
    xen_note 5, 0, "xen-3.0"            /* XEN_VERSION */
    xen_note 8, 0, "generic"            /* LOADER */
    xen_note 3, 1, 0                    /* VIRT_BASE */
    xen_note 4, 1, 0                    /* PADDR_OFFSET */
    xen_note 1, 1, pv_entry             /* ENTRY */
    xen_note 2, 1, hypercall_page       /* HYPERCALL_PAGE */
    .popsection

    .pushsection .mailbox, "aw", @progbits
    .balign 4096
    .zero {mailbox_bytes}
    .popsection

    .pushsection .scratch, "aw", @progbits
    .balign 4096
    .zero {scratch_bytes}
    .popsection

    .pushsection .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pds:   .skip 4 * 4096
    .global hypercall_page
hypercall_page: .skip 4096
    .global idt
idt:        .skip 4096
boot_stack: .skip 32768
boot_stack_top:
    .global ap_stacks
ap_stacks:  .skip {ap_stack_bytes}
    .popsection

    .pushsection .rodata.gdt, "a"
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
    .popsection

    .pushsection .text.entry, "ax"
    .code32
    .global hvm_entry
hvm_entry:
    mov ${boot_hvm}, %ebp
    jmp 1f
    .global pvh_entry
pvh_entry:
    mov ${boot_pvh}, %ebp
1:
    cli
    cld
    mov $boot_stack_top, %esp

    /* 2048 2 MiB identity mappings: the low 4 GiB. */
    mov $boot_pds, %edi
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    mov $boot_pdpt, %edi
    xor %ecx, %ecx
3:
    mov %ecx, %eax
    shl $12, %eax
    add $boot_pds, %eax
    or $3, %eax
    mov %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 3b

    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    movl $0, boot_pml4 + 4

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x100, %eax             /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax        /* PG | PE */
    mov %eax, %cr0
    lgdt gdt_ptr
    ljmp $0x08, $4f

    .code64
4:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %ebp, %edi
    mov %ebx, %esi
    call rust_main
5:
    cli
    hlt
    jmp 5b

    /* PV entry: long mode on Xen's page tables (virtual = pseudo-physical here, VIRT_BASE 0),
     * rsi = start_info. */
    .global pv_entry
pv_entry:
    mov $boot_stack_top, %rsp
    mov %rsi, %rdi
    call pv_main
    jmp 7f

    /* Secondary vCPUs start here in long mode (VCPUOP_initialise, VCPU_HVM_MODE_64B) with rsp
     * and rdi (the vCPU number) set by vCPU 0; the segment registers' cached parts are flat but
     * their selectors are not ours: load our GDT and selectors first. */
    .global ap_entry64
ap_entry64:
    lgdt gdt_ptr
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    pushq $0x08
    lea 6f(%rip), %rax
    pushq %rax
    lretq
6:
    call ap_main
7:
    cli
    hlt
    jmp 7b

    /* 256 interrupt stubs, 16 bytes apart: push a 0 error code where the CPU pushes none, push
     * the vector, join the common path. */
    .balign 16
    .global isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov %rsp, %rdi
    cld
    call isr_rust
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq
    .popsection
    "#,
    mailbox_bytes = const MAILBOX_PAGES * PAGE_SIZE,
    scratch_bytes = const SCRATCH_PAGES * PAGE_SIZE,
    boot_hvm = const BOOT_HVM,
    boot_pvh = const BOOT_PVH,
    ap_stack_bytes = const AP_STACK * (MAX_VCPUS - 1),
    options(att_syntax)
);

/// Stack bytes per secondary vCPU.
const AP_STACK: usize = 16384;

extern "C" {
    static ap_stacks: u8;
    static ap_entry64: u8;
    static boot_pml4: u8;
    static hypercall_page: u8;
    static idt: u8;
    static isr_stubs: u8;
    static __image_end: u8;
}

// ---------------------------------------------------------------------------------------------
// Mailbox access (volatile: the test in dom0 reads and writes these pages concurrently).
// ---------------------------------------------------------------------------------------------

const CTL: u64 = MAILBOX_GFN << 12;

fn rd32(addr: u64) -> u32 {
    // SAFETY: `addr` is inside the identity-mapped mailbox, 4-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}
fn wr32(addr: u64, v: u32) {
    // SAFETY: as in rd32.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}
fn rd64(addr: u64) -> u64 {
    // SAFETY: as in rd32, 8-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
fn wr64(addr: u64, v: u64) {
    // SAFETY: as in rd64.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

/// Atomically adds 1 to the u32 at `addr` (several vCPUs share the counters).
fn atomic_inc(addr: u64) {
    // SAFETY: `addr` is a 4-byte-aligned u32 in the identity-mapped mailbox; the dom0 side only
    // reads these counters.
    unsafe { (*(addr as *const core::sync::atomic::AtomicU32)).fetch_add(1, Ordering::Relaxed) };
}

fn hdr(off: usize) -> u64 {
    CTL + off as u64
}
fn slot(vcpu: usize, off: usize) -> u64 {
    CTL + (slot_offset(vcpu) + off) as u64
}

// ---------------------------------------------------------------------------------------------
// Port I/O, debug console.
// ---------------------------------------------------------------------------------------------

fn outb(port: u16, v: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nostack, preserves_flags)) }
}
fn outw(port: u16, v: u16) {
    // SAFETY: as in outb.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nostack, preserves_flags)) }
}
fn outl(port: u16, v: u32) {
    // SAFETY: as in outb.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nostack, preserves_flags)) }
}
fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as in outb.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nostack, preserves_flags)) }
    v
}
fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as in outb.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nostack, preserves_flags)) }
    v
}
fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as in outb.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nostack, preserves_flags)) }
    v
}

/// Xen's HVM debug console: bytes written to port 0xe9 appear, a line at a time, in the
/// hypervisor's console as `(dN) ...`.
struct E9;
impl Write for E9 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            outb(0xe9, b);
        }
        Ok(())
    }
}

macro_rules! say {
    ($($t:tt)*) => {{ let _ = writeln!(E9, $($t)*); }};
}

fn quiet() -> bool {
    rd32(hdr(offsets::FLAGS)) & FLAG_QUIET != 0
}

// ---------------------------------------------------------------------------------------------
// CPU helpers.
// ---------------------------------------------------------------------------------------------

fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: cpuid only writes the named registers; rbx is saved around it because LLVM
    // reserves it.
    unsafe {
        asm!(
            "mov {tmp:r}, rbx",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) b,
            inout("eax") leaf => a,
            inout("ecx") sub => c,
            out("edx") d,
            options(nostack, preserves_flags)
        );
    }
    (a, b, c, d)
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an architectural MSR that exists on every x86_64 CPU we run on.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) }
    (hi as u64) << 32 | lo as u64
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the callers write MSRs whose effect they own (Xen's hypercall-page MSR).
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nostack))
    }
}

fn halt_forever() -> ! {
    loop {
        // SAFETY: stopping the vCPU for good.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

// ---------------------------------------------------------------------------------------------
// Hypercalls.
// ---------------------------------------------------------------------------------------------

static mut HYPERCALLS_OK: bool = false;

fn hypercalls_ok() -> bool {
    // SAFETY: written once during boot on vCPU 0, before any command runs.
    unsafe { core::ptr::read_volatile(&raw const HYPERCALLS_OK) }
}

fn setup_hypercall_page() -> bool {
    for base in (0x4000_0000u32..0x4001_0000).step_by(0x100) {
        let (max, b, c, d) = cpuid(base, 0);
        if (b, c, d) == (0x566e_6558, 0x65584d4d, 0x4d4d566e) && max >= base + 2 {
            let (_pages, msr, _, _) = cpuid(base + 2, 0);
            let page = &raw const hypercall_page as u64;
            wrmsr(msr, page);
            // SAFETY: written before any reader (single-threaded boot).
            unsafe { core::ptr::write_volatile(&raw mut HYPERCALLS_OK, true) };
            return true;
        }
    }
    false
}

/// A hypercall through the page Xen filled in: `nr` with up to five arguments.
fn hypercall(nr: u64, a: [u64; 5]) -> i64 {
    let entry = &raw const hypercall_page as u64 + nr * 32;
    let ret: i64;
    // SAFETY: the hypercall page's stubs follow the 64-bit hypercall ABI (arguments in rdi, rsi,
    // rdx, r10, r8, result in rax); the argument registers are treated as clobbered because
    // debug hypervisors scribble on them. Pointer arguments are the caller's responsibility.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inout("rdi") a[0] => _,
            inout("rsi") a[1] => _,
            inout("rdx") a[2] => _,
            inout("r10") a[3] => _,
            inout("r8") a[4] => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

const HYPERVISOR_XEN_VERSION: u64 = 17;
const HYPERVISOR_SCHED_OP: u64 = 29;
const SCHEDOP_SHUTDOWN: u64 = 2;

// ---------------------------------------------------------------------------------------------
// Interrupts: IDT, local APIC.
// ---------------------------------------------------------------------------------------------

static mut LAPIC_BASE: u64 = 0xfee0_0000;

fn lapic_base() -> u64 {
    // SAFETY: written once during boot before interrupts are enabled.
    unsafe { core::ptr::read_volatile(&raw const LAPIC_BASE) }
}

fn lapic_write(reg: u64, v: u32) {
    wr32(lapic_base() + reg, v);
}

fn lapic_read(reg: u64) -> u32 {
    rd32(lapic_base() + reg)
}

/// Starts (or restarts) the periodic wake-up tick: unmasked, periodic, and the initial count
/// written again (which reloads it).
fn start_tick() {
    lapic_write(0x320, TIMER_VECTOR as u32 | (1 << 17)); // periodic
    lapic_write(0x380, TICK_US * 100); // Xen's virtual APIC timer counts at 100 MHz (measured)
}

fn setup_idt() {
    let (idt_addr, stubs) = (&raw const idt as u64, &raw const isr_stubs as u64);
    for v in 0..256u64 {
        let handler = stubs + 16 * v;
        let lo = (handler & 0xffff)
            | (0x08 << 16)
            | (0x8e00u64 << 32)
            | ((handler >> 16) & 0xffff) << 48;
        let hi = handler >> 32;
        wr64(idt_addr + 16 * v, lo);
        wr64(idt_addr + 16 * v + 8, hi);
    }
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr {
        limit: 256 * 16 - 1,
        base: idt_addr,
    };
    // SAFETY: the IDT just written stays in place for the guest's life.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) }
}

fn setup_lapic() {
    let apic_msr = rdmsr(0x1b);
    let base = apic_msr & 0xffff_f000;
    // SAFETY: every vCPU writes the same value (the architectural default base) before it
    // enables interrupts; readers see either write.
    unsafe { core::ptr::write_volatile(&raw mut LAPIC_BASE, base) };
    if apic_msr & (1 << 11) == 0 {
        wrmsr(0x1b, apic_msr | (1 << 11));
    }
    lapic_write(0xf0, 0x100 | SPURIOUS_VECTOR as u32); // software enable + spurious vector
    lapic_write(0x80, 0); // task priority: accept everything
    lapic_write(0x3e0, 0xb); // divide by 1
    start_tick();
}

/// What `isr_common` pushed, lowest address first.
#[repr(C)]
struct IsrFrame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[no_mangle]
extern "C" fn isr_rust(frame: &mut IsrFrame) {
    let v = frame.vector & 0xff;
    atomic_inc(CTL + VECTOR_COUNTS_OFFSET as u64 + 4 * v);
    if v as u8 == TIMER_VECTOR {
        atomic_inc(hdr(offsets::TICKS));
        // This vCPU's own count, in the first slot that carries its APIC ID (slots start at 0,
        // vCPU 0's ID: a secondary's ticks count once it has written its slot).
        let id = lapic_read(0x20) >> 24;
        for vcpu in 0..MAX_VCPUS {
            if rd32(slot(vcpu, offsets::SLOT_APIC_ID)) == id {
                atomic_inc(slot(vcpu, offsets::SLOT_TICKS));
                break;
            }
        }
    } else if v as u8 == NUDGE_VECTOR {
        start_tick();
    }
    if v < 32 {
        let cr2: u64;
        // SAFETY: reading cr2 has no side effects.
        unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
        wr64(CTL + 32, v);
        wr64(CTL + 40, frame.error);
        wr64(CTL + 48, frame.rip);
        wr64(CTL + 56, cr2);
        if rd32(hdr(offsets::FLAGS)) & FLAG_CONTINUE_ON_EXCEPTION == 0 {
            say!(
                "xrtg: exception vector={} error={:#x} rip={:#x} cr2={:#x}: stopping",
                v,
                frame.error,
                frame.rip,
                cr2
            );
            fence(Ordering::Release);
            wr32(hdr(offsets::STATE), STATE_CRASHED);
            halt_forever();
        }
    } else if v as u8 != SPURIOUS_VECTOR {
        lapic_write(0xb0, 0); // EOI
    }
}

// ---------------------------------------------------------------------------------------------
// Commands.
// ---------------------------------------------------------------------------------------------

const FOUR_GIB: u64 = 1 << 32;

fn image_end() -> u64 {
    &raw const __image_end as u64
}

/// Frames the guest may overwrite on a test's request: anything but its control page and its
/// code/data (the data pages and the scratch area are fine), below 4 GiB.
fn frame_writable(gfn: u64) -> bool {
    let in_image = gfn >= MAILBOX_GFN && gfn < image_end() >> 12;
    let allowed_in_image = (gfn > MAILBOX_GFN && gfn < MAILBOX_GFN + MAILBOX_PAGES as u64)
        || (gfn >= SCRATCH_GFN && gfn < SCRATCH_GFN + SCRATCH_PAGES as u64);
    gfn < FOUR_GIB >> 12 && (!in_image || allowed_in_image)
}

fn mem_read(addr: u64, size: u64) -> Option<u64> {
    if addr.checked_add(size)? > FOUR_GIB {
        return None;
    }
    let v: u64;
    // SAFETY: the low 4 GiB are identity-mapped; the test chose the address and owns the effect
    // of reading it (RAM or MMIO). One instruction of exactly the requested width.
    unsafe {
        match size {
            1 => {
                asm!("movzx {v:e}, byte ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
            }
            2 => {
                asm!("movzx {v:e}, word ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
            }
            4 => {
                asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
            }
            8 => {
                asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
            }
            _ => return None,
        }
    }
    Some(v)
}

fn mem_write(addr: u64, value: u64, size: u64) -> Option<()> {
    if addr.checked_add(size)? > FOUR_GIB {
        return None;
    }
    // SAFETY: as in mem_read; the test owns the effect of the write.
    unsafe {
        match size {
            1 => {
                asm!("mov byte ptr [{a}], {v:l}", a = in(reg) addr, v = in(reg) value, options(nostack))
            }
            2 => {
                asm!("mov word ptr [{a}], {v:x}", a = in(reg) addr, v = in(reg) value, options(nostack))
            }
            4 => {
                asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) value, options(nostack))
            }
            8 => {
                asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) value, options(nostack))
            }
            _ => return None,
        }
    }
    Some(())
}

fn port_out(port: u64, value: u64, size: u64) -> Option<()> {
    let port = u16::try_from(port).ok()?;
    match size {
        1 => outb(port, value as u8),
        2 => outw(port, value as u16),
        4 => outl(port, value as u32),
        _ => return None,
    }
    Some(())
}

fn port_in(port: u64, size: u64) -> Option<u64> {
    let port = u16::try_from(port).ok()?;
    Some(match size {
        1 => inb(port) as u64,
        2 => inw(port) as u64,
        4 => inl(port) as u64,
        _ => return None,
    })
}

fn rep_io(vcpu: usize, out: bool, port: u64, flags: u64, size: u64, count: u64) -> Option<()> {
    let port = u16::try_from(port).ok()?;
    if !matches!(size, 1 | 2 | 4) || count == 0 || count.checked_mul(size)? > PAGE_SIZE as u64 {
        return None;
    }
    let base = data_gfn(vcpu) << 12;
    let backwards = flags & 1 != 0;
    let start = if backwards {
        base + (count - 1) * size
    } else {
        base
    };
    // SAFETY: the buffer is this vCPU's data page, inside the image; the direction flag is
    // restored before returning.
    unsafe {
        macro_rules! rep {
            ($insn:literal) => {
                if backwards {
                    asm!("std", concat!("rep ", $insn), "cld", in("dx") port,
                         inout("rsi") start => _, inout("rdi") start => _, inout("rcx") count => _,
                         options(nostack))
                } else {
                    asm!(concat!("rep ", $insn), in("dx") port,
                         inout("rsi") start => _, inout("rdi") start => _, inout("rcx") count => _,
                         options(nostack))
                }
            };
        }
        match (out, size) {
            (true, 1) => rep!("outsb"),
            (true, 2) => rep!("outsw"),
            (true, 4) => rep!("outsd"),
            (false, 1) => rep!("insb"),
            (false, 2) => rep!("insw"),
            (false, 4) => rep!("insd"),
            _ => return None,
        }
    }
    Some(())
}

/// `rep movs` between the vCPU's data page and guest-physical `addr` (either direction).
fn rep_movs(
    vcpu: usize,
    to_addr: bool,
    addr: u64,
    flags: u64,
    size: u64,
    count: u64,
) -> Option<()> {
    let bytes = count.checked_mul(size)?;
    if !matches!(size, 1 | 2 | 4 | 8)
        || count == 0
        || bytes > PAGE_SIZE as u64
        || addr.checked_add(bytes)? > FOUR_GIB
    {
        return None;
    }
    let buf = data_gfn(vcpu) << 12;
    let (mut src, mut dst) = if to_addr { (buf, addr) } else { (addr, buf) };
    let backwards = flags & 1 != 0;
    if backwards {
        src += bytes - size;
        dst += bytes - size;
    }
    // SAFETY: the buffer is this vCPU's data page; the other side is identity-mapped memory the
    // test chose (RAM or MMIO) and owns the effect on; the direction flag is restored.
    unsafe {
        macro_rules! movs {
            ($insn:literal) => {
                if backwards {
                    asm!("std", concat!("rep ", $insn), "cld",
                         inout("rsi") src => _, inout("rdi") dst => _, inout("rcx") count => _,
                         options(nostack))
                } else {
                    asm!(concat!("rep ", $insn),
                         inout("rsi") src => _, inout("rdi") dst => _, inout("rcx") count => _,
                         options(nostack))
                }
            };
        }
        match size {
            1 => movs!("movsb"),
            2 => movs!("movsw"),
            4 => movs!("movsd"),
            _ => movs!("movsq"),
        }
    }
    Some(())
}

fn frame_bytes(gfn: u64) -> impl Iterator<Item = u8> {
    let base = gfn << 12;
    // SAFETY: the caller checked gfn < 4 GiB >> 12 (identity-mapped); volatile reads.
    (0..PAGE_SIZE as u64).map(move |i| unsafe { core::ptr::read_volatile((base + i) as *const u8) })
}

fn op_name(op: u32) -> &'static str {
    match op {
        OP_PING => "ping",
        OP_PORT_OUT => "port_out",
        OP_PORT_IN => "port_in",
        OP_REP_OUTS => "rep_outs",
        OP_REP_INS => "rep_ins",
        OP_MEM_READ => "mem_read",
        OP_MEM_WRITE => "mem_write",
        OP_PCI_CFG_READ => "pci_cfg_read",
        OP_PCI_CFG_WRITE => "pci_cfg_write",
        OP_FILL => "fill",
        OP_CHECKSUM => "checksum",
        OP_COPY_OUT => "copy_out",
        OP_HALT => "halt",
        OP_SHUTDOWN => "shutdown",
        OP_HYPERCALL => "hypercall",
        OP_CPUID => "cpuid",
        OP_REP_MOVS_TO => "rep_movs_to",
        OP_REP_MOVS_FROM => "rep_movs_from",
        _ => "unknown",
    }
}

fn pci_select(addr: u64) -> Option<u16> {
    if addr > 0x00ff_ffff {
        return None;
    }
    outl(0xcf8, 0x8000_0000 | (addr as u32 & 0x00ff_fffc));
    Some(0xcfc + (addr & 3) as u16)
}

/// Runs one command; returns (status, result, result2).
fn execute(vcpu: usize, seq: u32, op: u32, a: [u64; 6]) -> (u32, u64, u64) {
    let bad = (STATUS_BAD_ARG, 0, 0);
    let ok = |r: u64| (STATUS_OK, r, 0);
    match op {
        OP_PING => (STATUS_OK, MAGIC as u64, vcpu as u64),
        OP_PORT_OUT => port_out(a[0], a[1], a[2]).map_or(bad, |()| ok(0)),
        OP_PORT_IN => port_in(a[0], a[2]).map_or(bad, ok),
        OP_REP_OUTS => rep_io(vcpu, true, a[0], a[1], a[2], a[3]).map_or(bad, |()| ok(0)),
        OP_REP_INS => rep_io(vcpu, false, a[0], a[1], a[2], a[3]).map_or(bad, |()| ok(0)),
        OP_MEM_READ => mem_read(a[0], a[2]).map_or(bad, ok),
        OP_REP_MOVS_TO => rep_movs(vcpu, true, a[0], a[1], a[2], a[3]).map_or(bad, |()| ok(0)),
        OP_REP_MOVS_FROM => rep_movs(vcpu, false, a[0], a[1], a[2], a[3]).map_or(bad, |()| ok(0)),
        OP_MEM_WRITE => mem_write(a[0], a[1], a[2]).map_or(bad, |()| ok(0)),
        OP_PCI_CFG_READ => match pci_select(a[0]) {
            Some(port) if a[2] != 0 && (a[0] & 3) + a[2] <= 4 => {
                port_in(port as u64, a[2]).map_or(bad, ok)
            }
            _ => bad,
        },
        OP_PCI_CFG_WRITE => match pci_select(a[0]) {
            Some(port) if a[2] != 0 && (a[0] & 3) + a[2] <= 4 => {
                port_out(port as u64, a[1], a[2]).map_or(bad, |()| ok(0))
            }
            _ => bad,
        },
        OP_FILL => {
            let gfn = if a[0] == 0 { SCRATCH_GFN } else { a[0] };
            if !frame_writable(gfn) {
                return bad;
            }
            let base = gfn << 12;
            for i in 0..PAGE_SIZE {
                // SAFETY: frame_writable: identity-mapped, not our code or control page.
                unsafe {
                    core::ptr::write_volatile((base + i as u64) as *mut u8, pattern_byte(a[1], i))
                };
            }
            ok(gfn)
        }
        OP_CHECKSUM => {
            if a[0] >= FOUR_GIB >> 12 {
                return bad;
            }
            ok(fnv1a64(frame_bytes(a[0])))
        }
        OP_COPY_OUT => {
            if a[0] >= FOUR_GIB >> 12 {
                return bad;
            }
            let dst = data_gfn(vcpu) << 12;
            for (i, b) in frame_bytes(a[0]).enumerate() {
                // SAFETY: the vCPU's own data page.
                unsafe { core::ptr::write_volatile((dst + i as u64) as *mut u8, b) };
            }
            ok(fnv1a64(frame_bytes(data_gfn(vcpu))))
        }
        OP_HALT => {
            finish(vcpu, seq, op, a, (STATUS_OK, 0, 0));
            wr32(hdr(offsets::STATE), STATE_HALTED);
            halt_forever();
        }
        OP_SHUTDOWN => {
            if !hypercalls_ok() {
                return (STATUS_NO_HYPERCALLS, 0, 0);
            }
            finish(vcpu, seq, op, a, (STATUS_OK, 0, 0));
            let reason = a[0] as u32;
            let rc = hypercall(
                HYPERVISOR_SCHED_OP,
                [SCHEDOP_SHUTDOWN, &reason as *const u32 as u64, 0, 0, 0],
            );
            say!("xrtg: SCHEDOP_shutdown({}) returned {}", reason, rc);
            (STATUS_OK, rc as u64, 0)
        }
        OP_HYPERCALL => {
            if !hypercalls_ok() {
                return (STATUS_NO_HYPERCALLS, 0, 0);
            }
            ok(hypercall(a[0], [a[1], a[2], a[3], a[4], a[5]]) as u64)
        }
        OP_CPUID => {
            let (ax, bx, cx, dx) = cpuid(a[0] as u32, a[1] as u32);
            (
                STATUS_OK,
                ax as u64 | (bx as u64) << 32,
                cx as u64 | (dx as u64) << 32,
            )
        }
        _ => (STATUS_BAD_OP, 0, 0),
    }
}

/// Publishes a command's results, then its ack, then logs it.
fn finish(vcpu: usize, seq: u32, op: u32, a: [u64; 6], (status, result, result2): (u32, u64, u64)) {
    wr32(slot(vcpu, offsets::SLOT_STATUS), status);
    wr64(slot(vcpu, offsets::SLOT_RESULT), result);
    wr64(slot(vcpu, offsets::SLOT_RESULT2), result2);
    fence(Ordering::Release);
    wr32(slot(vcpu, offsets::SLOT_ACK), seq);
    if !quiet() {
        say!(
            "xrtg: v{} #{} {} {:#x} {:#x} {:#x} {:#x} -> status {} result {:#x}",
            vcpu,
            seq,
            op_name(op),
            a[0],
            a[1],
            a[2],
            a[3],
            status,
            result
        );
    }
}

/// Polls vCPU `vcpu`'s slot forever: sleeps in `hlt` until the next tick between polls (with
/// `FLAG_SPIN`: spins for a few ticks after each command first) (or spins throughout when `use_hlt` is false: no timer).
fn serve(vcpu: usize, use_hlt: bool) -> ! {
    wr32(slot(vcpu, offsets::SLOT_APIC_ID), lapic_read(0x20) >> 24);
    let mut last = rd32(slot(vcpu, offsets::SLOT_SEQ));
    let mut busy_until = rd32(hdr(offsets::TICKS)).wrapping_add(5);
    loop {
        let seq = rd32(slot(vcpu, offsets::SLOT_SEQ));
        wr32(slot(vcpu, offsets::SLOT_SEEN), seq);
        wr32(
            slot(vcpu, offsets::SLOT_POLLS),
            rd32(slot(vcpu, offsets::SLOT_POLLS)).wrapping_add(1),
        );
        if seq != last {
            fence(Ordering::Acquire);
            let op = rd32(slot(vcpu, offsets::SLOT_OP));
            let mut a = [0u64; 6];
            for (i, arg) in a.iter_mut().enumerate() {
                *arg = rd64(slot(vcpu, offsets::SLOT_ARGS + 8 * i));
            }
            let r = execute(vcpu, seq, op, a);
            finish(vcpu, seq, op, a, r);
            last = seq;
            busy_until = rd32(hdr(offsets::TICKS)).wrapping_add(5);
        } else if !use_hlt
            || (rd32(hdr(offsets::FLAGS)) & FLAG_SPIN != 0
                && (busy_until.wrapping_sub(rd32(hdr(offsets::TICKS))) as i32) > 0)
        {
            core::hint::spin_loop();
        } else {
            // SAFETY: interrupts are enabled; the timer tick wakes us.
            unsafe { asm!("hlt", options(nomem, nostack)) }
        }
    }
}

#[no_mangle]
extern "C" fn rust_main(boot_kind: u32, start_info: u32) -> ! {
    wr32(hdr(offsets::VERSION), VERSION);
    wr32(hdr(offsets::BOOT_KIND), boot_kind);
    wr64(CTL + 64, start_info as u64);
    setup_idt();
    let xen = if setup_hypercall_page() {
        hypercall(HYPERVISOR_XEN_VERSION, [0; 5]) as u32
    } else {
        0
    };
    wr32(hdr(offsets::XEN_VERSION), xen);
    setup_lapic();
    // SAFETY: the IDT and the local APIC are set up.
    unsafe { asm!("sti", options(nomem, nostack)) };
    // Wait for the first tick so we know `hlt` will be woken; give up on it (and only spin) if
    // the timer never fires.
    let mut timer = false;
    for _ in 0..50_000_000u32 {
        if rd32(hdr(offsets::TICKS)) != 0 {
            timer = true;
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: written before any secondary vCPU starts.
    unsafe { core::ptr::write_volatile(&raw mut TIMER_OK, timer) };
    let kind = match boot_kind {
        BOOT_HVM => "hvm",
        BOOT_PVH => "pvh",
        _ => "?",
    };
    say!(
        "xrtg: xen-rs test guest up: {} boot, Xen {}.{}, mailbox gfn {:#x}, timer {}",
        kind,
        xen >> 16,
        xen & 0xffff,
        MAILBOX_GFN,
        if timer { "ok" } else { "missing (spinning)" }
    );
    atomic_inc(hdr(offsets::VCPUS_ONLINE));
    let started = start_secondary_vcpus();
    // Give the secondaries a moment to report in (the test waits for the count it expects).
    for _ in 0..10_000_000u32 {
        if rd32(hdr(offsets::VCPUS_ONLINE)) > started {
            break;
        }
        core::hint::spin_loop();
    }
    wr32(hdr(offsets::STATE), STATE_READY);
    fence(Ordering::Release);
    wr32(hdr(offsets::MAGIC), MAGIC);
    serve(0, timer)
}

const HYPERVISOR_VCPU_OP: u64 = 24;
const VCPUOP_INITIALISE: u64 = 0;
const VCPUOP_UP: u64 = 1;

static mut TIMER_OK: bool = false;

/// Starts vCPUs 1.. (as many as exist, up to MAX_VCPUS) in long mode at `ap_entry64`; returns how
/// many started.
fn start_secondary_vcpus() -> u32 {
    if !hypercalls_ok() {
        return 0;
    }
    let mut started = 0;
    for v in 1..MAX_VCPUS as u64 {
        // struct vcpu_hvm_context: mode, pad, then the 64-bit registers (the union is 120 bytes).
        let mut ctx = [0u64; 16];
        ctx[0] = 1; // VCPU_HVM_MODE_64B
        let regs = &mut ctx[1..];
        let stack_top = &raw const ap_stacks as u64 + AP_STACK as u64 * v;
        regs[4] = stack_top - 8; // rsp (as after a call: keeps the ABI's alignment)
        regs[7] = v; // rdi: the vCPU number, ap_main's argument
        regs[8] = &raw const ap_entry64 as u64; // rip
        regs[9] = 0x2; // rflags
        regs[10] = 0x8000_0011; // cr0: PG | ET | PE
        regs[11] = &raw const boot_pml4 as u64; // cr3
        regs[12] = 0x20; // cr4: PAE
        regs[13] = 0x500; // efer: LMA | LME
        let rc = hypercall(
            HYPERVISOR_VCPU_OP,
            [VCPUOP_INITIALISE, v, ctx.as_ptr() as u64, 0, 0],
        );
        if rc != 0 {
            break; // no such vCPU (-ENOENT) or not allowed
        }
        let rc = hypercall(HYPERVISOR_VCPU_OP, [VCPUOP_UP, v, 0, 0, 0]);
        if rc != 0 {
            say!("xrtg: VCPUOP_up({}) returned {}", v, rc);
            break;
        }
        started += 1;
    }
    started
}

#[no_mangle]
extern "C" fn ap_main(vcpu: u64) -> ! {
    let idt_addr = &raw const idt as u64;
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr {
        limit: 256 * 16 - 1,
        base: idt_addr,
    };
    // SAFETY: the IDT vCPU 0 built stays in place for the guest's life.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) }
    setup_lapic();
    // SAFETY: IDT and local APIC are set up.
    unsafe { asm!("sti", options(nomem, nostack)) };
    atomic_inc(hdr(offsets::VCPUS_ONLINE));
    // SAFETY: written by vCPU 0 before it started us.
    let timer = unsafe { core::ptr::read_volatile(&raw const TIMER_OK) };
    serve(vcpu as usize, timer)
}

const SCHEDOP_POLL: u64 = 3;

/// The PV guest: no emulated hardware and no console it may write to (Xen refuses console_io
/// to unprivileged domains in release builds), so it only proves it runs: it blocks in
/// `SCHEDOP_poll` forever (`xl list` shows it blocked, not crashed). Its mailbox is not
/// reachable from dom0 without its p2m, so it takes no commands.
#[no_mangle]
extern "C" fn pv_main(_start_info: u64) -> ! {
    // SAFETY: Xen filled the hypercall page named by our HYPERCALL_PAGE note.
    unsafe { core::ptr::write_volatile(&raw mut HYPERCALLS_OK, true) };
    // struct sched_poll { ports (handle), nr_ports (u32 + pad), timeout (u64) }: no ports, no
    // timeout: sleep until any event arrives, then go back to sleep.
    let poll = [0u64; 3];
    loop {
        hypercall(
            HYPERVISOR_SCHED_OP,
            [SCHEDOP_POLL, poll.as_ptr() as u64, 0, 0, 0],
        );
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("xrtg: panic: {}", info.message());
    wr32(hdr(offsets::STATE), STATE_CRASHED);
    halt_forever()
}
