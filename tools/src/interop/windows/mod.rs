//! `vhca windows`: memory windows (type 1 and 2) and fast-register MRs between vhca and a
//! peer that is not vhca — Linux rxe running `windows_target`
//! (tools/rxe-peer/src/windows_target.c, a verbs server this side drives one command at a
//! time over TCP, [`target`]). Two roles, named after rxe's:
//!
//! - [`Role::Responder`] ([`rxe_windows`]): rxe binds windows over its memory; vhca WRITEs and
//!   READs through them, invalidates one by SEND_WITH_INV, and checks what rxe refuses.
//! - [`Role::Requester`] ([`vhca_windows`]): vhca binds windows and registers a fast-register
//!   MR; rxe WRITEs and READs through them, SEND_WITH_INVs one, and its accesses after each
//!   invalidation must come back `IBV_WC_REM_ACCESS_ERR`.
//!
//! Every access that is refused moves both QPs to ERR, so each run opens several QP pairs and
//! spends one per refusal. Data is checked on both sides: the writer's pattern in the other's
//! memory (the target compares its buffer itself), the reader's bytes against what the other
//! side put there.

pub mod rxe_windows;
pub mod target;
pub mod vhca_windows;

use crate::interop::endpoint::random_psn;
use crate::interop::side_channel::ChanError;
use std::net::Ipv4Addr;
use target::Target;
use thiserror::Error;
use vhca_device::{
    Access, CqHandle, MemKey, Mtu, PdHandle, Psn, QpCap, QpInitAttr, QpType, Qpn, RecvWr, SendOp,
    SendWr, Sge, Verbs, VerbsError, WorkCompletion,
};
use vhca_fabric::node::Node;
use vhca_guest::programs::{rc_connect_qp, wait, RcPath};

/// The target's TCP port (`windows_target -p`).
pub const DEFAULT_PORT: u16 = 18516;
/// This side's buffer: windows in its first half, its own sources and destinations after.
const BUF_LEN: u64 = 65536;
/// Where this side's WRITE sources and READ destinations lie in its buffer.
const SRC_OFF: u64 = 32768;
const DST_OFF: u64 = 49152;
const POLLS: usize = 1_000_000;

#[derive(Debug, Error)]
pub enum WindowsError {
    #[error("side channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("side channel: {0}")]
    Chan(#[from] ChanError),
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("the target said {0:?}")]
    Protocol(String),
    #[error("{0}")]
    Check(String),
}

/// Which part rxe plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// rxe owns the windows; vhca accesses them.
    Responder,
    /// vhca owns the windows and a fast-register MR; rxe accesses them.
    Requester,
}

/// What a run checked (a run that returns one passed every check).
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub role: Role,
    /// How many checks passed (all of them: a run with a failed check returns an error).
    pub checks_passed: usize,
    /// Each check that passed, in order.
    pub checks: Vec<String>,
    /// Where rxe differs from IBTA (and from vhca), each confirmed by this run.
    pub findings: Vec<String>,
    /// Refusals seen as RETRY_EXC_ERR rather than REM_ACCESS_ERR: under loss rxe's NAK may be
    /// lost, and rxe, its QP in ERR by then, never answers the resent request. Each is counted
    /// only with rxe's QP found in ERR.
    pub refusals_by_timeout: u32,
    /// Requests vhca sent again (its retransmit timer, or a NAK): under loss, proof that the
    /// link really lost some of rxe's answers.
    pub retransmits: u64,
    /// The commands sent to the target and its answers.
    pub transcript: Vec<String>,
}

/// What a run is given.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub ip: Ipv4Addr,
    pub target: Ipv4Addr,
    pub port: u16,
    pub role: Role,
    /// The link may lose packets (a refusal may then end in RETRY_EXC_ERR, see [`Report`]).
    pub lossy: bool,
}

/// This side of a run: a VF with one PD, `n` RC QPs (each with its own CQ) connected to the
/// target's, and a buffer registered for local access and window binding only.
pub struct Side {
    pub v: Node,
    pub pd: PdHandle,
    pub qps: Vec<(Qpn, CqHandle)>,
    pub buf: u64,
    /// The buffer's MR: LOCAL_WRITE and MW_BIND, no remote right of its own.
    pub mr: MemKey,
    pub t: Target,
    pub checks: Vec<String>,
    pub findings: Vec<String>,
}

