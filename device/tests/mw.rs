//! Memory windows end to end: binding (type 1 and type 2), remote WRITE/READ/atomics through a
//! window, invalidation (LOCAL_INV, SEND_WITH_INV), key byte changes, and every MW_BIND_ERR
//! case (docs/transport.md, "Memory windows").

mod common;
use common::*;
use vhca_device::{
    Access, MemKey, MwType, SendOp, SendWr, VerbsError, WcOpcode, WcStatus, WorkCompletion,
};

fn pair() -> (Net, Ep, Ep) {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    (net, a, b)
}

/// An MR on node 1 that windows may be bound to (it grants no remote right itself).
fn bindable(net: &mut Net, len: u32) -> Buf {
    net.buf(1, len, Access::LOCAL_WRITE | Access::MW_BIND)
}

fn bind_op(mw: MemKey, key_byte: u8, mr: &Buf, off: u64, len: u64, access: Access) -> SendOp {
    SendOp::BindMw {
        mw,
        rkey: MemKey::from_parts(mw.index(), key_byte),
        mr: mr.key,
        addr: mr.at(off),
        len,
        access,
    }
}

/// Posts a bind on `ep`, runs, and returns its completion.
fn bind(net: &mut Net, ep: &Ep, op: SendOp) -> WorkCompletion {
    net.post_send(ep, SendWr::new(900, op));
    net.run();
    one(net.send_wcs(ep))
}

fn rw() -> Access {
    Access::REMOTE_READ | Access::REMOTE_WRITE
}

/// WRITE `data` from node 0 to `remote_addr` under `rkey`; returns the send status.
fn write(net: &mut Net, a: &Ep, remote_addr: u64, rkey: MemKey, data: &[u8]) -> WcStatus {
    let src = net.rbuf(0, data.len() as u32);
    net.fill(&src, data);
    net.post_send(
        a,
        SendWr::new(1, SendOp::Write { remote_addr, rkey }).sge(src.sge()),
    );
    net.run();
    one(net.send_wcs(a)).status
}

fn read(net: &mut Net, a: &Ep, remote_addr: u64, rkey: MemKey, len: u32) -> (WcStatus, Vec<u8>) {
    let dst = net.rbuf(0, len);
    net.post_send(
        a,
        SendWr::new(2, SendOp::Read { remote_addr, rkey }).sge(dst.sge()),
    );
    net.run();
    let st = one(net.send_wcs(a)).status;
    (st, net.contents(&dst))
}

#[test]
fn type1_window_grants_write_and_read_inside_it_only() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type1).unwrap();
    let w = bind(&mut net, &b, bind_op(mw, 0x42, &mr, 1024, 512, rw()));
    assert_eq!((w.status, w.opcode), (WcStatus::Success, WcOpcode::BindMw));
    let rkey = MemKey::from_parts(mw.index(), 0x42);
    assert!(net.log.is_empty(), "a bind puts nothing on the wire");
    let data = pattern(512, 7);
    assert_eq!(
        write(&mut net, &a, mr.at(1024), rkey, &data),
        WcStatus::Success
    );
    assert_eq!(net.read(1, mr.at(1024), 512), data);
    let (st, got) = read(&mut net, &a, mr.at(1024), rkey, 512);
    assert_eq!((st, got), (WcStatus::Success, data));
    // One byte past the window (still inside the MR) is an access error.
    assert_eq!(
        write(&mut net, &a, mr.at(1024 + 1), rkey, &pattern(512, 1)),
        WcStatus::RemAccessErr
    );
}

#[test]
fn a_window_grants_only_its_own_rights() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type1).unwrap();
    let w = bind(
        &mut net,
        &b,
        bind_op(mw, 1, &mr, 0, 4096, Access::REMOTE_READ),
    );
    assert_eq!(w.status, WcStatus::Success);
    let rkey = MemKey::from_parts(mw.index(), 1);
    let (st, _) = read(&mut net, &a, mr.addr, rkey, 64);
    assert_eq!(st, WcStatus::Success);
    assert_eq!(
        write(&mut net, &a, mr.addr, rkey, &[1; 8]),
        WcStatus::RemAccessErr
    );
}

