//! Setting up QPs between VFs of a world the way verbs programs do (RESET → INIT → RTR → RTS).

use crate::world::{VfAddr, World};
use vhca_device::{
    Access, AhAttr, CqHandle, Mtu, PdHandle, Psn, QpAttr, QpAttrMask as M, QpCap, QpInitAttr,
    QpState, QpType, Qpn, SrqHandle, VerbsResult,
};

/// The RC connection parameters both ends agree on out of band.
#[derive(Clone, Copy, Debug)]
pub struct RcParams {
    pub mtu: Mtu,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub min_rnr_timer: u8,
    pub max_rd_atomic: u8,
    pub access: Access,
}

impl Default for RcParams {
    fn default() -> RcParams {
        RcParams {
            mtu: Mtu::Mtu1024,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 12,
            max_rd_atomic: 16,
            access: Access::LOCAL_WRITE
                | Access::REMOTE_WRITE
                | Access::REMOTE_READ
                | Access::REMOTE_ATOMIC,
        }
    }
}

/// One end of a QP: where it lives and the objects it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpEnd {
    pub vf: VfAddr,
    pub pd: PdHandle,
    pub cq: CqHandle,
    pub qpn: Qpn,
}

/// Creates a QP (PD and CQ given) in RESET.
pub fn create_qp(
    w: &mut World,
    vf: VfAddr,
    pd: PdHandle,
    cq: CqHandle,
    qp_type: QpType,
    cap: QpCap,
    srq: Option<SrqHandle>,
) -> VerbsResult<QpEnd> {
    let qpn = w.vf_mut(vf).create_qp(QpInitAttr {
        qp_type,
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq,
        cap,
        sq_sig_all: false,
    })?;
    Ok(QpEnd { vf, pd, cq, qpn })
}

/// Moves `me` to RTS connected to `peer`, with `my_psn` as its send PSN and `peer_psn` as the
/// PSN it expects.
pub fn connect(
    w: &mut World,
    me: QpEnd,
    peer: QpEnd,
    my_psn: Psn,
    peer_psn: Psn,
    p: &RcParams,
) -> VerbsResult<()> {
    let dgid = w.gid(peer.vf);
    let vf = w.vf_mut(me.vf);
    let mut a = QpAttr {
        qp_state: QpState::Init,
        pkey_index: 0,
        port_num: 1,
        qp_access_flags: p.access,
        ..QpAttr::default()
    };
    vf.modify_qp(
        me.qpn,
        &a,
        M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS,
    )?;
    a.qp_state = QpState::Rtr;
    a.path_mtu = p.mtu;
    a.dest_qp_num = peer.qpn;
    a.rq_psn = peer_psn;
    a.max_dest_rd_atomic = p.max_rd_atomic;
    a.min_rnr_timer = p.min_rnr_timer;
    a.ah_attr = AhAttr {
        dgid,
        hop_limit: 64,
        ..AhAttr::default()
    };
    vf.modify_qp(
        me.qpn,
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
    a.sq_psn = my_psn;
    a.timeout = p.timeout;
    a.retry_cnt = p.retry_cnt;
    a.rnr_retry = p.rnr_retry;
    a.max_rd_atomic = p.max_rd_atomic;
    vf.modify_qp(
        me.qpn,
        &a,
        M::STATE | M::SQ_PSN | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::MAX_QP_RD_ATOMIC,
    )
}

/// Moves UC QP `me` to RTS connected to `peer`: the UC masks (no timeout, retries, RNR timer
/// or READ/atomic resources).
pub fn connect_uc(
    w: &mut World,
    me: QpEnd,
    peer: QpEnd,
    my_psn: Psn,
    peer_psn: Psn,
    mtu: Mtu,
    access: Access,
) -> VerbsResult<()> {
    let dgid = w.gid(peer.vf);
    let vf = w.vf_mut(me.vf);
    let mut a = QpAttr {
        qp_state: QpState::Init,
        pkey_index: 0,
        port_num: 1,
        qp_access_flags: access,
        ..QpAttr::default()
    };
    vf.modify_qp(
        me.qpn,
        &a,
        M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS,
    )?;
    a.qp_state = QpState::Rtr;
    a.path_mtu = mtu;
    a.dest_qp_num = peer.qpn;
    a.rq_psn = peer_psn;
    a.ah_attr = AhAttr {
        dgid,
        hop_limit: 64,
        ..AhAttr::default()
    };
    vf.modify_qp(
        me.qpn,
        &a,
        M::STATE | M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN,
    )?;
    a.qp_state = QpState::Rts;
    a.sq_psn = my_psn;
    vf.modify_qp(me.qpn, &a, M::STATE | M::SQ_PSN)
}

/// Moves a UD QP to RTS with Q_Key `qkey`.
pub fn activate_ud(w: &mut World, me: QpEnd, qkey: u32, sq_psn: Psn) -> VerbsResult<()> {
    let vf = w.vf_mut(me.vf);
    let mut a = QpAttr {
        qp_state: QpState::Init,
        pkey_index: 0,
        port_num: 1,
        qkey,
        ..QpAttr::default()
    };
    vf.modify_qp(me.qpn, &a, M::STATE | M::PKEY_INDEX | M::PORT | M::QKEY)?;
    a.qp_state = QpState::Rtr;
    vf.modify_qp(me.qpn, &a, M::STATE)?;
    a.qp_state = QpState::Rts;
    a.sq_psn = sq_psn;
    vf.modify_qp(me.qpn, &a, M::STATE | M::SQ_PSN)
}
