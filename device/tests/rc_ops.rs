//! Every RC operation end to end, data checked byte for byte.

mod common;
use common::*;
use vhca_device::{Access, MemKey, SendFlags, SendOp, SendWr, Sge, WcOpcode, WcStatus};

fn pair() -> (Net, Ep, Ep) {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    (net, a, b)
}

#[test]
fn send_delivers_bytes_and_completes_both_sides() {
    let (mut net, a, b) = pair();
    let data = pattern(3000, 1);
    let src = net.rbuf(0, 3000);
    let dst = net.rbuf(1, 4096);
    net.fill(&src, &data);
    net.post_recv(&b, 77, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(5, SendOp::Send).sge(src.sge()));
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.wr_id, s.status, s.opcode, s.byte_len),
        (5, WcStatus::Success, WcOpcode::Send, 3000)
    );
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.status, r.opcode, r.byte_len),
        (77, WcStatus::Success, WcOpcode::Recv, 3000)
    );
    assert_eq!(r.qpn, b.qpn);
    assert_eq!(r.imm, None);
    assert_eq!(&net.read(1, dst.addr, 3000), &data);
    // Nothing beyond the message was touched.
    assert_eq!(net.read(1, dst.addr + 3000, 1096), vec![0; 1096]);
}

#[test]
fn send_with_imm_carries_the_immediate() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 100);
    let dst = net.rbuf(1, 100);
    net.fill(&src, &pattern(100, 2));
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(
        &a,
        SendWr::new(2, SendOp::SendWithImm { imm: 0xdead_beef }).sge(src.sge()),
    );
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.status, r.opcode, r.byte_len, r.imm),
        (WcStatus::Success, WcOpcode::Recv, 100, Some(0xdead_beef))
    );
    assert_eq!(net.contents(&dst), pattern(100, 2));
    // Multi-packet: the immediate rides on the LAST packet.
    let src = net.rbuf(0, 2500);
    let dst = net.rbuf(1, 2500);
    net.fill(&src, &pattern(2500, 3));
    net.post_recv(&b, 3, vec![dst.sge()]);
    net.post_send(
        &a,
        SendWr::new(4, SendOp::SendWithImm { imm: 7 }).sge(src.sge()),
    );
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.byte_len, r.imm), (2500, Some(7)));
    assert_eq!(net.contents(&dst), pattern(2500, 3));
    assert_eq!(
        net.sent_with(vhca_device::packet::Opcode::RC_SEND_LAST_IMM)
            .len(),
        1
    );
}

#[test]
fn send_with_inv_invalidates_the_responders_mr() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 64);
    let dst = net.rbuf(1, 64);
    let target = net.rbuf(1, 64);
    net.fill(&src, &pattern(64, 4));
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(
        &a,
        SendWr::new(2, SendOp::SendWithInv { rkey: target.key }).sge(src.sge()),
    );
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.status, r.byte_len, r.invalidated_rkey),
        (WcStatus::Success, 64, Some(target.key))
    );
    assert_eq!(net.contents(&dst), pattern(64, 4));
    assert!(!net.vf(1).mr(target.key).unwrap().valid);
    // The invalidated key no longer grants remote access.
    net.post_send(
        &a,
        SendWr::new(
            3,
            SendOp::Write {
                remote_addr: target.addr,
                rkey: target.key,
            },
        )
        .sge(src.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemAccessErr);
}

#[test]
fn rdma_write_places_data_without_a_receive() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 5000);
    let dst = net.rbuf(1, 8192);
    net.fill(&src, &pattern(5000, 5));
    net.post_send(
        &a,
        SendWr::new(
            9,
            SendOp::Write {
                remote_addr: dst.at(100),
                rkey: dst.key,
            },
        )
        .sge(src.sge()),
    );
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.status, s.opcode, s.byte_len),
        (WcStatus::Success, WcOpcode::RdmaWrite, 5000)
    );
    assert!(net.recv_wcs(&b).is_empty(), "a WRITE consumes no receive");
    let got = net.contents(&dst);
    assert_eq!(&got[100..5100], &pattern(5000, 5)[..]);
    assert!(got[..100].iter().all(|&x| x == 0));
    assert!(got[5100..].iter().all(|&x| x == 0));
}