#[test]
fn atomics_go_through_a_window_with_atomic_rights() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 64);
    net.write_u64(1, mr.addr + 8, 40);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type2).unwrap();
    let w = bind(
        &mut net,
        &b,
        bind_op(mw, 9, &mr, 0, 64, Access::REMOTE_ATOMIC),
    );
    assert_eq!(w.status, WcStatus::Success);
    let local = net.rbuf(0, 8);
    // A type 2 window is valid on the QP it was bound on: b, the peer of a.
    net.post_send(
        &a,
        SendWr::new(
            3,
            SendOp::FetchAdd {
                remote_addr: mr.addr + 8,
                rkey: MemKey::from_parts(mw.index(), 9),
                add: 2,
            },
        )
        .sge(local.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(net.read_u64(0, local.addr), 40);
    assert_eq!(net.read_u64(1, mr.addr + 8), 42);
}

#[test]
fn rebinding_a_type1_window_changes_its_key_and_the_old_key_fails() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type1).unwrap();
    assert_eq!(
        bind(&mut net, &b, bind_op(mw, 1, &mr, 0, 4096, rw())).status,
        WcStatus::Success
    );
    let old = MemKey::from_parts(mw.index(), 1);
    assert_eq!(
        bind(&mut net, &b, bind_op(old, 2, &mr, 0, 2048, rw())).status,
        WcStatus::Success,
        "a type 1 window is bound again in place"
    );
    let new = MemKey::from_parts(mw.index(), 2);
    assert_eq!(net.vf(1).mw(new).unwrap().key, new);
    assert_eq!(
        write(&mut net, &a, mr.addr, new, &[5; 16]),
        WcStatus::Success
    );
    assert_eq!(
        write(&mut net, &a, mr.addr, old, &[6; 16]),
        WcStatus::RemAccessErr
    );
}

#[test]
fn binding_a_type1_window_with_length_zero_unbinds_it() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type1).unwrap();
    bind(&mut net, &b, bind_op(mw, 1, &mr, 0, 4096, rw()));
    let k1 = MemKey::from_parts(mw.index(), 1);
    let w = bind(&mut net, &b, bind_op(k1, 2, &mr, 0, 0, rw()));
    assert_eq!(w.status, WcStatus::Success);
    assert!(net.vf(1).mw(mw).unwrap().binding.is_none());
    // The MR is free of windows again.
    assert_eq!(net.vf(1).dereg_mr(mr.key), Ok(()));
    assert_eq!(
        write(
            &mut net,
            &a,
            mr.addr,
            MemKey::from_parts(mw.index(), 2),
            &[1; 8]
        ),
        WcStatus::RemAccessErr
    );
}

#[test]
fn a_type2_window_is_valid_only_on_the_qp_it_was_bound_on() {
    let mut net = Net::new(2);
    let opts = RcOpts::default();
    let (a1, b1) = net.rc_pair(0, 1, &opts);
    let (a2, b2) = net.rc_pair(0, 1, &opts);
    assert_eq!(b1.pd, b2.pd);
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b1.pd, MwType::Type2).unwrap();
    assert_eq!(
        bind(&mut net, &b1, bind_op(mw, 3, &mr, 0, 4096, rw())).status,
        WcStatus::Success
    );
    let rkey = MemKey::from_parts(mw.index(), 3);
    assert_eq!(
        write(&mut net, &a1, mr.addr, rkey, &[1; 8]),
        WcStatus::Success
    );
    assert_eq!(
        write(&mut net, &a2, mr.addr, rkey, &[2; 8]),
        WcStatus::RemAccessErr,
        "the same R_Key on another QP of the same PD"
    );
    assert_eq!(net.read(1, mr.addr, 8), vec![1; 8]);
    let _ = b2;
}

#[test]
fn local_inv_frees_a_type2_window_which_can_then_be_bound_again() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type2).unwrap();
    bind(&mut net, &b, bind_op(mw, 1, &mr, 0, 4096, rw()));
    let k1 = MemKey::from_parts(mw.index(), 1);
    net.post_send(&b, SendWr::new(5, SendOp::LocalInv { key: k1 }));
    net.run();
    let w = one(net.send_wcs(&b));
    assert_eq!(
        (w.status, w.opcode),
        (WcStatus::Success, WcOpcode::LocalInv)
    );
    assert_eq!(
        write(&mut net, &a, mr.addr, k1, &[1; 8]),
        WcStatus::RemAccessErr,
        "access after invalidation"
    );
}

