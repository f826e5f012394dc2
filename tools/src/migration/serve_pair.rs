//! `vhca migrate`: a live migration over vhost-user as QEMU drives it, end to end and on this
//! machine. Starts a source `vhca serve` (two VFs attached through guest drivers, `--qps N`
//! connected RC QPs between them) and a destination `vhca serve`; runs traffic on every QP;
//! migrates both VFs with pre-copy rounds driven by the dirty log while the traffic runs
//! (`vhca_guest::migrate`); checks that the same QPs carry on, byte for byte; reports each
//! VF's timeline, as text or JSON (docs/benchmarks.md, "Migration").
//!
//! Both VFs move: `vhca serve`'s in-process switch only connects VFs of one process, so the
//! two ends of a connection travel together, stopped and started at the same time (two
//! threads, as QEMU stops every device of a VM at once). The traffic stall is therefore that
//! of the connection as a whole: one message per QP (up to a batch) is posted just before the
//! stop, and the report says how long no completion was seen and when the last of those
//! messages completed after the resume.

use serde::Serialize;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::{Mtu, VerbsError};
use vhca_guest::many::{post_batch, qp_set_traffic, ram_needed, rc_qp_sets, BATCH};
use vhca_guest::migrate::{MigrateError, Migration, Round, Timeline};
use vhca_guest::programs::rc_every_opcode;
use vhca_guest::serve::{ServeError, ServeProcess};
use vhca_guest::{DriverConfig, DriverError, GuestContext};

pub struct Options {
    pub rounds: u32,
    pub msg_size: u32,
    pub qps: u32,
    pub json: bool,
    /// Compare all guest RAM after the last copy (outside the blackout figure).
    pub verify_pages: bool,
    /// Move the VFs one after the other instead of together.
    pub sequential: bool,
    /// Print both `vhca serve` processes' logs (their save/load timings) to stderr.
    pub serve_logs: bool,
}

/// One pre-copy round in the report.
#[derive(Debug, Serialize)]
pub struct RoundReport {
    pub device_pages: u64,
    pub guest_pages: u64,
    pub copied_pages: u64,
    pub us: u64,
}

impl From<&Round> for RoundReport {
    fn from(r: &Round) -> Self {
        RoundReport {
            device_pages: r.device_pages,
            guest_pages: r.guest_pages,
            copied_pages: r.copied_pages,
            us: r.took.as_micros() as u64,
        }
    }
}

/// One VF's migration.
#[derive(Debug, Serialize)]
pub struct VfReport {
    pub vf: u16,
    pub ram_pages: u64,
    pub rounds: Vec<RoundReport>,
    pub stop_and_copy: RoundReport,
    pub state_bytes: usize,
    /// `state_bytes / qps`: the VF's fixed part (PD, CQ, MR, rings of the virtqueues) is
    /// spread over the QPs.
    pub state_bytes_per_qp: f64,
    /// First GET_VRING_BASE → the destination's rings kicked.
    pub blackout_us: u64,
    /// The blackout's steps: stop, save, load, start (`vhca_guest::migrate::Steps`); they add
    /// up to the blackout.
    pub blackout_steps_us: [u64; 4],
    /// The last page copy, which runs during the load.
    pub copy_us: u64,
    /// With `--verify-pages`: pages that differed after the last copy (must be 0).
    pub missed_pages: Option<u64>,
    pub total_ms: u64,
}

impl VfReport {
    fn new(vf: u16, qps: u32, t: &Timeline) -> VfReport {
        VfReport {
            vf,
            ram_pages: t.ram_bytes / 4096,
            rounds: t.rounds.iter().map(Into::into).collect(),
            stop_and_copy: (&t.last).into(),
            state_bytes: t.state_bytes,
            state_bytes_per_qp: t.state_bytes as f64 / f64::from(qps),
            blackout_us: t.blackout.as_micros() as u64,
            blackout_steps_us: [t.steps.stop, t.steps.save, t.steps.load, t.steps.start]
                .map(|d| d.as_micros() as u64),
            copy_us: t.steps.copy.as_micros() as u64,
            missed_pages: t.missed_pages,
            total_ms: t.total.as_millis() as u64,
        }
    }
}

