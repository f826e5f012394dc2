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
        r => panic!("expected a bandwidth report: {r:?}"),
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

// The tests below (ib_write_lat, ib_read_lat, the atomics and the options -a, -A, -I,
// --report_gbits) run on addresses of their own, 127.0.86.x.

fn run_with(o: Options, host: u8) -> (Report, Report) {
    let sip = Ipv4Addr::new(127, 0, 86, host);
    let cip = Ipv4Addr::new(127, 0, 86, host + 1);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let mut o = o;
    o.timeout = Duration::from_secs(30);
    o.port = listener.local_addr().unwrap().port();
    let so = o;
    let srv = std::thread::spawn(move || perf::serve(sip, listener, &so));
    let c = perf::client(cip, Ipv4Addr::LOCALHOST, &o);
    let s = srv.join().expect("server thread");
    let test = o.test;
    (
        c.unwrap_or_else(|e| panic!("{test:?} client: {e}")),
        s.unwrap_or_else(|e| panic!("{test:?} server: {e}")),
    )
}

fn opts(test: Test, size: Option<u32>, iters: u32) -> Options {
    let mut o = Options::new(test);
    if let Some(s) = size {
        o.size = s;
    }
    o.iters = iters;
    o
}

fn lat(r: Report) -> perf::LatReport {
    match r {
        Report::Lat(l) => l,
        r => panic!("expected a latency report: {r:?}"),
    }
}

fn check_lat_row(l: &perf::LatReport, size: u64, iters: u64) {
    assert_eq!((l.bytes, l.iterations, l.source), (size, iters, "local"));
    assert!(
        l.t_min_usec > 0.0 && l.t_min_usec <= l.t_typical_usec,
        "{l:?}"
    );
    assert!(
        l.t_typical_usec <= l.t_max_usec && l.t_avg_usec <= l.t_max_usec,
        "{l:?}"
    );
}

#[test]
fn write_lat_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("write_lat_loopback", Duration::from_secs(300));
    let (c, s) = run_with(opts(Test::WriteLat, Some(64), 200), 10);
    let table = c.table();
    assert!(table.contains("RDMA_Write Latency Test"), "{table}");
    assert!(
        table.contains("t_min[usec]    t_max[usec]  t_typical[usec]"),
        "{table}"
    );
    // Each side saw every one of the peer's WRITEs arrive (the last byte is the count).
    for r in [c, s] {
        let l = lat(r);
        check_lat_row(&l, 64, 200);
        assert_eq!(l.bytes_transferred, 64 * 200);
    }
}

#[test]
fn write_lat_inline_loopback() {
    let _w =
        vhca_guest::watchdog::Watchdog::arm("write_lat_inline_loopback", Duration::from_secs(300));
    let mut o = opts(Test::WriteLat, Some(100), 100);
    o.inline_size = 128;
    let (c, s) = run_with(o, 20);
    assert!(c.table().contains("Max inline data : 128[B]"));
    for r in [c, s] {
        assert_eq!(lat(r).bytes_transferred, 100 * 100);
    }
}

#[test]
fn read_lat_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("read_lat_loopback", Duration::from_secs(300));
    let (c, s) = run_with(opts(Test::ReadLat, Some(4096), 200), 30);
    assert!(c.table().contains("RDMA_Read Latency Test"));
    let l = lat(c);
    check_lat_row(&l, 4096, 200);
    assert_eq!(l.bytes_transferred, 4096 * 200);
    // The server issues nothing and, like perftest's, reports no figures.
    let table = s.table();
    assert!(!table.contains("#bytes"), "{table}");
    let sl = lat(s);
    assert_eq!((sl.source, sl.iterations), ("none", 0));
}

#[test]
fn atomic_lat_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("atomic_lat_loopback", Duration::from_secs(300));
    for (op, host) in [
        (None, 40),
        (Some(perf::AtomicOp::FetchAndAdd), 42),
        (Some(perf::AtomicOp::CmpAndSwap), 44),
    ] {
        let mut o = opts(Test::AtomicLat, None, 150);
        o.atomic = op;
        let (c, s) = run_with(o, host);
        let name = op.unwrap_or_default().name();
        assert!(c.table().contains(&format!("Atomic {name} Latency Test")));
        let l = lat(c);
        check_lat_row(&l, 8, 150);
        // The client checked every fetched value, the server its target at the end.
        assert!(l.checked.is_some());
        let sl = lat(s);
        assert!(sl.checked.unwrap().contains(name));
    }
}

