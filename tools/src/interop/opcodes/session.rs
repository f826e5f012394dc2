//! Each role's run from the side channel's first byte to its last: set-up, the exchange of
//! QPs, the data phase, the summaries. Once the channel is up, a side that fails tells the
//! peer why ([`proto::abort`]).

use super::client::{self, Peer as ServerPeer};
use super::pattern::{Atomics, ATOMICS_START};
use super::proto::{self, Hello, Inbox, Msg, Welcome, PROTOCOL};
use super::report::{agree, QpInfo, Report, Summary};
use super::server::{self, fill_read, Peer as ClientPeer};
use super::setup::{
    ah_to, connect_rc, create, post_recv, ud_len, ClientLayout, Depths, Res, ServerLayout, Wr, GRH,
};
use super::{connect, OpcodesError, Options, Run};
use crate::interop::endpoint::{Endpoint, Hook};
use crate::interop::side_channel::Chan;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use vhca_device::{Gid, MemKey, Mtu, Psn, Qpn};
use vhca_guest::programs::PeerInfo;

fn qp_info(r: &Res) -> QpInfo {
    QpInfo {
        rc_qpn: r.rc.0,
        rc_psn: r.psn.0,
        ud_qpn: r.ud.0,
        gid: r.gid.to_string(),
    }
}

/// Runs `f` over the side channel; if it fails, tells the peer why (unless the peer failed
/// first: it knows).
fn telling_peer<T>(
    chan: &mut Chan,
    f: impl FnOnce(&mut Chan) -> Result<T, OpcodesError>,
) -> Result<T, OpcodesError> {
    let r = f(chan);
    if let Err(e) = &r {
        if !matches!(e, OpcodesError::PeerFailed(_)) {
            proto::abort(chan, e);
        }
    }
    r
}

/// The line a script waits for to know the data phase begins (a live migration "mid-run"
/// starts after it), with both sides' QPs.
fn announce_data_phase(iters: u64, local: &QpInfo, remote: &QpInfo) {
    eprintln!(
        "vhca opcodes: data phase: {iters} iterations, local RC QPN {:#08x} UD QPN {:#08x}, remote RC QPN {:#08x} UD QPN {:#08x}",
        local.rc_qpn, local.ud_qpn, remote.rc_qpn, remote.ud_qpn
    );
}

fn expect_summary(m: Msg) -> Result<Summary, OpcodesError> {
    match m {
        Msg::Summary(s) => Ok(s),
        m => Err(OpcodesError::Protocol(format!(
            "expected the peer's summary, got {}",
            m.kind()
        ))),
    }
}

/// The server's counters at the end must be what `iters` iterations of the model leave.
fn check_atomics(got: Option<[u64; 2]>, iters: u64) -> Result<(), OpcodesError> {
    let want = Atomics::after(iters);
    if got != Some([want.cas, want.faa]) {
        return Err(OpcodesError::Check {
            iter: iters,
            op: super::pattern::Op::CmpSwap,
            what: format!(
                "after the last iteration the server's counters are {got:x?}, expected [{:x}, {:x}] (CMP_AND_SWP's, FETCH_AND_ADD's)",
                want.cas, want.faa
            ),
        });
    }
    Ok(())
}

