//! `vhca migrate-attached`: a live migration between `vhca serve` processes that are already
//! running (in other network namespaces, or on a real network), with its RC peer a VF of a
//! third process. The tool plays the guest on the migrating VF (`--src`) and on its peer
//! (`--peer`), connects `--qps` RC QP pairs, and migrates the VF to `--dst` mid-traffic as
//! QEMU would: pre-copy rounds with traffic, then WRs of every RC opcode posted in both
//! directions on every QP right before the stop, so some are in flight when the source stops.
//! Between the source's save and the destination's load it runs `--hook` (where the VF's
//! address and MAC move to the destination: docs/migration.md). Afterwards every WR must
//! complete exactly once and successfully, every byte is compared, and another round of every
//! opcode runs on the same QPs.

mod burst;

use burst::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::{
    CqHandle, MemKey, Mtu, Psn, QpCap, QpInitAttr, QpType, Qpn, RecvWr, SendOp, SendWr, Sge, Verbs,
    VerbsError, WcOpcode, WcStatus, WorkCompletion,
};
use vhca_guest::migrate::{MigrateError, Migration};
use vhca_guest::programs::{rc_connect_qp, PeerInfo, RcPath, FULL_ACCESS};
use vhca_guest::{DriverConfig, DriverError, GuestContext};

use crate::migration::hook_command::HookCommand;

pub struct Options {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub peer: PathBuf,
    pub qps: u32,
    pub msg_size: u32,
    pub mtu: Mtu,
    pub rounds: u32,
    /// Shell command run between the source's save and the destination's load.
    pub hook: Option<String>,
    /// RC local ACK timeout exponent (4.096 µs × 2^T) of every QP.
    pub qp_timeout: u8,
}

/// What went wrong; a failed check says which side, QP and WR.
#[derive(Debug, Error)]
pub enum AttachedError {
    #[error("--qps must be at least 1 and --size between 1 and 1048576")]
    Options,
    #[error("guest on {}: {source}", path.display())]
    Guest {
        path: PathBuf,
        #[source]
        source: DriverError,
    },
    #[error("{what}: {source}")]
    Verbs {
        what: &'static str,
        #[source]
        source: VerbsError,
    },
    #[error("{what}: {source}")]
    Driver {
        what: &'static str,
        #[source]
        source: DriverError,
    },
    #[error("{what}: {source}")]
    Migration {
        what: &'static str,
        #[source]
        source: MigrateError,
    },
    /// A step of the run failed (`phase`: when).
    #[error("{phase}: {source}")]
    During {
        phase: &'static str,
        #[source]
        source: Box<AttachedError>,
    },
    /// A completion, a byte or an atomic word is not what the run must have produced.
    #[error("{0}")]
    Check(String),
    /// The migration failed after the stop; the source resumed and every check passed there.
    #[error(
        "migration failed ({cause}); the source VF resumed and completed every WR in flight \
         and another burst of every opcode, data checked (in flight at the stop: {in_flight}; \
         {recovery}; stall {stall:?})"
    )]
    SourceResumed {
        #[source]
        cause: Box<MigrateError>,
        in_flight: String,
        recovery: String,
        stall: Duration,
    },
}

/// `result.ctx("step")`: the error of a step, with what the step was.
trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, AttachedError>;
}

impl<T> Ctx<T> for Result<T, VerbsError> {
    fn ctx(self, what: &'static str) -> Result<T, AttachedError> {
        self.map_err(|source| AttachedError::Verbs { what, source })
    }
}

impl<T> Ctx<T> for Result<T, DriverError> {
    fn ctx(self, what: &'static str) -> Result<T, AttachedError> {
        self.map_err(|source| AttachedError::Driver { what, source })
    }
}

impl<T> Ctx<T> for Result<T, MigrateError> {
    fn ctx(self, what: &'static str) -> Result<T, AttachedError> {
        self.map_err(|source| AttachedError::Migration { what, source })
    }
}

/// `result.during("phase")`: a step's error, with the phase of the run it failed in.
fn during(phase: &'static str) -> impl FnOnce(AttachedError) -> AttachedError {
    move |e| AttachedError::During {
        phase,
        source: Box::new(e),
    }
}

