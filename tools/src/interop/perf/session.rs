//! One run from the side channel's first byte to its last: the step sequence of each test
//! (see the module documentation of [`super`]).

use super::*;

/// How a run reaches its peer: perftest's TCP side channel (connected), or with `-R` its
/// rdma_cm comm QP, as the client of `server` or as the server (`None`).
pub(super) enum SideLink {
    Tcp(TcpStream),
    RdmaCm { server: Option<Ipv4Addr> },
}

/// One whole run, on a new node at `ip`.
pub(super) fn session(
    ip: Ipv4Addr,
    link: SideLink,
    client: bool,
    o: &Options,
) -> Result<Report, PerfError> {
    // Bad options fail before the node (sized from them) is made.
    let e = o.effective()?;
    let mut node = Node::new(ip, node_mem(&e))?;
    session_on(&mut node, link, client, o, &mut no_hook)
}

/// One whole run, on any device.
pub(super) fn session_on<V: Endpoint>(
    node: &mut V,
    link: SideLink,
    client: bool,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let e = o.effective()?;
    let (mut chan, server) = match link {
        SideLink::Tcp(sock) => (PerfChan::Tcp(Chan::new(sock, client, e.timeout)?), None),
        SideLink::RdmaCm { server } => (
            PerfChan::Cm(Box::new(rdma_cm::connect_comm(node, &e, server)?)),
            server,
        ),
    };
    let report = session_steps(node, &mut chan, server, client, e, hook)?;
    // -R: the connections come down after the side channel's close, as perftest's do.
    if let PerfChan::Cm(c) = &mut chan {
        rdma_cm::disconnect_all(node, &mut c.cm)?;
    }
    Ok(report)
}

