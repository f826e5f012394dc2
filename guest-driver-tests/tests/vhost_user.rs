//! End to end through vhost-user: a real `vhca serve --vfs 2` process, a guest driver on each
//! of vf0 and vf1 (guest memory, virtqueues and all), and the same verbs programs that run in
//! process (tests/in_process.rs). Then the server's robustness against guests: disconnects and
//! hostile input from the guest side (docs/device-protocol.md §10), each followed by a
//! ping-pong on both VFs to show nothing else broke.

use std::time::Duration;
use vhca_device::{Mtu, Psn, QpState, Verbs, VerbsError, WcStatus};
use vhca_guest::context::status_to_error;
use vhca_guest::programs::{
    rc_endpoint, rc_every_opcode, rc_invalidate, rc_pair, rc_pingpong, rc_placement, ud_exchange,
    wait, Endpoint,
};
use vhca_guest::serve::ServeProcess;
use vhca_guest::virtq::{Buf, RawDesc, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use vhca_guest::{DriverConfig, DriverError, GuestContext};
use vhca_vhost::protocol::command::{opcode, Command, Response, Status};
use vhca_vhost::protocol::doorbell::{Doorbell, Event};

const READY: Duration = Duration::from_secs(60);

fn server() -> ServeProcess {
    ServeProcess::start(2, READY).expect("vhca serve starts")
}

fn cfg() -> DriverConfig {
    DriverConfig {
        mem_size: 64 << 20,
        command_timeout: Duration::from_secs(5),
        ..DriverConfig::default()
    }
}

fn open(s: &ServeProcess, vf: u16) -> GuestContext {
    GuestContext::connect(s.socket(vf), &cfg()).unwrap_or_else(|e| panic!("connect to vf{vf}: {e}"))
}

fn connected(
    a: &mut GuestContext,
    b: &mut GuestContext,
    len: u64,
    depth: u32,
    mtu: Mtu,
) -> (Endpoint, Endpoint) {
    let (ea, eb) = rc_pair(a, b, len, depth, (Psn(0x123), Psn(0xfffffe)), mtu).unwrap();
    (ea, eb)
}

/// A fresh connection between the two contexts carries a short ping-pong.
fn still_works(a: &mut GuestContext, b: &mut GuestContext) {
    let (ea, eb) = connected(a, b, 1 << 14, 8, Mtu::Mtu1024);
    assert_eq!(rc_pingpong(a, &ea, b, &eb, 512, 10).unwrap(), 2 * 512 * 10);
}

/// The status of a raw command (`Err` when the chain came back without a response).
fn raw_status(ctx: &mut GuestContext, req: &[u8], resp_len: u32) -> Result<Status, u32> {
    let (used, resp) = ctx.driver_mut().execute_raw(req, resp_len).unwrap();
    if used.len < 8 {
        return Err(used.len);
    }
    Ok(Response::decode(&resp).expect("a response header").status)
}

fn cmd_status(ctx: &mut GuestContext, c: Command) -> Status {
    match ctx.driver_mut().execute(&c) {
        Ok(_) => Status::Ok,
        Err(DriverError::Status { status, .. }) => status,
        Err(e) => panic!("{c:?}: {e}"),
    }
}

// ---- the programs of in_process.rs ---------------------------------------------------------

#[test]
fn start_replays_qemus_message_order_and_reads_the_config() {
    let s = server();
    let a = open(&s, 0);
    let b = open(&s, 1);
    let msgs = a.driver().startup_messages();
    let start = [
        "GET_FEATURES",
        "GET_PROTOCOL_FEATURES",
        "SET_PROTOCOL_FEATURES",
    ];
    assert_eq!(&msgs[..3], &start);
    let pos = |m: &str| msgs.iter().position(|x| *x == m).unwrap();
    assert!(pos("SET_OWNER") < pos("SET_FEATURES"));
    let mem_table = pos_or(msgs, "ADD_MEM_REG").min(pos_or(msgs, "SET_MEM_TABLE"));
    assert!(pos("SET_FEATURES") < mem_table && mem_table < pos("SET_VRING_NUM"));
    assert_eq!(msgs.last(), Some(&"SET_VRING_ENABLE"));
    assert_eq!(msgs.iter().filter(|m| **m == "SET_VRING_ENABLE").count(), 3);
    let c = a.driver().config();
    assert_eq!(c.version, 1);
    assert_eq!(c.cqe_size, 64);
    assert_eq!(c.port_state, 4);
    assert_ne!(a.gid(), b.gid(), "each VF has its own GID");
    assert_ne!(
        a.driver().acked_features() & vhca_vhost::protocol::features::VERSION_1,
        0
    );
}

fn pos_or(msgs: &[&str], m: &str) -> usize {
    msgs.iter().position(|x| *x == m).unwrap_or(usize::MAX)
}

#[test]
fn rc_pingpong_program_runs_over_vhost_user() {
    let s = server();
    let (mut a, mut b) = (open(&s, 0), open(&s, 1));
    let (ea, eb) = connected(&mut a, &mut b, 1 << 16, 64, Mtu::Mtu1024);
    let moved = rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 50).unwrap();
    assert_eq!(moved, 2 * 4096 * 50);
}

