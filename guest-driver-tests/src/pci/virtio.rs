//! The virtio 1.x PCI transport (virtio spec §4.1) as a driver in guest user space uses it:
//! the vendor capabilities that say where the common configuration, the notification area
//! and the device configuration live, the common configuration's registers, and the device
//! initialization sequence (§3.1.1).

use super::function::{Bar, PciFunction};
use crate::error::{DriverError, DriverResult};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Capability ID of a vendor-specific capability (virtio's are all of this kind).
const CAP_VENDOR: u8 = 0x09;
/// `cfg_type` values.
pub const CAP_COMMON_CFG: u8 = 1;
pub const CAP_NOTIFY_CFG: u8 = 2;
pub const CAP_ISR_CFG: u8 = 3;
pub const CAP_DEVICE_CFG: u8 = 4;

/// Device status bits (§2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Common configuration register offsets (§4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// The common configuration is at least this long.
    pub const LEN: u32 = 0x38;
}

/// One virtio structure: `length` bytes at `offset` in BAR `bar`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

/// Where a virtio-pci device keeps its structures, read from its capability list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub common: Window,
    pub notify: Window,
    pub notify_off_multiplier: u32,
    pub isr: Option<Window>,
    /// The device-specific configuration; a driver of vhca needs none of it (every attribute
    /// is also answered by QUERY_DEVICE), and carrier devices show another device's here.
    pub device: Option<Window>,
}

