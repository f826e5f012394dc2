//! Which perftest binary a run stands in for, its options, and perftest's rules for them
//! (`force_dependecies` and the parser's refusals, with perftest's own words).

use super::*;

/// The perftest binary a run is compatible with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// ib_send_bw
    #[value(name = "send_bw", alias = "ib_send_bw")]
    SendBw,
    /// ib_write_bw
    #[value(name = "write_bw", alias = "ib_write_bw")]
    WriteBw,
    /// ib_read_bw
    #[value(name = "read_bw", alias = "ib_read_bw")]
    ReadBw,
    /// ib_atomic_bw
    #[value(name = "atomic_bw", alias = "ib_atomic_bw")]
    AtomicBw,
    /// ib_send_lat
    #[value(name = "send_lat", alias = "ib_send_lat")]
    SendLat,
    /// ib_write_lat
    #[value(name = "write_lat", alias = "ib_write_lat")]
    WriteLat,
    /// ib_read_lat
    #[value(name = "read_lat", alias = "ib_read_lat")]
    ReadLat,
    /// ib_atomic_lat
    #[value(name = "atomic_lat", alias = "ib_atomic_lat")]
    AtomicLat,
}

/// perftest's `VerbType`: what a test's requests are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Send,
    Write,
    Read,
    Atomic,
}

impl Verb {
    /// `testsStr`.
    fn name(self) -> &'static str {
        match self {
            Verb::Send => "Send",
            Verb::Write => "RDMA_Write",
            Verb::Read => "RDMA_Read",
            Verb::Atomic => "Atomic",
        }
    }
}

/// `-A`: the atomic operation of ib_atomic_bw/ib_atomic_lat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum AtomicOp {
    /// Compare 0, swap 0 (perftest's `ATOMIC_SWAP_VALUE`): the target stays 0.
    #[value(name = "CMP_AND_SWAP")]
    #[serde(rename = "CMP_AND_SWAP")]
    CmpAndSwap,
    /// Add 1 (perftest's `ATOMIC_ADD_VALUE`), perftest's default.
    #[default]
    #[value(name = "FETCH_AND_ADD")]
    #[serde(rename = "FETCH_AND_ADD")]
    FetchAndAdd,
}

impl AtomicOp {
    pub fn name(self) -> &'static str {
        match self {
            AtomicOp::CmpAndSwap => "CMP_AND_SWAP",
            AtomicOp::FetchAndAdd => "FETCH_AND_ADD",
        }
    }
}

impl Test {
    pub fn binary(self) -> &'static str {
        match self {
            Test::SendBw => "ib_send_bw",
            Test::WriteBw => "ib_write_bw",
            Test::ReadBw => "ib_read_bw",
            Test::AtomicBw => "ib_atomic_bw",
            Test::SendLat => "ib_send_lat",
            Test::WriteLat => "ib_write_lat",
            Test::ReadLat => "ib_read_lat",
            Test::AtomicLat => "ib_atomic_lat",
        }
    }

    pub fn verb(self) -> Verb {
        match self {
            Test::SendBw | Test::SendLat => Verb::Send,
            Test::WriteBw | Test::WriteLat => Verb::Write,
            Test::ReadBw | Test::ReadLat => Verb::Read,
            Test::AtomicBw | Test::AtomicLat => Verb::Atomic,
        }
    }

    /// `ctx_print_test_info`'s title: "RDMA_Write BW Test", "Atomic FETCH_AND_ADD Latency
    /// Test".
    pub(super) fn title(self, atomic: AtomicOp) -> String {
        let mut t = format!("{} ", self.verb().name());
        if self.verb() == Verb::Atomic {
            t.push_str(atomic.name());
            t.push(' ');
        }
        t.push_str(if self.is_bw() {
            "BW Test"
        } else {
            "Latency Test"
        });
        t
    }

    /// The title with `-b`'s word: "RDMA_Write Bidirectional BW Test".
    pub(super) fn title_duplex(self, atomic: AtomicOp) -> String {
        self.title(atomic)
            .replace(" BW Test", " Bidirectional BW Test")
    }

    pub fn is_bw(self) -> bool {
        matches!(
            self,
            Test::SendBw | Test::WriteBw | Test::ReadBw | Test::AtomicBw
        )
    }

    pub(super) fn is_send(self) -> bool {
        self.verb() == Verb::Send
    }

    /// Reads and atomics: the side that issues them has `out_reads` outstanding, and a
    /// latency sample is a whole round trip (perftest's `rtt_factor` 1).
    pub(super) fn is_read_or_atomic(self) -> bool {
        matches!(self.verb(), Verb::Read | Verb::Atomic)
    }

    /// perftest's default message size (`DEF_SIZE_BW`, `DEF_SIZE_LAT`, `DEF_SIZE_ATOMIC`).
    pub fn default_size(self) -> u32 {
        if self.verb() == Verb::Atomic {
            ATOMIC_SIZE
        } else if self.is_bw() {
            65536
        } else {
            2
        }
    }

    /// perftest's default iteration count (`DEF_ITERS_WB` for write_bw, else `DEF_ITERS`).
    pub fn default_iters(self) -> u32 {
        if self == Test::WriteBw {
            5000
        } else {
            1000
        }
    }

    /// Remote access the QP grants (`ctx_modify_qp_to_init`).
    pub(super) fn qp_access(self) -> Access {
        match self.verb() {
            Verb::Send => Access::REMOTE_WRITE | Access::LOCAL_WRITE,
            Verb::Write => Access::REMOTE_WRITE,
            Verb::Read => Access::REMOTE_READ,
            Verb::Atomic => Access::REMOTE_ATOMIC,
        }
    }

    /// Access of the buffer's memory region (`create_single_mr`).
    pub(super) fn mr_access(self) -> Access {
        match self.verb() {
            Verb::Send => Access::LOCAL_WRITE,
            Verb::Write => Access::LOCAL_WRITE | Access::REMOTE_WRITE,
            Verb::Read => Access::LOCAL_WRITE | Access::REMOTE_READ,
            Verb::Atomic => Access::LOCAL_WRITE | Access::REMOTE_ATOMIC,
        }
    }
}

