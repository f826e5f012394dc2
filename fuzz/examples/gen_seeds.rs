//! Writes `fuzz/seeds/<target>/` from the project's real encoders and fixtures: RoCEv2 frames
//! captured from rxe and constructed from the wire facts, every control command, WQEs of every
//! opcode, real checkpoints and device-state blobs of a VF with connected QPs, the tools'
//! exchange messages, and hostile-guest programs that reach connected RC QPs moving traffic.
//!
//! `cargo run --release --example gen_seeds` in fuzz/, without the coverage RUSTFLAGS.
//! Deterministic: running it again rewrites the same files.

use std::fs;
use std::path::{Path, PathBuf};
use vhca::interop::perf::KeyMsg;
use vhca::interop::pingpong::Dest;
use vhca_device::checkpoint;
use vhca_device::{
    Access, AhAttr, AhHandle, FlushLevel, FlushPlacement, Gid, Mac, MemKey, Psn, QpAttr, QpCap,
    QpState, Qpn, RecvWr, SendFlags, SendOp, SendWr, Sge, UdDest, VfIdentity, WcOpcode, WcStatus,
    WorkCompletion,
};
use vhca_fuzz::hostile::{self, ProgramBuilder};
use vhca_vhost::protocol::command::{body, Command, Response, RingInfo, Status};
use vhca_vhost::protocol::config::RdmaConfig;
use vhca_vhost::protocol::doorbell::{Doorbell, Event};
use vhca_vhost::protocol::ring;
use vhca_wire::{arp, ethernet, ipv4};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Writes one seed; names are stable so a rerun rewrites the same files.
fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("seeds").join(target);
    fs::create_dir_all(&dir).expect("seed directory");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}

/// The hex fixtures of wire/tests (same format as wire_fixtures.rs reads).
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let base = root().join("../wire/tests/fixtures");
    let mut out = Vec::new();
    for dir in [base.clone(), base.join("rxe")] {
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("fixtures")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "hex"))
            .collect();
        names.sort();
        for p in names {
            let text = fs::read_to_string(&p).expect("fixture");
            let bytes = text
                .lines()
                .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace())
                .map(|t| u8::from_str_radix(t, 16).expect("hex byte"))
                .collect();
            let stem = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((stem, bytes));
        }
    }
    out
}

/// Offsets of the IP header, the UDP header and the transport (BTH) in a frame.
fn layout(f: &[u8]) -> (usize, usize, usize) {
    let ip = ethernet::HEADER_LEN;
    let udp = if f[ip] >> 4 == 4 {
        ip + usize::from(f[ip] & 0xf) * 4
    } else {
        ip + 40
    };
    (ip, udp, udp + 8)
}

fn wire_seeds() {
    for (name, f) in fixtures() {
        let (ip, udp, bth) = layout(&f);
        put("decode_roce", &format!("{name}-frame"), &cat(&[0], &f));
        put(
            "decode_roce",
            &format!("{name}-frame-fixed"),
            &cat(&[1], &f),
        );
        let v6 = u8::from(f[ip] >> 4 == 6);
        let ctl = [v6, 3, f[udp], f[udp + 1], 0, 0, 1];
        put(
            "decode_roce",
            &format!("{name}-udp"),
            &cat(&[2], &cat(&ctl, &f[bth..])),
        );
        put(
            "decode_roce",
            &format!("{name}-udp-fixed"),
            &cat(&[4], &cat(&ctl, &f[bth..])),
        );
        put(
            "wire_headers",
            &format!("{name}-bth"),
            &cat(&[0], &f[bth..]),
        );
        // The first extension header behind the BTH; mode 1..=7 reads it as each kind.
        for m in 1..=7u8 {
            put(
                "wire_headers",
                &format!("{name}-ext{m}"),
                &cat(&[m], &f[bth + 12..]),
            );
        }
        put("wire_headers", &format!("{name}-eth"), &cat(&[9], &f));
        put(
            "wire_headers",
            &format!("{name}-ip"),
            &cat(&[10 + v6], &f[ip..]),
        );
        put(
            "wire_headers",
            &format!("{name}-udp"),
            &cat(&[12, v6], &f[udp..]),
        );
        let sel = if v6 == 1 { 1 } else { 0 };
        put(
            "wire_headers",
            &format!("{name}-icrc"),
            &cat(&[13, sel], &f[ip..]),
        );
        put(
            "wire_headers",
            &format!("{name}-icrc-compute"),
            &cat(&[14, sel], &f[ip..f.len() - 4]),
        );
    }
    let mac = Mac([2, 0, 0, 0, 0, 1]);
    let ip = std::net::Ipv4Addr::new(10, 77, 0, 1);
    for (n, r) in [
        (
            "request",
            arp::Repr::request(mac, ip, std::net::Ipv4Addr::new(10, 77, 0, 3)),
        ),
        ("gratuitous", arp::Repr::gratuitous(mac, ip)),
    ] {
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut arp::Packet::new_unchecked(&mut b[..]));
        put("wire_headers", &format!("arp-{n}"), &cat(&[8], &b));
    }
    let _ = ipv4::HEADER_LEN;
}

