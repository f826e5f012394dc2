//! One PCI function seen from guest user space through sysfs: its identity, its config space
//! (the `config` file), which kernel driver holds it, and its memory BARs mapped through the
//! `resourceN` files.
//!
//! Nothing here needs a kernel driver of its own. The function is handed to `uio_pci_generic`
//! when that module is loaded (it enables the device and keeps other drivers away, as DPDK
//! does); memory decoding and bus mastering are then switched on through the config space,
//! which a virtio device needs before it touches the queues (QEMU disables a virtio-pci
//! device whose bus mastering is off).

use crate::error::{DriverError, DriverResult};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

/// Where sysfs lists PCI functions.
const SYSFS_PCI: &str = "/sys/bus/pci";

/// PCI command register bits.
const COMMAND: u64 = 0x04;
const COMMAND_MEMORY: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// A PCI function address, `domain:bus:device.function` (`0000:00:03.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = String;

    /// `DDDD:BB:DD.F`, or `BB:DD.F` in domain 0 (as lspci prints it).
    fn from_str(s: &str) -> Result<PciAddress, String> {
        let bad = || format!("{s:?} is not a PCI address (DDDD:BB:DD.F or BB:DD.F)");
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        let hex = |t: &str, max: u32| {
            (!t.is_empty() && t.len() <= 4)
                .then(|| u32::from_str_radix(t, 16).ok())
                .flatten()
                .filter(|&v| v <= max)
                .ok_or_else(bad)
        };
        Ok(PciAddress {
            domain: hex(domain, 0xffff)? as u16,
            bus: hex(bus, 0xff)? as u8,
            device: hex(device, 0x1f)? as u8,
            function: hex(function, 7)? as u8,
        })
    }
}

/// A PCI function through its sysfs directory.
pub struct PciFunction {
    address: PciAddress,
    dir: PathBuf,
    config: File,
}

fn sysfs_err(what: &str, path: &Path, e: std::io::Error) -> DriverError {
    DriverError::Pci(format!("{what} {}: {e}", path.display()))
}

fn read_hex(path: &Path) -> DriverResult<u32> {
    let s = std::fs::read_to_string(path).map_err(|e| sysfs_err("read", path, e))?;
    let t = s.trim().trim_start_matches("0x");
    u32::from_str_radix(t, 16)
        .map_err(|_| DriverError::Pci(format!("{}: not a hex number: {s:?}", path.display())))
}

