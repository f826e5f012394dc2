//! `Verbs` for [`GuestContext`]: each verb as a command on the controlq, or work requests
//! written into rings and announced with doorbells (the module above says how).

use super::*;

impl Verbs for GuestContext {
    fn gid(&self) -> Gid {
        self.drv.config().gid
    }

    fn alloc_buf(&mut self, len: u64) -> VerbsResult<u64> {
        Ok(self.alloc(len, PAGE_SIZE)?.addr)
    }

    fn write_buf(&mut self, addr: u64, data: &[u8]) -> VerbsResult<()> {
        self.drv
            .ram()
            .write(addr, data)
            .map_err(|_| VerbsError::Fault)
    }

    fn read_buf(&mut self, addr: u64, len: usize) -> VerbsResult<Vec<u8>> {
        self.drv
            .ram()
            .read(addr, len)
            .map_err(|_| VerbsError::Fault)
    }

    fn alloc_pd(&mut self) -> VerbsResult<PdHandle> {
        Ok(PdHandle(self.exec_u32(Command::CreatePd)?))
    }

    fn dealloc_pd(&mut self, pd: PdHandle) -> VerbsResult<()> {
        self.exec(Command::DestroyPd { pd: pd.0 }).map(|_| ())
    }

    fn reg_mr(&mut self, pd: PdHandle, addr: u64, len: u64, access: Access) -> VerbsResult<MemKey> {
        let first = addr & !(PAGE_SIZE - 1);
        let end = addr
            .checked_add(len)
            .ok_or(VerbsError::Invalid("MR length"))?;
        let npages = (end.max(addr + 1) - first).div_ceil(PAGE_SIZE);
        let npages32 = u32::try_from(npages).map_err(|_| VerbsError::Invalid("MR length"))?;
        let list = self.alloc(npages * 8, 64)?;
        // Guest-physical = guest-virtual here: page i is simply the i-th page from `first`.
        let pages: Vec<u8> = (0..npages)
            .flat_map(|i| (first + i * PAGE_SIZE).to_le_bytes())
            .collect();
        let r = self
            .drv
            .ram()
            .write(list.addr, &pages)
            .map_err(|e| self.fail(e))
            .and_then(|_| {
                self.exec_u32(Command::RegMr {
                    pd: pd.0,
                    access: access.bits(),
                    iova: addr,
                    length: len,
                    page_shift: 12,
                    npages: npages32,
                    page_list_gpa: list.addr,
                })
            });
        // The device reads the page list while it runs the command.
        self.release(list);
        let key = r?;
        self.mrs.insert(key);
        Ok(MemKey(key))
    }

    fn dereg_mr(&mut self, key: MemKey) -> VerbsResult<()> {
        self.exec(Command::DeregMr { key: key.0 })?;
        self.mrs.remove(&key.0);
        Ok(())
    }

    fn alloc_mr(&mut self, pd: PdHandle, max_num_sg: u32) -> VerbsResult<MemKey> {
        // Not in `mrs`: a REG_MR work request changes its key byte without a command.
        Ok(MemKey(self.exec_u32(Command::AllocMr {
            pd: pd.0,
            max_num_sg,
        })?))
    }

    fn alloc_mw(&mut self, pd: PdHandle, kind: MwType) -> VerbsResult<MemKey> {
        let mw_type = match kind {
            MwType::Type1 => 1,
            MwType::Type2 => 2,
        };
        Ok(MemKey(
            self.exec_u32(Command::AllocMw { pd: pd.0, mw_type })?,
        ))
    }

    fn dealloc_mw(&mut self, mw: MemKey) -> VerbsResult<()> {
        self.exec(Command::DeallocMw { key: mw.0 }).map(|_| ())
    }

