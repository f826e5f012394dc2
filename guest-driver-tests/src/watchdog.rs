//! A deadline for a whole end-to-end test: past it, the test process says which phase hung
//! and exits, so a hang fails the run at once, with a place, instead of eating CI's time limit.
//!
//! libtest has no per-test timeout, and the parts of an end-to-end test wait on each other
//! (a server thread's accept, a peer process): a bug that leaves one side waiting would
//! otherwise block `cargo test` until CI kills it, with nothing in the log but "has been
//! running for over 60 seconds".

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Armed while alive; [`Watchdog::phase`] names what the test does now.
pub struct Watchdog {
    phase: Arc<Mutex<String>>,
    // Dropping the sender wakes the thread, which then returns without acting.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Exits the process with status 101 (a test failure) if still alive `limit` from now.
    pub fn arm(test: &'static str, limit: Duration) -> Watchdog {
        let phase = Arc::new(Mutex::new(String::from("starting")));
        let (stop, rx) = mpsc::channel::<()>();
        let seen = Arc::clone(&phase);
        let thread = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                let at = seen.lock().map(|p| p.clone()).unwrap_or_default();
                // Straight to the file descriptor: libtest captures the print macros, and a
                // process that exits here never shows what it captured.
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "watchdog: {test} still running after {limit:?}, in phase: {at}"
                );
                std::process::exit(101);
            }
        });
        Watchdog {
            phase,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Names the phase the test enters (printed if the deadline passes in it).
    pub fn phase(&self, what: impl Into<String>) {
        if let Ok(mut p) = self.phase.lock() {
            *p = what.into();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a test of its own: the child process [`a_hung_test_exits_naming_its_phase`] runs,
    /// which hangs on purpose.
    #[test]
    #[ignore = "hangs on purpose; run by a_hung_test_exits_naming_its_phase"]
    fn hang_under_a_watchdog() {
        // Dropped before its deadline: must never fire, though the process outlives it.
        drop(Watchdog::arm(
            "a_dropped_watchdog",
            Duration::from_millis(20),
        ));
        let w = Watchdog::arm("hang_under_a_watchdog", Duration::from_millis(100));
        w.phase("waiting for a message nobody sends");
        let (_tx, rx) = mpsc::channel::<()>();
        let _ = rx.recv();
    }

    #[test]
    fn a_hung_test_exits_naming_its_phase() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "watchdog::tests::hang_under_a_watchdog",
            ])
            .output()
            .expect("run the test binary");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(101), "{err}");
        assert!(
            err.contains("hang_under_a_watchdog still running after 100ms, in phase: waiting for a message nobody sends"),
            "{err}"
        );
        // The watchdog dropped first had the earlier deadline and said nothing.
        assert!(!err.contains("a_dropped_watchdog"), "{err}");
    }
}
