//! A hostile guest: the fuzzer's bytes are a program of control commands, WQEs, doorbells and
//! raw guest-memory writes that one VF's driver runs against a live VF (the device plus the
//! vhost port layer, in process, no virtqueues). Two other VFs on the same in-process switch
//! run an RC ping-pong between themselves throughout.
//!
//! The program can build real objects (PDs, MRs over page lists, CQ rings, RC and UD QPs),
//! connect its RC QPs to each other or aim them at the victims' GIDs and QPNs, post well-formed
//! and malformed WQEs, ring doorbells that run ahead or backwards, consume and arm CQs, destroy
//! things under traffic and let time run (retries, timeouts).
//!
//! Properties: nothing panics; every victim ping-pong round completes successfully with the
//! bytes that were sent, whatever the hostile VF did before it.

mod keys;

use std::sync::Arc;
use vhca_device::{
    Access, AhAttr, AhHandle, CqHandle, Gid, GuestMemory, Mac, MemKey, Mtu, Nanos, Psn, QpAttr,
    QpAttrMask as M, QpCap, QpInitAttr, QpState, QpType, Qpn, RecvWr, SendFlags, SendOp, SendWr,
    Sge, SharedMemory, UdDest, VecMemory, VfIdentity, WcOpcode, WcStatus, WorkCompletion,
};
use vhca_vhost::fabric::SwitchFabric;
use vhca_vhost::pf::PfState;
use vhca_vhost::port::VfPort;
use vhca_vhost::protocol::command::{body, Command, Response, Status};
use vhca_vhost::protocol::doorbell::Doorbell;
use vhca_vhost::protocol::ring::{self, Ring};

/// The hostile VF's guest memory; its first `DATA` bytes are its data buffer.
const H_MEM: u64 = 1 << 20;
const DATA: u64 = 64 * 1024;
/// Each victim's memory: message buffer at 0, receive buffer at `V_RECV`.
const V_MEM: usize = 64 * 1024;
const V_RECV: u64 = 32 * 1024;
const V_MSG: usize = 512;
/// Operations per program, and how often the victims check their traffic.
const MAX_STEPS: usize = 400;
const VICTIM_EVERY: usize = 16;
/// Pump rounds a victim round may take (100 µs of device time each).
const VICTIM_ROUNDS: usize = 20_000;
const HOSTILE: usize = 0;
const V1: usize = 1;
const V2: usize = 2;

const FULL: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ)
    .union(Access::REMOTE_ATOMIC);

/// The program: bytes read front to back; past the end every read is 0 and `done` is set.
struct Prog<'a> {
    d: &'a [u8],
    done: bool,
}

impl Prog<'_> {
    fn u8(&mut self) -> u8 {
        match self.d.split_first() {
            Some((&b, rest)) => {
                self.d = rest;
                b
            }
            None => {
                self.done = true;
                0
            }
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    /// One of `v`, or (rarely, or when `v` is empty) a value of the program's choosing.
    fn pick(&mut self, v: &[u32]) -> u32 {
        let b = self.u8();
        if v.is_empty() || b == 0xff {
            self.u32()
        } else {
            v[usize::from(b) % v.len()]
        }
    }
}

#[derive(Clone, Copy)]
struct HQp {
    qpn: u32,
    ud: bool,
    cap: QpCap,
    sq: Ring,
    sq_pi: u32,
    rq: Ring,
    rq_pi: u32,
}

#[derive(Clone, Copy)]
struct HCq {
    cqn: u32,
    ring: Ring,
    ci: u32,
}

/// One victim side: an RC QP connected to the other victim.
struct Victim {
    mem: Arc<VecMemory>,
    cq: CqHandle,
    qpn: Qpn,
    key: MemKey,
}

struct World {
    pf: PfState,
    now: Nanos,
    hmem: SharedMemory,
    /// Bump allocator for rings and page lists in the hostile memory (wraps around).
    next: u64,
    pds: Vec<u32>,
    keys: Vec<u32>,
    /// Windows and fast-register MRs (their keys are in `keys` too).
    mws: Vec<u32>,
    frmrs: Vec<u32>,
    cqs: Vec<HCq>,
    qps: Vec<HQp>,
    ahs: Vec<u32>,
    victims: [Victim; 2],
    round: u32,
}

fn identity(i: u8) -> VfIdentity {
    VfIdentity::new(Mac([2, 0, 0, 0, 0, i + 1]), [10, 0, 0, i + 1])
}

fn victim(port: &mut VfPort, mem: Arc<VecMemory>) -> Victim {
    let vf = &mut port.vf;
    let pd = vf.alloc_pd().expect("victim PD");
    let cq = vf.create_cq(64).expect("victim CQ");
    let qpn = vf
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
            sq_sig_all: false,
        })
        .expect("victim QP");
    let key = vf.reg_mr(pd, 0, V_MEM as u64, FULL).expect("victim MR");
    Victim { mem, cq, qpn, key }
}

