//! v1 → v2: what makes a v1 blob readable, and what `vhca state upgrade` runs.
//!
//! Field for field, with no judgement: a v1 state becomes the v2 state that says the same
//! thing, and the v2 checks (`load.rs`) then accept or refuse it as they would a v2 blob. The
//! one change of type is the requester's WQE index (`usize` in v1, `u32` in v2): an index that
//! does not fit becomes `u32::MAX`, which the checks refuse as beyond the send queue.

use super::v1::*;
use super::v2::*;

impl From<VfStateV1> for VfStateV2 {
    fn from(s: VfStateV1) -> Self {
        let i = s.identity;
        VfStateV2 {
            identity: IdentityStateV2 {
                node_guid: i.node_guid,
                port_guid: i.port_guid,
                gid: i.gid,
                mac: i.mac,
                port_mtu: i.port_mtu,
                limits: i.limits,
                key_byte: s.key_byte,
            },
            pds: s.pds,
            mrs: s.mrs.into_iter().map(|(n, m)| (n, m.into())).collect(),
            cqs: s.cqs.into_iter().map(|(n, c)| (n, c.into())).collect(),
            srqs: s.srqs.into_iter().map(|(n, q)| (n, q.into())).collect(),
            ahs: s
                .ahs
                .into_iter()
                .map(|(n, a)| {
                    (
                        n,
                        AhStateV2 {
                            pd: a.pd,
                            attr: a.attr,
                        },
                    )
                })
                .collect(),
            qps: s.qps.into_iter().map(Into::into).collect(),
            events: EventsStateV2 {
                async_events: s.async_events,
                cq_events: s.cq_events,
            },
            counters: s.counters.into(),
            mws: Vec::new(),
            fast_reg_mrs: Vec::new(),
        }
    }
}

impl From<MrStateV1> for MrStateV2 {
    fn from(m: MrStateV1) -> Self {
        MrStateV2 {
            pd: m.pd,
            iova: m.iova,
            len: m.len,
            access: m.access,
            key: m.key,
            map: match m.map {
                MrMapStateV1::Contiguous { gpa } => MrMapStateV2::Contiguous { gpa },
                MrMapStateV1::Pages { page_shift, pages } => {
                    MrMapStateV2::Pages { page_shift, pages }
                }
            },
            valid: m.valid,
        }
    }
}

impl From<CqStateV1> for CqStateV2 {
    fn from(c: CqStateV1) -> Self {
        CqStateV2 {
            capacity: c.capacity,
            entries: c.entries,
            armed: c.armed.map(|a| match a {
                ArmStateV1::Next => ArmStateV2::Next,
                ArmStateV1::Solicited => ArmStateV2::Solicited,
            }),
            overflowed: c.overflowed,
        }
    }
}

impl From<SrqStateV1> for SrqStateV2 {
    fn from(q: SrqStateV1) -> Self {
        SrqStateV2 {
            pd: q.pd,
            max_wr: q.max_wr,
            max_sge: q.max_sge,
            queue: q.queue,
            limit: q.limit,
        }
    }
}

impl From<QpStateV1> for QpStateV2 {
    fn from(q: QpStateV1) -> Self {
        QpStateV2 {
            qpn: q.qpn,
            init: q.init,
            attr: q.attr,
            rq: q.rq,
            req: q.req.into(),
            resp: q.resp.into(),
            src_port: q.src_port,
        }
    }
}

impl From<SendWqeStateV1> for SendWqeStateV2 {
    fn from(w: SendWqeStateV1) -> Self {
        SendWqeStateV2 {
            wr_id: w.wr_id,
            op: w.op,
            flags: w.flags,
            signaled: w.signaled,
            sgl: w.sgl,
            inline: w.inline,
            len: w.len,
            ud: w.ud,
            started: w.started,
            first_psn: w.first_psn,
            npkts: w.npkts,
            resp_pkts: w.resp_pkts,
            done: w.done,
        }
    }
}

impl From<RequesterStateV1> for RequesterStateV2 {
    fn from(r: RequesterStateV1) -> Self {
        RequesterStateV2 {
            sq: r.sq.into_iter().map(Into::into).collect(),
            next: u32::try_from(r.next).unwrap_or(u32::MAX),
            next_pkt: r.next_pkt,
            psn: r.psn,
            una: r.una,
            sent_hw: r.sent_hw,
            retry_left: r.retry_left,
            rnr_left: r.rnr_left,
            deadline: r.deadline,
            rnr_until: r.rnr_until,
            since_ack_req: r.since_ack_req,
            halted: r.halted,
            drained_notified: r.drained_notified,
            retrying_from: r.retrying_from,
        }
    }
}

impl From<ResponderStateV1> for ResponderStateV2 {
    fn from(s: ResponderStateV1) -> Self {
        ResponderStateV2 {
            epsn: s.epsn,
            msn: s.msn,
            nak_sent: s.nak_sent,
            current: s.current.map(|m| match m {
                InMessageStateV1::Send { wqe, offset } => InMessageStateV2::Send { wqe, offset },
                InMessageStateV1::Write {
                    va,
                    rkey,
                    len,
                    offset,
                } => InMessageStateV2::Write {
                    va,
                    rkey,
                    len,
                    offset,
                },
            }),
            resources: s
                .resources
                .into_iter()
                .map(|r| match r {
                    RdAtomicResourceStateV1::Read { psn, npkts } => {
                        RdAtomicResourceStateV2::Read { psn, npkts }
                    }
                    RdAtomicResourceStateV1::Atomic { psn, orig } => {
                        RdAtomicResourceStateV2::Atomic { psn, orig }
                    }
                })
                .collect(),
            out: s
                .out
                .into_iter()
                .map(|o| match o {
                    OutgoingStateV1::Ack { psn, syndrome, msn } => {
                        OutgoingStateV2::Ack { psn, syndrome, msn }
                    }
                    OutgoingStateV1::AtomicAck { psn, orig, msn } => {
                        OutgoingStateV2::AtomicAck { psn, orig, msn }
                    }
                    OutgoingStateV1::Read {
                        psn,
                        va,
                        rkey,
                        left,
                        first,
                        msn,
                    } => OutgoingStateV2::Read {
                        psn,
                        va,
                        rkey,
                        left,
                        first,
                        msn,
                    },
                })
                .collect(),
        }
    }
}

impl From<CountersStateV1> for CountersStateV2 {
    fn from(c: CountersStateV1) -> Self {
        CountersStateV2 {
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            retransmits: c.retransmits,
            retry_timeouts: c.retry_timeouts,
            rnr_naks_sent: c.rnr_naks_sent,
            rnr_naks_received: c.rnr_naks_received,
            seq_naks_sent: c.seq_naks_sent,
            seq_naks_received: c.seq_naks_received,
            duplicate_requests: c.duplicate_requests,
            out_of_sequence: c.out_of_sequence,
            implied_naks: c.implied_naks,
            rx_dropped: c.rx_dropped,
            qkey_violations: c.qkey_violations,
            ud_no_recv: c.ud_no_recv,
            completions: c.completions,
            error_completions: c.error_completions,
        }
    }
}
