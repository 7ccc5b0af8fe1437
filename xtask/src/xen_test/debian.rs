//! A second Xen generation from another Debian release, without touching the host: its
//! packages are fetched with a private apt configuration (its own `sources.list`, lists, cache
//! and an empty dpkg status, so the host's apt state is never read or changed), unpacked with
//! `dpkg-deb -x` into one directory (the release's root), and the kernel's `modules.dep` is made
//! there with `depmod -b`. The machine's dom0 is then built from that root exactly as the host's
//! generation is built from `/` (see [`super::system::System::in_root`]).
//!
//! Cached in `target/xen-test/debian-<N>/`: a root that was completely unpacked (its stamp file
//! names the packages) is reused as it is; remove the directory to fetch again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::util;

/// A Debian release to take a machine's Xen, kernel and dom0 user space from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The suite (`trixie`).
    pub suite: &'static str,
    /// Its number, for directory names (`13`).
    pub number: u32,
    /// What dom0 needs: apt resolves their dependencies (an empty status: all of them).
    pub packages: &'static [&'static str],
}

/// Debian 13: Xen 4.20, Linux 6.12, QEMU 10.0 built with Xen.
pub const TRIXIE: Release = Release {
    suite: "trixie",
    number: 13,
    packages: &[
        "xen-hypervisor-4.20-amd64", // boot/xen-4.20-amd64.gz
        "xen-utils-4.20",            // xl, xenstored, xenconsoled, xen-init-dom0, hvmloader
        "xenstore-utils",            // xenstore-read/-write/-ls
        "linux-image-amd64",         // dom0's kernel and its modules
        "qemu-system-xen",           // libxl's own device model (QEMU 10.0)
        "seabios",                   // bios-256k.bin and the VGA ROMs
        "libgcc-s1",                 // xl needs it for pthread_cancel
    ],
};

/// The keyring that signs Debian's archives (package `debian-archive-keyring`).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Debian's archive.
const MIRROR: &str = "http://deb.debian.org/debian";
/// Bump when the unpacked root's layout changes, to unpack again.
const ROOT_SCHEMA: &str = "debian root v1";

/// Where a release's files live on the host.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The release's root: its packages unpacked (`.../debian-13/root`).
    pub root: PathBuf,
}