#[test]
fn every_opcode_program_runs_over_vhost_user() {
    let s = server();
    let (mut a, mut b) = (open(&s, 0), open(&s, 1));
    let (ea, eb) = connected(&mut a, &mut b, 1 << 18, 16, Mtu::Mtu4096);
    for size in [0, 1, 4096, 70_000] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, size).unwrap();
    }
    // And the other direction on the same connection.
    for size in [3, 8192] {
        rc_every_opcode(&mut b, &eb, &mut a, &ea, size).unwrap();
    }
}

#[test]
fn windows_and_fast_reg_program_runs_over_vhost_user() {
    let s = server();
    let (mut a, mut b) = (open(&s, 0), open(&s, 1));
    let (ea, eb) = connected(&mut a, &mut b, 1 << 16, 16, Mtu::Mtu1024);
    vhca_guest::programs::windows::rc_windows(&mut a, &ea, &mut b, &eb).unwrap();
    let (qa, _) = a.query_qp(ea.qpn).unwrap();
    assert_eq!(
        qa.qp_state,
        QpState::Err,
        "the refused WRITE ends the connection"
    );
}

#[test]
fn invalidation_opcodes_run_over_vhost_user() {
    let s = server();
    let (mut a, mut b) = (open(&s, 0), open(&s, 1));
    let (ea, eb) = connected(&mut a, &mut b, 1 << 16, 16, Mtu::Mtu1024);
    rc_invalidate(&mut a, &ea, &mut b, &eb).unwrap();
    let (qa, _) = a.query_qp(ea.qpn).unwrap();
    assert_eq!(
        qa.qp_state,
        QpState::Err,
        "a remote access error ends the connection"
    );
    still_works(&mut a, &mut b);
}

#[test]
fn atomic_write_and_flush_run_over_vhost_user() {
    let s = server();
    let (mut a, mut b) = (open(&s, 0), open(&s, 1));
    let (ea, eb) = connected(&mut a, &mut b, 1 << 16, 16, Mtu::Mtu1024);
    rc_placement(&mut a, &ea, &mut b, &eb, 0x0807_0605_0403_0201).unwrap();
    let (qa, _) = a.query_qp(ea.qpn).unwrap();
    assert_eq!(
        qa.qp_state,
        QpState::Err,
        "the misaligned ATOMIC WRITE's NAK ends the connection"
    );
    still_works(&mut a, &mut b);
}

#[test]
fn ud_exchange_runs_over_vhost_user() {
    let s = server();
    let (mut a, mut b) = (open(&s, 0), open(&s, 1));
    for size in [0, 1, 1000, 4000] {
        ud_exchange(&mut a, &mut b, size).unwrap();
    }
}

#[test]
fn event_idx_and_set_mem_table_variants_work() {
    let s = server();
    let c = DriverConfig {
        event_idx: true,
        set_mem_table: true,
        ..cfg()
    };
    let mut a = GuestContext::connect(s.socket(0), &c).unwrap();
    let mut b = GuestContext::connect(s.socket(1), &c).unwrap();
    assert!(a.driver().startup_messages().contains(&"SET_MEM_TABLE"));
    assert_ne!(
        a.driver().acked_features() & vhca_vhost::protocol::features::EVENT_IDX,
        0,
        "the device offers EVENT_IDX"
    );
    let (ea, eb) = connected(&mut a, &mut b, 1 << 16, 32, Mtu::Mtu2048);
    rc_pingpong(&mut a, &ea, &mut b, &eb, 3000, 100).unwrap();
}

