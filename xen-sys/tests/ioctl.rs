//! The ioctl numbers decode to the driver letter, command number and argument size the kernel
//! headers give them. (The generated `abi.rs` already proves each number equal to the C
//! compiler's at compile time; this test states the expected decoding in plain words, so a
//! swapped pair is visible in review as well.)
#![cfg(all(feature = "privcmd", feature = "evtchn"))]

use core::mem::size_of;
// The package is `xen-rs-sys`; the workspace calls it `xen_sys`.
use xen_rs_sys as xen_sys;
use xen_sys::evtchn::*;
use xen_sys::ioctl::{_IOC_NRSHIFT, _IOC_SIZESHIFT, _IOC_TYPESHIFT};
use xen_sys::privcmd::*;

/// (type letter, number, size) of an `_IOC_NONE` request.
fn decode(req: u32) -> (u8, u32, usize) {
    (
        ((req >> _IOC_TYPESHIFT) & 0xff) as u8,
        (req >> _IOC_NRSHIFT) & 0xff,
        ((req >> _IOC_SIZESHIFT) & 0x3fff) as usize,
    )
}

#[test]
fn privcmd_ioctls_decode_as_in_linux() {
    let expected = [
        (IOCTL_PRIVCMD_HYPERCALL, 0, size_of::<privcmd_hypercall>()),
        (IOCTL_PRIVCMD_MMAP, 2, size_of::<privcmd_mmap>()),
        (IOCTL_PRIVCMD_MMAPBATCH, 3, size_of::<privcmd_mmapbatch>()),
        (
            IOCTL_PRIVCMD_MMAPBATCH_V2,
            4,
            size_of::<privcmd_mmapbatch_v2>(),
        ),
        (IOCTL_PRIVCMD_DM_OP, 5, size_of::<privcmd_dm_op>()),
        (
            IOCTL_PRIVCMD_RESTRICT,
            6,
            size_of::<xen_sys::xen::domid_t>(),
        ),
        (
            IOCTL_PRIVCMD_MMAP_RESOURCE,
            7,
            size_of::<privcmd_mmap_resource>(),
        ),
    ];
    for (req, nr, size) in expected {
        assert_eq!(decode(req), (b'P', nr, size), "{req:#x}");
        assert_eq!(req >> 30, 0, "privcmd ioctls declare no direction");
    }
}

#[test]
fn newer_privcmd_ioctls_decode_as_in_linux_6_12() {
    use xen_sys::ioctl::{_IOC_DIRSHIFT, _IOC_NONE, _IOC_WRITE};
    // (request, number, size, direction): irqfd and ioeventfd are `_IOW`, the GSI query `_IOC_NONE`.
    let expected = [
        (IOCTL_PRIVCMD_IRQFD, 8, 24, _IOC_WRITE),
        (IOCTL_PRIVCMD_IOEVENTFD, 9, 48, _IOC_WRITE),
        (
            IOCTL_PRIVCMD_PCIDEV_GET_GSI,
            10,
            size_of::<privcmd_pcidev_get_gsi>(),
            _IOC_NONE,
        ),
    ];
    for (req, nr, size, dir) in expected {
        assert_eq!(decode(req), (b'P', nr, size), "{req:#x}");
        assert_eq!(req >> _IOC_DIRSHIFT, dir, "{req:#x}");
    }
    assert_eq!(size_of::<privcmd_irqfd>(), 24);
    assert_eq!(size_of::<privcmd_ioeventfd>(), 48);
}

#[test]
fn evtchn_ioctls_decode_as_in_linux() {
    let expected = [
        (
            IOCTL_EVTCHN_BIND_VIRQ,
            0,
            size_of::<ioctl_evtchn_bind_virq>(),
        ),
        (
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            1,
            size_of::<ioctl_evtchn_bind_interdomain>(),
        ),
        (
            IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            2,
            size_of::<ioctl_evtchn_bind_unbound_port>(),
        ),
        (IOCTL_EVTCHN_UNBIND, 3, size_of::<ioctl_evtchn_unbind>()),
        (IOCTL_EVTCHN_NOTIFY, 4, size_of::<ioctl_evtchn_notify>()),
        (IOCTL_EVTCHN_RESET, 5, 0),
        (
            IOCTL_EVTCHN_RESTRICT_DOMID,
            6,
            size_of::<ioctl_evtchn_restrict_domid>(),
        ),
    ];
    for (req, nr, size) in expected {
        assert_eq!(decode(req), (b'E', nr, size), "{req:#x}");
        assert_eq!(req >> 30, 0, "evtchn ioctls declare no direction");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn well_known_x86_64_numbers() {
    // Values as libxencall/libxenevtchn users see them on x86_64 Linux.
    assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
    assert_eq!(IOCTL_PRIVCMD_MMAPBATCH_V2, 0x0020_5004);
    assert_eq!(IOCTL_EVTCHN_BIND_VIRQ, 0x0004_4500);
    assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
    assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
}

#[cfg(feature = "hvm")]
#[test]
fn ioreq_bitfield_accessors_round_trip() {
    use xen_sys::hvm::ioreq;
    let mut r = ioreq::default();
    r.set_state(0xf);
    r.set_dir(1);
    assert_eq!(
        (r.state(), r.data_is_ptr(), r.dir(), r.df()),
        (0xf, 0, 1, 0)
    );
}
