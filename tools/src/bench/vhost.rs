//! `vhca bench vhost`: bandwidth and latency through the vhost-user path (guest driver → VF →
//! VF → guest driver, a real `vhca serve` process) beside the same measurement in-process.

use serde::Serialize;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use thiserror::Error;
use vhca_fabric::{Context, World, WorldConfig};
use vhca_guest::bench::{self, BenchConfig, BenchError, BenchReport};
use vhca_guest::serve::{ServeError, ServeProcess};

#[derive(Debug, Error)]
pub enum VhostBenchError {
    #[error("the in-process VFs: {0}")]
    Setup(#[source] vhca_device::VerbsError),
    #[error("in-process: {0}")]
    InProcess(#[source] BenchError),
    #[error("starting vhca serve: {0}")]
    Serve(#[source] ServeError),
    #[error("through vhost-user: {0}")]
    VhostUser(#[source] BenchError),
}

#[derive(Clone, Debug, Serialize)]
pub struct PathResult {
    pub path: &'static str,
    pub write_size: u32,
    pub write_gbps: f64,
    pub send_size: u32,
    pub send_latency_median_us: f64,
    pub send_latency_p99_us: f64,
}

fn result(path: &'static str, cfg: &BenchConfig, r: &BenchReport) -> PathResult {
    PathResult {
        path,
        write_size: cfg.write_size,
        write_gbps: r.write_bytes_per_sec / 1e9,
        send_size: cfg.send_size,
        send_latency_median_us: r.send_latency_median.as_secs_f64() * 1e6,
        send_latency_p99_us: r.send_latency_p99.as_secs_f64() * 1e6,
    }
}

/// Both paths with the same program (`vhca_guest::bench::run`) and configuration.
pub fn run(cfg: &BenchConfig) -> Result<Vec<PathResult>, VhostBenchError> {
    // In process: two VFs of two PFs on an ideal in-process link.
    let mut w = World::new(WorldConfig {
        vf_mem_bytes: 64 << 20,
        ..Default::default()
    });
    let (p0, p1) = (w.add_pf(1), w.add_pf(1));
    let a = w.add_vf(p0).map_err(VhostBenchError::Setup)?;
    let b = w.add_vf(p1).map_err(VhostBenchError::Setup)?;
    let w = Rc::new(RefCell::new(w));
    let (mut ca, mut cb) = (Context::open(&w, a), Context::open(&w, b));
    let inproc = bench::run(&mut ca, &mut cb, cfg).map_err(VhostBenchError::InProcess)?;
    // Through vhost-user: this very binary serves two VFs.
    if std::env::var_os("VHCA_BIN").is_none() {
        if let Ok(me) = std::env::current_exe() {
            std::env::set_var("VHCA_BIN", me);
        }
    }
    let serve = ServeProcess::start(2, Duration::from_secs(60)).map_err(VhostBenchError::Serve)?;
    let vhost = bench::vhost_user(&serve.socket(0), &serve.socket(1), cfg)
        .map_err(VhostBenchError::VhostUser)?;
    drop(serve);
    Ok(vec![
        result("in-process", cfg, &inproc),
        result("vhost-user", cfg, &vhost),
    ])
}

pub fn table(rows: &[PathResult]) -> String {
    let mut s = format!(
        "{:<12} {:>10} {:>12} {:>10} {:>14} {:>12}\n",
        "path", "write B", "WRITE GB/s", "send B", "lat p50 [us]", "lat p99 [us]"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<12} {:>10} {:>12.3} {:>10} {:>14.2} {:>12.2}\n",
            r.path,
            r.write_size,
            r.write_gbps,
            r.send_size,
            r.send_latency_median_us,
            r.send_latency_p99_us
        ));
    }
    if let [a, b] = rows {
        s.push_str(&format!(
            "vhost-user WRITE bandwidth = {:.0}% of in-process\n",
            100.0 * b.write_gbps / a.write_gbps.max(1e-9)
        ));
    }
    s
}
