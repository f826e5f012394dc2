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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vhca_device::{
    CqHandle, MemKey, Mtu, Psn, QpCap, QpInitAttr, QpType, Qpn, RecvWr, SendOp, SendWr, Sge, Verbs,
    WcOpcode, WcStatus, WorkCompletion,
};
use vhca_guest::migrate::{MigrateError, Migration};
use vhca_guest::programs::{rc_connect_qp, PeerInfo, RcPath, FULL_ACCESS};
use vhca_guest::{DriverConfig, GuestContext};

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

/// WRs each side posts per QP and burst: SEND, SEND_WITH_IMM, WRITE, WRITE_WITH_IMM, READ,
/// FETCH_ADD, CMP_SWAP.
const SENDS: u64 = 7;
/// Receives each side posts per QP and burst: for the SEND, the SEND_WITH_IMM and the
/// WRITE_WITH_IMM of the other side.
const RECVS: u64 = 3;

/// One side's objects: one PD, CQ and MR; QP `i` uses the `i`-th slice of the buffer.
struct Side {
    cq: CqHandle,
    qpns: Vec<Qpn>,
    buf: u64,
    key: MemKey,
    slice: u64,
    size: u32,
}

/// Offsets inside a QP's slice.
impl Side {
    fn base(&self, qp: usize) -> u64 {
        self.buf + qp as u64 * self.slice
    }
    /// What this side sends (and what the other side READs).
    fn src(&self, qp: usize) -> u64 {
        self.base(qp)
    }
    /// Landing places of the other side's SEND, SEND_WITH_IMM, WRITE, WRITE_WITH_IMM.
    fn landing(&self, qp: usize, k: u64) -> u64 {
        self.base(qp) + (1 + k) * u64::from(self.size)
    }
    /// Where this side's READ puts the other side's data.
    fn read_back(&self, qp: usize) -> u64 {
        self.base(qp) + 5 * u64::from(self.size)
    }
    /// The word the other side's atomics work on (8-byte aligned, as atomics require).
    fn atomic_word(&self, qp: usize) -> u64 {
        self.base(qp) + atomics_at(self.size)
    }
    /// Where this side's FETCH_ADD and CMP_SWAP return the old value.
    fn atomic_result(&self, qp: usize, k: u64) -> u64 {
        self.atomic_word(qp) + 8 * (1 + k)
    }
}

/// Offset of the atomic word in a QP's slice: after six messages, 8-byte aligned.
fn atomics_at(size: u32) -> u64 {
    (6 * u64::from(size)).next_multiple_of(8)
}

/// A QP's slice: six messages, the atomic word and the two atomic results; slices start
/// 64-byte aligned.
fn slice_len(size: u32) -> u64 {
    (atomics_at(size) + 24).next_multiple_of(64)
}

/// Guest RAM for `qps` QPs: the buffer, each QP's rings (≤ 4 KiB apiece at depth 16) and the
/// CQ, plus the driver's own areas.
fn guest_ram(qps: u32, size: u32) -> u64 {
    let buf = u64::from(qps) * slice_len(size);
    let rings = u64::from(qps) * 16 * 1024;
    (buf + rings + (16 << 20)).next_multiple_of(1 << 20)
}

fn v<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn setup(g: &mut GuestContext, o: &Options) -> Result<Side, String> {
    let size = o.msg_size;
    let slice = slice_len(size);
    let len = slice * u64::from(o.qps);
    let pd = g.alloc_pd().map_err(v("ALLOC_PD"))?;
    let depth = (SENDS + RECVS) as u32 * o.qps + 64;
    let cq = g.create_cq(depth).map_err(v("CREATE_CQ"))?;
    let buf = g.alloc_buf(len).map_err(v("guest buffer"))?;
    let key = g.reg_mr(pd, buf, len, FULL_ACCESS).map_err(v("REG_MR"))?;
    let mut qpns = Vec::with_capacity(o.qps as usize);
    for _ in 0..o.qps {
        let qpn = g
            .create_qp(QpInitAttr {
                qp_type: QpType::Rc,
                pd,
                send_cq: cq,
                recv_cq: cq,
                srq: None,
                cap: QpCap {
                    max_send_wr: 16,
                    max_recv_wr: 16,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: 0,
                },
                sq_sig_all: true,
            })
            .map_err(v("CREATE_QP"))?;
        qpns.push(qpn);
    }
    Ok(Side {
        cq,
        qpns,
        buf,
        key,
        slice,
        size,
    })
}

