//! Fast-register MRs end to end: `alloc_mr`, REG_MR work requests mapping a guest page list,
//! LOCAL_INV and SEND_WITH_INV, key byte changes, and every LOC_QP_OP_ERR case
//! (docs/transport.md, "Fast-register MRs").

mod common;
use common::*;
use vhca_device::{
    Access, MemKey, PdHandle, SendOp, SendWr, VerbsError, WcOpcode, WcStatus, WorkCompletion,
};

fn pair() -> (Net, Ep, Ep) {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    (net, a, b)
}

/// A 4 KiB-aligned page of node 1's memory.
fn page(net: &mut Net) -> u64 {
    let a = net.alloc(1, 8192);
    (a + 4095) & !4095
}

/// Writes a page list into node 1's memory; returns its address.
fn page_list(net: &mut Net, pages: &[u64]) -> u64 {
    let at = net.alloc(1, (pages.len() * 8).max(8) as u32);
    let bytes: Vec<u8> = pages.iter().flat_map(|p| p.to_le_bytes()).collect();
    net.write(1, at, &bytes);
    at
}

fn all() -> Access {
    Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ
}

fn reg(key: MemKey, list: u64, npages: u32, iova: u64, len: u64, access: Access) -> SendOp {
    SendOp::RegMr {
        mr: key,
        page_list: list,
        npages,
        page_shift: 12,
        iova,
        len,
        access,
    }
}

fn post(net: &mut Net, ep: &Ep, op: SendOp) -> WorkCompletion {
    net.post_send(ep, SendWr::new(700, op));
    net.run();
    one(net.send_wcs(ep))
}

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

#[test]
fn an_allocated_fast_reg_mr_is_invalid_until_registered() {
    let (mut net, a, b) = pair();
    let key = net.vf(1).alloc_mr(b.pd, 4).unwrap();
    let mr = net.vf(1).mr(key).unwrap();
    assert!(!mr.valid);
    assert_eq!(mr.fast_reg, Some(4));
    assert_eq!(write(&mut net, &a, 0, key, &[1; 8]), WcStatus::RemAccessErr);
}

#[test]
fn reg_mr_maps_a_page_list_and_remote_access_reaches_the_pages() {
    let (mut net, a, b) = pair();
    let (p0, p1) = (page(&mut net), page(&mut net));
    // The region's pages in reverse order of their addresses, and an iova of our choosing.
    let list = page_list(&mut net, &[p1, p0]);
    let key = net.vf(1).alloc_mr(b.pd, 8).unwrap();
    let new = MemKey::from_parts(key.index(), 0x77);
    let iova = 0x7000_0000_0800;
    let w = post(&mut net, &b, reg(new, list, 2, iova, 4096, all()));
    assert_eq!((w.status, w.opcode), (WcStatus::Success, WcOpcode::RegMr));
    assert!(net.log.is_empty(), "REG_MR puts nothing on the wire");
    let data = pattern(4096, 3);
    assert_eq!(write(&mut net, &a, iova, new, &data), WcStatus::Success);
    // iova .. +2048 is the second half of page p1, the rest the first half of p0.
    assert_eq!(net.read(1, p1 + 2048, 2048), data[..2048]);
    assert_eq!(net.read(1, p0, 2048), data[2048..]);
    // READ back through the same key.
    let dst = net.rbuf(0, 4096);
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::Read {
                remote_addr: iova,
                rkey: new,
            },
        )
        .sge(dst.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(net.contents(&dst), data);
}

#[test]
fn local_inv_then_reg_mr_with_a_new_key_byte_and_the_old_key_fails() {
    let (mut net, a, b) = pair();
    let p = page(&mut net);
    let list = page_list(&mut net, &[p]);
    let key = net.vf(1).alloc_mr(b.pd, 1).unwrap();
    let k1 = MemKey::from_parts(key.index(), 1);
    assert_eq!(
        post(&mut net, &b, reg(k1, list, 1, p, 4096, all())).status,
        WcStatus::Success
    );
    assert_eq!(write(&mut net, &a, p, k1, &[1; 8]), WcStatus::Success);
    let w = post(&mut net, &b, SendOp::LocalInv { key: k1 });
    assert_eq!(
        (w.status, w.opcode),
        (WcStatus::Success, WcOpcode::LocalInv)
    );
    assert_eq!(
        write(&mut net, &a, p, k1, &[2; 8]),
        WcStatus::RemAccessErr,
        "access after invalidation"
    );
}