#[test]
fn a_free_type2_window_binds_again_with_a_new_key_byte() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type2).unwrap();
    bind(&mut net, &b, bind_op(mw, 1, &mr, 0, 4096, rw()));
    let k1 = MemKey::from_parts(mw.index(), 1);
    net.post_send(&b, SendWr::new(5, SendOp::LocalInv { key: k1 }));
    net.run();
    assert_eq!(one(net.send_wcs(&b)).status, WcStatus::Success);
    let w = bind(&mut net, &b, bind_op(k1, 2, &mr, 0, 64, rw()));
    assert_eq!(w.status, WcStatus::Success);
    let k2 = MemKey::from_parts(mw.index(), 2);
    assert_eq!(write(&mut net, &a, mr.addr, k2, &[7; 8]), WcStatus::Success);
    assert_eq!(net.read(1, mr.addr, 8), vec![7; 8]);
}

#[test]
fn send_with_inv_invalidates_a_type2_window_bound_on_the_receiving_qp() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type2).unwrap();
    bind(&mut net, &b, bind_op(mw, 4, &mr, 0, 4096, rw()));
    let k = MemKey::from_parts(mw.index(), 4);
    let dst = net.rbuf(1, 64);
    net.post_recv(&b, 7, vec![dst.sge()]);
    let src = net.rbuf(0, 16);
    net.post_send(
        &a,
        SendWr::new(8, SendOp::SendWithInv { rkey: k }).sge(src.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.status, r.invalidated_rkey), (WcStatus::Success, Some(k)));
    assert!(net.vf(1).mw(k).unwrap().binding.is_none());
    assert_eq!(
        write(&mut net, &a, mr.addr, k, &[1; 8]),
        WcStatus::RemAccessErr
    );
}

#[test]
fn send_with_inv_of_a_type1_window_is_refused() {
    let (mut net, a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type1).unwrap();
    bind(&mut net, &b, bind_op(mw, 4, &mr, 0, 4096, rw()));
    let k = MemKey::from_parts(mw.index(), 4);
    let dst = net.rbuf(1, 64);
    net.post_recv(&b, 7, vec![dst.sge()]);
    let src = net.rbuf(0, 16);
    net.post_send(
        &a,
        SendWr::new(8, SendOp::SendWithInv { rkey: k }).sge(src.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemOpErr);
    assert_eq!(one(net.recv_wcs(&b)).status, WcStatus::LocQpOpErr);
    assert!(net.vf(1).mw(k).unwrap().binding.is_some(), "still bound");
}

#[test]
fn local_inv_of_a_type1_window_is_refused() {
    let (mut net, _a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type1).unwrap();
    bind(&mut net, &b, bind_op(mw, 1, &mr, 0, 4096, rw()));
    let k = MemKey::from_parts(mw.index(), 1);
    net.post_send(&b, SendWr::new(5, SendOp::LocalInv { key: k }));
    net.run();
    assert_eq!(one(net.send_wcs(&b)).status, WcStatus::LocProtErr);
}

#[test]
fn local_inv_of_a_free_type2_window_is_refused() {
    let (mut net, _a, b) = pair();
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type2).unwrap();
    net.post_send(&b, SendWr::new(5, SendOp::LocalInv { key: mw }));
    net.run();
    assert_eq!(one(net.send_wcs(&b)).status, WcStatus::LocProtErr);
}

#[test]
fn an_mr_with_a_bound_window_cannot_be_invalidated_or_deregistered() {
    let (mut net, _a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type1).unwrap();
    bind(&mut net, &b, bind_op(mw, 1, &mr, 0, 4096, rw()));
    assert!(matches!(
        net.vf(1).dereg_mr(mr.key),
        Err(VerbsError::Busy(_))
    ));
    assert!(matches!(
        net.vf(1).dealloc_pd(b.pd),
        Err(VerbsError::Busy(_))
    ));
    net.post_send(&b, SendWr::new(5, SendOp::LocalInv { key: mr.key }));
    net.run();
    assert_eq!(one(net.send_wcs(&b)).status, WcStatus::LocProtErr);
    // Deallocating the window releases the MR.
    net.vf(1).dealloc_mw(mw).unwrap();
    assert!(net.vf(1).mw(mw).is_none());
    assert_eq!(net.vf(1).dereg_mr(mr.key), Ok(()));
}

#[test]
fn destroying_the_qp_frees_its_type2_windows() {
    let (mut net, _a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type2).unwrap();
    bind(&mut net, &b, bind_op(mw, 1, &mr, 0, 4096, rw()));
    net.vf(1).destroy_qp(b.qpn).unwrap();
    assert!(net.vf(1).mw(mw).unwrap().binding.is_none());
    assert_eq!(net.vf(1).dereg_mr(mr.key), Ok(()));
}

