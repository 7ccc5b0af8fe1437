//! Reading the serial console: which lines are boot noise, which are the tests' own output,
//! what each test executable reported, signs of a crash, and the final verdict and counts.

use super::init_script::{BEGIN_MARKER, DONE_MARKER, END_MARKER, HEARTBEAT_MARKER, INIT_MARKER};

/// A libtest summary line: `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; ...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// `ok` (true) or `FAILED`.
    pub ok: bool,
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests ignored (not run).
    pub ignored: u64,
    /// Benchmarks measured.
    pub measured: u64,
    /// Tests the filter left out.
    pub filtered_out: u64,
}

/// Parses a libtest summary line (anywhere in `line`, so console prefixes don't matter).
pub fn parse_summary(line: &str) -> Option<Summary> {
    let rest = &line[line.find("test result: ")? + "test result: ".len()..];
    let (verdict, counts) = rest.split_once(". ")?;
    let ok = match verdict {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    let mut s = Summary {
        ok,
        ..Summary::default()
    };
    let mut seen = 0;
    for part in counts.split(';') {
        let part = part.trim();
        let Some((n, what)) = part.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else {
            continue;
        };
        let slot = match what {
            "passed" => &mut s.passed,
            "failed" => &mut s.failed,
            "ignored" => &mut s.ignored,
            "measured" => &mut s.measured,
            "filtered out" => &mut s.filtered_out,
            _ => continue,
        };
        *slot = n;
        seen += 1;
    }
    (seen >= 3).then_some(s)
}

/// What one test executable did in dom0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExeRun {
    /// Its name (as in dom0's tests directory).
    pub name: String,
    /// Its exit status, if its end marker arrived.
    pub exit: Option<i32>,
    /// Its libtest summary, if printed.
    pub summary: Option<Summary>,
    /// It printed libtest's `running N tests` header (it is a libtest harness).
    pub libtest: bool,
    /// How long it ran (whole seconds, measured in dom0).
    pub seconds: Option<u64>,
    /// Wake-up calls xen-testkit sent to a test guest that stopped answering (see
    /// [`is_wake_up_call`]).
    pub wake_up_calls: u64,
}

/// Whether `line` is xen-testkit's record of a wake-up call to a silent test guest vCPU
/// (`xen-testkit: test guest dN vcpu V ... wake-up call: sent`).
pub fn is_wake_up_call(line: &str) -> bool {
    // The test's stderr and the guests' console share the serial line: a record may arrive
    // cut, with another line's text before it.
    line.contains("wake-up call: ")
}

/// Signs of a machine-level failure on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    /// Xen panicked; the machine is dead.
    XenPanic(String),
    /// dom0's kernel panicked or dom0 crashed; the machine is dead.
    Dom0Dead(String),
    /// dom0's kernel oopsed or hit a BUG; the machine may go on, but the run fails.
    Dom0Oops(String),
    /// A dom0 process crashed (a segfault or trap the kernel logged, or the dynamic loader found
    /// its own data corrupt): a sign of a bug here or of dom0 memory being overwritten. The
    /// machine goes on, but the run fails, even if every test passed.
    Dom0ProcessCrash(String),
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alarm::XenPanic(l) => write!(f, "Xen panicked: {l}"),
            Alarm::Dom0Dead(l) => write!(f, "dom0 died: {l}"),
            Alarm::Dom0Oops(l) => write!(f, "dom0 kernel oops: {l}"),
            Alarm::Dom0ProcessCrash(l) => write!(f, "a dom0 process crashed: {l}"),
        }
    }
}

impl Alarm {
    /// Whether the machine can no longer make progress.
    pub fn fatal(&self) -> bool {
        !matches!(self, Alarm::Dom0Oops(_) | Alarm::Dom0ProcessCrash(_))
    }
}