#[test]
fn a_reregistered_mr_answers_to_its_new_key_only() {
    let (mut net, a, b) = pair();
    let p = page(&mut net);
    let list = page_list(&mut net, &[p]);
    let key = net.vf(1).alloc_mr(b.pd, 1).unwrap();
    let k1 = MemKey::from_parts(key.index(), 1);
    post(&mut net, &b, reg(k1, list, 1, p, 4096, all()));
    post(&mut net, &b, SendOp::LocalInv { key: k1 });
    let k2 = MemKey::from_parts(key.index(), 2);
    assert_eq!(
        post(&mut net, &b, reg(k2, list, 1, p, 4096, all())).status,
        WcStatus::Success
    );
    assert_eq!(write(&mut net, &a, p, k2, &[3; 8]), WcStatus::Success);
    assert_eq!(net.read(1, p, 8), vec![3; 8]);
    assert_eq!(
        write(&mut net, &a, p, k1, &[4; 8]),
        WcStatus::RemAccessErr,
        "the old key byte"
    );
    assert_eq!(net.read(1, p, 8), vec![3; 8]);
    // Deregistration takes the current key.
    assert!(net.vf(1).dereg_mr(k1).is_err());
    assert_eq!(net.vf(1).dereg_mr(k2), Ok(()));
}

#[test]
fn send_with_inv_invalidates_a_fast_reg_mr() {
    let (mut net, a, b) = pair();
    let p = page(&mut net);
    let list = page_list(&mut net, &[p]);
    let key = net.vf(1).alloc_mr(b.pd, 1).unwrap();
    let k = MemKey::from_parts(key.index(), 9);
    post(&mut net, &b, reg(k, list, 1, p, 4096, all()));
    let dst = net.rbuf(1, 64);
    net.post_recv(&b, 1, vec![dst.sge()]);
    let src = net.rbuf(0, 8);
    net.post_send(
        &a,
        SendWr::new(2, SendOp::SendWithInv { rkey: k }).sge(src.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(one(net.recv_wcs(&b)).invalidated_rkey, Some(k));
    assert!(!net.vf(1).mr(k).unwrap().valid);
}

#[test]
fn alloc_mr_checks_its_arguments() {
    let (mut net, _a, b) = pair();
    let vf = net.vf(1);
    assert_eq!(vf.alloc_mr(b.pd, 0), Err(VerbsError::Invalid("max_num_sg")));
    assert_eq!(
        vf.alloc_mr(b.pd, vhca_device::fast_reg::MAX_FAST_REG_PAGES + 1),
        Err(VerbsError::Invalid("max_num_sg"))
    );
    assert_eq!(
        vf.alloc_mr(PdHandle(77), 1),
        Err(VerbsError::NotFound("PD"))
    );
    assert!(vf
        .alloc_mr(b.pd, vhca_device::fast_reg::MAX_FAST_REG_PAGES)
        .is_ok());
}

// ---- LOC_QP_OP_ERR --------------------------------------------------------------------------

/// The status of one REG_MR on a fresh pair; `make` gets the net, b, an FRMR (max_num_sg 2) of
/// b's PD and a page with its one-entry page list.
fn reg_status(make: impl FnOnce(&mut Net, &Ep, MemKey, u64, u64) -> SendOp) -> WcStatus {
    let (mut net, _a, b) = pair();
    let p = page(&mut net);
    let list = page_list(&mut net, &[p]);
    let key = net.vf(1).alloc_mr(b.pd, 2).unwrap();
    let op = make(&mut net, &b, key, p, list);
    let w = post(&mut net, &b, op);
    assert_eq!(w.opcode, WcOpcode::RegMr);
    w.status
}

#[test]
fn reg_mr_errors_are_loc_qp_op_err() {
    type Make = Box<dyn FnOnce(&mut Net, &Ep, MemKey, u64, u64) -> SendOp>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "an MR that is still valid",
            Box::new(|net, b, key, p, list| {
                assert_eq!(
                    post(net, b, reg(key, list, 1, p, 4096, all())).status,
                    WcStatus::Success
                );
                reg(key, list, 1, p, 4096, all())
            }),
        ),
        (
            "an MR registered by reg_mr",
            Box::new(|net, b, _, p, list| {
                let mr = net.rbuf(1, 64);
                post(net, b, SendOp::LocalInv { key: mr.key });
                reg(mr.key, list, 1, p, 4096, all())
            }),
        ),
        (
            "an MR of another PD",
            Box::new(|net, _, _, p, list| {
                let pd2 = net.vf(1).alloc_pd().unwrap();
                let k2 = net.vf(1).alloc_mr(pd2, 2).unwrap();
                reg(k2, list, 1, p, 4096, all())
            }),
        ),
        (
            "no such MR",
            Box::new(|_, _, key, p, list| {
                reg(
                    MemKey::from_parts(key.index() + 9, 0),
                    list,
                    1,
                    p,
                    4096,
                    all(),
                )
            }),
        ),
        (
            "more pages than max_num_sg",
            Box::new(|net, _, key, p, _| {
                let list = page_list(net, &[p, p, p]);
                reg(key, list, 3, p, 3 * 4096, all())
            }),
        ),
        (
            "no pages",
            Box::new(|_, _, key, p, list| reg(key, list, 0, p, 0, all())),
        ),
        (
            "a page list shorter than the region",
            Box::new(|_, _, key, p, list| reg(key, list, 1, p, 4097, all())),
        ),
        (
            "a page list longer than the region",
            Box::new(|net, _, key, p, _| {
                let list = page_list(net, &[p, p]);
                reg(key, list, 2, p, 4096, all())
            }),
        ),
        (
            "a page size below 4 KiB",
            Box::new(|_, _, key, p, list| SendOp::RegMr {
                mr: key,
                page_list: list,
                npages: 1,
                page_shift: 11,
                iova: p,
                len: 2048,
                access: all(),
            }),
        ),
        (
            "a page size above 1 GiB",
            Box::new(|_, _, key, p, list| SendOp::RegMr {
                mr: key,
                page_list: list,
                npages: 1,
                page_shift: 31,
                iova: p,
                len: 2048,
                access: all(),
            }),
        ),
        (
            "a page list outside guest memory",
            Box::new(|_, _, key, p, _| reg(key, MEM_SIZE as u64 - 4, 1, p, 4096, all())),
        ),
        (
            "a page outside guest memory",
            Box::new(|net, _, key, _, _| {
                let list = page_list(net, &[MEM_SIZE as u64]);
                reg(key, list, 1, 0, 4096, all())
            }),
        ),
        (
            "a page address that is not page-aligned",
            Box::new(|net, _, key, p, _| {
                let list = page_list(net, &[p + 8]);
                reg(key, list, 1, p, 64, all())
            }),
        ),
        (
            "a page address at the top of the address space",
            Box::new(|net, _, key, _, _| {
                let list = page_list(net, &[!4095]);
                reg(key, list, 1, 0, 4096, all())
            }),
        ),
        (
            "remote write without local write",
            Box::new(|_, _, key, p, list| reg(key, list, 1, p, 4096, Access::REMOTE_WRITE)),
        ),
        (
            "a zero-based region",
            Box::new(|_, _, key, p, list| {
                reg(
                    key,
                    list,
                    1,
                    p,
                    4096,
                    Access::LOCAL_WRITE | Access::ZERO_BASED,
                )
            }),
        ),
        (
            "a region wrapping the address space",
            Box::new(|_, _, key, _, list| reg(key, list, 1, u64::MAX - 10, 64, all())),
        ),
        (
            "a window key",
            Box::new(|net, b, _, p, list| {
                let mw = net
                    .vf(1)
                    .alloc_mw(b.pd, vhca_device::MwType::Type2)
                    .unwrap();
                reg(mw, list, 1, p, 4096, all())
            }),
        ),
    ];
    for (what, make) in cases {
        assert_eq!(reg_status(make), WcStatus::LocQpOpErr, "{what}");
    }
}