/// Options; both sides must use the same size and iteration count (perftest does not exchange
/// them).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub test: Test,
    pub port: u16,
    pub size: u32,
    pub iters: u32,
    /// This port's MTU (the peer's may lower it).
    pub mtu: Mtu,
    /// Outstanding work requests of a bandwidth client (`-t`).
    pub tx_depth: u32,
    /// Receives a SEND receiver keeps posted (`-r`).
    pub rx_depth: u32,
    /// Completion moderation (`-Q`); `None` = perftest's default.
    pub cq_mod: Option<u32>,
    /// Outstanding RDMA READs and atomics this side accepts/issues (`-o`).
    pub out_reads: u8,
    /// Give up after this long without progress (no completion, no packet, no side-channel
    /// byte).
    pub timeout: Duration,
    /// The RC local ACK timeout exponent (4.096 µs × 2^t; perftest's `-u`, default 14).
    pub qp_timeout: u8,
    /// `-A`: the atomic tests' operation (`None`: perftest's default, FETCH_AND_ADD).
    pub atomic: Option<AtomicOp>,
    /// `-a`: every size from 2 B to 8 MiB, one report line each.
    pub all_sizes: bool,
    /// `-I`: SENDs and WRITEs of at most this many bytes go inline (0: none).
    pub inline_size: u32,
    /// `--report_gbits`: bandwidth in Gb/s (10^9 bit) instead of MB/s (2^20 bytes).
    pub report_gbits: bool,
    /// `-e`: wait for completions through completion events (the CQ armed, then the event
    /// waited for) instead of polling only.
    pub events: bool,
    /// `-q`: QPs of a bandwidth test, each running `iters` (perftest spreads the work round
    /// robin, up to `tx_depth` outstanding per QP).
    pub qps: u32,
    /// `-b`: bidirectional: both sides run the client's loop at once (send_bw: sending and
    /// receiving) and print the sum of both reports.
    pub duplex: bool,
    /// `-D`: run for this many seconds instead of `iters`: a quarter (whole seconds) warms up,
    /// the middle is measured, a quarter cools down (perftest's margins).
    pub duration: Option<u32>,
    /// `-R`: connect the QPs through the CM on QP1 (rdma_cm's way) instead of by the side
    /// channel's addresses.
    pub rdma_cm: bool,
}

impl Options {
    pub fn new(test: Test) -> Options {
        Options {
            test,
            port: DEFAULT_PORT,
            size: test.default_size(),
            iters: test.default_iters(),
            mtu: Mtu::Mtu1024,
            tx_depth: if test.is_bw() { 128 } else { 1 },
            rx_depth: 512,
            cq_mod: None,
            out_reads: 128,
            timeout: Duration::from_secs(120),
            qp_timeout: 14,
            atomic: None,
            all_sizes: false,
            inline_size: 0,
            report_gbits: false,
            events: false,
            qps: 1,
            duplex: false,
            duration: None,
            rdma_cm: false,
        }
    }

