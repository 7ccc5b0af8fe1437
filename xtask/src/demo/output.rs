//! Reading the demo's console: what to show while it runs (quiet mode), and what happened
//! (the device model's lines, its request counts, the script's markers) once it is over.

use std::time::Duration;

use super::script::{
    CREATED_MARKER, DESTROYED_MARKER, DM_EXIT_MARKER, DM_TIMEOUT_SECS, PROBLEM_PREFIX,
    UNPAUSED_MARKER, UNTIL,
};
use crate::xen_test::init_script::INIT_MARKER;

/// The device model's last line: `served: port=N mmio=N pci-config=N buffered=N other=N in T s
/// (R req/s)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Served {
    /// Port I/O requests.
    pub port: u64,
    /// MMIO requests.
    pub mmio: u64,
    /// PCI config-space requests.
    pub pci_config: u64,
    /// Buffered (ring) records.
    pub buffered: u64,
    /// Anything else (invalidate, time offset).
    pub other: u64,
    /// How long it served, seconds.
    pub secs: f64,
    /// Requests per second, as it printed.
    pub rate: f64,
}

impl Served {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.port + self.mmio + self.pci_config + self.buffered + self.other
    }
}

/// Parses a `served:` line (anywhere in `line`).
pub fn parse_served(line: &str) -> Option<Served> {
    let rest = &line[line.find("served: ")? + "served: ".len()..];
    let (counts, tail) = rest.split_once(" in ")?;
    let mut s = Served::default();
    let mut seen = 0;
    for kv in counts.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        let slot = match k {
            "port" => &mut s.port,
            "mmio" => &mut s.mmio,
            "pci-config" => &mut s.pci_config,
            "buffered" => &mut s.buffered,
            "other" => &mut s.other,
            _ => continue,
        };
        *slot = v;
        seen += 1;
    }
    let (secs, rate) = tail.split_once(" s (")?;
    s.secs = secs.trim().parse().ok()?;
    s.rate = rate.split_whitespace().next()?.parse().ok()?;
    (seen >= 3).then_some(s)
}

/// The device model's `--verbose` timing line: `firmware_dm: W wake-ups, N notifies, loop's own
/// time T us per request`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoopTime {
    /// Times the loop woke up.
    pub wakeups: u64,
    /// Event-channel notifications sent.
    pub notifies: u64,
    /// The loop's own time per request, microseconds.
    pub us_per_request: f64,
}

/// Parses a timing line.
pub fn parse_loop_time(line: &str) -> Option<LoopTime> {
    let rest = line.strip_prefix("firmware_dm: ")?;
    let (wakeups, rest) = rest.split_once(" wake-ups, ")?;
    let (notifies, rest) = rest.split_once(" notifies, loop's own time ")?;
    let us = rest.strip_suffix(" us per request")?;
    Some(LoopTime {
        wakeups: wakeups.trim().parse().ok()?,
        notifies: notifies.trim().parse().ok()?,
        us_per_request: us.trim().parse().ok()?,
    })
}

/// Whether a device-model diagnostic line is detail for `-v` only (its MMIO probes, PCI
/// addresses, timing).
fn is_dm_detail(line: &str) -> bool {
    line.starts_with("firmware_dm: mmio ")
        || line.starts_with("firmware_dm: pci config accesses")
        || parse_loop_time(line).is_some()
}

/// Whether a device-model line reports a failure.
fn is_dm_problem(line: &str) -> bool {
    line.starts_with("firmware_dm: ")
        && ["failed", "timed out", "signalled", "usage"]
            .iter()
            .any(|w| line.contains(w))
}

/// Whether a line is the firmware's output through our devices.
fn is_guest_line(line: &str) -> bool {
    line.starts_with("guest| ") || line.starts_with("guest/serial| ") || line == "guest|"
}

/// What the demo did, from its console.
#[derive(Debug, Default, PartialEq)]
pub struct Run {
    /// dom0's `/init` ran.
    pub dom0_up: bool,
    /// The guest's domain id, once created.
    pub domid: Option<u32>,
    /// The device model printed its `ready` line.
    pub ready: bool,
    /// The guest was unpaused.
    pub unpaused: bool,
    /// Lines the firmware printed through our devices (`guest| ...`, `guest/serial| ...`).
    pub guest_lines: Vec<String>,
    /// The device model's counts.
    pub served: Option<Served>,
    /// The device model's own time.
    pub loop_time: Option<LoopTime>,
    /// The device model's exit status.
    pub dm_exit: Option<i32>,
    /// The guest was destroyed.
    pub destroyed: bool,
    /// The script's and the device model's complaints.
    pub problems: Vec<String>,
}

