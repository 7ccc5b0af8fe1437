//! A PC device model for Xen HVM guests, built on xen-rs's ioreq-server runtime
//! ([`xen_devicemodel::server`]).
//!
//! - [`blk`]: virtio-blk requests over rust-vmm's `virtio-queue`, against any `vm-memory`
//!   `GuestMemory` (in Xen: guest RAM mapped once through `xen-foreignmemory`).
//! - [`virtio_pci`]: the virtio 1.x modern PCI transport (1af4:1042) of that disk, with
//!   MSI-X through `inject_msi` and INTx when MSI-X is off; its BAR follows the guest.

pub mod blk;
pub mod virtio_pci;