fn u32_at(cfg: &[u8], at: usize) -> Option<u32> {
    cfg.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Layout {
    /// Walks the capability list of a config space (as read from sysfs). The first
    /// capability of each type counts (§4.1.4: the driver should use the first it can).
    /// A list that loops or points outside the config space is an error.
    pub fn parse(cfg: &[u8]) -> DriverResult<Layout> {
        let bad = |what: &str| DriverError::Pci(format!("virtio-pci capabilities: {what}"));
        if cfg.len() < 64 {
            return Err(bad("config space shorter than its header"));
        }
        if u16::from_le_bytes([cfg[6], cfg[7]]) & 0x10 == 0 {
            return Err(bad("the function has no capability list"));
        }
        let mut found: BTreeMap<u8, (Window, u32)> = BTreeMap::new();
        let mut at = (cfg[0x34] & 0xfc) as usize;
        let mut hops = 0;
        while at != 0 {
            hops += 1;
            // 48 capabilities of 4 bytes fill the 192 bytes after the header.
            if hops > 48 || at < 0x40 || at + 2 > cfg.len() {
                return Err(bad("the list loops or leaves the config space"));
            }
            if cfg[at] == CAP_VENDOR {
                let len = *cfg.get(at + 2).ok_or_else(|| bad("truncated capability"))? as usize;
                if len < 16 || at + len > cfg.len() {
                    return Err(bad("a virtio capability shorter than 16 bytes"));
                }
                let ty = cfg[at + 3];
                let w = Window {
                    bar: cfg[at + 4],
                    offset: u32_at(cfg, at + 8).unwrap_or(0),
                    length: u32_at(cfg, at + 12).unwrap_or(0),
                };
                let extra = if ty == CAP_NOTIFY_CFG {
                    if len < 20 {
                        return Err(bad("a notify capability without its multiplier"));
                    }
                    u32_at(cfg, at + 16).unwrap_or(0)
                } else {
                    0
                };
                // BARs 0-5 only; type 5 (PCI config access) and unknown types are skipped.
                if w.bar <= 5 {
                    found.entry(ty).or_insert((w, extra));
                }
            }
            at = (cfg[at + 1] & 0xfc) as usize;
        }
        let common = found
            .get(&CAP_COMMON_CFG)
            .map(|c| c.0)
            .ok_or_else(|| bad("no common configuration (not a virtio 1.x device?)"))?;
        if common.length < common::LEN {
            return Err(bad("the common configuration is too short"));
        }
        let (notify, mult) = *found
            .get(&CAP_NOTIFY_CFG)
            .ok_or_else(|| bad("no notification structure"))?;
        Ok(Layout {
            common,
            notify,
            notify_off_multiplier: mult,
            isr: found.get(&CAP_ISR_CFG).map(|c| c.0),
            device: found.get(&CAP_DEVICE_CFG).map(|c| c.0),
        })
    }
}

/// A virtio-pci device's registers, mapped.
pub struct VirtioPci {
    layout: Layout,
    common: Arc<Bar>,
    notify: Arc<Bar>,
}

/// Where a queue's notifications go: a 16-bit write of the queue index at `offset` of `bar`.
#[derive(Clone)]
pub struct QueueNotifier {
    pub bar: Arc<Bar>,
    pub offset: u64,
    pub queue: u16,
}

impl QueueNotifier {
    pub fn notify(&self) -> DriverResult<()> {
        self.bar.write16(self.offset, self.queue)
    }
}

impl VirtioPci {
    /// Reads the layout of `f` and maps the BARs it names (`f` must be enabled).
    pub fn map(f: &PciFunction) -> DriverResult<VirtioPci> {
        let layout = Layout::parse(&f.config_space()?)?;
        let mut bars: BTreeMap<u8, Arc<Bar>> = BTreeMap::new();
        for b in [layout.common.bar, layout.notify.bar] {
            if let std::collections::btree_map::Entry::Vacant(e) = bars.entry(b) {
                e.insert(Arc::new(f.map_bar(b)?));
            }
        }
        Ok(VirtioPci {
            common: bars[&layout.common.bar].clone(),
            notify: bars[&layout.notify.bar].clone(),
            layout,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn c(&self, reg: u64) -> u64 {
        self.layout.common.offset as u64 + reg
    }

    pub fn status(&self) -> DriverResult<u8> {
        self.common.read8(self.c(common::DEVICE_STATUS))
    }

    pub fn set_status(&self, s: u8) -> DriverResult<()> {
        self.common.write8(self.c(common::DEVICE_STATUS), s)
    }

    /// Resets the device and waits until it reads back 0 (§4.1.4.3.2: the reset may take a
    /// while to complete; QEMU completes it within the write).
    pub fn reset(&self, timeout: std::time::Duration) -> DriverResult<()> {
        self.set_status(0)?;
        let deadline = std::time::Instant::now() + timeout;
        while self.status()? != 0 {
            if std::time::Instant::now() >= deadline {
                return Err(DriverError::Pci(
                    "the device did not finish its reset".into(),
                ));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    pub fn device_features(&self) -> DriverResult<u64> {
        let mut f = 0u64;
        for half in 0..2u32 {
            self.common
                .write32(self.c(common::DEVICE_FEATURE_SELECT), half)?;
            f |= (self.common.read32(self.c(common::DEVICE_FEATURE))? as u64) << (32 * half);
        }
        Ok(f)
    }

    pub fn set_driver_features(&self, f: u64) -> DriverResult<()> {
        for half in 0..2u32 {
            self.common
                .write32(self.c(common::DRIVER_FEATURE_SELECT), half)?;
            self.common
                .write32(self.c(common::DRIVER_FEATURE), (f >> (32 * half)) as u32)?;
        }
        Ok(())
    }

    pub fn num_queues(&self) -> DriverResult<u16> {
        self.common.read16(self.c(common::NUM_QUEUES))
    }

    /// Selects queue `q` and returns its maximum size (0: the queue does not exist).
    pub fn select_queue(&self, q: u16) -> DriverResult<u16> {
        self.common.write16(self.c(common::QUEUE_SELECT), q)?;
        self.common.read16(self.c(common::QUEUE_SIZE))
    }

    /// Sets up the selected queue `q`: size, ring addresses (guest-physical), and returns
    /// where its notifications go. The queue is not enabled yet.
    pub fn set_up_queue(
        &self,
        q: u16,
        size: u16,
        (desc, driver, device): (u64, u64, u64),
    ) -> DriverResult<QueueNotifier> {
        let c = &self.common;
        c.write16(self.c(common::QUEUE_SELECT), q)?;
        c.write16(self.c(common::QUEUE_SIZE), size)?;
        for (reg, addr) in [
            (common::QUEUE_DESC, desc),
            (common::QUEUE_DRIVER, driver),
            (common::QUEUE_DEVICE, device),
        ] {
            c.write32(self.c(reg), addr as u32)?;
            c.write32(self.c(reg) + 4, (addr >> 32) as u32)?;
        }
        let off = c.read16(self.c(common::QUEUE_NOTIFY_OFF))? as u64;
        let offset =
            self.layout.notify.offset as u64 + off * self.layout.notify_off_multiplier as u64;
        if offset + 2 > self.layout.notify.offset as u64 + self.layout.notify.length as u64 {
            return Err(DriverError::Pci(format!(
                "queue {q}: its notification address lies outside the notification structure"
            )));
        }
        Ok(QueueNotifier {
            bar: self.notify.clone(),
            offset,
            queue: q,
        })
    }

    pub fn enable_queue(&self, q: u16) -> DriverResult<()> {
        self.common.write16(self.c(common::QUEUE_SELECT), q)?;
        self.common.write16(self.c(common::QUEUE_ENABLE), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config space with a capability list as QEMU lays out a modern virtio-pci device's.
    fn config_with(caps: &[(u8, u8, u32, u32, Option<u32>)]) -> Vec<u8> {
        let mut cfg = vec![0u8; 256];
        cfg[6] = 0x10; // status: capability list
        let mut at = 0x40usize;
        cfg[0x34] = at as u8;
        for (i, &(ty, bar, off, len, mult)) in caps.iter().enumerate() {
            let clen = if mult.is_some() { 20 } else { 16 };
            cfg[at] = CAP_VENDOR;
            cfg[at + 1] = if i + 1 == caps.len() {
                0
            } else {
                (at + 24) as u8
            };
            cfg[at + 2] = clen;
            cfg[at + 3] = ty;
            cfg[at + 4] = bar;
            cfg[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
            cfg[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
            if let Some(m) = mult {
                cfg[at + 16..at + 20].copy_from_slice(&m.to_le_bytes());
            }
            at += 24;
        }
        cfg
    }

    #[test]
    fn qemus_layout_is_found() {
        let cfg = config_with(&[
            (CAP_COMMON_CFG, 4, 0, 0x1000, None),
            (CAP_ISR_CFG, 4, 0x1000, 0x1000, None),
            (CAP_DEVICE_CFG, 4, 0x2000, 0x1000, None),
            (CAP_NOTIFY_CFG, 4, 0x3000, 0x1000, Some(4)),
        ]);
        let l = Layout::parse(&cfg).unwrap();
        assert_eq!(
            l.common,
            Window {
                bar: 4,
                offset: 0,
                length: 0x1000
            }
        );
        assert_eq!(l.notify.offset, 0x3000);
        assert_eq!(l.notify_off_multiplier, 4);
        assert_eq!(l.device.unwrap().offset, 0x2000);
        assert_eq!(l.isr.unwrap().offset, 0x1000);
    }

    #[test]
    fn a_device_without_a_device_config_still_has_a_layout() {
        let cfg = config_with(&[
            (CAP_COMMON_CFG, 4, 0, 0x1000, None),
            (CAP_NOTIFY_CFG, 4, 0x3000, 0x1000, Some(4)),
        ]);
        assert_eq!(Layout::parse(&cfg).unwrap().device, None);
    }

    #[test]
    fn hostile_or_missing_lists_are_errors() {
        // No common configuration.
        let cfg = config_with(&[(CAP_NOTIFY_CFG, 4, 0x3000, 0x1000, Some(4))]);
        assert!(Layout::parse(&cfg).is_err());
        // A loop.
        let mut cfg = config_with(&[(CAP_COMMON_CFG, 4, 0, 0x1000, None)]);
        cfg[0x41] = 0x40;
        assert!(Layout::parse(&cfg).is_err());
        // Pointing into the header.
        let mut cfg = config_with(&[(CAP_COMMON_CFG, 4, 0, 0x1000, None)]);
        cfg[0x41] = 0x10;
        assert!(Layout::parse(&cfg).is_err());
        // A capability that runs off the end.
        let mut cfg = config_with(&[(CAP_COMMON_CFG, 4, 0, 0x1000, None)]);
        cfg[0x34] = 0xfc;
        cfg[0xfc] = CAP_VENDOR;
        cfg[0xfe] = 16;
        assert!(Layout::parse(&cfg).is_err());
        // No capability list at all, and a truncated config space.
        let mut cfg = config_with(&[(CAP_COMMON_CFG, 4, 0, 0x1000, None)]);
        cfg[6] = 0;
        assert!(Layout::parse(&cfg).is_err());
        assert!(Layout::parse(&[0u8; 16]).is_err());
        // A common configuration too short for its registers.
        let cfg = config_with(&[
            (CAP_COMMON_CFG, 4, 0, 0x10, None),
            (CAP_NOTIFY_CFG, 4, 0x3000, 0x1000, Some(4)),
        ]);
        assert!(Layout::parse(&cfg).is_err());
    }
}