#[test]
fn armed_cqs_raise_completion_events() {
    let s = server();
    let (mut a, mut b) = (open(&s, 0), open(&s, 1));
    a.set_poll_mode(vhca_guest::PollMode::Spin);
    b.set_poll_mode(vhca_guest::PollMode::Spin);
    let (ea, eb) = connected(&mut a, &mut b, 1 << 14, 8, Mtu::Mtu1024);
    b.req_notify_cq(eb.cq, false).unwrap();
    assert_eq!(b.completion_events(eb.cq).unwrap(), 0);
    rc_pingpong(&mut a, &ea, &mut b, &eb, 100, 1).unwrap();
    // The event may trail the CQE: wait for it on the eventq.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.completion_events(eb.cq).unwrap() == 0 && std::time::Instant::now() < deadline {
        b.driver_mut()
            .wait_events(Duration::from_millis(100))
            .unwrap();
    }
    assert_eq!(b.completion_events(eb.cq).unwrap(), 1, "one event per arm");
}

#[test]
fn bench_hook_runs_over_vhost_user() {
    let s = server();
    let cfg = vhca_guest::bench::BenchConfig {
        writes: 200,
        round_trips: 100,
        ..Default::default()
    };
    let r = vhca_guest::bench::vhost_user(&s.socket(0), &s.socket(1), &cfg).unwrap();
    assert_eq!(r.write_bytes, 200 * 65536);
    assert!(r.write_bytes_per_sec > 0.0);
    assert!(r.send_latency_median > Duration::ZERO);
    assert!(r.send_latency_median <= r.send_latency_p99);
    eprintln!(
        "vhost-user: 64 KiB WRITE {:.1} MB/s, 64 B SEND latency median {:?} p99 {:?}",
        r.write_bytes_per_sec / 1e6,
        r.send_latency_median,
        r.send_latency_p99
    );
}

// ---- guests that go away -------------------------------------------------------------------

#[test]
fn the_server_survives_a_guest_disconnect_and_accepts_a_new_one() {
    let mut s = server();
    let mut b = open(&s, 1);
    for round in 0..3 {
        let mut a = open(&s, 0);
        let (ea, eb) = connected(&mut a, &mut b, 1 << 16, 16, Mtu::Mtu1024);
        rc_pingpong(&mut a, &ea, &mut b, &eb, 1024, 5).unwrap();
        // Leave work in flight, then vanish: WRITEs posted, receives posted, CQ unpolled.
        for i in 0..8 {
            a.post_send(
                ea.qpn,
                &vhca_device::SendWr::new(
                    i,
                    vhca_device::SendOp::Write {
                        remote_addr: eb.buf,
                        rkey: eb.key,
                    },
                )
                .sge(vhca_device::Sge {
                    addr: ea.buf,
                    len: 4096,
                    lkey: ea.key,
                }),
            )
            .unwrap();
        }
        drop(a);
        assert!(s.running(), "round {round}: the server is still up");
    }
    // A frontend that hangs up in the middle of the handshake.
    {
        use vhost::vhost_user::Frontend;
        use vhost::VhostBackend;
        let f = Frontend::connect(s.socket(0), 3).unwrap();
        f.get_features().unwrap();
        drop(f);
        drop(std::os::unix::net::UnixStream::connect(s.socket(0)).unwrap());
    }
    let mut a = open(&s, 0);
    still_works(&mut a, &mut b);
    assert!(s.running());
}

// ---- hostile guests (docs/device-protocol.md §10) ------------------------------------------

fn hostile_pair(s: &ServeProcess) -> (GuestContext, GuestContext) {
    let (mut a, mut b) = (open(s, 0), open(s, 1));
    a.driver_mut().set_timeout(Duration::from_secs(5));
    still_works(&mut a, &mut b);
    (a, b)
}

/// Posts one hand-made chain on the controlq and waits for it.
fn raw_chain(ctx: &mut GuestContext, descs: &[(u16, RawDesc)], head: u16, owned: Vec<u16>) -> u32 {
    let timeout = ctx.driver().timeout();
    let d = ctx.driver_mut();
    let (q, ram) = d.ctrl_queue();
    for (i, desc) in descs {
        q.write_desc(ram, *i, *desc).unwrap();
    }
    q.publish(ram, head, owned).unwrap();
    q.kick().unwrap();
    let u = q.wait_used(ram, timeout).unwrap();
    assert_eq!(u.head, head);
    u.len
}

