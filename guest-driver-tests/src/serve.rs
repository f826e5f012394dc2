//! A real `vhca serve` process for end-to-end tests and benchmarks: started on a fresh socket
//! directory, ready once it logs that it is serving, stopped (SIGTERM, then SIGKILL) on drop.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("building or locating the vhca binary: {0}")]
    Binary(String),
    #[error("starting vhca serve: {0}")]
    Spawn(#[from] io::Error),
    #[error("vhca serve exited before it was ready; its log:\n{0}")]
    Exited(String),
    #[error("vhca serve was not ready within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
}

/// The `vhca` binary of this workspace, built once per test process.
///
/// `VHCA_BIN` overrides it. Otherwise the binary is built with the same cargo and profile that
/// built the running test (a no-op when it is fresh: cargo does not hold its lock while tests
/// run) and found next to the test executable's directory.
pub fn vhca_binary() -> Result<PathBuf, ServeError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VHCA_BIN") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut dir = exe.parent().ok_or("test executable has no directory")?;
        if dir.ends_with("deps") {
            dir = dir.parent().ok_or("deps directory has no parent")?;
        }
        let profile: &[&str] = if dir.ends_with("release") {
            &["--release"]
        } else {
            &["--profile", "test"]
        };
        let target_dir = dir.parent().ok_or("profile directory has no parent")?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "-p", "vhca", "--bin", "vhca"])
            .args(profile)
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build -p vhca failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let bin = dir.join("vhca");
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("{} does not exist after the build", bin.display()))
        }
    })
    .clone()
    .map_err(ServeError::Binary)
}

/// A running `vhca serve --vfs N --socket-dir DIR`.
pub struct ServeProcess {
    child: Child,
    dir: tempfile::TempDir,
    vfs: u16,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl ServeProcess {
    /// Starts a server with `vfs` VFs and waits (up to `timeout`) until it serves.
    pub fn start(vfs: u16, timeout: Duration) -> Result<ServeProcess, ServeError> {
        Self::start_with_args(vfs, &[], timeout)
    }

    /// [`ServeProcess::start`] with more `vhca serve` options, e.g. `["--udp-ip", "127.0.0.11"]`.
    pub fn start_with_args(
        vfs: u16,
        extra: &[&str],
        timeout: Duration,
    ) -> Result<ServeProcess, ServeError> {
        let bin = vhca_binary()?;
        let dir = tempfile::Builder::new().prefix("vhca-e2e-").tempdir()?;
        let mut child = Command::new(bin)
            .args(["serve", "--vfs", &vfs.to_string(), "--socket-dir"])
            .arg(dir.path())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = ServeProcess {
            child,
            dir,
            vfs,
            log: rx,
            seen: Vec::new(),
        };
        s.wait_for_log("serving", timeout)?;
        Ok(s)
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), ServeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(ServeError::NotReady(timeout, self.seen.join("\n")))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    return Err(ServeError::Exited(self.seen.join("\n")));
                }
            }
        }
    }

    /// Everything the server logged so far.
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// The server's process id (for /proc/PID/{fd,task,status}).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn vfs(&self) -> u16 {
        self.vfs
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The vhost-user socket of VF `vf`.
    pub fn socket(&self, vf: u16) -> PathBuf {
        self.dir.path().join(format!("vf{vf}.sock"))
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; its exit status, or
    /// `None` if it is still running then (the drop kills it).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        // The process's stderr closes as it exits; wait_for_log then reaps it.
        let _ = self.wait_for_log("\u{0}", timeout);
        self.child.try_wait().ok().flatten()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            // The server exits on SIGTERM: its stderr closes then. Kill it if it does not.
            let _ = self.wait_for_log("\u{0}", Duration::from_secs(10));
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
