//! `vhca placement`: vhca as the requester of IBTA 1.5's ATOMIC WRITE and FLUSH against a
//! responder that is not vhca — Linux rxe (≥ 6.2) running `placement_target`
//! (tools/rxe-peer/src/placement_target.c), since no stock tool serves them.
//!
//! One line each way over TCP sets the connection up (hex fields):
//! `VHCA-PLACEMENT <qpn> <psn> <gid>` from vhca, `VHCA-PLACEMENT <qpn> <psn> <gid> <addr>
//! <rkey>` back. vhca then WRITEs a block, FLUSHes its range, ATOMIC WRITEs a value after it
//! and FLUSHes the whole region, each completion checked, and asks `CHECK <len>`: the target
//! answers with its buffer's bytes in hex, which must be the block and the value.

use crate::interop::endpoint::random_psn;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;
use thiserror::Error;
use vhca_device::{
    FlushLevel, FlushPlacement, Gid, Mtu, Psn, QpCap, QpInitAttr, QpType, Qpn, SendOp, SendWr, Sge,
    Verbs, VerbsError, WcOpcode, WcStatus,
};
use vhca_fabric::node::Node;
use vhca_guest::programs::{rc_connect_qp, wait, PeerInfo, RcPath, FULL_ACCESS};

/// The target's TCP port (`placement_target -p`).
pub const DEFAULT_PORT: u16 = 18515;
/// Bytes the WRITE puts in the target's buffer before the ATOMIC WRITE's 8.
pub const BLOCK: u32 = 256;
/// The longest line taken from the target: its buffer in hex and a newline, with room to spare.
/// A peer sending more is cut off there rather than growing the line without end.
const MAX_LINE: u64 = 4 * (BLOCK as u64 + 8) + 256;

#[derive(Debug, Error)]
pub enum PlacementError {
    #[error("side channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("the target said {0:?}")]
    Protocol(String),
    #[error("{0}")]
    Check(String),
}

/// What a run saw (a run that returns one found the target's buffer holding the block and the
/// value).
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// (operation, completion status) in completion order.
    pub completions: Vec<(String, String)>,
    pub value: u64,
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

/// The block a run WRITEs (a pattern of its offset).
pub fn block() -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (i as u8).wrapping_mul(29) ^ 0x3c)
        .collect()
}

/// Runs the sequence from a VF at `ip` against the target at `target:port`.
/// Which operations a run posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ops {
    /// RDMA WRITE, FLUSH of its range, ATOMIC WRITE, FLUSH of the whole MR.
    All,
    /// RDMA WRITE and ATOMIC WRITE only: rxe never answers a FLUSH again whose answer was lost
    /// (its responder resource for a FLUSH keeps no PSN), so under loss only these recover.
    NoFlush,
}