/// INIT → RTR → RTS against the peer's QP, with the given ACK timeout: the peer's requests
/// wait out the blackout on its retransmit timer and retries (7 of them), so the timeout
/// must make them outlast it.
fn connect(
    g: &mut GuestContext,
    qpn: Qpn,
    peer: (Qpn, Psn),
    my_psn: Psn,
    gid: vhca_device::Gid,
    o: &Options,
) -> Result<(), String> {
    let peer = PeerInfo {
        qpn: peer.0,
        psn: peer.1,
        gid,
    };
    let path = RcPath {
        mtu: o.mtu,
        timeout: o.qp_timeout,
        hop_limit: 64,
        ..RcPath::default()
    };
    rc_connect_qp(g, qpn, my_psn, peer, path).map_err(v("connecting a QP"))
}

/// Starting PSNs: spread over the space, some near the wrap.
fn psn(qp: usize, side: u32) -> Psn {
    Psn(((qp as u32).wrapping_mul(0x9e37) ^ (side * 0x5a5a5)).wrapping_sub(8) & 0xff_ffff)
}

/// The bytes side `dir` (0: the migrating VF, 1: the peer) sends on QP `qp` in burst `burst`.
fn pattern(burst: u32, qp: usize, dir: u32, size: u32) -> Vec<u8> {
    (0..size)
        .map(|j| {
            let x = j
                .wrapping_mul(31)
                .wrapping_add(burst.wrapping_mul(131))
                .wrapping_add((qp as u32).wrapping_mul(7))
                .wrapping_add(dir * 57);
            (x ^ (x >> 8)) as u8
        })
        .collect()
}

/// The atomic word's value before a burst, what FETCH_ADD adds, what CMP_SWAP swaps in.
fn atomics(burst: u32, qp: usize, dir: u32) -> (u64, u64, u64) {
    let start = (u64::from(dir) + 1) << 48 | u64::from(burst) << 16 | qp as u64;
    (start, 3 + qp as u64, !start)
}

fn imm(burst: u32, qp: usize, dir: u32, k: u32) -> u32 {
    (burst << 20) ^ ((qp as u32) << 4) ^ (dir << 2) ^ k
}

fn wr_id(burst: u32, qp: usize, k: u64) -> u64 {
    u64::from(burst) << 40 | (qp as u64) << 8 | k
}

/// The order QP `qp` posts its WRs in (by index into the burst: 0 SEND … 6 CMP_SWAP). Each
/// QP starts at another opcode (FETCH_ADD and CMP_SWAP stay together and in that order: the
/// swap compares with the add's result): the last WRs of a send queue are the ones most likely
/// still in flight at the stop, and so every opcode is last on some QP.
fn send_order(qp: usize) -> Vec<u64> {
    let units: [&[u64]; 6] = [&[0], &[1], &[2], &[3], &[4], &[5, 6]];
    (0..units.len())
        .flat_map(|i| units[(qp + i) % units.len()].iter().copied())
        .collect()
}

/// The order QP `qp` posts its receives in (0: for the SEND, 1: the SEND_WITH_IMM, 2: the
/// WRITE_WITH_IMM): the order the other side sends those in, since a QP's receives are
/// consumed in order.
fn recv_order(qp: usize) -> Vec<u64> {
    send_order(qp)
        .into_iter()
        .filter_map(|k| match k {
            0 => Some(0),
            1 => Some(1),
            3 => Some(2),
            _ => None,
        })
        .collect()
}