/// What `vhca migrate` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub qps: u32,
    /// The VFs were moved one after the other (`--sequential`), not together.
    pub sequential: bool,
    pub msg_size: u32,
    pub setup_ms: u64,
    pub vfs: Vec<VfReport>,
    /// Both VFs: the first stop → both destinations' rings kicked.
    pub pair_blackout_us: u64,
    /// The traffic's stall: the last completion seen before the stop → the first one seen
    /// after the resume.
    pub stall_us: u64,
    /// The destinations' rings kicked → the last message posted before the stop completed
    /// (retransmissions after the resume).
    pub recovery_us: u64,
    /// Messages in flight across the stop.
    pub in_flight: usize,
    /// Payload bytes moved and checked byte for byte, before, during and after.
    pub bytes_checked: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} RC QP pair(s), {}-byte messages; set-up {} ms",
            self.qps, self.msg_size, self.setup_ms
        )?;
        for v in &self.vfs {
            writeln!(f, "vf{} (source -> destination):", v.vf)?;
            writeln!(f, "  guest RAM: {} pages", v.ram_pages)?;
            for (i, r) in v.rounds.iter().enumerate() {
                writeln!(
                    f,
                    "  round {i}: {} pages in the device dirty log, {} written by the guest, {} copied, {} us",
                    r.device_pages, r.guest_pages, r.copied_pages, r.us
                )?;
            }
            writeln!(
                f,
                "  stop-and-copy: {} pages in the device dirty log, {} written by the guest, {} copied, {} us",
                v.stop_and_copy.device_pages,
                v.stop_and_copy.guest_pages,
                v.stop_and_copy.copied_pages,
                v.stop_and_copy.us
            )?;
            if let Some(m) = v.missed_pages {
                writeln!(f, "  pages missed by both dirty logs: {m}")?;
            }
            writeln!(
                f,
                "  device state: {} bytes ({:.1} per QP)",
                v.state_bytes, v.state_bytes_per_qp
            )?;
            let [stop, save, load, start] = v.blackout_steps_us;
            writeln!(
                f,
                "  blackout (stop -> resume): {} us (stop {stop}, save {save}, load {load} with the last copy {}, start {start})",
                v.blackout_us, v.copy_us
            )?;
            writeln!(f, "  total: {} ms", v.total_ms)?;
        }
        writeln!(
            f,
            "pair blackout (first stop -> both resumed, {}): {} us",
            if self.sequential {
                "one after the other"
            } else {
                "together"
            },
            self.pair_blackout_us
        )?;
        writeln!(
            f,
            "traffic stall (last completion before -> first after): {} us; {} messages in flight, all completed {} us after the resume",
            self.stall_us, self.in_flight, self.recovery_us
        )?;
        writeln!(
            f,
            "after: the same QPs carried traffic on every QP and every RC opcode on QP 0; {} bytes checked",
            self.bytes_checked
        )
    }
}

/// What went wrong, and in which step.
#[derive(Debug, Error)]
pub enum ServePairError {
    #[error("--qps must be at least 1")]
    NoQps,
    #[error("{what}: {source}")]
    Serve {
        what: &'static str,
        #[source]
        source: ServeError,
    },
    #[error("{what}: {source}")]
    Guest {
        what: &'static str,
        #[source]
        source: DriverError,
    },
    #[error("{what}: {source}")]
    Verbs {
        what: &'static str,
        #[source]
        source: VerbsError,
    },
    #[error("{what}: {source}")]
    Migration {
        what: &'static str,
        #[source]
        source: MigrateError,
    },
    #[error("the migration thread of vf0 panicked")]
    Panicked,
    #[error("vf{vf}: {pages} pages escaped both dirty logs")]
    MissedPages { vf: usize, pages: u64 },
    #[error("encoding the report: {0}")]
    Json(#[source] serde_json::Error),
}

/// `result.ctx("step")`: the error of a step, with what the step was.
trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, ServePairError>;
}

macro_rules! ctx_for {
    ($err:ty, $variant:ident) => {
        impl<T> Ctx<T> for Result<T, $err> {
            fn ctx(self, what: &'static str) -> Result<T, ServePairError> {
                self.map_err(|source| ServePairError::$variant { what, source })
            }
        }
    };
}
ctx_for!(ServeError, Serve);
ctx_for!(DriverError, Guest);
ctx_for!(VerbsError, Verbs);
ctx_for!(MigrateError, Migration);