impl Run {
    /// Reads a whole console (as logged: `\r\n` line ends are fine).
    pub fn parse(console: &str) -> Run {
        let mut r = Run::default();
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            if line.contains(INIT_MARKER) {
                r.dom0_up = true;
            } else if let Some(id) = line.strip_prefix(CREATED_MARKER) {
                r.domid = id.trim().parse().ok();
            } else if line.starts_with("firmware_dm: serving domain") && line.ends_with("ready") {
                r.ready = true;
            } else if line.starts_with(UNPAUSED_MARKER) {
                r.unpaused = true;
            } else if is_guest_line(line) {
                r.guest_lines.push(line.to_string());
            } else if line.starts_with("served: ") {
                r.served = parse_served(line);
            } else if let Some(code) = line.strip_prefix(DM_EXIT_MARKER) {
                r.dm_exit = code.trim().parse().ok();
            } else if line.starts_with(DESTROYED_MARKER) {
                r.destroyed = true;
            } else if let Some(t) = parse_loop_time(line) {
                r.loop_time = Some(t);
            } else if line.starts_with(PROBLEM_PREFIX)
                || line.starts_with("xen-test: dom0: ")
                || is_dm_problem(line)
            {
                r.problems.push(line.to_string());
            }
        }
        r
    }

    /// Whether the firmware's banner came through.
    pub fn banner(&self) -> bool {
        self.guest_lines
            .iter()
            .any(|l| l.contains("SeaBIOS (version"))
    }

    /// Whether the firmware reached the end text.
    pub fn reached_end(&self) -> bool {
        self.guest_lines.iter().any(|l| l.contains(UNTIL))
    }

    /// Why the demo failed (nothing: it worked).
    pub fn failures(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.dom0_up {
            v.push("dom0 never started".to_string());
            return v;
        }
        if self.domid.is_none() {
            v.push("the guest was not created".into());
        } else if !self.ready {
            v.push("firmware_dm never said it was ready".into());
        } else if !self.unpaused {
            v.push("the guest was not unpaused".into());
        } else if !self.banner() {
            v.push("SeaBIOS's banner never came through our devices".into());
        }
        if self.ready && !self.reached_end() {
            v.push(format!("\"{UNTIL}\" never came through our devices"));
        }
        match self.dm_exit {
            Some(0) => {}
            Some(2) => v.push("firmware_dm timed out (exit 2)".into()),
            Some(c) => v.push(format!("firmware_dm exited {c}")),
            None => v.push("firmware_dm did not finish".into()),
        }
        if self.ready && self.served.is_none() {
            v.push("firmware_dm printed no `served:` line".into());
        }
        if self.domid.is_some() && !self.destroyed {
            v.push("the guest was not destroyed".into());
        }
        v.extend(self.problems.iter().cloned());
        v
    }
}