/// `apt-get`/`apt-cache` options that make apt use only `dir` (its sources, lists, cache and
/// an empty dpkg status) and never the host's configuration or state.
fn apt_options(dir: &Path) -> Vec<String> {
    let d = dir.display();
    [
        format!("Dir::State={d}/state"),
        format!("Dir::State::Lists={d}/state/lists"),
        format!("Dir::State::status={d}/state/status"),
        format!("Dir::Cache={d}/cache"),
        format!("Dir::Cache::Archives={d}/cache/archives"),
        format!("Dir::Etc={d}/etc"),
        format!("Dir::Etc::SourceList={d}/etc/sources.list"),
        format!("Dir::Etc::SourceParts={d}/etc/sources.list.d"),
        format!("Dir::Etc::Parts={d}/etc/apt.conf.d"),
        format!("Dir::Etc::PreferencesParts={d}/etc/preferences.d"),
        format!("Dir::Etc::TrustedParts={d}/etc/trusted.gpg.d"),
        "APT::Architecture=amd64".into(),
        "APT::Architectures=amd64".into(),
        "Acquire::Languages=none".into(),
        "Debug::NoLocking=1".into(),
        "APT::Sandbox::User=root".into(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

/// The private apt configuration's `sources.list`.
pub fn sources_list(rel: &Release) -> String {
    format!("deb [signed-by={KEYRING}] {MIRROR} {} main\n", rel.suite)
}

/// Fetches and unpacks `rel` under `work/debian-<N>/` (or reuses what is there), naming the
/// steps after `label:`.
pub fn prepare(rel: &Release, work: &Path, label: &str) -> Result<Unpacked, String> {
    let top = work.join(format!("debian-{}", rel.number));
    let root = top.join("root");
    let stamp = top.join("root.stamp");
    let want = format!("{ROOT_SCHEMA}\n{}\n", rel.packages.join(" "));
    if root.is_dir() && fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(Unpacked { root });
    }
    let started = Instant::now();
    let _ = fs::remove_file(&stamp);
    let apt = top.join("apt");
    for d in [
        "state/lists/partial",
        "cache/archives/partial",
        "etc/apt.conf.d",
        "etc/preferences.d",
        "etc/sources.list.d",
        "etc/trusted.gpg.d",
    ] {
        let p = apt.join(d);
        fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
    }
    let write = |p: PathBuf, body: &str| {
        fs::write(&p, body).map_err(|e| format!("writing {}: {e}", p.display()))
    };
    write(apt.join("etc/sources.list"), &sources_list(rel))?;
    write(apt.join("state/status"), "")?;
    let opts = apt_options(&apt);
    eprintln!(
        "{label}: fetching Debian {} ({}) packages with a private apt configuration in {}",
        rel.number,
        rel.suite,
        apt.display()
    );
    util::run(
        Command::new("apt-get")
            .args(&opts)
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // An empty status: apt resolves every dependency and downloads it, installing nothing.
    util::run(
        Command::new("apt-get")
            .args(&opts)
            .args([
                "-qq",
                "-y",
                "--download-only",
                "--no-install-recommends",
                "install",
            ])
            .args(rel.packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let fetched = started.elapsed();

    let archives = apt.join("cache/archives");
    let mut debs: Vec<PathBuf> = fs::read_dir(&archives)
        .map_err(|e| format!("reading {}: {e}", archives.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    // An older download of another version would unpack over the newer one: keep the newest
    // of each package only (apt's cache keeps both until cleaned).
    let debs = newest_per_package(debs);
    if fs::symlink_metadata(&root).is_ok() {
        fs::remove_dir_all(&root).map_err(|e| format!("removing {}: {e}", root.display()))?;
    }
    fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    for deb in &debs {
        // Quietly: one line per package would bury the rest of the log.
        let mut c = Command::new("dpkg-deb");
        c.arg("-x").arg(deb).arg(&root);
        let status = c
            .status()
            .map_err(|e| format!("could not start `{}`: {e}", util::display(&c)))?;
        if !status.success() {
            return Err(format!("`{}` failed: {status}", util::display(&c)));
        }
    }
    // Debian 13 ships its files under /usr only (merged /usr): the top-level names are
    // symlinks, as on an installed system.
    for (link, target) in [
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("bin", "usr/bin"),
    ] {
        let l = root.join(link);
        if fs::symlink_metadata(&l).is_err() && root.join(target).is_dir() {
            std::os::unix::fs::symlink(target, &l)
                .map_err(|e| format!("linking {}: {e}", l.display()))?;
        }
    }
    // Installing a kernel runs depmod; unpacking it does not.
    let modules = root.join("usr/lib/modules");
    let rd = fs::read_dir(&modules).map_err(|e| format!("reading {}: {e}", modules.display()))?;
    for e in rd.filter_map(|e| e.ok()) {
        let release = e.file_name().to_string_lossy().into_owned();
        util::run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    }
    let listing: Vec<String> = debs
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    write(top.join("packages.txt"), &(listing.join("\n") + "\n"))?;
    write(stamp, &want)?;
    eprintln!(
        "{label}: Debian {}: {} packages fetched in {:.1} s, unpacked in {:.1} s (list in {})",
        rel.number,
        debs.len(),
        fetched.as_secs_f64(),
        (started.elapsed() - fetched).as_secs_f64(),
        top.join("packages.txt").display()
    );
    Ok(Unpacked { root })
}

/// Of `.deb` files named `<package>_<version>_<arch>.deb`, the newest version of each package.
pub fn newest_per_package(debs: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut best: std::collections::BTreeMap<String, (String, PathBuf)> = Default::default();
    for d in debs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut parts = name.splitn(3, '_');
        let (Some(pkg), Some(ver)) = (parts.next(), parts.next()) else {
            continue;
        };
        let ver = ver.replace("%3a", ":");
        let newer = best
            .get(pkg)
            .is_none_or(|(v, _)| super::system::version_cmp(&ver, v).is_gt());
        if newer {
            best.insert(pkg.to_string(), (ver, d));
        }
    }
    best.into_values().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_is_private() {
        let o = apt_options(Path::new("/c/apt"));
        assert!(o.contains(&"Dir::State::status=/c/apt/state/status".to_string()));
        assert!(o.contains(&"Dir::Etc::SourceList=/c/apt/etc/sources.list".to_string()));
        assert!(o.contains(&"Dir::Etc::Parts=/c/apt/etc/apt.conf.d".to_string()));
        assert!(o.iter().all(|s| s == "-o" || s.contains('=')));
        assert!(!o
            .iter()
            .any(|s| s.contains("=/etc/") || s.contains("=/var/")));
        assert_eq!(
            sources_list(&TRIXIE),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian trixie main\n"
        );
    }

    #[test]
    fn keeps_the_newest_deb_of_each_package() {
        let debs = [
            "xen-utils-4.20_4.20.4+63-g7abfd2bce2-0+deb13u1_amd64.deb",
            "xen-utils-4.20_4.20.3-0+deb13u1_amd64.deb",
            "qemu-system-xen_1%3a10.0.13+ds-0+deb13u1_amd64.deb",
        ]
        .map(PathBuf::from)
        .to_vec();
        let kept = newest_per_package(debs);
        assert_eq!(
            kept,
            [
                PathBuf::from("qemu-system-xen_1%3a10.0.13+ds-0+deb13u1_amd64.deb"),
                PathBuf::from("xen-utils-4.20_4.20.4+63-g7abfd2bce2-0+deb13u1_amd64.deb"),
            ]
        );
    }
}