#[test]
fn atomic_bw_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("atomic_bw_loopback", Duration::from_secs(300));
    for (op, host) in [
        (Some(perf::AtomicOp::FetchAndAdd), 50),
        (Some(perf::AtomicOp::CmpAndSwap), 52),
    ] {
        let mut o = opts(Test::AtomicBw, None, 1000);
        o.atomic = op;
        let (c, s) = run_with(o, host);
        let name = op.unwrap_or_default().name();
        assert!(c.table().contains(&format!("Atomic {name} BW Test")));
        let (c, s) = (bw(c), bw(s));
        assert_eq!(
            (c.bytes, c.iterations, c.bytes_transferred),
            (8, 1000, 8000)
        );
        assert!(c.bw_average_mb_per_sec > 0.0 && c.msg_rate_mpps > 0.0);
        assert_eq!((s.source, s.bytes, s.iterations), ("peer", 8, 1000));
        // 1000 FETCH_AND_ADDs of 1 spread over the server's 64 cache-line slots.
        let checked = s.checked.expect("the server checks its targets");
        let want = if op == Some(perf::AtomicOp::FetchAndAdd) {
            "sum to 1000"
        } else {
            "sum to 0"
        };
        assert!(checked.contains(want), "{checked}");
    }
}

fn sizes(r: &Report) -> Vec<u64> {
    match r {
        Report::Sizes(v) => v
            .iter()
            .map(|r| match r {
                Report::Bw(b) => b.bytes,
                Report::Lat(l) => l.bytes,
                Report::Sizes(_) => 0,
            })
            .collect(),
        _ => panic!("expected a report per size"),
    }
}

fn all_sizes(test: Test, host: u8) -> (Report, Report) {
    let mut o = opts(test, None, 5);
    o.all_sizes = true;
    run_with(o, host)
}

const EVERY_SIZE: [u64; 23] = {
    let mut s = [0; 23];
    let mut i = 0;
    while i < 23 {
        s[i] = 2 << i;
        i += 1;
    }
    s
};

#[test]
fn all_sizes_bw_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("all_sizes_bw_loopback", Duration::from_secs(300));
    // write_bw and read_bw: the client runs every size; the server prints the last one (the
    // report the client sends it), as perftest's does.
    for (test, host) in [(Test::WriteBw, 60), (Test::ReadBw, 62)] {
        let (c, s) = all_sizes(test, host);
        assert_eq!(sizes(&c), EVERY_SIZE);
        let table = c.table();
        assert_eq!(table.matches("#bytes").count(), 1, "{table}");
        assert_eq!(
            table.lines().filter(|l| l.starts_with(" 8388608 ")).count(),
            1
        );
        let s = bw(s);
        assert_eq!((s.bytes, s.iterations), (8 << 20, 5));
    }
    // send_bw: both sides measure every size.
    let (c, s) = all_sizes(Test::SendBw, 64);
    assert_eq!(sizes(&c), EVERY_SIZE);
    assert_eq!(sizes(&s), EVERY_SIZE);
    let Report::Sizes(rows) = s else {
        unreachable!()
    };
    for r in rows {
        let b = bw(r);
        assert_eq!(b.bytes_transferred, b.bytes * 5);
    }
}

#[test]
fn all_sizes_lat_loopback() {
    let _w =
        vhca_guest::watchdog::Watchdog::arm("all_sizes_lat_loopback", Duration::from_secs(300));
    for (test, host) in [(Test::SendLat, 70), (Test::WriteLat, 72)] {
        let (c, s) = all_sizes(test, host);
        assert_eq!(sizes(&c), EVERY_SIZE);
        assert_eq!(sizes(&s), EVERY_SIZE);
    }
    let (c, s) = all_sizes(Test::ReadLat, 74);
    assert_eq!(sizes(&c), EVERY_SIZE);
    assert_eq!(lat(s).source, "none");
}

