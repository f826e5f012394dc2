//! Small value types that carry meaning across module borders: QP numbers, PSNs, keys, GIDs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Time inside the device: nanoseconds since an origin the caller chooses.
///
/// The device never reads a clock; every entry point that moves in time takes a `Nanos`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);
    pub const MAX: Nanos = Nanos(u64::MAX);

    pub fn saturating_add(self, d: u64) -> Nanos {
        Nanos(self.0.saturating_add(d))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ns", self.0)
    }
}

/// A 24-bit queue pair number.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub struct Qpn(pub u32);

impl Qpn {
    pub const MASK: u32 = 0x00ff_ffff;
    /// Builds a QPN from the low 24 bits of `v`.
    pub fn new(v: u32) -> Qpn {
        Qpn(v & Self::MASK)
    }
}

impl fmt::Display for Qpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#08x}", self.0)
    }
}

/// A 24-bit packet sequence number with wrapping arithmetic.
///
/// Comparisons are modular (IBTA 9.7.1): `a` is "before" `b` when `b - a` taken modulo 2^24 lies
/// in `1..2^23`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Psn(pub u32);

impl Psn {
    pub const MASK: u32 = 0x00ff_ffff;

    pub fn new(v: u32) -> Psn {
        Psn(v & Self::MASK)
    }

    /// `self + n` modulo 2^24. (A method, not `ops::Add`: the operand is a count, not a PSN.)
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, n: u32) -> Psn {
        Psn(self.0.wrapping_add(n) & Self::MASK)
    }

    /// `self - n` modulo 2^24.
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, n: u32) -> Psn {
        Psn(self.0.wrapping_sub(n) & Self::MASK)
    }

    /// Signed distance `self - other` in `-2^23 ..= 2^23 - 1`.
    #[inline]
    pub fn diff(self, other: Psn) -> i32 {
        let d = self.0.wrapping_sub(other.0) & Self::MASK;
        ((d << 8) as i32) >> 8
    }

    /// True when `self` comes strictly before `other` in PSN order.
    #[inline]
    pub fn before(self, other: Psn) -> bool {
        self.diff(other) < 0
    }
}

impl fmt::Display for Psn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 24-bit message sequence number carried in the AETH.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Msn(pub u32);

impl Msn {
    pub fn next(self) -> Msn {
        Msn(self.0.wrapping_add(1) & 0x00ff_ffff)
    }
}

/// A memory key: the upper 24 bits index the VF's MR table, the low byte is a key byte the
/// consumer chooses, so a stale key of a re-used slot does not match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct MemKey(pub u32);

impl MemKey {
    pub fn from_parts(index: u32, key: u8) -> MemKey {
        MemKey((index << 8) | key as u32)
    }
    pub fn index(self) -> u32 {
        self.0 >> 8
    }
    pub fn key_byte(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

impl fmt::Display for MemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// Local key of a memory region.
pub type Lkey = MemKey;
/// Remote key of a memory region.
pub type Rkey = MemKey;

/// A 128-bit global identifier. On RoCEv2 it is an IPv6 address or an IPv4-mapped one.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    /// `::ffff:a.b.c.d`, the GID rxe and RoCE NICs derive from an IPv4 address.
    pub fn from_ipv4(ip: [u8; 4]) -> Gid {
        let mut g = [0u8; 16];
        g[10] = 0xff;
        g[11] = 0xff;
        g[12..].copy_from_slice(&ip);
        Gid(g)
    }

    /// The IPv4 address when the GID is IPv4-mapped.
    pub fn to_ipv4(&self) -> Option<[u8; 4]> {
        let g = &self.0;
        if g[..10].iter().all(|&b| b == 0) && g[10] == 0xff && g[11] == 0xff {
            Some([g[12], g[13], g[14], g[15]])
        } else {
            None
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Debug for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.to_ipv4() {
            return write!(f, "::ffff:{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
        }
        let g = &self.0;
        for i in 0..8 {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:x}", u16::from_be_bytes([g[2 * i], g[2 * i + 1]]))?;
        }
        Ok(())
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Mac(pub [u8; 6]);

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Mac {
    /// The EUI-64 node GUID derived from this MAC, as rxe does.
    pub fn to_eui64(&self) -> Guid {
        let m = &self.0;
        Guid(u64::from_be_bytes([
            m[0] ^ 0x02,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ]))
    }
}

/// A 64-bit GUID (node or port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Guid(pub u64);

/// Object handles inside one VF's namespace.
macro_rules! handle {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        pub struct $name(pub u32);
    };
}

handle!(
    /// A protection domain number.
    PdHandle
);
handle!(
    /// A completion queue number.
    CqHandle
);
handle!(
    /// A shared receive queue number.
    SrqHandle
);
handle!(
    /// An address handle number.
    AhHandle
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psn_wraps_and_compares_modulo_2_24() {
        let top = Psn::new(0xff_ffff);
        assert_eq!(top.add(1), Psn(0));
        assert_eq!(Psn(0).sub(1), top);
        assert_eq!(Psn(0).diff(top), 1);
        assert_eq!(top.diff(Psn(0)), -1);
        assert!(top.before(Psn(5)));
        assert!(!Psn(5).before(top));
        assert_eq!(Psn(0x80_0000).diff(Psn(0)), -0x80_0000);
        assert_eq!(Psn(0x7f_ffff).diff(Psn(0)), 0x7f_ffff);
    }

    #[test]
    fn gid_ipv4_mapping_round_trips() {
        let g = Gid::from_ipv4([10, 77, 0, 3]);
        assert_eq!(g.to_ipv4(), Some([10, 77, 0, 3]));
        assert_eq!(g.to_string(), "::ffff:10.77.0.3");
        assert_eq!(
            Gid([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).to_ipv4(),
            None
        );
    }

    #[test]
    fn mem_key_splits_index_and_key_byte() {
        let k = MemKey::from_parts(0x1234, 0xab);
        assert_eq!(k.0, 0x1234ab);
        assert_eq!(k.index(), 0x1234);
        assert_eq!(k.key_byte(), 0xab);
    }

    #[test]
    fn mac_to_eui64_flips_the_local_bit() {
        let m = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(m.to_eui64(), Guid(0x5054_00ff_fe12_3456));
    }
}
