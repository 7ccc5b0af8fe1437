//! The Linux demo: dom0's own Debian kernel boots in an HVM guest whose every emulated
//! device is served by xen-pcdm's binary (no QEMU process in dom0), to a busybox shell on
//! the guest's ttyS0.
//!
//! dom0's `demo` script makes a scratch disk, creates the guest paused (hvmloader + SeaBIOS;
//! libxl's device-model handshake answered by the fake device model, which serves nothing),
//! starts `xen-pcdm --kernel` against it and unpauses the guest once it says `ready`. The
//! device model's stdout (the guest's serial output) goes to the console as it comes, its
//! stdin is the console (interactive) or a FIFO the script types into once the shell's
//! prompt shows (scripted). The guest's `poweroff` ends the device model; the script then
//! prints the times it noted, the device model's summary, and its exit status.

use std::cell::Cell;
use std::time::Duration;

use crate::xen_test::init_script::{
    power_off, toolstack_start, HEARTBEAT_MARKER, HEARTBEAT_SECS, INIT_MARKER,
};
use crate::xen_test::PAYLOAD_DIR;

/// The guest's name in `xl list`.
pub const GUEST_NAME: &str = "xen-rs-linux-demo";
/// The device model's payload name in dom0.
pub const PCDM: &str = "xen-pcdm";
/// The guest kernel in dom0 (dom0's own bzImage).
pub const KERNEL: &str = "linux-guest.bzImage";
/// The guest's RAM, MiB.
pub const MEMORY_MIB: u32 = 256;
/// The scratch disk's size, MiB.
pub const DISK_MIB: u32 = 128;

/// Printed once the guest exists: followed by its domain id.
pub const CREATED_MARKER: &str = "=== linux demo: guest created paused, domain ";
/// Printed after the device model ended: `UNPAUSE INIT` (dom0 uptimes, `-` if never).
pub const TIMES_MARKER: &str = "=== linux demo: times ";
/// Printed when the device model has exited: followed by its exit status.
pub const DM_EXIT_MARKER: &str = "=== linux demo: xen-pcdm exit ";
/// Prefix of the script's complaints.
pub const PROBLEM_PREFIX: &str = "demo: dom0: ";
/// What the guest's init prints once it runs (xen-pcdm's `linux::INIT_MARKER`).
pub const GUEST_INIT_MARKER: &str = "XENPCDM-LINUX-INIT";
/// The guest's 64 MiB read: `XENPCDM-SEQ START END` (guest uptimes).
pub const SEQ_MARKER: &str = "XENPCDM-SEQ ";
/// Printed by the guest just before its shell starts.
pub const SHELL_MARKER: &str = "XENPCDM-SHELL";

/// What the scripted run types at the shell's prompt, one line at a time.
pub const COMMANDS: [&str; 5] = [
    "uname -a",
    "cat /proc/interrupts",
    "lspci -k 2>/dev/null || cat /sys/bus/pci/devices/0000:00:03.0/uevent",
    "dd if=/dev/vda of=/dev/null bs=1M count=32 iflag=direct",
    "poweroff",
];

/// The guest's init after the disk appears: the timed 64 MiB read, a greeting, the shell,
/// power-off when it ends.
pub fn guest_init() -> String {
    let mut s = String::new();
    s += "echo \"alias poweroff='poweroff -f'; alias reboot='reboot -f'\" >/etc/profile\n";
    s += "export ENV=/etc/profile\n";
    s += "t0=$(cut -d' ' -f1 /proc/uptime)\n";
    s += "dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null\n";
    s += &format!("echo {SEQ_MARKER}$t0 $(cut -d' ' -f1 /proc/uptime)\n");
    s += "echo \"Linux $(uname -r) on xen-pcdm: $(grep -c . /proc/interrupts) interrupt lines, disk $(cat /sys/block/vda/size) sectors\"\n";
    s += &format!("echo {SHELL_MARKER}: a busybox shell on ttyS0, served by our 16550A; poweroff ends the demo\n");
    s += "setsid cttyhack sh\n";
    s += "poweroff -f\n";
    s
}