#[test]
fn gbits_and_inline_loopback() {
    let _w =
        vhca_guest::watchdog::Watchdog::arm("gbits_and_inline_loopback", Duration::from_secs(300));
    let mut o = opts(Test::WriteBw, Some(4096), 200);
    o.report_gbits = true;
    let (c, s) = run_with(o, 80);
    let table = c.table();
    assert!(
        table.contains("BW peak[Gb/sec]    BW average[Gb/sec]"),
        "{table}"
    );
    let (c, s) = (bw(c), bw(s));
    assert_eq!((c.unit, s.unit), ("Gb/sec", "Gb/sec"));
    // 4096 B x 200 in Gb/s is MB/s x 2^20 x 8 / 10^9.
    let mbs = c.bytes_transferred as f64 / c.seconds / 1048576.0;
    let gbits = c.bw_average_mb_per_sec;
    assert!(
        (gbits / (mbs * 1048576.0 * 8.0 / 1e9) - 1.0).abs() < 0.2,
        "{gbits} vs {mbs}"
    );

    // -I: small SENDs go inline; the receiver counts the same bytes.
    let mut o = opts(Test::SendBw, Some(64), 300);
    o.inline_size = 64;
    let (c, s) = run_with(o, 82);
    assert_eq!(bw(c).bytes_transferred, 64 * 300);
    assert_eq!(bw(s).bytes_transferred, 64 * 300);
}

/// What perftest refuses, vhca refuses in perftest's words; what vhca does not implement it
/// refuses saying so. Nothing here touches the network.
#[test]
fn refusals() {
    let err = |o: Options| {
        let e = perf::client(Ipv4Addr::new(127, 0, 86, 90), Ipv4Addr::LOCALHOST, &o)
            .expect_err("refused");
        assert!(matches!(e, perf::PerfError::Options(_)), "{e}");
        e.to_string()
    };
    let with = |t: Test, f: &dyn Fn(&mut Options)| {
        let mut o = Options::new(t);
        o.port = 1;
        f(&mut o);
        err(o)
    };
    assert!(
        with(Test::WriteLat, &|o| o.qps = 2).contains("Multiple QPs only available on bw tests")
    );
    assert!(with(Test::ReadBw, &|o| o.inline_size = 8)
        .contains("Inline feature not available on READ/Atomic verbs"));
    assert!(with(Test::WriteBw, &|o| o.atomic =
        Some(perf::AtomicOp::CmpAndSwap))
    .contains("You are not running the atomic_lat/bw test!"));
    assert!(with(Test::WriteLat, &|o| o.events = true)
        .contains("Events feature not available on WRITE verb"));
    assert!(with(Test::SendLat, &|o| o.duplex = true)
        .contains("Bidirectional is only available in BW test"));
    assert!(with(Test::AtomicBw, &|o| o.size = 16)
        .contains("Message size cannot be changed for Atomic tests"));
    assert!(with(Test::AtomicLat, &|o| o.all_sizes = true)
        .contains("Message size cannot be changed for Atomic tests"));
    assert!(with(Test::WriteBw, &|o| {
        o.duration = Some(5);
        o.all_sizes = true
    })
    .contains("Duration mode currently doesn't support running on all sizes."));
    assert!(with(Test::SendBw, &|o| {
        o.duration = Some(5);
        o.events = true
    })
    .contains("Duration mode doesn't work with events."));
    assert!(with(Test::WriteBw, &|o| o.inline_size = 512).contains("max_inline_data 256"));
}

/// `-q`: every QP runs the iterations; the reports count them all, the server's receives and
/// atomic targets too.
#[test]
fn several_qps_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("several_qps_loopback", Duration::from_secs(300));
    for (test, host) in [
        (Test::WriteBw, 100),
        (Test::ReadBw, 102),
        (Test::SendBw, 104),
        (Test::AtomicBw, 106),
    ] {
        let size = if test == Test::AtomicBw {
            None
        } else {
            Some(4096)
        };
        let mut o = opts(test, size, 300);
        o.qps = 4;
        let (c, s) = run_with(o, host);
        assert!(c.table().contains("Number of qps   : 4"));
        let (c, s) = (bw(c), bw(s));
        let size = c.bytes;
        assert_eq!(
            (c.iterations, c.bytes_transferred),
            (1200, 1200 * size),
            "{test:?}"
        );
        assert_eq!(s.iterations, 1200, "{test:?}");
        match test {
            Test::SendBw => assert_eq!(s.bytes_transferred, 1200 * size),
            Test::AtomicBw => assert!(s.checked.unwrap().contains("sum to 1200")),
            _ => assert_eq!(s.source, "peer"),
        }
    }
}

