//! dom0's root file system: a tree of files described first ([`Tree`]), then staged in a
//! directory and archived with the system's `cpio` (newc) and `gzip`.
//!
//! Two archives, concatenated (the kernel unpacks them in turn): the base (busybox, kernel
//! modules, Xen's tools and their libraries, firmware), cached in `target/xen-test/` until one of
//! its source files changes; and this run's part (`/init`, `run-tests`, the test executables,
//! the payloads and any library they need that the base lacks), built every run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::build::TestExe;
use super::init_script::{self, InitConfig};
use super::system::{fingerprint, System};
use super::Options;
use crate::payloads::Payload;

/// Bump when the base tree's layout changes, to invalidate caches.
const BASE_SCHEMA: &str = "xen-test base v1";

/// Kernel modules dom0 needs (their dependencies are added from modules.dep).
pub const MODULES: &[&str] = &[
    "xen-privcmd",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xenfs",
    // PCI passthrough's backend: on Linux 6.12 it answers privcmd's PCIDEV_GET_GSI.
    "xen-pciback",
    // Not for dom0 itself: the Linux HVM guest of xen-pcdm's tests takes them from here.
    "virtio_blk",
    "virtio_pci",
];

/// Xen tools copied into dom0 (from Xen's `bin/`), with their libraries.
const XEN_TOOLS: &[&str] = &[
    "xl",
    "xenstored",
    "xenconsoled",
    "xen-init-dom0",
    "libxl-save-helper",
];

/// One file-system entry to create.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A copy of a host file (symlinks followed).
    Copy(PathBuf),
    /// A copy of an executable without its debug sections (`strip --strip-debug`).
    Strip(PathBuf),
    /// A kernel module, decompressed if the host's is compressed.
    Module(PathBuf),
    /// A text file with a mode.
    Text(String, u32),
    /// A symbolic link to the given target.
    Symlink(String),
}

/// A file tree, by absolute path inside dom0.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
    /// `/lib` and `/lib64` are symlinks into `/usr` (Debian 13's merged /usr): paths under them
    /// are kept under `/usr`, so a library named either way is one entry.
    merged_usr: bool,
}

/// The top-level directories that are symlinks into `/usr` in a merged-/usr tree.
const MERGED: &[&str] = &["lib", "lib64"];

impl Tree {
    /// An empty tree laid out like `other` (merged /usr or not).
    pub fn like(other: &Tree) -> Tree {
        Tree {
            entries: BTreeMap::new(),
            merged_usr: other.merged_usr,
        }
    }

    /// An empty tree whose `/lib` and `/lib64` are symlinks to `/usr/lib` and `/usr/lib64`.
    pub fn merged_usr() -> Tree {
        let mut t = Tree {
            entries: BTreeMap::new(),
            merged_usr: true,
        };
        for d in MERGED {
            t.entries
                .insert((*d).to_string(), Entry::Symlink(format!("usr/{d}")));
        }
        t
    }

    fn key(&self, path: &str) -> String {
        let p = path.trim_start_matches('/');
        if self.merged_usr {
            for d in MERGED {
                if let Some(rest) = p.strip_prefix(d).and_then(|r| r.strip_prefix('/')) {
                    return format!("usr/{d}/{rest}");
                }
            }
        }
        p.to_string()
    }

