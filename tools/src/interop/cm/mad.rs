//! CM MADs (IBTA vol. 1 chapter 12, the kernel's `ibta_vol1_c12.h` layout): the 24-byte MAD
//! header and the REQ, MRA, REJ, REP, RTU, DREQ and DREP messages of the CM class (0x07, class
//! version 2), parsed from and written to 256-byte MADs.
//!
//! A MAD comes from the network: [`Mad::parse`] reads only inside the 256 bytes it is given,
//! refuses what is not a CM message it knows with a [`MadError`], and never panics or
//! allocates by a length found in the input (private data is a fixed-size field per message).
//! Fields are big-endian; sub-byte fields take the most significant bits first, as IBTA
//! numbers them.

use thiserror::Error;
use vhca_device::Gid;

/// A MAD's size.
pub const MAD_LEN: usize = 256;
/// The common MAD header in front of every message.
pub const HDR_LEN: usize = 24;
pub const BASE_VERSION: u8 = 1;
/// Management class of the communication manager.
pub const CM_CLASS: u8 = 0x07;
pub const CM_CLASS_VERSION: u8 = 2;
/// Every CM message is a SEND (no GET/response pairing: the CM matches by communication ID).
pub const METHOD_SEND: u8 = 0x03;

/// Attribute IDs of the CM messages.
pub mod attr {
    pub const REQ: u16 = 0x0010;
    pub const MRA: u16 = 0x0011;
    pub const REJ: u16 = 0x0012;
    pub const REP: u16 = 0x0013;
    pub const RTU: u16 = 0x0014;
    pub const DREQ: u16 = 0x0015;
    pub const DREP: u16 = 0x0016;
}

/// Private-data sizes (the rest of the 232-byte message after the fixed fields).
pub mod pdata {
    pub const REQ: usize = 92;
    pub const MRA: usize = 222;
    pub const REJ: usize = 148;
    pub const REP: usize = 196;
    pub const RTU: usize = 224;
    pub const DREQ: usize = 220;
    pub const DREP: usize = 224;
}

/// The REJ's Additional Rejection Information field.
pub const ARI_LEN: usize = 72;

/// Why a MAD was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MadError {
    #[error("a MAD is {MAD_LEN} bytes, this one {0}")]
    Length(usize),
    #[error("not a CM MAD (base version {base}, class {class:#04x} version {version})")]
    NotCm { base: u8, class: u8, version: u8 },
    #[error("CM method {0:#04x} is not SEND")]
    Method(u8),
    #[error("CM attribute {0:#06x} is not handled")]
    Attribute(u16),
    #[error("private data of {len} bytes does not fit the {max} bytes of the message")]
    PrivateData { len: usize, max: usize },
    #[error("rejection info of {0} bytes is longer than {ARI_LEN}")]
    Ari(usize),
}

/// One path of a REQ (primary or alternate). For RoCE the LIDs are the permissive 0xFFFF and
/// the GIDs are the IPv4-mapped addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Path {
    pub local_lid: u16,
    pub remote_lid: u16,
    pub local_gid: Gid,
    pub remote_gid: Gid,
    /// 20 bits.
    pub flow_label: u32,
    /// 6 bits (IB rate enum).
    pub packet_rate: u8,
    pub traffic_class: u8,
    pub hop_limit: u8,
    /// 4 bits.
    pub sl: u8,
    pub subnet_local: bool,
    /// 5 bits: the requester's ACK timeout exponent for this path.
    pub local_ack_timeout: u8,
}

/// Connection request (Table 106).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub local_comm_id: u32,
    pub service_id: u64,
    pub local_ca_guid: u64,
    pub local_qkey: u32,
    /// 24 bits.
    pub local_qpn: u32,
    pub responder_resources: u8,
    pub local_eecn: u32,
    pub initiator_depth: u8,
    pub remote_eecn: u32,
    /// 5 bits: how long the passive side may take to answer.
    pub remote_cm_response_timeout: u8,
    /// 2 bits: 0 RC, 1 UC, 3 extended (XRC).
    pub transport_service_type: u8,
    pub end_to_end_flow_control: bool,
    /// 24 bits.
    pub starting_psn: u32,
    /// 5 bits: how long the active side takes to answer a REP.
    pub local_cm_response_timeout: u8,
    /// 3 bits.
    pub retry_count: u8,
    pub pkey: u16,
    /// 4 bits, the IB MTU enum (1 = 256 … 5 = 4096).
    pub path_mtu: u8,
    pub rdc_exists: bool,
    /// 3 bits.
    pub rnr_retry_count: u8,
    /// 4 bits.
    pub max_cm_retries: u8,
    pub srq: bool,
    /// 3 bits.
    pub extended_transport_type: u8,
    pub primary: Path,
    pub alternate: Path,
    pub private_data: [u8; pdata::REQ],
}