#[test]
fn a_window_key_is_no_local_key() {
    let (mut net, a, b) = pair();
    let mr = net.buf(0, 64, Access::LOCAL_WRITE | Access::MW_BIND);
    let mw = net.vf(0).alloc_mw(a.pd, MwType::Type1).unwrap();
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::BindMw {
                mw,
                rkey: MemKey::from_parts(mw.index(), 1),
                mr: mr.key,
                addr: mr.addr,
                len: 64,
                access: Access::REMOTE_READ,
            },
        ),
    );
    let dst = net.rbuf(1, 64);
    net.post_recv(&b, 1, vec![dst.sge()]);
    let sge = vhca_device::Sge {
        addr: mr.addr,
        len: 8,
        lkey: MemKey::from_parts(mw.index(), 1),
    };
    net.post_send(&a, SendWr::new(2, SendOp::Send).sge(sge));
    net.run();
    let w = net.send_wcs(&a);
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].status, WcStatus::Success);
    assert_eq!(w[1].status, WcStatus::LocProtErr);
}

#[test]
fn alloc_and_dealloc_check_their_arguments() {
    let (mut net, _a, b) = pair();
    let vf = net.vf(1);
    assert_eq!(
        vf.alloc_mw(vhca_device::PdHandle(999), MwType::Type1),
        Err(VerbsError::NotFound("PD"))
    );
    let mw = vf.alloc_mw(b.pd, MwType::Type2).unwrap();
    assert!(vhca_device::mw::is_mw_key(mw));
    assert!(vf.dereg_mr(mw).is_err(), "a window is no MR");
    assert!(
        vf.dealloc_mw(MemKey::from_parts(1, 0)).is_err(),
        "an MR is no window"
    );
    vf.dealloc_mw(mw).unwrap();
    assert!(vf.dealloc_mw(mw).is_err(), "twice");
}

// ---- MW_BIND_ERR ----------------------------------------------------------------------------

/// The status of one bind on a fresh pair; `make` builds the WR from the pair, the window and
/// an MR with MW_BIND and LOCAL_WRITE.
fn bind_status(kind: MwType, make: impl FnOnce(&mut Net, &Ep, MemKey, &Buf) -> SendOp) -> WcStatus {
    let (mut net, _a, b) = pair();
    let mr = bindable(&mut net, 4096);
    let mw = net.vf(1).alloc_mw(b.pd, kind).unwrap();
    let op = make(&mut net, &b, mw, &mr);
    let w = bind(&mut net, &b, op);
    assert_eq!(w.opcode, WcOpcode::BindMw);
    if w.status != WcStatus::Success {
        assert_eq!(net.state(&b), vhca_device::QpState::Err);
    }
    w.status
}