/// Counts, from a saved device state, the WRs of burst `burst` the source VF had not completed:
/// its own requests by opcode (indices 0..7: posted but unfinished, including WQEs whose
/// doorbell it had not read yet) and its receives still waiting for the peer's SEND,
/// SEND_WITH_IMM and WRITE_WITH_IMM (8..11); at 11, how many of all those the device had not
/// yet read from the rings (doorbell not taken yet). `None` if the state does not decode.
fn in_flight_at_stop(blob: &[u8], qpns: &[Qpn], burst: u32) -> Option<[usize; 12]> {
    let state = vhca_vhost::device_state::decode(blob).ok()?;
    let (_, vf) = vhca_device::checkpoint::decode(&state.port.checkpoint).ok()?;
    let mut counts = [0usize; 12];
    let ours = |wr_id: u64| (wr_id >> 40) as u32 == burst;
    for qp in &vf.qps {
        for w in qp
            .req
            .sq
            .iter()
            .filter(|w| w.done.is_none() && ours(w.wr_id))
        {
            counts[(w.wr_id & 0xff) as usize % 11] += 1;
        }
        for r in qp.rq.iter().filter(|r| ours(r.wr_id)) {
            counts[(r.wr_id & 0xff) as usize % 11] += 1;
        }
    }
    // WQEs in the rings whose doorbell the device had not read: the last ones of the burst.
    let posted = |per_burst: u64| (per_burst * (u64::from(burst) + 1)) as u32;
    for ring in &state.port.qps {
        let Some(qp) = qpns.iter().position(|q| q.0 == ring.qpn) else {
            continue;
        };
        let unread = posted(SENDS).wrapping_sub(ring.sq_pi).min(SENDS as u32) as usize;
        for k in &send_order(qp)[SENDS as usize - unread..] {
            counts[*k as usize] += 1;
        }
        counts[11] += unread;
        let unread = posted(RECVS).wrapping_sub(ring.rq_pi).min(RECVS as u32) as usize;
        for k in &recv_order(qp)[RECVS as usize - unread..] {
            counts[8 + *k as usize] += 1;
        }
        counts[11] += unread;
    }
    Some(counts)
}

/// The transport counters of the VF behind socket `sock` (`DIR/vfN.sock`), from its process's
/// control socket (`DIR/ctl.sock`, the default); `None` when that cannot be asked.
fn vf_counters(sock: &std::path::Path) -> Option<serde_json::Value> {
    let vf: usize = sock
        .file_stem()?
        .to_str()?
        .strip_prefix("vf")?
        .parse()
        .ok()?;
    let c = vhca_vhost::ctl::request(&sock.with_file_name("ctl.sock"), "counters").ok()?;
    c["vfs"].get(vf).map(|v| v["device"].clone())
}

/// What a counter grew by between two snapshots.
fn grew(before: &Option<serde_json::Value>, after: &Option<serde_json::Value>, k: &str) -> String {
    match (before, after) {
        (Some(b), Some(a)) => match (b[k].as_u64(), a[k].as_u64()) {
            (Some(b), Some(a)) => a.wrapping_sub(b).to_string(),
            _ => "?".into(),
        },
        _ => "?".into(),
    }
}

