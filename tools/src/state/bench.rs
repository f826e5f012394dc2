//! `vhca state bench`: every codec of this build on VFs of N idle RC QPs — bytes in all, per
//! QP and per kind of object, encode and decode times, what the blob costs a migration on a
//! 10, 25 and 100 Gb/s link — and a delta after 1% of the QPs moved on, to show what pre-copy
//! leaves for the blackout.
//!
//! The codecs are `checkpoint::codec::all()`: a new codec is measured with no change here.
//! Times are the median of `reps` runs on this machine; they belong in docs/benchmarks.md,
//! never in a test's assertion.

use super::idle_vf::{self, Objects};
use super::sizes::{self, KindBytes};
use super::StateError;
use serde::Serialize;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;
use vhca_device::checkpoint::{self, container, Base, Codec, SectionKind, VfStateV2};
use vhca_device::Nanos;

/// The link speeds a blob's migration cost is given for (Gb/s).
pub const LINKS_GBPS: [u32; 3] = [10, 25, 100];

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// One run per QP count.
    pub qps: Vec<u32>,
    /// Repetitions of each timing; the median is reported.
    pub reps: u32,
}

/// The whole benchmark, as `--json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    pub reps: u32,
    pub links_gbps: Vec<u32>,
    pub runs: Vec<Run>,
}

/// One QP count.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub qps: u32,
    pub objects: Objects,
    /// A full checkpoint, one row per codec.
    pub full: Vec<FullRow>,
    /// A delta against that full checkpoint after 1% of the QPs moved on.
    pub delta: DeltaRun,
}

/// A full checkpoint in one codec.
#[derive(Clone, Debug, Serialize)]
pub struct FullRow {
    pub codec: &'static str,
    pub about: &'static str,
    /// The whole blob.
    pub bytes: u64,
    /// The QP sections' bytes over the QPs: what one more idle QP adds.
    pub bytes_per_qp: f64,
    /// By section kind, from the blob's section table.
    pub kinds: Vec<KindBytes>,
    /// `container::encode_full` of the state (µs, median).
    pub encode_us: f64,
    /// `container::decode` of the blob (µs, median): the codec's work; a restore's checks come
    /// after it and do not depend on the codec.
    pub decode_us: f64,
    pub migration: Vec<LinkCost>,
}

/// The delta row of a run.
#[derive(Clone, Debug, Serialize)]
pub struct DeltaRun {
    /// QPs that changed since the base.
    pub changed_qps: usize,
    /// `checkpoint::Base::new`: the base's digest, computed once per pre-copy by each side
    /// (µs, median), not per delta.
    pub base_digest_us: f64,
    pub rows: Vec<DeltaRow>,
}

/// A delta checkpoint in one codec.
#[derive(Clone, Debug, Serialize)]
pub struct DeltaRow {
    pub codec: &'static str,
    pub bytes: u64,
    /// `Base::delta` against a kept base: comparing the states (µs, median).
    pub make_us: f64,
    /// `container::encode_delta` (µs, median).
    pub encode_us: f64,
    /// `checkpoint::decode_delta_onto` a kept base: decoding and applying it, the base's
    /// digest checked against the kept one (µs, median).
    pub decode_us: f64,
    /// With `make_us` counted as encoding.
    pub migration: Vec<LinkCost>,
}

/// What a blob costs a migration on one link: sent at line rate, plus encoding at the source
/// and decoding at the destination (the blackout, if it is sent then).
#[derive(Clone, Debug, Serialize)]
pub struct LinkCost {
    pub gbps: u32,
    pub transfer_us: f64,
    pub total_us: f64,
}

fn links(bytes: u64, encode_us: f64, decode_us: f64) -> Vec<LinkCost> {
    LINKS_GBPS
        .iter()
        .map(|&gbps| {
            // bits / (Gb/s) = ns; / 1000 = µs.
            let transfer_us = bytes as f64 * 8.0 / f64::from(gbps) / 1000.0;
            LinkCost {
                gbps,
                transfer_us,
                total_us: transfer_us + encode_us + decode_us,
            }
        })
        .collect()
}