fn commands() -> Vec<(&'static str, Command)> {
    let attr = QpAttr {
        qp_state: QpState::Rtr,
        qp_access_flags: Access::all(),
        dest_qp_num: Qpn(0x12),
        rq_psn: Psn(0x42),
        ah_attr: AhAttr {
            dgid: Gid::from_ipv4([10, 0, 0, 2]),
            hop_limit: 1,
            ..Default::default()
        },
        ..QpAttr::default()
    };
    let cap = QpCap {
        max_send_wr: 16,
        max_recv_wr: 16,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 64,
    };
    vec![
        ("query_device", Command::QueryDevice),
        ("query_port", Command::QueryPort),
        ("query_gid", Command::QueryGid { index: 0 }),
        ("query_pkey", Command::QueryPkey { index: 0 }),
        ("create_pd", Command::CreatePd),
        ("destroy_pd", Command::DestroyPd { pd: 1 }),
        (
            "reg_mr",
            Command::RegMr {
                pd: 1,
                access: 15,
                iova: 0,
                length: 8192,
                page_shift: 12,
                npages: 2,
                page_list_gpa: 0x8000,
            },
        ),
        ("dereg_mr", Command::DeregMr { key: 0x100 }),
        (
            "create_cq",
            Command::CreateCq {
                depth: 16,
                ring_gpa: 0x4000,
            },
        ),
        ("destroy_cq", Command::DestroyCq { cqn: 1 }),
        (
            "resize_cq",
            Command::ResizeCq {
                cqn: 1,
                depth: 32,
                ring_gpa: 0x6000,
            },
        ),
        (
            "req_notify_cq",
            Command::ReqNotifyCq {
                cqn: 1,
                solicited: false,
            },
        ),
        (
            "create_qp",
            Command::CreateQp {
                qp_type: 2,
                sq_sig_all: false,
                pd: 1,
                send_cq: 1,
                recv_cq: 1,
                srq: 0,
                cap,
                sq_ring_gpa: 0x2000,
                rq_ring_gpa: 0x3000,
            },
        ),
        (
            "modify_qp",
            Command::ModifyQp {
                qpn: 0x11,
                mask: 0x1f,
                attr,
            },
        ),
        ("query_qp", Command::QueryQp { qpn: 0x11 }),
        ("destroy_qp", Command::DestroyQp { qpn: 0x11 }),
        (
            "create_srq",
            Command::CreateSrq {
                pd: 1,
                max_wr: 16,
                max_sge: 1,
                ring_gpa: 0x5000,
            },
        ),
        ("modify_srq", Command::ModifySrq { srqn: 1, limit: 2 }),
        ("destroy_srq", Command::DestroySrq { srqn: 1 }),
        (
            "create_ah",
            Command::CreateAh {
                pd: 1,
                attr: AhAttr {
                    dgid: Gid::from_ipv4([10, 0, 0, 2]),
                    ..Default::default()
                },
            },
        ),
        ("destroy_ah", Command::DestroyAh { ah: 1 }),
        ("alloc_mw", Command::AllocMw { pd: 1, mw_type: 2 }),
        ("dealloc_mw", Command::DeallocMw { key: 0x8000_0105 }),
        (
            "alloc_mr",
            Command::AllocMr {
                pd: 1,
                max_num_sg: 8,
            },
        ),
    ]
}

