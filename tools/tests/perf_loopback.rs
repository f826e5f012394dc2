//! `vhca perf` client against `vhca perf` server over kernel UDP on loopback (127.0.77.x:4791)
//! with the perftest side channel on TCP: all four tests, each side checking the other's
//! byte counts.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;
use vhca::interop::perf::{self, Options, Report, Test};

fn run(test: Test, size: u32, iters: u32, host: u8) -> (Report, Report) {
    let mut o = Options::new(test);
    o.size = size;
    o.iters = iters;
    o.timeout = Duration::from_secs(30);
    let sip = Ipv4Addr::new(127, 0, 77, host);
    let cip = Ipv4Addr::new(127, 0, 77, host + 1);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    o.port = listener.local_addr().unwrap().port();
    let so = o;
    let srv = std::thread::spawn(move || perf::serve(sip, listener, &so));
    let c = perf::client(cip, Ipv4Addr::LOCALHOST, &o);
    let s = srv.join().expect("server thread");
    (
        c.unwrap_or_else(|e| panic!("{test:?} client: {e}")),
        s.unwrap_or_else(|e| panic!("{test:?} server: {e}")),
    )
}

fn bw(r: Report) -> perf::BwReport {
    match r {
        Report::Bw(b) => b,
        Report::Lat(_) => panic!("expected a bandwidth report"),
    }
}

fn check_bw(test: Test, size: u32, iters: u32, host: u8) {
    let (c, s) = run(test, size, iters, host);
    let table = c.table();
    assert!(
        table.contains("#bytes     #iterations    BW peak[MB/sec]"),
        "{table}"
    );
    let (c, s) = (bw(c), bw(s));
    let total = size as u64 * iters as u64;
    assert_eq!(
        (c.bytes, c.iterations, c.bytes_transferred),
        (size as u64, iters as u64, total)
    );
    assert!(
        c.bw_average_mb_per_sec > 0.0 && c.bw_peak_mb_per_sec >= c.bw_average_mb_per_sec * 0.99
    );
    assert!(c.msg_rate_mpps > 0.0);
    assert_eq!((s.bytes, s.iterations), (size as u64, iters as u64));
    if test == Test::SendBw {
        // The server counted what arrived.
        assert_eq!((s.source, s.bytes_transferred), ("local", total));
    } else {
        // The server prints the client's report, as perftest's does.
        assert_eq!(s.source, "peer");
        assert_eq!(s.bw_average_mb_per_sec, c.bw_average_mb_per_sec);
    }
}

#[test]
fn send_bw_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "send_bw_loopback",
        std::time::Duration::from_secs(300),
    );
    check_bw(Test::SendBw, 4096, 200, 10);
}

#[test]
fn write_bw_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "write_bw_loopback",
        std::time::Duration::from_secs(300),
    );
    check_bw(Test::WriteBw, 4096, 200, 20);
    // Above 8 KiB every request is signaled.
    check_bw(Test::WriteBw, 65536, 40, 22);
}

#[test]
fn read_bw_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "read_bw_loopback",
        std::time::Duration::from_secs(300),
    );
    check_bw(Test::ReadBw, 4096, 200, 30);
}

#[test]
fn send_lat_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "send_lat_loopback",
        std::time::Duration::from_secs(300),
    );
    let (c, s) = run(Test::SendLat, 64, 200, 40);
    assert!(c
        .table()
        .contains("t_min[usec]    t_max[usec]  t_typical[usec]"));
    for r in [c, s] {
        let Report::Lat(l) = r else {
            panic!("expected a latency report")
        };
        assert_eq!(
            (l.bytes, l.iterations, l.bytes_transferred),
            (64, 200, 64 * 200)
        );
        assert!(l.t_min_usec > 0.0 && l.t_min_usec <= l.t_typical_usec);
        assert!(l.t_typical_usec <= l.t_max_usec && l.t_avg_usec <= l.t_max_usec);
    }
}