    fn create_cq(&mut self, cqe: u32) -> VerbsResult<CqHandle> {
        let depth = ring_depth(cqe);
        let bytes = depth as u64 * CQE_SIZE as u64;
        let alloc = self.alloc(bytes, PAGE_SIZE)?;
        let ring = Ring::new(alloc.addr, depth, CQE_SIZE as u32)
            .map_err(|_| VerbsError::Invalid("CQ depth"))?;
        match self.exec_u32(Command::CreateCq {
            depth,
            ring_gpa: alloc.addr,
        }) {
            Ok(cqn) => {
                self.cqs.insert(
                    cqn,
                    CqState {
                        ring,
                        alloc,
                        ci: 0,
                        armed: false,
                        events: 0,
                    },
                );
                Ok(CqHandle(cqn))
            }
            Err(e) => {
                self.release(alloc);
                Err(e)
            }
        }
    }

    fn destroy_cq(&mut self, cq: CqHandle) -> VerbsResult<()> {
        self.exec(Command::DestroyCq { cqn: cq.0 })?;
        if let Some(s) = self.cqs.remove(&cq.0) {
            self.release(s.alloc);
        }
        Ok(())
    }

    fn req_notify_cq(&mut self, cq: CqHandle, solicited_only: bool) -> VerbsResult<()> {
        self.exec(Command::ReqNotifyCq {
            cqn: cq.0,
            solicited: solicited_only,
        })
        .map(|_| ())
    }