/// Runs the whole scenario; returns the report.
pub fn measure(o: &Options) -> Result<Report, ServePairError> {
    if o.qps == 0 {
        return Err(ServePairError::NoQps);
    }
    if std::env::var_os("VHCA_BIN").is_none() {
        if let Ok(me) = std::env::current_exe() {
            std::env::set_var("VHCA_BIN", me);
        }
    }
    let ready = Duration::from_secs(60);
    let n = o.qps as usize;
    let size = o.msg_size.clamp(1, 1 << 15);
    let mut cfg = DriverConfig::small();
    // The driver's own rings and buffers fit in 8 MiB; the QPs' rings and slots come on top.
    cfg.mem_size = cfg
        .mem_size
        .max(((8 << 20) + ram_needed(n, size)).next_multiple_of(1 << 20));
    cfg.command_timeout = Duration::from_secs(30);
    let src = ServeProcess::start(2, ready).ctx("source vhca serve")?;
    let dst = ServeProcess::start(2, ready).ctx("destination vhca serve")?;
    let mut a = GuestContext::connect(src.socket(0), &cfg).ctx("guest on vf0")?;
    let mut b = GuestContext::connect(src.socket(1), &cfg).ctx("guest on vf1")?;
    let t = Instant::now();
    let (sa, sb) =
        rc_qp_sets(&mut a, &mut b, n, size, Mtu::Mtu1024).ctx("creating and connecting the QPs")?;
    let setup_ms = t.elapsed().as_millis() as u64;
    let mut bytes = qp_set_traffic(&mut a, &sa, &mut b, &sb, size, 0).ctx("traffic before")?;
    let mut ma = Migration::begin(a.driver_mut(), dst.socket(0)).ctx("begin vf0")?;
    let mut mb = Migration::begin(b.driver_mut(), dst.socket(1)).ctx("begin vf1")?;
    ma.verify_pages = o.verify_pages;
    mb.verify_pages = o.verify_pages;
    for r in 0..o.rounds {
        bytes +=
            qp_set_traffic(&mut a, &sa, &mut b, &sb, size, 1 + r).ctx("traffic during pre-copy")?;
        ma.round(a.driver()).ctx("round vf0")?;
        mb.round(b.driver()).ctx("round vf1")?;
    }
    // The last completions before the stop, then messages left in flight across it.
    let tag = 1 + o.rounds;
    bytes += qp_set_traffic(&mut a, &sa, &mut b, &sb, size, tag).ctx("traffic before the stop")?;
    let last_before = Instant::now();
    let in_flight = n.min(BATCH);
    let posted = post_batch(&mut a, &sa, &mut b, &sb, 0..in_flight, tag + 1, 0x3c, size)
        .ctx("posting across the stop")?;
    let stop = Instant::now();
    let (ta, tb) = if o.sequential {
        let ta = Ok(ma.finish(a.driver_mut()));
        (ta, mb.finish(b.driver_mut()))
    } else {
        std::thread::scope(|s| {
            let fa = s.spawn(|| ma.finish(a.driver_mut()));
            let tb = mb.finish(b.driver_mut());
            (fa.join(), tb)
        })
    };
    let resumed = Instant::now();
    let ta = ta
        .map_err(|_| ServePairError::Panicked)?
        .ctx("finish vf0")?;
    let tb = tb.ctx("finish vf1")?;
    let first_after = posted
        .complete(&mut a, &sa, &mut b, &sb)
        .ctx("messages in flight across the stop")?;
    let drained = Instant::now();
    bytes += in_flight as u64 * u64::from(size);
    // The same QPs, now in the destination process, carry on; every opcode on QP 0.
    bytes += qp_set_traffic(&mut a, &sa, &mut b, &sb, size, tag + 2).ctx("traffic after")?;
    let (ea, eb) = (sa.endpoint(0), sb.endpoint(0));
    for s in [0, 1, size] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, s).ctx("every opcode after")?;
    }
    if o.serve_logs {
        let (mut src, mut dst) = (src, dst);
        eprintln!("source:\n{}\ndestination:\n{}", src.log(), dst.log());
    }
    for (vf, t) in [(0, &ta), (1, &tb)] {
        if let Some(m) = t.missed_pages.filter(|&m| m > 0) {
            return Err(ServePairError::MissedPages { vf, pages: m });
        }
    }
    Ok(Report {
        qps: o.qps,
        sequential: o.sequential,
        msg_size: size,
        setup_ms,
        vfs: vec![VfReport::new(0, o.qps, &ta), VfReport::new(1, o.qps, &tb)],
        pair_blackout_us: (resumed - stop).as_micros() as u64,
        stall_us: first_after
            .saturating_duration_since(last_before)
            .as_micros() as u64,
        recovery_us: drained.saturating_duration_since(resumed).as_micros() as u64,
        in_flight,
        bytes_checked: bytes,
    })
}

/// [`measure`], rendered as text or JSON.
pub fn run(o: &Options) -> Result<String, ServePairError> {
    let r = measure(o)?;
    if o.json {
        serde_json::to_string_pretty(&r)
            .map(|s| s + "\n")
            .map_err(ServePairError::Json)
    } else {
        Ok(r.to_string())
    }
}
