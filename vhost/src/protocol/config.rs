//! The config space: device attributes a driver reads before it sends any command, after the
//! 2022 virtio-rdma RFC's `virtio_rdma_config`. QUERY_DEVICE answers the same bytes, so a
//! driver that cannot read the config window (a VF carried by another device type, whose
//! config space the frontend owns) learns everything through the controlq.

use super::codec::{DecodeError, Reader, Writer};
use vhca_device::{Gid, Mac, Mtu, VfIdentity};

/// Size of the config space in bytes (what QEMU's `config_size` must be).
pub const CONFIG_SIZE: usize = 128;

/// The config space, little-endian, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaConfig {
    pub version: u32,
    pub phys_port_cnt: u32,
    pub node_guid: u64,
    pub port_guid: u64,
    pub gid: Gid,
    pub mac: Mac,
    /// `ibv_port_state`: 4 = ACTIVE.
    pub port_state: u8,
    /// `ibv_mtu` enum.
    pub active_mtu: u8,
    pub max_qp: u32,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_inline_data: u32,
    pub max_cq: u32,
    pub max_cqe: u32,
    pub max_mr: u32,
    pub max_pd: u32,
    pub max_srq: u32,
    pub max_srq_wr: u32,
    pub max_ah: u32,
    pub max_msg_sz: u32,
    pub max_mr_size: u64,
    pub max_qp_rd_atom: u8,
    pub max_qp_init_rd_atom: u8,
    /// log2 of the page sizes MR page lists may use (bit n set: 2^n bytes allowed).
    pub page_size_cap: u64,
    /// Bytes per CQE in CQ rings.
    pub cqe_size: u32,
    /// The device-specific feature bits (0–23) the device offers, as GET_FEATURES reports
    /// them: for a driver whose frontend filters those bits out. 0 on a device that predates
    /// the field (the bytes were reserved and zero).
    pub device_features: u32,
}

/// Device-specific feature bits are bits 0–23; anything above is impossible here.
const DEVICE_FEATURE_BITS: u32 = (1 << 24) - 1;