/// The guest's xl config: hvmloader + SeaBIOS, [`MEMORY_MIB`], 1 vCPU, no emulated devices
/// but ours (the fake device model only answers libxl's handshake).
pub fn xl_config(fake_dm: &str) -> String {
    let mut s = String::new();
    for l in [
        format!("name = \"{GUEST_NAME}\""),
        "type = \"hvm\"".into(),
        format!("memory = {MEMORY_MIB}"),
        format!("maxmem = {MEMORY_MIB}"),
        "vcpus = 1".into(),
        "tsc_mode = \"native\"".into(),
        "on_poweroff = \"destroy\"".into(),
        "on_reboot = \"destroy\"".into(),
        "on_crash = \"destroy\"".into(),
        "device_model_version = \"qemu-xen\"".into(),
        format!("device_model_override = \"{fake_dm}\""),
        "vga = \"none\"".into(),
        "vnc = 0".into(),
        "sdl = 0".into(),
        "nographic = 1".into(),
        "serial = \"none\"".into(),
        "usb = 0".into(),
        "vkb_device = 0".into(),
    ] {
        s += &l;
        s += "\n";
    }
    s
}

/// The `/opt/xen-rs/demo` script; `interactive`: the console is the guest's keyboard.
pub fn demo(interactive: bool) -> String {
    let mut s = String::new();
    s += "#!/bin/sh\n";
    s += "# The `cargo xtask demo` run in dom0 (generated): Linux in an HVM guest served by xen-pcdm.\n";
    s += &format!("problem() {{ echo \"{PROBLEM_PREFIX}$*\"; }}\n");
    s += "up() { cut -d' ' -f1 /proc/uptime; }\n";
    s += "cat >/tmp/guest-init.sh <<'EOF'\n";
    s += &guest_init();
    s += "EOF\n";
    s += "cat >/tmp/demo-guest.cfg <<'EOF'\n";
    s += &xl_config(&format!("{PAYLOAD_DIR}/xen-testkit-dm"));
    s += "EOF\n";
    // A sparse scratch disk (xen-pcdm writes its boot sector in the first sector).
    s += &format!("dd if=/dev/zero of=/tmp/demo.img bs=1M count=0 seek={DISK_MIB} 2>/dev/null\n");
    s += "if ! xl create -p /tmp/demo-guest.cfg >/tmp/xl-create.log 2>&1; then\n";
    s += "    problem 'xl create failed:'; cat /tmp/xl-create.log; exit 1\n";
    s += "fi\n";
    s += &format!("domid=$(xl domid {GUEST_NAME})\n");
    s += &format!("echo \"{CREATED_MARKER}$domid\"\n");
    s += "rm -f /tmp/dm.out /tmp/dm.err /tmp/t.unpause /tmp/t.init; : >/tmp/dm.out; : >/tmp/dm.err\n";
    // Unpause once the device model is set up; note when the guest's init speaks.
    s += "( i=0; until grep -q ': ready$' /tmp/dm.err; do sleep 0.1; i=$((i+1)); [ $i -gt 600 ] && exit; done\n";
    s += "  xl unpause \"$domid\" </dev/null >/dev/null 2>&1 && up >/tmp/t.unpause\n";
    s += &format!(
        "  until grep -q {GUEST_INIT_MARKER} /tmp/dm.out; do sleep 0.1; [ -e /tmp/dm.rc ] && exit; done; up >/tmp/t.init ) &\n"
    );
    s += "rm -f /tmp/dm.rc\n";
    let dm = format!(
        "{PAYLOAD_DIR}/{PCDM} --domid \"$domid\" --memory {MEMORY_MIB} --disk /tmp/demo.img \
         --kernel {PAYLOAD_DIR}/{KERNEL} --init /tmp/guest-init.sh"
    );
    if interactive {
        // Keys go to the guest as typed; it echoes them itself.
        s += "stty raw -echo 2>/dev/null\n";
        s += &format!("{{ {dm} 2>/tmp/dm.err; echo $? >/tmp/dm.rc; }} | tee /tmp/dm.out\n");
        s += "stty sane 2>/dev/null\n";
    } else {
        // Typed at each prompt (the output ends with "# "), one command at a time.
        s += "rm -f /tmp/dm.in; mkfifo /tmp/dm.in; exec 3<>/tmp/dm.in\n";
        s += "( until grep -q XENPCDM-SHELL /tmp/dm.out; do sleep 0.2; [ -e /tmp/dm.rc ] && exit; done\n";
        s += "  for c in";
        for c in COMMANDS {
            s += " ";
            s += &crate::xen_test::init_script::sh_quote(c);
        }
        s += "; do\n";
        // The prompt may be followed by busybox's cursor-position query (ESC [6n).
        s += "    n=0; until tail -c 8 /tmp/dm.out | grep -q '# '; do sleep 0.2; n=$((n+1)); [ $n -gt 600 ] && exit; [ -e /tmp/dm.rc ] && exit; done\n";
        s += "    s0=$(wc -c </tmp/dm.out); sleep 0.5; printf '%s\\r' \"$c\" >&3\n";
        // Until the guest has echoed the line: the prompt above is no longer the last word.
        s += "    n=0; until [ $(wc -c </tmp/dm.out) -gt $((s0 + ${#c})) ]; do sleep 0.2; n=$((n+1)); [ $n -gt 300 ] && break; [ -e /tmp/dm.rc ] && exit; done\n";
        s += "  done ) &\n";
        s += &format!("{{ {dm} <&3 2>/tmp/dm.err; echo $? >/tmp/dm.rc; }} | tee /tmp/dm.out\n");
        s += "exec 3>&-\n";
    }
    s += "rc=$(cat /tmp/dm.rc 2>/dev/null || echo 1)\n";
    s += "echo\n";
    s += &format!(
        "echo \"{TIMES_MARKER}$(cat /tmp/t.unpause 2>/dev/null || echo -) $(cat /tmp/t.init 2>/dev/null || echo -)\"\n"
    );
    s += "cat /tmp/dm.err\n";
    s += &format!("echo \"{DM_EXIT_MARKER}$rc\"\n");
    s += "xl destroy \"$domid\" >/dev/null 2>&1\n";
    s += "exit $rc\n";
    s
}

