//! Bodies of successful responses that carry values: what the device writes after the
//! response header, and how a driver reads it back.

use super::*;

pub fn u32v(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn read_u32(b: &[u8]) -> Result<u32, DecodeError> {
    Reader::new(b).u32()
}

/// CREATE_QP: the QPN and both rings' geometry.
pub fn create_qp(qpn: u32, sq: RingInfo, rq: RingInfo) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(qpn)
        .u32(sq.depth)
        .u32(sq.stride)
        .u32(rq.depth)
        .u32(rq.stride);
    w.finish()
}

pub fn read_create_qp(b: &[u8]) -> Result<(u32, RingInfo, RingInfo), DecodeError> {
    let mut r = Reader::new(b);
    Ok((
        r.u32()?,
        RingInfo {
            depth: r.u32()?,
            stride: r.u32()?,
        },
        RingInfo {
            depth: r.u32()?,
            stride: r.u32()?,
        },
    ))
}

/// CREATE_SRQ: the SRQN and its ring's geometry.
pub fn create_srq(srqn: u32, ring: RingInfo) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(srqn).u32(ring.depth).u32(ring.stride);
    w.finish()
}

pub fn read_create_srq(b: &[u8]) -> Result<(u32, RingInfo), DecodeError> {
    let mut r = Reader::new(b);
    Ok((
        r.u32()?,
        RingInfo {
            depth: r.u32()?,
            stride: r.u32()?,
        },
    ))
}

pub fn qp_attr(a: &QpAttr) -> Vec<u8> {
    let mut w = Writer::new();
    encode_qp_attr(&mut w, a);
    w.finish()
}

pub fn read_qp_attr(b: &[u8]) -> Result<QpAttr, DecodeError> {
    decode_qp_attr(&mut Reader::new(b))
}

/// QUERY_PORT: state, active MTU, max MTU, GID and P_Key table lengths.
pub fn port(state: u8, active_mtu: u8, max_mtu: u8) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(state).u8(active_mtu).u8(max_mtu).u8(0).u32(1).u32(1);
    w.finish()
}

/// QUERY_PORT's answer as a driver reads it; MTUs that are no `ibv_mtu` are refused.
pub fn read_port(b: &[u8]) -> Result<PortInfo, DecodeError> {
    let mut r = Reader::new(b);
    let state = r.u8()?;
    let mtu = |c: u8, what| Mtu::from_enum(c).ok_or(DecodeError::Invalid(what));
    let active_mtu = mtu(r.u8()?, "active_mtu")?;
    let max_mtu = mtu(r.u8()?, "max_mtu")?;
    r.skip(1)?;
    Ok(PortInfo {
        state,
        active_mtu,
        max_mtu,
        gid_tbl_len: r.u32()?,
        pkey_tbl_len: r.u32()?,
    })
}

pub fn key(k: MemKey) -> Vec<u8> {
    u32v(k.0)
}

/// QUERY_PORT's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// `ibv_port_state`: 4 = ACTIVE.
    pub state: u8,
    pub active_mtu: Mtu,
    pub max_mtu: Mtu,
    pub gid_tbl_len: u32,
    pub pkey_tbl_len: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_port_answer_round_trips_and_refuses_malformed_bodies() {
        let b = body::port(4, Mtu::Mtu1024 as u8, Mtu::Mtu4096 as u8);
        assert_eq!(
            body::read_port(&b),
            Ok(PortInfo {
                state: 4,
                active_mtu: Mtu::Mtu1024,
                max_mtu: Mtu::Mtu4096,
                gid_tbl_len: 1,
                pkey_tbl_len: 1,
            })
        );
        for n in 0..b.len() {
            assert!(body::read_port(&b[..n]).is_err(), "{n}-byte prefix");
        }
        let mut bad = b.clone();
        bad[1] = 0;
        assert_eq!(
            body::read_port(&bad),
            Err(DecodeError::Invalid("active_mtu"))
        );
        bad = b;
        bad[2] = 6;
        assert_eq!(body::read_port(&bad), Err(DecodeError::Invalid("max_mtu")));
    }

    #[test]
    fn query_device_answer_is_the_config_layout_and_refuses_malformed_bodies() {
        use crate::protocol::config::{RdmaConfig, CONFIG_SIZE};
        use crate::protocol::features;
        let pf = vhca_device::Pf::new(0, 1);
        let c = RdmaConfig::from_identity(&pf.default_identity(0));
        let r = Response::ok(c.encode());
        let d = Response::decode(&r.encode()).unwrap();
        assert_eq!(d.body.len(), CONFIG_SIZE);
        let got = RdmaConfig::decode(&d.body).unwrap();
        assert_eq!(got, c);
        assert_eq!(got.device_features as u64, features::DEVICE_SPECIFIC);
        // Every prefix that stops before the last field is refused, never a panic.
        for n in 0..128 {
            assert!(RdmaConfig::decode(&d.body[..n]).is_err(), "{n}-byte prefix");
        }
        // QUERY_DEVICE has no request body: extra bytes are ignored, a short header is not.
        let mut req = Command::QueryDevice.encode();
        assert_eq!(Command::decode(&req[..7]), Err(Status::Malformed));
        req.extend_from_slice(&[0xaa; 4]);
        assert_eq!(Command::decode(&req), Ok(Command::QueryDevice));
    }
}