fn command_seeds() {
    for (n, c) in commands() {
        put("device_commands", n, &cat(&[0], &c.encode()));
    }
    let sq = RingInfo {
        depth: 16,
        stride: 128,
    };
    let rq = RingInfo {
        depth: 16,
        stride: 32,
    };
    let responses = [
        ("ok_create_qp", Response::ok(body::create_qp(0x11, sq, rq))),
        ("ok_create_srq", Response::ok(body::create_srq(1, rq))),
        (
            "ok_qp_attr",
            Response::ok(body::qp_attr(&QpAttr::default())),
        ),
        ("ok_key", Response::ok(body::key(MemKey(0x100)))),
        ("err", Response::err(Status::Malformed)),
    ];
    for (n, r) in responses {
        put(
            "device_commands",
            &format!("response_{n}"),
            &cat(&[2], &r.encode()),
        );
    }
    let id = VfIdentity::new(Mac([2, 0, 0, 0, 0, 1]), [10, 0, 0, 1]);
    put(
        "device_commands",
        "config",
        &cat(&[3], &RdmaConfig::from_identity(&id).encode()),
    );
}

fn ring_seeds() {
    let k = MemKey(0x100);
    let ops = [
        SendOp::Send,
        SendOp::SendWithImm { imm: 7 },
        SendOp::SendWithInv { rkey: k },
        SendOp::Write {
            remote_addr: 0x1000,
            rkey: k,
        },
        SendOp::WriteWithImm {
            remote_addr: 0x1000,
            rkey: k,
            imm: 9,
        },
        SendOp::Read {
            remote_addr: 0x1000,
            rkey: k,
        },
        SendOp::CmpSwap {
            remote_addr: 0x1000,
            rkey: k,
            compare: 1,
            swap: 2,
        },
        SendOp::FetchAdd {
            remote_addr: 0x1000,
            rkey: k,
            add: 3,
        },
        SendOp::LocalInv { key: k },
        SendOp::BindMw {
            mw: MemKey(0x8000_0105),
            rkey: MemKey(0x8000_0106),
            mr: k,
            addr: 0x1000,
            len: 0x800,
            access: Access::REMOTE_READ | Access::REMOTE_WRITE,
        },
        SendOp::RegMr {
            mr: MemKey(0x201),
            page_list: 0x3000,
            npages: 2,
            page_shift: 12,
            iova: 0x1_0000,
            len: 8192,
            access: Access::LOCAL_WRITE | Access::REMOTE_READ,
        },
        SendOp::AtomicWrite {
            remote_addr: 0x1000,
            rkey: k,
            value: 0x1122_3344_5566_7788,
        },
        SendOp::Flush {
            remote_addr: 0x1000,
            rkey: k,
            len: 64,
            placement: FlushPlacement::GLOBAL,
            level: FlushLevel::Range,
        },
    ];
    // [kind][max_sge][max_inline lo][hi][index ×4]
    let ctl =
        |kind: u8, sge: u8, ud: bool| [kind, sge | if ud { 0x80 } else { 0 }, 64, 0, 0, 0, 0, 0];
    for (i, op) in ops.into_iter().enumerate() {
        let wr = SendWr::new(i as u64, op)
            .flags(SendFlags::SIGNALED)
            .sge(Sge {
                addr: 0x2000,
                len: 100,
                lkey: k,
            });
        put(
            "ring_entries",
            &format!("send_{i}"),
            &cat(
                &ctl(0, 2, false),
                &ring::encode_send(&wr, ring::send_stride(2, 64)),
            ),
        );
    }
    let inline = SendWr::new(1, SendOp::Send)
        .flags(SendFlags::INLINE | SendFlags::SIGNALED)
        .inline(b"hello, inline")
        .ud(UdDest {
            ah: AhHandle(1),
            remote_qpn: Qpn(0x12),
            remote_qkey: 0x1111,
        });
    put(
        "ring_entries",
        "send_inline_ud",
        &cat(
            &ctl(0, 2, true),
            &ring::encode_send(&inline, ring::send_stride(2, 64)),
        ),
    );
    let recv = RecvWr {
        wr_id: 5,
        sgl: vec![
            Sge {
                addr: 0x3000,
                len: 4096,
                lkey: k,
            },
            Sge {
                addr: 0x5000,
                len: 16,
                lkey: k,
            },
        ],
    };
    put(
        "ring_entries",
        "recv",
        &cat(
            &ctl(1, 2, false),
            &ring::encode_recv(&recv, ring::recv_stride(2)),
        ),
    );
    let wc = WorkCompletion {
        wr_id: 5,
        status: WcStatus::Success,
        opcode: WcOpcode::RecvRdmaWithImm,
        qpn: Qpn(0x11),
        byte_len: 4096,
        imm: Some(9),
        invalidated_rkey: None,
        src_qp: Qpn(0x12),
        src_gid: Gid::from_ipv4([10, 0, 0, 2]),
        grh: true,
        solicited: true,
    };
    // depth 2^4 (byte 2 = 4), index 3.
    put(
        "ring_entries",
        "cqe",
        &cat(&[2, 0, 4, 0, 3, 0, 0, 0], &ring::encode_cqe(&wc, 3, 16)),
    );
    let dbs = [
        Doorbell::Sq { qpn: 0x11, pi: 1 },
        Doorbell::Rq { qpn: 0x11, pi: 1 },
        Doorbell::Srq { srqn: 1, pi: 1 },
        Doorbell::CqConsumed { cqn: 1, ci: 1 },
        Doorbell::CqArm {
            cqn: 1,
            solicited: true,
        },
    ];
    let all: Vec<u8> = dbs.iter().flat_map(|d| d.encode()).collect();
    put(
        "ring_entries",
        "doorbells",
        &cat(&[3, 0, 0, 0, 0, 0, 0, 0], &all),
    );
    for (n, e) in [
        ("completion", Event::Completion { cqn: 1 }),
        (
            "async",
            Event::Async {
                code: 1,
                handle: 0x11,
            },
        ),
    ] {
        put(
            "ring_entries",
            &format!("event_{n}"),
            &cat(&[4, 0, 0, 0, 0, 0, 0, 0], &e.encode()),
        );
    }
    let mut g = 0x10000u64.to_le_bytes().to_vec();
    g.extend_from_slice(&16u32.to_le_bytes());
    g.extend_from_slice(&64u32.to_le_bytes());
    put(
        "ring_entries",
        "geometry",
        &cat(&[5, 0, 0, 0, 0, 0, 0, 0], &g),
    );
}