/// RESET → INIT → RTR → RTS towards (`gid`, `dest`), as ibv_rc_pingpong does it.
fn rc_attrs(gid: Gid, dest: u32, rq_psn: u32, sq_psn: u32) -> [(QpAttr, M); 3] {
    let init = QpAttr {
        qp_state: QpState::Init,
        port_num: 1,
        qp_access_flags: FULL,
        ..QpAttr::default()
    };
    let mut rtr = QpAttr {
        qp_state: QpState::Rtr,
        path_mtu: Mtu::Mtu1024,
        dest_qp_num: Qpn(dest),
        rq_psn: Psn(rq_psn & 0xff_ffff),
        max_dest_rd_atomic: 4,
        min_rnr_timer: 1,
        ..QpAttr::default()
    };
    rtr.ah_attr = AhAttr {
        dgid: gid,
        hop_limit: 1,
        ..AhAttr::default()
    };
    let mut rts = rtr;
    rts.qp_state = QpState::Rts;
    rts.timeout = 10;
    rts.retry_cnt = 7;
    rts.rnr_retry = 7;
    rts.sq_psn = Psn(sq_psn & 0xff_ffff);
    rts.max_rd_atomic = 4;
    [
        (init, M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS),
        (
            rtr,
            M::STATE
                | M::AV
                | M::PATH_MTU
                | M::DEST_QPN
                | M::RQ_PSN
                | M::MAX_DEST_RD_ATOMIC
                | M::MIN_RNR_TIMER,
        ),
        (
            rts,
            M::STATE | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::SQ_PSN | M::MAX_QP_RD_ATOMIC,
        ),
    ]
}

impl World {
    fn new() -> World {
        let hmem = VecMemory::shared(H_MEM as usize);
        let vm: [Arc<VecMemory>; 2] = [
            Arc::new(VecMemory::new(V_MEM)),
            Arc::new(VecMemory::new(V_MEM)),
        ];
        let mut ports = vec![VfPort::new(identity(0), hmem.clone())];
        for (i, m) in vm.iter().enumerate() {
            ports.push(VfPort::new(identity(i as u8 + 1), m.clone()));
        }
        let v1 = victim(&mut ports[V1], vm[0].clone());
        let v2 = victim(&mut ports[V2], vm[1].clone());
        for (me, peer, p) in [(V1, &v2, 0x10u32), (V2, &v1, 0x20)] {
            let gid = ports[if me == V1 { V2 } else { V1 }].identity().gid;
            let qpn = if me == V1 { v1.qpn } else { v2.qpn };
            for (a, m) in rc_attrs(gid, peer.qpn.0, 0x30 - p, p) {
                ports[me].vf.modify_qp(qpn, &a, m).expect("victim connect");
            }
        }
        World {
            pf: PfState::new(ports, Box::new(SwitchFabric::ideal())),
            now: Nanos(1_000_000),
            hmem,
            next: DATA,
            pds: Vec::new(),
            keys: Vec::new(),
            mws: Vec::new(),
            frmrs: Vec::new(),
            cqs: Vec::new(),
            qps: Vec::new(),
            ahs: Vec::new(),
            victims: [v1, v2],
            round: 0,
        }
    }

    fn hostile(&mut self) -> &mut VfPort {
        &mut self.pf.ports[HOSTILE]
    }

    fn gid(&self, i: usize) -> Gid {
        self.pf.ports[i].identity().gid
    }

    /// `len` bytes of hostile memory, 64-byte aligned, wrapping around when it runs out.
    fn alloc(&mut self, len: u64) -> u64 {
        let len = (len + 63) & !63;
        if len > H_MEM - DATA {
            return DATA;
        }
        if self.next + len > H_MEM {
            self.next = DATA;
        }
        let a = self.next;
        self.next += len;
        a
    }

    fn exec(&mut self, c: &Command) -> Response {
        let r = self.hostile().execute(&c.encode());
        self.hostile().drain_completions();
        r
    }

    /// Moves packets, fires due timers, moves completions into rings and drops the events.
    fn pump(&mut self) {
        let mut touched = [false; 3];
        self.pf.run_timers(self.now, &mut touched);
        self.pf.pump(self.now, &mut touched);
        for p in self.pf.ports.iter_mut() {
            p.drain_completions();
            while p.pop_event().is_some() {}
        }
    }