/// `-D SECS`: every test runs for a time; bandwidth reports have no peak and count what
/// completed in the sample, latency reports perftest's t_avg and tps.
#[test]
fn duration_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("duration_loopback", Duration::from_secs(300));
    for (test, host) in [
        (Test::WriteBw, 110),
        (Test::SendBw, 112),
        (Test::AtomicBw, 114),
    ] {
        let size = if test == Test::AtomicBw {
            None
        } else {
            Some(4096)
        };
        let mut o = opts(test, size, 1000);
        o.duration = Some(1);
        let (c, s) = run_with(o, host);
        let (c, s) = (bw(c), bw(s));
        assert!(
            c.iterations > 0 && c.bw_average_mb_per_sec > 0.0,
            "{test:?} {c:?}"
        );
        assert_eq!(c.bw_peak_mb_per_sec, 0.0);
        assert_eq!(c.bytes_transferred, c.iterations * c.bytes);
        if test == Test::SendBw {
            assert!(s.iterations > 0 && s.source == "local", "{s:?}");
        } else {
            assert_eq!((s.source, s.iterations), ("peer", c.iterations));
        }
    }
    for (test, host) in [
        (Test::WriteLat, 120),
        (Test::SendLat, 122),
        (Test::ReadLat, 124),
        (Test::AtomicLat, 126),
    ] {
        let mut o = opts(test, None, 1000);
        o.duration = Some(1);
        let (c, _s) = run_with(o, host);
        let table = c.table();
        assert!(table.contains("t_avg[usec]    tps average"), "{table}");
        let l = lat(c);
        assert!(l.iterations > 0 && l.t_avg_usec > 0.0, "{test:?} {l:?}");
        assert!(l.tps.unwrap() > 0.0);
    }
}

/// `-b`: both sides run the requests at once and print the sum of both reports.
#[test]
fn bidirectional_loopback() {
    let _w =
        vhca_guest::watchdog::Watchdog::arm("bidirectional_loopback", Duration::from_secs(300));
    for (test, host) in [
        (Test::WriteBw, 130),
        (Test::ReadBw, 132),
        (Test::AtomicBw, 134),
        (Test::SendBw, 136),
    ] {
        let size = if test == Test::AtomicBw {
            None
        } else {
            Some(4096)
        };
        let mut o = opts(test, size, 300);
        o.duplex = true;
        let (c, s) = run_with(o, host);
        assert!(c.table().contains("Bidirectional BW Test"));
        let (c, s) = (bw(c), bw(s));
        for r in [&c, &s] {
            assert_eq!(r.source, "local+peer", "{test:?}");
            assert_eq!((r.iterations, r.bytes_transferred), (300, 300 * r.bytes));
        }
        // Each printed its own figures plus the other's: the same sum on both sides.
        let (a, b) = (c.bw_average_mb_per_sec, s.bw_average_mb_per_sec);
        assert!((a - b).abs() <= a * 1e-9, "{a} vs {b}");
    }
    let mut o = opts(Test::SendBw, Some(64), 10);
    o.duplex = true;
    o.duration = Some(1);
    let e = perf::client(Ipv4Addr::new(127, 0, 86, 138), Ipv4Addr::LOCALHOST, &o).unwrap_err();
    assert!(e.to_string().contains("not implemented"), "{e}");
}

/// `-e`: the waits go through completion events (the CQ armed, the event waited for); the
/// same runs complete with the same counts.
#[test]
fn events_loopback() {
    let _w = vhca_guest::watchdog::Watchdog::arm("events_loopback", Duration::from_secs(300));
    for (test, host) in [
        (Test::SendBw, 140),
        (Test::ReadBw, 142),
        (Test::AtomicBw, 144),
    ] {
        let size = if test == Test::AtomicBw {
            None
        } else {
            Some(4096)
        };
        let mut o = opts(test, size, 300);
        o.events = true;
        let (c, s) = run_with(o, host);
        let (c, s) = (bw(c), bw(s));
        assert_eq!(c.bytes_transferred, 300 * c.bytes, "{test:?}");
        if test == Test::SendBw {
            assert_eq!(s.bytes_transferred, 300 * c.bytes);
        }
    }
    for (test, host) in [
        (Test::SendLat, 150),
        (Test::ReadLat, 152),
        (Test::AtomicLat, 154),
    ] {
        let mut o = opts(test, None, 200);
        o.events = true;
        let (c, _) = run_with(o, host);
        check_lat_row(&lat(c), test.default_size() as u64, 200);
    }
}
