//! Prints what the hypervisor says about itself, and shows the typed errors of a refused dm_op.
//!
//! Run in a Xen dom0: `cargo run -p xen-hypercall --example xen_info`.

use xen_hypercall::{DmOpBuf, DomId, Plain, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};

fn main() -> Result<(), xen_hypercall::Error> {
    let xen = Privcmd::open()?;
    let v = xen.xen_version()?;
    println!("Xen {v}{}", xen.xen_extraversion()?);
    println!("capabilities: {}", xen.xen_capabilities()?);
    println!("changeset:    {}", xen.xen_changeset()?);
    println!("buffers from: {:?}", xen.buffers().source());

    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_nr_vcpus;
    match xen.dm_op("dm_op nr_vcpus", DomId::DOM0, &[DmOpBuf::from_mut(&mut op)]) {
        // SAFETY: Xen filled in the nr_vcpus member of the union.
        Ok(()) => println!("dom0 vcpus: {}", unsafe { op.u.nr_vcpus.vcpus }),
        Err(e) => println!("as expected for a PV dom0: {e}"),
    }
    Ok(())
}