/// Writes this burst's data and atomic words on both sides, then posts every receive, then
/// every WR of every opcode in both directions on every QP; does not wait.
fn post_burst(
    a: &mut GuestContext,
    sa: &Side,
    b: &mut GuestContext,
    sb: &Side,
    burst: u32,
) -> Result<(), String> {
    let size = sa.size;
    for (g, me, dir) in [(&mut *a, sa, 0u32), (&mut *b, sb, 1)] {
        for qp in 0..me.qpns.len() {
            g.write_buf(me.src(qp), &pattern(burst, qp, dir, size))
                .map_err(v("writing the data"))?;
            // This side's word is the other side's target.
            let (start, _, _) = atomics(burst, qp, 1 - dir);
            g.write_buf(me.atomic_word(qp), &start.to_le_bytes())
                .map_err(v("writing the atomic word"))?;
        }
    }
    // Receives first, one doorbell per queue, taken by the device before any send is rung:
    // the sends then find their receives, and no doorbell buffer is still queued when the
    // sends' doorbells go out (a full doorbell queue would make the driver wait).
    for (g, me) in [(&mut *a, sa), (&mut *b, sb)] {
        g.hold_doorbells();
        for (qp, &qpn) in me.qpns.iter().enumerate() {
            for k in recv_order(qp) {
                // The WRITE_WITH_IMM's receive takes no data: the payload goes where the RETH
                // says.
                let sgl = if k < 2 {
                    vec![Sge {
                        addr: me.landing(qp, k),
                        len: size,
                        lkey: me.key,
                    }]
                } else {
                    vec![]
                };
                g.post_recv(
                    qpn,
                    RecvWr {
                        wr_id: wr_id(burst, qp, 8 + k),
                        sgl,
                    },
                )
                .map_err(v("POST_RECV"))?;
            }
        }
    }
    for g in [&mut *a, &mut *b] {
        g.ring_held_doorbells().map_err(v("doorbells"))?;
        g.driver_mut()
            .flush_doorbells()
            .map_err(v("doorbells taken"))?;
    }
    // Every WR's doorbell is held until all are written: the device then starts them all at
    // once, rather than keeping pace with the posting (and finishing before the stop).
    a.hold_doorbells();
    b.hold_doorbells();
    for (g, me, other, dir) in [(&mut *a, sa, sb, 0u32), (&mut *b, sb, sa, 1)] {
        for (qp, &qpn) in me.qpns.iter().enumerate() {
            let (start, add, swap) = atomics(burst, qp, dir);
            let data = Sge {
                addr: me.src(qp),
                len: size,
                lkey: me.key,
            };
            let result = |k| Sge {
                addr: me.atomic_result(qp, k),
                len: 8,
                lkey: me.key,
            };
            let (rkey, word) = (other.key, other.atomic_word(qp));
            let wrs = [
                SendWr::new(wr_id(burst, qp, 0), SendOp::Send).sge(data),
                SendWr::new(
                    wr_id(burst, qp, 1),
                    SendOp::SendWithImm {
                        imm: imm(burst, qp, dir, 1),
                    },
                )
                .sge(data),
                SendWr::new(
                    wr_id(burst, qp, 2),
                    SendOp::Write {
                        remote_addr: other.landing(qp, 2),
                        rkey,
                    },
                )
                .sge(data),
                SendWr::new(
                    wr_id(burst, qp, 3),
                    SendOp::WriteWithImm {
                        remote_addr: other.landing(qp, 3),
                        rkey,
                        imm: imm(burst, qp, dir, 3),
                    },
                )
                .sge(data),
                SendWr::new(
                    wr_id(burst, qp, 4),
                    SendOp::Read {
                        remote_addr: other.src(qp),
                        rkey,
                    },
                )
                .sge(Sge {
                    addr: me.read_back(qp),
                    len: size,
                    lkey: me.key,
                }),
                SendWr::new(
                    wr_id(burst, qp, 5),
                    SendOp::FetchAdd {
                        remote_addr: word,
                        rkey,
                        add,
                    },
                )
                .sge(result(0)),
                SendWr::new(
                    wr_id(burst, qp, 6),
                    SendOp::CmpSwap {
                        remote_addr: word,
                        rkey,
                        compare: start + add,
                        swap,
                    },
                )
                .sge(result(1)),
            ];
            for k in send_order(qp) {
                g.post_send(qpn, &wrs[k as usize]).map_err(v("POST_SEND"))?;
            }
        }
    }
    a.ring_held_doorbells().map_err(v("doorbells"))?;
    b.ring_held_doorbells().map_err(v("doorbells"))
}