/// Message receipt acknowledgement (Table 107).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mra {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    /// 2 bits: 0 REQ, 1 REP, 2 LAP.
    pub message_mraed: u8,
    /// 5 bits.
    pub service_timeout: u8,
    pub private_data: [u8; pdata::MRA],
}

/// Reject (Table 108).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rej {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    /// 2 bits: 0 REQ, 1 REP, 2 other.
    pub message_rejected: u8,
    /// 7 bits.
    pub ari_length: u8,
    pub reason: u16,
    pub ari: [u8; ARI_LEN],
    pub private_data: [u8; pdata::REJ],
}

/// Reply to a REQ (Table 110).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub local_qkey: u32,
    /// 24 bits.
    pub local_qpn: u32,
    pub local_eecn: u32,
    /// 24 bits.
    pub starting_psn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    /// 5 bits.
    pub target_ack_delay: u8,
    /// 2 bits.
    pub failover_accepted: u8,
    pub end_to_end_flow_control: bool,
    /// 3 bits.
    pub rnr_retry_count: u8,
    pub srq: bool,
    pub local_ca_guid: u64,
    pub private_data: [u8; pdata::REP],
}

/// Ready to use (Table 111).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtu {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub private_data: [u8; pdata::RTU],
}

/// Disconnect request (Table 112).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dreq {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    /// 24 bits.
    pub remote_qpn: u32,
    pub private_data: [u8; pdata::DREQ],
}

/// Disconnect reply (Table 113).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drep {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub private_data: [u8; pdata::DREP],
}

/// A CM message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmMsg {
    Req(Box<Req>),
    Mra(Box<Mra>),
    Rej(Box<Rej>),
    Rep(Box<Rep>),
    Rtu(Box<Rtu>),
    Dreq(Box<Dreq>),
    Drep(Box<Drep>),
}

impl CmMsg {
    pub fn attr_id(&self) -> u16 {
        match self {
            CmMsg::Req(_) => attr::REQ,
            CmMsg::Mra(_) => attr::MRA,
            CmMsg::Rej(_) => attr::REJ,
            CmMsg::Rep(_) => attr::REP,
            CmMsg::Rtu(_) => attr::RTU,
            CmMsg::Dreq(_) => attr::DREQ,
            CmMsg::Drep(_) => attr::DREP,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            CmMsg::Req(_) => "REQ",
            CmMsg::Mra(_) => "MRA",
            CmMsg::Rej(_) => "REJ",
            CmMsg::Rep(_) => "REP",
            CmMsg::Rtu(_) => "RTU",
            CmMsg::Dreq(_) => "DREQ",
            CmMsg::Drep(_) => "DREP",
        }
    }
}

/// A CM MAD: its transaction ID and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mad {
    pub tid: u64,
    pub msg: CmMsg,
}

/// Private data of a message: `data` zero-padded to the field's size, or an error when it does
/// not fit.
pub fn private_data<const N: usize>(data: &[u8]) -> Result<[u8; N], MadError> {
    if data.len() > N {
        return Err(MadError::PrivateData {
            len: data.len(),
            max: N,
        });
    }
    let mut out = [0u8; N];
    out[..data.len()].copy_from_slice(data);
    Ok(out)
}

// ---- field access over the message body (offsets after the MAD header) ----------------------

/// Reads big-endian fields of a message body; offsets are IBTA's (after the 24-byte header).
struct Rd<'a>(&'a [u8; MAD_LEN]);

impl Rd<'_> {
    fn u8(&self, off: usize) -> u8 {
        self.0[HDR_LEN + off]
    }
    fn u16(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.u8(off), self.u8(off + 1)])
    }
    fn u32(&self, off: usize) -> u32 {
        u32::from_be_bytes([
            self.u8(off),
            self.u8(off + 1),
            self.u8(off + 2),
            self.u8(off + 3),
        ])
    }
    /// The top 24 bits of the 32-bit word at `off` (QPNs, PSNs, EECNs).
    fn u24(&self, off: usize) -> u32 {
        self.u32(off) >> 8
    }
    fn u64(&self, off: usize) -> u64 {
        (u64::from(self.u32(off)) << 32) | u64::from(self.u32(off + 4))
    }
    /// `width` bits of the byte at `off`, starting `bit` bits below its most significant one.
    fn bits(&self, off: usize, bit: u32, width: u32) -> u8 {
        (self.u8(off) >> (8 - bit - width)) & ((1u16 << width) - 1) as u8
    }
    fn gid(&self, off: usize) -> Gid {
        Gid(self.arr(off))
    }
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.0[HDR_LEN + off..HDR_LEN + off + N]);
        a
    }
}

