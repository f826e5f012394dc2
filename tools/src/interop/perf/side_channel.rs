//! The perftest side channel: the key message (K) and the bandwidth report (R) on the
//! wire, and the non-blocking TCP channel that keeps the node pumping while it waits.

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

/// The TCP side channel. Non-blocking: while a side waits for the peer it keeps its node
/// pumping.
pub(super) struct Chan {
    pub(super) sock: TcpStream,
    pub(super) client: bool,
    pub(super) timeout: Duration,
}

impl Chan {
    pub(super) fn new(sock: TcpStream, client: bool, timeout: Duration) -> io::Result<Chan> {
        // Every blob goes out in one segment: perftest reads each with a single read().
        sock.set_nodelay(true)?;
        sock.set_nonblocking(true)?;
        Ok(Chan {
            sock,
            client,
            timeout,
        })
    }

    /// Runs `step` (which returns `Ok(true)` when done) pumping the node in between; fails after
    /// `timeout` without a packet or a side-channel byte. With `tick`, calls its hook about
    /// every [`IDLE_TICK`] (a side that waits out its peer's data phase).
    pub(super) fn pumping<V: Endpoint>(
        &mut self,
        node: &mut V,
        what: &'static str,
        mut tick: Option<(Hook<'_, V>, u64)>,
        mut step: impl FnMut(&mut TcpStream) -> Result<(bool, bool), PerfError>,
    ) -> Result<(), PerfError> {
        let mut last = Instant::now();
        let mut last_tick = Instant::now();
        let mut rx = node.rx_packets();
        loop {
            let (done, progress) = step(&mut self.sock)?;
            if done {
                return Ok(());
            }
            node.idle(MAX_WAIT)?;
            if let Some((hook, total)) = tick.as_mut() {
                if last_tick.elapsed() >= IDLE_TICK {
                    let p = Progress {
                        done: None,
                        total: *total,
                    };
                    let t = Instant::now();
                    hook(node, p).map_err(PerfError::Hook)?;
                    last_tick = Instant::now();
                    // Time the hook took (a migration's blackout) is not the peer stalling;
                    // the hook being called is no progress either.
                    last += t.elapsed();
                }
            }
            if progress || node.rx_packets() != rx {
                rx = node.rx_packets();
                last = Instant::now();
            } else if last.elapsed() > self.timeout {
                return Err(PerfError::Stalled(self.timeout, what));
            }
        }
    }

    pub(super) fn write_blob<V: Endpoint>(
        &mut self,
        node: &mut V,
        b: &[u8],
        what: &'static str,
    ) -> Result<(), PerfError> {
        let mut off = 0;
        self.pumping(node, what, None, |s| {
            while off < b.len() {
                match s.write(&b[off..]) {
                    Ok(0) => return Err(PerfError::Closed(what)),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, false)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((true, true))
        })
    }

    pub(super) fn read_blob<V: Endpoint>(
        &mut self,
        node: &mut V,
        n: usize,
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, PerfError> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        self.pumping(node, what, tick, |s| {
            let before = got;
            while got < n {
                match s.read(&mut buf[got..]) {
                    Ok(0) => return Err(PerfError::Closed(what)),
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((false, got > before))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((true, true))
        })?;
        Ok(buf)
    }

    /// One step: the client writes then reads, the server reads then writes.
    pub(super) fn xchg<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
    ) -> Result<Vec<u8>, PerfError> {
        self.xchg_ticking(node, mine, what, None)
    }

    /// [`Chan::xchg`], calling `tick`'s hook while it waits for the peer's blob.
    pub(super) fn xchg_ticking<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, PerfError> {
        if self.client {
            self.write_blob(node, mine, what)?;
            self.read_blob(node, mine.len(), what, tick)
        } else {
            let theirs = self.read_blob(node, mine.len(), what, tick)?;
            self.write_blob(node, mine, what)?;
            Ok(theirs)
        }
    }

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