#[test]
fn descriptors_outside_guest_memory_come_back_unused() {
    let s = server();
    let (mut a, mut b) = hostile_pair(&s);
    let mem = a.driver().ram().size();
    let resp = a.alloc_buf(4096).unwrap();
    let req = a.alloc_buf(4096).unwrap();
    a.write_buf(req, &Command::QueryPort.encode()).unwrap();
    for (raddr, waddr) in [
        (mem + 4096, resp),    // request outside
        (req, mem + 8192),     // response outside
        (u64::MAX - 7, resp),  // wraps around
        (mem - 4, resp),       // crosses the end
        (req, u64::MAX - 100), // response wraps
    ] {
        let (q, _) = a.driver_mut().ctrl_queue();
        let idx = q.take_descs(2).unwrap();
        let len = raw_chain(
            &mut a,
            &[
                (
                    idx[0],
                    RawDesc {
                        addr: raddr,
                        len: 8,
                        flags: DESC_F_NEXT,
                        next: idx[1],
                    },
                ),
                (
                    idx[1],
                    RawDesc {
                        addr: waddr,
                        len: 64,
                        flags: DESC_F_WRITE,
                        next: 0,
                    },
                ),
            ],
            idx[0],
            idx.clone(),
        );
        assert_eq!(len, 0, "request {raddr:#x}, response {waddr:#x}");
    }
    // An indirect table outside guest memory (INDIRECT was never negotiated, either).
    let (q, _) = a.driver_mut().ctrl_queue();
    let idx = q.take_descs(1).unwrap();
    let len = raw_chain(
        &mut a,
        &[(
            idx[0],
            RawDesc {
                addr: mem + (1 << 20),
                len: 32,
                flags: DESC_F_INDIRECT,
                next: 0,
            },
        )],
        idx[0],
        idx.clone(),
    );
    assert_eq!(len, 0);
    // A doorbell buffer outside guest memory is dropped, not read.
    {
        let timeout = a.driver().timeout();
        let d = a.driver_mut();
        d.flush_doorbells().unwrap();
        let (q, ram) = d.doorbell_queue();
        let idx = q.take_descs(1).unwrap();
        q.write_desc(
            ram,
            idx[0],
            RawDesc {
                addr: mem + 4096,
                len: 16,
                flags: 0,
                next: 0,
            },
        )
        .unwrap();
        q.publish(ram, idx[0], idx.clone()).unwrap();
        q.kick().unwrap();
        let u = q.wait_used(ram, timeout).unwrap();
        assert_eq!((u.head, u.len), (idx[0], 0));
    }
    assert_eq!(cmd_status(&mut a, Command::QueryPort), Status::Ok);
    still_works(&mut a, &mut b);
}

#[test]
fn looping_and_overlapping_chains_come_back_unused() {
    let s = server();
    let (mut a, mut b) = hostile_pair(&s);
    let req = a.alloc_buf(4096).unwrap();
    let resp = a.alloc_buf(4096).unwrap();
    a.write_buf(req, &Command::QueryPort.encode()).unwrap();
    // A descriptor that points at itself, and one whose next is beyond the table.
    let qsize = a.driver_mut().ctrl_queue().0.size();
    for next in [None, Some(qsize + 7)] {
        let (q, _) = a.driver_mut().ctrl_queue();
        let idx = q.take_descs(1).unwrap();
        let len = raw_chain(
            &mut a,
            &[(
                idx[0],
                RawDesc {
                    addr: req,
                    len: 8,
                    flags: DESC_F_NEXT,
                    next: next.unwrap_or(idx[0]),
                },
            )],
            idx[0],
            idx.clone(),
        );
        assert_eq!(len, 0, "next = {next:?}");
    }
    // Two chains sharing a descriptor: A = r → w, B = w alone (no request at all).
    {
        let timeout = a.driver().timeout();
        let d = a.driver_mut();
        let (q, ram) = d.ctrl_queue();
        let idx = q.take_descs(2).unwrap();
        let (r, w) = (idx[0], idx[1]);
        q.write_desc(
            ram,
            r,
            RawDesc {
                addr: req,
                len: 8,
                flags: DESC_F_NEXT,
                next: w,
            },
        )
        .unwrap();
        q.write_desc(
            ram,
            w,
            RawDesc {
                addr: resp,
                len: 64,
                flags: DESC_F_WRITE,
                next: 0,
            },
        )
        .unwrap();
        q.publish(ram, r, idx.clone()).unwrap();
        q.publish(ram, w, Vec::new()).unwrap();
        q.kick().unwrap();
        let mut heads = [
            q.wait_used(ram, timeout).unwrap(),
            q.wait_used(ram, timeout).unwrap(),
        ];
        heads.sort_by_key(|u| u.head);
        assert_eq!(heads.iter().map(|u| u.head).collect::<Vec<_>>(), {
            let mut v = vec![r, w];
            v.sort();
            v
        });
        let b_len = heads.iter().find(|u| u.head == w).unwrap().len;
        let resp_b = a.read_buf(resp, 8).unwrap();
        // B has no readable part: unused, or a MALFORMED answer.
        assert!(
            b_len == 0 || Response::decode(&resp_b).unwrap().status == Status::Malformed,
            "B came back with {b_len} bytes"
        );
    }
    // Request and response in the same bytes: the device reads the request before it answers.
    let both = a.alloc_buf(4096).unwrap();
    a.write_buf(both, &Command::QueryPort.encode()).unwrap();
    let used = a
        .driver_mut()
        .submit_ctrl(&[Buf::readable(both, 8), Buf::writable(both, 64)])
        .unwrap();
    assert!(used.len >= 8);
    assert_eq!(
        Response::decode(&a.read_buf(both, used.len as usize).unwrap())
            .unwrap()
            .status,
        Status::Ok
    );
    assert_eq!(cmd_status(&mut a, Command::QueryPort), Status::Ok);
    still_works(&mut a, &mut b);
}