/// What quiet mode shows for a console line (`elapsed`: since the machine started), or `None`.
pub fn screen(line: &str, elapsed: Duration) -> Option<String> {
    let t = elapsed.as_secs_f64();
    if line.contains(INIT_MARKER) {
        return Some(format!(
            "demo: dom0 up after {t:.1} s; creating an HVM guest (Xen's hvmloader + Debian's SeaBIOS)"
        ));
    }
    if let Some(id) = line.strip_prefix(CREATED_MARKER) {
        return Some(format!(
            "demo: guest domain {} created paused; starting our device model: firmware_dm {} --until \"{UNTIL}\" --timeout {DM_TIMEOUT_SECS} --restrict --verbose",
            id.trim(),
            id.trim()
        ));
    }
    if line.starts_with(UNPAUSED_MARKER) {
        return Some(format!(
            "demo: guest unpaused at {t:.1} s; what its firmware prints through our devices:"
        ));
    }
    if is_guest_line(line) {
        return Some(format!("  {line}"));
    }
    if let Some(code) = line.strip_prefix(DM_EXIT_MARKER) {
        return (code.trim() != "0").then(|| format!("demo: firmware_dm exited {}", code.trim()));
    }
    if line.starts_with(DESTROYED_MARKER) {
        return Some(format!(
            "demo: guest destroyed at {t:.1} s; powering the machine off"
        ));
    }
    if (line.starts_with("firmware_dm: ") && !is_dm_detail(line))
        || line.starts_with(PROBLEM_PREFIX)
        || line.starts_with("xen-test: dom0: ")
    {
        return Some(line.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVED: &str =
        "served: port=440 mmio=9 pci-config=149 buffered=0 other=0 in 5.43 s (110 req/s)";

    #[test]
    fn served_line() {
        let s = parse_served(SERVED).unwrap();
        assert_eq!(
            s,
            Served {
                port: 440,
                mmio: 9,
                pci_config: 149,
                buffered: 0,
                other: 0,
                secs: 5.43,
                rate: 110.0
            }
        );
        assert_eq!(s.total(), 598);
        assert!(parse_served("served: nothing").is_none());
        assert!(parse_served("served: port=x mmio=1 in 1 s (1 req/s)").is_none());
    }

    fn console() -> String {
        [
            "(XEN) [    0.1] Xen version 4.17",
            "=== xen-test: dom0 init started\r",
            "=== demo: guest created paused, domain 1",
            "firmware_dm: serving domain 1 (ioreq server 0, 1 vCPUs, restricted): ready",
            "=== demo: guest unpaused",
            "guest| SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "(XEN) [   9.0] (d1) Found 1 serial ports",
            "guest/serial| SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "guest/serial| No bootable device.  Retrying in 60 seconds.",
            "firmware_dm: mmio read 0xfed40f00 size 2",
            "firmware_dm: pci config accesses 149, test device BAR0 Some(f0002000), option ROM at Some(f0000000) read 135 times",
            SERVED,
            "firmware_dm: 312 wake-ups, 598 notifies, loop's own time 4.2 us per request",
            "=== demo: firmware_dm exit 0",
            "=== demo: guest destroyed",
        ]
        .join("\n")
    }

    #[test]
    fn a_good_run() {
        let r = Run::parse(&console());
        assert!(r.dom0_up && r.ready && r.unpaused && r.destroyed);
        assert_eq!(r.domid, Some(1));
        assert_eq!(r.dm_exit, Some(0));
        assert_eq!(r.guest_lines.len(), 3);
        assert!(r.banner() && r.reached_end());
        assert_eq!(r.served.unwrap().port, 440);
        assert_eq!(
            r.loop_time,
            Some(LoopTime {
                wakeups: 312,
                notifies: 598,
                us_per_request: 4.2
            })
        );
        assert!(r.failures().is_empty(), "{:?}", r.failures());
    }

    #[test]
    fn failed_runs_say_why() {
        let r = Run::parse("(XEN) panic\n");
        assert_eq!(r.failures(), ["dom0 never started"]);

        let c = console()
            .replace(
                "guest/serial| No bootable device.  Retrying in 60 seconds.\n",
                "",
            )
            .replace("firmware_dm exit 0", "firmware_dm exit 2");
        let f = Run::parse(&c).failures();
        assert!(f.iter().any(|l| l.contains("never came through")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("timed out")), "{f:?}");

        let c = "=== xen-test: dom0 init started\n=== demo: guest created paused, domain 3\n\
                 firmware_dm: set-up failed: ioreq server: EPERM\n=== demo: firmware_dm exit 1\n\
                 === demo: guest destroyed\n";
        let f = Run::parse(c).failures();
        assert_eq!(
            f,
            [
                "firmware_dm never said it was ready",
                "firmware_dm exited 1",
                "firmware_dm: set-up failed: ioreq server: EPERM"
            ]
        );
    }

    #[test]
    fn quiet_screen() {
        let t = Duration::from_millis(6200);
        assert!(screen("(XEN) [    0.1] Xen version 4.17", t).is_none());
        assert!(screen("[    1.2] Linux version 6.1", t).is_none());
        assert!(screen("=== xen-test: dom0 init started", t)
            .unwrap()
            .contains("dom0 up after 6.2 s"));
        assert_eq!(
            screen("guest| SeaBIOS (version 1.16.2)", t).as_deref(),
            Some("  guest| SeaBIOS (version 1.16.2)")
        );
        // Summed up at the end instead.
        assert!(screen(SERVED, t).is_none());
        assert!(screen("=== demo: firmware_dm exit 0", t).is_none());
        assert!(screen("=== demo: firmware_dm exit 2", t).is_some());
        assert!(screen("firmware_dm: set-up failed: x", t).is_some());
        assert!(screen("firmware_dm: mmio read 0xfed40f00 size 2", t).is_none());
        assert!(screen(
            "firmware_dm: 3 wake-ups, 3 notifies, loop's own time 4.2 us per request",
            t
        )
        .is_none());
        assert!(screen("(XEN) [   9.0] (d1) Found 1 serial ports", t).is_none());
    }
}
