//! Where a VF is: the vhost-user socket of a `vhca serve` VF (this process plays QEMU and the
//! guest), or a virtio-pci function inside a guest (a real VMM presents the VF).

use crate::context::GuestContext;
use crate::driver::{DriverConfig, GuestDriver};
use crate::error::DriverError;
use crate::pci::PciAddress;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A VF to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VfTarget {
    /// A VF socket (`DIR/vf0.sock`).
    Socket(PathBuf),
    /// A PCI function in this (guest) kernel: `pci:0000:00:03.0`, or the bare address.
    Pci(PciAddress),
}

impl FromStr for VfTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<VfTarget, String> {
        if let Some(a) = s.strip_prefix("pci:") {
            return a.parse().map(VfTarget::Pci);
        }
        // A bare PCI address (it has no '/'); anything else is a socket path.
        match s.parse::<PciAddress>() {
            Ok(a) => Ok(VfTarget::Pci(a)),
            Err(_) if s.is_empty() => Err("an empty VF name".into()),
            Err(_) => Ok(VfTarget::Socket(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for VfTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VfTarget::Socket(p) => write!(f, "{}", p.display()),
            VfTarget::Pci(a) => write!(f, "pci:{a}"),
        }
    }
}

impl VfTarget {
    /// Opens the VF with `cfg` (guest memory: a memfd for a socket, hugepages for PCI).
    pub fn open(&self, cfg: &DriverConfig) -> Result<GuestContext, DriverError> {
        let drv = match self {
            VfTarget::Socket(p) => GuestDriver::connect(p, cfg)?,
            VfTarget::Pci(a) => GuestDriver::open_pci(*a, cfg)?,
        };
        Ok(GuestContext::new(drv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "pci:00:03.0".parse::<VfTarget>().unwrap().to_string(),
            "pci:0000:00:03.0"
        );
        assert!(matches!(
            "0000:00:04.0".parse::<VfTarget>().unwrap(),
            VfTarget::Pci(_)
        ));
        assert_eq!(
            "/run/vhca/vf0.sock".parse::<VfTarget>().unwrap(),
            VfTarget::Socket("/run/vhca/vf0.sock".into())
        );
        assert!(matches!(
            "vf0.sock".parse::<VfTarget>().unwrap(),
            VfTarget::Socket(_)
        ));
        assert!("pci:not-an-address".parse::<VfTarget>().is_err());
        assert!("".parse::<VfTarget>().is_err());
    }
}