/// What a completion of WR `k` must look like.
fn expected(k: u64, size: u32, imm_of: impl Fn(u32) -> u32) -> (WcOpcode, Option<u32>, u32) {
    match k {
        0 | 1 => (WcOpcode::Send, None, size),
        2 | 3 => (WcOpcode::RdmaWrite, None, size),
        4 => (WcOpcode::RdmaRead, None, size),
        5 => (WcOpcode::FetchAdd, None, 8),
        6 => (WcOpcode::CmpSwap, None, 8),
        8 => (WcOpcode::Recv, None, size),
        9 => (WcOpcode::Recv, Some(imm_of(1)), size),
        _ => (WcOpcode::RecvRdmaWithImm, Some(imm_of(3)), size),
    }
}

/// Polls until every WR of `burst` on this side completed; each must be there exactly once,
/// successful and as posted.
fn collect(g: &mut GuestContext, me: &Side, dir: u32, burst: u32) -> Result<(), String> {
    let mut got: Vec<WorkCompletion> = Vec::new();
    let want = (SENDS + RECVS) as usize * me.qpns.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < want {
        let before = got.len();
        g.poll_cq(me.cq, want - got.len(), &mut got)
            .map_err(v("POLL_CQ"))?;
        if got.len() == before {
            if Instant::now() > deadline {
                return Err(format!(
                    "side {dir}, burst {burst}: {} of {want} completions after 120 s",
                    got.len()
                ));
            }
            std::thread::yield_now();
        }
    }
    let index: HashMap<Qpn, usize> = me.qpns.iter().enumerate().map(|(i, q)| (*q, i)).collect();
    let mut seen = std::collections::HashSet::new();
    for wc in &got {
        if wc.status != WcStatus::Success {
            return Err(format!("side {dir}: an error completion: {wc:?}"));
        }
        let (b, qp, k) = (
            (wc.wr_id >> 40) as u32,
            ((wc.wr_id >> 8) & 0xffff_ffff) as usize,
            wc.wr_id & 0xff,
        );
        if b != burst || index.get(&wc.qpn) != Some(&qp) || !seen.insert(wc.wr_id) {
            return Err(format!(
                "side {dir}, burst {burst}: unexpected or duplicate completion {wc:?}"
            ));
        }
        // The immediates come from the other side.
        let (op, imm_want, len) = expected(k, me.size, |kk| imm(burst, qp, 1 - dir, kk));
        let len_ok = k < 8 || wc.byte_len == len;
        if wc.opcode != op || (k >= 8 && wc.imm != imm_want) || !len_ok {
            return Err(format!(
                "side {dir}: completion {wc:?} is not what WR {k} of QP {qp} should give"
            ));
        }
    }
    Ok(())
}

