//! One run from the side channel's first byte to its last: the step sequence of each test
//! (see the module documentation of [`super`]).

use super::*;

/// One whole run over an established side channel, on a new node at `ip`.
pub(super) fn session(
    ip: Ipv4Addr,
    sock: TcpStream,
    client: bool,
    o: &Options,
) -> Result<Report, PerfError> {
    // Bad options fail before the node (sized from them) is made.
    o.effective()?;
    let mut node = Node::new(ip, node_mem(o.size))?;
    session_on(&mut node, sock, client, o, &mut no_hook)
}

/// One whole run over an established side channel, on any device.
pub(super) fn session_on<V: Endpoint>(
    node: &mut V,
    sock: TcpStream,
    client: bool,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let o = o.effective()?;
    let mut chan = Chan::new(sock, client, o.timeout)?;
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
    let mine = my_key(gid, &r, &o);
    // K1: addresses.
    let rem = chan.keys(node, &mine, "the address exchange")?;
    if rem.gid.to_ipv4().is_none() {
        return Err(PerfError::GidType(rem.gid.0));
    }
    print_dest("local", &mine);
    print_dest("remote", &rem);
    connect(node, &r, &o, mtu, &rem)?;
    // K2: after RTR; K3: the addresses once more.
    chan.keys(node, &mine, "the handshake after RTR")?;
    chan.keys(node, &mine, "the second address exchange")?;

    let peer_version2 = peer_version.clone();
    let bw = |source, w: &WireReport, bytes, seconds| {
        Report::Bw(BwReport {
            test: o.test,
            role,
            bytes: w.size,
            iterations: w.iters,
            bw_peak_mb_per_sec: w.bw_peak,
            bw_average_mb_per_sec: w.bw_avg,
            msg_rate_mpps: w.msg_rate,
            bytes_transferred: bytes,
            seconds,
            source,
            mtu: mtu.bytes(),
            peer_version: peer_version2.clone(),
        })
    };
    let report = match o.test {
        Test::SendBw | Test::SendLat => {
            // Receivers post their receives, then K4 tells the sender to go.
            let recv_area = Cycler::new(r.buf + r.half, o.size, cycle);
            let want_recvs = !client || o.test == Test::SendLat;
            let mut posted = 0u64;
            if want_recvs {
                while posted < o.rx_depth as u64 {
                    post_recv(node, &r, &o, &recv_area, posted)?;
                    posted += 1;
                }
            }
            chan.keys(node, &mine, "the barrier before the data phase")?;
            if o.test == Test::SendLat {
                let (times, bytes) = send_lat(node, &r, &o, client, &recv_area, posted, hook)?;
                let (min, max, typ, avg, stdev, p99, p999) = lat_numbers(&times);
                Report::Lat(LatReport {
                    test: o.test,
                    role,
                    bytes: o.size as u64,
                    iterations: o.iters as u64,
                    t_min_usec: min,
                    t_max_usec: max,
                    t_typical_usec: typ,
                    t_avg_usec: avg,
                    t_stdev_usec: stdev,
                    p99_usec: p99,
                    p99_9_usec: p999,
                    bytes_transferred: bytes,
                    mtu: mtu.bytes(),
                    peer_version: peer_version.clone(),
                })
            } else if client {
                let t = bw_client(node, &r, &o, cycle, &rem, hook)?;
                let w = bw_numbers(&t, &o);
                let secs = t.completed[t.completed.len() - 1].unwrap_or(0.0) - t.posted[0];
                bw("local", &w, t.bytes, secs)
            } else {
                let (secs, bytes) = send_bw_server(node, &r, &o, &recv_area, posted, hook)?;
                let s = secs.max(1e-9);
                let avg = bytes as f64 / s / MB;
                let w = WireReport {
                    size: o.size as u64,
                    iters: o.iters as u64,
                    bw_peak: avg,
                    bw_avg: avg,
                    msg_rate: o.iters as f64 / s / 1e6,
                };
                bw("local", &w, bytes, secs)
            }
        }
        Test::WriteBw | Test::ReadBw => {
            if client {
                let t = bw_client(node, &r, &o, cycle, &rem, hook)?;
                let w = bw_numbers(&t, &o);
                // K4: "finished", then the reports.
                chan.keys(node, &mine, "the end-of-test handshake")?;
                xchg_reports(&mut chan, node, &w)?;
                let secs = t.completed[t.completed.len() - 1].unwrap_or(0.0) - t.posted[0];
                bw("local", &w, t.bytes, secs)
            } else {
                // The server only waits (pumping) for the client's "finished" key message.
                let start = Instant::now();
                // A hook gets its calls here: this side has no iterations of its own.
                let total = o.iters as u64;
                let b = chan.xchg_ticking(
                    node,
                    &mine.encode(),
                    "waiting for the client to finish",
                    Some((hook, total)),
                )?;
                KeyMsg::decode(&b)?;
                let secs = start.elapsed().as_secs_f64();
                let theirs = xchg_reports(&mut chan, node, &WireReport::default())?;
                if theirs.size != o.size as u64 || theirs.iters != o.iters as u64 {
                    return Err(PerfError::Mismatch {
                        peer_size: theirs.size,
                        peer_iters: theirs.iters,
                        size: o.size as u64,
                        iters: o.iters as u64,
                    });
                }
                bw("peer", &theirs, 0, secs)
            }
        }
    };

    // D: one more key message, then "done" from each side.
    chan.keys(node, &mine, "closing")?;
    chan.write_blob(node, b"done\0", "closing")?;
    // Take the peer's "done" too when it comes, so the socket closes cleanly (no RST); a peer
    // that already closed is fine.
    chan.timeout = Duration::from_secs(2);
    let _ = chan.read_blob(node, 5, "closing", None);
    Ok(report)
}
