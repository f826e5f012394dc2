//! A VF as a migration finds most of a big one: many connected RC QPs with nothing in flight,
//! made through the verbs API as a program would (`ibv_create_qp`, then INIT, RTR, RTS), beside
//! a few MRs, CQs and AHs. What `vhca state bench` measures the codecs on.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vhca_device::checkpoint::VfStateV2;
use vhca_device::{
    Access, AhAttr, CqHandle, Gid, Mtu, Pf, QpAttr, QpAttrMask as M, QpCap, QpInitAttr, QpState,
    QpType, Qpn, VecMemory, VerbsResult, Vf,
};

/// MRs, CQs and AHs beside the QPs: enough that every object section is there and has a few
/// items, few enough that the QPs dominate as they do on a real VF with many connections.
pub const MRS: u32 = 8;
pub const CQS: u32 = 4;
pub const AHS: u32 = 4;
/// Peers the QPs connect to (a QP's GID is one of these).
const PEERS: u8 = 16;
const MR_BYTES: u64 = 64 << 10;

/// How many objects of each kind the VF has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Objects {
    pub pds: u32,
    pub mrs: u32,
    pub cqs: u32,
    pub ahs: u32,
    pub qps: u32,
}

/// A VF with `qps` idle RC QPs in RTS, each connected to a remote QP on one of a few peers.
/// PSNs and remote QPNs are drawn from a seeded generator, as rdma-core draws them at random:
/// PSNs near zero would flatter a varint codec. The same `qps` gives the same VF.
pub fn build(qps: u32) -> VerbsResult<(Vf, Objects)> {
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(qps));
    let pf = Pf::new(0, 1);
    let mut vf = Vf::new(
        pf.default_identity(0),
        VecMemory::shared((u64::from(MRS) * MR_BYTES) as usize),
    );
    let pd = vf.alloc_pd()?;
    let rw = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ;
    for i in 0..u64::from(MRS) {
        vf.reg_mr(pd, i * MR_BYTES, MR_BYTES, rw)?;
    }
    let cqs: Vec<CqHandle> = (0..CQS)
        .map(|_| vf.create_cq(4096))
        .collect::<VerbsResult<_>>()?;
    let peer = |p: u8| Gid::from_ipv4([10, 200, 1, p + 1]);
    for p in 0..AHS as u8 {
        vf.create_ah(
            pd,
            AhAttr {
                dgid: peer(p),
                ..Default::default()
            },
        )?;
    }
    for i in 0..qps {
        let cq = cqs[i as usize % cqs.len()];
        let q = vf.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: None,
            cap: QpCap::default(),
            sq_sig_all: false,
        })?;
        let mut a = QpAttr {
            qp_state: QpState::Init,
            qp_access_flags: rw,
            ..Default::default()
        };
        vf.modify_qp(q, &a, M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS)?;
        a.qp_state = QpState::Rtr;
        a.ah_attr = AhAttr {
            dgid: peer((i % u32::from(PEERS)) as u8),
            ..Default::default()
        };
        a.path_mtu = Mtu::Mtu4096;
        a.dest_qp_num = Qpn(rng.gen_range(17..=Qpn::MASK));
        a.rq_psn = vhca_device::Psn::new(rng.gen());
        a.max_dest_rd_atomic = 16;
        a.min_rnr_timer = 12;
        vf.modify_qp(
            q,
            &a,
            M::STATE
                | M::AV
                | M::PATH_MTU
                | M::DEST_QPN
                | M::RQ_PSN
                | M::MAX_DEST_RD_ATOMIC
                | M::MIN_RNR_TIMER,
        )?;
        a.qp_state = QpState::Rts;
        a.sq_psn = vhca_device::Psn::new(rng.gen());
        a.max_rd_atomic = 16;
        vf.modify_qp(
            q,
            &a,
            M::STATE | M::SQ_PSN | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::MAX_QP_RD_ATOMIC,
        )?;
    }
    let objects = Objects {
        pds: 1,
        mrs: MRS,
        cqs: CQS,
        ahs: AHS,
        qps,
    };
    Ok((vf, objects))
}

/// Moves one QP in every hundred (at least one) on by one message each way, as traffic between
/// a pre-copy round and the blackout would: a one-packet request sent and acknowledged, one
/// received. Edits the wire state directly; the verbs API cannot move an idle QP's PSNs
/// without traffic. Returns how many QPs changed.
pub fn touch_one_percent(s: &mut VfStateV2) -> usize {
    let mut n = 0;
    for q in s.qps.iter_mut().step_by(100) {
        q.req.psn = q.req.psn.add(1);
        q.req.una = q.req.psn;
        q.req.sent_hw = q.req.psn;
        q.resp.epsn = q.resp.epsn.add(1);
        q.resp.msn = q.resp.msn.next();
        n += 1;
    }
    let c = &mut s.counters;
    let packets = n as u64 * 2;
    c.tx_packets += packets;
    c.rx_packets += packets;
    c.completions += n as u64;
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhca_device::checkpoint::{self, codec::BINARY};
    use vhca_device::{Nanos, VfLimits};

    /// The VF is what a migration would carry: every QP connected, and a state that a
    /// destination accepts before and after the touch; the touch changes what it says.
    #[test]
    fn the_idle_vf_is_connected_valid_and_touched_one_percent() {
        let (vf, o) = build(250).unwrap();
        let mut s = checkpoint::state_of(&vf, Nanos(0));
        assert_eq!(
            (
                s.pds.len(),
                s.mrs.len(),
                s.cqs.len(),
                s.ahs.len(),
                s.qps.len()
            ),
            (1, MRS as usize, CQS as usize, AHS as usize, 250)
        );
        assert_eq!(o.qps, 250);
        assert!(s
            .qps
            .iter()
            .all(|q| q.state() == QpState::Rts && q.qp_type() == QpType::Rc));
        assert!(s.qps.iter().all(|q| q.req.sq.is_empty() && q.rq.is_empty()));
        checkpoint::validate(&s, &VfLimits::default()).unwrap();
        let base = s.clone();
        assert_eq!(touch_one_percent(&mut s), 3, "QPs 0, 100 and 200");
        checkpoint::validate(&s, &VfLimits::default()).unwrap();
        let d = checkpoint::delta(&base, &s).unwrap();
        assert_eq!(d.changed.qps.len(), 3);
        assert_eq!(checkpoint::apply(&base, d).unwrap(), s);
        let one = build(1).unwrap().0;
        assert_eq!(checkpoint::state_of(&one, Nanos(0)).qps.len(), 1);
        // The same count builds the same VF (the PSNs are seeded).
        assert_eq!(
            checkpoint::save(&build(250).unwrap().0, Nanos(0), BINARY),
            checkpoint::save(&vf, Nanos(0), BINARY)
        );
    }
}