/// Writes big-endian fields of a message body.
struct Wr([u8; MAD_LEN]);

impl Wr {
    fn u8(&mut self, off: usize, v: u8) {
        self.0[HDR_LEN + off] = v;
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.bytes(off, &v.to_be_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.bytes(off, &v.to_be_bytes());
    }
    /// 24 bits at the top of the word at `off`, leaving its low byte as it is.
    fn u24(&mut self, off: usize, v: u32) {
        self.bytes(off, &(v & 0xff_ffff).to_be_bytes()[1..]);
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.bytes(off, &v.to_be_bytes());
    }
    fn bits(&mut self, off: usize, bit: u32, width: u32, v: u8) {
        let mask = (((1u16 << width) - 1) as u8) << (8 - bit - width);
        let b = &mut self.0[HDR_LEN + off];
        *b = (*b & !mask) | ((v << (8 - bit - width)) & mask);
    }
    fn bytes(&mut self, off: usize, v: &[u8]) {
        self.0[HDR_LEN + off..HDR_LEN + off + v.len()].copy_from_slice(v);
    }
}

fn read_path(r: &Rd<'_>, base: usize) -> Path {
    Path {
        local_lid: r.u16(base),
        remote_lid: r.u16(base + 2),
        local_gid: r.gid(base + 4),
        remote_gid: r.gid(base + 20),
        flow_label: r.u32(base + 36) >> 12,
        packet_rate: r.bits(base + 39, 2, 6),
        traffic_class: r.u8(base + 40),
        hop_limit: r.u8(base + 41),
        sl: r.bits(base + 42, 0, 4),
        subnet_local: r.bits(base + 42, 4, 1) != 0,
        local_ack_timeout: r.bits(base + 43, 0, 5),
    }
}

fn write_path(w: &mut Wr, base: usize, p: &Path) {
    w.u16(base, p.local_lid);
    w.u16(base + 2, p.remote_lid);
    w.bytes(base + 4, &p.local_gid.0);
    w.bytes(base + 20, &p.remote_gid.0);
    // Flow label in the top 20 bits; the packet rate in the low 6 bits of the last byte.
    w.u32(base + 36, (p.flow_label & 0xf_ffff) << 12);
    w.bits(base + 39, 2, 6, p.packet_rate);
    w.u8(base + 40, p.traffic_class);
    w.u8(base + 41, p.hop_limit);
    w.bits(base + 42, 0, 4, p.sl);
    w.bits(base + 42, 4, 1, p.subnet_local as u8);
    w.bits(base + 43, 0, 5, p.local_ack_timeout);
}

impl Mad {
    /// Parses a received MAD (the bytes after the GRH area of a GSI receive).
    pub fn parse(bytes: &[u8]) -> Result<Mad, MadError> {
        let b: &[u8; MAD_LEN] = bytes
            .try_into()
            .map_err(|_| MadError::Length(bytes.len()))?;
        let (base, class, version, method) = (b[0], b[1], b[2], b[3]);
        if base != BASE_VERSION || class != CM_CLASS || version != CM_CLASS_VERSION {
            return Err(MadError::NotCm {
                base,
                class,
                version,
            });
        }
        if method != METHOD_SEND {
            return Err(MadError::Method(method));
        }
        let tid = u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
        let attr_id = u16::from_be_bytes([b[16], b[17]]);
        let r = Rd(b);
        let msg = match attr_id {
            attr::REQ => CmMsg::Req(Box::new(Req {
                local_comm_id: r.u32(0),
                service_id: r.u64(8),
                local_ca_guid: r.u64(16),
                local_qkey: r.u32(28),
                local_qpn: r.u24(32),
                responder_resources: r.u8(35),
                local_eecn: r.u24(36),
                initiator_depth: r.u8(39),
                remote_eecn: r.u24(40),
                remote_cm_response_timeout: r.bits(43, 0, 5),
                transport_service_type: r.bits(43, 5, 2),
                end_to_end_flow_control: r.bits(43, 7, 1) != 0,
                starting_psn: r.u24(44),
                local_cm_response_timeout: r.bits(47, 0, 5),
                retry_count: r.bits(47, 5, 3),
                pkey: r.u16(48),
                path_mtu: r.bits(50, 0, 4),
                rdc_exists: r.bits(50, 4, 1) != 0,
                rnr_retry_count: r.bits(50, 5, 3),
                max_cm_retries: r.bits(51, 0, 4),
                srq: r.bits(51, 4, 1) != 0,
                extended_transport_type: r.bits(51, 5, 3),
                primary: read_path(&r, 52),
                alternate: read_path(&r, 96),
                private_data: r.arr(140),
            })),
            attr::MRA => CmMsg::Mra(Box::new(Mra {
                local_comm_id: r.u32(0),
                remote_comm_id: r.u32(4),
                message_mraed: r.bits(8, 0, 2),
                service_timeout: r.bits(9, 0, 5),
                private_data: r.arr(10),
            })),
            attr::REJ => CmMsg::Rej(Box::new(Rej {
                local_comm_id: r.u32(0),
                remote_comm_id: r.u32(4),
                message_rejected: r.bits(8, 0, 2),
                ari_length: r.bits(9, 0, 7),
                reason: r.u16(10),
                ari: r.arr(12),
                private_data: r.arr(84),
            })),
            attr::REP => CmMsg::Rep(Box::new(Rep {
                local_comm_id: r.u32(0),
                remote_comm_id: r.u32(4),
                local_qkey: r.u32(8),
                local_qpn: r.u24(12),
                local_eecn: r.u24(16),
                starting_psn: r.u24(20),
                responder_resources: r.u8(24),
                initiator_depth: r.u8(25),
                target_ack_delay: r.bits(26, 0, 5),
                failover_accepted: r.bits(26, 5, 2),
                end_to_end_flow_control: r.bits(26, 7, 1) != 0,
                rnr_retry_count: r.bits(27, 0, 3),
                srq: r.bits(27, 3, 1) != 0,
                local_ca_guid: r.u64(28),
                private_data: r.arr(36),
            })),
            attr::RTU => CmMsg::Rtu(Box::new(Rtu {
                local_comm_id: r.u32(0),
                remote_comm_id: r.u32(4),
                private_data: r.arr(8),
            })),
            attr::DREQ => CmMsg::Dreq(Box::new(Dreq {
                local_comm_id: r.u32(0),
                remote_comm_id: r.u32(4),
                remote_qpn: r.u24(8),
                private_data: r.arr(12),
            })),
            attr::DREP => CmMsg::Drep(Box::new(Drep {
                local_comm_id: r.u32(0),
                remote_comm_id: r.u32(4),
                private_data: r.arr(8),
            })),
            other => return Err(MadError::Attribute(other)),
        };
        Ok(Mad { tid, msg })
    }