    fn gid_pick(&mut self, p: &mut Prog<'_>) -> Gid {
        match p.u8() % 5 {
            0 | 1 => self.gid(HOSTILE),
            2 => self.gid(V1),
            3 => self.gid(V2),
            _ => Gid(p
                .u64()
                .to_le_bytes()
                .repeat(2)
                .try_into()
                .unwrap_or_default()),
        }
    }

    fn qpn_pick(&mut self, p: &mut Prog<'_>) -> u32 {
        let mut known: Vec<u32> = self.qps.iter().map(|q| q.qpn).collect();
        known.extend(self.victims.iter().map(|v| v.qpn.0));
        p.pick(&known)
    }

    fn step(&mut self, p: &mut Prog<'_>) {
        match p.u8() % 16 {
            0 => {
                let n = usize::from(p.u8() % 112);
                let raw = p.bytes(n);
                let _ = self.hostile().execute(&raw);
            }
            1 => {
                let r = self.exec(&Command::CreatePd);
                if let (Status::Ok, Ok(pd)) = (r.status, body::read_u32(&r.body)) {
                    self.pds.push(pd);
                }
            }
            2 => self.reg_mr(p),
            3 => {
                let depth = 1u32 << (p.u8() % 8);
                let ring_gpa = self.alloc(u64::from(depth) * ring::CQE_SIZE as u64);
                let r = self.exec(&Command::CreateCq { depth, ring_gpa });
                if let (Status::Ok, Ok(cqn)) = (r.status, body::read_u32(&r.body)) {
                    if let Ok(ring) = Ring::new(ring_gpa, depth, ring::CQE_SIZE as u32) {
                        self.cqs.push(HCq { cqn, ring, ci: 0 });
                    }
                }
            }
            4 => self.create_qp(p),
            5 => {
                let qpn = self.qpn_pick(p);
                let mut a = QpAttr {
                    qp_state: [
                        QpState::Reset,
                        QpState::Init,
                        QpState::Rtr,
                        QpState::Rts,
                        QpState::Sqd,
                        QpState::Err,
                    ][usize::from(p.u8()) % 6],
                    dest_qp_num: Qpn(self.qpn_pick(p) & 0xff_ffff),
                    qp_access_flags: Access::from_bits_truncate(u32::from(p.u8())),
                    sq_psn: Psn(p.u32() & 0xff_ffff),
                    rq_psn: Psn(p.u32() & 0xff_ffff),
                    timeout: p.u8() % 32,
                    retry_cnt: p.u8() % 8,
                    rnr_retry: p.u8() % 8,
                    qkey: p.u32(),
                    ..QpAttr::default()
                };
                a.ah_attr.dgid = self.gid_pick(p);
                let mask = p.u32();
                let _ = self.exec(&Command::ModifyQp { qpn, mask, attr: a });
            }
            6 => self.connect(p),
            7 => self.post_send(p),
            8 => self.post_recv(p),
            9 => {
                let gpa = u64::from(p.u32()) % H_MEM;
                let n = usize::from(p.u8() % 80);
                let b = p.bytes(n);
                let _ = self.hmem.write(gpa, &b);
            }
            10 => {
                let raw = p.bytes(16);
                if let Ok(db) = Doorbell::decode(&raw) {
                    self.hostile().doorbell(db);
                }
            }
            12 => self.key_command(p),
            11 => {
                self.now = Nanos(self.now.0 + u64::from(p.u16()) * 10_000);
                self.pump();
                self.consume(p);
            }
            13 => self.destroy(p),
            14 => {
                let pd = p.pick(&self.pds);
                let attr = AhAttr {
                    dgid: self.gid_pick(p),
                    hop_limit: p.u8(),
                    ..AhAttr::default()
                };
                let r = self.exec(&Command::CreateAh { pd, attr });
                if let (Status::Ok, Ok(ah)) = (r.status, body::read_u32(&r.body)) {
                    self.ahs.push(ah);
                }
            }
            _ => {
                // Resize a CQ under traffic.
                let cqns: Vec<u32> = self.cqs.iter().map(|c| c.cqn).collect();
                let cqn = p.pick(&cqns);
                let depth = 1u32 << (p.u8() % 8);
                let ring_gpa = self.alloc(u64::from(depth) * ring::CQE_SIZE as u64);
                let r = self.exec(&Command::ResizeCq {
                    cqn,
                    depth,
                    ring_gpa,
                });
                if r.status == Status::Ok {
                    if let Ok(ring) = Ring::new(ring_gpa, depth, ring::CQE_SIZE as u32) {
                        self.cqs.retain(|c| c.cqn != cqn);
                        // Carried-over completions restart at index 0 of the new ring.
                        self.cqs.push(HCq { cqn, ring, ci: 0 });
                    }
                }
            }
        }
    }