#[test]
fn bind_errors_are_mw_bind_err() {
    use MwType::{Type1, Type2};
    type Make = Box<dyn FnOnce(&mut Net, &Ep, MemKey, &Buf) -> SendOp>;
    let cases: Vec<(&str, MwType, Make)> = vec![
        (
            "MR without MW_BIND",
            Type1,
            Box::new(|net, _, mw, _| {
                let mr = net.buf(1, 64, Access::LOCAL_WRITE | Access::REMOTE_WRITE);
                bind_op(mw, 1, &mr, 0, 64, Access::REMOTE_READ)
            }),
        ),
        (
            "window past the MR's end",
            Type1,
            Box::new(|_, _, mw, mr| bind_op(mw, 1, mr, 1, 4096, Access::REMOTE_READ)),
        ),
        (
            "window before the MR",
            Type2,
            Box::new(|_, _, mw, mr| SendOp::BindMw {
                mw,
                rkey: mw,
                mr: mr.key,
                addr: mr.addr - 1,
                len: 2,
                access: Access::REMOTE_READ,
            }),
        ),
        (
            "window wrapping the address space",
            Type1,
            Box::new(|_, _, mw, mr| SendOp::BindMw {
                mw,
                rkey: mw,
                mr: mr.key,
                addr: u64::MAX,
                len: 2,
                access: Access::REMOTE_READ,
            }),
        ),
        (
            "remote write on an MR without local write",
            Type1,
            Box::new(|net, _, mw, _| {
                let mr = net.buf(1, 64, Access::MW_BIND);
                bind_op(mw, 1, &mr, 0, 64, Access::REMOTE_WRITE)
            }),
        ),
        (
            "remote atomic on an MR without local write",
            Type2,
            Box::new(|net, _, mw, _| {
                let mr = net.buf(1, 64, Access::MW_BIND);
                bind_op(mw, 1, &mr, 0, 64, Access::REMOTE_ATOMIC)
            }),
        ),
        (
            "zero-based window",
            Type1,
            Box::new(|_, _, mw, mr| {
                bind_op(mw, 1, mr, 0, 64, Access::REMOTE_READ | Access::ZERO_BASED)
            }),
        ),
        (
            "local rights on a window",
            Type2,
            Box::new(|_, _, mw, mr| bind_op(mw, 1, mr, 0, 64, Access::LOCAL_WRITE)),
        ),
        (
            "type 2 window still bound",
            Type2,
            Box::new(|net, b, mw, mr| {
                assert_eq!(
                    bind(net, b, bind_op(mw, 1, mr, 0, 64, Access::REMOTE_READ)).status,
                    WcStatus::Success
                );
                bind_op(
                    MemKey::from_parts(mw.index(), 1),
                    2,
                    mr,
                    0,
                    64,
                    Access::REMOTE_READ,
                )
            }),
        ),
        (
            "type 2 window bound with length 0",
            Type2,
            Box::new(|_, _, mw, mr| bind_op(mw, 1, mr, 0, 0, Access::REMOTE_READ)),
        ),
        (
            "window of another PD",
            Type1,
            Box::new(|net, _, _, mr| {
                let pd2 = net.vf(1).alloc_pd().unwrap();
                let mw2 = net.vf(1).alloc_mw(pd2, MwType::Type1).unwrap();
                bind_op(mw2, 1, mr, 0, 64, Access::REMOTE_READ)
            }),
        ),
        (
            "MR of another PD",
            Type2,
            Box::new(|net, _, mw, _| {
                let pd2 = net.vf(1).alloc_pd().unwrap();
                let mr2 = net.buf_in(1, pd2, 64, Access::LOCAL_WRITE | Access::MW_BIND);
                bind_op(mw, 1, &mr2, 0, 64, Access::REMOTE_READ)
            }),
        ),
        (
            "stale window key byte",
            Type1,
            Box::new(|_, _, mw, mr| {
                bind_op(
                    MemKey::from_parts(mw.index(), mw.key_byte().wrapping_add(1)),
                    1,
                    mr,
                    0,
                    64,
                    Access::REMOTE_READ,
                )
            }),
        ),
        (
            "no such window",
            Type1,
            Box::new(|_, _, mw, mr| {
                bind_op(
                    MemKey::from_parts(mw.index() + 5, 0),
                    1,
                    mr,
                    0,
                    64,
                    Access::REMOTE_READ,
                )
            }),
        ),
        (
            "an MR key as the window",
            Type1,
            Box::new(|_, _, _, mr| bind_op(mr.key, 1, mr, 0, 64, Access::REMOTE_READ)),
        ),
        (
            "stale MR key byte",
            Type2,
            Box::new(|_, _, mw, mr| {
                let stale = Buf {
                    key: MemKey::from_parts(mr.key.index(), mr.key.key_byte().wrapping_add(1)),
                    ..*mr
                };
                bind_op(mw, 1, &stale, 0, 64, Access::REMOTE_READ)
            }),
        ),
        (
            "invalidated MR",
            Type1,
            Box::new(|net, b, mw, mr| {
                net.post_send(b, SendWr::new(5, SendOp::LocalInv { key: mr.key }));
                net.run();
                assert_eq!(one(net.send_wcs(b)).status, WcStatus::Success);
                bind_op(mw, 1, mr, 0, 64, Access::REMOTE_READ)
            }),
        ),
    ];
    for (what, kind, make) in cases {
        assert_eq!(bind_status(kind, make), WcStatus::MwBindErr, "{what}");
    }
}

#[test]
fn bind_on_uc_works_and_ud_refuses_it_at_post() {
    let mut net = Net::new(2);
    let (_a, b) = net.uc_pair(0, 1, &RcOpts::default());
    let mr = bindable(&mut net, 64);
    let mw = net.vf(1).alloc_mw(b.pd, MwType::Type2).unwrap();
    assert_eq!(
        bind(
            &mut net,
            &b,
            bind_op(mw, 1, &mr, 0, 64, Access::REMOTE_WRITE)
        )
        .status,
        WcStatus::Success
    );
    let ud = net.ud_qp(1, 0x11, None);
    let dest = net.ud_dest(&ud, &ud, 0x11);
    let wr = SendWr::new(1, bind_op(mw, 2, &mr, 0, 64, Access::REMOTE_READ)).ud(dest);
    assert!(matches!(
        net.vf(1).post_send(ud.qpn, &wr),
        Err(VerbsError::Invalid(_))
    ));
}
