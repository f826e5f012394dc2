//! `vhca guest-pair A B`: plays a guest on each of two VFs — VF sockets (of one `vhca serve`
//! or of two, possibly in different network namespaces or hosts' worth of UDP apart) or, in a
//! guest, the PCI addresses of two VFs' virtio-pci functions (`pci:0000:00:03.0`) — connects an
//! RC pair between them and checks ping-pong and every RC opcode, data compared. It is how a
//! user checks a serve setup end to end without a VM, how tools/netns-test.sh checks two serve
//! processes across a veth pair, and how a guest checks the VFs QEMU gave it.

use thiserror::Error;
use vhca_device::{Mtu, Psn, VerbsError};
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_pingpong};
use vhca_guest::{DriverConfig, DriverError, VfTarget};

/// What failed, and in which step.
#[derive(Debug, Error)]
pub enum GuestPairError {
    #[error("guest on {vf}: {source}")]
    Guest {
        vf: VfTarget,
        #[source]
        source: DriverError,
    },
    #[error("{what}: {source}")]
    Step {
        what: String,
        #[source]
        source: VerbsError,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(VerbsError) -> GuestPairError {
    let what = what.into();
    move |source| GuestPairError::Step { what, source }
}

pub struct Options {
    pub a: VfTarget,
    pub b: VfTarget,
    pub msg_size: u32,
    pub iters: u32,
    pub mtu: Mtu,
}

/// Runs the check; returns the report to print.
pub fn run(o: &Options) -> Result<String, GuestPairError> {
    let cfg = DriverConfig::small();
    let connect = |vf: &VfTarget| {
        vf.open(&cfg).map_err(|source| GuestPairError::Guest {
            vf: vf.clone(),
            source,
        })
    };
    let mut a = connect(&o.a)?;
    let mut b = connect(&o.b)?;
    let size = o.msg_size.min(1 << 15);
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 16,
        16,
        (Psn(0xfffff0), Psn(0x42)),
        o.mtu,
    )
    .map_err(step("connecting the RC pair"))?;
    let bytes = rc_pingpong(&mut a, &ea, &mut b, &eb, size, o.iters).map_err(step("ping-pong"))?;
    for s in [0, 1, size] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, s)
            .map_err(step(format!("every RC opcode at {s} B")))?;
    }
    Ok(format!(
        "A {:?} QP 0x{:06x} <-> B {:?} QP 0x{:06x}: ping-pong {} B in {} round trips, every RC opcode at 0, 1 and {size} B: ok\n",
        a.driver().config().gid,
        ea.qpn.0,
        b.driver().config().gid,
        eb.qpn.0,
        bytes,
        o.iters
    ))
}