/// The steps after the side channel is up; `server`: `-R`'s client, the server's address.
fn session_steps<V: Endpoint>(
    node: &mut V,
    chan: &mut PerfChan,
    server: Option<Ipv4Addr>,
    client: bool,
    o: Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let role = if client { "client" } else { "server" };

    // V: versions.
    let mut v = [0u8; VERSION_LEN];
    v[..VERSION.len()].copy_from_slice(VERSION.as_bytes());
    let rv = chan.xchg(node, &v, "the version exchange")?;
    let peer_version = String::from_utf8_lossy(&rv)
        .trim_end_matches('\0')
        .to_string();
    let pv: f64 = peer_version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .parse()
        .unwrap_or(0.0);
    if pv < MIN_PEER_VERSION {
        return Err(PerfError::Version(peer_version));
    }
    // S1, S2: cycle buffer and cache line, the larger wins.
    let rc = chan.xchg(node, &PAGE_SIZE.to_be_bytes(), "the system data exchange")?;
    let cycle = u32::from_be_bytes(rc.try_into().unwrap_or([0; 4])).max(PAGE_SIZE);
    let rl = chan.xchg(node, &CACHE_LINE.to_be_bytes(), "the system data exchange")?;
    let line = u32::from_be_bytes(rl.try_into().unwrap_or([0; 4]));
    if cycle > 1 << 20 || line > cycle {
        return Err(PerfError::Exchange {
            what: "system data",
            text: format!("cycle buffer {cycle}, cache line {line}"),
        });
    }
    // M: MTU enums as "%d", two bytes; the smaller valid one wins.
    let m = [b'0' + o.mtu as u8, 0];
    let rm = chan.xchg(node, &m, "the MTU exchange")?;
    let rem_mtu = std::str::from_utf8(&rm[..1])
        .ok()
        .and_then(|s| s.parse::<u8>().ok())
        .and_then(Mtu::from_enum);
    let mtu = match rem_mtu {
        Some(r) if (r as u8) < (o.mtu as u8) => r,
        _ => o.mtu,
    };

    let gid = node.local_gid()?;
    let r = create_resources(node, &o, cycle, gid)?;
    if let PerfChan::Cm(_) = chan {
        // create_rdma_cm_connection: an address exchange before (the server listens only
        // after it) and one after the connections. perftest sends its addresses there before
        // it has filled them in: zeros, which nobody reads.
        let unset = KeyMsg {
            lid: 0,
            out_reads: 0,
            qpn: 0,
            psn: 0,
            rkey: 0,
            vaddr: 0,
            gid: Gid([0; 16]),
            srqn: 0,
        };
        chan.keys(node, &unset, "the sync before the rdma_cm connections")?;
        if let PerfChan::Cm(c) = chan {
            rdma_cm::connect_all(node, &mut c.cm, &r, &o, mtu, server)?;
        }
        chan.keys(node, &unset, "the sync after the rdma_cm connections")?;
    }
    let keys = my_keys(gid, &r, &o);
    // QP 0's: the one the handshakes that are not per QP carry.
    let mine = keys[0];
    let t = o.test;
    // K1: addresses (the latency tests of RDMA verbs exchange them once more first).
    let rdma_lat = !t.is_bw() && !t.is_send();
    if rdma_lat {
        chan.keys(node, &mine, "the first address exchange")?;
    }
    let mut rems = Vec::with_capacity(keys.len());
    for k in &keys {
        rems.push(chan.keys(node, k, "the address exchange")?);
    }
    let rem = rems[0];
    if rem.gid.to_ipv4().is_none() {
        return Err(PerfError::GidType(rem.gid.0));
    }
    for (i, (k, rk)) in keys.iter().zip(&rems).enumerate() {
        print_dest("local", k);
        print_dest("remote", rk);
        if let PerfChan::Tcp(_) = chan {
            connect(node, &r, i, &o, mtu, rk)?;
        }
    }
    // The handshake after RTR (QP 0's key) and the addresses once more (every QP's): send tests
    // in this order, the others the other way round.
    if t.is_send() {
        chan.keys(node, &mine, "the handshake after RTR")?;
    }
    for k in &keys {
        chan.keys(node, k, "the second address exchange")?;
    }
    if !t.is_send() {
        chan.keys(node, &mine, "the handshake after RTR")?;
    }

    let run = Run {
        o,
        role,
        client,
        mtu: mtu.bytes(),
        peer_version,
        header: header(&o, client, mtu),
    };
    let report = match t.verb() {
        Verb::Send => send_phase(node, chan, &run, &r, &mine, cycle, &rems, hook)?,
        _ if rdma_lat && !client && t != Test::WriteLat => {
            // read_lat, atomic_lat server: straight into the close, whose key message waits
            // for the client's whole data phase.
            let total = o.iters as u64;
            chan.keys_ticking(
                node,
                &mine,
                "waiting for the client to finish",
                Some((hook, total)),
            )?;
            let checked = check_counters(node, &o, &r, 0)?;
            chan.done(node)?;
            return Ok(run.lat(o.size, None, checked));
        }
        _ if rdma_lat => {
            let report = rdma_lat_phase(node, &run, &r, &rem, hook)?;
            if t == Test::WriteLat {
                // ib_write_lat ends here: no closing handshake. Keep answering a while so the
                // peer's last WRITE gets its ACK (a real HCA answers until the QP is
                // destroyed).
                linger(node, Duration::from_secs(1))?;
                return Ok(report);
            }
            report
        }
        _ if client || o.duplex => {
            let mut rows = Vec::new();
            let mut last = WireReport::default();
            for size in o.sizes() {
                let os = o.at_size(size);
                // -b: both sides go at once, after a handshake (and one after each size of
                // -a); then they exchange reports and each prints the sum.
                if o.duplex {
                    chan.keys(node, &mine, "the bidirectional start")?;
                }
                let (w, bytes, secs) = bw_client_run(node, &r, &os, cycle, &rems, hook)?;
                last = w;
                if o.duplex && o.all_sizes {
                    chan.keys(node, &mine, "the handshake after a size")?;
                }
                let row = if o.duplex {
                    let theirs = xchg_reports(chan, node, &w)?;
                    let both = WireReport {
                        bw_peak: w.bw_peak + theirs.bw_peak,
                        bw_avg: w.bw_avg + theirs.bw_avg,
                        msg_rate: w.msg_rate + theirs.msg_rate,
                        ..w
                    };
                    run.bw("local+peer", &both, bytes, secs, None)
                } else {
                    run.bw("local", &w, bytes, secs, None)
                };
                rows.push(Report::Bw(row));
            }
            if !o.duplex {
                // K4: "finished", then the reports (the last size's).
                chan.keys(node, &mine, "the end-of-test handshake")?;
                xchg_reports(chan, node, &last)?;
            }
            one_or_all(rows)
        }
        _ => {
            // The server only waits (pumping) for the client's "finished" key message.
            let start = Instant::now();
            // A hook gets its calls here: this side has no iterations of its own.
            let total = o.iters as u64;
            chan.keys_ticking(
                node,
                &mine,
                "waiting for the client to finish",
                Some((hook, total)),
            )?;
            let secs = start.elapsed().as_secs_f64();
            let theirs = xchg_reports(chan, node, &WireReport::default())?;
            let size = *o.sizes().last().unwrap_or(&o.size) as u64;
            // perftest reports the iterations of all QPs.
            let iters = o.iters as u64 * o.qps as u64;
            // With -D the client counts what completed in its sample.
            let iters_differ = o.duration.is_none() && theirs.iters != iters;
            if theirs.size != size || iters_differ {
                return Err(PerfError::Mismatch {
                    peer_size: theirs.size,
                    peer_iters: theirs.iters,
                    size,
                    iters,
                });
            }
            let checked = check_counters(node, &o, &r, cycle)?;
            Report::Bw(run.bw("peer", &theirs, 0, secs, checked))
        }
    };

    // D: one more key message, then "done" from each side.
    close(node, chan, &mine)?;
    Ok(report)
}

