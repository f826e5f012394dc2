//! ibv_rc_pingpong has no closing handshake: the ACK of one side's last SEND can be lost while
//! the other side, done, destroys its QP, and the first retries into nothing. Here a link drops
//! that ACK on purpose (every ACK once the side behind it has received all its messages), the
//! side that drops it ends at once (no linger), and the other side's retries run out:
//! - the client's last SEND was answered by the server's last message, so the run succeeds and
//!   reports the SEND as delivered without an ACK;
//! - the server's last SEND was answered by nothing, so the run ends with
//!   `LastSendUnacknowledged` (exit status 3 from the command line).
//!
//! Kernel UDP on loopback, 127.0.93.x:4791.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vhca::interop::endpoint::no_hook;
use vhca::interop::pingpong::{self, Options, PingError};
use vhca_device::packet::Opcode;
use vhca_device::{Packet, WcStatus};
use vhca_fabric::capture::Capture;
use vhca_fabric::node::Node;
use vhca_fabric::udp::UdpBridge;
use vhca_fabric::{Link, LinkCounters};
use vhca_guest::watchdog::Watchdog;

const ITERS: u32 = 20;

/// A UDP link that drops every ACK it would send once `after` packets of opcode `counted`
/// arrived.
struct DropLastAcks {
    inner: UdpBridge,
    counted: Opcode,
    sends_seen: u32,
    after: u32,
    dropped: Arc<AtomicU32>,
}

impl Link for DropLastAcks {
    fn send(&mut self, pkts: &mut Vec<Packet>) -> io::Result<()> {
        if self.sends_seen >= self.after {
            let before = pkts.len();
            pkts.retain(|p| p.bth.opcode != Opcode::RC_ACK);
            self.dropped
                .fetch_add((before - pkts.len()) as u32, Ordering::Relaxed);
        }
        self.inner.send(pkts)
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Packet>) -> io::Result<usize> {
        let start = out.len();
        let n = self.inner.recv(timeout, out)?;
        self.sends_seen += out[start..]
            .iter()
            .filter(|p| p.bth.opcode == self.counted)
            .count() as u32;
        Ok(n)
    }

    fn counters(&self) -> LinkCounters {
        self.inner.counters()
    }

    fn raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }

    fn set_capture(&mut self, capture: Capture) {
        self.inner.set_capture(capture)
    }
}

fn opts(linger: bool) -> Options {
    Options {
        size: 64,
        iters: ITERS,
        rx_depth: 50,
        // 4 ms: the 8 tries run out quickly once nobody answers.
        qp_timeout: 10,
        stall: Duration::from_secs(20),
        linger: if linger {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        },
        ..Options::default()
    }
}

fn dropping_node(ip: Ipv4Addr, dropped: &Arc<AtomicU32>) -> Node<DropLastAcks> {
    dropping_node_after(ip, dropped, Opcode::RC_SEND_ONLY)
}

fn dropping_node_after(
    ip: Ipv4Addr,
    dropped: &Arc<AtomicU32>,
    counted: Opcode,
) -> Node<DropLastAcks> {
    let link = DropLastAcks {
        inner: UdpBridge::bind(IpAddr::V4(ip)).expect("bind UDP"),
        counted,
        sends_seen: 0,
        after: ITERS,
        dropped: dropped.clone(),
    };
    Node::with_link(ip, link, 16 << 20).expect("node")
}

#[test]
fn a_client_whose_last_ack_is_lost_succeeds_because_the_server_answered() {
    let _w = Watchdog::arm("pingpong_last_ack client", Duration::from_secs(120));
    let (sip, cip) = (Ipv4Addr::new(127, 0, 93, 1), Ipv4Addr::new(127, 0, 93, 2));
    let dropped = Arc::new(AtomicU32::new(0));
    let listener = TcpListener::bind((sip, 0)).expect("bind TCP");
    let addr = listener.local_addr().unwrap();
    let d = dropped.clone();
    // The server drops the ACK of the client's last SEND and ends at once.
    let srv = std::thread::spawn(move || {
        let mut node = dropping_node(sip, &d);
        pingpong::server_on(&mut node, listener, &opts(false), &mut no_hook)
    });
    let mut node = Node::new(cip, 16 << 20).expect("client node");
    let c = pingpong::client_on(&mut node, addr, &opts(true), &mut no_hook)
        .unwrap_or_else(|e| panic!("client: {e}"));
    let s = srv.join().expect("server thread").expect("server");
    assert!(dropped.load(Ordering::Relaxed) > 0, "no ACK was dropped");
    assert_eq!(c.answered_unacked, 1, "{c:?}");
    assert!(c.lines().contains("answered by the peer but never ACKed"));
    assert_eq!((c.iters, s.iters, s.answered_unacked), (ITERS, ITERS, 0));
}

