//! Memory windows and fast-register MRs across a checkpoint: bound windows (type 1 and 2, with
//! their keys and QP), free ones, registered and unregistered fast-register MRs restore
//! exactly and keep working; in a delta too; and a state whose windows or fast-register MRs
//! do not hang together is refused.

mod common;
use common::*;
use vhca_device::checkpoint::{self, codec, CheckpointError, MwBindingStateV2, VfStateV2};
use vhca_device::{Access, MemKey, MwType, Nanos, Qpn, SendOp, SendWr, VfLimits, WcStatus};

struct Setup {
    net: Net,
    a: Ep,
    b: Ep,
    mr: Buf,
    /// (type 1 bound, type 2 bound on b, type 2 free) window keys, as bound.
    t1: MemKey,
    t2: MemKey,
    free: MemKey,
    /// A registered fast-register MR (key, page) and an unregistered one.
    fr: MemKey,
    fr_page: u64,
    fr_idle: MemKey,
}

fn ok(net: &mut Net, ep: &Ep, op: SendOp) {
    net.post_send(ep, SendWr::new(1, op));
    net.run();
    assert_eq!(one(net.send_wcs(ep)).status, WcStatus::Success);
}

fn setup() -> Setup {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    let mr = net.buf(1, 8192, Access::LOCAL_WRITE | Access::MW_BIND);
    let vf = net.vf(1);
    let m1 = vf.alloc_mw(b.pd, MwType::Type1).unwrap();
    let m2 = vf.alloc_mw(b.pd, MwType::Type2).unwrap();
    let free = vf.alloc_mw(b.pd, MwType::Type2).unwrap();
    let fr0 = vf.alloc_mr(b.pd, 4).unwrap();
    let fr_idle = vf.alloc_mr(b.pd, 2).unwrap();
    let bind = |mw: MemKey, kb: u8, off: u64| SendOp::BindMw {
        mw,
        rkey: MemKey::from_parts(mw.index(), kb),
        mr: mr.key,
        addr: mr.at(off),
        len: 4096,
        access: Access::REMOTE_WRITE | Access::REMOTE_READ,
    };
    ok(&mut net, &b, bind(m1, 0x11, 0));
    ok(&mut net, &b, bind(m2, 0x22, 4096));
    let at = net.alloc(1, 8192);
    let fr_page = (at + 4095) & !4095;
    let list = net.alloc(1, 8);
    net.write(1, list, &fr_page.to_le_bytes());
    let fr = MemKey::from_parts(fr0.index(), 0x33);
    ok(
        &mut net,
        &b,
        SendOp::RegMr {
            mr: fr,
            page_list: list,
            npages: 1,
            page_shift: 12,
            iova: 0x9000_0000,
            len: 4096,
            access: Access::LOCAL_WRITE | Access::REMOTE_WRITE,
        },
    );
    Setup {
        net,
        a,
        b,
        mr,
        t1: MemKey::from_parts(m1.index(), 0x11),
        t2: MemKey::from_parts(m2.index(), 0x22),
        free,
        fr,
        fr_page,
        fr_idle,
    }
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

/// Replaces node 1's VF by one saved and loaded in `c`.
fn migrate_node1(net: &mut Net, c: &'static dyn codec::Codec) {
    let (pf, slot) = (net.nodes[1].pf, net.nodes[1].vf);
    let vf = net.pfs[pf].destroy_vf(slot).unwrap();
    let blob = checkpoint::save(&vf, net.now, c);
    let back = checkpoint::load(&blob, vf.memory().clone(), net.now).unwrap();
    assert!(
        checkpoint::save(&back, net.now, c) == blob,
        "load then save is byte-exact"
    );
    net.pfs[pf].insert_vf(slot, back).unwrap();
}

#[test]
fn windows_and_fast_reg_mrs_survive_a_checkpoint_and_keep_working() {
    for c in codec::all().iter().copied() {
        let mut s = setup();
        let before = checkpoint::state_of(s.net.vf_ref(1), Nanos(0));
        assert_eq!(before.mws.len(), 3);
        assert_eq!(before.fast_reg_mrs.len(), 2);
        migrate_node1(&mut s.net, c);
        assert!(checkpoint::state_of(s.net.vf_ref(1), Nanos(0)) == before);
        let net = &mut s.net;
        let (a, b) = (s.a, s.b);
        assert_eq!(write(net, &a, s.mr.at(8), s.t1, &[1; 8]), WcStatus::Success);
        assert_eq!(
            write(net, &a, s.mr.at(4096), s.t2, &[2; 8]),
            WcStatus::Success
        );
        assert_eq!(
            write(net, &a, 0x9000_0010, s.fr, &[3; 8]),
            WcStatus::Success
        );
        assert_eq!(net.read(1, s.mr.at(8), 8), vec![1; 8]);
        assert_eq!(net.read(1, s.mr.at(4096), 8), vec![2; 8]);
        assert_eq!(net.read(1, s.fr_page + 0x10, 8), vec![3; 8]);
        let vf = net.vf(1);
        assert_eq!(vf.mr(s.fr_idle).unwrap().fast_reg, Some(2));
        assert!(vf.mw(s.free).unwrap().binding.is_none());
        // The restored type 2 window is still tied to b: invalidating it there works, and the
        // key is dead afterwards.
        ok(net, &b, SendOp::LocalInv { key: s.t2 });
        assert_eq!(
            write(net, &a, s.mr.at(4096), s.t2, &[4; 8]),
            WcStatus::RemAccessErr,
            "{}",
            c.name()
        );
    }
}

#[test]
fn a_delta_carries_windows_and_fast_reg_mrs() {
    let mut s = setup();
    let base = checkpoint::state_of(s.net.vf_ref(1), Nanos(0));
    ok(&mut s.net, &s.b, SendOp::LocalInv { key: s.t2 });
    s.net.vf(1).dealloc_mw(s.free).unwrap();
    let now = checkpoint::state_of(s.net.vf_ref(1), Nanos(0));
    assert!(now != base);
    let d = checkpoint::delta(&base, &now).unwrap();
    let blob = checkpoint::container::encode_delta(&d, codec::BINARY).unwrap();
    let back = checkpoint::decode_delta(&base, &blob).unwrap();
    assert!(back == now);
    assert_eq!(back.mws.len(), 2);
    assert!(back.mws.iter().all(|(_, w)| w.key != s.free));
}

fn bound(st: &mut VfStateV2, i: usize) -> &mut MwBindingStateV2 {
    st.mws[i].1.binding.as_mut().unwrap()
}

fn refused(s: VfStateV2, what: &str) {
    let r = checkpoint::restore(
        s,
        vhca_device::VecMemory::shared(0),
        Nanos(0),
        &VfLimits::default(),
    );
    assert!(
        matches!(r, Err(CheckpointError::Invalid(_))),
        "{what}: {:?}",
        r.err()
    );
}

#[test]
fn inconsistent_windows_and_fast_reg_mrs_are_refused() {
    let s = setup();
    let good = checkpoint::state_of(s.net.vf_ref(1), Nanos(0));
    checkpoint::validate(&good, &VfLimits::default()).unwrap();
    // Which entries are which.
    let t1 = good.mws.iter().position(|(_, w)| w.key == s.t1).unwrap();
    let t2 = good.mws.iter().position(|(_, w)| w.key == s.t2).unwrap();
    let mr = good
        .mrs
        .iter()
        .position(|(_, m)| m.key == s.mr.key)
        .unwrap();
    type Edit = Box<dyn Fn(&mut VfStateV2)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "a window bound to a missing MR",
            Box::new(move |st| {
                bound(st, t1).mr = MemKey::from_parts(999, 1);
            }),
        ),
        (
            "a window bound under a stale MR key",
            Box::new(move |st| {
                let k = bound(st, t1).mr;
                bound(st, t1).mr = MemKey::from_parts(k.index(), k.key_byte() ^ 1);
            }),
        ),
        (
            "the MR of a window lost MW_BIND",
            Box::new(move |st| {
                st.mrs[mr].1.access = Access::LOCAL_WRITE;
            }),
        ),
        (
            "the MR of a window is invalid",
            Box::new(move |st| st.mrs[mr].1.valid = false),
        ),
        (
            "the MR of a window is gone",
            Box::new(move |st| {
                st.mrs.remove(mr);
            }),
        ),
        (
            "a window past its MR",
            Box::new(move |st| bound(st, t1).len = 1 << 20),
        ),
        (
            "a window wrapping the address space",
            Box::new(move |st| {
                bound(st, t1).addr = u64::MAX;
            }),
        ),
        (
            "a bound window of length 0",
            Box::new(move |st| bound(st, t2).len = 0),
        ),
        (
            "a window with local rights",
            Box::new(move |st| {
                bound(st, t1).access = Access::LOCAL_WRITE;
            }),
        ),
        (
            "a type 2 window on a missing QP",
            Box::new(move |st| {
                bound(st, t2).qpn = Some(Qpn(9999));
            }),
        ),
        (
            "a type 2 window on no QP",
            Box::new(move |st| bound(st, t2).qpn = None),
        ),
        (
            "a type 1 window on a QP",
            Box::new(move |st| {
                let q = st.qps[0].qpn;
                bound(st, t1).qpn = Some(q);
            }),
        ),
        (
            "a window of a missing PD",
            Box::new(move |st| {
                st.mws[t1].1.pd = vhca_device::PdHandle(77);
            }),
        ),
        (
            "a window key that does not name it",
            Box::new(move |st| {
                st.mws[t1].1.key = MemKey::from_parts(5, 0);
            }),
        ),
        (
            "a window number used twice",
            Box::new(move |st| {
                let w = st.mws[t1].clone();
                st.mws.push(w);
            }),
        ),
        ("window number 0", Box::new(move |st| st.mws[t1].0 = 0)),
        (
            "a fast-register MR that does not exist",
            Box::new(move |st| {
                st.fast_reg_mrs[0].0 = 999;
            }),
        ),
        (
            "a fast-register MR listed twice",
            Box::new(move |st| {
                let f = st.fast_reg_mrs[0];
                st.fast_reg_mrs.push(f);
            }),
        ),
        (
            "max_num_sg 0",
            Box::new(move |st| st.fast_reg_mrs[0].1.max_num_sg = 0),
        ),
        (
            "max_num_sg beyond the device's",
            Box::new(move |st| {
                st.fast_reg_mrs[0].1.max_num_sg = 1 << 20;
            }),
        ),
        (
            "more pages than max_num_sg",
            Box::new(move |st| {
                let fr = st
                    .fast_reg_mrs
                    .iter()
                    .find(|f| f.1.max_num_sg == 4)
                    .unwrap()
                    .0;
                let m = st.mrs.iter_mut().find(|m| m.0 == fr).unwrap();
                if let checkpoint::MrMapStateV2::Pages { pages, .. } = &mut m.1.map {
                    *pages = vec![0; 5];
                }
                m.1.len = 5 * 4096;
            }),
        ),
        (
            "a contiguous MR as fast-register",
            Box::new(move |st| {
                let n = st.mrs[mr].0;
                st.fast_reg_mrs[0].0 = n;
            }),
        ),
    ];
    for (what, edit) in cases {
        let mut st = good.clone();
        edit(&mut st);
        refused(st, what);
    }
}