/// What every report of a run shares.
struct Run {
    o: Options,
    role: &'static str,
    client: bool,
    mtu: u32,
    peer_version: String,
    header: String,
}

impl Run {
    fn bw(
        &self,
        source: &'static str,
        w: &WireReport,
        bytes: u64,
        seconds: f64,
        checked: Option<String>,
    ) -> BwReport {
        BwReport {
            test: self.o.test,
            role: self.role,
            bytes: w.size,
            iterations: w.iters,
            bw_peak_mb_per_sec: w.bw_peak,
            bw_average_mb_per_sec: w.bw_avg,
            msg_rate_mpps: w.msg_rate,
            unit: if self.o.report_gbits {
                UNIT_GBITS
            } else {
                UNIT_MBYTES
            },
            bytes_transferred: bytes,
            seconds,
            source,
            mtu: self.mtu,
            peer_version: self.peer_version.clone(),
            checked,
            header: self.header.clone(),
        }
    }

    /// A latency report from post times (`None`: a side that measures nothing).
    fn lat(&self, size: u32, run: Option<&LatRun>, checked: Option<String>) -> Report {
        let rtt = if self.o.test.is_read_or_atomic() {
            1.0
        } else {
            2.0
        };
        let (mut iterations, mut tps) = (self.o.iters as u64, None);
        let (min, max, typ, mut avg, stdev, p99, p999) = match run {
            Some(LatRun {
                sampled: Some(s), ..
            }) => {
                // print_report_lat_duration: the average over the sample and the rate.
                iterations = s.iters;
                tps = Some(s.iters as f64 / s.secs);
                let avg = s.secs * 1e6 / rtt / s.iters.max(1) as f64;
                (0.0, 0.0, 0.0, avg, 0.0, 0.0, 0.0)
            }
            Some(r) => lat_numbers(&r.posted, rtt),
            None => {
                iterations = 0;
                Default::default()
            }
        };
        if !avg.is_finite() {
            avg = 0.0;
        }
        let times = run;
        let bytes = run.map_or(0, |r| r.bytes);
        Report::Lat(LatReport {
            test: self.o.test,
            role: self.role,
            bytes: size as u64,
            iterations,
            t_min_usec: min,
            t_max_usec: max,
            t_typical_usec: typ,
            t_avg_usec: avg,
            t_stdev_usec: stdev,
            p99_usec: p99,
            p99_9_usec: p999,
            bytes_transferred: bytes,
            source: if times.is_some() { "local" } else { "none" },
            tps,
            mtu: self.mtu,
            peer_version: self.peer_version.clone(),
            checked,
            header: self.header.clone(),
        })
    }
}