/// Hostile programs: a connected RC pair of the hostile VF moving every opcode, one QP aimed
/// at a victim, and a UD QP.
fn programs() -> Vec<(&'static str, Vec<u8>)> {
    let setup = |p: &mut ProgramBuilder, qps: usize| {
        p.create_pd().reg_mr(0).create_cq(7);
        for _ in 0..qps {
            p.create_qp(false, 0);
        }
    };
    let mut out = Vec::new();
    let mut p = ProgramBuilder::default();
    setup(&mut p, 2);
    p.connect(0, 1, 0x100, 2);
    for op in 0..8u8 {
        p.post_recv(1, 0x8000, 4096)
            .post_send(0, op, 0x100, 2000, 0x4000)
            .pump(10);
    }
    p.pump(100);
    out.push(("rc_pair_every_opcode", p.0));
    let mut p = ProgramBuilder::default();
    setup(&mut p, 2);
    p.connect(0, 1, 0xfffff0, 2);
    for _ in 0..4 {
        // A 16 KiB message at MTU 1024: segmentation, with receives posted late (RNR).
        p.post_send(0, 0, 0, 16384, 0)
            .pump(1)
            .post_recv(1, 0x4000, 16384)
            .pump(200);
    }
    out.push(("rc_pair_rnr_segmented", p.0));
    let mut p = ProgramBuilder::default();
    setup(&mut p, 1);
    p.connect(0, 0, 0x55, 0);
    p.post_send(0, 0, 0, 64, 0)
        .post_send(0, 3, 0, 64, 0)
        .pump(500)
        .pump(60000);
    out.push(("rc_at_victim", p.0));
    // Windows and fast-register MRs: bound, registered, used, with ATOMIC_WRITE and FLUSH.
    let mut p = ProgramBuilder::default();
    p.create_pd().reg_mr_bindable(0).create_cq(7);
    p.create_qp(false, 0).create_qp(false, 0);
    p.connect(0, 1, 0x200, 2);
    p.alloc_mw(true).alloc_mw(false).alloc_mr();
    p.post_key_op(0, 9, 0x1000, 0x800, 0)
        .post_key_op(0, 10, 0x2000, 0, 0)
        .pump(10)
        .post_send(0, 3, 0x100, 64, 0x1000)
        .post_send(0, 5, 0x200, 64, 0x1000)
        .post_key_op(0, 11, 0, 0, 0x1008)
        .post_key_op(0, 12, 0, 64, 0x1000)
        .pump(100);
    out.push(("rc_pair_keys", p.0));
    let mut p = ProgramBuilder::default();
    p.create_pd().reg_mr(0).create_cq(4).create_qp(true, 0);
    p.connect_ud();
    p.raw(&[14, 0, 2, 64]); // an AH to victim 1
    p.post_recv(0, 0, 256)
        .post_send_ud(0, 64, 0)
        .post_send_ud(0, 64, 2)
        .pump(10);
    out.push(("ud", p.0));
    out
}