    /// Adds `entry` at `path` (absolute in dom0), replacing what was there.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let p = self.key(path);
        self.entries.insert(p, entry);
    }

    /// Whether the tree has something at `path`.
    pub fn has(&self, path: &str) -> bool {
        self.entries.contains_key(&self.key(path))
    }

    /// Adds a copy of the host file at the same path.
    pub fn copy_same(&mut self, host: &Path) {
        self.add(&host.to_string_lossy(), Entry::Copy(host.to_path_buf()));
    }

    /// Adds a copy of `host`, a file of `sys`'s root, at its path in dom0.
    pub fn copy_from(&mut self, sys: &System, host: &Path) {
        self.add(&sys.dom0_path(host), Entry::Copy(host.to_path_buf()));
    }

    /// Adds the shared libraries `exe` (a file of `sys`'s root) needs, resolved in that root,
    /// at their dom0 paths: `ldd` for the host's own files, the ELF's `NEEDED` entries for
    /// another release's (its binaries may not run on the host).
    pub fn add_root_libs(&mut self, sys: &System, exe: &Path) -> Result<(), String> {
        if sys.is_host() {
            return self.add_libs(exe, None);
        }
        for lib in rooted_libs(&sys.root, exe)? {
            let dom0 = sys.dom0_path(&lib);
            if !self.has(&dom0) {
                self.add(&dom0, Entry::Copy(lib));
            }
        }
        Ok(())
    }

    /// Adds the shared libraries `exe` needs (per `ldd`) at their paths, skipping those `skip`
    /// already has. Static executables and non-ELF files need none.
    pub fn add_libs(&mut self, exe: &Path, skip: Option<&Tree>) -> Result<(), String> {
        if !is_elf(exe) {
            return Ok(());
        }
        let out = Command::new("ldd")
            .arg(exe)
            .output()
            .map_err(|e| format!("running ldd: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        for lib in parse_ldd(&text).map_err(|e| format!("ldd {}: {e}", exe.display()))? {
            let key = lib.to_string_lossy().into_owned();
            if skip.is_some_and(|t| t.has(&key)) || self.has(&key) {
                continue;
            }
            self.copy_same(&lib);
        }
        Ok(())
    }

    /// Adds the payloads at their dom0 paths, with the libraries they need that `base` lacks.
    pub fn add_payloads(&mut self, payloads: &[Payload], base: &Tree) -> Result<(), String> {
        for p in payloads {
            if !p.dom0.starts_with('/') {
                return Err(format!(
                    "payload {}: dom0 path `{}` is not absolute",
                    p.host.display(),
                    p.dom0
                ));
            }
            self.add(&p.dom0, Entry::Copy(p.host.clone()));
        }
        for p in payloads {
            self.add_libs(&p.host, Some(base))?;
        }
        Ok(())
    }

    /// The host files the tree is made from.
    pub fn sources(&self) -> impl Iterator<Item = &Path> {
        self.entries.values().filter_map(|e| match e {
            Entry::Copy(p) | Entry::Strip(p) | Entry::Module(p) => Some(p.as_path()),
            _ => None,
        })
    }

    /// Creates the tree under `root` (which must not exist yet).
    pub fn materialize(&self, root: &Path) -> Result<(), String> {
        fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        for (path, entry) in &self.entries {
            let dest = root.join(path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            let res = match entry {
                Entry::Dir => fs::create_dir_all(&dest).map_err(|e| e.to_string()),
                Entry::Copy(src) => fs::copy(src, &dest)
                    .map(|_| ())
                    .map_err(|e| format!("copying {}: {e}", src.display())),
                Entry::Strip(src) => strip_copy(src, &dest),
                Entry::Module(src) => module_copy(src, &dest),
                Entry::Text(body, mode) => write_mode(&dest, body.as_bytes(), *mode),
                Entry::Symlink(target) => {
                    std::os::unix::fs::symlink(target, &dest).map_err(|e| e.to_string())
                }
            };
            res.map_err(|e| format!("staging /{path}: {e}"))?;
        }
        Ok(())
    }
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn write_mode(dest: &Path, body: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(dest, body).map_err(|e| e.to_string())?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

fn strip_copy(src: &Path, dest: &Path) -> Result<(), String> {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dest)
        .arg(src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if stripped {
        return Ok(());
    }
    // No binutils, or not something strip knows: the file as it is.
    fs::copy(src, dest)
        .map(|_| ())
        .map_err(|e| format!("copying {}: {e}", src.display()))
}

fn module_copy(src: &Path, dest: &Path) -> Result<(), String> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        return fs::copy(src, dest)
            .map(|_| ())
            .map_err(|e| format!("copying {}: {e}", src.display()));
    };
    let out = fs::File::create(dest).map_err(|e| e.to_string())?;
    let status = Command::new(tool)
        .arg("-dc")
        .arg(src)
        .stdout(Stdio::from(out))
        .status()
        .map_err(|e| format!("running {tool} to decompress {}: {e}", src.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{tool} -dc {} failed: {status}", src.display()))
    }
}

/// The libraries in `ldd` output, the dynamic loader included; an error names libraries that
/// were not found. Static executables give none.
pub fn parse_ldd(out: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in out.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                missing.push(name.trim().to_string());
            } else if let Some(p) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libs.push(PathBuf::from(p));
            }
        } else if let Some(p) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(PathBuf::from(p));
        }
    }
    if missing.is_empty() {
        Ok(libs)
    } else {
        Err(format!("libraries not found: {}", missing.join(", ")))
    }
}