    /// The message sizes of the run: `-a` runs 2, 4, … 8 MiB (perftest's `RUN_ALL`).
    pub fn sizes(&self) -> Vec<u32> {
        if self.all_sizes {
            (1..24).map(|i| 1u32 << i).collect()
        } else {
            vec![self.size]
        }
    }

    /// perftest's parser refusals and `force_dependecies` for what this implementation uses;
    /// what vhca does not implement is refused too, saying so.
    pub(super) fn effective(&self) -> Result<Options, PerfError> {
        let mut o = *self;
        let t = o.test;
        let bad = |s: &str| Err(PerfError::Options(s.into()));
        // The parser's refusals, in perftest's words.
        if o.qps != 1 && !t.is_bw() {
            return bad("Multiple QPs only available on bw tests");
        }
        if o.inline_size > 0 && t.is_read_or_atomic() {
            return bad("Inline feature not available on READ/Atomic verbs");
        }
        if o.atomic.is_some() && t.verb() != Verb::Atomic {
            return bad("You are not running the atomic_lat/bw test! To change the atomic action type, you must run one of the atomic tests");
        }
        if o.events && t.verb() == Verb::Write {
            return bad("Events feature not available on WRITE verb");
        }
        if o.duplex && !t.is_bw() {
            return bad("Bidirectional is only available in BW test");
        }
        if o.duration.is_some() && o.all_sizes {
            return bad("Duration mode currently doesn't support running on all sizes.");
        }
        if o.duration.is_some() && o.events {
            return bad("Duration mode doesn't work with events.");
        }
        if t.verb() == Verb::Atomic && (o.size != ATOMIC_SIZE || o.all_sizes) {
            return bad("Message size cannot be changed for Atomic tests");
        }
        // What vhca does not implement (yet).
        if o.qps == 0 || o.qps > MAX_QPS {
            return Err(PerfError::Options(format!(
                "num of Qps {} out of range: vhca perf runs 1 to {MAX_QPS}",
                o.qps
            )));
        }
        if o.duplex && o.duration.is_some() && t.is_send() {
            return bad("bidirectional send_bw with -D is not implemented in vhca perf");
        }
        if o.duration == Some(0) {
            return bad("Duration period must be positive");
        }
        if o.inline_size > MAX_INLINE {
            return Err(PerfError::Options(format!(
                "inline size {} above a vhca VF's max_inline_data {MAX_INLINE}",
                o.inline_size
            )));
        }
        if o.iters < 5 {
            return bad("at least 5 iterations");
        }
        if o.size == 0 || o.size > MAX_SIZE {
            return bad("size must be 1 B .. 8 MiB");
        }
        if o.all_sizes {
            // Buffers for the largest; each size runs with its own copy of the options.
            o.size = MAX_SIZE;
        }
        if !t.is_bw() {
            o.tx_depth = 1;
        }
        o.tx_depth = o.tx_depth.clamp(1, o.iters);
        o.rx_depth = o.rx_depth.clamp(1, o.iters);
        // perftest's "WA for a bug when rx_depth is odd", not under -a (where a receive left
        // over from one size would take the next size's first, longer, message).
        if t.is_send() && o.rx_depth % 2 == 1 && !o.all_sizes {
            o.rx_depth += 1;
        }
        let mut cq_mod = o.cq_mod.unwrap_or(100).max(1);
        // Not under -a: perftest cannot change it with the size there.
        if o.size > CQ_MOD_SIZE_LIMIT && o.cq_mod.is_none() && !o.all_sizes {
            cq_mod = 1;
        }
        if !t.is_bw() {
            cq_mod = 1;
        }
        o.cq_mod = Some(cq_mod.min(o.tx_depth));
        if !t.is_read_or_atomic() {
            o.out_reads = 1;
        }
        o.out_reads = o.out_reads.max(1);
        Ok(o)
    }

    /// This run's options at one size of `-a`.
    pub(super) fn at_size(&self, size: u32) -> Options {
        Options { size, ..*self }
    }

    pub(super) fn atomic_op(&self) -> AtomicOp {
        self.atomic.unwrap_or_default()
    }

    /// Whether a request of this run's size goes inline.
    pub(super) fn inline(&self) -> bool {
        self.size <= self.inline_size && !self.test.is_read_or_atomic()
    }
}