    fn poll_cq(
        &mut self,
        cq: CqHandle,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize> {
        let n = self.drain_cq(cq.0, max, out)?;
        if n > 0 || max == 0 {
            return Ok(n);
        }
        let PollMode::Event { wait } = self.poll_mode else {
            return Ok(0);
        };
        self.collect_events()?;
        let armed = self.cqs.get(&cq.0).is_some_and(|c| c.armed);
        if !armed {
            self.ring_doorbells(&[Doorbell::CqArm {
                cqn: cq.0,
                solicited: false,
            }])?;
            if let Some(c) = self.cqs.get_mut(&cq.0) {
                c.armed = true;
            }
            // A CQE written before the device saw the arm raises no event: wait until the
            // device took the doorbell, then look again. Anything later raises an event.
            self.drv.flush_doorbells().map_err(|e| self.fail(e))?;
            let n = self.drain_cq(cq.0, max, out)?;
            if n > 0 {
                return Ok(n);
            }
        }
        self.drv.wait_events(wait).map_err(|e| self.fail(e))?;
        self.count_completion_events();
        self.drain_cq(cq.0, max, out)
    }

    fn create_srq(&mut self, pd: PdHandle, max_wr: u32, max_sge: u32) -> VerbsResult<SrqHandle> {
        let depth = ring_depth(max_wr);
        let stride = recv_stride(max_sge);
        let alloc = self.alloc(depth as u64 * stride as u64, PAGE_SIZE)?;
        let r = self.exec(Command::CreateSrq {
            pd: pd.0,
            max_wr,
            max_sge,
            ring_gpa: alloc.addr,
        });
        let parsed = r.and_then(|b| {
            body::read_create_srq(&b).map_err(|_| VerbsError::Invalid("CREATE_SRQ response"))
        });
        let (srqn, info) = match parsed {
            Ok(v) => v,
            Err(e) => {
                self.release(alloc);
                return Err(e);
            }
        };
        let ring = match self.check_geometry(alloc, info) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.exec(Command::DestroySrq { srqn });
                self.release(alloc);
                return Err(e);
            }
        };
        self.srqs.insert(
            srqn,
            SrqState {
                ring,
                alloc,
                max_sge,
                pi: 0,
                outstanding: 0,
            },
        );
        Ok(SrqHandle(srqn))
    }

    fn modify_srq(&mut self, srq: SrqHandle, limit: u32) -> VerbsResult<()> {
        self.exec(Command::ModifySrq { srqn: srq.0, limit })
            .map(|_| ())
    }

    fn post_srq_recv(&mut self, srq: SrqHandle, wr: RecvWr) -> VerbsResult<()> {
        let s = self
            .srqs
            .get_mut(&srq.0)
            .ok_or(VerbsError::NotFound("SRQ"))?;
        if s.outstanding >= s.ring.depth {
            return Err(VerbsError::QueueFull);
        }
        if wr.sgl.len() as u32 > s.max_sge {
            return Err(VerbsError::Invalid("too many SGEs"));
        }
        let wqe = encode_recv(&wr, s.ring.stride);
        let slot = s.ring.slot(s.pi);
        s.pi = s.pi.wrapping_add(1);
        s.outstanding += 1;
        let pi = s.pi;
        self.drv
            .ram()
            .write(slot, &wqe)
            .map_err(|_| VerbsError::Fault)?;
        self.ring_doorbells(&[Doorbell::Srq { srqn: srq.0, pi }])?;
        // An SRQ may serve UD QPs: see `post_recv`.
        self.drv.flush_doorbells().map_err(|e| self.fail(e))
    }

    fn destroy_srq(&mut self, srq: SrqHandle) -> VerbsResult<()> {
        self.exec(Command::DestroySrq { srqn: srq.0 })?;
        if let Some(s) = self.srqs.remove(&srq.0) {
            self.release(s.alloc);
        }
        Ok(())
    }

    fn create_ah(&mut self, pd: PdHandle, attr: AhAttr) -> VerbsResult<AhHandle> {
        Ok(AhHandle(
            self.exec_u32(Command::CreateAh { pd: pd.0, attr })?,
        ))
    }

    fn destroy_ah(&mut self, ah: AhHandle) -> VerbsResult<()> {
        self.exec(Command::DestroyAh { ah: ah.0 }).map(|_| ())
    }

    fn create_qp(&mut self, init: QpInitAttr) -> VerbsResult<Qpn> {
        let cap = init.cap;
        // The device sizes the rings by the rule of docs/device-protocol.md §6.2; the driver
        // allocates that much before it asks, then checks the geometry it gets back.
        let sq_depth = ring_depth(cap.max_send_wr);
        let sq_bytes = sq_depth as u64 * send_stride(cap.max_send_sge, cap.max_inline_data) as u64;
        let sq_alloc = self.alloc(sq_bytes, PAGE_SIZE)?;
        let rq_alloc = match init.srq {
            Some(_) => None,
            None => {
                let d = ring_depth(cap.max_recv_wr);
                match self.alloc(d as u64 * recv_stride(cap.max_recv_sge) as u64, PAGE_SIZE) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        self.release(sq_alloc);
                        return Err(e);
                    }
                }
            }
        };
        let free_all = |me: &mut GuestContext| {
            me.release(sq_alloc);
            if let Some(a) = rq_alloc {
                me.release(a);
            }
        };
        let r = self.exec(Command::CreateQp {
            qp_type: match init.qp_type {
                QpType::Rc => 2,
                QpType::Uc => 3,
                QpType::Ud => 4,
                QpType::Gsi => 1,
            },
            sq_sig_all: init.sq_sig_all,
            pd: init.pd.0,
            send_cq: init.send_cq.0,
            recv_cq: init.recv_cq.0,
            srq: init.srq.map_or(0, |s| s.0),
            cap,
            sq_ring_gpa: sq_alloc.addr,
            rq_ring_gpa: rq_alloc.map_or(0, |a| a.addr),
        });
        let parsed = r.and_then(|b| {
            body::read_create_qp(&b).map_err(|_| VerbsError::Invalid("CREATE_QP response"))
        });
        let (qpn, sq_info, rq_info) = match parsed {
            Ok(v) => v,
            Err(e) => {
                free_all(self);
                return Err(e);
            }
        };
        let sq = self.check_geometry(sq_alloc, sq_info);
        let rq = match rq_alloc {
            Some(a) => self.check_geometry(a, rq_info).map(Some),
            None => Ok(None),
        };
        let (sq, rq) = match (sq, rq) {
            (Ok(sq), Ok(rq)) => (sq, rq),
            (Err(e), _) | (_, Err(e)) => {
                let _ = self.exec(Command::DestroyQp { qpn });
                free_all(self);
                return Err(e);
            }
        };
        let mut allocs = vec![sq_alloc];
        allocs.extend(rq_alloc);
        self.qps.insert(
            qpn,
            QpState {
                init,
                sq,
                rq,
                allocs,
                sq_pi: 0,
                rq_pi: 0,
                sq_pending: VecDeque::new(),
                rq_outstanding: 0,
            },
        );
        Ok(Qpn(qpn))
    }

    fn modify_qp(&mut self, qpn: Qpn, attr: &QpAttr, mask: QpAttrMask) -> VerbsResult<()> {
        self.exec(Command::ModifyQp {
            qpn: qpn.0,
            mask: mask.bits(),
            attr: *attr,
        })
        .map(|_| ())
    }

    fn query_qp(&mut self, qpn: Qpn) -> VerbsResult<(QpAttr, QpInitAttr)> {
        let b = self.exec(Command::QueryQp { qpn: qpn.0 })?;
        let attr = body::read_qp_attr(&b).map_err(|_| VerbsError::Invalid("QUERY_QP response"))?;
        let init = self
            .qps
            .get(&qpn.0)
            .map(|q| q.init)
            .ok_or(VerbsError::NotFound("QP"))?;
        Ok((attr, init))
    }

    fn destroy_qp(&mut self, qpn: Qpn) -> VerbsResult<()> {
        self.exec(Command::DestroyQp { qpn: qpn.0 })?;
        if let Some(q) = self.qps.remove(&qpn.0) {
            for a in q.allocs {
                self.release(a);
            }
        }
        Ok(())
    }

    fn post_send(&mut self, qpn: Qpn, wr: &SendWr) -> VerbsResult<()> {
        let q = self.qps.get_mut(&qpn.0).ok_or(VerbsError::NotFound("QP"))?;
        if q.sq_pending.len() as u32 >= q.sq.depth {
            return Err(VerbsError::QueueFull);
        }
        let inline = wr.flags.contains(SendFlags::INLINE);
        if inline && wr.inline_data.len() as u32 > q.init.cap.max_inline_data {
            return Err(VerbsError::Invalid(
                "inline data larger than max_inline_data",
            ));
        }
        if !inline && wr.sgl.len() as u32 > q.init.cap.max_send_sge {
            return Err(VerbsError::Invalid("too many SGEs"));
        }
        let wqe = encode_send(wr, q.sq.stride);
        if wqe.len() > q.sq.stride as usize {
            return Err(VerbsError::Invalid("WQE larger than the ring's stride"));
        }
        let slot = q.sq.slot(q.sq_pi);
        q.sq_pi = q.sq_pi.wrapping_add(1);
        q.sq_pending
            .push_back(q.init.sq_sig_all || wr.flags.contains(SendFlags::SIGNALED));
        let pi = q.sq_pi;
        self.drv
            .ram()
            .write(slot, &wqe)
            .map_err(|_| VerbsError::Fault)?;
        self.post_doorbell(Doorbell::Sq { qpn: qpn.0, pi })
    }

    fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> VerbsResult<()> {
        let q = self.qps.get_mut(&qpn.0).ok_or(VerbsError::NotFound("QP"))?;
        let Some(rq) = q.rq else {
            return Err(VerbsError::Invalid("the QP receives through an SRQ"));
        };
        if q.rq_outstanding >= rq.depth {
            return Err(VerbsError::QueueFull);
        }
        if wr.sgl.len() as u32 > q.init.cap.max_recv_sge {
            return Err(VerbsError::Invalid("too many SGEs"));
        }
        let wqe = encode_recv(&wr, rq.stride);
        let slot = rq.slot(q.rq_pi);
        q.rq_pi = q.rq_pi.wrapping_add(1);
        q.rq_outstanding += 1;
        let pi = q.rq_pi;
        let ud = q.init.qp_type.is_datagram();
        self.drv
            .ram()
            .write(slot, &wqe)
            .map_err(|_| VerbsError::Fault)?;
        self.post_doorbell(Doorbell::Rq { qpn: qpn.0, pi })?;
        if ud && self.held.is_none() {
            // A datagram that arrives before the device has read this doorbell finds no
            // receive and is dropped (UD has no RNR retry): return only once the device
            // has taken the doorbell, as `ibv_post_recv` promises.
            self.drv.flush_doorbells().map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}