/// Compares every byte this side received, read back and got from its atomics in `burst`.
fn verify_data(g: &mut GuestContext, me: &Side, dir: u32, burst: u32) -> Result<(), String> {
    let size = me.size as usize;
    for qp in 0..me.qpns.len() {
        let theirs = pattern(burst, qp, 1 - dir, me.size);
        for (k, what) in [
            (0, "SEND"),
            (1, "SEND_WITH_IMM"),
            (2, "WRITE"),
            (3, "WRITE_WITH_IMM"),
        ] {
            let got = g.read_buf(me.landing(qp, k), size).map_err(v("read"))?;
            if got != theirs {
                return Err(format!("side {dir}, QP {qp}: the {what} data differs"));
            }
        }
        if g.read_buf(me.read_back(qp), size).map_err(v("read"))? != theirs {
            return Err(format!("side {dir}, QP {qp}: the READ returned other data"));
        }
        let word = |g: &mut GuestContext, at| -> Result<u64, String> {
            let b = g.read_buf(at, 8).map_err(v("read"))?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        // My atomics on the other side's word: FETCH_ADD saw the start, CMP_SWAP saw
        // start + add — an atomic executed twice would show here.
        let (start, add, _) = atomics(burst, qp, dir);
        let (fa, cs) = (
            word(g, me.atomic_result(qp, 0))?,
            word(g, me.atomic_result(qp, 1))?,
        );
        if fa != start || cs != start + add {
            return Err(format!(
                "side {dir}, QP {qp}: FETCH_ADD returned {fa:#x} (want {start:#x}), CMP_SWAP {cs:#x} (want {:#x})",
                start + add
            ));
        }
        // The other side's atomics on my word: swapped exactly once.
        let (_, _, swapped) = atomics(burst, qp, 1 - dir);
        let w = word(g, me.atomic_word(qp))?;
        if w != swapped {
            return Err(format!(
                "side {dir}, QP {qp}: the atomic word is {w:#x}, want {swapped:#x}"
            ));
        }
    }
    Ok(())
}

/// A whole burst: post, wait for every completion on both sides, compare every byte.
fn burst(
    a: &mut GuestContext,
    sa: &Side,
    b: &mut GuestContext,
    sb: &Side,
    n: u32,
) -> Result<(), String> {
    post_burst(a, sa, b, sb, n)?;
    collect(a, sa, 0, n)?;
    collect(b, sb, 1, n)?;
    verify_data(a, sa, 0, n)?;
    verify_data(b, sb, 1, n)
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
pub fn run(o: &Options) -> Result<String, String> {
    if o.qps == 0 || o.msg_size == 0 || o.msg_size > 1 << 20 {
        return Err("--qps must be at least 1 and --size between 1 and 1048576".into());
    }
    let cfg = DriverConfig {
        mem_size: guest_ram(o.qps, o.msg_size),
        ..DriverConfig::small()
    };
    let connect_guest = |p: &PathBuf| {
        GuestContext::connect(p, &cfg).map_err(|e| format!("guest on {}: {e}", p.display()))
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
    burst(&mut a, &sa, &mut b, &sb, n).map_err(|e| format!("before the migration: {e}"))?;
    n += 1;

    let mut m = Migration::begin(a.driver_mut(), &o.dst).map_err(v("migration begin"))?;
    for _ in 0..o.rounds {
        burst(&mut a, &sa, &mut b, &sb, n).map_err(|e| format!("during pre-copy: {e}"))?;
        n += 1;
        m.round(a.driver()).map_err(v("pre-copy round"))?;
    }
    let hook_took = Arc::new(Mutex::new(None));
    if let Some(cmd) = o.hook.clone() {
        let took = hook_took.clone();
        let (ip, mac) = (
            ga.to_ipv4().map(std::net::Ipv4Addr::from),
            a.driver().config().mac,
        );
        m.between = Some(Box::new(move || {
            let t = Instant::now();
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &cmd]).env("VHCA_MAC", mac.to_string());
            if let Some(ip) = ip {
                c.env("VHCA_IP", ip.to_string());
            }
            let st = c.status().map_err(|e| format!("running `{cmd}`: {e}"))?;
            *took.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.elapsed());
            if st.success() {
                Ok(())
            } else {
                Err(format!("`{cmd}` exited with {st}"))
            }
        }));
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
        Err(e) => return Err(format!("migration finish: {e}")),
    };
    let now_at = if aborted.is_some() { &o.src } else { &o.dst };
    collect(&mut a, &sa, 0, stop_burst)
        .map_err(|e| format!("the burst in flight at the stop: {e}"))?;
    collect(&mut b, &sb, 1, stop_burst)
        .map_err(|e| format!("the burst in flight at the stop: {e}"))?;
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
    burst(&mut a, &sa, &mut b, &sb, n).map_err(|e| format!("after the migration: {e}"))?;
    let mut extra = Vec::new();
    a.poll_cq(sa.cq, usize::MAX, &mut extra)
        .map_err(v("POLL_CQ"))?;
    b.poll_cq(sb.cq, usize::MAX, &mut extra)
        .map_err(v("POLL_CQ"))?;
    if !extra.is_empty() {
        return Err(format!("completions nobody asked for: {extra:?}"));
    }
    let hook = match *hook_took.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(d) => format!("{d:?}"),
        None => "none".into(),
    };
    if let Some(cause) = aborted {
        return Err(format!(
            "migration failed ({cause}); the source VF resumed and completed every WR in flight \
             and another burst of every opcode, data checked (in flight at the stop: {in_flight}; \
             {recovery}; stall {stall:?})"
        ));
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
