//! The bench's console read back: one `BENCH-ROW` per boot, turned into the table of
//! min/median/max per device model and the per-round ratio ours/QEMU.

use std::collections::BTreeMap;

/// One boot's numbers: the device model (`ours`, `qemu`), the round, and `key=value` fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `ours` or `qemu`.
    pub dm: String,
    /// The round (1-based).
    pub round: u32,
    /// The measurements.
    pub values: BTreeMap<String, f64>,
}

/// A `BENCH-ROW dm=.. round=.. k=v ...` line (anywhere in a console line).
pub fn parse_row(line: &str) -> Option<Row> {
    let at = line.find("BENCH-ROW ")?;
    let mut dm = None;
    let mut round = None;
    let mut values = BTreeMap::new();
    for w in line[at + "BENCH-ROW ".len()..].split_whitespace() {
        let (k, v) = w.split_once('=')?;
        match k {
            "dm" => dm = Some(v.to_owned()),
            "round" => round = v.parse().ok(),
            _ => {
                values.insert(k.to_owned(), v.parse().ok()?);
            }
        }
    }
    Some(Row {
        dm: dm?,
        round: round?,
        values,
    })
}

/// The `BENCH-VERSION` fields (QEMU, Xen, dom0 kernel).
pub fn parse_versions(line: &str) -> Option<BTreeMap<String, String>> {
    let at = line.find("BENCH-VERSION ")?;
    Some(
        line[at + "BENCH-VERSION ".len()..]
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace('_', " ")))
            .collect(),
    )
}

/// The table's rows: (key, label, unit scale, decimals, whether higher is better).
pub const ROWS: &[(&str, &str, f64, usize, bool)] = &[
    ("boot_s", "boot: unpause -> init marker (s)", 1.0, 2, false),
    ("seq_mbs", "seq read, 1 MiB O_DIRECT (MB/s)", 1.0, 1, true),
    ("iops", "4 KiB random read (IOPS)", 1.0, 0, true),
    ("lsr_per_s", "port I/O: UART LSR reads (/s)", 1.0, 0, true),
    (
        "hwm_kib",
        "DM peak RSS, VmHWM (MiB)",
        1.0 / 1024.0,
        1,
        false,
    ),
    (
        "rss_kib",
        "DM RSS at the end, VmRSS (MiB)",
        1.0 / 1024.0,
        1,
        false,
    ),
    ("ready_s", "DM start -> ready (s)", 1.0, 2, false),
    ("cpu_us_lsr", "DM CPU per port read (us)", 1.0, 1, false),
    ("cpu_us_rand", "DM CPU per 4 KiB read (us)", 1.0, 1, false),
    (
        "syscr_lsr",
        "DM read-class syscalls per port read",
        1.0,
        2,
        false,
    ),
    (
        "syscw_lsr",
        "DM write-class syscalls per port read",
        1.0,
        2,
        false,
    ),
    (
        "vcs_lsr",
        "DM main thread sleeps per port read",
        1.0,
        2,
        false,
    ),
    (
        "syscr_rand",
        "DM read-class syscalls per 4 KiB read",
        1.0,
        2,
        false,
    ),
    (
        "syscw_rand",
        "DM write-class syscalls per 4 KiB read",
        1.0,
        2,
        false,
    ),
    ("served", "ours: requests served, whole boot", 1.0, 0, false),
];

fn median(v: &mut [f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], med, v[n - 1]))
}

fn triple(t: Option<(f64, f64, f64)>, scale: f64, dec: usize) -> String {
    match t {
        Some((a, m, b)) => format!(
            "{:.dec$} / {:.dec$} / {:.dec$}",
            a * scale,
            m * scale,
            b * scale
        ),
        None => "-".into(),
    }
}

/// The Markdown table: per row, ours and QEMU as min / median / max over the rounds, and
/// ours/QEMU of the same round as min / median / max.
pub fn table(rows: &[Row]) -> String {
    let of = |dm: &str, k: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.dm == dm)
            .filter_map(|r| r.values.get(k).copied())
            .collect()
    };
    let rounds: Vec<u32> = {
        let mut r: Vec<u32> = rows.iter().map(|r| r.round).collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    let mut s = String::from(
        "| row | ours (min / median / max) | QEMU (min / median / max) | ours/QEMU (min / median / max) |\n|---|---|---|---|\n",
    );
    for &(k, label, scale, dec, _) in ROWS {
        let ratios: Vec<f64> = rounds
            .iter()
            .filter_map(|&n| {
                let get = |dm: &str| {
                    rows.iter()
                        .find(|r| r.dm == dm && r.round == n)
                        .and_then(|r| r.values.get(k).copied())
                };
                let (o, q) = (get("ours")?, get("qemu")?);
                (q > 0.0).then_some(o / q)
            })
            .collect();
        s += &format!(
            "| {label} | {} | {} | {} |\n",
            triple(median(&mut of("ours", k)), scale, dec),
            triple(median(&mut of("qemu", k)), scale, dec),
            triple(median(&mut ratios.clone()), 1.0, 2),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_versions() {
        let r = parse_row("(XEN) [ 1.0] BENCH-ROW dm=ours round=2 boot_s=12.5000 iops=900.0000")
            .unwrap();
        assert_eq!(r.dm, "ours");
        assert_eq!(r.round, 2);
        assert_eq!(r.values["boot_s"], 12.5);
        assert!(parse_row("BENCH-ROW dm=ours boot_s=1").is_none());
        assert!(parse_row("nothing").is_none());
        let v =
            parse_versions("BENCH-VERSION qemu=QEMU_emulator_version_7.2.1 xen=4.17.7").unwrap();
        assert_eq!(v["qemu"], "QEMU emulator version 7.2.1");
        assert_eq!(v["xen"], "4.17.7");
    }

    #[test]
    fn table_has_min_median_max_and_paired_ratios() {
        let row = |dm: &str, round, iops| Row {
            dm: dm.into(),
            round,
            values: [("iops".to_string(), iops)].into_iter().collect(),
        };
        let rows = vec![
            row("ours", 1, 100.0),
            row("qemu", 1, 50.0),
            row("ours", 2, 300.0),
            row("qemu", 2, 100.0),
            row("ours", 3, 200.0),
            row("qemu", 3, 200.0),
        ];
        let t = table(&rows);
        let line = t.lines().find(|l| l.contains("IOPS")).unwrap();
        assert!(line.contains("| 100 / 200 / 300 |"), "{line}");
        assert!(line.contains("| 50 / 100 / 200 |"), "{line}");
        assert!(line.contains("| 1.00 / 2.00 / 3.00 |"), "{line}");
        // Rows nobody measured show a dash.
        assert!(t
            .lines()
            .any(|l| l.contains("VmHWM") && l.contains("| - |")));
    }
}