    fn reg_mr(&mut self, p: &mut Prog<'_>) {
        let pd = p.pick(&self.pds);
        let npages = 1 + u32::from(p.u8() % 16);
        let wild = p.u8();
        let pages: Vec<u8> = (0..npages)
            .flat_map(|i| {
                let gpa = if wild & 1 == 0 {
                    u64::from(i) * 4096
                } else {
                    u64::from(wild) * 4096 + u64::from(i) * 4096 * u64::from(wild % 3)
                };
                gpa.to_le_bytes()
            })
            .collect();
        let list = self.alloc(pages.len() as u64);
        let _ = self.hmem.write(list, &pages);
        let access = if wild & 2 == 0 {
            // Sometimes windows may be bound in it.
            let mut a = FULL;
            if wild & 16 != 0 {
                a |= Access::MW_BIND;
            }
            a.bits()
        } else {
            u32::from(p.u8())
        };
        let shave = u64::from(p.u8());
        let r = self.exec(&Command::RegMr {
            pd,
            access,
            iova: if wild & 4 == 0 { 0 } else { p.u64() },
            length: (u64::from(npages) * 4096).saturating_sub(shave),
            page_shift: if wild & 8 == 0 { 12 } else { p.u8() },
            npages,
            page_list_gpa: list,
        });
        if let (Status::Ok, Ok(key)) = (r.status, body::read_u32(&r.body)) {
            self.keys.push(key);
        }
    }

    fn create_qp(&mut self, p: &mut Prog<'_>) {
        let ud = p.u8().is_multiple_of(4);
        let cap = QpCap {
            max_send_wr: 1 << (p.u8() % 6),
            max_recv_wr: 1 << (p.u8() % 6),
            max_send_sge: 1 + u32::from(p.u8() % 4),
            max_recv_sge: 1 + u32::from(p.u8() % 4),
            max_inline_data: u32::from(p.u8() % 129),
        };
        let sq_bytes = u64::from(cap.max_send_wr)
            * u64::from(ring::send_stride(cap.max_send_sge, cap.max_inline_data));
        let rq_bytes = u64::from(cap.max_recv_wr) * u64::from(ring::recv_stride(cap.max_recv_sge));
        let sq_ring_gpa = self.alloc(sq_bytes);
        let rq_ring_gpa = self.alloc(rq_bytes);
        let cqns: Vec<u32> = self.cqs.iter().map(|c| c.cqn).collect();
        let r = self.exec(&Command::CreateQp {
            qp_type: if ud { 4 } else { 2 },
            sq_sig_all: p.u8() & 1 == 1,
            pd: p.pick(&self.pds),
            send_cq: p.pick(&cqns),
            recv_cq: p.pick(&cqns),
            srq: 0,
            cap,
            sq_ring_gpa,
            rq_ring_gpa,
        });
        if r.status != Status::Ok {
            return;
        }
        let Ok((qpn, sq, rq)) = body::read_create_qp(&r.body) else {
            return;
        };
        if let (Ok(sq), Ok(rq)) = (
            Ring::new(sq_ring_gpa, sq.depth, sq.stride),
            Ring::new(rq_ring_gpa, rq.depth, rq.stride),
        ) {
            self.qps.push(HQp {
                qpn,
                ud,
                cap,
                sq,
                sq_pi: 0,
                rq,
                rq_pi: 0,
            });
        }
    }

