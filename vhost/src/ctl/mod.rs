//! The control socket of `vhca serve` and its client, `vhca ctl`.
//!
//! Protocol (docs/serve.md): one connection per request; the client writes one JSON line
//! `{"cmd":"vfs"|"qps"|"counters"}`, the server answers one JSON line `{"ok":true,"result":…}`
//! or `{"ok":false,"error":"…"}` and closes. Every request gets an answer, a malformed one
//! too; the server serves many clients at once ([`server`]).

mod answer;
mod render;
pub mod server;

pub use answer::{answer, reply_line};
pub use render::render_text;

use crate::shared::Shared;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long the client waits for the server.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub cmd: String,
}

#[derive(Debug, Error)]
pub enum CtlError {
    #[error("cannot reach the control socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad answer from the server: {0}")]
    BadAnswer(String),
    #[error("the server refused: {0}")]
    Refused(String),
}

/// Sends one request and returns its result.
pub fn request(path: &Path, cmd: &str) -> Result<Value, CtlError> {
    let mut s = UnixStream::connect(path).map_err(|source| CtlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = serde_json::to_string(&Request { cmd: cmd.into() })
        .map_err(|e| CtlError::BadAnswer(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s)
        .take(server::MAX_REQUEST as u64)
        .read_line(&mut answer)?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| CtlError::BadAnswer(e.to_string()))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        Err(CtlError::Refused(
            v["error"].as_str().unwrap_or("no reason given").to_owned(),
        ))
    }
}

/// The control socket thread: answers until the process stops, then removes the socket.
pub fn serve(shared: &Shared, listener: UnixListener, path: &Path) {
    let result = server::run(
        &listener,
        shared.stop_raw_fd(),
        || shared.stopping(),
        |line| answer::reply_line(shared, line),
    );
    if let Err(e) = result {
        tracing::error!(error = %e, "control socket failed");
    }
    let _ = std::fs::remove_file(path);
}
