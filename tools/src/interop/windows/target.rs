//! The client side of `windows_target`'s line protocol (tools/rxe-peer/src/windows_target.c):
//! one command line out, one answer line back, with the node pumped while it waits (the
//! target's RDMA to this VF only moves while this side pumps).

use super::WindowsError;
use crate::interop::endpoint::Endpoint;
use crate::interop::side_channel::{read_into, Chan};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;
use vhca_device::{Gid, MemKey, Psn, Qpn};
use vhca_guest::programs::PeerInfo;

/// The longest answer line taken (the hello with 8 QPs is the longest, under 300 bytes).
const MAX_LINE: usize = 512;
/// How long the target may go without a byte or a packet: longer than its own 60 s wait for a
/// completion.
const STALL: Duration = Duration::from_secs(120);

/// `ibv_wc_status` values the runs expect from the target.
pub const IBV_WC_SUCCESS: i32 = 0;
pub const IBV_WC_REM_ACCESS_ERR: i32 = 10;
pub const IBV_WC_REM_OP_ERR: i32 = 11;
/// `IBV_QPS_ERR`.
pub const IBV_QPS_ERR: i32 = 6;

/// A connected target.
pub struct Target {
    chan: Chan,
    pending: Vec<u8>,
    /// The target's buffer (where its windows lie: offsets in commands are from here).
    pub buf: u64,
    /// Its QPs, in the order of this side's.
    pub peers: Vec<PeerInfo>,
    /// Every command and its answer, for the report.
    pub transcript: Vec<String>,
}

fn hex_gid(g: &Gid) -> String {
    g.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_gid(s: &str) -> Option<Gid> {
    if s.len() != 32 {
        return None;
    }
    let mut g = [0u8; 16];
    for (i, b) in g.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Gid(g))
}

fn hex<T: TryFrom<u64>>(s: &str) -> Option<T> {
    u64::from_str_radix(s, 16).ok()?.try_into().ok()
}

impl Target {
    /// Connects to the target and exchanges QPs: `mine` are this side's (QPN, first PSN), one
    /// target QP is made for each.
    pub fn connect<V: Endpoint>(
        v: &mut V,
        target: Ipv4Addr,
        port: u16,
        gid: Gid,
        mine: &[(Qpn, Psn)],
    ) -> Result<Target, WindowsError> {
        let sock = TcpStream::connect((target, port))?;
        let mut t = Target {
            chan: Chan::new(sock, true, STALL)?,
            pending: Vec::new(),
            buf: 0,
            peers: Vec::new(),
            transcript: Vec::new(),
        };
        let mut hello = format!("VHCA-WINDOWS {:x} {}", mine.len(), hex_gid(&gid));
        for (q, p) in mine {
            hello += &format!(" {:x} {:x}", q.0, p.0);
        }
        let f = t.ask(v, &hello)?;
        let bad = || WindowsError::Protocol(f.join(" "));
        if f.len() != 4 + 2 * mine.len()
            || f[0] != "VHCA-WINDOWS"
            || f[1] != format!("{:x}", mine.len())
        {
            return Err(bad());
        }
        let peer_gid = parse_gid(&f[2]).ok_or_else(bad)?;
        t.buf = hex(&f[3]).ok_or_else(bad)?;
        for pair in f[4..].chunks(2) {
            t.peers.push(PeerInfo {
                qpn: Qpn(hex(&pair[0]).ok_or_else(bad)?),
                psn: Psn::new(hex(&pair[1]).ok_or_else(bad)?),
                gid: peer_gid,
            });
        }
        Ok(t)
    }

