//! ATOMIC WRITE and FLUSH (IBTA 1.5, as Linux rxe ≥ 6.2 does them): what goes on the wire,
//! what lands in memory, every error status, duplicates and lost responses, and checkpoints.

mod common;
use common::*;
use vhca_device::checkpoint::{self, codec};
use vhca_device::packet::{Feth, Opcode as O};
use vhca_device::{
    Access, FlushLevel, FlushPlacement, MemKey, Nanos, SendOp, SendWr, Sge, VecMemory, VerbsError,
    WcOpcode, WcStatus,
};

const FLUSHABLE: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ)
    .union(Access::REMOTE_ATOMIC)
    .union(Access::FLUSH_GLOBAL);

fn opts() -> RcOpts {
    RcOpts {
        timeout: 10,
        access: FLUSHABLE,
        ..RcOpts::default()
    }
}

fn pair_with(o: &RcOpts) -> (Net, Ep, Ep) {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, o);
    (net, a, b)
}

fn atomic_write(id: u64, remote_addr: u64, rkey: MemKey, value: u64) -> SendWr {
    SendWr::new(
        id,
        SendOp::AtomicWrite {
            remote_addr,
            rkey,
            value,
        },
    )
}

fn flush(id: u64, remote_addr: u64, rkey: MemKey, len: u32, level: FlushLevel) -> SendWr {
    SendWr::new(
        id,
        SendOp::Flush {
            remote_addr,
            rkey,
            len,
            placement: FlushPlacement::GLOBAL,
            level,
        },
    )
}

fn status_of(net: &mut Net, ep: &Ep) -> (WcStatus, WcOpcode) {
    let w = one(net.send_wcs(ep));
    (w.status, w.opcode)
}

#[test]
fn atomic_write_stores_eight_bytes_and_is_answered_by_an_empty_read_response() {
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    net.write_u64(1, remote.addr + 8, 0x1111_1111_1111_1111);
    net.post_send(
        &a,
        atomic_write(7, remote.addr + 8, remote.key, 0x0102_0304_0506_0708),
    );
    net.run();
    let w = one(net.send_wcs(&a));
    assert_eq!(
        (w.wr_id, w.status, w.opcode),
        (7, WcStatus::Success, WcOpcode::AtomicWrite)
    );
    assert_eq!(net.read_u64(1, remote.addr + 8), 0x0102_0304_0506_0708);
    // Its neighbours are untouched.
    assert_eq!(net.read_u64(1, remote.addr), 0);
    assert_eq!(net.read_u64(1, remote.addr + 16), 0);
    // On the wire: RETH (len 8) and the 8 bytes in memory order, AckReq; the answer is a
    // READ RESPONSE ONLY with an AETH and no payload (rxe's send_read_response_ack).
    let req = net.sent_with(O::RC_ATOMIC_WRITE);
    assert_eq!(req.len(), 1);
    let p = &req[0].pkt;
    let reth = p.ext.reth.unwrap();
    assert_eq!(
        (reth.va, reth.rkey, reth.len),
        (remote.addr + 8, remote.key, 8)
    );
    assert_eq!(
        p.payload.to_vec(),
        0x0102_0304_0506_0708u64.to_le_bytes().to_vec()
    );
    assert!(p.bth.ack_req);
    let resp = net.sent_with(O::RC_READ_RESP_ONLY);
    assert_eq!(resp.len(), 1);
    assert!(resp[0].pkt.payload.is_empty());
    assert!(resp[0].pkt.ext.aeth.is_some());
    assert_eq!(resp[0].pkt.bth.psn, p.bth.psn);
    assert!(net.sent_with(O::RC_ACK).is_empty(), "no plain ACK for it");
}

#[test]
fn flush_of_a_range_and_of_a_whole_mr_completes_after_the_writes_before_it() {
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 8192, FLUSHABLE);
    let src = net.rbuf(0, 5000);
    let data = pattern(5000, 4);
    net.fill(&src, &data);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .sge(src.sge()),
    );
    net.post_send(
        &a,
        flush(2, remote.addr, remote.key, 5000, FlushLevel::Range),
    );
    // The whole MR: the address and length are not looked at.
    net.post_send(&a, flush(3, 0xdead_0000, remote.key, 0, FlushLevel::Mr));
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(
        wcs.iter()
            .map(|w| (w.wr_id, w.status, w.opcode))
            .collect::<Vec<_>>(),
        vec![
            (1, WcStatus::Success, WcOpcode::RdmaWrite),
            (2, WcStatus::Success, WcOpcode::Flush),
            (3, WcStatus::Success, WcOpcode::Flush)
        ]
    );
    assert_eq!(net.read(1, remote.addr, 5000), data);
    let f = net.sent_with(O::RC_FLUSH);
    assert_eq!(f.len(), 2);
    assert_eq!(
        f[0].pkt.ext.feth,
        Some(Feth {
            placement: Feth::GLOBAL,
            selectivity: Feth::RANGE
        })
    );
    assert_eq!(f[1].pkt.ext.feth.unwrap().selectivity, Feth::MR);
    assert_eq!(f[0].pkt.ext.reth.unwrap().len, 5000);
    assert!(f.iter().all(|s| s.pkt.payload.is_empty()));
    // Each FLUSH got its own empty READ RESPONSE ONLY at its PSN.
    let r: Vec<u32> = net
        .sent_with(O::RC_READ_RESP_ONLY)
        .iter()
        .map(|s| s.psn())
        .collect();
    assert_eq!(r, vec![f[0].psn(), f[1].psn()]);
}

