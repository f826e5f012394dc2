//! What a run reports: perftest's result tables, and the lines printed on stderr.

use super::*;

/// The bandwidth report exchanged after a write/read test (`struct bw_report_data`, the
/// fields that cross the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WireReport {
    pub size: u64,
    pub iters: u64,
    pub bw_peak: f64,
    pub bw_avg: f64,
    pub msg_rate: f64,
}

/// One side's result, perftest's table row plus what vhca checked.
#[derive(Clone, Debug, Serialize)]
pub struct BwReport {
    pub test: Test,
    pub role: &'static str,
    /// Message size (`#bytes`).
    pub bytes: u64,
    pub iterations: u64,
    pub bw_peak_mb_per_sec: f64,
    pub bw_average_mb_per_sec: f64,
    pub msg_rate_mpps: f64,
    /// Bytes this side moved or received, counted from its completions (0 where it cannot see
    /// them: a write/read server).
    pub bytes_transferred: u64,
    pub seconds: f64,
    /// "local": measured here; "peer": the client's report, printed by the server as perftest
    /// does.
    pub source: &'static str,
    pub mtu: u32,
    pub peer_version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatReport {
    pub test: Test,
    pub role: &'static str,
    pub bytes: u64,
    pub iterations: u64,
    pub t_min_usec: f64,
    pub t_max_usec: f64,
    pub t_typical_usec: f64,
    pub t_avg_usec: f64,
    pub t_stdev_usec: f64,
    pub p99_usec: f64,
    pub p99_9_usec: f64,
    pub bytes_transferred: u64,
    pub mtu: u32,
    pub peer_version: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Bw(BwReport),
    Lat(LatReport),
}

pub(super) const RESULT_LINE: &str =
    "---------------------------------------------------------------------------------------";

impl Report {
    /// perftest's result table.
    pub fn table(&self) -> String {
        match self {
            Report::Bw(r) => format!(
                "{RESULT_LINE}\n                    {}\n{RESULT_LINE}\n #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n {:<7}    {:<10}       {:<7.2}            {:<7.2}\t\t   {:<7.6}\n{RESULT_LINE}\n",
                r.test.title(),
                r.bytes,
                r.iterations,
                r.bw_peak_mb_per_sec,
                r.bw_average_mb_per_sec,
                r.msg_rate_mpps
            ),
            Report::Lat(r) => format!(
                "{RESULT_LINE}\n                    {}\n{RESULT_LINE}\n #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] \n {:<7} {}          {:<7.2}        {:<7.2}      {:<7.2}  \t       {:<7.2}     \t{:<7.2}\t\t{:<7.2} \t\t{:<7.2}\n{RESULT_LINE}\n",
                r.test.title(),
                r.bytes,
                r.iterations,
                r.t_min_usec,
                r.t_max_usec,
                r.t_typical_usec,
                r.t_avg_usec,
                r.t_stdev_usec,
                r.p99_usec,
                r.p99_9_usec
            ),
        }
    }
}

/// Where a run's progress is reported (stderr lines for scripts and humans).
pub(super) fn note(msg: impl AsRef<str>) {
    eprintln!("vhca perf: {}", msg.as_ref());
}

pub(super) fn print_dest(side: &str, k: &KeyMsg) {
    let g = &k.gid.0;
    note(format!(
        "{side} address: LID {:#06x} QPN {:#08x} PSN {:#08x} RKey {:#010x} VAddr {:#018x} GID {}",
        k.lid,
        k.qpn,
        k.psn,
        k.rkey,
        k.vaddr,
        g.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    ));
}
