//! What QPs share inside one VF: guest memory, MRs, CQs, SRQs, AHs, events and counters.

use crate::cq::{Cq, Pushed};
use crate::memory::SharedMemory;
use crate::mr::{KeyError, Mr};
use crate::mw::Mw;
use crate::srq::Srq;
use crate::table::Table;
use crate::types::{CqHandle, Gid, MemKey, PdHandle, Qpn};
use crate::verbs::{Access, AhAttr, AsyncEvent, Mtu, VfLimits, WorkCompletion};
use std::collections::VecDeque;

/// A protection domain: a name that MRs, QPs, SRQs and AHs are checked against.
#[derive(Clone, Debug, Default)]
pub struct Pd;

/// An address handle.
#[derive(Clone, Debug)]
pub struct Ah {
    pub pd: PdHandle,
    pub attr: AhAttr,
}

/// Per-VF counters, in the spirit of rxe's hw_counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Request packets sent again (timeout, NAK or RNR go-back-N).
    pub retransmits: u64,
    pub retry_timeouts: u64,
    pub rnr_naks_sent: u64,
    pub rnr_naks_received: u64,
    pub seq_naks_sent: u64,
    pub seq_naks_received: u64,
    pub duplicate_requests: u64,
    pub out_of_sequence: u64,
    pub implied_naks: u64,
    /// Packets dropped on receive: malformed, unknown QP, wrong address, wrong state, ...
    pub rx_dropped: u64,
    pub qkey_violations: u64,
    pub ud_no_recv: u64,
    pub completions: u64,
    pub error_completions: u64,
}

impl Counters {
    /// Every counter by name, in declaration order: what `vhca ctl counters` reports (the live
    /// type has no serde; the checkpoint's copy is `checkpoint::CountersStateV1`).
    pub fn fields(&self) -> [(&'static str, u64); 18] {
        [
            ("tx_packets", self.tx_packets),
            ("tx_bytes", self.tx_bytes),
            ("rx_packets", self.rx_packets),
            ("rx_bytes", self.rx_bytes),
            ("retransmits", self.retransmits),
            ("retry_timeouts", self.retry_timeouts),
            ("rnr_naks_sent", self.rnr_naks_sent),
            ("rnr_naks_received", self.rnr_naks_received),
            ("seq_naks_sent", self.seq_naks_sent),
            ("seq_naks_received", self.seq_naks_received),
            ("duplicate_requests", self.duplicate_requests),
            ("out_of_sequence", self.out_of_sequence),
            ("implied_naks", self.implied_naks),
            ("rx_dropped", self.rx_dropped),
            ("qkey_violations", self.qkey_violations),
            ("ud_no_recv", self.ud_no_recv),
            ("completions", self.completions),
            ("error_completions", self.error_completions),
        ]
    }
}

/// Resources of one VF that the transport reaches while a QP is borrowed.
pub struct Resources {
    pub mem: SharedMemory,
    pub gid: Gid,
    pub port_mtu: Mtu,
    pub limits: VfLimits,
    pub pds: Table<Pd>,
    pub mrs: Table<Mr>,
    /// Memory windows, numbered from 1; their key index is `mw::MW_INDEX_BASE + number`.
    pub mws: Table<Mw>,
    pub cqs: Table<Cq>,
    pub srqs: Table<Srq>,
    pub ahs: Table<Ah>,
    pub async_events: VecDeque<AsyncEvent>,
    /// CQs that became notifiable (`ibv_get_cq_event`).
    pub cq_events: VecDeque<CqHandle>,
    pub counters: Counters,
}

impl Resources {
    /// Adds a completion to `cq`, raising a completion event or a CQ error as the CQ says.
    pub fn complete(&mut self, cq: CqHandle, wc: WorkCompletion) {
        self.counters.completions += 1;
        if !wc.is_ok() {
            self.counters.error_completions += 1;
        }
        let Some(q) = self.cqs.get_mut(cq.0) else {
            return;
        };
        match q.push(wc) {
            Pushed::Stored | Pushed::Dropped => {}
            Pushed::Notify => self.cq_events.push_back(cq),
            Pushed::Overflow => self.async_events.push_back(AsyncEvent::CqErr(cq)),
        }
    }

    pub fn raise(&mut self, ev: AsyncEvent) {
        self.async_events.push_back(ev);
    }
}

impl Resources {
    /// Looks up an R_Key arriving on QP `qpn` (PD `pd`) and checks an access of
    /// `[va, va + len)` for `need`; returns the MR whose memory the access reaches. An MR key is
    /// checked as an MR's; a window key against the window (key, PD, QP for type 2, rights,
    /// range), and then it reaches its MR, which must still be valid under the key it was bound
    /// with.
    pub fn check_rkey(
        &self,
        qpn: Qpn,
        pd: PdHandle,
        rkey: MemKey,
        va: u64,
        len: u64,
        need: Access,
    ) -> Result<&Mr, KeyError> {
        if !crate::mw::is_mw_key(rkey) {
            let mr = self.mrs.get(rkey.index()).ok_or(KeyError::BadKey)?;
            mr.check(rkey, pd, va, len, need)?;
            return Ok(mr);
        }
        let mw = self
            .mws
            .get(crate::mw::mw_number(rkey))
            .ok_or(KeyError::BadKey)?;
        let b = mw.binding.ok_or(KeyError::BadKey)?;
        if mw.key != rkey || mw.pd != pd || b.qpn.is_some_and(|q| q != qpn) {
            return Err(KeyError::BadKey);
        }
        if !b.access.contains(need) {
            return Err(KeyError::Access);
        }
        let end = va.checked_add(len).ok_or(KeyError::Bounds)?;
        if va < b.addr || end > b.addr.saturating_add(b.len) {
            return Err(KeyError::Bounds);
        }
        let mr = self
            .mrs
            .get(b.mr.index())
            .filter(|m| m.key == b.mr && m.valid && m.pd == pd)
            .ok_or(KeyError::BadKey)?;
        // The binding was inside the MR when it was made and the MR cannot change while bound;
        // checked again so that a restored state cannot reach outside it.
        if va < mr.iova || end > mr.iova.saturating_add(mr.len) {
            return Err(KeyError::Bounds);
        }
        Ok(mr)
    }
}
