//! Running `xl` (and other dom0 tools) with a deadline, so no test ever hangs on the toolstack.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Default deadline for one `xl` command.
pub const XL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion within `timeout` (killing it after), returning its output when it
/// exits 0 and an error naming the command and showing its output otherwise.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    // Output through files, not pipes: nothing to drain while we wait.
    let dir = std::env::temp_dir();
    let tag = format!(
        "xen-testkit-{}-{}",
        std::process::id(),
        crate::guest::unique()
    );
    let out_path = dir.join(format!("{tag}.out"));
    let err_path = dir.join(format!("{tag}.err"));
    let out_f = File::create(&out_path)
        .map_err(|e| Error::Io(format!("create {}", out_path.display()), e))?;
    let err_f = File::create(&err_path)
        .map_err(|e| Error::Io(format!("create {}", err_path.display()), e))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out_f)
        .stderr(err_f)
        .spawn()
        .map_err(|e| Error::Io(format!("start {what}"), e))?;
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| Error::Io(format!("wait {what}"), e))?
        {
            break Some(st);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| {
        let s = std::fs::read_to_string(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        s
    };
    let output = Output {
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    match status {
        None => Err(Error::Timeout(
            timeout,
            format!("{what}; output so far:\n{}{}", output.stdout, output.stderr),
        )),
        Some(st) if st.success() => Ok(output),
        Some(st) => Err(Error::Command(format!(
            "{what} failed ({st}):\n{}{}",
            output.stdout, output.stderr
        ))),
    }
}

/// Runs `xl <args>` with the default deadline.
pub fn xl(args: &[&str]) -> Result<Output> {
    run(Command::new("xl").args(args), XL_TIMEOUT)
}

/// `xl domid <name>`.
pub fn domid(name: &str) -> Result<u16> {
    let out = xl(&["domid", name])?;
    out.stdout.trim().parse().map_err(|_| {
        Error::Command(format!(
            "xl domid {name}: unexpected output {:?}",
            out.stdout
        ))
    })
}

/// One line of `xl list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Domain name.
    pub name: String,
    /// Domain id.
    pub domid: u16,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// State flags as `xl list` prints them (`r-----`, `--p---`, ...).
    pub state: String,
}

/// `xl list`, parsed.
pub fn list() -> Result<Vec<ListEntry>> {
    let out = xl(&["list"])?;
    let mut v = Vec::new();
    for line in out.stdout.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let (Ok(domid), Ok(mem_mib), Ok(vcpus)) = (f[1].parse(), f[2].parse(), f[3].parse()) else {
            continue;
        };
        v.push(ListEntry {
            name: f[0].to_string(),
            domid,
            mem_mib,
            vcpus,
            state: f[4].to_string(),
        });
    }
    Ok(v)
}

/// `xl dmesg` (the hypervisor's console ring: the test guest's port-0xe9 lines are there).
pub fn dmesg() -> Result<String> {
    Ok(xl(&["dmesg"])?.stdout)
}