    /// The 256 bytes on the wire.
    pub fn emit(&self) -> [u8; MAD_LEN] {
        let mut w = Wr([0u8; MAD_LEN]);
        w.0[0] = BASE_VERSION;
        w.0[1] = CM_CLASS;
        w.0[2] = CM_CLASS_VERSION;
        w.0[3] = METHOD_SEND;
        w.0[8..16].copy_from_slice(&self.tid.to_be_bytes());
        w.0[16..18].copy_from_slice(&self.msg.attr_id().to_be_bytes());
        match &self.msg {
            CmMsg::Req(m) => {
                w.u32(0, m.local_comm_id);
                w.u64(8, m.service_id);
                w.u64(16, m.local_ca_guid);
                w.u32(28, m.local_qkey);
                w.u24(32, m.local_qpn);
                w.u8(35, m.responder_resources);
                w.u24(36, m.local_eecn);
                w.u8(39, m.initiator_depth);
                w.u24(40, m.remote_eecn);
                w.bits(43, 0, 5, m.remote_cm_response_timeout);
                w.bits(43, 5, 2, m.transport_service_type);
                w.bits(43, 7, 1, m.end_to_end_flow_control as u8);
                w.u24(44, m.starting_psn);
                w.bits(47, 0, 5, m.local_cm_response_timeout);
                w.bits(47, 5, 3, m.retry_count);
                w.u16(48, m.pkey);
                w.bits(50, 0, 4, m.path_mtu);
                w.bits(50, 4, 1, m.rdc_exists as u8);
                w.bits(50, 5, 3, m.rnr_retry_count);
                w.bits(51, 0, 4, m.max_cm_retries);
                w.bits(51, 4, 1, m.srq as u8);
                w.bits(51, 5, 3, m.extended_transport_type);
                write_path(&mut w, 52, &m.primary);
                write_path(&mut w, 96, &m.alternate);
                w.bytes(140, &m.private_data);
            }
            CmMsg::Mra(m) => {
                w.u32(0, m.local_comm_id);
                w.u32(4, m.remote_comm_id);
                w.bits(8, 0, 2, m.message_mraed);
                w.bits(9, 0, 5, m.service_timeout);
                w.bytes(10, &m.private_data);
            }
            CmMsg::Rej(m) => {
                w.u32(0, m.local_comm_id);
                w.u32(4, m.remote_comm_id);
                w.bits(8, 0, 2, m.message_rejected);
                w.bits(9, 0, 7, m.ari_length);
                w.u16(10, m.reason);
                w.bytes(12, &m.ari);
                w.bytes(84, &m.private_data);
            }
            CmMsg::Rep(m) => {
                w.u32(0, m.local_comm_id);
                w.u32(4, m.remote_comm_id);
                w.u32(8, m.local_qkey);
                w.u24(12, m.local_qpn);
                w.u24(16, m.local_eecn);
                w.u24(20, m.starting_psn);
                w.u8(24, m.responder_resources);
                w.u8(25, m.initiator_depth);
                w.bits(26, 0, 5, m.target_ack_delay);
                w.bits(26, 5, 2, m.failover_accepted);
                w.bits(26, 7, 1, m.end_to_end_flow_control as u8);
                w.bits(27, 0, 3, m.rnr_retry_count);
                w.bits(27, 3, 1, m.srq as u8);
                w.u64(28, m.local_ca_guid);
                w.bytes(36, &m.private_data);
            }
            CmMsg::Rtu(m) => {
                w.u32(0, m.local_comm_id);
                w.u32(4, m.remote_comm_id);
                w.bytes(8, &m.private_data);
            }
            CmMsg::Dreq(m) => {
                w.u32(0, m.local_comm_id);
                w.u32(4, m.remote_comm_id);
                w.u24(8, m.remote_qpn);
                w.bytes(12, &m.private_data);
            }
            CmMsg::Drep(m) => {
                w.u32(0, m.local_comm_id);
                w.u32(4, m.remote_comm_id);
                w.bytes(8, &m.private_data);
            }
        }
        w.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample_req() -> Req {
        Req {
            local_comm_id: 0x1122_3344,
            service_id: 0x0000_0000_0106_1c06,
            local_ca_guid: 0x0202_03ff_fe04_0506,
            local_qkey: 0,
            local_qpn: 0x00ab_cdef,
            responder_resources: 1,
            local_eecn: 0,
            initiator_depth: 1,
            remote_eecn: 0,
            remote_cm_response_timeout: 20,
            transport_service_type: 0,
            end_to_end_flow_control: true,
            starting_psn: 0x0012_3456,
            local_cm_response_timeout: 20,
            retry_count: 7,
            pkey: 0xffff,
            path_mtu: 3,
            rdc_exists: false,
            rnr_retry_count: 7,
            max_cm_retries: 15,
            srq: false,
            extended_transport_type: 0,
            primary: Path {
                local_lid: 0xffff,
                remote_lid: 0xffff,
                local_gid: Gid::from_ipv4([10, 0, 0, 1]),
                remote_gid: Gid::from_ipv4([10, 0, 0, 2]),
                flow_label: 0xabcde,
                packet_rate: 0x3f,
                traffic_class: 0x20,
                hop_limit: 64,
                sl: 0xa,
                subnet_local: true,
                local_ack_timeout: 18,
            },
            alternate: Path::default(),
            private_data: private_data(b"hello").unwrap(),
        }
    }

    #[test]
    fn a_req_lands_where_ibta_table_106_says() {
        let b = Mad {
            tid: 0x0102_0304_0506_0708,
            msg: CmMsg::Req(Box::new(sample_req())),
        }
        .emit();
        assert_eq!(&b[..4], &[1, 0x07, 2, 0x03]);
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[16..18], &[0x00, 0x10]);
        let m = &b[HDR_LEN..];
        assert_eq!(&m[0..4], &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(&m[8..16], &[0, 0, 0, 0, 1, 6, 0x1c, 0x06]);
        assert_eq!(
            &m[32..36],
            &[0xab, 0xcd, 0xef, 1],
            "QPN then responder resources"
        );
        assert_eq!(m[39], 1, "initiator depth");
        assert_eq!(m[43], (20 << 3) | 1, "timeout 20, RC, flow control");
        assert_eq!(&m[44..48], &[0x12, 0x34, 0x56, (20 << 3) | 7]);
        assert_eq!(&m[48..52], &[0xff, 0xff, (3 << 4) | 7, 15 << 4]);
        assert_eq!(&m[52..56], &[0xff; 4]);
        assert_eq!(&m[56..72], &Gid::from_ipv4([10, 0, 0, 1]).0);
        assert_eq!(&m[88..92], &[0xab, 0xcd, 0xe0, 0x3f], "flow label, rate");
        assert_eq!(&m[92..96], &[0x20, 64, 0xa8, 18 << 3]);
        assert_eq!(&m[140..145], b"hello");
        assert_eq!(
            Mad::parse(&b).unwrap().msg,
            CmMsg::Req(Box::new(sample_req()))
        );
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            CmMsg::Req(Box::new(sample_req())),
            CmMsg::Mra(Box::new(Mra {
                local_comm_id: 1,
                remote_comm_id: 2,
                message_mraed: 1,
                service_timeout: 17,
                private_data: private_data(b"m").unwrap(),
            })),
            CmMsg::Rej(Box::new(Rej {
                local_comm_id: 3,
                remote_comm_id: 4,
                message_rejected: 0,
                ari_length: 2,
                reason: 28,
                ari: private_data(&[9, 9]).unwrap(),
                private_data: private_data(b"no").unwrap(),
            })),
            CmMsg::Rep(Box::new(Rep {
                local_comm_id: 5,
                remote_comm_id: 6,
                local_qkey: 0,
                local_qpn: 0x11,
                local_eecn: 0,
                starting_psn: 0xff_fffe,
                responder_resources: 4,
                initiator_depth: 3,
                target_ack_delay: 15,
                failover_accepted: 0,
                end_to_end_flow_control: true,
                rnr_retry_count: 7,
                srq: true,
                local_ca_guid: 0xdead_beef,
                private_data: private_data(b"rep").unwrap(),
            })),
            CmMsg::Rtu(Box::new(Rtu {
                local_comm_id: 7,
                remote_comm_id: 8,
                private_data: [0; pdata::RTU],
            })),
            CmMsg::Dreq(Box::new(Dreq {
                local_comm_id: 9,
                remote_comm_id: 10,
                remote_qpn: 0x12_3456,
                private_data: [0; pdata::DREQ],
            })),
            CmMsg::Drep(Box::new(Drep {
                local_comm_id: 11,
                remote_comm_id: 12,
                private_data: [1; pdata::DREP],
            })),
        ];
        for msg in msgs {
            let mad = Mad { tid: 42, msg };
            assert_eq!(Mad::parse(&mad.emit()).unwrap(), mad);
        }
    }