/// The median time of `f` over `reps` runs (at least one), in µs.
fn median_us<T>(reps: u32, mut f: impl FnMut() -> T) -> f64 {
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn full_row(s: &VfStateV2, codec: &'static dyn Codec, reps: u32) -> Result<FullRow, StateError> {
    let blob = container::encode_full(s, codec)?;
    let table = container::Table::parse(&blob)?;
    let kinds = sizes::by_kind(&table.sections);
    // Decoded once outside the timing, so a codec that cannot read back what it wrote is an
    // error here rather than a fast row.
    container::decode(&blob)?;
    let encode_us = median_us(reps, || container::encode_full(s, codec));
    let decode_us = median_us(reps, || container::decode(&blob));
    Ok(FullRow {
        codec: codec.name(),
        about: codec.about(),
        bytes: blob.len() as u64,
        bytes_per_qp: sizes::per(
            sizes::bytes_of(&kinds, SectionKind::Qps),
            s.qps.len() as u64,
        ),
        kinds,
        encode_us,
        decode_us,
        migration: links(blob.len() as u64, encode_us, decode_us),
    })
}

fn delta_row(
    base: &Base,
    cur: &VfStateV2,
    codec: &'static dyn Codec,
    reps: u32,
) -> Result<DeltaRow, StateError> {
    let d = base.delta(cur);
    let blob = container::encode_delta(&d, codec)?;
    if checkpoint::decode_delta_onto(base, &blob)? != *cur {
        return Err(StateError::Checkpoint(
            checkpoint::CheckpointError::Invalid(format!(
                "the {} delta does not give back the state",
                codec.name()
            )),
        ));
    }
    let make_us = median_us(reps, || base.delta(cur));
    let encode_us = median_us(reps, || container::encode_delta(&d, codec));
    let decode_us = median_us(reps, || checkpoint::decode_delta_onto(base, &blob));
    Ok(DeltaRow {
        codec: codec.name(),
        bytes: blob.len() as u64,
        make_us,
        encode_us,
        decode_us,
        migration: links(blob.len() as u64, make_us + encode_us, decode_us),
    })
}

/// One QP count: the VF built, saved, and every codec measured on it.
pub fn run_one(qps: u32, reps: u32) -> Result<Run, StateError> {
    let (vf, objects) = idle_vf::build(qps).map_err(|source| StateError::IdleVf { qps, source })?;
    let base = checkpoint::state_of(&vf, Nanos(0));
    let mut cur = base.clone();
    let changed_qps = idle_vf::touch_one_percent(&mut cur);
    let codecs = checkpoint::codec::all();
    let kept = Base::new(base.clone())?;
    let base_digest_us = median_us(reps, || Base::new(base.clone()));
    Ok(Run {
        qps,
        objects,
        full: codecs
            .iter()
            .map(|c| full_row(&base, *c, reps))
            .collect::<Result<_, _>>()?,
        delta: DeltaRun {
            changed_qps,
            base_digest_us,
            rows: codecs
                .iter()
                .map(|c| delta_row(&kept, &cur, *c, reps))
                .collect::<Result<_, _>>()?,
        },
    })
}

/// Every QP count of `o`.
pub fn run(o: &Options) -> Result<Report, StateError> {
    Ok(Report {
        cpu: cpu_model(),
        reps: o.reps,
        links_gbps: LINKS_GBPS.to_vec(),
        runs: o
            .qps
            .iter()
            .map(|n| run_one(*n, o.reps))
            .collect::<Result<_, _>>()?,
    })
}

/// The CPU's model name, for the record beside the numbers.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A time for people: µs below a millisecond, ms above.
fn time(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

impl Report {
    /// One table per QP count, then its bytes by kind of object.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "checkpoint codecs on a VF of N idle RC QPs; {}; times are the median of {}; \
             migration = bytes at line rate + encode + decode",
            self.cpu, self.reps
        );
        for r in &self.runs {
            o.push('\n');
            r.text(&mut o);
        }
        o
    }
}

