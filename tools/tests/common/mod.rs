//! What the end-to-end tests of the `vhca` binary on a VF share: a `vhca serve` child on a
//! loopback address, the tool as a child process, its "listening" line and its JSON report.

// Each test binary uses the part it needs.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vhca_guest::serve::ServeProcess;

/// How long a `vhca serve` child may take to say it serves.
pub const READY: Duration = Duration::from_secs(60);
/// Far beyond any test here (seconds each): a hang fails the binary, naming its phase.
pub const DEADLINE: Duration = Duration::from_secs(300);

pub fn serve(ip: Ipv4Addr) -> ServeProcess {
    std::env::set_var("VHCA_BIN", env!("CARGO_BIN_EXE_vhca"));
    ServeProcess::start_with_args(1, &["--udp-ip", &ip.to_string()], READY).expect("vhca serve")
}

/// A `vhca serve --udp-ip IP --accept-identity`: a migration destination whose slot takes in
/// the VF of another process with its address (docs/migration.md, "Identity policy").
pub fn serve_destination(ip: Ipv4Addr) -> ServeProcess {
    ServeProcess::start_with_args(
        1,
        &["--udp-ip", &ip.to_string(), "--accept-identity"],
        READY,
    )
    .expect("vhca serve --accept-identity")
}

pub fn vhca(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vhca"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vhca")
}

/// A TCP port nobody listens on now (the child binds it a moment later).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind TCP")
        .port()
}

/// Waits until a server child prints its "listening" line (as the interop scripts do), then
/// leaves its stderr to a thread so the child never blocks on a full pipe.
pub fn wait_listening(child: &mut Child) -> std::thread::JoinHandle<String> {
    wait_line(child, "listening on TCP port")
}

/// Waits until a child prints a stderr line containing `marker`, then leaves its stderr to a
/// thread (see [`wait_listening`]).
pub fn wait_line(child: &mut Child, marker: &str) -> std::thread::JoinHandle<String> {
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("child stderr");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            return std::thread::spawn(move || {
                for l in lines.map_while(Result::ok) {
                    seen.push_str(&l);
                    seen.push('\n');
                }
                seen
            });
        }
    }
    panic!("the server exited before it listened:\n{seen}");
}

/// The child's one-line JSON report; panics with its output when it failed.
pub fn json_of(child: Child) -> Value {
    let out = child.wait_with_output().expect("wait for vhca");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vhca failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