#[test]
fn a_misaligned_atomic_write_is_an_invalid_request() {
    let (mut net, a, b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, atomic_write(1, remote.addr + 4, remote.key, 1));
    net.run();
    assert_eq!(
        status_of(&mut net, &a),
        (WcStatus::RemInvReqErr, WcOpcode::AtomicWrite)
    );
    assert_eq!(net.read_u64(1, remote.addr), 0, "nothing written");
    assert_eq!(net.state(&b), vhca_device::QpState::Err);
}

#[test]
fn atomic_write_without_remote_write_is_refused_where_rxe_refuses_it() {
    // The MR does not grant REMOTE_WRITE: a remote access error.
    let (mut net, a, _b) = pair_with(&opts());
    let ro = net.buf(1, 64, Access::REMOTE_READ);
    net.post_send(&a, atomic_write(1, ro.addr, ro.key, 1));
    net.run();
    assert_eq!(
        status_of(&mut net, &a),
        (WcStatus::RemAccessErr, WcOpcode::AtomicWrite)
    );
    // The QP does not grant REMOTE_WRITE: rxe's check_qp_attr_access, an invalid request.
    let (mut net, a, _b) = pair_with(&RcOpts {
        access: Access::LOCAL_WRITE | Access::REMOTE_READ,
        ..opts()
    });
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, atomic_write(1, remote.addr, remote.key, 1));
    net.run();
    assert_eq!(
        status_of(&mut net, &a),
        (WcStatus::RemInvReqErr, WcOpcode::AtomicWrite)
    );
    assert_eq!(net.read_u64(1, remote.addr), 0);
    // A bad key.
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(
        &a,
        atomic_write(1, remote.addr, MemKey(remote.key.0 ^ 1), 1),
    );
    net.run();
    assert_eq!(status_of(&mut net, &a).0, WcStatus::RemAccessErr);
    // Past the end of the MR.
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, atomic_write(1, remote.addr + 64, remote.key, 1));
    net.run();
    assert_eq!(status_of(&mut net, &a).0, WcStatus::RemAccessErr);
}

#[test]
fn flush_errors_follow_the_access_rules() {
    // MR without FLUSH_GLOBAL.
    let (mut net, a, _b) = pair_with(&opts());
    let plain = net.rbuf(1, 64);
    net.post_send(&a, flush(1, plain.addr, plain.key, 64, FlushLevel::Range));
    net.run();
    assert_eq!(
        status_of(&mut net, &a),
        (WcStatus::RemAccessErr, WcOpcode::Flush)
    );
    // A range past the end of the MR.
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, flush(1, remote.addr, remote.key, 65, FlushLevel::Range));
    net.run();
    assert_eq!(status_of(&mut net, &a).0, WcStatus::RemAccessErr);
    // A QP without FLUSH_GLOBAL: an invalid request.
    let (mut net, a, _b) = pair_with(&RcOpts {
        access: FLUSHABLE.difference(Access::FLUSH_GLOBAL),
        ..opts()
    });
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, flush(1, remote.addr, remote.key, 64, FlushLevel::Mr));
    net.run();
    assert_eq!(status_of(&mut net, &a).0, WcStatus::RemInvReqErr);
    // Persistence: guest memory has none, so no MR can be registered for it, and a FLUSH
    // asking for it finds no MR that grants it even on a QP that allows it.
    let (mut net, a, _b) = pair_with(&RcOpts {
        access: FLUSHABLE | Access::FLUSH_PERSISTENT,
        ..opts()
    });
    let addr = net.alloc(1, 64);
    let pd = net.nodes[1].pd;
    assert!(matches!(
        net.vf(1)
            .reg_mr(pd, addr, 64, FLUSHABLE | Access::FLUSH_PERSISTENT),
        Err(VerbsError::Invalid(_))
    ));
    let remote = net.buf(1, 64, FLUSHABLE);
    let mut wr = flush(1, remote.addr, remote.key, 64, FlushLevel::Range);
    if let SendOp::Flush { placement, .. } = &mut wr.op {
        *placement = FlushPlacement::PERSISTENT;
    }
    net.post_send(&a, wr);
    net.run();
    assert_eq!(status_of(&mut net, &a).0, WcStatus::RemAccessErr);
}

#[test]
fn a_responder_without_rd_atomic_resources_refuses_both() {
    let (mut net, a, _b) = pair_with(&RcOpts {
        max_dest_rd_atomic: 0,
        ..opts()
    });
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, flush(1, remote.addr, remote.key, 8, FlushLevel::Range));
    net.run();
    assert_eq!(status_of(&mut net, &a).0, WcStatus::RemInvReqErr);
}