#[test]
fn rdma_write_with_imm_consumes_a_receive_with_the_write_length() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 3000);
    let dst = net.rbuf(1, 3000);
    let rbuf = net.rbuf(1, 16);
    net.fill(&src, &pattern(3000, 6));
    net.post_recv(&b, 11, vec![rbuf.sge()]);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::WriteWithImm {
                remote_addr: dst.addr,
                rkey: dst.key,
                imm: 0x0102_0304,
            },
        )
        .sge(src.sge()),
    );
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.status, s.opcode),
        (WcStatus::Success, WcOpcode::RdmaWrite)
    );
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.status, r.opcode, r.byte_len, r.imm),
        (
            11,
            WcStatus::Success,
            WcOpcode::RecvRdmaWithImm,
            3000,
            Some(0x0102_0304)
        )
    );
    assert_eq!(net.contents(&dst), pattern(3000, 6));
    assert_eq!(
        net.contents(&rbuf),
        vec![0; 16],
        "the receive buffer is not written"
    );
    // Single packet variant.
    net.post_recv(&b, 12, vec![]);
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::WriteWithImm {
                remote_addr: dst.addr,
                rkey: dst.key,
                imm: 9,
            },
        )
        .sge(src.sge_at(0, 10)),
    );
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.byte_len, r.imm, r.opcode),
        (12, 10, Some(9), WcOpcode::RecvRdmaWithImm)
    );
}

#[test]
fn rdma_read_fetches_remote_bytes() {
    let (mut net, a, b) = pair();
    let remote = net.rbuf(1, 6000);
    let local = net.rbuf(0, 6000);
    net.fill(&remote, &pattern(6000, 7));
    net.post_send(
        &a,
        SendWr::new(
            3,
            SendOp::Read {
                remote_addr: remote.at(10),
                rkey: remote.key,
            },
        )
        .sge(local.sge_at(0, 5990)),
    );
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.status, s.opcode, s.byte_len),
        (WcStatus::Success, WcOpcode::RdmaRead, 5990)
    );
    assert_eq!(
        net.read(0, local.addr, 5990),
        pattern(6000, 7)[10..].to_vec()
    );
    assert!(net.recv_wcs(&b).is_empty());
}

#[test]
fn atomic_cmp_swap_matches_and_mismatches() {
    let (mut net, a, _b) = pair();
    let remote = net.rbuf(1, 64);
    let local = net.rbuf(0, 16);
    net.write_u64(1, remote.addr + 8, 0x1111);
    // Match: swapped, the old value comes back.
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::CmpSwap {
                remote_addr: remote.at(8),
                rkey: remote.key,
                compare: 0x1111,
                swap: 0x2222,
            },
        )
        .sge(local.sge_at(0, 8)),
    );
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.status, s.opcode, s.byte_len),
        (WcStatus::Success, WcOpcode::CmpSwap, 8)
    );
    assert_eq!(net.read_u64(0, local.addr), 0x1111);
    assert_eq!(net.read_u64(1, remote.addr + 8), 0x2222);
    // No match: unchanged, the current value comes back.
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::CmpSwap {
                remote_addr: remote.at(8),
                rkey: remote.key,
                compare: 0x1111,
                swap: 0x3333,
            },
        )
        .sge(local.sge_at(8, 8)),
    );
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    assert_eq!(net.read_u64(0, local.addr + 8), 0x2222);
    assert_eq!(net.read_u64(1, remote.addr + 8), 0x2222);
    // Neighbouring words untouched.
    assert_eq!(net.read_u64(1, remote.addr), 0);
    assert_eq!(net.read_u64(1, remote.addr + 16), 0);
}

#[test]
fn atomic_fetch_add_adds_and_returns_the_old_value() {
    let (mut net, a, _b) = pair();
    let remote = net.rbuf(1, 8);
    let local = net.rbuf(0, 8);
    net.write_u64(1, remote.addr, u64::MAX - 1);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::FetchAdd {
                remote_addr: remote.addr,
                rkey: remote.key,
                add: 3,
            },
        )
        .sge(local.sge()),
    );
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.status, s.opcode),
        (WcStatus::Success, WcOpcode::FetchAdd)
    );
    assert_eq!(net.read_u64(0, local.addr), u64::MAX - 1);
    assert_eq!(net.read_u64(1, remote.addr), 1, "wraps modulo 2^64");
}