/// dom0's `/init` for the Linux demo. The machine's watchdog wants a line at least every
/// minute: the heartbeat speaks only when the guest has been silent for a while (so it does
/// not cut the guest's lines), and not at all when interactive (it would print into the
/// shell; the machine then has no deadline).
pub fn init(modules: &[String], xen_bin: &str, interactive: bool) -> String {
    let mut s = toolstack_start("demo", modules, xen_bin);
    if !interactive {
        s += &format!(
            "( while sleep {HEARTBEAT_SECS}; do \
             [ -e /tmp/dm.out ] && [ $(( $(date +%s) - $(stat -c %Y /tmp/dm.out) )) -lt {HEARTBEAT_SECS} ] && continue; \
             echo \"{HEARTBEAT_MARKER}$(cut -d' ' -f1 /proc/uptime) s\"; done ) &\n"
        );
    }
    s += &format!("{PAYLOAD_DIR}/demo\nrc=$?\n");
    s += &power_off();
    s
}

/// What the run's console says.
#[derive(Debug, Default, PartialEq)]
pub struct Run {
    /// dom0's init ran.
    pub dom0_up: bool,
    /// The guest's domain id.
    pub domid: Option<u32>,
    /// Unpause to the guest's init marker (dom0's clock), seconds.
    pub boot_secs: Option<f64>,
    /// The guest's 64 MiB read, MB/s (its own clock).
    pub read_mb_s: Option<f64>,
    /// The guest's init ran.
    pub guest_init: bool,
    /// The shell started.
    pub shell: bool,
    /// xen-pcdm's `served ...` summary.
    pub served: Option<String>,
    /// xen-pcdm's peak RSS line.
    pub rss: Option<String>,
    /// xen-pcdm's exit status.
    pub dm_exit: Option<i32>,
    /// The script's complaints and xen-pcdm's errors.
    pub problems: Vec<String>,
}

