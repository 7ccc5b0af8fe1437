//! Guests created with `xl`, destroyed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use crate::xl::{self, ListEntry};
use crate::{payload, payload_path, Error, Result};

/// Deadline for `xl create` (a PV guest's bzImage alone takes seconds to decompress under TCG).
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

/// A number unique within this process (names, temporary files).
pub(crate) fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The kind of guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestType {
    /// Paravirtualised: a PV kernel, no hardware virtualisation.
    Pv,
    /// PVH: hardware-virtualised, no emulated devices, no device model.
    Pvh,
    /// Fully virtualised: firmware, emulated platform, a device model process.
    Hvm,
}

impl GuestType {
    fn xl_name(self) -> &'static str {
        match self {
            GuestType::Pv => "pv",
            GuestType::Pvh => "pvh",
            GuestType::Hvm => "hvm",
        }
    }
}

/// How to create a guest: the defaults run the tiny test guest (HVM, PVH) or the dom0 kernel
/// (PV) with 32 MiB and one vCPU, paused.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    kind: GuestType,
    memory_mib: u32,
    vcpus: u32,
    paused: bool,
    image: Option<PathBuf>,
    device_model: Option<PathBuf>,
    extra: Vec<String>,
}

impl GuestConfig {
    fn new(kind: GuestType) -> GuestConfig {
        GuestConfig {
            kind,
            memory_mib: 32,
            vcpus: 1,
            paused: true,
            image: None,
            device_model: Some(payload_path(payload::FAKE_DM)),
            extra: Vec::new(),
        }
    }

    /// An HVM guest running the test guest as its firmware (`firmware_override`), with the fake
    /// device model.
    pub fn hvm() -> GuestConfig {
        GuestConfig::new(GuestType::Hvm).image(payload_path(payload::TESTGUEST_HVM))
    }

    /// An HVM guest with Xen's own firmware (hvmloader, then SeaBIOS), with the fake device model
    /// unless [`device_model`](Self::device_model) names another.
    pub fn hvm_hvmloader() -> GuestConfig {
        GuestConfig::new(GuestType::Hvm)
    }

    /// A PVH guest running the test guest (through its PVH entry note).
    pub fn pvh() -> GuestConfig {
        GuestConfig::new(GuestType::Pvh).image(payload_path(payload::TESTGUEST_PVH))
    }

    /// A PV guest running the test guest's PV entry (it only blocks: a PV guest has no
    /// hardware to drive and dom0 cannot find its mailbox without its p2m).
    pub fn pv() -> GuestConfig {
        GuestConfig::new(GuestType::Pv).image(payload_path(payload::TESTGUEST_PV))
    }

    /// The guest type.
    pub fn kind(&self) -> GuestType {
        self.kind
    }

    /// The number of vCPUs configured.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpus
    }

    /// Memory in MiB.
    pub fn memory_mib(mut self, mib: u32) -> GuestConfig {
        self.memory_mib = mib;
        self
    }

    /// Number of vCPUs.
    pub fn vcpus(mut self, n: u32) -> GuestConfig {
        self.vcpus = n;
        self
    }

    /// Create paused (`xl create -p`, the default) or running.
    pub fn paused(mut self, paused: bool) -> GuestConfig {
        self.paused = paused;
        self
    }

    /// The image: HVM firmware (`firmware_override`; `None` means hvmloader), PVH or PV kernel.
    pub fn image(mut self, path: impl Into<PathBuf>) -> GuestConfig {
        self.image = Some(path.into());
        self
    }

    /// HVM only: the device-model program libxl starts (`device_model_override`).
    pub fn device_model(mut self, path: impl Into<PathBuf>) -> GuestConfig {
        self.device_model = Some(path.into());
        self
    }

    /// HVM only: no `device_model_override`, so libxl starts its own device model (QEMU,
    /// Debian's `qemu-system-xen`, which the test machine carries). QEMU 7.2's emulated SVM
    /// also needs `tsc_mode = "native"` for a guest that runs long (see the testbed notes).
    pub fn qemu(mut self) -> GuestConfig {
        self.device_model = None;
        self
    }

    /// Appends a raw line to the xl configuration (e.g. `on_reboot = "preserve"`).
    pub fn extra(mut self, line: impl Into<String>) -> GuestConfig {
        self.extra.push(line.into());
        self
    }

    /// The xl configuration text for a guest named `name`.
    pub fn to_xl_config(&self, name: &str) -> String {
        let mut c = String::new();
        let mut line = |s: String| {
            c.push_str(&s);
            c.push('\n');
        };
        line(format!("name = \"{name}\""));
        line(format!("type = \"{}\"", self.kind.xl_name()));
        line(format!("memory = {}", self.memory_mib));
        line(format!("maxmem = {}", self.memory_mib));
        line(format!("vcpus = {}", self.vcpus));
        line("on_poweroff = \"destroy\"".into());
        line("on_reboot = \"destroy\"".into());
        line("on_crash = \"preserve\"".into());
        match self.kind {
            GuestType::Hvm => {
                if let Some(fw) = &self.image {
                    line(format!("firmware_override = \"{}\"", fw.display()));
                }
                line("device_model_version = \"qemu-xen\"".into());
                if let Some(dm) = &self.device_model {
                    line(format!("device_model_override = \"{}\"", dm.display()));
                }
                for l in [
                    "vga = \"none\"",
                    "vnc = 0",
                    "sdl = 0",
                    "nographic = 1",
                    "serial = \"none\"",
                    "usb = 0",
                    // No PV keyboard: its backend is the device model, and libxl waits 2 s
                    // (LIBXL_QEMU_BODGE_TIMEOUT) for a dying domain's QEMU-backed device to go,
                    // which made every HVM `xl destroy` take 2.3 s instead of 0.2 s.
                    "vkb_device = 0",
                ] {
                    line(l.into());
                }
            }
            GuestType::Pvh => {
                if let Some(k) = &self.image {
                    line(format!("kernel = \"{}\"", k.display()));
                }
                // Needed on QEMU 7.2's emulated SVM (see the testbed notes), harmless elsewhere.
                line("tsc_mode = \"native\"".into());
            }
            GuestType::Pv => {
                if let Some(k) = &self.image {
                    line(format!("kernel = \"{}\"", k.display()));
                }
                line("extra = \"console=hvc0\"".into());
            }
        }
        for l in &self.extra {
            line(l.clone());
        }
        c
    }
}