    /// Connects two hostile RC QPs to each other, or one to a victim's QP, all the way to RTS.
    fn connect(&mut self, p: &mut Prog<'_>) {
        let rc: Vec<u32> = self.qps.iter().filter(|q| !q.ud).map(|q| q.qpn).collect();
        let ud: Vec<u32> = self.qps.iter().filter(|q| q.ud).map(|q| q.qpn).collect();
        if !ud.is_empty() && (rc.is_empty() || p.u8() & 1 == 1) {
            // A UD QP to RTS with the program's Q_Key (the victims' QPs are RC: UD traffic
            // aimed at them must be dropped).
            let qpn = ud[usize::from(p.u8()) % ud.len()];
            let mut a = QpAttr {
                qp_state: QpState::Init,
                port_num: 1,
                qkey: p.u32(),
                ..QpAttr::default()
            };
            let _ = self.exec(&Command::ModifyQp {
                qpn,
                mask: (M::STATE | M::PKEY_INDEX | M::PORT | M::QKEY).bits(),
                attr: a,
            });
            a.qp_state = QpState::Rtr;
            let _ = self.exec(&Command::ModifyQp {
                qpn,
                mask: M::STATE.bits(),
                attr: a,
            });
            a.qp_state = QpState::Rts;
            a.sq_psn = Psn(p.u32() & 0xff_ffff);
            let _ = self.exec(&Command::ModifyQp {
                qpn,
                mask: (M::STATE | M::SQ_PSN).bits(),
                attr: a,
            });
            return;
        }
        if rc.is_empty() {
            return;
        }
        let a = rc[usize::from(p.u8()) % rc.len()];
        let b = rc[usize::from(p.u8()) % rc.len()];
        let psn = p.u32();
        let targets: Vec<(u32, Gid, u32)> = match p.u8() % 4 {
            // At a victim: its QPN and GID (the victims' packets do not come from here).
            0 => vec![(a, self.gid(V1), self.victims[0].qpn.0)],
            1 => vec![(a, self.gid(V2), self.victims[1].qpn.0)],
            _ => {
                let me = self.gid(HOSTILE);
                vec![(a, me, b), (b, me, a)]
            }
        };
        for (qpn, gid, dest) in targets {
            for (attr, mask) in rc_attrs(gid, dest, psn, psn) {
                let _ = self.exec(&Command::ModifyQp {
                    qpn,
                    mask: mask.bits(),
                    attr,
                });
            }
        }
    }

    fn sge(&mut self, p: &mut Prog<'_>) -> Sge {
        Sge {
            addr: u64::from(p.u16()) % DATA,
            len: u32::from(p.u16() % 8192),
            lkey: MemKey(p.pick(&self.keys)),
        }
    }

    fn post_send(&mut self, p: &mut Prog<'_>) {
        if self.qps.is_empty() {
            return;
        }
        let i = usize::from(p.u8()) % self.qps.len();
        let q = self.qps[i];
        let rkey = MemKey(p.pick(&self.keys));
        let remote_addr = (u64::from(p.u16()) % DATA) & !7;
        let op = match p.u8() % 13 {
            0 => SendOp::Send,
            1 => SendOp::SendWithImm { imm: p.u32() },
            2 => SendOp::SendWithInv { rkey },
            3 => SendOp::Write { remote_addr, rkey },
            4 => SendOp::WriteWithImm {
                remote_addr,
                rkey,
                imm: p.u32(),
            },
            5 => SendOp::Read { remote_addr, rkey },
            6 => SendOp::CmpSwap {
                remote_addr,
                rkey,
                compare: p.u64(),
                swap: p.u64(),
            },
            7 => SendOp::FetchAdd {
                remote_addr,
                rkey,
                add: p.u64(),
            },
            8 => SendOp::LocalInv { key: rkey },
            k => self.key_op(p, k - 9, rkey, remote_addr),
        };
        let flags = SendFlags::from_bits_truncate(u32::from(p.u8()));
        let mut wr = SendWr::new(u64::from(p.u32()), op).flags(flags);
        if flags.contains(SendFlags::INLINE) {
            let n = usize::from(p.u8()) % (q.cap.max_inline_data as usize + 1);
            wr.inline_data = p.bytes(n);
        } else {
            for _ in 0..p.u8() % (q.cap.max_send_sge as u8 + 1) {
                let s = self.sge(p);
                wr.sgl.push(s);
            }
        }
        if q.ud {
            wr.ud = Some(UdDest {
                ah: AhHandle(p.pick(&self.ahs)),
                remote_qpn: Qpn(self.qpn_pick(p)),
                remote_qkey: p.u32(),
            });
        }
        let wqe = ring::encode_send(&wr, q.sq.stride);
        let _ = self.hmem.write(q.sq.slot(q.sq_pi), &wqe);
        let pi = match p.u8() {
            0xf0.. => p.u32(),
            _ => q.sq_pi.wrapping_add(1),
        };
        self.qps[i].sq_pi = pi;
        self.hostile().doorbell(Doorbell::Sq { qpn: q.qpn, pi });
    }

