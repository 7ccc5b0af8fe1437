//! `cargo xtask icount [--check]`: user-space instructions per hot-path operation, counted by
//! valgrind's callgrind on `xen-icount` (a stand-in device answering success), next to a
//! hand-written "floor" program making the same syscalls. With `--check` (CI), fails when a
//! row is above its gate: its goal, or for the rows not there yet the count they reached
//! (plus a tenth, for compiler versions), so nothing gets slower unnoticed while they are
//! brought down. Instruction counts are deterministic: no timing is asserted.

use std::process::Command;

use crate::util::{self, cargo};

/// A row: its name in `xen-icount`, the goal (instructions per operation), the gate CI holds
/// it to (the goal, or above it while the row is not there yet), and the floor row it is
/// compared with.
struct Row {
    name: &'static str,
    goal: u64,
    gate: u64,
    floor: Option<&'static str>,
}

const fn row(name: &'static str, goal: u64, floor: Option<&'static str>) -> Row {
    Row {
        name,
        goal,
        gate: goal,
        floor,
    }
}

/// A row not at its goal yet, gated at what it reached (none at present).
#[allow(dead_code)]
const fn above(name: &'static str, goal: u64, gate: u64, floor: Option<&'static str>) -> Row {
    Row {
        name,
        goal,
        gate,
        floor,
    }
}

const ROWS: &[Row] = &[
    row("dm_op_set_isa_irq_level", 60, Some("floor_dm_op")),
    row("dm_op_set_pci_intx_level", 60, Some("floor_dm_op")),
    row("dm_op_inject_msi", 60, Some("floor_dm_op")),
    row("dm_op_map_io_range", 60, Some("floor_dm_op")),
    row("dm_op_track_dirty_vram", 65, Some("floor_dm_op")),
    row("dm_op_modified_memory", 65, Some("floor_dm_op")),
    row("evtchn_notify", 35, Some("floor_notify")),
    row("evtchn_pending_unmask", 50, Some("floor_pending_unmask")),
    row("map_1", 120, Some("floor_map")),
    // 9 to 64 frames take their own out-of-line path: outcomes in 256 bytes on the stack that
    // `MMAPBATCH_V2` clears itself (the stand-in does too), scanned with a fixed sixteen ORs.
    row("map_64", 150, Some("floor_map")),
    row("map_1024", 600, Some("floor_map")),
    row("map_resource_2", 100, Some("floor_map")),
    row("dm_op_hypercall_fallback", 2000, None),
    // One served request of the ioreq loop: a port read taken from its slot, dispatched to a
    // device, completed and notified (the notify ioctl is its one syscall).
    row("served_port_read", SERVED_GOAL, Some("floor_notify")),
    // The same path for an MMIO write by value: its dispatch looks the address up among the
    // MMIO claims instead of the ports; same budget.
    row("served_mmio_write", SERVED_GOAL, Some("floor_notify")),
];

/// The budget of one served request (see its rows): set from the measured count with room
/// for compiler versions; the notify it ends with is `evtchn_notify`'s 35.
const SERVED_GOAL: u64 = 290;

/// Operations per run: the difference of two runs divided by the difference of their counts
/// removes start-up and set-up.
const SHORT: u32 = 200;
const LONG: u32 = 1200;

/// Instructions of one `xen-icount ROW N` run under callgrind.
fn collected(bin: &std::path::Path, row: &str, n: u32) -> Result<u64, String> {
    // The stand-in's filter goes in before valgrind starts (see `xen-icount --wrap`).
    let out = Command::new(bin)
        .args([
            "--wrap",
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
        ])
        .arg(bin)
        .args([row, &n.to_string()])
        .output()
        .map_err(|e| format!("could not start valgrind (apt-get install valgrind): {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "xen-icount {row} {n} failed under callgrind:\n{err}"
        ));
    }
    err.lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no instruction count in callgrind's output:\n{err}"))
}

/// Instructions per operation of `row`.
fn per_op(bin: &std::path::Path, row: &str) -> Result<u64, String> {
    let short = collected(bin, row, SHORT)?;
    let long = collected(bin, row, LONG)?;
    Ok(long.saturating_sub(short).div_ceil(u64::from(LONG - SHORT)))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let check = args.iter().any(|a| a == "--check");
    crate::xen_test::packages::ensure("icount", &[&["valgrind"]])?;
    util::run(cargo().args(["build", "--release", "-p", "xen-icount"]))?;
    let bin = util::workspace_root().join("target/release/xen-icount");
    let mut floors = std::collections::HashMap::new();
    let mut over = Vec::new();
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8}",
        "row", "ours", "floor", "goal", "gate"
    );
    for r in ROWS {
        let ours = per_op(&bin, r.name)?;
        let floor = match r.floor {
            Some(f) => match floors.get(f) {
                Some(&v) => Some(v),
                None => {
                    let v = per_op(&bin, f)?;
                    floors.insert(f, v);
                    Some(v)
                }
            },
            None => None,
        };
        let floor = floor.map_or("-".to_string(), |f| f.to_string());
        let mark = if ours > r.gate {
            "  ABOVE GATE"
        } else if ours > r.goal {
            "  (above goal)"
        } else {
            ""
        };
        println!(
            "{:<28} {ours:>8} {floor:>8} {:>8} {:>8}{mark}",
            r.name, r.goal, r.gate
        );
        if ours > r.gate {
            over.push(format!("{} ({ours} > {})", r.name, r.gate));
        }
    }
    if check && !over.is_empty() {
        return Err(format!(
            "instruction counts above their goals: {}",
            over.join(", ")
        ));
    }
    Ok(())
}
