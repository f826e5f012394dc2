//! End-to-end RC traffic between VFs of different PFs through the in-process switch.

use vhca_device::*;
use vhca_fabric::conn::{connect, create_qp, QpEnd, RcParams};
use vhca_fabric::{FaultConfig, FaultLevel, VfAddr, World, WorldConfig};

struct Pair {
    a: QpEnd,
    b: QpEnd,
    abuf: u64,
    bbuf: u64,
    akey: MemKey,
    bkey: MemKey,
}

const BUF: u64 = 1 << 20;

fn setup(w: &mut World, va: VfAddr, vb: VfAddr, p: &RcParams) -> Pair {
    let end = |w: &mut World, v: VfAddr| {
        let vf = w.vf_mut(v);
        let pd = vf.alloc_pd().unwrap();
        let cq = vf.create_cq(4096).unwrap();
        let cap = QpCap {
            max_send_wr: 256,
            max_recv_wr: 256,
            max_send_sge: 4,
            max_recv_sge: 4,
            max_inline_data: 64,
        };
        let q = create_qp(w, v, pd, cq, QpType::Rc, cap, None).unwrap();
        let buf = w.alloc(v, BUF).unwrap();
        let key = w.vf_mut(v).reg_mr(pd, buf, BUF, p.access).unwrap();
        (q, buf, key)
    };
    let (a, abuf, akey) = end(w, va);
    let (b, bbuf, bkey) = end(w, vb);
    connect(w, a, b, Psn(0xfffff0), Psn(100), p).unwrap();
    connect(w, b, a, Psn(100), Psn(0xfffff0), p).unwrap();
    Pair {
        a,
        b,
        abuf,
        bbuf,
        akey,
        bkey,
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn wait(w: &mut World, e: QpEnd, n: usize) -> Vec<WorkCompletion> {
    let mut got = Vec::new();
    let ok = w.run_until(Nanos(60_000_000_000), |w| {
        w.vf_mut(e.vf).poll_cq(e.cq, 64, &mut got).unwrap();
        got.len() >= n
    });
    assert!(ok, "only {} of {n} completions: {got:?}", got.len());
    got
}

fn run_all_opcodes(faults: FaultConfig, mtu: Mtu) {
    let mut w = World::new(WorldConfig {
        seed: 3,
        faults,
        latency_ns: 2_000,
        ..Default::default()
    });
    let p0 = w.add_pf(2);
    let p1 = w.add_pf(2);
    let va = w.add_vf(p0).unwrap();
    let vb = w.add_vf(p1).unwrap();
    let params = RcParams {
        mtu,
        timeout: 8,
        ..Default::default()
    };
    let pr = setup(&mut w, va, vb, &params);
    for (i, len) in [0usize, 1, 255, 256, 257, 4096, 10_000, 65_536, 300_000]
        .into_iter()
        .enumerate()
    {
        let data = pattern(i as u8, len);
        w.write(va, pr.abuf, &data).unwrap();
        // SEND
        w.vf_mut(vb)
            .post_recv(
                pr.b.qpn,
                RecvWr {
                    wr_id: 7,
                    sgl: vec![Sge {
                        addr: pr.bbuf,
                        len: BUF as u32,
                        lkey: pr.bkey,
                    }],
                },
            )
            .unwrap();
        let wr = SendWr::new(1, SendOp::SendWithImm { imm: 0xabcd }).sge(Sge {
            addr: pr.abuf,
            len: len as u32,
            lkey: pr.akey,
        });
        w.vf_mut(va).post_send(pr.a.qpn, &wr).unwrap();
        let rc = wait(&mut w, pr.b, 1);
        assert_eq!(rc[0].status, WcStatus::Success, "{rc:?}");
        assert_eq!(rc[0].byte_len as usize, len);
        assert_eq!(rc[0].imm, Some(0xabcd));
        assert_eq!(w.read(vb, pr.bbuf, len).unwrap(), data, "SEND of {len}");
        let sc = wait(&mut w, pr.a, 1);
        assert_eq!(sc[0].status, WcStatus::Success);
        // WRITE to b at offset 1 MiB / 2
        let dst = pr.bbuf + BUF / 2;
        let wr = SendWr::new(
            2,
            SendOp::Write {
                remote_addr: dst,
                rkey: pr.bkey,
            },
        )
        .sge(Sge {
            addr: pr.abuf,
            len: len.min(BUF as usize / 2) as u32,
            lkey: pr.akey,
        });
        w.vf_mut(va).post_send(pr.a.qpn, &wr).unwrap();
        let sc = wait(&mut w, pr.a, 1);
        assert_eq!(sc[0].status, WcStatus::Success, "{sc:?}");
        let l = len.min(BUF as usize / 2);
        assert_eq!(w.read(vb, dst, l).unwrap(), data[..l], "WRITE of {len}");
        // READ it back into a's upper half
        let back = pr.abuf + BUF / 2;
        let wr = SendWr::new(
            3,
            SendOp::Read {
                remote_addr: dst,
                rkey: pr.bkey,
            },
        )
        .sge(Sge {
            addr: back,
            len: l as u32,
            lkey: pr.akey,
        });
        w.vf_mut(va).post_send(pr.a.qpn, &wr).unwrap();
        let sc = wait(&mut w, pr.a, 1);
        assert_eq!(sc[0].status, WcStatus::Success, "{sc:?}");
        assert_eq!(w.read(va, back, l).unwrap(), data[..l], "READ of {len}");
    }
    // Atomics on b's first word.
    w.write(vb, pr.bbuf, &5u64.to_le_bytes()).unwrap();
    let wr = SendWr::new(
        4,
        SendOp::FetchAdd {
            remote_addr: pr.bbuf,
            rkey: pr.bkey,
            add: 10,
        },
    )
    .sge(Sge {
        addr: pr.abuf,
        len: 8,
        lkey: pr.akey,
    });
    w.vf_mut(va).post_send(pr.a.qpn, &wr).unwrap();
    let wr = SendWr::new(
        5,
        SendOp::CmpSwap {
            remote_addr: pr.bbuf,
            rkey: pr.bkey,
            compare: 15,
            swap: 99,
        },
    )
    .sge(Sge {
        addr: pr.abuf + 8,
        len: 8,
        lkey: pr.akey,
    });
    w.vf_mut(va).post_send(pr.a.qpn, &wr).unwrap();
    let sc = wait(&mut w, pr.a, 2);
    assert!(sc.iter().all(|c| c.is_ok()), "{sc:?}");
    assert_eq!(w.read(va, pr.abuf, 8).unwrap(), 5u64.to_le_bytes());
    assert_eq!(w.read(va, pr.abuf + 8, 8).unwrap(), 15u64.to_le_bytes());
    assert_eq!(w.read(vb, pr.bbuf, 8).unwrap(), 99u64.to_le_bytes());
}

#[test]
fn every_opcode_without_faults_at_every_mtu() {
    for mtu in Mtu::ALL {
        run_all_opcodes(FaultConfig::default(), mtu);
    }
}

#[test]
fn every_opcode_under_heavy_faults() {
    run_all_opcodes(FaultConfig::level(FaultLevel::Heavy), Mtu::Mtu1024);
    run_all_opcodes(FaultConfig::level(FaultLevel::Heavy), Mtu::Mtu256);
}