#[test]
fn local_inv_invalidates_a_local_key() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 32);
    let dst = net.rbuf(1, 32);
    net.post_send(&a, SendWr::new(1, SendOp::LocalInv { key: src.key }));
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.status, s.opcode),
        (WcStatus::Success, WcOpcode::LocalInv)
    );
    assert!(!net.vf(0).mr(src.key).unwrap().valid);
    assert!(net.log.is_empty(), "LOCAL_INV puts nothing on the wire");
    // Using the key afterwards is a local protection error.
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(2, SendOp::Send).sge(src.sge()));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::LocProtErr);
}

#[test]
fn inline_data_is_sent_from_the_wqe() {
    let (mut net, a, b) = pair();
    let dst = net.rbuf(1, 128);
    let wdst = net.rbuf(1, 128);
    net.post_recv(&b, 1, vec![dst.sge()]);
    let data = pattern(100, 8);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(&data));
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::Write {
                remote_addr: wdst.addr,
                rkey: wdst.key,
            },
        )
        .inline(&data[..50]),
    );
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(wcs.len(), 2);
    assert!(wcs.iter().all(|w| w.is_ok()));
    assert_eq!(one(net.recv_wcs(&b)).byte_len, 100);
    assert_eq!(net.read(1, dst.addr, 100), data);
    assert_eq!(net.read(1, wdst.addr, 50), data[..50].to_vec());
    // Inline larger than max_inline_data is refused at post time.
    let big = vec![1u8; 129];
    assert!(net
        .vf(0)
        .post_send(a.qpn, &SendWr::new(3, SendOp::Send).inline(&big))
        .is_err());
    // Inline is only for outbound data.
    let r = net.vf(0).post_send(
        a.qpn,
        &SendWr::new(
            3,
            SendOp::Read {
                remote_addr: 0,
                rkey: MemKey(0),
            },
        )
        .inline(&[1]),
    );
    assert!(r.is_err());
}

#[test]
fn multi_sge_on_both_sides() {
    let (mut net, a, b) = pair();
    // Sender: three pieces of two different MRs; receiver: four pieces.
    let s1 = net.rbuf(0, 700);
    let s2 = net.rbuf(0, 2000);
    let data = pattern(2700, 9);
    net.fill(&s1, &data[..700]);
    net.write(0, s2.addr, &data[700..]);
    let r1 = net.rbuf(1, 1000);
    let r2 = net.rbuf(1, 2000);
    let sgl_send = vec![s1.sge_at(0, 300), s2.sge_at(0, 2000), s1.sge_at(300, 400)];
    let expect: Vec<u8> = [&data[..300], &data[700..2700], &data[300..700]].concat();
    let sgl_recv = vec![
        r1.sge_at(0, 500),
        r2.sge_at(0, 1700),
        r1.sge_at(600, 400),
        r1.sge_at(500, 100),
    ];
    net.post_recv(&b, 1, sgl_recv.clone());
    let mut wr = SendWr::new(1, SendOp::Send);
    wr.sgl = sgl_send.clone();
    net.post_send(&a, wr);
    net.run();
    let w = one(net.send_wcs(&a));
    assert!(w.is_ok(), "{w:?}");
    assert_eq!(one(net.recv_wcs(&b)).byte_len, 2700);
    let mut got = Vec::new();
    for s in &sgl_recv {
        got.extend(net.read(1, s.addr, s.len as usize));
    }
    assert_eq!(got, expect);
    // READ scatters into several local SGEs.
    let remote = net.rbuf(1, 2500);
    net.fill(&remote, &pattern(2500, 10));
    let l1 = net.rbuf(0, 1000);
    let l2 = net.rbuf(0, 1500);
    let mut wr = SendWr::new(
        2,
        SendOp::Read {
            remote_addr: remote.addr,
            rkey: remote.key,
        },
    );
    wr.sgl = vec![l2.sge(), l1.sge()];
    net.post_send(&a, wr);
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    let mut got = net.contents(&l2);
    got.extend(net.contents(&l1));
    assert_eq!(got, pattern(2500, 10));
}