/// Runs the migration; returns the report to print.
pub fn run(o: &Options) -> Result<String, AttachedError> {
    if o.qps == 0 || o.msg_size == 0 || o.msg_size > 1 << 20 {
        return Err(AttachedError::Options);
    }
    let cfg = DriverConfig {
        mem_size: guest_ram(o.qps, o.msg_size),
        ..DriverConfig::small()
    };
    let connect_guest = |p: &PathBuf| {
        GuestContext::connect(p, &cfg).map_err(|source| AttachedError::Guest {
            path: p.clone(),
            source,
        })
    };
    let mut a = connect_guest(&o.src)?;
    let mut b = connect_guest(&o.peer)?;
    let (ga, gb) = (a.gid(), b.gid());
    let t = Instant::now();
    let sa = setup(&mut a, o)?;
    let sb = setup(&mut b, o)?;
    for qp in 0..o.qps as usize {
        let (qa, qb) = (sa.qpns[qp], sb.qpns[qp]);
        connect(&mut a, qa, (qb, psn(qp, 1)), psn(qp, 0), gb, o)?;
        connect(&mut b, qb, (qa, psn(qp, 0)), psn(qp, 1), ga, o)?;
    }
    let setup_took = t.elapsed();
    let mut n = 0;
    burst(&mut a, &sa, &mut b, &sb, n).map_err(during("before the migration"))?;
    n += 1;

    let mut m = Migration::begin(a.driver_mut(), &o.dst).ctx("migration begin")?;
    for _ in 0..o.rounds {
        burst(&mut a, &sa, &mut b, &sb, n).map_err(during("during pre-copy"))?;
        n += 1;
        m.round(a.driver()).ctx("pre-copy round")?;
    }
    let hook_took = Arc::new(Mutex::new(None));
    if let Some(cmd) = o.hook.clone() {
        let ip = ga.to_ipv4().map(std::net::Ipv4Addr::from);
        let mac = a.driver().config().mac;
        m.between = Some(HookCommand { cmd, ip, mac }.into_migration_hook(hook_took.clone()));
    }

    // What the source still had to do when it stopped, read from the state it saved (the
    // blob is only looked at, not changed).
    let stop_burst = n;
    let at_stop: Arc<Mutex<Option<[usize; 12]>>> = Arc::new(Mutex::new(None));
    {
        let at_stop = at_stop.clone();
        let qpns = sa.qpns.clone();
        m.tamper = Some(Box::new(move |blob: &mut Vec<u8>| {
            let counts = in_flight_at_stop(blob, &qpns, stop_burst);
            *at_stop.lock().unwrap_or_else(|e| e.into_inner()) = counts;
        }));
    }

    // The transport counters around the migration: the migrating VF's travel in its state.
    let (vf_before, peer_before) = (vf_counters(&o.src), vf_counters(&o.peer));

    // The burst in flight: posted on both sides, then the source stops at once.
    post_burst(&mut a, &sa, &mut b, &sb, stop_burst)?;
    let stop = Instant::now();
    // A migration that fails after the stop leaves the VF running on the source: then the
    // same checks run there, and the command fails after them.
    let (timeline, aborted) = match m.finish(a.driver_mut()) {
        Ok(t) => (Some(t), None),
        Err(MigrateError::SourceResumed { cause }) => (None, Some(cause)),
        Err(e) => return Err(e).ctx("migration finish"),
    };
    let now_at = if aborted.is_some() { &o.src } else { &o.dst };
    collect(&mut a, &sa, 0, stop_burst).map_err(during("the burst in flight at the stop"))?;
    collect(&mut b, &sb, 1, stop_burst).map_err(during("the burst in flight at the stop"))?;
    // Until the guests saw the last completion (polled side by side, so an upper bound).
    let stall = stop.elapsed();
    let names = [
        "SEND",
        "SEND_WITH_IMM",
        "WRITE",
        "WRITE_WITH_IMM",
        "READ",
        "FETCH_ADD",
        "CMP_SWAP",
        "",
        "RECV(SEND)",
        "RECV(SEND_WITH_IMM)",
        "RECV(WRITE_WITH_IMM)",
    ];
    let in_flight = match *at_stop.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(c) => format!(
            "{} ({} of them not yet read from the rings)",
            c.iter()
                .zip(names)
                .filter(|(_, n)| !n.is_empty())
                .map(|(c, n)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", "),
            c[11]
        ),
        None => "unknown (the saved state did not decode)".into(),
    };
    verify_data(&mut a, &sa, 0, stop_burst)?;
    verify_data(&mut b, &sb, 1, stop_burst)?;
    let (vf_after, peer_after) = (vf_counters(now_at), vf_counters(&o.peer));
    let recovery = format!(
        "recovery: the VF sent {} sequence NAKs and retransmitted {} packets; the peer received {} sequence NAKs, retransmitted {} packets, timed out {} times",
        grew(&vf_before, &vf_after, "seq_naks_sent"),
        grew(&vf_before, &vf_after, "retransmits"),
        grew(&peer_before, &peer_after, "seq_naks_received"),
        grew(&peer_before, &peer_after, "retransmits"),
        grew(&peer_before, &peer_after, "retry_timeouts"),
    );
    n += 1;
    // The same QPs, the VF now in the destination process: every opcode once more (a
    // duplicate completion of the burst in flight would show up here).
    burst(&mut a, &sa, &mut b, &sb, n).map_err(during("after the migration"))?;
    let mut extra = Vec::new();
    a.poll_cq(sa.cq, usize::MAX, &mut extra).ctx("POLL_CQ")?;
    b.poll_cq(sb.cq, usize::MAX, &mut extra).ctx("POLL_CQ")?;
    if !extra.is_empty() {
        return Err(AttachedError::Check(format!(
            "completions nobody asked for: {extra:?}"
        )));
    }
    let hook = match *hook_took.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(d) => format!("{d:?}"),
        None => "none".into(),
    };
    if let Some(cause) = aborted {
        return Err(AttachedError::SourceResumed {
            cause,
            in_flight,
            recovery,
            stall,
        });
    }
    let timeline = timeline.map(|t| t.to_string()).unwrap_or_default();
    Ok(format!(
        "VF {ga:?} ({} -> {}), peer {gb:?} ({})\n\
         {} RC QP pairs at MTU {}, {} B messages, set up in {setup_took:?}\n\
         {timeline}\n\
         hook (between save and load): {hook}\n\
         in flight at the stop (source VF's saved state): {}\n\
         stall (stop -> every WR in flight completed): {stall:?}\n\
         {recovery}\n\
         after: {} bursts of every RC opcode in both directions, every WR completed once, data and atomics checked\n",
        o.src.display(),
        o.dst.display(),
        o.peer.display(),
        o.qps,
        o.mtu.bytes(),
        o.msg_size,
        in_flight,
        n + 1,
    ))
}