#[test]
fn local_inv_of_an_unregistered_fast_reg_mr_is_refused() {
    let (mut net, _a, b) = pair();
    let key = net.vf(1).alloc_mr(b.pd, 1).unwrap();
    assert_eq!(
        post(&mut net, &b, SendOp::LocalInv { key }).status,
        WcStatus::LocProtErr
    );
}

#[test]
fn windows_bind_to_a_registered_fast_reg_mr() {
    let (mut net, a, b) = pair();
    let p = page(&mut net);
    let list = page_list(&mut net, &[p]);
    let key = net.vf(1).alloc_mr(b.pd, 1).unwrap();
    post(
        &mut net,
        &b,
        reg(key, list, 1, p, 4096, Access::LOCAL_WRITE | Access::MW_BIND),
    );
    let mw = net
        .vf(1)
        .alloc_mw(b.pd, vhca_device::MwType::Type2)
        .unwrap();
    let w = post(
        &mut net,
        &b,
        SendOp::BindMw {
            mw,
            rkey: MemKey::from_parts(mw.index(), 5),
            mr: key,
            addr: p,
            len: 128,
            access: Access::REMOTE_WRITE,
        },
    );
    assert_eq!(w.status, WcStatus::Success);
    let wk = MemKey::from_parts(mw.index(), 5);
    assert_eq!(write(&mut net, &a, p, wk, &[9; 128]), WcStatus::Success);
    assert_eq!(net.read(1, p, 128), vec![9; 128]);
    assert_eq!(
        write(&mut net, &a, p, key, &[1; 8]),
        WcStatus::RemAccessErr,
        "the MR itself grants no remote write"
    );
}