/// Looks for a crash sign in one console line.
pub fn alarm(line: &str) -> Option<Alarm> {
    let l = line.to_string();
    if line.contains("Panic on CPU") {
        return Some(Alarm::XenPanic(l));
    }
    if line.contains("Kernel panic - not syncing")
        || line.contains("Hardware Dom0 crashed")
        || line.contains("Hardware Dom0 shutdown")
    {
        return Some(Alarm::Dom0Dead(l));
    }
    if is_kernel(line)
        && (line.contains("Oops:")
            || line.contains("kernel BUG at")
            || (line.contains("BUG: ") && !line.contains("soft lockup")))
    {
        return Some(Alarm::Dom0Oops(l));
    }
    if (is_kernel(line) && (line.contains("segfault at") || line.contains("traps: ")))
        || line.contains("Inconsistency detected by ld.so")
    {
        return Some(Alarm::Dom0ProcessCrash(l));
    }
    None
}

/// Whether a console line is Xen's own (`(XEN) ...`) and not a guest's debug output
/// (`(XEN) [ts] (d1) ...`).
fn is_xen_chatter(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("(XEN)") else {
        return false;
    };
    let rest = rest.trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once(']').map(|(_, r)| r.trim_start()).unwrap_or(r),
        None => rest,
    };
    // Guest output: "(d<N>) ...", N != 0.
    let guest = rest
        .strip_prefix("(d")
        .and_then(|r| r.split_once(')'))
        .is_some_and(|(n, _)| !n.is_empty() && n != "0" && n.bytes().all(|b| b.is_ascii_digit()));
    !guest
}

/// Kernel lines worth showing in quiet mode: a dom0 process crashed or was killed (the tests'
/// own output then only says "signal 11" or "killed").
fn is_notable_kernel(line: &str) -> bool {
    is_kernel(line)
        && [
            "segfault at",
            "traps: ",
            "Out of memory",
            "oom-kill",
            "Killed process",
        ]
        .iter()
        .any(|p| line.contains(p))
}

