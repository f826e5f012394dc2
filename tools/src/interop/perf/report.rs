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
    /// In `unit` (the field names are MB/s's; `--report_gbits` makes them Gb/s).
    pub bw_peak_mb_per_sec: f64,
    pub bw_average_mb_per_sec: f64,
    pub msg_rate_mpps: f64,
    /// "MB/sec" (2^20 bytes) or, with `--report_gbits`, "Gb/sec" (10^9 bits).
    pub unit: &'static str,
    /// Bytes this side moved or received, counted from its completions (0 where it cannot see
    /// them: a write/read/atomic server).
    pub bytes_transferred: u64,
    pub seconds: f64,
    /// "local": measured here; "peer": the client's report, printed by the server as perftest
    /// does; "local+peer": `-b`, the sum of both sides' reports, as perftest prints it.
    pub source: &'static str,
    pub mtu: u32,
    pub peer_version: String,
    /// What this side checked of the data, where the protocol lets it (atomics: the values
    /// fetched, the server's final counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
    /// perftest's header block (title and settings), printed above the table.
    #[serde(skip)]
    pub header: String,
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
    /// "local": measured here; "none": a read_lat/atomic_lat server, which issues nothing and
    /// (like perftest's) reports no figures.
    pub source: &'static str,
    /// With `-D`: transactions per second over the sample (then only `t_avg_usec` is set
    /// besides, perftest's `print_report_lat_duration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tps: Option<f64>,
    pub mtu: u32,
    pub peer_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
    #[serde(skip)]
    pub header: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Bw(BwReport),
    Lat(LatReport),
    /// `-a`: one report per size, in order (a JSON array).
    Sizes(Vec<Report>),
}

pub(super) const RESULT_LINE: &str =
    "---------------------------------------------------------------------------------------";
const RESULT_FMT: &str =
    " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]";
const RESULT_FMT_G: &str =
    " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]";
const RESULT_FMT_LAT_DUR: &str = " #bytes        #iterations       t_avg[usec]    tps average";
const RESULT_FMT_LAT: &str = " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ";

impl Report {
    /// perftest's output: the header block, the column line, a row per size and the closing
    /// line (a read_lat/atomic_lat server, like perftest's, prints no table).
    pub fn table(&self) -> String {
        let rows = self.rows();
        let Some(first) = rows.first() else {
            return format!("{RESULT_LINE}\n");
        };
        let (header, columns) = match first {
            Report::Bw(r) if r.unit == UNIT_GBITS => (&r.header, RESULT_FMT_G),
            Report::Bw(r) => (&r.header, RESULT_FMT),
            Report::Lat(r) if r.source == "none" => return format!("{}{RESULT_LINE}\n", r.header),
            Report::Lat(r) if r.tps.is_some() => (&r.header, RESULT_FMT_LAT_DUR),
            Report::Lat(r) => (&r.header, RESULT_FMT_LAT),
            Report::Sizes(_) => return String::new(),
        };
        let mut s = format!("{header}{columns}\n");
        for r in &rows {
            s.push_str(&r.row());
        }
        s.push_str(RESULT_LINE);
        s.push('\n');
        s
    }

    fn rows(&self) -> Vec<&Report> {
        match self {
            Report::Sizes(v) => v.iter().flat_map(|r| r.rows()).collect(),
            r => vec![r],
        }
    }

    /// `REPORT_FMT` / `REPORT_FMT_EXT` (Gb/s below 0.1) / `REPORT_FMT_LAT`.
    fn row(&self) -> String {
        match self {
            Report::Bw(r) if r.unit == UNIT_GBITS && r.bw_average_mb_per_sec < 0.1 => format!(
                " {:<7}    {}           {:<7.6}            {:<7.6}            {:<7.6}\n",
                r.bytes,
                r.iterations,
                r.bw_peak_mb_per_sec,
                r.bw_average_mb_per_sec,
                r.msg_rate_mpps
            ),
            Report::Bw(r) => format!(
                " {:<7}    {:<10}       {:<7.2}            {:<7.2}\t\t   {:<7.6}\n",
                r.bytes,
                r.iterations,
                r.bw_peak_mb_per_sec,
                r.bw_average_mb_per_sec,
                r.msg_rate_mpps
            ),
            Report::Lat(r) if r.tps.is_some() => format!(
                " {:<7}       {}            {:<7.2}        {:<7.2}\n",
                r.bytes,
                r.iterations,
                r.t_avg_usec,
                r.tps.unwrap_or(0.0)
            ),
            Report::Lat(r) => format!(
                " {:<7} {}          {:<7.2}        {:<7.2}      {:<7.2}  \t       {:<7.2}     \t{:<7.2}\t\t{:<7.2} \t\t{:<7.2}\n",
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
            Report::Sizes(_) => String::new(),
        }
    }
}

pub(super) const UNIT_MBYTES: &str = "MB/sec";
pub(super) const UNIT_GBITS: &str = "Gb/sec";

/// `ctx_print_test_info` for what vhca runs: the title and the settings, between result lines.
pub(super) fn header(o: &Options, client: bool, mtu: Mtu) -> String {
    let t = o.test;
    let title = if o.duplex {
        t.title_duplex(o.atomic_op())
    } else {
        t.title(o.atomic_op())
    };
    let mut s = format!("{RESULT_LINE}\n                    {title}\n");
    s.push_str(" Dual-port       : OFF\t\tDevice         : vhca\n");
    s.push_str(&format!(
        " Number of qps   : {}\t\tTransport type : IB\n",
        o.qps
    ));
    s.push_str(" Connection type : RC\t\tUsing SRQ      : OFF\n");
    if client || o.duplex {
        s.push_str(&format!(" TX depth        : {}\n", o.tx_depth));
    }
    if t.is_send() && !client {
        s.push_str(&format!(" RX depth        : {}\n", o.rx_depth));
    }
    if t.is_bw() {
        s.push_str(&format!(" CQ Moderation   : {}\n", o.cq_mod.unwrap_or(1)));
    }
    s.push_str(&format!(" Mtu             : {}[B]\n", mtu.bytes()));
    s.push_str(" Link type       : Ethernet\n");
    if t.is_read_or_atomic() {
        s.push_str(&format!(" Outstand reads  : {}\n", o.out_reads));
    } else {
        s.push_str(&format!(" Max inline data : {}[B]\n", o.inline_size));
    }
    s.push_str(if o.rdma_cm {
        " rdma_cm QPs\t : ON\n"
    } else {
        " rdma_cm QPs\t : OFF\n"
    });
    s.push_str(" Data ex. method : Ethernet\n");
    s.push_str(RESULT_LINE);
    s.push('\n');
    s
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