pub(super) fn client<V: Endpoint>(
    node: &mut V,
    server: SocketAddr,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, OpcodesError> {
    // The datagram buffers are sized for this side's MTU; the path's can only be smaller.
    let lay = ClientLayout::new(o.size, o.window, ud_len(o.size, o.mtu));
    let r = create(node, Depths::client(o.window), lay.len)?;
    // Receives for the server's answers, before the server can know where to send them.
    for n in 0..lay.ud_recv.count {
        let at = lay.ud_recv.at(r.buf, n);
        post_recv(node, &r, r.ud, Wr::UdRecv(n), at, lay.ud_recv.stride)?;
    }
    let mut chan = Chan::new(connect(server, o.timeout)?, true, o.timeout)?;
    let mut inbox = Inbox::default();
    telling_peer(&mut chan, |chan| {
        let hello = Hello {
            protocol: PROTOCOL.into(),
            gid: r.gid.0,
            rc_qpn: r.rc.0,
            rc_psn: r.psn.0,
            ud_qpn: r.ud.0,
            size: o.size,
            iters: o.iters,
            window: o.window,
            mtu: o.mtu.bytes(),
        };
        proto::send(chan, node, &Msg::Hello(hello), "sending the hello")?;
        let w = match inbox.recv(chan, node, "waiting for the server's welcome")? {
            Msg::Welcome(w) => w,
            m => {
                return Err(OpcodesError::Protocol(format!(
                    "expected the server's welcome, got {}",
                    m.kind()
                )))
            }
        };
        let mtu = w.check(o.mtu, o.size, o.window)?;
        let gid = Gid(w.gid);
        let peer = PeerInfo {
            qpn: Qpn(w.rc_qpn),
            psn: Psn(w.rc_psn),
            gid,
        };
        connect_rc(node, &r, peer, mtu, o.qp_timeout)?;
        let remote = QpInfo {
            rc_qpn: w.rc_qpn,
            rc_psn: w.rc_psn,
            ud_qpn: w.ud_qpn,
            gid: gid.to_string(),
        };
        let peer = ServerPeer {
            ah: ah_to(node, &r, gid)?,
            gid,
            ud_qpn: Qpn(w.ud_qpn),
            rkey: MemKey(w.rkey),
            welcome: w,
        };
        let run = Run {
            size: o.size,
            iters: o.iters,
            window: o.window,
            ud_len: ud_len(o.size, mtu),
            timeout: o.timeout,
            fault: o.fault,
        };
        announce_data_phase(o.iters, &qp_info(&r), &remote);
        let t = client::data_phase(node, &r, &lay, &peer, &run, chan, &mut inbox, hook)?;
        let mine = t.summary(o.iters, None);
        proto::send(
            chan,
            node,
            &Msg::Summary(mine.clone()),
            "sending the summary",
        )?;
        let theirs = expect_summary(inbox.recv(chan, node, "waiting for the server's summary")?)?;
        agree(&mine, &theirs)?;
        check_atomics(theirs.atomics, o.iters)?;
        let shape = (o.size, run.ud_len, o.window, mtu.bytes());
        Ok(Report::new(
            "client",
            &t,
            shape,
            o.iters,
            qp_info(&r),
            remote,
            theirs,
        ))
    })
}

pub(super) fn server<V: Endpoint>(
    node: &mut V,
    listener: TcpListener,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, OpcodesError> {
    // A line scripts wait for before they start the client.
    eprintln!(
        "vhca opcodes: listening on TCP port {}",
        listener.local_addr()?.port()
    );
    let (sock, _) = listener.accept()?;
    drop(listener);
    let mut chan = Chan::new(sock, false, o.timeout)?;
    let mut inbox = Inbox::default();
    telling_peer(&mut chan, |chan| {
        let h = match inbox.recv(chan, node, "waiting for the client's hello")? {
            Msg::Hello(h) => h,
            m => {
                return Err(OpcodesError::Protocol(format!(
                    "expected the client's hello, got {}",
                    m.kind()
                )))
            }
        };
        let client_mtu = h.check(o.size, o.window)?;
        let mtu = if client_mtu.bytes() < o.mtu.bytes() {
            client_mtu
        } else {
            o.mtu
        };
        let run = Run {
            size: h.size,
            iters: h.iters,
            window: h.window,
            ud_len: ud_len(h.size, mtu),
            timeout: o.timeout,
            fault: o.fault,
        };
        let (r, lay, peer, t) = server_setup(node, &h, &run, mtu, o.qp_timeout)?;
        let welcome = Welcome {
            protocol: PROTOCOL.into(),
            gid: r.gid.0,
            rc_qpn: r.rc.0,
            rc_psn: r.psn.0,
            ud_qpn: r.ud.0,
            rkey: r.key.0,
            write_addr: lay.write.at(r.buf, 0),
            write_imm_addr: lay.write_imm.at(r.buf, 0),
            read_addr: lay.read.at(r.buf, 0),
            atomic_addr: lay.atomic.at(r.buf, 0),
            mtu: mtu.bytes(),
        };
        proto::send(chan, node, &Msg::Welcome(welcome), "sending the welcome")?;
        let remote = QpInfo {
            rc_qpn: h.rc_qpn,
            rc_psn: h.rc_psn,
            ud_qpn: h.ud_qpn,
            gid: Gid(h.gid).to_string(),
        };
        announce_data_phase(run.iters, &qp_info(&r), &remote);
        let (t, theirs) =
            server::data_phase(node, &r, &lay, &peer, &run, t, chan, &mut inbox, hook)?;
        let c = node.read_buf(lay.atomic.at(r.buf, 0), 16)?;
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let counters = [word(&c[..8]), word(&c[8..])];
        check_atomics(Some(counters), run.iters)?;
        let mine = t.summary(run.iters, Some(counters));
        proto::send(
            chan,
            node,
            &Msg::Summary(mine.clone()),
            "sending the summary",
        )?;
        agree(&mine, &theirs)?;
        // The client closes once it has the summary; wait for that (briefly) so the socket
        // closes with a FIN rather than a reset.
        chan.timeout = Duration::from_secs(2);
        let _ = chan.read_blob(node, 1, "closing", None);
        let shape = (run.size, run.ud_len, run.window, mtu.bytes());
        Ok(Report::new(
            "server",
            &t,
            shape,
            run.iters,
            qp_info(&r),
            remote,
            theirs,
        ))
    })
}

/// The server's objects for the client's `h`: QPs connected, buffers filled, receives
/// posted. Everything is ready before the welcome goes out, so the client may start at once.
fn server_setup<V: Endpoint>(
    node: &mut V,
    h: &Hello,
    run: &Run,
    mtu: Mtu,
    qp_timeout: u8,
) -> Result<(Res, ServerLayout, ClientPeer, super::report::Tally), OpcodesError> {
    let lay = ServerLayout::new(run.size, run.window, run.ud_len);
    let r = create(node, Depths::server(run.window), lay.len)?;
    let mut counters = ATOMICS_START.cas.to_le_bytes().to_vec();
    counters.extend_from_slice(&ATOMICS_START.faa.to_le_bytes());
    node.write_buf(lay.atomic.at(r.buf, 0), &counters)?;
    let mut t = super::report::Tally::new();
    for i in 0..(run.window as u64).min(run.iters) {
        fill_read(node, &r, &lay, run, &mut t, i)?;
    }
    let gid = Gid(h.gid);
    let peer = PeerInfo {
        qpn: Qpn(h.rc_qpn),
        psn: Psn(h.rc_psn),
        gid,
    };
    connect_rc(node, &r, peer, mtu, qp_timeout)?;
    for n in 0..lay.rc_recv.count {
        let at = lay.rc_recv.at(r.buf, n);
        post_recv(node, &r, r.rc, Wr::RcRecv(n), at, run.size as u64)?;
    }
    for n in 0..lay.ud_recv.count {
        let at = lay.ud_recv.at(r.buf, n);
        post_recv(node, &r, r.ud, Wr::UdRecv(n), at, GRH + run.ud_len as u64)?;
    }
    let peer = ClientPeer {
        ah: ah_to(node, &r, gid)?,
        gid,
        ud_qpn: Qpn(h.ud_qpn),
    };
    Ok((r, lay, peer, t))
}
