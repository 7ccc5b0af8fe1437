//! What is generated: the architectures, the areas (one module each, with the Cargo
//! feature that gates it and the areas it uses), and the ioctl numbers computed by hand.

/// A target architecture the bindings are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    /// Rust's `target_arch` and the directory name under `src/bindings/`.
    pub name: &'static str,
    /// The clang target triple.
    pub triple: &'static str,
    /// System include directories holding that architecture's Linux `asm/` uapi headers (the
    /// ones that exist are used, in this order, before the compiler's defaults).
    pub linux_include_dirs: &'static [&'static str],
    /// The gcc that compiles the ABI probe a second time, when this host has it.
    pub gcc: Option<&'static str>,
}

/// Every architecture xen-sys supports.
pub const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        triple: "x86_64-linux-gnu",
        linux_include_dirs: &[
            "/usr/include/x86_64-linux-gnu",
            "/usr/x86_64-linux-gnu/include",
        ],
        gcc: Some("x86_64-linux-gnu-gcc"),
    },
    Arch {
        name: "aarch64",
        triple: "aarch64-linux-gnu",
        linux_include_dirs: &[
            "/usr/aarch64-linux-gnu/include",
            "/usr/include/aarch64-linux-gnu",
        ],
        gcc: Some("aarch64-linux-gnu-gcc"),
    },
];

/// Looks an architecture up by Rust `target_arch` name.
pub fn arch(name: &str) -> Option<Arch> {
    ARCHES.iter().copied().find(|a| a.name == name)
}

/// One functional area: one generated module per architecture.
#[derive(Clone, Copy, Debug)]
pub struct Area {
    /// Module name, and the generated file's stem.
    pub name: &'static str,
    /// The Cargo feature gating the module (`None`: always built).
    pub feature: Option<&'static str>,
    /// Headers the area's wrapper includes after `<xen/xen.h>`.
    pub headers: &'static [&'static str],
    /// Path suffixes (regular expressions, matched against the end of a header's path) of the
    /// files whose items belong to this area.
    pub files: &'static [&'static str],
    /// Areas whose items this one uses (brought in with `use crate::<dep>::*`).
    pub deps: &'static [&'static str],
}

/// Every area, in dependency order.
pub const AREAS: &[Area] = &[
    Area {
        name: "xen",
        feature: None,
        headers: &["xen/xen.h"],
        files: &[
            "xen/xen\\.h",
            "xen/xen-compat\\.h",
            "xen/arch-x86_64\\.h",
            "xen/arch-x86/[^/]*\\.h",
            "xen/arch-arm\\.h",
            "xen/arch-arm/[^/]*\\.h",
        ],
        deps: &[],
    },
    Area {
        name: "version",
        feature: Some("version"),
        headers: &["xen/version.h"],
        files: &["xen/version\\.h", "xen/features\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "memory",
        feature: Some("memory"),
        headers: &["xen/memory.h"],
        files: &["xen/memory\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "event_channel",
        feature: Some("event_channel"),
        headers: &["xen/event_channel.h"],
        files: &["xen/event_channel\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "sched",
        feature: Some("sched"),
        headers: &["xen/sched.h"],
        files: &["xen/sched\\.h"],
        deps: &["xen", "event_channel"],
    },
    Area {
        name: "hvm",
        feature: Some("hvm"),
        headers: &["xen/hvm/hvm_op.h", "xen/hvm/params.h", "xen/hvm/ioreq.h"],
        files: &[
            "xen/hvm/hvm_op\\.h",
            "xen/hvm/params\\.h",
            "xen/hvm/ioreq\\.h",
        ],
        deps: &["xen", "event_channel"],
    },
    Area {
        name: "dm_op",
        feature: Some("dm_op"),
        headers: &["xen/hvm/dm_op.h"],
        files: &["xen/hvm/dm_op\\.h"],
        deps: &["xen", "event_channel", "hvm"],
    },
    Area {
        name: "privcmd",
        feature: Some("privcmd"),
        headers: &["xen/privcmd.h"],
        files: &["xen/privcmd\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "evtchn",
        feature: Some("evtchn"),
        headers: &["xen/evtchn.h"],
        files: &["xen/evtchn\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "xs_wire",
        feature: Some("xs_wire"),
        headers: &["xen/io/xs_wire.h"],
        files: &["xen/io/xs_wire\\.h"],
        deps: &[],
    },
];

/// The ioctl numbers xen-sys computes by hand (bindgen cannot evaluate `_IOC(...)`): the area
/// module that defines each. The generator proves each against the C compiler and refuses headers
/// that define one not listed here.
pub const IOCTLS: &[(&str, &str)] = &[
    ("privcmd", "IOCTL_PRIVCMD_HYPERCALL"),
    ("privcmd", "IOCTL_PRIVCMD_MMAP"),
    ("privcmd", "IOCTL_PRIVCMD_MMAPBATCH"),
    ("privcmd", "IOCTL_PRIVCMD_MMAPBATCH_V2"),
    ("privcmd", "IOCTL_PRIVCMD_DM_OP"),
    ("privcmd", "IOCTL_PRIVCMD_RESTRICT"),
    ("privcmd", "IOCTL_PRIVCMD_MMAP_RESOURCE"),
    ("privcmd", "IOCTL_PRIVCMD_IRQFD"),
    ("privcmd", "IOCTL_PRIVCMD_IOEVENTFD"),
    ("privcmd", "IOCTL_PRIVCMD_PCIDEV_GET_GSI"),
    ("evtchn", "IOCTL_EVTCHN_BIND_VIRQ"),
    ("evtchn", "IOCTL_EVTCHN_BIND_INTERDOMAIN"),
    ("evtchn", "IOCTL_EVTCHN_BIND_UNBOUND_PORT"),
    ("evtchn", "IOCTL_EVTCHN_UNBIND"),
    ("evtchn", "IOCTL_EVTCHN_NOTIFY"),
    ("evtchn", "IOCTL_EVTCHN_RESET"),
    ("evtchn", "IOCTL_EVTCHN_RESTRICT_DOMID"),
];