    fn post_recv(&mut self, p: &mut Prog<'_>) {
        if self.qps.is_empty() {
            return;
        }
        let i = usize::from(p.u8()) % self.qps.len();
        let q = self.qps[i];
        let mut wr = RecvWr {
            wr_id: u64::from(p.u32()),
            sgl: Vec::new(),
        };
        for _ in 0..p.u8() % (q.cap.max_recv_sge as u8 + 1) {
            let s = self.sge(p);
            wr.sgl.push(s);
        }
        let wqe = ring::encode_recv(&wr, q.rq.stride);
        let _ = self.hmem.write(q.rq.slot(q.rq_pi), &wqe);
        let pi = q.rq_pi.wrapping_add(1);
        self.qps[i].rq_pi = pi;
        self.hostile().doorbell(Doorbell::Rq { qpn: q.qpn, pi });
    }

    /// Reads the CQEs the device wrote, says how far it consumed, maybe re-arms.
    fn consume(&mut self, p: &mut Prog<'_>) {
        let arm = p.u8();
        for i in 0..self.cqs.len() {
            let mut c = self.cqs[i];
            let mut b = [0u8; ring::CQE_SIZE];
            for _ in 0..c.ring.depth {
                if self.hmem.read(c.ring.slot(c.ci), &mut b).is_err() {
                    break;
                }
                match ring::decode_cqe(&b, c.ci, c.ring.depth) {
                    Ok(Some(_)) => c.ci = c.ci.wrapping_add(1),
                    _ => break,
                }
            }
            self.cqs[i] = c;
            self.hostile().doorbell(Doorbell::CqConsumed {
                cqn: c.cqn,
                ci: c.ci,
            });
            if arm & 1 == 1 {
                self.hostile().doorbell(Doorbell::CqArm {
                    cqn: c.cqn,
                    solicited: arm & 2 == 2,
                });
            }
        }
    }

    fn destroy(&mut self, p: &mut Prog<'_>) {
        let c = match p.u8() % 5 {
            0 => Command::DestroyQp {
                qpn: self.qpn_pick(p),
            },
            1 => {
                let cqns: Vec<u32> = self.cqs.iter().map(|c| c.cqn).collect();
                Command::DestroyCq { cqn: p.pick(&cqns) }
            }
            2 => Command::DeregMr {
                key: p.pick(&self.keys),
            },
            3 => Command::DestroyPd {
                pd: p.pick(&self.pds),
            },
            _ => Command::DestroyAh {
                ah: p.pick(&self.ahs),
            },
        };
        let r = self.exec(&c);
        if r.status == Status::Ok {
            match c {
                Command::DestroyQp { qpn } => self.qps.retain(|q| q.qpn != qpn),
                Command::DestroyCq { cqn } => self.cqs.retain(|q| q.cqn != cqn),
                Command::DeregMr { key } => self.keys.retain(|&k| k != key),
                Command::DestroyPd { pd } => self.pds.retain(|&x| x != pd),
                Command::DestroyAh { ah } => self.ahs.retain(|&x| x != ah),
                _ => {}
            }
        }
    }

    /// One message from one victim to the other; panics unless it arrives intact and both
    /// sides complete successfully.
    fn victim_round(&mut self) {
        self.round += 1;
        let (from, to) = if self.round.is_multiple_of(2) {
            (0, 1)
        } else {
            (1, 0)
        };
        let msg: Vec<u8> = (0..V_MSG)
            .map(|i| (i as u32).wrapping_mul(31).wrapping_add(self.round) as u8)
            .collect();
        self.victims[from]
            .mem
            .write(0, &msg)
            .expect("victim memory");
        let (tv, fv) = (&self.victims[to], &self.victims[from]);
        let (t_qpn, t_key, f_qpn, f_key) = (tv.qpn, tv.key, fv.qpn, fv.key);
        self.pf.ports[1 + to]
            .vf
            .post_recv(
                t_qpn,
                RecvWr {
                    wr_id: u64::from(self.round),
                    sgl: vec![Sge {
                        addr: V_RECV,
                        len: V_MSG as u32,
                        lkey: t_key,
                    }],
                },
            )
            .expect("victim post_recv");
        let wr = SendWr::new(u64::from(self.round), SendOp::Send)
            .flags(SendFlags::SIGNALED)
            .sge(Sge {
                addr: 0,
                len: V_MSG as u32,
                lkey: f_key,
            });
        self.pf.ports[1 + from]
            .vf
            .post_send(f_qpn, &wr)
            .expect("victim post_send");
        let mut got: [Option<WorkCompletion>; 2] = [None, None];
        for _ in 0..VICTIM_ROUNDS {
            self.pump();
            for (side, slot) in got.iter_mut().enumerate() {
                if slot.is_none() {
                    let cq = self.victims[side].cq;
                    let mut out = Vec::new();
                    let _ = self.pf.ports[1 + side].vf.poll_cq(cq, 1, &mut out);
                    *slot = out.pop();
                }
            }
            if got.iter().all(Option::is_some) {
                break;
            }
            self.now = Nanos(self.now.0 + 100_000);
        }
        let [Some(a), Some(b)] = got else {
            panic!("victim round {}: completions missing: {got:?}", self.round);
        };
        let (s, r) = if from == 0 { (a, b) } else { (b, a) };
        assert_eq!(s.status, WcStatus::Success, "victim send: {s:?}");
        assert_eq!(r.status, WcStatus::Success, "victim receive: {r:?}");
        assert_eq!(r.opcode, WcOpcode::Recv);
        assert_eq!(r.byte_len, V_MSG as u32);
        let mut back = vec![0u8; V_MSG];
        self.victims[to]
            .mem
            .read(V_RECV, &mut back)
            .expect("victim memory");
        assert_eq!(back, msg, "victim round {}: data", self.round);
    }
}