impl Run {
    fn text(&self, o: &mut String) {
        let ob = &self.objects;
        let _ = writeln!(
            o,
            "N = {} idle RC QPs, beside {} PD, {} MRs, {} CQs, {} AHs; \
             the delta: {} of the {} QPs moved on since the full checkpoint, \
             against a kept base (its digest, once per pre-copy: {})",
            self.qps,
            ob.pds,
            ob.mrs,
            ob.cqs,
            ob.ahs,
            self.delta.changed_qps,
            self.qps,
            time(self.delta.base_digest_us)
        );
        let _ = write!(
            o,
            "  {:<6} {:<7} {:>10} {:>7} {:>10} {:>10}",
            "blob", "codec", "bytes", "B/QP", "encode", "decode"
        );
        for g in LINKS_GBPS {
            let _ = write!(o, " {:>10}", format!("@{g} Gb/s"));
        }
        o.push('\n');
        for f in &self.full {
            let _ = write!(
                o,
                "  {:<6} {:<7} {:>10} {:>7.1} {:>10} {:>10}",
                "full",
                f.codec,
                f.bytes,
                f.bytes_per_qp,
                time(f.encode_us),
                time(f.decode_us)
            );
            for l in &f.migration {
                let _ = write!(o, " {:>10}", time(l.total_us));
            }
            o.push('\n');
        }
        for d in &self.delta.rows {
            let _ = write!(
                o,
                "  {:<6} {:<7} {:>10} {:>7} {:>10} {:>10}",
                "delta",
                d.codec,
                d.bytes,
                "",
                time(d.make_us + d.encode_us),
                time(d.decode_us)
            );
            for l in &d.migration {
                let _ = write!(o, " {:>10}", time(l.total_us));
            }
            o.push('\n');
        }
        let _ = write!(o, "  bytes by kind (full):");
        for f in &self.full {
            let _ = write!(o, " {:>9}", f.codec);
        }
        o.push('\n');
        for k in SectionKind::ALL {
            if !self.full.iter().any(|f| sizes::bytes_of(&f.kinds, k) > 0) {
                continue;
            }
            let _ = write!(o, "    {:<18}", k.name());
            for f in &self.full {
                let _ = write!(o, " {:>9}", sizes::bytes_of(&f.kinds, k));
            }
            o.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_cost_is_bits_over_rate_plus_the_codec_work() {
        let l = links(125_000, 10.0, 5.0);
        assert_eq!(l.len(), 3);
        // 1 Mbit at 10 Gb/s is 100 µs.
        assert_eq!(
            (l[0].gbps, l[0].transfer_us, l[0].total_us),
            (10, 100.0, 115.0)
        );
        assert_eq!(l[2].transfer_us, 10.0);
    }

    #[test]
    fn median_is_the_middle_run() {
        let mut calls = 0;
        median_us(4, || calls += 1);
        assert_eq!(calls, 4);
        median_us(0, || calls += 1);
        assert_eq!(calls, 5, "at least one run");
    }

    /// Every codec has a full and a delta row, and the delta carries fewer bytes than the
    /// full blob in every codec.
    #[test]
    fn every_codec_is_measured_and_the_delta_is_smaller() {
        let r = run_one(300, 1).unwrap();
        let names: Vec<&str> = checkpoint::codec::all().iter().map(|c| c.name()).collect();
        let full: Vec<&str> = r.full.iter().map(|f| f.codec).collect();
        let delta: Vec<&str> = r.delta.rows.iter().map(|d| d.codec).collect();
        assert_eq!((&full, &delta), (&names, &names));
        assert_eq!(r.delta.changed_qps, 3);
        for (f, d) in r.full.iter().zip(&r.delta.rows) {
            assert!(
                d.bytes < f.bytes / 10,
                "{}: {} vs {}",
                f.codec,
                d.bytes,
                f.bytes
            );
            let qps = f.kinds.iter().find(|k| k.kind == "qps").unwrap();
            assert_eq!(qps.items, 300);
            let sum: u64 = f.kinds.iter().map(|k| k.bytes).sum();
            assert_eq!(
                sum + sizes::container_bytes(f.kinds.iter().map(|k| k.sections as usize).sum()),
                f.bytes
            );
        }
        let text = Report {
            cpu: "test".into(),
            reps: 1,
            links_gbps: LINKS_GBPS.to_vec(),
            runs: vec![r],
        }
        .text();
        assert!(full.iter().all(|c| text.contains(c)), "{text}");
    }
}