/// A v2 blob as the checkpoint harness's section input (`fuzz/src/state.rs`,
/// `sections_blob`): the codec byte (bit 7: delta), then `kind, items, length (u16), payload`
/// per section.
fn sections_input(blob: &[u8]) -> Vec<u8> {
    let (t, parts) = checkpoint::container::sections(blob).expect("a v2 blob");
    let all = checkpoint::codec::all();
    let idx = all.iter().position(|c| c.id() == t.codec.id()).unwrap() as u8;
    let mut out = vec![idx | if t.delta { 0x80 } else { 0 }];
    for (kind, items, payload) in parts {
        let k = checkpoint::container::SectionKind::ALL
            .iter()
            .position(|x| *x == kind)
            .unwrap() as u8;
        out.push(k);
        out.push(items.min(255) as u8);
        out.extend_from_slice(&(payload.len().min(65535) as u16).to_le_bytes());
        out.extend_from_slice(&payload[..payload.len().min(65535)]);
    }
    out
}

fn state_seeds() {
    for n in ["checkpoint-v1.bin", "checkpoint-v1.json"] {
        let blob =
            fs::read(root().join("../device/tests/fixtures").join(n)).expect("checkpoint fixture");
        put("checkpoint", &format!("fixture-{n}"), &cat(&[0], &blob));
        let mode = if n.ends_with("json") { 2 } else { 1 };
        put(
            "checkpoint",
            &format!("fixture-payload-{n}"),
            &cat(&[mode], &blob[16..]),
        );
    }
    // A delta against the base the harness applies deltas to (the v1 fixture, upgraded).
    let fixture = fs::read(root().join("../device/tests/fixtures/checkpoint-v1.bin")).unwrap();
    let (_, base) = checkpoint::decode(&fixture).unwrap();
    let mut later = base.clone();
    later.counters.tx_packets += 1;
    later.qps.truncate(later.qps.len().saturating_sub(1));
    for c in checkpoint::codec::all() {
        let d = checkpoint::save_delta(&base, &later, *c).unwrap();
        put("checkpoint", &format!("delta-{}", c.name()), &cat(&[0], &d));
        put(
            "checkpoint",
            &format!("delta-{}-sections", c.name()),
            &cat(&[3], &sections_input(&d)),
        );
    }
    for (n, prog) in programs() {
        let (bin, json, ds) = hostile::saved_state(&prog);
        put("checkpoint", &format!("{n}.bin"), &cat(&[0], &bin));
        put("checkpoint", &format!("{n}.json"), &cat(&[0], &json));
        put(
            "checkpoint",
            &format!("{n}-sections.bin"),
            &cat(&[3], &sections_input(&bin)),
        );
        put(
            "checkpoint",
            &format!("{n}-sections.json"),
            &cat(&[3], &sections_input(&json)),
        );
        put("device_state", n, &cat(&[0], &ds));
        put(
            "device_state",
            &format!("{n}-payload"),
            &cat(&[1], &ds[18..]),
        );
        put("hostile_guest", n, &prog);
        println!("{n}: {}", hostile::summary(&prog));
    }
}

fn tool_seeds() {
    for (n, cmd) in [
        ("vfs", "vfs"),
        ("qps", "qps"),
        ("counters", "counters"),
        ("unknown", "nope"),
    ] {
        put(
            "ctl_request",
            n,
            format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes(),
        );
    }
    let d = Dest {
        lid: 0,
        qpn: Qpn(0x11),
        psn: Psn(0xd97ec5),
        gid: Gid::from_ipv4([10, 77, 0, 3]),
    };
    put("tool_messages", "pingpong_dest", &cat(&[0], &d.encode()));
    let k = KeyMsg {
        lid: 0,
        out_reads: 16,
        qpn: 0x11,
        psn: 0x123,
        rkey: 0x100,
        vaddr: 0x7f00_0000_0000,
        gid: Gid::from_ipv4([10, 77, 0, 3]),
        srqn: 0,
    };
    put("tool_messages", "perf_key", &cat(&[1], &k.encode()));
}

fn main() {
    wire_seeds();
    command_seeds();
    ring_seeds();
    state_seeds();
    tool_seeds();
}