/// Whether a line is libtest's `running N test(s)` header.
fn is_libtest_header(line: &str) -> bool {
    line.trim_end()
        .strip_prefix("running ")
        .and_then(|r| r.strip_suffix(" tests").or_else(|| r.strip_suffix(" test")))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a console line is a kernel log line (`[   12.345678] ...`).
fn is_kernel(line: &str) -> bool {
    line.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .is_some_and(|(ts, _)| {
            let ts = ts.trim();
            !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
}

/// The console as the run goes: phase, per-executable results, alarms.
#[derive(Debug, Default)]
pub struct Transcript {
    /// dom0's `/init` has started.
    pub init_started: bool,
    /// Every executable ran (the done marker arrived).
    pub done: bool,
    /// Results, in run order.
    pub runs: Vec<ExeRun>,
    /// Crash signs seen.
    pub alarms: Vec<Alarm>,
    /// Signs of progress so far: executables begun and ended, tests finished.
    pub progress: u64,
    current: Option<usize>,
}

impl Transcript {
    /// Takes one console line (without its line ending). Returns whether the line is for the
    /// user in quiet mode (the tests' own output, guests' debug output, dom0 init's messages)
    /// rather than Xen's or the kernel's log.
    pub fn feed(&mut self, line: &str) -> bool {
        if let Some(a) = alarm(line) {
            self.alarms.push(a);
        }
        if line.contains(INIT_MARKER) {
            self.init_started = true;
            return false;
        }
        if !self.init_started {
            return false;
        }
        if line.starts_with(HEARTBEAT_MARKER) {
            return false;
        }
        if let Some(name) = line.strip_prefix(BEGIN_MARKER) {
            self.progress += 1;
            self.runs.push(ExeRun {
                name: name.trim().to_string(),
                ..ExeRun::default()
            });
            self.current = Some(self.runs.len() - 1);
            return true;
        }
        if let Some(rest) = line.strip_prefix(END_MARKER) {
            self.progress += 1;
            if let Some((name, tail)) = rest.trim().rsplit_once(" exit ") {
                if let Some(r) = self.runs.iter_mut().rev().find(|r| r.name == name) {
                    let (code, secs) = match tail.split_once(" after ") {
                        Some((c, t)) => (c, t.trim_end_matches(" s").trim().parse().ok()),
                        None => (tail, None),
                    };
                    r.exit = code.trim().parse().ok();
                    r.seconds = secs;
                }
            }
            self.current = None;
            return true;
        }
        if line.contains(DONE_MARKER) {
            self.done = true;
            return true;
        }
        if let Some(i) = self.current {
            if is_test_result(line) {
                self.progress += 1;
            }
            if is_wake_up_call(line) {
                self.runs[i].wake_up_calls += 1;
            }
            if let Some(s) = parse_summary(line) {
                self.runs[i].summary = Some(s);
            } else if is_libtest_header(line) {
                self.runs[i].libtest = true;
            }
        }
        !(is_xen_chatter(line) || is_kernel(line)) || is_notable_kernel(line)
    }
}

/// A libtest line for one finished test: `test NAME ... ok|FAILED|ignored[, reason]`.
fn is_test_result(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("test ") else {
        return false;
    };
    let Some((_, outcome)) = rest.rsplit_once(" ... ") else {
        return false;
    };
    let outcome = outcome.trim_end();
    outcome == "ok" || outcome == "FAILED" || outcome.starts_with("ignored")
}

/// The slowest executables, slowest first, as `name N s` (for keeping the run in its budget).
pub fn slowest(t: &Transcript, n: usize) -> Vec<String> {
    let mut v: Vec<(u64, &str)> = t
        .runs
        .iter()
        .filter_map(|r| Some((r.seconds.filter(|&s| s > 0)?, r.name.as_str())))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    v.into_iter()
        .take(n)
        .map(|(s, name)| format!("{name} {s} s"))
        .collect()
}

/// Executables during which a test guest needed wake-up calls, as `name N`.
pub fn woken(t: &Transcript) -> Vec<String> {
    t.runs
        .iter()
        .filter(|r| r.wake_up_calls > 0)
        .map(|r| format!("{} {}", r.name, r.wake_up_calls))
        .collect()
}

/// The final counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tests passed.
    pub passed: u64,
    /// Tests failed (plus one per executable that crashed or printed no summary).
    pub failed: u64,
    /// Tests that did not run (ignored, or left out by the filter).
    pub skipped: u64,
}

impl Totals {
    /// The one summary line.
    pub fn line(&self) -> String {
        format!(
            "xen-test: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// Counts and the reasons the run failed (none: it passed).
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// The counts.
    pub totals: Totals,
    /// Why the run failed, one line each.
    pub reasons: Vec<String>,
    /// Executables that failed once and passed when run again, one line each.
    pub flaky: Vec<String>,
}

/// Judges a finished run: `expected` executables, and machine-level `problems` found by the
/// runner (timeout, QEMU's exit status). An executable without libtest output (`harness =
/// false`) counts as one test, passed when it exits 0; a libtest executable without its summary
/// failed (it crashed, or was killed).
pub fn verdict(t: &Transcript, expected: &[String], problems: &[String]) -> Verdict {
    let mut v = Verdict::default();
    v.reasons.extend(problems.iter().cloned());
    v.reasons.extend(t.alarms.iter().map(Alarm::to_string));
    if !t.init_started {
        v.reasons.push("dom0 never reached /init".into());
    }
    for name in expected {
        // A failed executable runs a second time; the last run decides, the failure before
        // it is reported as flaky.
        let attempts = t.runs.iter().filter(|r| &r.name == name).count();
        let Some(r) = t.runs.iter().rev().find(|r| &r.name == name) else {
            if t.init_started {
                v.reasons.push(format!("{name}: never ran"));
            }
            continue;
        };
        if let Some(s) = r.summary {
            v.totals.passed += s.passed;
            v.totals.failed += s.failed;
            v.totals.skipped += s.ignored + s.filtered_out;
        }
        match (r.summary, r.exit) {
            (Some(s), Some(0)) if s.ok && s.failed == 0 => {
                if attempts > 1 {
                    v.flaky.push(format!(
                        "{name}: failed, then passed when run once more (its first run is in the log)"
                    ));
                }
            }
            (Some(s), Some(code)) if !s.ok || s.failed > 0 => {
                v.reasons
                    .push(format!("{name}: {} test(s) failed (exit {code})", s.failed));
            }
            (Some(_), Some(code)) => {
                v.totals.failed += 1;
                v.reasons.push(format!(
                    "{name}: exited {code} after its summary (counted as 1 failed)"
                ));
            }
            (Some(_), None) => {
                v.totals.failed += 1;
                v.reasons
                    .push(format!("{name}: did not finish (counted as 1 failed)"));
            }
            // No libtest at all (a `harness = false` target, e.g. a benchmark built with
            // `test = true`): judged by its exit status alone, as `cargo test` does.
            (None, Some(0)) if !r.libtest => {
                v.totals.passed += 1;
                if attempts > 1 {
                    v.flaky.push(format!(
                        "{name}: failed, then passed when run once more (its first run is in the log)"
                    ));
                }
            }
            (None, code) => {
                v.totals.failed += 1;
                let how = code.map_or("did not finish".to_string(), |c| format!("exit {c}"));
                v.reasons.push(format!(
                    "{name}: no libtest summary ({how}; counted as 1 failed)"
                ));
            }
        }
    }
    if t.init_started && !t.done && v.reasons.is_empty() {
        v.reasons.push("the test loop did not finish".into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let s = parse_summary(
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; finished in 0.01s",
        )
        .unwrap();
        assert_eq!(
            s,
            Summary {
                ok: true,
                passed: 3,
                failed: 0,
                ignored: 1,
                measured: 0,
                filtered_out: 2
            }
        );
        let f = parse_summary("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s").unwrap();
        assert!(!f.ok);
        assert_eq!(f.failed, 2);
        assert!(parse_summary("running 3 tests").is_none());
        assert!(parse_summary("test result: maybe. 1 passed").is_none());
    }

    #[test]
    fn classifies_lines() {
        assert!(is_xen_chatter("(XEN) [    1.234567] Xen version 4.17.7"));
        assert!(!is_xen_chatter(
            "(XEN) [    9.000000] (d1) hello from the guest"
        ));
        assert!(is_xen_chatter("(XEN) [    9.000000] (d0) dom0 said"));
        assert!(is_kernel("[    0.000000] Linux version 6.1.0"));
        assert!(!is_kernel("running 1 test"));
        assert!(!is_kernel("[ok] something"));
        assert!(matches!(
            alarm("(XEN) [  5.0] Panic on CPU 0:"),
            Some(Alarm::XenPanic(_))
        ));
        assert!(matches!(
            alarm("[   20.1] Kernel panic - not syncing: Attempted to kill init!"),
            Some(Alarm::Dom0Dead(_))
        ));
        assert!(matches!(
            alarm("[   20.1] BUG: kernel NULL pointer dereference, address: 0"),
            Some(Alarm::Dom0Oops(_))
        ));
        assert!(matches!(
            alarm("[  207.3] xl[568]: segfault at 30 ip 00007f sp 00007ffd error 4 in ld-linux-x86-64.so.2"),
            Some(Alarm::Dom0ProcessCrash(_))
        ));
        assert!(matches!(
            alarm("[   90.2] traps: xl[612] general protection fault ip:7f0 sp:7ffd error:0 in libc.so.6"),
            Some(Alarm::Dom0ProcessCrash(_))
        ));
        assert!(matches!(
            alarm("Inconsistency detected by ld.so: dl-version.c: 204: _dl_check_map_versions: Assertion failed!"),
            Some(Alarm::Dom0ProcessCrash(_))
        ));
        assert!(!alarm("[ 1.0] x: segfault at 0").is_some_and(|a| a.fatal()));
        assert!(alarm("test handles_segfault_at_boundary ... ok").is_none());
        assert!(alarm("[   20.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!").is_none());
        assert!(alarm("test oops_handling ... ok").is_none());
    }

    fn feed_all(lines: &str) -> Transcript {
        let mut t = Transcript::default();
        for l in lines.lines() {
            t.feed(l);
        }
        t
    }

    const GOOD: &str = "(XEN) [    0.1] Xen version\n\
[    1.0] Linux version\n\
=== xen-test: dom0 init started\n\
=== xen-test: begin a.lib.a\n\
running 2 tests\n\
test x ... ok\n\
[    9.5] xen:privcmd: something\n\
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.00s\n\
=== xen-test: end a.lib.a exit 0 after 3 s\n\
=== xen-test: begin b.test.b\n\
xen-testkit: test guest d5 vcpu 1 (APIC 2) has not answered op 1 seq 9 for 1001 ms; its tick stopped (40 -> 40); wake-up call: sent\n\
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
=== xen-test: end b.test.b exit 101 after 12 s\n\
=== xen-test: begin c.test.c\n\
running 1 test\n\
=== xen-test: end c.test.c exit 139\n\
=== xen-test: begin d.bench.d\n\
bench: something 12 ns/call\n\
=== xen-test: end d.bench.d exit 0\n\
=== xen-test: all test executables ran\n";

    #[test]
    fn transcript_and_verdict() {
        let t = feed_all(GOOD);
        assert!(t.init_started && t.done);
        assert_eq!(t.runs.len(), 4);
        assert!(t.runs[0].libtest && !t.runs[3].libtest);
        assert_eq!(t.runs[0].exit, Some(0));
        assert_eq!(t.runs[2].exit, Some(139));
        assert_eq!(t.runs[1].seconds, Some(12));
        assert_eq!(t.runs[2].seconds, None);
        assert_eq!(slowest(&t, 1), ["b.test.b 12 s"]);
        assert_eq!(woken(&t), ["b.test.b 1"]);
        let names: Vec<String> = ["a.lib.a", "b.test.b", "c.test.c", "d.bench.d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = verdict(&t, &names, &[]);
        assert_eq!(
            v.totals,
            Totals {
                passed: 4,
                failed: 2,
                skipped: 1
            }
        );
        assert_eq!(v.reasons.len(), 2, "{:?}", v.reasons);
        assert!(v.reasons[1].contains("c.test.c: no libtest summary (exit 139"));
        assert_eq!(v.totals.line(), "xen-test: 4 passed, 2 failed, 1 skipped");

        let ok = verdict(&t, &names[..1], &[]);
        assert!(ok.reasons.is_empty(), "{:?}", ok.reasons);
        assert_eq!(
            ok.totals,
            Totals {
                passed: 2,
                failed: 0,
                skipped: 1
            }
        );
    }

    #[test]
    fn a_failed_executable_that_passes_when_run_again_is_flaky() {
        let t = feed_all(
            "=== xen-test: dom0 init started\n\
=== xen-test: begin a.test.a\n\
running 2 tests\n\
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
=== xen-test: end a.test.a exit 101 after 20 s\n\
=== xen-test: once more after a failure: a.test.a exit 101\n\
=== xen-test: begin a.test.a\n\
running 2 tests\n\
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
=== xen-test: end a.test.a exit 0 after 19 s\n\
=== xen-test: all test executables ran\n",
        );
        let v = verdict(&t, &["a.test.a".to_string()], &[]);
        assert!(v.reasons.is_empty(), "{:?}", v.reasons);
        assert_eq!(v.flaky.len(), 1);
        assert_eq!(
            v.totals,
            Totals {
                passed: 2,
                failed: 0,
                skipped: 0
            }
        );
        // Failing twice fails the run.
        let t = feed_all(
            "=== xen-test: dom0 init started\n\
=== xen-test: begin a.test.a\n\
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
=== xen-test: end a.test.a exit 101 after 20 s\n\
=== xen-test: begin a.test.a\n\
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
=== xen-test: end a.test.a exit 101 after 20 s\n\
=== xen-test: all test executables ran\n",
        );
        let v = verdict(&t, &["a.test.a".to_string()], &[]);
        assert_eq!(v.reasons.len(), 1);
        assert!(v.flaky.is_empty());
    }

    #[test]
    fn progress_counts_finished_tests_and_executables() {
        let mut t = Transcript::default();
        t.feed(INIT_MARKER);
        assert!(
            !t.feed("=== heartbeat 12.5 s, load 1.00 0.50 0.20"),
            "hidden"
        );
        assert_eq!(t.progress, 0);
        t.feed("=== xen-test: begin a.test.a");
        t.feed("running 3 tests");
        t.feed("test one ... ok");
        t.feed("test two ... FAILED");
        t.feed("test three ... ignored, needs Xen");
        t.feed("test four ... ignored");
        assert_eq!(t.progress, 5);
        // Started but not finished: no progress.
        t.feed("test five ... ");
        t.feed("test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out");
        assert_eq!(t.progress, 5);
        t.feed("=== xen-test: end a.test.a exit 101 after 3 s");
        assert_eq!(t.progress, 6);
    }

    #[test]
    fn quiet_mode_shows_only_test_output() {
        let mut t = Transcript::default();
        let shown: Vec<&str> = GOOD.lines().filter(|l| t.feed(l)).collect();
        assert!(!shown
            .iter()
            .any(|l| l.starts_with("(XEN)") || l.starts_with("[ ")));
        assert!(shown.contains(&"test x ... ok"));
        assert!(shown.contains(&"=== xen-test: begin a.lib.a"));
        assert!(
            t.feed("[  270.7] xl[563]: segfault at 9e9f8 ip 00007fcd88b4bb9b error 4 in libc.so.6")
        );
        assert!(t.feed("[  300.1] Out of memory: Killed process 77 (machine)"));
        assert!(!t.feed("[  300.2] xen:grant_table: Grant tables using version 1 layout"));
    }

    #[test]
    fn machine_failures() {
        let t = feed_all("(XEN) [  1.0] Panic on CPU 0:\n");
        let v = verdict(&t, &["a".to_string()], &["timed out".to_string()]);
        assert!(v.reasons.iter().any(|r| r.contains("Xen panicked")));
        assert!(v.reasons.iter().any(|r| r == "dom0 never reached /init"));
        assert!(v.reasons.iter().any(|r| r == "timed out"));

        let t =
            feed_all("=== xen-test: dom0 init started\n=== xen-test: begin a\nrunning 1 test\n");
        let v = verdict(&t, &["a".to_string(), "b".to_string()], &[]);
        assert_eq!(v.totals.failed, 1);
        assert!(v
            .reasons
            .iter()
            .any(|r| r.contains("a: no libtest summary (did not finish")));
        assert!(v.reasons.iter().any(|r| r == "b: never ran"));

        // A custom harness that fails is judged by its exit status.
        let t = feed_all(
            "=== xen-test: dom0 init started\n=== xen-test: begin e\nbench: x\n=== xen-test: end e exit 1\n=== xen-test: all test executables ran\n",
        );
        let v = verdict(&t, &["e".to_string()], &[]);
        assert_eq!(
            v.totals,
            Totals {
                passed: 0,
                failed: 1,
                skipped: 0
            }
        );
        assert!(
            v.reasons[0].contains("e: no libtest summary (exit 1"),
            "{:?}",
            v.reasons
        );
    }
}
