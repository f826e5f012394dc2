//! The CM on a device: the VF's GSI QP (QP1) carrying the [`Cm`]'s MADs, driven by a
//! program's wait loop. [`CmPort::open`] creates QP1 with receives posted; [`CmPort::drive`]
//! moves received MADs into the CM, runs its timers and sends what it has to send;
//! [`CmPort::wait_event`] drives until the CM has an event for the program.

use super::conn::{Cm, CmConfig, Event};
use super::mad::MAD_LEN;
use crate::interop::endpoint::Endpoint;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::qp::ud::{GRH_LEN, GSI_QKEY, GSI_QPN};
use vhca_device::{
    Access, AhAttr, AhHandle, CqHandle, Gid, MemKey, PdHandle, Psn, QpAttr, QpAttrMask as M, QpCap,
    QpInitAttr, QpState, QpType, Qpn, RecvWr, SendOp, SendWr, Sge, UdDest, VerbsError, WcOpcode,
    WcStatus, WorkCompletion,
};

/// Receives kept posted on QP1.
const RECVS: u32 = 32;
/// Sends in flight on QP1.
const SENDS: u32 = 16;
const RECV_SLOT: u64 = (GRH_LEN as u64) + MAD_LEN as u64;

#[derive(Debug, Error)]
pub enum CmPortError {
    #[error("GSI QP: {0}")]
    Verbs(#[from] VerbsError),
    #[error("device: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?} waiting for the connection manager")]
    Timeout(Duration),
    #[error("GSI send completed with {0:?}")]
    Send(WcStatus),
}

/// QP1 of a device and the CM that talks through it.
pub struct CmPort {
    pub cm: Cm,
    pd: PdHandle,
    cq: CqHandle,
    buf: u64,
    key: MemKey,
    ahs: HashMap<Gid, AhHandle>,
    next_send: u32,
    in_flight: u32,
    epoch: Instant,
}

impl CmPort {
    /// Creates QP1 on `dev` (in `pd`) with its receives posted, and a CM with `cfg`.
    pub fn open<E: Endpoint>(
        dev: &mut E,
        pd: PdHandle,
        cfg: CmConfig,
    ) -> Result<CmPort, CmPortError> {
        let cq = dev.create_cq(RECVS + SENDS)?;
        let qpn = dev.create_qp(QpInitAttr {
            qp_type: QpType::Gsi,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: None,
            cap: QpCap {
                max_send_wr: SENDS,
                max_recv_wr: RECVS,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: true,
        })?;
        debug_assert_eq!(qpn, Qpn(GSI_QPN));
        let init = QpAttr {
            qp_state: QpState::Init,
            qkey: GSI_QKEY,
            ..QpAttr::default()
        };
        dev.modify_qp(qpn, &init, M::STATE | M::PKEY_INDEX | M::QKEY)?;
        let rtr = QpAttr {
            qp_state: QpState::Rtr,
            ..QpAttr::default()
        };
        dev.modify_qp(qpn, &rtr, M::STATE)?;
        let rts = QpAttr {
            qp_state: QpState::Rts,
            sq_psn: Psn(0),
            ..QpAttr::default()
        };
        dev.modify_qp(qpn, &rts, M::STATE | M::SQ_PSN)?;
        let len = u64::from(RECVS) * RECV_SLOT + u64::from(SENDS) * MAD_LEN as u64;
        let buf = dev.alloc_buf(len)?;
        let key = dev.reg_mr(pd, buf, len, Access::LOCAL_WRITE)?;
        let mut port = CmPort {
            cm: Cm::new(cfg),
            pd,
            cq,
            buf,
            key,
            ahs: HashMap::new(),
            next_send: 0,
            in_flight: 0,
            epoch: Instant::now(),
        };
        for i in 0..RECVS {
            port.post_recv(dev, i)?;
        }
        Ok(port)
    }

    /// Nanoseconds since the port opened: the CM's clock.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn post_recv<E: Endpoint>(&mut self, dev: &mut E, slot: u32) -> Result<(), CmPortError> {
        let addr = self.buf + u64::from(slot) * RECV_SLOT;
        dev.post_recv(
            Qpn(GSI_QPN),
            RecvWr {
                wr_id: u64::from(slot),
                sgl: vec![Sge {
                    addr,
                    len: RECV_SLOT as u32,
                    lkey: self.key,
                }],
            },
        )?;
        Ok(())
    }