#[test]
fn short_and_unknown_commands_get_error_statuses() {
    let s = server();
    let (mut a, mut b) = hostile_pair(&s);
    let query = Command::QueryPort.encode();
    assert_eq!(raw_status(&mut a, &query[..3], 64), Ok(Status::Malformed));
    assert_eq!(raw_status(&mut a, &[], 64), Ok(Status::Malformed));
    let create_qp = Command::CreateQp {
        qp_type: 2,
        sq_sig_all: false,
        pd: 1,
        send_cq: 1,
        recv_cq: 1,
        srq: 0,
        cap: Default::default(),
        sq_ring_gpa: 0x10000,
        rq_ring_gpa: 0x20000,
    }
    .encode();
    assert_eq!(
        raw_status(&mut a, &create_qp[..13], 64),
        Ok(Status::Malformed)
    );
    assert_eq!(
        raw_status(&mut a, &[0xff, 0xff, 0, 0, 0, 0, 0, 0], 64),
        Ok(Status::Unsupported)
    );
    assert_eq!(
        raw_status(&mut a, &[0, 0, 0, 0, 0, 0, 0, 0], 64),
        Ok(Status::Unsupported)
    );
    // No room for the response header: returned unused.
    assert_eq!(
        raw_status(&mut a, &Command::QueryDevice.encode(), 4),
        Err(0)
    );
    assert_eq!(
        raw_status(&mut a, &Command::QueryDevice.encode(), 0),
        Err(0)
    );
    // Room for the header but not the body.
    assert_eq!(
        raw_status(&mut a, &Command::QueryDevice.encode(), 16),
        Ok(Status::ResponseTooSmall)
    );
    // Impossible fields.
    assert_eq!(
        cmd_status(
            &mut a,
            Command::CreateCq {
                depth: 3,
                ring_gpa: 0x10000
            }
        ),
        Status::Invalid
    );
    let mem = a.driver().ram().size();
    let pd = a.alloc_pd().unwrap();
    assert_eq!(
        cmd_status(
            &mut a,
            Command::CreateCq {
                depth: 64,
                ring_gpa: mem - 64
            }
        ),
        Status::Fault,
        "a CQ ring crossing the end of guest memory"
    );
    assert_eq!(
        cmd_status(
            &mut a,
            Command::RegMr {
                pd: pd.0,
                access: 1,
                iova: 0x1000,
                length: 4096,
                page_shift: 12,
                npages: 1,
                page_list_gpa: mem + 4096,
            }
        ),
        Status::Fault,
        "a page list outside guest memory"
    );
    let list = a.alloc_buf(4096).unwrap();
    a.write_buf(list, &(mem + (1 << 20)).to_le_bytes()).unwrap();
    assert_eq!(
        cmd_status(
            &mut a,
            Command::RegMr {
                pd: pd.0,
                access: 1,
                iova: 0x1000,
                length: 4096,
                page_shift: 12,
                npages: 1,
                page_list_gpa: list,
            }
        ),
        Status::Fault,
        "a page outside guest memory"
    );
    let huge = cmd_status(
        &mut a,
        Command::RegMr {
            pd: pd.0,
            access: 1,
            iova: 0x1000,
            length: 1 << 40,
            page_shift: 12,
            npages: u32::MAX,
            page_list_gpa: list,
        },
    );
    assert!(
        matches!(huge, Status::Fault | Status::Invalid),
        "a page list larger than guest memory: {huge:?}"
    );
    assert_eq!(cmd_status(&mut a, Command::QueryPort), Status::Ok);
    still_works(&mut a, &mut b);
}