#[test]
fn zero_length_messages() {
    let (mut net, a, b) = pair();
    let remote = net.rbuf(1, 16);
    net.post_recv(&b, 1, vec![]);
    net.post_send(&a, SendWr::new(1, SendOp::Send));
    net.post_recv(&b, 2, vec![]);
    net.post_send(&a, SendWr::new(2, SendOp::SendWithImm { imm: 5 }));
    net.post_send(
        &a,
        SendWr::new(
            3,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        ),
    );
    net.post_send(
        &a,
        SendWr::new(
            4,
            SendOp::Read {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        ),
    );
    // A zero-length WRITE may even carry a key the responder does not know (no memory is touched).
    net.post_send(
        &a,
        SendWr::new(
            5,
            SendOp::Write {
                remote_addr: 0,
                rkey: MemKey(0xdead00),
            },
        ),
    );
    net.run();
    let s = net.send_wcs(&a);
    assert_eq!(
        s.iter()
            .map(|w| (w.wr_id, w.status, w.byte_len))
            .collect::<Vec<_>>(),
        (1..=5)
            .map(|i| (i, WcStatus::Success, 0))
            .collect::<Vec<_>>()
    );
    let r = net.recv_wcs(&b);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].byte_len, r[1].byte_len, r[1].imm), (0, 0, Some(5)));
    assert_eq!(
        net.sent_with(vhca_device::packet::Opcode::RC_READ_RESP_ONLY)
            .len(),
        1
    );
    assert_eq!(net.contents(&remote), vec![0; 16]);
}

#[test]
fn unsignaled_wqes_complete_silently_and_sq_sig_all_overrides() {
    let (mut net, a, b) = pair();
    let remote = net.rbuf(1, 16);
    for i in 0..3 {
        net.post_send(
            &a,
            SendWr::new(
                i,
                SendOp::Write {
                    remote_addr: remote.addr,
                    rkey: remote.key,
                },
            )
            .flags(SendFlags::empty())
            .inline(&[i as u8]),
        );
    }
    net.post_send(
        &a,
        SendWr::new(
            3,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .inline(&[3]),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).wr_id, 3);
    let _ = b;
    let mut net = Net::new(2);
    let (a, _b) = net.rc_pair(
        0,
        1,
        &RcOpts {
            sq_sig_all: true,
            ..RcOpts::default()
        },
    );
    let remote = net.rbuf(1, 16);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .flags(SendFlags::empty())
        .inline(&[1]),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).wr_id, 1);
}

#[test]
fn many_messages_in_flight_complete_in_order() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 64 * 200);
    let dst = net.rbuf(1, 64 * 200);
    net.fill(&src, &pattern(64 * 200, 11));
    for i in 0..200u32 {
        net.post_recv(&b, i as u64, vec![dst.sge_at(i * 64, 64)]);
        net.post_send(
            &a,
            SendWr::new(i as u64, SendOp::Send).sge(src.sge_at(i * 64, 64)),
        );
    }
    net.run();
    let s = net.send_wcs(&a);
    assert_eq!(
        s.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        (0..200).collect::<Vec<u64>>()
    );
    let r = net.recv_wcs(&b);
    assert_eq!(
        r.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        (0..200).collect::<Vec<u64>>()
    );
    assert_eq!(net.contents(&dst), pattern(64 * 200, 11));
}

#[test]
fn both_directions_at_once() {
    let (mut net, a, b) = pair();
    let sa = net.rbuf(0, 4000);
    let sb = net.rbuf(1, 4000);
    let ra = net.rbuf(0, 4000);
    let rb = net.rbuf(1, 4000);
    net.fill(&sa, &pattern(4000, 12));
    net.fill(&sb, &pattern(4000, 13));
    net.post_recv(&a, 1, vec![ra.sge()]);
    net.post_recv(&b, 1, vec![rb.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(sa.sge()));
    net.post_send(&b, SendWr::new(1, SendOp::Send).sge(sb.sge()));
    let rr = net.rbuf(0, 4000);
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::Read {
                remote_addr: sb.addr,
                rkey: sb.key,
            },
        )
        .sge(rr.sge()),
    );
    net.run();
    assert_eq!(net.send_wcs(&a).len(), 2);
    assert_eq!(net.send_wcs(&b).len(), 1);
    assert_eq!(net.contents(&rb), pattern(4000, 12));
    assert_eq!(net.contents(&ra), pattern(4000, 13));
    assert_eq!(net.contents(&rr), pattern(4000, 13));
    let _ = (Sge::default(), Access::empty());
}