impl Side {
    fn open(o: &Opts, n: usize) -> Result<Side, WindowsError> {
        let mut v = Node::new(o.ip, 1 << 20)?;
        let pd = v.alloc_pd()?;
        let mut qps = Vec::new();
        let mut mine = Vec::new();
        let gid = v.gid();
        let first = random_psn(gid);
        for i in 0..n {
            let cq = v.create_cq(32)?;
            let qpn = v.create_qp(QpInitAttr {
                qp_type: QpType::Rc,
                pd,
                send_cq: cq,
                recv_cq: cq,
                srq: None,
                cap: QpCap {
                    max_send_wr: 8,
                    max_recv_wr: 4,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: 0,
                },
                sq_sig_all: false,
            })?;
            qps.push((qpn, cq));
            mine.push((
                qpn,
                Psn::new(first.0.wrapping_add(0x1000 * i as u32) & 0xff_ffff),
            ));
        }
        let buf = v.alloc_buf(BUF_LEN)?;
        let mr = v.reg_mr(pd, buf, BUF_LEN, Access::LOCAL_WRITE | Access::MW_BIND)?;
        let t = Target::connect(&mut v, o.target, o.port, gid, &mine)?;
        let path = RcPath {
            mtu: Mtu::Mtu1024,
            hop_limit: 64,
            ..RcPath::default()
        };
        for ((qpn, psn), peer) in mine.iter().zip(t.peers.clone()) {
            rc_connect_qp(&mut v, *qpn, *psn, peer, path)?;
        }
        Ok(Side {
            v,
            pd,
            qps,
            buf,
            mr,
            t,
            checks: Vec::new(),
            findings: Vec::new(),
        })
    }

    /// Records a check: passes it on, or fails the run with `what`.
    fn check(&mut self, ok: bool, what: impl Into<String>) -> Result<(), WindowsError> {
        let what = what.into();
        if !ok {
            return Err(WindowsError::Check(what));
        }
        tracing::info!(check = %what, "ok");
        self.checks.push(what);
        Ok(())
    }

    /// Posts `op` on QP `q` (with `sge` when given) and waits for its completion.
    fn post(
        &mut self,
        q: usize,
        op: SendOp,
        sge: Option<Sge>,
    ) -> Result<WorkCompletion, WindowsError> {
        let (qpn, cq) = self.qps[q];
        let mut wr = SendWr::new(q as u64, op);
        if let Some(s) = sge {
            wr = wr.sge(s);
        }
        self.v.post_send(qpn, &wr)?;
        Ok(wait(&mut self.v, cq, 1, POLLS)?.remove(0))
    }

    /// Posts a 64-byte receive on QP `q`.
    fn post_recv(&mut self, q: usize) -> Result<(), WindowsError> {
        let sgl = vec![Sge {
            addr: self.buf + DST_OFF,
            len: 64,
            lkey: self.mr,
        }];
        self.v.post_recv(self.qps[q].0, RecvWr { wr_id: 99, sgl })?;
        Ok(())
    }

    /// The next completion of QP `q`'s CQ.
    fn next_wc(&mut self, q: usize) -> Result<WorkCompletion, WindowsError> {
        let cq = self.qps[q].1;
        Ok(wait(&mut self.v, cq, 1, POLLS)?.remove(0))
    }

    fn into_report(self, role: Role, refusals_by_timeout: u32) -> Result<Report, WindowsError> {
        let Side {
            mut v,
            t,
            checks,
            findings,
            ..
        } = self;
        let transcript = t.quit(&mut v)?;
        let retransmits = v.vf.counters().retransmits;
        Ok(Report {
            role,
            checks_passed: checks.len(),
            checks,
            findings,
            refusals_by_timeout,
            retransmits,
            transcript,
        })
    }
}

/// Runs one role against the target.
pub fn run(o: Opts) -> Result<Report, WindowsError> {
    match o.role {
        Role::Responder => rxe_windows::run(&o),
        Role::Requester => vhca_windows::run(&o),
    }
}