fn one_or_all(mut rows: Vec<Report>) -> Report {
    if rows.len() == 1 {
        rows.remove(0)
    } else {
        Report::Sizes(rows)
    }
}

/// send_bw and send_lat: per size, the receivers post their receives, then a key message tells
/// the sender to go; send_bw syncs once more after each size under `-a`.
#[allow(clippy::too_many_arguments)]
fn send_phase<V: Endpoint>(
    node: &mut V,
    chan: &mut PerfChan,
    run: &Run,
    r: &Res,
    mine: &KeyMsg,
    cycle: u32,
    rems: &[KeyMsg],
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let o = run.o;
    let mut rows = Vec::new();
    for size in o.sizes() {
        let os = o.at_size(size);
        let areas: Vec<Cycler> = (0..r.qps.len())
            .map(|i| Cycler::new(r.target(i), size, cycle))
            .collect();
        let recv_area = &areas[0];
        let want_recvs = !run.client || o.test == Test::SendLat || o.duplex;
        let mut posted = vec![0u64; r.qps.len()];
        if want_recvs {
            for (i, (p, area)) in posted.iter_mut().zip(&areas).enumerate() {
                while *p < os.rx_depth as u64 {
                    post_recv(node, r, i, &os, area, *p)?;
                    *p += 1;
                }
            }
        }
        chan.keys(node, mine, "the barrier before the data phase")?;
        let row = if o.test == Test::SendLat {
            let lr = send_lat(node, r, &os, run.client, recv_area, posted[0], hook)?;
            run.lat(size, Some(&lr), None)
        } else if o.duplex {
            // -b: both send and receive at once, then exchange reports and print the sum.
            let (times, _) = send_bw_bidir(node, r, &os, cycle, &areas, posted, hook)?;
            let w = bw_numbers(&times, &os);
            let secs = times.completed[times.completed.len() - 1].unwrap_or(0.0) - times.posted[0];
            let theirs = xchg_reports(chan, node, &w)?;
            let both = WireReport {
                bw_peak: w.bw_peak + theirs.bw_peak,
                bw_avg: w.bw_avg + theirs.bw_avg,
                msg_rate: w.msg_rate + theirs.msg_rate,
                ..w
            };
            Report::Bw(run.bw("local+peer", &both, times.bytes, secs, None))
        } else if run.client {
            let (w, bytes, secs) = bw_client_run(node, r, &os, cycle, rems, hook)?;
            Report::Bw(run.bw("local", &w, bytes, secs, None))
        } else if let Some(d) = o.duration {
            let (sampled, bytes) = send_bw_server_timed(node, r, &os, &areas, posted, d, hook)?;
            let w = sampled.bw(&os);
            Report::Bw(run.bw("local", &w, bytes, sampled.secs, None))
        } else {
            let (secs, bytes) = send_bw_server(node, r, &os, &areas, posted, hook)?;
            let s = secs.max(1e-9);
            let avg = bytes as f64 / s / unit_bytes(&os);
            let iters = o.iters as u64 * r.qps.len() as u64;
            let w = WireReport {
                size: size as u64,
                iters,
                bw_peak: avg,
                bw_avg: avg,
                msg_rate: iters as f64 / s / 1e6,
            };
            Report::Bw(run.bw("local", &w, bytes, secs, None))
        };
        rows.push(row);
        if o.all_sizes && o.test == Test::SendBw {
            chan.keys(node, mine, "the handshake after a size")?;
        }
    }
    Ok(one_or_all(rows))
}

