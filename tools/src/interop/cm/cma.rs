//! What rdma_cm (the kernel's `cma.c`) adds on top of the IB CM for IP addressing: the service
//! ID of a TCP-port-space port, and the 36-byte header in front of a REQ's private data that
//! carries the IP addresses and the source port (`struct cma_hdr`, version 0).
//!
//! Layout: `u8 cma_version (0)`, `u8 ip_version` (IP version in the high nibble), `be16 src
//! port`, 16 bytes source address, 16 bytes destination address. An IPv4 address sits in the
//! last 4 bytes of its 16 (the 12 before are zero). The destination port is not in the header:
//! it is the low 16 bits of the service ID.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// rdma_cm's TCP port space (`RDMA_PS_TCP`): connected RC QPs.
pub const RDMA_PS_TCP: u16 = 0x0106;
/// The header's size; a REQ's 92 bytes of private data leave 56 for the application.
pub const CMA_HDR_LEN: usize = 36;
pub const CMA_VERSION: u8 = 0;

/// `(port space << 16) + port`, big-endian on the wire like every CM field.
pub fn service_id(port: u16) -> u64 {
    (u64::from(RDMA_PS_TCP) << 16) | u64::from(port)
}

/// The port of a TCP-port-space service ID, or `None` for another service.
pub fn port_of(service_id: u64) -> Option<u16> {
    (service_id >> 16 == u64::from(RDMA_PS_TCP)).then_some(service_id as u16)
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CmaError {
    #[error("private data of {0} bytes is shorter than the {CMA_HDR_LEN}-byte rdma_cm header")]
    Short(usize),
    #[error("rdma_cm header version {0} (only 0 exists)")]
    Version(u8),
    #[error("rdma_cm header IP version {0} is neither 4 nor 6")]
    IpVersion(u8),
    #[error("source and destination are not the same IP version")]
    Mixed,
}

/// The addressing rdma_cm puts in front of a REQ's private data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmaHdr {
    pub src_port: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
}

fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn addr_of(b: &[u8], v4: bool) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    if v4 {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

impl CmaHdr {
    /// Parses the header at the start of a REQ's private data.
    pub fn parse(pdata: &[u8]) -> Result<CmaHdr, CmaError> {
        if pdata.len() < CMA_HDR_LEN {
            return Err(CmaError::Short(pdata.len()));
        }
        if pdata[0] != CMA_VERSION {
            return Err(CmaError::Version(pdata[0]));
        }
        let v4 = match pdata[1] >> 4 {
            4 => true,
            6 => false,
            v => return Err(CmaError::IpVersion(v)),
        };
        Ok(CmaHdr {
            src_port: u16::from_be_bytes([pdata[2], pdata[3]]),
            src: addr_of(&pdata[4..20], v4),
            dst: addr_of(&pdata[20..36], v4),
        })
    }

    /// The 36 bytes; `Mixed` when the two addresses are of different IP versions.
    pub fn emit(&self) -> Result<[u8; CMA_HDR_LEN], CmaError> {
        let ver = match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => 4,
            (IpAddr::V6(_), IpAddr::V6(_)) => 6,
            _ => return Err(CmaError::Mixed),
        };
        let mut b = [0u8; CMA_HDR_LEN];
        b[0] = CMA_VERSION;
        b[1] = ver << 4;
        b[2..4].copy_from_slice(&self.src_port.to_be_bytes());
        b[4..20].copy_from_slice(&addr_bytes(self.src));
        b[20..36].copy_from_slice(&addr_bytes(self.dst));
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_service_id_is_the_tcp_port_space_and_the_port() {
        assert_eq!(service_id(7174), 0x0000_0000_0106_1c06);
        assert_eq!(port_of(0x0000_0000_0106_4a69), Some(19049));
        assert_eq!(port_of(0x0000_0000_0111_0001), None, "UDP port space");
    }

    #[test]
    fn an_ipv4_header_is_laid_out_as_cma_format_hdr_writes_it() {
        let h = CmaHdr {
            src_port: 0xabcd,
            src: "10.0.2.15".parse().unwrap(),
            dst: "10.0.2.2".parse().unwrap(),
        };
        let b = h.emit().unwrap();
        assert_eq!(&b[..4], &[0, 0x40, 0xab, 0xcd]);
        assert_eq!(&b[4..16], &[0; 12]);
        assert_eq!(&b[16..20], &[10, 0, 2, 15]);
        assert_eq!(&b[32..36], &[10, 0, 2, 2]);
        assert_eq!(CmaHdr::parse(&b).unwrap(), h);
        let v6 = CmaHdr {
            src_port: 1,
            src: "fe80::1".parse().unwrap(),
            dst: "fe80::2".parse().unwrap(),
        };
        assert_eq!(CmaHdr::parse(&v6.emit().unwrap()).unwrap(), v6);
        let mixed = CmaHdr {
            dst: "fe80::2".parse().unwrap(),
            ..h
        };
        assert_eq!(mixed.emit(), Err(CmaError::Mixed));
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut b = [0u8; 36];
        assert_eq!(CmaHdr::parse(&b[..35]), Err(CmaError::Short(35)));
        assert_eq!(CmaHdr::parse(&b), Err(CmaError::IpVersion(0)));
        b[1] = 0x40;
        b[0] = 1;
        assert_eq!(CmaHdr::parse(&b), Err(CmaError::Version(1)));
    }

    proptest! {
        #[test]
        fn random_private_data_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = CmaHdr::parse(&b);
        }
    }
}
