//! Where Debian's packages put what the machine needs: found on this host, never hard-coded to
//! one version (the newest kernel that has its modules, the newest Xen).

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The host files the machine is built from.
#[derive(Debug, Clone)]
pub struct System {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// Xen, gzip-compressed (`/boot/xen-4.17-amd64.gz`).
    pub xen_gz: PathBuf,
    /// dom0's kernel (`/boot/vmlinuz-<release>`).
    pub kernel: PathBuf,
    /// Its module directory (`/lib/modules/<release>`).
    pub modules: PathBuf,
    /// The kernel release (`6.1.0-56-amd64`).
    pub release: String,
    /// Xen's tools directory (`/usr/lib/xen-4.17`), with `bin/` and `boot/`.
    pub xen_lib: PathBuf,
    /// SeaBIOS for HVM guests.
    pub seabios: PathBuf,
    /// A static busybox.
    pub busybox: PathBuf,
    /// Where the Xen, kernel and dom0 files come from: `/` (the host's packages) or a Debian
    /// release unpacked elsewhere ([`super::debian`]); dom0 gets them at their paths below it.
    pub root: PathBuf,
}

/// Compares version-like strings piecewise, numbers numerically (`6.1.0-10` > `6.1.0-9`).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn pieces(s: &str) -> Vec<(bool, &str)> {
        let mut v = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                v.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        v
    }
    let (pa, pb) = (pieces(a), pieces(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (nx, ny) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny))
            }
            _ => x.1.cmp(y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The entries of `dir` whose names start with `prefix` and end with `suffix`, as (middle, path).
fn matching(dir: &Path, prefix: &str, suffix: &str) -> Vec<(String, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mid = name.strip_prefix(prefix)?.strip_suffix(suffix)?.to_string();
            Some((mid, e.path()))
        })
        .collect();
    v.sort_by(|a, b| version_cmp(&b.0, &a.0)); // newest first
    v
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

impl System {
    /// Finds everything on the host (Debian 12's packages), or says what is missing.
    pub fn find() -> Result<System, String> {
        System::in_root(Path::new("/"), "4.17")
    }