#[test]
fn another_vfs_handles_do_not_exist_here() {
    let s = server();
    let (mut a, mut b) = hostile_pair(&s);
    // vf1 makes more objects than vf0 has, so some of its handles are unknown numbers on vf0.
    let (eb, _ea) = connected(&mut b, &mut a, 1 << 14, 8, Mtu::Mtu1024);
    let mut b_qps = vec![eb.qpn];
    let mut b_cqs = vec![eb.cq];
    let mut b_keys = vec![eb.key];
    for _ in 0..4 {
        let e = rc_endpoint(&mut b, 8192, 4, Psn(1)).unwrap();
        b_qps.push(e.qpn);
        b_cqs.push(e.cq);
        b_keys.push(e.key);
    }
    let foreign_qp = b_qps
        .iter()
        .map(|q| q.0)
        .find(|q| cmd_status(&mut a, Command::QueryQp { qpn: *q }) == Status::NotFound)
        .expect("vf1 has a QPN vf0 does not");
    for c in [
        Command::DestroyQp { qpn: foreign_qp },
        Command::ModifyQp {
            qpn: foreign_qp,
            mask: vhca_device::QpAttrMask::STATE.bits(),
            attr: vhca_device::QpAttr {
                qp_state: QpState::Err,
                ..Default::default()
            },
        },
    ] {
        assert_eq!(cmd_status(&mut a, c), Status::NotFound);
    }
    let foreign_cq = b_cqs
        .iter()
        .map(|c| c.0)
        .find(|c| !a.owns_cq(*c))
        .expect("vf1 has a CQN vf0 does not");
    assert_eq!(
        cmd_status(&mut a, Command::DestroyCq { cqn: foreign_cq }),
        Status::NotFound
    );
    let foreign_key = b_keys
        .iter()
        .copied()
        .find(|k| !a.owns_key(*k))
        .expect("vf1 has a key vf0 does not");
    assert_eq!(
        cmd_status(&mut a, Command::DeregMr { key: foreign_key.0 }),
        Status::NotFound
    );
    assert_eq!(
        status_to_error(opcode::DEREG_MR, Status::NotFound),
        VerbsError::NotFound("MR")
    );
    // vf1's objects are untouched.
    for q in &b_qps {
        b.query_qp(*q).unwrap();
    }
    // Data path: a local SGE with vf1's key is a protection error on vf0.
    let (ea2, eb2) = connected(&mut a, &mut b, 1 << 14, 8, Mtu::Mtu1024);
    b.post_recv(
        eb2.qpn,
        vhca_device::RecvWr {
            wr_id: 1,
            sgl: vec![vhca_device::Sge {
                addr: eb2.buf,
                len: 64,
                lkey: eb2.key,
            }],
        },
    )
    .unwrap();
    let foreign_key = b_keys
        .iter()
        .copied()
        .find(|k| !a.owns_key(*k))
        .expect("vf1 still has a key vf0 does not");
    a.post_send(
        ea2.qpn,
        &vhca_device::SendWr::new(9, vhca_device::SendOp::Send).sge(vhca_device::Sge {
            addr: ea2.buf,
            len: 64,
            lkey: foreign_key,
        }),
    )
    .unwrap();
    let w = wait(&mut a, ea2.cq, 1, 100_000).unwrap();
    assert_eq!(w[0].status, WcStatus::LocProtErr);
    still_works(&mut a, &mut b);
}