fn run(data: &[u8]) -> World {
    let mut w = World::new();
    let mut p = Prog {
        d: data,
        done: false,
    };
    w.victim_round();
    for step in 1..=MAX_STEPS {
        if p.d.is_empty() {
            break;
        }
        w.step(&mut p);
        if p.done {
            break;
        }
        if step % VICTIM_EVERY == 0 {
            w.victim_round();
        }
    }
    w.victim_round();
    w
}

pub fn check(data: &[u8]) {
    run(data);
}

/// What a program made the hostile VF do (device and port counters, QPs by state): for
/// checking that seeds reach connected QPs moving traffic.
pub fn summary(data: &[u8]) -> String {
    let w = run(data);
    let h = &w.pf.ports[HOSTILE];
    let states: Vec<String> = h
        .qp_infos()
        .iter()
        .map(|q| format!("{}:{}", q.qp_type, q.state))
        .collect();
    let bound = w
        .mws
        .iter()
        .filter(|&&k| h.vf.mw(MemKey(k)).is_some_and(|m| m.binding.is_some()))
        .count();
    // A fast-register MR's key byte changes with each REG_MR: any of them, valid.
    let registered = w
        .frmrs
        .iter()
        .filter(|&&k| {
            (0..=255u8).any(|b| {
                h.vf.mr(MemKey::from_parts(MemKey(k).index(), b))
                    .is_some_and(|m| m.valid)
            })
        })
        .count();
    format!(
        "device {:?}\nport {:?}\nqps {states:?}\nwindows bound {bound} of {}, fast-register MRs registered {registered} of {}",
        h.vf.counters(),
        h.counters,
        w.mws.len(),
        w.frmrs.len()
    )
}

/// The hostile VF's state after `data` ran (what a migration of it would carry): a
/// checkpoint in each codec and a vhost-user device-state blob.
pub fn saved_state(data: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let w = run(data);
    let h = &w.pf.ports[HOSTILE];
    let now = w.now;
    (
        vhca_device::checkpoint::save(&h.vf, now, vhca_device::checkpoint::codec::BINARY),
        vhca_device::checkpoint::save(&h.vf, now, vhca_device::checkpoint::codec::JSON),
        vhca_vhost::device_state::encode(&vhca_vhost::device_state::DeviceStateV1 {
            acked_features: vhca_vhost::protocol::features::DEVICE,
            saved_at_ns: now.0,
            port: h.save_state(now),
        }),
    )
}

/// Writes programs in the harness's encoding: the seeds of `hostile_guest`.
#[derive(Default)]
pub struct ProgramBuilder(pub Vec<u8>);