/// A guest created with `xl create`; `xl destroy`ed when dropped.
#[derive(Debug)]
pub struct Guest {
    name: String,
    domid: u16,
    kind: GuestType,
    dir: PathBuf,
    alive: bool,
}

impl Guest {
    /// Creates a guest from `config` (writing its xl configuration to a temporary directory).
    pub fn create(config: &GuestConfig) -> Result<Guest> {
        if let Some(img) = &config.image {
            if !img.is_file() {
                return Err(Error::Invalid(format!(
                    "guest image {} does not exist",
                    img.display()
                )));
            }
        }
        let name = format!(
            "xrt-{}-{}-{}",
            config.kind.xl_name(),
            std::process::id(),
            unique()
        );
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
        let cfg_path = dir.join("guest.cfg");
        std::fs::write(&cfg_path, config.to_xl_config(&name))
            .map_err(|e| Error::Io(format!("write {}", cfg_path.display()), e))?;
        let cfg = cfg_path.to_string_lossy().into_owned();
        let mut args = vec!["create"];
        if config.paused {
            args.push("-p");
        }
        args.push(&cfg);
        let created = xl::run(std::process::Command::new("xl").args(&args), CREATE_TIMEOUT);
        if let Err(e) = created {
            // A half-created domain must not outlive the test.
            let _ = xl::xl(&["destroy", &name]);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let domid = match xl::domid(&name) {
            Ok(d) => d,
            Err(e) => {
                let _ = xl::xl(&["destroy", &name]);
                return Err(e);
            }
        };
        Ok(Guest {
            name,
            domid,
            kind: config.kind,
            dir,
            alive: true,
        })
    }

    /// The domain id.
    pub fn domid(&self) -> u16 {
        self.domid
    }

    /// The domain name (unique per test process).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The guest type.
    pub fn kind(&self) -> GuestType {
        self.kind
    }

    /// The directory holding its xl configuration (`guest.cfg`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `xl pause`.
    pub fn pause(&self) -> Result<()> {
        xl::xl(&["pause", &self.domid.to_string()]).map(drop)
    }

    /// `xl unpause`.
    pub fn unpause(&self) -> Result<()> {
        xl::xl(&["unpause", &self.domid.to_string()]).map(drop)
    }

    /// Its line in `xl list`, if the domain still exists.
    pub fn list_entry(&self) -> Result<Option<ListEntry>> {
        Ok(xl::list()?
            .into_iter()
            .find(|e| e.domid == self.domid && e.name == self.name))
    }

    /// Keeps this guest for the rest of the process and destroys it when the process exits
    /// (normally or through `std::process::exit`, as the test harness does when a test failed).
    ///
    /// For one guest shared by all the tests of an executable, kept in a `static`: a static's
    /// value is never dropped, so a guest stored in one directly would outlive the test run.
    pub fn shared(self) -> &'static Guest {
        destroy_at_exit(self.domid);
        Box::leak(Box::new(self))
    }

    /// `xl destroy`, reporting failure (dropping destroys too, ignoring errors).
    pub fn destroy(mut self) -> Result<()> {
        self.alive = false;
        let r = xl::xl(&["destroy", &self.domid.to_string()]).map(drop);
        let _ = std::fs::remove_dir_all(&self.dir);
        r
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.alive {
            let _ = xl::xl(&["destroy", &self.domid.to_string()]);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Domains to destroy when the process exits (see [`Guest::shared`]).
static AT_EXIT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Registers `domid` to be destroyed with `xl destroy` when the process exits.
pub(crate) fn destroy_at_exit(domid: u16) {
    static HOOK: Once = Once::new();
    AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(domid);
    HOOK.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` that never unwinds (it catches panics).
        unsafe { libc::atexit(destroy_registered) };
    });
}

extern "C" fn destroy_registered() {
    let _ = std::panic::catch_unwind(|| {
        let ids = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            // The process still maps some of the guest's pages (a test guest's mailbox): the
            // domain stays dying until the exit that follows unmaps them.
            let _ = xl::xl(&["destroy", &id.to_string()]);
        }
    });
}