impl Run {
    /// Reads the console log.
    pub fn parse(console: &str) -> Run {
        let mut r = Run::default();
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            if line.contains(INIT_MARKER) {
                r.dom0_up = true;
            } else if let Some(id) = line.strip_prefix(CREATED_MARKER) {
                r.domid = id.trim().parse().ok();
            } else if let Some(t) = line.strip_prefix(TIMES_MARKER) {
                let v: Vec<Option<f64>> = t.split_whitespace().map(|x| x.parse().ok()).collect();
                if let [Some(a), Some(b)] = v[..] {
                    r.boot_secs = Some(b - a);
                }
            } else if let Some(t) = line.find(SEQ_MARKER).map(|i| &line[i + SEQ_MARKER.len()..]) {
                let v: Vec<f64> = t
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [a, b] = v[..] {
                    r.read_mb_s = Some(64.0 * 1.048_576 / (b - a).max(0.01));
                }
            } else if let Some(rest) = line.strip_prefix("xen-pcdm: served ") {
                r.served = Some(rest.to_owned());
            } else if line.starts_with("xen-pcdm: peak resident memory") {
                r.rss = Some(line["xen-pcdm: ".len()..].to_owned());
            } else if let Some(code) = line.strip_prefix(DM_EXIT_MARKER) {
                r.dm_exit = code.trim().parse().ok();
            } else if line.starts_with(PROBLEM_PREFIX)
                || line.starts_with("xen-test: dom0: ")
                || (line.starts_with("xen-pcdm: ")
                    && !line.starts_with("xen-pcdm: disk ")
                    && !line.ends_with(": ready"))
            {
                r.problems.push(line.to_owned());
            }
            if line.contains(GUEST_INIT_MARKER) {
                r.guest_init = true;
            }
            if line.contains(SHELL_MARKER) && !line.contains("grep") {
                r.shell = true;
            }
        }
        r
    }

    /// What went wrong.
    pub fn failures(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.dom0_up {
            v.push("dom0 never started".to_string());
            return v;
        }
        if self.domid.is_none() {
            v.push("the guest was not created".into());
        } else if !self.guest_init {
            v.push("the guest's Linux never reached its init".into());
        } else if !self.shell {
            v.push("the guest's shell never started".into());
        }
        match self.dm_exit {
            Some(0) => {}
            Some(c) => v.push(format!("xen-pcdm exited {c}")),
            None => v.push("xen-pcdm did not finish".into()),
        }
        v.extend(self.problems.iter().cloned());
        v
    }

    /// The demo's last line.
    pub fn last_line(&self) -> String {
        let f = |x: Option<f64>, p: usize| x.map_or("?".into(), |x| format!("{x:.p$}"));
        format!(
            "demo: linux booted to user space in {} s; disk read {} MB/s",
            f(self.boot_secs, 1),
            f(self.read_mb_s, 1)
        )
    }
}

/// Quiet mode: what to show of a console line. The guest's serial output (everything the
/// device model prints on stdout, once the guest exists: `guest_seen`) is shown as it is;
/// Xen's, dom0's and the firmware's own lines only as milestones.
pub fn screen(line: &str, elapsed: Duration, guest_seen: &Cell<bool>) -> Option<String> {
    let t = elapsed.as_secs_f64();
    if line.contains(INIT_MARKER) {
        return Some(format!(
            "demo: dom0 up after {t:.1} s; creating an HVM guest (hvmloader + SeaBIOS) and starting xen-pcdm --kernel"
        ));
    }
    if let Some(id) = line.strip_prefix(CREATED_MARKER) {
        guest_seen.set(true);
        return Some(format!(
            "demo: guest domain {} created paused; xen-pcdm serves it (PC chipset, 16550A, fw_cfg, virtio-blk, ACPI PM)",
            id.trim()
        ));
    }
    if line.starts_with("(d") {
        // The firmware's debug port, through Xen's console.
        if line.contains("SeaBIOS (version") || line.contains("Booting from Hard Disk") {
            let text = line.split_once("] ").map_or(line, |(_, b)| b);
            return Some(format!("  firmware| {text}"));
        }
        return None;
    }
    if line.starts_with("(XEN)")
        || line.starts_with('[')
        || line.starts_with("=== heartbeat")
        || line.starts_with("===")
        || line.starts_with("xen-pcdm: disk ")
        || line.contains(SEQ_MARKER)
        || line.trim().is_empty()
        || !guest_seen.get()
    {
        return None;
    }
    if line.starts_with("xen-pcdm: served ")
        || line.starts_with("xen-pcdm: peak ")
        || line.ends_with(": ready")
    {
        // In the summary.
        return None;
    }
    if line.starts_with("xen-pcdm: ") || line.starts_with(PROBLEM_PREFIX) {
        return Some(format!("demo: {line}"));
    }
    let line = strip_csi(line);
    if line.contains(GUEST_INIT_MARKER) {
        return Some(format!("  guest| {line}   (at {t:.1} s)"));
    }
    Some(format!("  guest| {line}"))
}