    #[test]
    fn what_is_not_a_cm_send_is_refused() {
        let good = Mad {
            tid: 1,
            msg: CmMsg::Req(Box::new(sample_req())),
        }
        .emit();
        assert_eq!(Mad::parse(&good[..255]), Err(MadError::Length(255)));
        let mut b = good;
        b[1] = 0x03; // SA
        assert!(matches!(Mad::parse(&b), Err(MadError::NotCm { .. })));
        let mut b = good;
        b[3] = 0x81;
        assert_eq!(Mad::parse(&b), Err(MadError::Method(0x81)));
        let mut b = good;
        b[17] = 0x19; // LAP
        assert_eq!(Mad::parse(&b), Err(MadError::Attribute(0x19)));
        assert!(private_data::<4>(b"12345").is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Mad::parse(&bytes);
        }

        #[test]
        fn random_cm_bodies_parse_and_re_emit_the_fields(
            attr in 0x10u16..=0x16,
            body in proptest::collection::vec(any::<u8>(), 232),
        ) {
            let mut b = [0u8; MAD_LEN];
            b[..4].copy_from_slice(&[1, 0x07, 2, 0x03]);
            b[16..18].copy_from_slice(&attr.to_be_bytes());
            b[HDR_LEN..].copy_from_slice(&body);
            let mad = Mad::parse(&b).unwrap();
            // What was read re-emits to something that parses to the same message.
            prop_assert_eq!(Mad::parse(&mad.emit()).unwrap(), mad);
        }
    }
}
