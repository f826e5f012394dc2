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

/// `sizeof(struct pingpong_dest)`: lid, out_reads, qpn, psn, rkey (4 bytes each), 4 bytes of
/// padding, vaddr (8), gid (16), srqn, gid_index (4 each).
pub const KEY_BIN_LEN: usize = 56;

impl KeyMsg {
    /// `struct pingpong_dest` as `rdma_write_keys` sends it over `-R`'s side channel: every
    /// integer big-endian (perftest's `HAVE_ENDIAN` build), the GID as is, the padding and
    /// `srqn` zero, `gid_index` 0 (the receiver keeps its own).
    pub fn encode_binary(&self) -> [u8; KEY_BIN_LEN] {
        let mut b = [0u8; KEY_BIN_LEN];
        b[0..4].copy_from_slice(&u32::from(self.lid).to_be_bytes());
        b[4..8].copy_from_slice(&u32::from(self.out_reads).to_be_bytes());
        b[8..12].copy_from_slice(&self.qpn.to_be_bytes());
        b[12..16].copy_from_slice(&self.psn.to_be_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_be_bytes());
        b[24..32].copy_from_slice(&self.vaddr.to_be_bytes());
        b[32..48].copy_from_slice(&self.gid.0);
        b
    }

    /// `rdma_read_keys`: the fields it reads (not `srqn` nor `gid_index`).
    pub fn decode_binary(b: &[u8]) -> Result<KeyMsg, PerfError> {
        let bad = |text: String| PerfError::Exchange {
            what: "binary address message",
            text,
        };
        if b.len() != KEY_BIN_LEN {
            return Err(bad(format!("{} bytes", b.len())));
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (lid, out_reads, qpn, psn) = (word(0), word(4), word(8), word(12));
        if lid > 0xffff || out_reads > 0xffff || qpn > 0xff_ffff || psn > 0xff_ffff {
            return Err(bad(format!(
                "LID {lid:#x} OUT {out_reads:#x} QPN {qpn:#x} PSN {psn:#x}"
            )));
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[32..48]);
        let mut vaddr = [0u8; 8];
        vaddr.copy_from_slice(&b[24..32]);
        Ok(KeyMsg {
            lid: lid as u16,
            out_reads: out_reads as u16,
            qpn,
            psn,
            rkey: word(16),
            vaddr: u64::from_be_bytes(vaddr),
            gid: Gid(gid),
            srqn: 0,
        })
    }
}

/// A run's side channel: perftest's TCP socket, or with `-R` its rdma_cm "comm" QP.
pub(super) enum PerfChan {
    Tcp(Chan),
    Cm(Box<CommChan>),
}

impl PerfChan {
    pub(super) fn xchg<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
    ) -> Result<Vec<u8>, PerfError> {
        self.xchg_ticking(node, mine, what, None)
    }

    pub(super) fn xchg_ticking<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, PerfError> {
        match self {
            PerfChan::Tcp(c) => Ok(c.xchg_ticking(node, mine, what, tick)?),
            PerfChan::Cm(c) => c.xchg_ticking(node, mine, what, tick),
        }
    }

    /// One address message each way, in the channel's format.
    pub(super) fn keys<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &KeyMsg,
        what: &'static str,
    ) -> Result<KeyMsg, PerfError> {
        self.keys_ticking(node, mine, what, None)
    }

    pub(super) fn keys_ticking<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &KeyMsg,
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<KeyMsg, PerfError> {
        match self {
            PerfChan::Tcp(c) => {
                KeyMsg::decode(&c.xchg_ticking(node, &mine.encode(), what, tick)?)
            }
            PerfChan::Cm(c) => {
                KeyMsg::decode_binary(&c.xchg_ticking(node, &mine.encode_binary(), what, tick)?)
            }
        }
    }

    /// The end of `ctx_close_connection`: over TCP each side writes "done" (and this one takes
    /// the peer's, so the socket closes without a reset); `-R` has nothing more, the DREQs
    /// follow.
    pub(super) fn done<V: Endpoint>(&mut self, node: &mut V) -> Result<(), PerfError> {
        if let PerfChan::Tcp(chan) = self {
            chan.write_blob(node, b"done\0", "closing")?;
            // A peer that already closed is fine.
            chan.timeout = Duration::from_secs(2);
            let _ = chan.read_blob(node, 5, "closing", None);
        }
        Ok(())
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
    chan: &mut PerfChan,
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