/// `line` without terminal control sequences (ESC [ ... final byte), e.g. the shell's
/// cursor-position query.
fn strip_csi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_demo_types_at_the_prompt_and_reports() {
        let s = demo(false);
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("no `{needle}` in:\n{s}"))
        };
        assert!(pos("xl create -p /tmp/demo-guest.cfg") < pos(CREATED_MARKER));
        assert!(pos(CREATED_MARKER) < pos("/opt/xen-rs/xen-pcdm --domid \"$domid\""));
        assert!(
            s.contains("--kernel /opt/xen-rs/linux-guest.bzImage --init /tmp/guest-init.sh <&3")
        );
        assert!(s.contains("'uname -a'"));
        assert!(s.contains("'poweroff'"));
        assert!(pos("| tee /tmp/dm.out") < pos(TIMES_MARKER));
        assert!(pos(TIMES_MARKER) < pos(DM_EXIT_MARKER));
        assert!(s.ends_with("exit $rc\n"));
        assert!(!s.contains("stty raw"));
        let i = demo(true);
        assert!(i.contains("stty raw -echo"));
        assert!(!i.contains("<&3"));
        assert!(!init(&[], "/x", true).contains("heartbeat"));
        assert!(init(&[], "/x", false).contains("stat -c %Y /tmp/dm.out"));
        assert!(xl_config("/f").contains("memory = 256\n"));
    }

    #[test]
    fn parses_a_run() {
        let log = "=== xen-test: dom0 init started\n\
                   === linux demo: guest created paused, domain 1\n\
                   XENPCDM-LINUX-INIT uptime 80.1\r\n\
                   XENPCDM-SEQ 81.00 82.00\r\n\
                   XENPCDM-SHELL: a busybox shell\r\n\
                   / # poweroff\r\n\
                   === linux demo: times 20.5 120.0\n\
                   xen-pcdm: serving domain 1: ready\n\
                   xen-pcdm: served port=1 mmio=2 pci-config=3 buffered=0 other=1 in 99.0 s\n\
                   xen-pcdm: disk BlkStats { reads: 1 }\n\
                   xen-pcdm: peak resident memory (VmHWM of this process) 30000 KiB\n\
                   === linux demo: xen-pcdm exit 0\n";
        let r = Run::parse(log);
        assert!(r.failures().is_empty(), "{:?}", r.failures());
        assert_eq!(r.domid, Some(1));
        assert_eq!(r.boot_secs, Some(99.5));
        assert!((r.read_mb_s.unwrap() - 67.1).abs() < 0.1);
        assert_eq!(
            r.last_line(),
            "demo: linux booted to user space in 99.5 s; disk read 67.1 MB/s"
        );
        assert!(r.rss.unwrap().contains("30000 KiB"));
        let bad = Run::parse("=== xen-test: dom0 init started\n=== linux demo: xen-pcdm exit 1\n");
        assert_eq!(bad.failures().len(), 2);
    }

    #[test]
    fn screen_shows_the_guest_and_hides_the_machine() {
        let d = Duration::from_secs(1);
        let seen = Cell::new(false);
        let screen = |l: &str, d| screen(l, d, &seen);
        assert_eq!(screen("mapping kernel into physical memory", d), None);
        assert!(screen("=== linux demo: guest created paused, domain 1", d).is_some());
        assert_eq!(screen("(XEN) foo", d), None);
        assert_eq!(screen("[   1.0] dom0 kernel", d), None);
        assert_eq!(screen("(d1) [  1.0] hvmloader stuff", d), None);
        assert!(screen("(d1) [ 18.6] SeaBIOS (version 1.16)", d).is_some());
        assert_eq!(
            screen("/ # \x1b[6nuname -a", d).as_deref(),
            Some("  guest| / # uname -a")
        );
        assert_eq!(
            screen("Linux 6.1 x86_64", d).as_deref(),
            Some("  guest| Linux 6.1 x86_64")
        );
    }
}
