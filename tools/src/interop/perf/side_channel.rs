//! The perftest side channel: the key message (K) and the bandwidth report (R) on the
//! wire, over the shared non-blocking TCP channel ([`Chan`]) that keeps the node pumping
//! while it waits.

use super::*;

/// A QP's address as the key message carries it (`struct pingpong_dest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMsg {
    pub lid: u16,
    pub out_reads: u16,
    pub qpn: u32,
    pub psn: u32,
    pub rkey: u32,
    pub vaddr: u64,
    pub gid: Gid,
    pub srqn: u32,
}

impl KeyMsg {
    /// `KEY_PRINT_FMT_GID` with its NUL: always 108 bytes.
    pub fn encode(&self) -> [u8; KEY_MSG_LEN] {
        let mut s = format!(
            "{:04x}:{:04x}:{:06x}:{:06x}:{:08x}:{:016x}:",
            self.lid,
            self.out_reads,
            self.qpn & 0xff_ffff,
            self.psn & 0xff_ffff,
            self.rkey,
            self.vaddr
        );
        for b in self.gid.0 {
            s.push_str(&format!("{b:02x}:"));
        }
        s.push_str(&format!("{:08x}:", self.srqn));
        let mut out = [0u8; KEY_MSG_LEN];
        let n = s.len().min(KEY_MSG_LEN - 1);
        out[..n].copy_from_slice(&s.as_bytes()[..n]);
        out
    }

    pub fn decode(b: &[u8]) -> Result<KeyMsg, PerfError> {
        let text = String::from_utf8_lossy(b);
        let text = text.trim_end_matches('\0');
        let bad = || PerfError::Exchange {
            what: "key message",
            text: text.to_string(),
        };
        let f: Vec<&str> = text.split(':').collect();
        // 6 fields, 16 GID bytes, the SRQ number, and what follows the last ':'.
        if f.len() < 23 {
            return Err(bad());
        }
        let hex = |s: &str| u64::from_str_radix(s.trim(), 16).map_err(|_| bad());
        let mut gid = [0u8; 16];
        for (i, g) in gid.iter_mut().enumerate() {
            *g = u8::try_from(hex(f[6 + i])?).map_err(|_| bad())?;
        }
        let qpn = hex(f[2])?;
        let psn = hex(f[3])?;
        if qpn > 0xff_ffff || psn > 0xff_ffff {
            return Err(bad());
        }
        Ok(KeyMsg {
            lid: u16::try_from(hex(f[0])?).map_err(|_| bad())?,
            out_reads: u16::try_from(hex(f[1])?).map_err(|_| bad())?,
            qpn: qpn as u32,
            psn: psn as u32,
            rkey: u32::try_from(hex(f[4])?).map_err(|_| bad())?,
            vaddr: hex(f[5])?,
            gid: Gid(gid),
            srqn: u32::try_from(hex(f[22])?).map_err(|_| bad())?,
        })
    }
}

// `Chan` is the shared side channel (crate::interop::side_channel); the key-message step is
// perftest's own, so it lives here.
impl Chan {
    pub(super) fn keys<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &KeyMsg,
        what: &'static str,
    ) -> Result<KeyMsg, PerfError> {
        KeyMsg::decode(&self.xchg(node, &mine.encode(), what)?)
    }
}

pub(super) fn encode_report(r: &WireReport) -> [[u8; 8]; 5] {
    [
        r.size.to_be_bytes(),
        r.iters.to_be_bytes(),
        r.bw_peak.to_bits().to_be_bytes(),
        r.bw_avg.to_bits().to_be_bytes(),
        r.msg_rate.to_bits().to_be_bytes(),
    ]
}

/// `xchg_bw_reports`: five 8-byte steps (iterations are 64-bit for peers ≥ 5.33).
pub(super) fn xchg_reports<V: Endpoint>(
    chan: &mut Chan,
    node: &mut V,
    mine: &WireReport,
) -> Result<WireReport, PerfError> {
    let mut got = [0u64; 5];
    for (g, blob) in got.iter_mut().zip(encode_report(mine)) {
        let b = chan.xchg(node, &blob, "the report exchange")?;
        *g = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    }
    Ok(WireReport {
        size: got[0],
        iters: got[1],
        bw_peak: f64::from_bits(got[2]),
        bw_avg: f64::from_bits(got[3]),
        msg_rate: f64::from_bits(got[4]),
    })
}