#[test]
fn a_server_whose_last_ack_is_lost_says_so_with_its_own_error() {
    let _w = Watchdog::arm("pingpong_last_ack server", Duration::from_secs(120));
    let (sip, cip) = (Ipv4Addr::new(127, 0, 93, 3), Ipv4Addr::new(127, 0, 93, 4));
    let dropped = Arc::new(AtomicU32::new(0));
    let listener = TcpListener::bind((sip, 0)).expect("bind TCP");
    let addr: SocketAddr = listener.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(sip, 16 << 20).expect("server node");
        pingpong::server_on(&mut node, listener, &opts(true), &mut no_hook)
    });
    // The client drops the ACK of the server's last SEND and ends at once.
    let mut node = dropping_node(cip, &dropped);
    let c = pingpong::client_on(&mut node, addr, &opts(false), &mut no_hook)
        .unwrap_or_else(|e| panic!("client: {e}"));
    drop(node);
    let e = srv
        .join()
        .expect("server thread")
        .expect_err("the server's last SEND was never ACKed");
    assert!(dropped.load(Ordering::Relaxed) > 0, "no ACK was dropped");
    assert!(
        matches!(e, PingError::LastSendUnacknowledged(WcStatus::RetryExcErr)),
        "{e}"
    );
    assert_eq!(e.exit_status(), 3);
    assert_eq!((c.iters, c.answered_unacked), (ITERS, 0));
}

/// ib_write_lat has no closing handshake either. Its server WRITEs first; each side WRITEs k
/// once it saw the peer's k.
mod write_lat {
    use super::*;
    use vhca::interop::perf::{self, PerfError, Test};

    fn opts() -> perf::Options {
        let mut o = perf::Options::new(Test::WriteLat);
        o.size = 64;
        o.iters = ITERS;
        o.qp_timeout = 10;
        o.timeout = Duration::from_secs(20);
        o
    }

    #[test]
    fn a_server_whose_last_write_lost_its_ack_succeeds_because_the_client_answered() {
        let _w = Watchdog::arm("write_lat last ack, server", Duration::from_secs(120));
        let (sip, cip) = (Ipv4Addr::new(127, 0, 93, 5), Ipv4Addr::new(127, 0, 93, 6));
        let dropped = Arc::new(AtomicU32::new(0));
        let listener = TcpListener::bind((sip, 0)).expect("bind TCP");
        let addr = listener.local_addr().unwrap();
        let srv = std::thread::spawn(move || {
            let mut node = Node::new(sip, 16 << 20).expect("server node");
            perf::serve_on(&mut node, listener, &opts(), &mut no_hook)
        });
        // The client drops its ACKs once all the server's WRITEs arrived.
        let mut node = dropping_node_after(cip, &dropped, Opcode::RC_WRITE_ONLY);
        let c = perf::client_on(&mut node, addr, &opts(), &mut no_hook)
            .unwrap_or_else(|e| panic!("client: {e}"));
        let s = srv
            .join()
            .expect("server thread")
            .unwrap_or_else(|e| panic!("server: {e}"));
        assert!(dropped.load(Ordering::Relaxed) > 0, "no ACK was dropped");
        for r in [&c, &s] {
            let j = serde_json::to_value(r).unwrap();
            assert_eq!(j["iterations"], ITERS, "{j}");
        }
    }

    #[test]
    fn a_client_whose_last_write_lost_its_ack_says_so_with_its_own_error() {
        let _w = Watchdog::arm("write_lat last ack, client", Duration::from_secs(120));
        let (sip, cip) = (Ipv4Addr::new(127, 0, 93, 7), Ipv4Addr::new(127, 0, 93, 8));
        let dropped = Arc::new(AtomicU32::new(0));
        let listener = TcpListener::bind((sip, 0)).expect("bind TCP");
        let addr = listener.local_addr().unwrap();
        let d = dropped.clone();
        // The server drops its ACKs once all the client's WRITEs arrived.
        let srv = std::thread::spawn(move || {
            let mut node = dropping_node_after(sip, &d, Opcode::RC_WRITE_ONLY);
            perf::serve_on(&mut node, listener, &opts(), &mut no_hook)
        });
        let mut node = Node::new(cip, 16 << 20).expect("client node");
        let e = perf::client_on(&mut node, addr, &opts(), &mut no_hook)
            .expect_err("the client's last WRITE was never ACKed");
        srv.join().expect("server thread").expect("server");
        assert!(dropped.load(Ordering::Relaxed) > 0, "no ACK was dropped");
        assert!(matches!(e, PerfError::LastWriteUnacknowledged), "{e}");
        assert_eq!(e.exit_status(), 3);
    }
}