    /// Sends one command line and answers the fields of the reply line.
    pub fn ask<V: Endpoint>(&mut self, v: &mut V, cmd: &str) -> Result<Vec<String>, WindowsError> {
        let Target { chan, pending, .. } = self;
        chan.write_blob(v, format!("{cmd}\n").as_bytes(), "a command to the target")?;
        let mut line = None;
        chan.pumping(v, "the target's answer", None, |s| {
            let got = read_into(s, pending, MAX_LINE, "the target's answer")?;
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = pending.drain(..=i).collect();
                line = Some(String::from_utf8_lossy(&l[..i]).into_owned());
                return Ok((true, true));
            }
            if pending.len() >= MAX_LINE {
                return Err(WindowsError::Protocol("an answer line without end".into()));
            }
            Ok((false, got))
        })?;
        let line = line.unwrap_or_default();
        self.transcript.push(format!("{cmd} -> {line}"));
        Ok(line.split_whitespace().map(str::to_string).collect())
    }

    fn expect(&mut self, f: &[String], tag: &str, n: usize) -> Result<(), WindowsError> {
        if f.len() != n || f.first().map(String::as_str) != Some(tag) {
            return Err(WindowsError::Protocol(f.join(" ")));
        }
        Ok(())
    }

    fn num(f: &str) -> Result<i32, WindowsError> {
        f.parse().map_err(|_| WindowsError::Protocol(f.to_string()))
    }

    /// `BIND1`/`BIND2`: a window over `[off, off + len)` of the target's buffer, bound on QP
    /// `q`; its R_Key and address.
    pub fn bind<V: Endpoint>(
        &mut self,
        v: &mut V,
        kind: u8,
        q: usize,
        off: u64,
        len: u64,
    ) -> Result<(MemKey, u64), WindowsError> {
        let f = self.ask(v, &format!("BIND{kind} {q:x} {off:x} {len:x}"))?;
        self.expect(&f, "KEY", 3)?;
        let bad = || WindowsError::Protocol(f.join(" "));
        Ok((
            MemKey(hex(&f[1]).ok_or_else(bad)?),
            hex(&f[2]).ok_or_else(bad)?,
        ))
    }

    /// The target WRITEs pattern(`seed`) of `len` bytes to `addr` under `rkey` on QP `q`; its
    /// completion status.
    pub fn write<V: Endpoint>(
        &mut self,
        v: &mut V,
        q: usize,
        rkey: MemKey,
        addr: u64,
        len: u32,
        seed: u8,
    ) -> Result<i32, WindowsError> {
        let f = self.ask(
            v,
            &format!("WRITE {q:x} {:x} {addr:x} {len:x} {seed:x}", rkey.0),
        )?;
        self.expect(&f, "WC", 2)?;
        Self::num(&f[1])
    }

    /// The target READs `len` bytes at `addr` under `rkey` on QP `q`: its status, and whether
    /// they were pattern(`seed`).
    pub fn read<V: Endpoint>(
        &mut self,
        v: &mut V,
        q: usize,
        rkey: MemKey,
        addr: u64,
        len: u32,
        seed: u8,
    ) -> Result<(i32, bool), WindowsError> {
        let f = self.ask(
            v,
            &format!("READ {q:x} {:x} {addr:x} {len:x} {seed:x}", rkey.0),
        )?;
        self.expect(&f, "WC", 3)?;
        Ok((Self::num(&f[1])?, f[2] == "1"))
    }

    /// The target sends a SEND_WITH_INV of `rkey` on QP `q`; its status.
    pub fn send_inv<V: Endpoint>(
        &mut self,
        v: &mut V,
        q: usize,
        rkey: MemKey,
    ) -> Result<i32, WindowsError> {
        let f = self.ask(v, &format!("SENDINV {q:x} {:x}", rkey.0))?;
        self.expect(&f, "WC", 2)?;
        Self::num(&f[1])
    }

    /// The target posts a receive on QP `q`.
    pub fn post_recv<V: Endpoint>(&mut self, v: &mut V, q: usize) -> Result<(), WindowsError> {
        let f = self.ask(v, &format!("POSTRECV {q:x}"))?;
        self.expect(&f, "OK", 1)
    }

    /// The completion of the receive on QP `q`: status, `wc_flags` and the
    /// `imm_data`/`invalidated_rkey` union, as rxe wrote them.
    pub fn recv_wc<V: Endpoint>(
        &mut self,
        v: &mut V,
        q: usize,
    ) -> Result<(i32, u32, MemKey), WindowsError> {
        let f = self.ask(v, &format!("RECVWC {q:x}"))?;
        self.expect(&f, "RECV", 4)?;
        let bad = || WindowsError::Protocol(f.join(" "));
        let flags = hex(&f[2]).ok_or_else(bad)?;
        let key = hex(&f[3]).ok_or_else(bad)?;
        Ok((Self::num(&f[1])?, flags, MemKey(key)))
    }

    /// The target writes pattern(`seed`) into `[off, off + len)` of its buffer.
    pub fn fill<V: Endpoint>(
        &mut self,
        v: &mut V,
        off: u64,
        len: u64,
        seed: u8,
    ) -> Result<(), WindowsError> {
        let f = self.ask(v, &format!("FILL {off:x} {len:x} {seed:x}"))?;
        self.expect(&f, "OK", 1)
    }

    /// Whether the target's buffer holds pattern(`seed`) in `[off, off + len)`.
    pub fn holds<V: Endpoint>(
        &mut self,
        v: &mut V,
        off: u64,
        len: u64,
        seed: u8,
    ) -> Result<bool, WindowsError> {
        let f = self.ask(v, &format!("EXPECT {off:x} {len:x} {seed:x}"))?;
        self.expect(&f, "MATCH", 2)?;
        Ok(f[1] == "1")
    }

    /// The state (`ibv_qp_state`) of the target's QP `q`.
    pub fn state<V: Endpoint>(&mut self, v: &mut V, q: usize) -> Result<i32, WindowsError> {
        let f = self.ask(v, &format!("STATE {q:x}"))?;
        self.expect(&f, "STATE", 2)?;
        Self::num(&f[1])
    }

    /// Ends the target (it exits 0).
    pub fn quit<V: Endpoint>(mut self, v: &mut V) -> Result<Vec<String>, WindowsError> {
        self.chan.write_blob(v, b"QUIT\n", "QUIT")?;
        self.transcript.push("QUIT".into());
        Ok(self.transcript)
    }
}

/// Byte `i` of pattern(`seed`), as the target computes it.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31) as u8 ^ seed)
        .collect()
}