#[test]
fn producer_indices_that_jump_put_the_qp_in_err() {
    let s = server();
    let (mut a, mut b) = hostile_pair(&s);
    let (ea, _eb) = connected(&mut a, &mut b, 1 << 14, 8, Mtu::Mtu1024);
    let (sq, rq) = a.qp_rings(ea.qpn).unwrap();
    // Far ahead of anything written.
    a.driver_mut()
        .ring(&[Doorbell::Sq {
            qpn: ea.qpn.0,
            pi: sq.depth * 3 + 1,
        }])
        .unwrap();
    a.driver_mut().flush_doorbells().unwrap();
    let ev = a.wait_async_events(Duration::from_secs(5)).unwrap();
    assert_eq!(a.query_qp(ea.qpn).unwrap().0.qp_state, QpState::Err);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Async { handle, .. } if *handle == ea.qpn.0)),
        "an affiliated event for the QP: {ev:?}"
    );
    // Backwards, on the receive ring of another QP.
    let (ea2, _eb2) = connected(&mut a, &mut b, 1 << 14, 8, Mtu::Mtu1024);
    let rq_depth = a.qp_rings(ea2.qpn).unwrap().1.unwrap().depth;
    for _ in 0..2 {
        a.post_recv(
            ea2.qpn,
            vhca_device::RecvWr {
                wr_id: 1,
                sgl: vec![],
            },
        )
        .unwrap();
    }
    a.driver_mut()
        .ring(&[Doorbell::Rq {
            qpn: ea2.qpn.0,
            pi: 1,
        }])
        .unwrap();
    a.driver_mut().flush_doorbells().unwrap();
    let _ = a.wait_async_events(Duration::from_secs(5)).unwrap();
    assert_eq!(a.query_qp(ea2.qpn).unwrap().0.qp_state, QpState::Err);
    assert!(rq.is_some() && rq_depth > 0);
    // Doorbells for QPs that do not exist here, unknown kinds, partial records: ignored.
    {
        a.driver_mut().flush_doorbells().unwrap();
        let timeout = a.driver().timeout();
        let buf = a.alloc_buf(64).unwrap();
        let mut junk = Doorbell::Sq { qpn: 0xfff0, pi: 5 }.encode().to_vec();
        junk.extend_from_slice(&[9u8; 16]);
        junk.extend_from_slice(&[1u8; 4]);
        a.write_buf(buf, &junk).unwrap();
        let d = a.driver_mut();
        let (q, ram) = d.doorbell_queue();
        let head = q
            .add(ram, &[Buf::readable(buf, junk.len() as u32)])
            .unwrap();
        q.kick().unwrap();
        let u = q.wait_used(ram, timeout).unwrap();
        assert_eq!(u.head, head);
    }
    assert_eq!(cmd_status(&mut a, Command::QueryPort), Status::Ok);
    still_works(&mut a, &mut b);
}

#[test]
fn an_avail_index_that_jumps_breaks_only_that_connection() {
    let mut s = server();
    let (mut a, mut b) = hostile_pair(&s);
    {
        let d = a.driver_mut();
        let (q, ram) = d.ctrl_queue();
        q.force_avail_idx(ram, 40_000).unwrap();
        q.kick().unwrap();
    }
    // Whatever the device makes of it, the other VF and a new guest on this one work.
    drop(a);
    assert!(s.running());
    let mut a = open(&s, 0);
    still_works(&mut a, &mut b);
    assert!(s.running());
}

#[test]
fn a_chain_looping_through_its_writable_part_comes_back_unused() {
    let s = server();
    let (mut a, mut b) = hostile_pair(&s);
    let req = a.alloc_buf(4096).unwrap();
    let resp = a.alloc_buf(4096).unwrap();
    a.write_buf(req, &Command::QueryPort.encode()).unwrap();
    // i → j → i: a loop through two descriptors.
    let (q, _) = a.driver_mut().ctrl_queue();
    let idx = q.take_descs(2).unwrap();
    let (i, j) = (idx[0], idx[1]);
    let len = raw_chain(
        &mut a,
        &[
            (
                i,
                RawDesc {
                    addr: req,
                    len: 8,
                    flags: DESC_F_NEXT,
                    next: j,
                },
            ),
            (
                j,
                RawDesc {
                    addr: resp,
                    len: 64,
                    flags: DESC_F_WRITE | DESC_F_NEXT,
                    next: i,
                },
            ),
        ],
        i,
        idx.clone(),
    );
    assert_eq!(len, 0, "a looping chain");
    still_works(&mut a, &mut b);
}
