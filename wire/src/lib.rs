//! vhca-wire: RoCEv2 on the wire. Byte views and parsed representations of every header a
//! vhca frame carries, the ICRC, the conversion between the device's [`vhca_device::Packet`]
//! and bytes, and a pcap writer.
//!
//! Pure format: no sockets, no files, no system calls (addresses are `std::net` value types,
//! the pcap writer writes to any [`std::io::Write`]). `vhca-fabric` puts the bytes on UDP
//! sockets and TAP devices; the fuzz targets and the format tests need nothing else.
//!
//! Shape (after smoltcp's `wire/`): each header module has
//! * a zero-copy view `Packet<T: AsRef<[u8]>>` (`Frame` for Ethernet) over a byte buffer:
//!   `new_checked` validates lengths and returns a [`WireError`] instead of panicking, getters
//!   read fields, setters (when `T: AsMut<[u8]>`) write them;
//! * a `Repr` that `parse`s a checked view into values and `emit`s itself into a view, with
//!   `buffer_len` telling how many bytes that takes.
//!
//! `new_unchecked` exists for emitting into a buffer the caller sized with `buffer_len`; its
//! getters and setters panic on a buffer that is too short. Anything that reads bytes from
//! outside goes through `new_checked`, so no input can make decoding panic.
//!
//! [`roce`] ties the layers together; [`icrc`] is the invariant CRC; [`pcap`] writes captures
//! Wireshark decodes. `docs/wire.md` has the frame layouts and the rules behind them.

use thiserror::Error;

pub mod aeth;
pub mod arp;
pub mod atomic_ack_eth;
pub mod atomic_eth;
pub mod bth;
pub mod deth;
pub mod ethernet;
pub mod feth;
pub mod icrc;
pub mod ieth;
pub mod immdt;
pub mod ipv4;
pub mod ipv6;
pub mod pcap;
pub mod reth;
pub mod roce;
pub mod udp;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use roce::{
    emit_frame, emit_udp_payload, parse_frame, parse_udp_payload, FrameParams, IcrcStatus,
    Ipv4Ident, ReceivedFrame, ReceivedPacket, ROCE_V2_PORT,
};

/// Why bytes could not be decoded or a packet could not be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the header (or the length it announces) needs.
    #[error("{what}: truncated ({have} bytes, {need} needed)")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// Two length indications disagree (a length field and the bytes present, a pad count and
    /// the payload, ...).
    #[error("{what}: inconsistent length ({detail})")]
    BadLength {
        what: &'static str,
        detail: &'static str,
    },
    /// A header field holds a value this implementation does not accept.
    #[error("{what}: unsupported value {value:#x}")]
    Unsupported { what: &'static str, value: u32 },
    /// The BTH opcode is not one vhca implements (RD, XRC, CNP, ...).
    #[error("BTH opcode {0:#04x} is not supported")]
    UnsupportedOpcode(u8),
    /// The frame is valid but not RoCEv2 (another EtherType, protocol or UDP port).
    #[error("not a RoCEv2 frame: {0}")]
    NotRoce(&'static str),
    /// The IPv4 header checksum is wrong.
    #[error("IPv4 header checksum mismatch")]
    BadIpChecksum,
    /// A non-zero UDP checksum is wrong.
    #[error("UDP checksum mismatch")]
    BadUdpChecksum,
    /// The invariant CRC does not match the packet: corrupted on the way, or computed over a
    /// different IP header (see `docs/wire.md` on the IPv4 ID of kernel UDP sockets).
    #[error("ICRC mismatch: computed {computed:#010x}, packet carries {carried:#010x}")]
    BadIcrc { computed: u32, carried: u32 },
    /// A device packet that cannot be put on the wire (headers not matching the opcode,
    /// mixed address families, too large, ...).
    #[error("packet cannot be encoded: {0}")]
    Unencodable(&'static str),
}

/// Result of the wire format's fallible operations.
pub type Result<T> = core::result::Result<T, WireError>;

/// Fails with [`WireError::Truncated`] unless `buf` holds at least `need` bytes.
fn check_len(what: &'static str, buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(WireError::Truncated {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Big-endian field access on buffers whose length the caller has checked.
mod be {
    pub fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    pub fn u24_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
    }
    pub fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    pub fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_be_bytes(w)
    }
    pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    /// Writes the low 24 bits of `v`.
    pub fn put_u24(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 3].copy_from_slice(&v.to_be_bytes()[1..]);
    }
    pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }
}

/// The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
pub(crate) mod inet_checksum {
    /// Adds `data` to a running 32-bit sum (an odd trailing byte is padded with zero).
    pub fn add(mut sum: u32, data: &[u8]) -> u32 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
            // Fold early so that arbitrarily long inputs cannot overflow the accumulator.
            if sum > 0xffff_0000 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
        }
        if let [last] = chunks.remainder() {
            sum = sum.wrapping_add(u32::from(*last) << 8);
        }
        sum
    }

    /// Folds the carries and complements: the value to store in a checksum field.
    pub fn finish(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rfc1071_example() {
            // RFC 1071 section 3 example: the sum of these words is 0xddf2 (before complement).
            let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
            assert_eq!(super::finish(super::add(0, &data)), !0xddf2);
        }
    }
}
