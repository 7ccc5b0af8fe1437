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
}

impl Tree {
    /// Adds `entry` at `path` (absolute in dom0), replacing what was there.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let p = path.trim_start_matches('/').to_string();
        self.entries.insert(p, entry);
    }

    /// Whether the tree has something at `path`.
    pub fn has(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// Adds a copy of the host file at the same path.
    pub fn copy_same(&mut self, host: &Path) {
        self.add(&host.to_string_lossy(), Entry::Copy(host.to_path_buf()));
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

/// A module's name from its path (`kernel/drivers/xen/xen-privcmd.ko.xz` -> `xen_privcmd`),
/// with `-` and `_` made equal as the kernel does.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// The module files (relative to the modules directory) for `wanted` and everything they depend
/// on, per `modules.dep`, dependencies first.
pub fn module_closure(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
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
    for w in wanted {
        visit(&module_name(w), &deps, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// The path a module gets in dom0 (decompressed: always `.ko`).
fn module_dest(release: &str, rel: &str) -> String {
    let rel = rel.split(".ko").next().unwrap_or(rel);
    format!("/lib/modules/{release}/{rel}.ko")
}

fn libgcc_s() -> Result<PathBuf, String> {
    [
        "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| "no libgcc_s.so.1 (xl needs it for pthread_cancel)".into())
}

/// The base tree: busybox, modules, Xen's tools and libraries, firmware, /etc. Returns it with
/// the dom0 paths of the modules in load order.
pub fn base_tree(sys: &System) -> Result<(Tree, Vec<String>), String> {
    let mut t = Tree::default();
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
    let xl_conf = Path::new("/etc/xen/xl.conf");
    if xl_conf.is_file() {
        t.copy_same(xl_conf);
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
    let mut modules = Vec::new();
    for rel in module_closure(&dep, MODULES)? {
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
    if let Ok(rd) = fs::read_dir("/usr/bin") {
        let mut xs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("xenstore"))
            .map(|e| e.path())
            .collect();
        xs.sort();
        programs.extend(xs);
    }
    for p in &programs {
        t.copy_same(p);
    }
    for p in &programs {
        t.add_libs(p, None)?;
    }
    let gcc_s = libgcc_s()?;
    t.copy_same(&gcc_s);
    let gcc_s_lib = Path::new("/lib/x86_64-linux-gnu/libgcc_s.so.1");
    if !t.has(&gcc_s_lib.to_string_lossy()) {
        t.add(&gcc_s_lib.to_string_lossy(), Entry::Copy(gcc_s));
    }

    // Firmware for HVM guests.
    let hvmloader = sys.xen_lib.join("boot/hvmloader");
    if !hvmloader.is_file() {
        return Err(format!("no {}", hvmloader.display()));
    }
    t.copy_same(&hvmloader);
    t.copy_same(&sys.seabios);
    add_qemu(&mut t)?;
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
fn add_qemu(t: &mut Tree) -> Result<(), String> {
    let qemu = Path::new(QEMU_XEN);
    if !qemu.is_file() {
        return Err(format!("no {QEMU_XEN} (package qemu-system-xen)"));
    }
    t.copy_same(qemu);
    t.add_libs(qemu, None)?;
    for f in QEMU_DATA.iter().map(Path::new).filter(|p| p.is_file()) {
        t.copy_same(f);
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
    let mut t = Tree::default();
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

    let xen_bin = sys.xen_lib.join("bin").to_string_lossy().into_owned();
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
        let order = module_closure(dep, &["xenfs", "xen_evtchn", "xen-privcmd"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/xen/xen-privcmd.ko.xz",
                "kernel/drivers/xen/xenfs/xenfs.ko.xz",
                "kernel/drivers/xen/xen-evtchn.ko.xz",
            ]
        );
        assert!(module_closure(dep, &["nope"]).is_err());
        assert_eq!(
            module_dest("6.1", "kernel/drivers/xen/xenfs/xenfs.ko.xz"),
            "/lib/modules/6.1/kernel/drivers/xen/xenfs/xenfs.ko"
        );
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
