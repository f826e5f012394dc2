//! The shell command a migration runs between the source's save and the destination's load
//! (`vhca migrate-attached --hook`, `vhca pingpong/perf --migrate-hook`): where the VF's
//! address and MAC move to the destination's host (docs/migration.md, "UDP fabrics").

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::Mac;

#[derive(Debug, Error)]
pub enum HookCommandError {
    #[error("running `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` exited with {status}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
    },
}

/// A hook command and what it is told: `VHCA_MAC` always, `VHCA_IP` when the VF's GID is
/// IPv4-mapped.
pub struct HookCommand {
    pub cmd: String,
    pub ip: Option<Ipv4Addr>,
    pub mac: Mac,
}

impl HookCommand {
    /// Runs `sh -c CMD` and waits for it.
    pub fn run(&self) -> Result<(), HookCommandError> {
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", &self.cmd])
            .env("VHCA_MAC", self.mac.to_string());
        if let Some(ip) = self.ip {
            sh.env("VHCA_IP", ip.to_string());
        }
        let status = sh.status().map_err(|source| HookCommandError::Spawn {
            cmd: self.cmd.clone(),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(HookCommandError::Failed {
                cmd: self.cmd.clone(),
                status,
            })
        }
    }

    /// The command as a [`vhca_guest::migrate::Hook`], recording its run time in `took`.
    /// That hook's error is a `String` (the guest driver's type): the message of
    /// [`HookCommandError`].
    pub fn into_migration_hook(
        self,
        took: Arc<Mutex<Option<Duration>>>,
    ) -> vhca_guest::migrate::Hook {
        Box::new(move || {
            let t = Instant::now();
            let r = self.run();
            if !matches!(r, Err(HookCommandError::Spawn { .. })) {
                *took.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.elapsed());
            }
            r.map_err(|e| e.to_string())
        })
    }
}