    fn ah<E: Endpoint>(&mut self, dev: &mut E, gid: Gid) -> Result<AhHandle, CmPortError> {
        if let Some(a) = self.ahs.get(&gid) {
            return Ok(*a);
        }
        let a = dev.create_ah(
            self.pd,
            AhAttr {
                dgid: gid,
                hop_limit: 64,
                ..AhAttr::default()
            },
        )?;
        self.ahs.insert(gid, a);
        Ok(a)
    }

    fn send<E: Endpoint>(
        &mut self,
        dev: &mut E,
        dest: Gid,
        mad: &[u8; MAD_LEN],
    ) -> Result<(), CmPortError> {
        while self.in_flight >= SENDS {
            self.poll(dev)?;
            dev.idle(Duration::from_millis(1))?;
        }
        let slot = self.next_send % SENDS;
        self.next_send = self.next_send.wrapping_add(1);
        let addr = self.buf + u64::from(RECVS) * RECV_SLOT + u64::from(slot) * MAD_LEN as u64;
        dev.write_buf(addr, mad)?;
        let ah = self.ah(dev, dest)?;
        let wr = SendWr::new(1 << 32 | u64::from(slot), SendOp::Send)
            .sge(Sge {
                addr,
                len: MAD_LEN as u32,
                lkey: self.key,
            })
            .ud(UdDest {
                ah,
                remote_qpn: Qpn(GSI_QPN),
                remote_qkey: GSI_QKEY,
            });
        dev.post_send(Qpn(GSI_QPN), &wr)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Takes QP1's completions: received MADs go to the CM, receives are posted again.
    fn poll<E: Endpoint>(&mut self, dev: &mut E) -> Result<(), CmPortError> {
        let mut wcs: Vec<WorkCompletion> = Vec::new();
        dev.poll_cq(self.cq, (RECVS + SENDS) as usize, &mut wcs)?;
        for wc in wcs {
            if wc.opcode == WcOpcode::Send || wc.wr_id >> 32 == 1 {
                self.in_flight = self.in_flight.saturating_sub(1);
                if wc.status != WcStatus::Success {
                    return Err(CmPortError::Send(wc.status));
                }
                continue;
            }
            let slot = (wc.wr_id as u32) % RECVS;
            if wc.status == WcStatus::Success && wc.byte_len as u64 >= RECV_SLOT {
                let addr = self.buf + u64::from(slot) * RECV_SLOT + u64::from(GRH_LEN);
                let mad = dev.read_buf(addr, MAD_LEN)?;
                let now = self.now();
                self.cm.handle_mad(now, wc.src_gid, &mad);
            } else if wc.status == WcStatus::Success {
                self.cm.counters.malformed += 1;
            }
            if wc.status != WcStatus::WrFlushErr {
                self.post_recv(dev, slot)?;
            }
        }
        Ok(())
    }

    /// One round: received MADs in, timers, MADs out.
    pub fn drive<E: Endpoint>(&mut self, dev: &mut E) -> Result<(), CmPortError> {
        self.poll(dev)?;
        let now = self.now();
        if self.cm.poll_timeout().is_some_and(|t| t <= now) {
            self.cm.handle_timeout(now);
        }
        while let Some(o) = self.cm.poll_transmit() {
            self.send(dev, o.dest, &o.mad)?;
        }
        Ok(())
    }

    /// Drives the CM (and lets the device run) until it has an event, for at most `limit`.
    pub fn wait_event<E: Endpoint>(
        &mut self,
        dev: &mut E,
        limit: Duration,
    ) -> Result<Event, CmPortError> {
        let start = Instant::now();
        loop {
            self.drive(dev)?;
            if let Some(e) = self.cm.poll_event() {
                return Ok(e);
            }
            if start.elapsed() >= limit {
                return Err(CmPortError::Timeout(limit));
            }
            dev.idle(Duration::from_millis(1))?;
        }
    }
}

/// The CA GUID a CM puts in its messages for a device with this GID: the GID's interface
/// identifier (for an IPv4-mapped GID, `0000:ffff` and the address), unique per address.
pub fn ca_guid(gid: Gid) -> u64 {
    u64::from_be_bytes(gid.0[8..].try_into().expect("8 bytes"))
}

/// A first communication ID that differs run to run and between two sides started at once.
pub fn fresh_comm_id(gid: Gid) -> u32 {
    let p = crate::interop::endpoint::random_psn(gid).0;
    (p << 8) ^ std::process::id().rotate_left(20) ^ 0x5a00_0000 | 1
}