impl ProgramBuilder {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.b(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.b(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.b(&v.to_le_bytes())
    }
    pub fn create_pd(&mut self) -> &mut Self {
        self.b(&[1])
    }
    /// 64 KiB at IOVA 0 over the identity page list, full access, on PD `pd`.
    pub fn reg_mr(&mut self, pd: u8) -> &mut Self {
        self.b(&[2, pd, 15, 0, 0])
    }
    /// A CQ of 2^`log` entries.
    pub fn create_cq(&mut self, log: u8) -> &mut Self {
        self.b(&[3, log])
    }
    /// An RC (or UD) QP of 16 WRs each way, one SGE, 64 inline bytes, on PD 0 and CQ `cq`.
    pub fn create_qp(&mut self, ud: bool, cq: u8) -> &mut Self {
        self.b(&[4, if ud { 0 } else { 1 }, 4, 4, 0, 0, 64, 0, 0, cq, cq])
    }
    /// Hostile QPs `a` and `b` (indices) connected to each other, or `a` aimed at a victim
    /// (`target` 0 or 1).
    pub fn connect(&mut self, a: u8, b: u8, psn: u32, target: u8) -> &mut Self {
        self.b(&[6, a, b]).u32(psn).b(&[target])
    }
    /// The program's only UD QP to RTS with Q_Key 0x11111111 (no RC QPs exist yet).
    pub fn connect_ud(&mut self) -> &mut Self {
        self.b(&[6, 0]).u32(0x1111_1111).u32(0)
    }
    /// One receive WQE of `len` bytes at `addr` on QP `qp`.
    pub fn post_recv(&mut self, qp: u8, addr: u16, len: u16) -> &mut Self {
        self.b(&[8, qp]).u32(7).b(&[1]).u16(addr).u16(len).b(&[0])
    }
    /// A signaled send WQE of opcode `op` (0 SEND … 8 LOCAL_INV) from `addr`/`len`, remote
    /// address `raddr`, through the first MR's keys.
    pub fn post_send(&mut self, qp: u8, op: u8, addr: u16, len: u16, raddr: u16) -> &mut Self {
        self.b(&[7, qp, 0]).u16(raddr).b(&[op]);
        match op {
            1 | 4 => {
                self.u32(0xdead_beef);
            }
            6 => {
                self.u64(0).u64(42);
            }
            7 => {
                self.u64(1);
            }
            _ => {}
        }
        self.b(&[2])
            .u32(u32::from(op))
            .b(&[1])
            .u16(addr)
            .u16(len)
            .b(&[0, 0])
    }
    /// Like `reg_mr`, and windows may be bound in it (MW_BIND).
    pub fn reg_mr_bindable(&mut self, pd: u8) -> &mut Self {
        self.b(&[2, pd, 15, 16, 0])
    }
    /// A memory window (type 2, or type 1) on the first PD.
    pub fn alloc_mw(&mut self, type2: bool) -> &mut Self {
        self.b(&[12, 0, 0, if type2 { 0 } else { 4 }])
    }
    /// A fast-register MR of up to 8 pages on the first PD.
    pub fn alloc_mr(&mut self) -> &mut Self {
        self.b(&[12, 0, 2, 7])
    }
    /// A signaled WQE of opcode `op` 9–12 on QP `qp`: BIND_MW of the first window over
    /// `[addr, addr + len)` of the first MR with every remote right (the next key byte);
    /// REG_MR of the first fast-register MR over the page at `addr` (rounded down), full
    /// access; ATOMIC_WRITE at `raddr`; FLUSH of `len` bytes at `raddr`, global, range. The
    /// R_Key (ATOMIC_WRITE, FLUSH) is the first MR's.
    pub fn post_key_op(&mut self, qp: u8, op: u8, addr: u16, len: u16, raddr: u16) -> &mut Self {
        self.b(&[7, qp, 0]).u16(raddr).b(&[op]);
        match op {
            9 => {
                self.b(&[0, 0, 0]).u16(addr).b(&[0]).u16(len).b(&[1]);
            }
            10 => {
                self.b(&[0, 0, 0, 0]).u16(addr / 4096).b(&[0, 0, 0, 2]);
            }
            11 => {
                self.u64(0x1122_3344_5566_7788);
            }
            _ => {
                self.u16(len).b(&[1, 0]);
            }
        }
        self.b(&[2]).u32(u32::from(op)).b(&[0, 0])
    }
    /// A signaled UD SEND of `len` bytes through the first AH to victim `victim`'s QPN (whose
    /// QP is RC: the victim must drop it) or, with `victim` 2, to hostile QP 0.
    pub fn post_send_ud(&mut self, qp: u8, len: u16, victim: u8) -> &mut Self {
        // pick(known QPNs): the hostile QPs come first, then the victims'.
        let dest = if victim < 2 { 1 + victim } else { 0 };
        self.b(&[7, qp, 0])
            .u16(0)
            .b(&[0, 2])
            .u32(1)
            .b(&[1])
            .u16(0)
            .u16(len)
            .b(&[0]);
        self.b(&[0, dest]).u32(0x1111_1111).b(&[0])
    }
    /// Lets `us` × 10 µs pass, then consumes every CQ and re-arms it.
    pub fn pump(&mut self, us: u16) -> &mut Self {
        self.b(&[11]).u16(us).b(&[1])
    }
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.b(bytes)
    }
}