impl RdmaConfig {
    pub fn from_identity(id: &VfIdentity) -> RdmaConfig {
        let l = &id.limits;
        RdmaConfig {
            version: super::PROTOCOL_VERSION,
            phys_port_cnt: 1,
            node_guid: id.node_guid.0,
            port_guid: id.port_guid.0,
            gid: id.gid,
            mac: id.mac,
            port_state: 4,
            active_mtu: id.port_mtu as u8,
            max_qp: l.max_qp,
            max_qp_wr: l.max_qp_wr,
            max_sge: l.max_sge,
            max_inline_data: l.max_inline_data,
            max_cq: l.max_cq,
            max_cqe: l.max_cqe,
            max_mr: l.max_mr,
            max_pd: l.max_pd,
            max_srq: l.max_srq,
            max_srq_wr: l.max_srq_wr,
            max_ah: l.max_ah,
            max_msg_sz: l.max_msg_sz,
            max_mr_size: l.max_mr_size,
            max_qp_rd_atom: l.max_qp_rd_atom,
            max_qp_init_rd_atom: l.max_qp_init_rd_atom,
            page_size_cap: vhca_device::mr::MR_PAGE_SHIFTS
                .clone()
                .fold(0u64, |acc, s| acc | (1u64 << s)),
            cqe_size: super::ring::CQE_SIZE as u32,
            device_features: super::features::DEVICE_SPECIFIC as u32,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.version)
            .u32(self.phys_port_cnt)
            .u64(self.node_guid)
            .u64(self.port_guid);
        w.bytes(&self.gid.0)
            .bytes(&self.mac.0)
            .u8(self.port_state)
            .u8(self.active_mtu);
        for v in [
            self.max_qp,
            self.max_qp_wr,
            self.max_sge,
            self.max_inline_data,
            self.max_cq,
            self.max_cqe,
            self.max_mr,
            self.max_pd,
            self.max_srq,
            self.max_srq_wr,
            self.max_ah,
            self.max_msg_sz,
        ] {
            w.u32(v);
        }
        w.u64(self.max_mr_size)
            .u8(self.max_qp_rd_atom)
            .u8(self.max_qp_init_rd_atom)
            .zeros(6);
        w.u64(self.page_size_cap)
            .u32(self.cqe_size)
            .u32(self.device_features);
        w.pad_to(CONFIG_SIZE);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<RdmaConfig, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.u32()?;
        let phys_port_cnt = r.u32()?;
        let node_guid = r.u64()?;
        let port_guid = r.u64()?;
        let gid = Gid(r.array()?);
        let mac = Mac(r.array()?);
        let port_state = r.u8()?;
        let active_mtu = r.u8()?;
        if Mtu::from_enum(active_mtu).is_none() {
            return Err(DecodeError::Invalid("active_mtu"));
        }
        let mut n = [0u32; 12];
        for x in n.iter_mut() {
            *x = r.u32()?;
        }
        let max_mr_size = r.u64()?;
        let max_qp_rd_atom = r.u8()?;
        let max_qp_init_rd_atom = r.u8()?;
        r.skip(6)?;
        let page_size_cap = r.u64()?;
        let cqe_size = r.u32()?;
        let device_features = r.u32()?;
        if device_features & !DEVICE_FEATURE_BITS != 0 {
            return Err(DecodeError::Invalid("device_features"));
        }
        Ok(RdmaConfig {
            version,
            phys_port_cnt,
            node_guid,
            port_guid,
            gid,
            mac,
            port_state,
            active_mtu,
            max_qp: n[0],
            max_qp_wr: n[1],
            max_sge: n[2],
            max_inline_data: n[3],
            max_cq: n[4],
            max_cqe: n[5],
            max_mr: n[6],
            max_pd: n[7],
            max_srq: n[8],
            max_srq_wr: n[9],
            max_ah: n[10],
            max_msg_sz: n[11],
            max_mr_size,
            max_qp_rd_atom,
            max_qp_init_rd_atom,
            page_size_cap,
            cqe_size,
            device_features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::features;
    use vhca_device::Pf;

    #[test]
    fn config_round_trips_and_fits_its_size() {
        let pf = Pf::new(0, 1);
        let c = RdmaConfig::from_identity(&pf.default_identity(0));
        let b = c.encode();
        assert_eq!(b.len(), CONFIG_SIZE);
        assert_eq!(RdmaConfig::decode(&b).unwrap(), c);
        assert!(RdmaConfig::decode(&b[..40]).is_err());
        assert_eq!(c.gid, Gid::from_ipv4([10, 200, 0, 1]));
    }

    #[test]
    fn config_reports_the_device_specific_feature_bits_at_offset_124() {
        let pf = Pf::new(0, 1);
        let c = RdmaConfig::from_identity(&pf.default_identity(0));
        assert_eq!(c.device_features as u64, features::DEVICE_SPECIFIC);
        let b = c.encode();
        assert_eq!(
            u32::from_le_bytes(b[124..128].try_into().unwrap()) as u64,
            features::RC | features::UD | features::SRQ | features::MIGRATION
        );
        // A layout that ends before the field, or carries bits beyond the device-specific
        // range there, is refused.
        assert!(RdmaConfig::decode(&b[..124]).is_err());
        let mut bad = b.clone();
        bad[127] = 0x01; // bit 24
        assert_eq!(
            RdmaConfig::decode(&bad),
            Err(DecodeError::Invalid("device_features"))
        );
        // An older device's zeros decode as "no bits reported".
        let mut old = b;
        old[124..128].fill(0);
        assert_eq!(RdmaConfig::decode(&old).unwrap().device_features, 0);
    }

    #[test]
    fn config_with_an_impossible_mtu_is_refused() {
        let pf = Pf::new(0, 1);
        let mut b = RdmaConfig::from_identity(&pf.default_identity(0)).encode();
        b[47] = 9;
        assert_eq!(
            RdmaConfig::decode(&b),
            Err(DecodeError::Invalid("active_mtu"))
        );
    }
}