#[test]
fn post_refuses_local_buffers_and_other_transports() {
    let (mut net, a, _b) = pair_with(&opts());
    let local = net.rbuf(0, 8);
    let wr = atomic_write(1, 0x1000, MemKey(1), 1).sge(Sge {
        addr: local.addr,
        len: 8,
        lkey: local.key,
    });
    assert!(matches!(
        net.vf(0).post_send(a.qpn, &wr),
        Err(VerbsError::Invalid(_))
    ));
    let (ua, _ub) = net.uc_pair(0, 1, &opts());
    for wr in [
        atomic_write(1, 0x1000, MemKey(1), 1),
        flush(2, 0x1000, MemKey(1), 8, FlushLevel::Range),
    ] {
        assert!(matches!(
            net.vf(0).post_send(ua.qpn, &wr),
            Err(VerbsError::Invalid(_))
        ));
    }
}

#[test]
fn a_resent_atomic_write_is_answered_without_executing_again() {
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    let local = net.rbuf(0, 8);
    // The ATOMIC WRITE's answer is lost; the FETCH_ADD behind it runs and its ACK arrives,
    // which tells the requester the ATOMIC WRITE's answer went missing: it resends both.
    drop_first(&mut net, 1, 1, |p| p.bth.opcode == O::RC_READ_RESP_ONLY);
    net.post_send(&a, atomic_write(1, remote.addr, remote.key, 1));
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::FetchAdd {
                remote_addr: remote.addr,
                rkey: remote.key,
                add: 5,
            },
        )
        .sge(local.sge()),
    );
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(
        wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
        vec![(1, WcStatus::Success), (2, WcStatus::Success)]
    );
    // Executed once each: a second ATOMIC WRITE after the FETCH_ADD would leave 1.
    assert_eq!(net.read_u64(1, remote.addr), 6);
    assert_eq!(net.read_u64(0, local.addr), 1);
    assert!(
        net.sent_with(O::RC_ATOMIC_WRITE).len() >= 2,
        "it was resent"
    );
    assert!(net.vf(1).counters().duplicate_requests >= 1);
}

#[test]
fn a_lost_flush_answer_is_recovered_by_the_timer() {
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    drop_first(&mut net, 1, 1, |p| p.bth.opcode == O::RC_READ_RESP_ONLY);
    net.post_send(&a, flush(1, remote.addr, remote.key, 64, FlushLevel::Range));
    net.run();
    assert_eq!(
        status_of(&mut net, &a),
        (WcStatus::Success, WcOpcode::Flush)
    );
    assert_eq!(net.sent_with(O::RC_FLUSH).len(), 2);
    assert_eq!(net.sent_with(O::RC_READ_RESP_ONLY).len(), 2);
    assert_eq!(net.vf(1).counters().duplicate_requests, 1);
}

#[test]
fn an_answered_atomic_write_survives_a_checkpoint() {
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, atomic_write(1, remote.addr, remote.key, 9));
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    let now = net.now;
    let before = serde_json::to_value(checkpoint::state_of(net.vf_ref(1), now)).unwrap();
    assert!(
        before.to_string().contains("Answered"),
        "the responder remembers the ATOMIC WRITE"
    );
    for c in codec::all().iter().copied() {
        let blob = checkpoint::save(net.vf_ref(1), now, c);
        let back = checkpoint::load(&blob, VecMemory::shared(MEM_SIZE), Nanos(0)).unwrap();
        let after = serde_json::to_value(checkpoint::state_of(&back, Nanos(0))).unwrap();
        assert_eq!(after, before, "{c:?}");
    }
}

#[test]
fn queued_and_in_flight_atomic_write_and_flush_survive_a_checkpoint() {
    let (mut net, a, _b) = pair_with(&opts());
    let remote = net.buf(1, 64, FLUSHABLE);
    net.post_send(&a, atomic_write(1, remote.addr, remote.key, 3));
    net.post_send(&a, flush(2, remote.addr, remote.key, 64, FlushLevel::Range));
    // Both queued, then both sent (PSNs assigned, responses outstanding).
    for sent in [false, true] {
        if sent {
            let now = net.now;
            while net.vf(0).poll_transmit(now).is_some() {}
        }
        let now = net.now;
        let before = serde_json::to_value(checkpoint::state_of(net.vf_ref(0), now)).unwrap();
        for c in codec::all().iter().copied() {
            let blob = checkpoint::save(net.vf_ref(0), now, c);
            let back = checkpoint::load(&blob, VecMemory::shared(MEM_SIZE), now)
                .unwrap_or_else(|e| panic!("{c:?}, sent {sent}: {e}"));
            let after = serde_json::to_value(checkpoint::state_of(&back, now)).unwrap();
            assert_eq!(after, before, "{c:?}, sent {sent}");
        }
    }
}