/// The `NEEDED` libraries and the `RUNPATH`/`RPATH` of an ELF file, per `readelf -dW`.
pub fn parse_dynamic(out: &str) -> (Vec<String>, Vec<String>) {
    let (mut needed, mut paths) = (Vec::new(), Vec::new());
    for line in out.lines() {
        let value = || {
            let (_, v) = line.split_once('[')?;
            Some(v.rsplit_once(']')?.0.to_string())
        };
        if line.contains("(NEEDED)") {
            needed.extend(value());
        } else if line.contains("(RUNPATH)") || line.contains("(RPATH)") {
            paths.extend(
                value()
                    .into_iter()
                    .flat_map(|v| v.split(':').map(String::from).collect::<Vec<_>>()),
            );
        }
    }
    (needed, paths)
}

/// Every library `exe` needs (transitively) and the dynamic loader, resolved under `root`
/// from the ELF files themselves (`readelf`), as host paths under `root`; an error names the
/// libraries not found there.
pub fn rooted_libs(root: &Path, exe: &Path) -> Result<Vec<PathBuf>, String> {
    if !is_elf(exe) {
        return Ok(Vec::new());
    }
    let std_dirs = ["usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64"];
    let mut found: Vec<PathBuf> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut missing = Vec::new();
    let mut queue = vec![exe.to_path_buf()];
    let mut first = true;
    while let Some(file) = queue.pop() {
        let out = Command::new("readelf")
            .arg("-dW")
            .arg(&file)
            .output()
            .map_err(|e| format!("running readelf (package binutils): {e}"))?;
        let (needed, runpath) = parse_dynamic(&String::from_utf8_lossy(&out.stdout));
        if first && !needed.is_empty() {
            // A dynamic executable: the loader too.
            seen.insert("ld-linux-x86-64.so.2".into());
            queue.push(root.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
            found.push(root.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
        }
        first = false;
        let origin = file.parent().unwrap_or(root).to_string_lossy().into_owned();
        for name in needed {
            if !seen.insert(name.clone()) {
                continue;
            }
            let dirs = runpath
                .iter()
                .map(|d| {
                    let d = d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin);
                    match d.starts_with(&*root.to_string_lossy()) {
                        true => PathBuf::from(d),
                        false => root.join(d.trim_start_matches('/')),
                    }
                })
                .chain(std_dirs.iter().map(|d| root.join(d)));
            match dirs.map(|d| d.join(&name)).find(|p| p.is_file()) {
                Some(p) => {
                    queue.push(p.clone());
                    found.push(p);
                }
                None => missing.push(format!("{name} (for {})", file.display())),
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "libraries not found under {}: {}",
            root.display(),
            missing.join(", ")
        ));
    }
    Ok(found)
}

/// A module's name from its path (`kernel/drivers/xen/xen-privcmd.ko.xz` -> `xen_privcmd`),
/// with `-` and `_` made equal as the kernel does.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// The module files (relative to the modules directory) for `wanted` and everything they depend
/// on, per `modules.dep`, dependencies first. Modules built into the kernel (named in
/// `modules.builtin`, `builtin`) need no file and are left out.
pub fn module_closure(
    modules_dep: &str,
    builtin: &str,
    wanted: &[&str],
) -> Result<Vec<String>, String> {
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((m, d)) = line.split_once(':') else {
            continue;
        };
        let d = d.split_whitespace().map(String::from).collect();
        deps.insert(module_name(m), (m.trim().to_string(), d));
    }
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let (path, ds) = deps
            .get(name)
            .ok_or_else(|| format!("module {name} is not in modules.dep"))?;
        for d in ds {
            visit(&module_name(d), deps, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    let (mut seen, mut order) = (BTreeSet::new(), Vec::new());
    for w in wanted.iter().filter(|w| {
        let n = module_name(w);
        deps.contains_key(&n) || !builtin.contains(&n)
    }) {
        visit(&module_name(w), &deps, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// The path a module gets in dom0 (decompressed: always `.ko`).
fn module_dest(release: &str, rel: &str) -> String {
    let rel = rel.split(".ko").next().unwrap_or(rel);
    format!("/lib/modules/{release}/{rel}.ko")
}

fn libgcc_s(sys: &System) -> Result<PathBuf, String> {
    [
        "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    ]
    .iter()
    .map(|p| sys.host_path(p))
    .find(|p| p.is_file())
    .ok_or_else(|| "no libgcc_s.so.1 (xl needs it for pthread_cancel)".into())
}

/// The base tree: busybox, modules, Xen's tools and libraries, firmware, /etc. Returns it with
/// the dom0 paths of the modules in load order.
pub fn base_tree(sys: &System) -> Result<(Tree, Vec<String>), String> {
    // The host's tree keeps the paths ldd names (its dom0 has real /lib and /lib64); another
    // release's merged /usr is kept as it is installed.
    let mut t = match !sys.is_host() && sys.root.join("lib").is_symlink() {
        true => Tree::merged_usr(),
        false => Tree::default(),
    };
    for d in [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/root",
        "/mnt",
        "/var/lib/xen",
        "/var/lib/xenstored",
        "/var/log/xen",
        "/opt/xen-rs/tests",
    ] {
        t.add(d, Entry::Dir);
    }
    t.add("/var/run", Entry::Symlink("../run".into()));
    t.add("/var/lock", Entry::Symlink("../run/lock".into()));
    t.add(
        "/etc/passwd",
        Entry::Text("root:x:0:0:root:/root:/bin/sh\n".into(), 0o644),
    );
    t.add("/etc/group", Entry::Text("root:x:0:\n".into(), 0o644));
    t.add("/etc/hostname", Entry::Text("dom0\n".into(), 0o644));
    let xl_conf = sys.host_path("/etc/xen/xl.conf");
    if xl_conf.is_file() {
        t.copy_from(sys, &xl_conf);
    }

    // busybox and its applets (never over a real program).
    t.add("/bin/busybox", Entry::Copy(sys.busybox.clone()));
    let list = Command::new(&sys.busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("running busybox --list-full: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "bin/busybox" {
            t.add(applet, Entry::Symlink("/bin/busybox".into()));
        }
    }

    // Kernel modules.
    let dep_file = sys.modules.join("modules.dep");
    let dep = fs::read_to_string(&dep_file)
        .map_err(|e| format!("reading {}: {e}", dep_file.display()))?;
    let builtin_file = sys.modules.join("modules.builtin");
    let builtin = fs::read_to_string(&builtin_file).unwrap_or_default();
    if builtin_file.is_file() {
        // For tests that tell a module from a built-in driver (the Linux guest's virtio).
        t.add(
            &format!("/lib/modules/{}/modules.builtin", sys.release),
            Entry::Copy(builtin_file.clone()),
        );
    }
    let mut modules = Vec::new();
    for rel in module_closure(&dep, &builtin, MODULES)? {
        let dest = module_dest(&sys.release, &rel);
        t.add(&dest, Entry::Module(sys.modules.join(&rel)));
        modules.push(dest);
    }

    // Xen's tools, xenstore's command-line tools, and their libraries.
    let mut programs: Vec<PathBuf> = XEN_TOOLS
        .iter()
        .map(|p| sys.xen_lib.join("bin").join(p))
        .filter(|p| p.is_file())
        .collect();
    for p in ["xl", "xenstored", "xenconsoled", "xen-init-dom0"] {
        if !programs.iter().any(|x| x.ends_with(p)) {
            return Err(format!("no {p} in {}/bin", sys.xen_lib.display()));
        }
    }
    if let Ok(rd) = fs::read_dir(sys.host_path("/usr/bin")) {
        let mut xs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("xenstore"))
            .map(|e| e.path())
            .collect();
        xs.sort();
        programs.extend(xs);
    }
    for p in &programs {
        t.copy_from(sys, p);
    }
    for p in &programs {
        t.add_root_libs(sys, p)?;
    }
    let gcc_s = libgcc_s(sys)?;
    t.copy_from(sys, &gcc_s);
    let gcc_s_lib = "/lib/x86_64-linux-gnu/libgcc_s.so.1";
    if !t.has(gcc_s_lib) {
        t.add(gcc_s_lib, Entry::Copy(gcc_s));
    }
    if t.merged_usr && !t.has("/usr/lib64/ld-linux-x86-64.so.2") {
        // The loader's name in every executable's program header.
        t.add(
            "/usr/lib64/ld-linux-x86-64.so.2",
            Entry::Symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
        );
    }

    // Firmware for HVM guests.
    let hvmloader = sys.xen_lib.join("boot/hvmloader");
    if !hvmloader.is_file() {
        return Err(format!("no {}", hvmloader.display()));
    }
    t.copy_from(sys, &hvmloader);
    t.copy_from(sys, &sys.seabios);
    add_qemu(&mut t, sys)?;
    Ok((t, modules))
}

/// Debian's `qemu-system-xen` (QEMU built with Xen), at the path libxl starts for
/// `device_model_version = "qemu-xen"`.
const QEMU_XEN: &str = "/usr/libexec/xen-qemu-system-i386";

/// QEMU's data files for an HVM guest: the VGA option ROMs of its emulated display
/// (`vga = "cirrus"`, the default, or `"stdvga"`; QEMU finds them in SeaBIOS's directory), and
/// the default keymap, which QEMU reads even with `-vnc none` (without it, it exits at start).
const QEMU_DATA: &[&str] = &[
    "/usr/share/seabios/vgabios-cirrus.bin",
    "/usr/share/seabios/vgabios-stdvga.bin",
    "/usr/share/qemu/keymaps/en-us",
];

/// QEMU as libxl's real device model: the binary, its libraries and data files. Tests run
/// their own device model beside it, as a second ioreq server.
fn add_qemu(t: &mut Tree, sys: &System) -> Result<(), String> {
    let qemu = sys.host_path(QEMU_XEN);
    if !qemu.is_file() {
        return Err(format!("no {} (package qemu-system-xen)", qemu.display()));
    }
    t.copy_from(sys, &qemu);
    t.add_root_libs(sys, &qemu)?;
    for f in QEMU_DATA
        .iter()
        .map(|p| sys.host_path(p))
        .filter(|p| p.is_file())
    {
        t.copy_from(sys, &f);
    }
    Ok(())
}

/// This run's tree: `/init`, `run-tests`, tests, payloads and the libraries they need that the
/// base lacks.
pub fn run_tree(
    cfg: &InitConfig,
    tests: &[TestExe],
    payloads: &[Payload],
    base: &Tree,
) -> Result<Tree, String> {
    let mut t = Tree::like(base);
    t.add("/init", Entry::Text(init_script::init(cfg), 0o755));
    t.add(
        &format!("{}/run-tests", super::PAYLOAD_DIR),
        Entry::Text(init_script::run_tests(cfg), 0o755),
    );
    t.add(
        "/usr/bin/run-tests",
        Entry::Symlink(format!("{}/run-tests", super::PAYLOAD_DIR)),
    );
    for x in tests {
        t.add(
            &format!("{}/{}", super::TESTS_DIR, x.name),
            Entry::Strip(x.path.clone()),
        );
    }
    t.add_payloads(payloads, base)?;
    for x in tests {
        t.add_libs(&x.path, Some(base))?;
    }
    Ok(t)
}

/// Every path under `root` (relative, sorted, directories before what they hold).
fn walk(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for e in rd {
            let e = e.map_err(|e| e.to_string())?;
            let r = rel.join(e.file_name());
            let ft = e.file_type().map_err(|e| e.to_string())?;
            if ft.is_dir() {
                stack.push(r.clone());
            }
            out.push(r);
        }
    }
    out.sort();
    Ok(out)
}

/// Archives `root` as a gzip-compressed newc cpio at `out`, with `cpio` and `gzip`.
pub fn archive(root: &Path, out: &Path) -> Result<(), String> {
    let names = walk(root)?;
    let file = fs::File::create(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut cpio = Command::new("cpio")
        .args(["--null", "-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running cpio: {e}"))?;
    let cpio_out = cpio.stdout.take().ok_or("no stdout from cpio")?;
    let mut gzip = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::from(cpio_out))
        .stdout(Stdio::from(file))
        .spawn()
        .map_err(|e| format!("running gzip: {e}"))?;
    {
        let mut stdin = cpio.stdin.take().ok_or("no stdin for cpio")?;
        for n in &names {
            use std::os::unix::ffi::OsStrExt;
            stdin
                .write_all(n.as_os_str().as_bytes())
                .map_err(|e| e.to_string())?;
            stdin.write_all(b"\0").map_err(|e| e.to_string())?;
        }
    }
    let cs = cpio.wait().map_err(|e| e.to_string())?;
    let gs = gzip.wait().map_err(|e| e.to_string())?;
    if !cs.success() || !gs.success() {
        return Err(format!(
            "archiving {} failed: cpio {cs}, gzip {gs}",
            root.display()
        ));
    }
    Ok(())
}

/// The assembled initramfs.
pub struct Image {
    /// The file to give QEMU.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The base part's size in bytes.
    pub base_size: u64,
    /// Whether the base part came from the cache.
    pub base_cached: bool,
    /// The base tree's staging directory.
    pub base_dir: PathBuf,
    /// This run's staging directory (removed unless `--keep`).
    pub run_dir: PathBuf,
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn remove(p: &Path) -> Result<(), String> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", p.display()))
        }
        _ => Ok(()),
    }
}

/// What a run's part of the initramfs is built from: the dom0 paths of the kernel modules to
/// load (in order), Xen's tools directory in dom0, and the base tree (for libraries it has).
pub struct RunInputs<'a> {
    /// Kernel modules, dom0 paths in load order.
    pub modules: &'a [String],
    /// Xen's tools directory (`/usr/lib/xen-4.17/bin`).
    pub xen_bin: &'a str,
    /// The base tree.
    pub base: &'a Tree,
}

/// The run's part for `cargo xtask xen-test`: `/init`, `run-tests`, the tests and the payloads.
pub fn test_run_tree(
    inputs: &RunInputs,
    tests: &[TestExe],
    payloads: &[Payload],
    opts: &Options,
) -> Result<Tree, String> {
    let names: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let cfg = InitConfig {
        modules: inputs.modules,
        xen_bin: inputs.xen_bin,
        tests: &names,
        filter: opts.filter.as_deref(),
        shell: opts.shell,
        exe_timeout_secs: super::exe_timeout(opts).as_secs().max(1),
    };
    run_tree(&cfg, tests, payloads, inputs.base)
}

/// Builds (or reuses) the base, builds this run's part with `run_part`, and concatenates them.
/// This run's staging directory is removed unless `keep`.
pub fn assemble(
    sys: &System,
    work: &Path,
    keep: bool,
    run_part: impl FnOnce(&RunInputs) -> Result<Tree, String>,
) -> Result<Image, String> {
    let (base, modules) = base_tree(sys)?;
    let base_dir = work.join("base");
    let base_cpio = work.join("base.cpio.gz");
    let key_file = work.join("base.key");
    let key = fingerprint(base.sources(), &format!("{BASE_SCHEMA}\n{base:?}"));
    let base_cached = base_cpio.is_file()
        && base_dir.is_dir()
        && fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str());
    if !base_cached {
        let _ = fs::remove_file(&key_file);
        remove(&base_dir)?;
        base.materialize(&base_dir)?;
        archive(&base_dir, &base_cpio)?;
        fs::write(&key_file, &key).map_err(|e| format!("writing {}: {e}", key_file.display()))?;
    }

    let xen_bin = sys.dom0_path(&sys.xen_lib.join("bin"));
    let run = run_part(&RunInputs {
        modules: &modules,
        xen_bin: &xen_bin,
        base: &base,
    })?;
    let run_dir = work.join("run");
    let run_cpio = work.join("run.cpio.gz");
    remove(&run_dir)?;
    run.materialize(&run_dir)?;
    archive(&run_dir, &run_cpio)?;
    if !keep {
        remove(&run_dir)?;
    }

    let path = work.join("initrd.cpio.gz");
    let mut out =
        fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    for part in [&base_cpio, &run_cpio] {
        let mut f = fs::File::open(part).map_err(|e| format!("opening {}: {e}", part.display()))?;
        std::io::copy(&mut f, &mut out).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    drop(out);
    Ok(Image {
        size: size(&path),
        base_size: size(&base_cpio),
        path,
        base_cached,
        base_dir,
        run_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibxenctrl.so.4.17 => /lib/x86_64-linux-gnu/libxenctrl.so.4.17 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libxenctrl.so.4.17"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n")
            .unwrap()
            .is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn modules_come_with_dependencies_first() {
        let dep = "kernel/drivers/xen/xen-evtchn.ko.xz:\n\
                   kernel/drivers/xen/xenfs/xenfs.ko.xz: kernel/drivers/xen/xen-privcmd.ko.xz\n\
                   kernel/drivers/xen/xen-privcmd.ko.xz:\n\
                   kernel/fs/other.ko: kernel/fs/base.ko\n\
                   kernel/fs/base.ko:\n";
        let order = module_closure(dep, "", &["xenfs", "xen_evtchn", "xen-privcmd"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/xen/xen-privcmd.ko.xz",
                "kernel/drivers/xen/xenfs/xenfs.ko.xz",
                "kernel/drivers/xen/xen-evtchn.ko.xz",
            ]
        );
        assert!(module_closure(dep, "", &["nope"]).is_err());
        // Built into the kernel (Linux 6.12's virtio_pci): no file to load.
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\n";
        assert_eq!(
            module_closure(dep, builtin, &["virtio_pci", "xen-evtchn"]).unwrap(),
            ["kernel/drivers/xen/xen-evtchn.ko.xz"]
        );
        assert!(module_closure(dep, builtin, &["virtio_blk"]).is_err());
        assert_eq!(
            module_dest("6.1", "kernel/drivers/xen/xenfs/xenfs.ko.xz"),
            "/lib/modules/6.1/kernel/drivers/xen/xenfs/xenfs.ko"
        );
    }

    #[test]
    fn dynamic_section() {
        let out = " 0x0000000000000001 (NEEDED)             Shared library: [libxenlight.so.4.20]\n\
                   0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n\
                   0x000000000000001d (RUNPATH)            Library runpath: [$ORIGIN/../lib:/opt/x]\n\
                   0x000000000000000c (INIT)               0x3000\n";
        let (needed, paths) = parse_dynamic(out);
        assert_eq!(needed, ["libxenlight.so.4.20", "libc.so.6"]);
        assert_eq!(paths, ["$ORIGIN/../lib", "/opt/x"]);
    }

    #[test]
    fn merged_usr_trees_name_libraries_once() {
        let mut t = Tree::merged_usr();
        t.add("/usr/lib/x86_64-linux-gnu/libc.so.6", Entry::Dir);
        assert!(t.has("/lib/x86_64-linux-gnu/libc.so.6"));
        t.add("/lib64/ld-linux-x86-64.so.2", Entry::Dir);
        assert!(t.has("/usr/lib64/ld-linux-x86-64.so.2"));
        assert!(t.has("/lib") && t.has("/lib64"));
        assert!(!t.has("/libexec/x"));
        let run = Tree::like(&t);
        assert!(run.merged_usr && !run.has("/lib"));
        let plain = Tree::default();
        assert_eq!(plain.key("/lib/x"), "lib/x");
    }

    #[test]
    fn tree_materializes() {
        let dir = std::env::temp_dir().join(format!("xen-test-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut t = Tree::default();
        t.add("/a/b", Entry::Text("hi\n".into(), 0o755));
        t.add("/bin/sh", Entry::Symlink("/bin/busybox".into()));
        t.add("/var/x", Entry::Dir);
        t.materialize(&dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a/b")).unwrap(), "hi\n");
        assert_eq!(
            fs::read_link(dir.join("bin/sh")).unwrap(),
            PathBuf::from("/bin/busybox")
        );
        assert!(dir.join("var/x").is_dir());
        let names = walk(&dir).unwrap();
        assert!(names.contains(&PathBuf::from("a")) && names.contains(&PathBuf::from("a/b")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