/// write_lat's ping-pong (both sides) and the read_lat/atomic_lat client's requests, per size.
fn rdma_lat_phase<V: Endpoint>(
    node: &mut V,
    run: &Run,
    r: &Res,
    rem: &KeyMsg,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let o = run.o;
    let mut rows = Vec::new();
    for size in o.sizes() {
        let os = o.at_size(size);
        let lr = if o.test == Test::WriteLat {
            write_lat(node, r, &os, run.client, rem, hook)?
        } else {
            rdma_lat(node, r, &os, rem, hook)?
        };
        let done = lr.bytes / size.max(1) as u64;
        let checked = (o.test == Test::AtomicLat)
            .then(|| format!("{} fetched {done} consecutive values", o.atomic_op().name()));
        rows.push(run.lat(size, Some(&lr), checked));
    }
    Ok(one_or_all(rows))
}

/// A bandwidth client's run at one size: its report, the bytes it moved (with `-D`: in the
/// sample) and the seconds they took.
fn bw_client_run<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    cycle: u32,
    rems: &[KeyMsg],
    hook: Hook<'_, V>,
) -> Result<(WireReport, u64, f64), PerfError> {
    if let Some(d) = o.duration {
        let s = bw_client_timed(node, r, o, cycle, rems, d, hook)?;
        return Ok((s.bw(o), s.iters * o.size as u64, s.secs));
    }
    let times = bw_client(node, r, o, cycle, rems, hook)?;
    let w = bw_numbers(&times, o);
    let secs = times.completed[times.completed.len() - 1].unwrap_or(0.0) - times.posted[0];
    Ok((w, times.bytes, secs))
}

/// An atomic test's server, once the client finished: its targets hold what the client's
/// operations must have left (perftest zeroes the buffer; FETCH_AND_ADD adds 1 per iteration to
/// the slot it cycled to, CMP_AND_SWAP swaps 0 for 0). `cycle` 0: one slot (atomic_lat).
fn check_counters<V: Endpoint>(
    node: &mut V,
    o: &Options,
    r: &Res,
    cycle: u32,
) -> Result<Option<String>, PerfError> {
    // With -D nobody knows how many operations there were.
    if o.test.verb() != Verb::Atomic || o.duration.is_some() {
        return Ok(None);
    }
    let slots = if cycle == 0 {
        1
    } else {
        Cycler::new(r.target(0), o.size, cycle).slots
    };
    let mut sum = 0u64;
    for qp in 0..r.qps.len() {
        for i in 0..slots {
            sum = sum.wrapping_add(read_u64(node, r.target(qp) + i * inc(o.size))?);
        }
    }
    let iters = o.iters as u64 * r.qps.len() as u64;
    let want = match o.atomic_op() {
        AtomicOp::FetchAndAdd => iters,
        AtomicOp::CmpAndSwap => 0,
    };
    if sum != want {
        return Err(PerfError::Data(format!(
            "after {iters} {}s the targets sum to {sum}, expected {want}",
            o.atomic_op().name()
        )));
    }
    Ok(Some(format!(
        "targets sum to {sum} after {iters} {}s",
        o.atomic_op().name()
    )))
}

/// `ctx_close_connection`: one more key message, then (over TCP) "done" from each side.
fn close<V: Endpoint>(node: &mut V, chan: &mut PerfChan, mine: &KeyMsg) -> Result<(), PerfError> {
    chan.keys(node, mine, "closing")?;
    chan.done(node)
}

/// Lets the device answer for `d` (a node is pumped; a VF of another process runs anyway).
fn linger<V: Endpoint>(node: &mut V, d: Duration) -> Result<(), PerfError> {
    let until = Instant::now() + d;
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        node.idle(left.min(vhca_fabric::node::MAX_WAIT * 10))?;
    }
    Ok(())
}