    /// Finds Xen `xen` (`4.20`), its tools, a kernel with its modules and the firmware under
    /// `root` (a Debian release's packages, unpacked); QEMU and busybox are the host's.
    pub fn in_root(root: &Path, xen: &str) -> Result<System, String> {
        let pkg = |what: &str| match root == Path::new("/") {
            true => format!("package {what}"),
            false => format!("{what}, unpacked in {}", root.display()),
        };
        let qemu = which("qemu-system-x86_64")
            .ok_or("qemu-system-x86_64 is not on PATH (package qemu-system-x86)")?;
        let xen_gz = root.join(format!("boot/xen-{xen}-amd64.gz"));
        let xen_gz = match xen_gz.is_file() {
            true => xen_gz,
            false => matching(&root.join("boot"), &format!("xen-{xen}"), ".gz")
                .into_iter()
                .map(|(_, p)| p)
                .next()
                .ok_or_else(|| {
                    format!(
                        "no {}/boot/xen-{xen}*.gz ({})",
                        root.display(),
                        pkg(&format!("xen-hypervisor-{xen}-amd64"))
                    )
                })?,
        };
        let modules_dir = root.join("lib/modules");
        let (release, kernel) = matching(&root.join("boot"), "vmlinuz-", "")
            .into_iter()
            .find(|(rel, _)| modules_dir.join(rel).join("modules.dep").is_file())
            .ok_or_else(|| {
                format!(
                    "no {}/boot/vmlinuz-* with its lib/modules/*/modules.dep ({})",
                    root.display(),
                    pkg("linux-image-amd64")
                )
            })?;
        let modules = modules_dir.join(&release);
        let xen_lib = root.join(format!("usr/lib/xen-{xen}"));
        if !xen_lib.join("bin/xl").is_file() {
            return Err(format!(
                "no {}/bin/xl ({})",
                xen_lib.display(),
                pkg(&format!("xen-utils-{xen}"))
            ));
        }
        let seabios = root.join("usr/share/seabios/bios-256k.bin");
        if !seabios.is_file() {
            return Err(format!("no {} ({})", seabios.display(), pkg("seabios")));
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("no busybox (package busybox-static)")?;
        Ok(System {
            qemu,
            xen_gz,
            kernel,
            modules,
            release,
            xen_lib,
            seabios,
            busybox,
            root: root.to_path_buf(),
        })
    }

    /// Whether the files come from the host itself (not an unpacked release).
    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The path under [`System::root`] of `path` (a path as dom0 sees it).
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Where dom0 gets the host file `host` (a file under [`System::root`]).
    pub fn dom0_path(&self, host: &Path) -> String {
        let rel = host.strip_prefix(&self.root).unwrap_or(host);
        format!("/{}", rel.to_string_lossy().trim_start_matches('/'))
    }
}

/// QEMU's version line (`QEMU emulator version 7.2.22 (...)` -> `7.2.22`), for the log.
pub fn qemu_version(qemu: &Path) -> String {
    Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = s.lines().next()?.split("version ").nth(1)?;
            Some(v.split_whitespace().next()?.to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A fingerprint of files (paths, sizes, modification times) and some extra text: when it is
/// unchanged, what was built from them is still good.
pub fn fingerprint<'a>(files: impl IntoIterator<Item = &'a Path>, extra: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    extra.hash(&mut h);
    for f in files {
        f.hash(&mut h);
        if let Ok(m) = fs::metadata(f) {
            m.len().hash(&mut h);
            if let Ok(t) = m.modified() {
                t.hash(&mut h);
            }
        }
    }
    format!("{:016x}", h.finish())
}

/// Xen uncompressed to an ELF (QEMU's `-kernel` wants that), cached in `work`.
pub fn xen_elf(sys: &System, work: &Path) -> Result<PathBuf, String> {
    let out = work.join("xen.elf");
    let key_file = work.join("xen.elf.key");
    let key = fingerprint([sys.xen_gz.as_path()], "xen.elf v1");
    if out.is_file() && fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        return Ok(out);
    }
    let file = fs::File::create(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let status = Command::new("gzip")
        .arg("-dc")
        .arg(&sys.xen_gz)
        .stdout(Stdio::from(file))
        .status()
        .map_err(|e| format!("running gzip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "gzip -dc {} failed: {status}",
            sys.xen_gz.display()
        ));
    }
    fs::write(&key_file, key).map_err(|e| format!("writing {}: {e}", key_file.display()))?;
    Ok(out)
}

/// Where a compressed payload may start inside a bzImage: (magic, decompressor).
const PAYLOAD_MAGICS: &[(&[u8], &str)] = &[
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b\x08", "gzip"),
];

/// Offsets in `image` where a compressed kernel may start, with the tool to decompress it, in
/// file order.
pub fn payload_candidates(image: &[u8]) -> Vec<(usize, &'static str)> {
    let mut v = Vec::new();
    for (magic, tool) in PAYLOAD_MAGICS {
        let mut from = 0;
        while let Some(i) = image[from..].windows(magic.len()).position(|w| w == *magic) {
            v.push((from + i, *tool));
            from += i + 1;
        }
    }
    v.sort();
    v
}

/// dom0's kernel as an uncompressed ELF (`vmlinux`), extracted from the bzImage and cached in
/// `work`: Xen builds dom0 from it in ~0.01 s instead of ~2 s of decompressing under TCG. Falls
/// back to the bzImage itself when no payload decompresses to an ELF.
pub fn dom0_kernel(sys: &System, work: &Path) -> Result<PathBuf, String> {
    let out = work.join("vmlinux");
    let key_file = work.join("vmlinux.key");
    let key = fingerprint([sys.kernel.as_path()], "vmlinux v1");
    if out.is_file() && fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        return Ok(out);
    }
    let _ = fs::remove_file(&key_file);
    let image =
        fs::read(&sys.kernel).map_err(|e| format!("reading {}: {e}", sys.kernel.display()))?;
    for (off, tool) in payload_candidates(&image) {
        let mut args = vec!["-dc"];
        if tool == "xz" {
            args.push("--single-stream"); // the bzImage goes on after the payload
        }
        let Ok(mut child) = Command::new(tool)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        let mut stdin = child.stdin.take();
        let data = image[off..].to_vec();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&data); // the tool may stop reading at the payload's end
            }
        });
        let output = child.wait_with_output();
        let _ = feeder.join();
        let Ok(output) = output else { continue };
        // gzip/zstd complain about the trailing bytes: judge by what came out.
        if output.stdout.len() > 1 << 20 && output.stdout.starts_with(b"\x7fELF") {
            fs::write(&out, &output.stdout)
                .map_err(|e| format!("writing {}: {e}", out.display()))?;
            fs::write(&key_file, key)
                .map_err(|e| format!("writing {}: {e}", key_file.display()))?;
            return Ok(out);
        }
    }
    eprintln!(
        "xen-test: could not extract an ELF kernel from {}; Xen will decompress it (slower)",
        sys.kernel.display()
    );
    Ok(sys.kernel.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_compressed_payloads() {
        let mut img = vec![0u8; 64];
        img[10..16].copy_from_slice(b"\xfd7zXZ\x00");
        img[40..43].copy_from_slice(b"\x1f\x8b\x08");
        assert_eq!(payload_candidates(&img), [(10, "xz"), (40, "gzip")]);
        assert!(payload_candidates(b"plain").is_empty());
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(
            version_cmp("6.1.0-10-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(version_cmp("4.17-amd64", "4.17-amd64"), Ordering::Equal);
        assert_eq!(version_cmp("4.9", "4.17"), Ordering::Less);
        assert_eq!(
            version_cmp("6.1.0-56-amd64", "6.1.0-56-cloud-amd64"),
            Ordering::Less
        );
    }
}