/// Runs the sequence from a VF at `ip` against the target at `target:port`; with `rxe_icrc`,
/// FLUSHes carry rxe's ICRC.
pub fn run(
    ip: Ipv4Addr,
    target: Ipv4Addr,
    port: u16,
    value: u64,
    ops_set: Ops,
    rxe_icrc: bool,
) -> Result<Report, PlacementError> {
    let mut v = Node::new(ip, 1 << 20)?;
    if rxe_icrc {
        v.link.set_flush_icrc(vhca_wire::icrc::FlushIcrc::Rxe);
    }
    let pd = v.alloc_pd()?;
    let cq = v.create_cq(16)?;
    let qpn = v.create_qp(QpInitAttr {
        qp_type: QpType::Rc,
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap: QpCap {
            max_send_wr: 8,
            max_recv_wr: 1,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        sq_sig_all: false,
    })?;
    let buf = v.alloc_buf(BLOCK as u64)?;
    let key = v.reg_mr(pd, buf, BLOCK as u64, FULL_ACCESS)?;
    let data = block();
    v.write_buf(buf, &data)?;
    let gid = v.gid();
    let psn = random_psn(gid);

    let sock = TcpStream::connect((target, port))?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = sock.try_clone()?;
    let mut r = BufReader::new(sock);
    writeln!(
        w,
        "VHCA-PLACEMENT {:x} {:x} {}",
        qpn.0,
        psn.0,
        hex_gid(&gid)
    )?;
    let mut line = String::new();
    (&mut r).take(MAX_LINE).read_line(&mut line)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let bad = || PlacementError::Protocol(line.trim().to_string());
    let [tag, tq, tp, tg, ta, tk] = f.as_slice() else {
        return Err(bad());
    };
    if *tag != "VHCA-PLACEMENT" {
        return Err(bad());
    }
    let hex32 = |s: &str| u32::from_str_radix(s, 16).map_err(|_| bad());
    let peer = PeerInfo {
        qpn: Qpn(hex32(tq)?),
        psn: Psn::new(hex32(tp)?),
        gid: parse_gid(tg).ok_or_else(bad)?,
    };
    let addr = u64::from_str_radix(ta, 16).map_err(|_| bad())?;
    let rkey = vhca_device::MemKey(hex32(tk)?);
    rc_connect_qp(
        &mut v,
        qpn,
        psn,
        peer,
        RcPath {
            mtu: Mtu::Mtu1024,
            hop_limit: 64,
            ..RcPath::default()
        },
    )?;
    let ops = [
        (
            "RDMA_WRITE",
            SendOp::Write {
                remote_addr: addr,
                rkey,
            },
            WcOpcode::RdmaWrite,
        ),
        (
            "FLUSH (range)",
            SendOp::Flush {
                remote_addr: addr,
                rkey,
                len: BLOCK,
                placement: FlushPlacement::GLOBAL,
                level: FlushLevel::Range,
            },
            WcOpcode::Flush,
        ),
        (
            "ATOMIC_WRITE",
            SendOp::AtomicWrite {
                remote_addr: addr + BLOCK as u64,
                rkey,
                value,
            },
            WcOpcode::AtomicWrite,
        ),
        (
            "FLUSH (MR)",
            SendOp::Flush {
                remote_addr: addr,
                rkey,
                len: 0,
                placement: FlushPlacement::GLOBAL,
                level: FlushLevel::Mr,
            },
            WcOpcode::Flush,
        ),
    ];
    let ops: Vec<_> = ops
        .into_iter()
        .filter(|(_, op, _)| ops_set == Ops::All || !matches!(op, SendOp::Flush { .. }))
        .collect();
    for (i, (_, op, _)) in ops.iter().enumerate() {
        let mut wr = SendWr::new(i as u64, *op);
        if i == 0 {
            wr = wr.sge(Sge {
                addr: buf,
                len: BLOCK,
                lkey: key,
            });
        }
        v.post_send(qpn, &wr)?;
    }
    let wcs = wait(&mut v, cq, ops.len(), 1_000_000)?;
    let mut completions = Vec::new();
    let mut failed = None;
    for (wc, (name, _, want)) in wcs.iter().zip(ops.iter()) {
        completions.push((name.to_string(), format!("{:?}", wc.status)));
        if wc.status != WcStatus::Success || wc.opcode != *want {
            failed.get_or_insert(format!("{name}: {:?} ({:?})", wc.status, wc.opcode));
        }
    }
    if let Some(f) = failed {
        return Err(PlacementError::Check(f));
    }
    let len = BLOCK as usize + 8;
    writeln!(w, "CHECK {len}")?;
    line.clear();
    (&mut r).take(MAX_LINE).read_line(&mut line)?;
    let got: Option<Vec<u8>> = (0..len)
        .map(|i| {
            line.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let mut want = data;
    want.extend_from_slice(&value.to_le_bytes());
    if got.as_deref() != Some(&want[..]) {
        return Err(PlacementError::Check(format!(
            "the target's buffer holds {} instead of the block and {value:#018x}",
            line.trim()
        )));
    }
    Ok(Report { completions, value })
}
