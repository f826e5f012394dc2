//! `vhca perf -R` client against `vhca perf -R` server over kernel UDP on loopback
//! (127.0.92.x:4791), no TCP at all: the side channel is an RC QP connected through the CM on
//! each side's QP1, then the data QPs are (REQ/REP/RTU per QP, DREQ/DREP at the end).

use std::net::Ipv4Addr;
use std::time::Duration;
use vhca::interop::perf::{self, Options, Report, Test};
use vhca_guest::watchdog::Watchdog;

fn run(test: Test, qps: u32, host: u8) -> (Report, Report) {
    let mut o = Options::new(test);
    o.size = 4096;
    o.iters = 200;
    o.qps = qps;
    o.rdma_cm = true;
    o.timeout = Duration::from_secs(30);
    let sip = Ipv4Addr::new(127, 0, 92, host);
    let cip = Ipv4Addr::new(127, 0, 92, host + 1);
    // The rdma_cm port (service ID 0x0106_0000 + port) at the server's RoCE address; the
    // client retries while the server does not listen yet.
    o.port = 18515;
    let so = o;
    let srv = std::thread::spawn(move || perf::server(sip, &so));
    let c = perf::client(cip, sip, &o);
    let s = srv.join().expect("server thread");
    (
        c.unwrap_or_else(|e| panic!("{test:?} client: {e}")),
        s.unwrap_or_else(|e| panic!("{test:?} server: {e}")),
    )
}

fn bw_total(r: &Report) -> (u64, u64) {
    match r {
        Report::Bw(b) => (b.iterations, b.bytes),
        r => panic!("expected a bandwidth report: {r:?}"),
    }
}

#[test]
fn perf_rdma_cm_send_write_read_bw_and_read_lat() {
    let _w = Watchdog::arm("perf_rdma_cm", Duration::from_secs(300));
    for (i, (test, qps)) in [(Test::SendBw, 1), (Test::WriteBw, 2), (Test::ReadBw, 1)]
        .into_iter()
        .enumerate()
    {
        let (c, s) = run(test, qps, 1 + 2 * i as u8);
        assert_eq!(bw_total(&c), (200 * qps as u64, 4096), "{test:?}");
        assert_eq!(bw_total(&s).1, 4096, "{test:?}");
        assert!(c.table().contains("rdma_cm QPs\t : ON"), "{test:?}");
    }
    let (c, _) = run(Test::ReadLat, 1, 11);
    match c {
        Report::Lat(l) => assert_eq!((l.bytes, l.iterations), (4096, 200)),
        r => panic!("expected a latency report: {r:?}"),
    }
}