impl PciFunction {
    /// Opens the function at `address` (its config space read-write: this needs root).
    pub fn open(address: PciAddress) -> DriverResult<PciFunction> {
        let dir = Path::new(SYSFS_PCI)
            .join("devices")
            .join(address.to_string());
        let cfg_path = dir.join("config");
        let config = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cfg_path)
            .map_err(|e| sysfs_err("open", &cfg_path, e))?;
        Ok(PciFunction {
            address,
            dir,
            config,
        })
    }

    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// (vendor, device) IDs.
    pub fn ids(&self) -> DriverResult<(u16, u16)> {
        Ok((
            read_hex(&self.dir.join("vendor"))? as u16,
            read_hex(&self.dir.join("device"))? as u16,
        ))
    }

    /// The config space as far as sysfs shows it (256 bytes for a conventional function,
    /// 4 KiB for PCI Express).
    pub fn config_space(&self) -> DriverResult<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let mut n = 0;
        while n < buf.len() {
            match self.config.read_at(&mut buf[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(sysfs_err("read", &self.dir.join("config"), e)),
            }
        }
        buf.truncate(n);
        Ok(buf)
    }

    fn read_config_u16(&self, offset: u64) -> DriverResult<u16> {
        let mut b = [0u8; 2];
        self.config
            .read_exact_at(&mut b, offset)
            .map_err(|e| sysfs_err("read", &self.dir.join("config"), e))?;
        Ok(u16::from_le_bytes(b))
    }

    fn write_config_u16(&self, offset: u64, v: u16) -> DriverResult<()> {
        self.config
            .write_all_at(&v.to_le_bytes(), offset)
            .map_err(|e| sysfs_err("write", &self.dir.join("config"), e))
    }

    /// The kernel driver bound to the function, if any.
    pub fn driver(&self) -> Option<String> {
        std::fs::read_link(self.dir.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Takes the function away from whatever kernel driver holds it (virtio-pci claims every
    /// virtio device) and hands it to `uio_pci_generic` when that driver is loaded; with it,
    /// no other driver can take the function while this process drives it.
    pub fn claim(&self) -> DriverResult<()> {
        let uio = Path::new(SYSFS_PCI).join("drivers/uio_pci_generic");
        match self.driver().as_deref() {
            Some("uio_pci_generic") => return Ok(()),
            Some(other) => {
                let unbind = Path::new(SYSFS_PCI)
                    .join("drivers")
                    .join(other)
                    .join("unbind");
                tracing::info!(pci = %self.address, driver = other, "unbinding the function from its kernel driver");
                std::fs::write(&unbind, self.address.to_string())
                    .map_err(|e| sysfs_err("write", &unbind, e))?;
            }
            None => {}
        }
        if uio.is_dir() {
            let over = self.dir.join("driver_override");
            std::fs::write(&over, "uio_pci_generic").map_err(|e| sysfs_err("write", &over, e))?;
            let probe = Path::new(SYSFS_PCI).join("drivers_probe");
            std::fs::write(&probe, self.address.to_string())
                .map_err(|e| sysfs_err("write", &probe, e))?;
            match self.driver().as_deref() {
                Some("uio_pci_generic") => {}
                other => {
                    return Err(DriverError::Pci(format!(
                        "{}: uio_pci_generic did not bind the function (driver now {other:?})",
                        self.address
                    )))
                }
            }
        } else {
            tracing::info!(pci = %self.address, "uio_pci_generic is not loaded: driving the function with no kernel driver bound");
        }
        Ok(())
    }

    /// Switches memory decoding and bus mastering on.
    pub fn enable(&self) -> DriverResult<()> {
        let cmd = self.read_config_u16(COMMAND)?;
        let want = cmd | COMMAND_MEMORY | COMMAND_BUS_MASTER;
        if want != cmd {
            self.write_config_u16(COMMAND, want)?;
        }
        let now = self.read_config_u16(COMMAND)?;
        if now & (COMMAND_MEMORY | COMMAND_BUS_MASTER) != COMMAND_MEMORY | COMMAND_BUS_MASTER {
            return Err(DriverError::Pci(format!(
                "{}: memory decoding and bus mastering stay off (command register {now:#06x})",
                self.address
            )));
        }
        Ok(())
    }

    /// Maps memory BAR `index` through its sysfs resource file.
    pub fn map_bar(&self, index: u8) -> DriverResult<Bar> {
        let path = self.dir.join(format!("resource{index}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| sysfs_err("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| sysfs_err("stat", &path, e))?
            .len();
        if len == 0 || len > 1 << 32 {
            return Err(DriverError::Pci(format!(
                "{}: BAR {index} has {len} bytes",
                self.address
            )));
        }
        Bar::map(index, file, len)
            .map_err(|e| DriverError::Pci(format!("mmap {}: {e}", path.display())))
    }
}

/// A memory BAR mapped into this process. Every access is one volatile load or store of
/// exactly its width (device registers must not be read or written in pieces), at an offset
/// checked against the BAR's length and aligned to the width.
pub struct Bar {
    index: u8,
    region: MmapRegion<()>,
    len: u64,
}

macro_rules! bar_access {
    ($read:ident, $write:ident, $t:ty) => {
        pub fn $read(&self, offset: u64) -> DriverResult<$t> {
            self.check(offset, std::mem::size_of::<$t>() as u64)?;
            let r = self
                .region
                .get_ref::<$t>(offset as usize)
                .map_err(|e| DriverError::Pci(format!("BAR {}: {e}", self.index)))?;
            Ok(<$t>::from_le(r.load()))
        }

        pub fn $write(&self, offset: u64, v: $t) -> DriverResult<()> {
            self.check(offset, std::mem::size_of::<$t>() as u64)?;
            // Everything written to memory before (rings, buffers) is visible to the device
            // before the register write that may make it look.
            std::sync::atomic::fence(Ordering::SeqCst);
            let r = self
                .region
                .get_ref::<$t>(offset as usize)
                .map_err(|e| DriverError::Pci(format!("BAR {}: {e}", self.index)))?;
            r.store(v.to_le());
            Ok(())
        }
    };
}

impl Bar {
    /// Maps `len` bytes of `file` (a sysfs resource file) as BAR `index`.
    fn map(index: u8, file: File, len: u64) -> Result<Bar, vm_memory::mmap::MmapRegionError> {
        let region = MmapRegion::<()>::from_file(FileOffset::new(file, 0), len as usize)?;
        Ok(Bar { index, region, len })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: u64, width: u64) -> DriverResult<()> {
        match offset.checked_add(width) {
            Some(end) if end <= self.len && offset % width == 0 => Ok(()),
            _ => Err(DriverError::Pci(format!(
                "BAR {}: a {width}-byte access at {offset:#x} is outside its {} bytes or unaligned",
                self.index, self.len
            ))),
        }
    }

    bar_access!(read8, write8, u8);
    bar_access!(read16, write16, u16);
    bar_access!(read32, write32, u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_parse_and_print() {
        let a: PciAddress = "0000:00:03.0".parse().unwrap();
        assert_eq!(
            a,
            PciAddress {
                domain: 0,
                bus: 0,
                device: 3,
                function: 0
            }
        );
        assert_eq!(a.to_string(), "0000:00:03.0");
        let b: PciAddress = "1f:1f.7".parse().unwrap();
        assert_eq!(b.to_string(), "0000:1f:1f.7");
        for bad in [
            "",
            "00:03",
            "00:20.0",
            "00:03.8",
            "0:0:0:0.0",
            "zz:00.0",
            "/tmp/vf0.sock",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
        }
    }

    /// A BAR over an ordinary file: the same mapping and accessors as over a sysfs resource.
    fn file_bar(len: u64) -> (Bar, File) {
        let f = tempfile::tempfile().unwrap();
        f.set_len(len).unwrap();
        (Bar::map(2, f.try_clone().unwrap(), len).unwrap(), f)
    }

    #[test]
    fn bar_accesses_are_little_endian_and_exactly_their_width() {
        let (bar, f) = file_bar(4096);
        bar.write32(0x10, 0x1122_3344).unwrap();
        bar.write16(0x20, 0xaabb).unwrap();
        bar.write8(0x23, 0x7f).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 0x10).unwrap();
        assert_eq!(&b[..4], &[0x44, 0x33, 0x22, 0x11]);
        f.read_exact_at(&mut b, 0x20).unwrap();
        assert_eq!(
            &b[..4],
            &[0xbb, 0xaa, 0, 0x7f],
            "a 16-bit write leaves byte 2 alone"
        );
        assert_eq!(bar.read16(0x12).unwrap(), 0x1122);
        assert_eq!(bar.read8(0x13).unwrap(), 0x11);
    }

    #[test]
    fn bar_accesses_outside_or_unaligned_are_errors() {
        let (bar, _f) = file_bar(4096);
        assert!(bar.read32(4096).is_err());
        assert!(bar.read32(4094).is_err());
        assert!(bar.write16(4095, 1).is_err());
        assert!(bar.read32(2).is_err(), "unaligned");
        assert!(bar.write16(u64::MAX - 1, 0).is_err());
        assert!(bar.read8(4095).is_ok());
    }
}
