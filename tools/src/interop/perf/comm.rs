//! `-R`'s side channel: perftest with `-R` (`work_rdma_cm`) does not open a TCP socket at all.
//! Its "comm" context is one RC QP connected through rdma_cm to the server's address and port
//! (`rdma_client_connect`/`rdma_server_connect`), one receive of `sizeof(struct pingpong_dest)`
//! posted before the connection, and every exchange of the run (versions, system data, MTU,
//! the address blobs, the reports, the close) is one SEND of the same bytes the TCP channel
//! would carry, answered by one SEND: the client sends first, the server receives first
//! (`ctx_xchg_data_rdma`). Only the address blob differs: `struct pingpong_dest` in binary,
//! big-endian (see [`KeyMsg::encode_binary`]). No "done" closes it; the DREQs do.

use super::*;
use crate::interop::cm::conn::ConnId;
use crate::interop::cm::port::CmPort;
use crate::interop::side_channel::pump;

/// The CM of a `-R` run and its connections: the comm QP's, then data QP `i`'s at
/// `conns[i + 1]` (connected by `rdma_cm.rs`).
pub(super) struct PerfCm {
    pub(super) port: CmPort,
    pub(super) conns: Vec<ConnId>,
}

impl PerfCm {
    /// One round of the CM: MADs in, timers, MADs out.
    pub(super) fn drive<V: Endpoint>(&mut self, node: &mut V) -> Result<(), PerfError> {
        self.port.drive(node).map_err(cm_err)
    }
}

pub(super) fn cm_err(e: impl std::fmt::Display) -> PerfError {
    PerfError::Exchange {
        what: "the rdma_cm connection",
        text: e.to_string(),
    }
}

/// The receive slot's size: `sizeof(struct pingpong_dest)`, perftest's receive length. Nothing
/// the channel carries is longer.
pub(super) const SLOT: u32 = KEY_BIN_LEN as u32;
const SEND_WRID: u64 = 0x5e4d;
const RECV_WRID: u64 = 5; // perftest's SYNC_SPEC_ID

/// The comm QP, its buffers, and the run's CM (driven while the channel waits: a peer whose REP
/// or RTU was lost sends its REQ or REP again, and must be answered while this side waits for
/// the first message).
pub(super) struct CommChan {
    pub(super) cm: PerfCm,
    pub(super) qpn: Qpn,
    cq: CqHandle,
    key: MemKey,
    send_buf: u64,
    recv_buf: u64,
    client: bool,
    timeout: Duration,
    /// A receive that completed while this side waited for its SEND's completion (a quick
    /// peer answers before the ACK is seen): its length.
    received: Option<u32>,
}

impl CommChan {
    /// The comm QP in INIT with its receive posted, ready for the CM to connect.
    pub(super) fn create<V: Endpoint>(
        node: &mut V,
        cm: PerfCm,
        pd: PdHandle,
        client: bool,
        timeout: Duration,
    ) -> Result<CommChan, PerfError> {
        let cq = node.create_cq(8)?;
        let buf = node.alloc_buf(2 * SLOT as u64)?;
        let key = node.reg_mr(pd, buf, 2 * SLOT as u64, Access::LOCAL_WRITE)?;
        let qpn = node.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: None,
            cap: QpCap {
                max_send_wr: 2,
                max_recv_wr: 2,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: false,
        })?;
        node.modify_qp(
            qpn,
            &QpAttr {
                qp_state: QpState::Init,
                pkey_index: 0,
                port_num: 1,
                qp_access_flags: Access::empty(),
                ..QpAttr::default()
            },
            QpAttrMask::STATE
                | QpAttrMask::PKEY_INDEX
                | QpAttrMask::PORT
                | QpAttrMask::ACCESS_FLAGS,
        )?;
        let c = CommChan {
            cm,
            qpn,
            cq,
            key,
            send_buf: buf,
            recv_buf: buf + SLOT as u64,
            client,
            timeout,
            received: None,
        };
        c.post_recv(node)?;
        Ok(c)
    }

    fn post_recv<V: Endpoint>(&self, node: &mut V) -> Result<(), PerfError> {
        node.post_recv(
            self.qpn,
            RecvWr {
                wr_id: RECV_WRID,
                sgl: vec![Sge {
                    addr: self.recv_buf,
                    len: SLOT,
                    lkey: self.key,
                }],
            },
        )?;
        Ok(())
    }

    /// Polls the comm CQ, pumping the node, until `want` completes; with `tick`, calls its
    /// hook about every [`IDLE_TICK`]. Fails after `timeout` without a packet.
    fn wait<V: Endpoint>(
        &mut self,
        node: &mut V,
        want: u64,
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<u32, PerfError> {
        if want == RECV_WRID {
            if let Some(n) = self.received.take() {
                return Ok(n);
            }
        }
        let mut wcs = Vec::with_capacity(2);
        let mut got = None;
        let (cq, cm, received) = (self.cq, &mut self.cm, &mut self.received);
        pump(node, self.timeout, what, tick, |node| {
            cm.drive(node)?;
            wcs.clear();
            node.poll_cq(cq, 2, &mut wcs)?;
            for wc in &wcs {
                if wc.status != WcStatus::Success {
                    return Err(PerfError::Exchange {
                        what,
                        text: format!("the rdma_cm side channel's QP failed: {:?}", wc.status),
                    });
                }
                match (wc.wr_id, want) {
                    (RECV_WRID, RECV_WRID) | (SEND_WRID, SEND_WRID) => got = Some(wc.byte_len),
                    (RECV_WRID, _) => *received = Some(wc.byte_len),
                    _ => {}
                }
            }
            Ok((got.is_some(), !wcs.is_empty()))
        })?;
        Ok(got.unwrap_or_default())
    }

    fn send<V: Endpoint>(
        &mut self,
        node: &mut V,
        b: &[u8],
        what: &'static str,
    ) -> Result<(), PerfError> {
        node.write_buf(self.send_buf, b)?;
        let wr = SendWr::new(SEND_WRID, SendOp::Send).sge(Sge {
            addr: self.send_buf,
            len: b.len() as u32,
            lkey: self.key,
        });
        node.post_send(self.qpn, &wr)?;
        self.wait(node, SEND_WRID, what, None)?;
        Ok(())
    }

    /// The peer's next message, `len` bytes long (perftest copies `size` bytes out of its
    /// receive buffer whatever arrived; a message of another length is a peer at another step).
    fn recv<V: Endpoint>(
        &mut self,
        node: &mut V,
        len: usize,
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, PerfError> {
        let n = self.wait(node, RECV_WRID, what, tick)?;
        let b = node.read_buf(self.recv_buf, len)?;
        self.post_recv(node)?;
        if n as usize != len {
            return Err(PerfError::Exchange {
                what,
                text: format!("a {n}-byte message where {len} bytes were due"),
            });
        }
        Ok(b)
    }

    /// One step: the client sends then receives, the server receives then sends.
    pub(super) fn xchg_ticking<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, PerfError> {
        if mine.len() > SLOT as usize {
            return Err(PerfError::Exchange {
                what,
                text: format!("{} bytes do not fit the peer's receive", mine.len()),
            });
        }
        if self.client {
            self.send(node, mine, what)?;
            self.recv(node, mine.len(), what, tick)
        } else {
            let theirs = self.recv(node, mine.len(), what, tick)?;
            self.send(node, mine, what)?;
            Ok(theirs)
        }
    }
}
