//! A PC device model for Xen HVM guests, built on xen-rs's ioreq-server runtime
//! ([`xen_devicemodel::server`]).
//!
//! - [`pc`]: the i440FX host bridge and the PIIX3 ISA bridge (PIRQ routes become
//!   `set_pci_link_route`).
//! - [`uart`]: a 16550A on ISA IRQ 4, interrupt-driven both ways.
//! - [`fw_cfg`]: the firmware configuration device (ports 0x510/0x511, DMA at 0x514) that
//!   SeaBIOS reads on a QEMU i440FX.
//! - [`blk`]: virtio-blk requests over rust-vmm's `virtio-queue`, against any `vm-memory`
//!   `GuestMemory` (in Xen: guest RAM mapped once through `xen-foreignmemory`).
//! - [`virtio_pci`]: the virtio 1.x modern PCI transport (1af4:1042) of that disk, with
//!   MSI-X through `inject_msi` and INTx when MSI-X is off; its BAR follows the guest.
//! - [`acpi_pm`]: ACPI PM1a control, so that the guest's soft off shuts the domain down.
//! - [`machine`]: all of them registered on one server builder.
//! - [`linux`]: booting dom0's Linux kernel on this PC (boot sector, setup header,
//!   initramfs, command line), shared by the tests, the demo and the benchmarks.
//! - [`xen_ram`]: guest RAM mapped once through `xen-foreignmemory`, dropped on
//!   `IOREQ_TYPE_INVALIDATE`.

pub mod acpi_pm;
pub mod blk;
pub mod fw_cfg;
pub mod linux;
pub mod machine;
pub mod pc;
pub mod uart;
pub mod virtio_pci;
pub mod xen_ram;
