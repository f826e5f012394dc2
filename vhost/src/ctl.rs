//! The control socket of `vhca serve` and its client, `vhca ctl`.
//!
//! Protocol (docs/serve.md): one connection per request; the client writes one JSON line
//! `{"cmd":"vfs"|"qps"|"counters"}`, the server answers one JSON line `{"ok":true,"result":…}`
//! or `{"ok":false,"error":"…"}` and closes.

use crate::shared::Shared;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;
use thiserror::Error;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// How long either side waits for the other.
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
    BufReader::new(s).read_line(&mut answer)?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| CtlError::BadAnswer(e.to_string()))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        Err(CtlError::Refused(
            v["error"].as_str().unwrap_or("no reason given").to_owned(),
        ))
    }
}

/// The answer to one request, as JSON.
pub fn answer(shared: &Shared, cmd: &str) -> Result<Value, String> {
    let st = shared.lock();
    match cmd {
        "vfs" => Ok(Value::Array(
            st.ports
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let id = p.identity();
                    let slot = &shared.slots[i];
                    json!({
                        "vf": i,
                        "socket": slot.socket.display().to_string(),
                        "connected": slot.connected.load(Ordering::Acquire),
                        "connections": slot.connections.load(Ordering::Relaxed),
                        "node_guid": format!("{:016x}", id.node_guid.0),
                        "port_guid": format!("{:016x}", id.port_guid.0),
                        "gid": id.gid.to_string(),
                        "mac": id.mac.to_string(),
                        "mtu": id.port_mtu.bytes(),
                    })
                })
                .collect(),
        )),
        "qps" => Ok(Value::Array(
            st.ports
                .iter()
                .enumerate()
                .flat_map(|(i, p)| {
                    p.qp_infos().into_iter().map(move |q| {
                        let mut v = serde_json::to_value(q).unwrap_or_default();
                        v["vf"] = json!(i);
                        v
                    })
                })
                .collect(),
        )),
        "counters" => Ok(json!({
            "vfs": st.ports.iter().enumerate().map(|(i, p)| json!({
                "vf": i,
                "device": serde_json::to_value(p.vf.counters()).unwrap_or_default(),
                "backend": serde_json::to_value(&p.counters).unwrap_or_default(),
            })).collect::<Vec<_>>(),
            "switch": st.fabric.counters(),
            "dropped_suspended": st.dropped_suspended,
        })),
        other => Err(format!(
            "unknown command {other:?} (known: vfs, qps, counters)"
        )),
    }
}

fn handle(shared: &Shared, s: UnixStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&s).take_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(r) => match answer(shared, &r.cmd) {
            Ok(v) => json!({"ok": true, "result": v}),
            Err(e) => json!({"ok": false, "error": e}),
        },
        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let mut out = reply.to_string();
    out.push('\n');
    (&s).write_all(out.as_bytes())
}

/// Reads one line of at most 64 KiB.
trait TakeLine {
    fn take_line(self, out: &mut String) -> std::io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(self, out: &mut String) -> std::io::Result<()> {
        self.take(64 * 1024).read_line(out).map(|_| ())
    }
}

/// The control socket thread: answers until the process stops, then removes the socket.
pub fn serve(shared: &Shared, listener: UnixListener, path: &Path) {
    let run = || -> std::io::Result<()> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            shared.stop_raw_fd(),
            EpollEvent::new(EventSet::IN, 1),
        )?;
        let mut events = [EpollEvent::default(); 2];
        loop {
            match epoll.wait(-1, &mut events) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if shared.stopping() {
                return Ok(());
            }
            listener.set_nonblocking(true)?;
            while let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(false)?;
                if let Err(e) = handle(shared, s) {
                    tracing::debug!(error = %e, "control request failed");
                }
            }
        }
    };
    if let Err(e) = run() {
        tracing::error!(error = %e, "control socket failed");
    }
    let _ = std::fs::remove_file(path);
}

/// `vhca ctl` without `--json`: a few readable lines.
pub fn render_text(cmd: &str, v: &Value) -> String {
    let mut out = String::new();
    let rows = v.as_array().cloned().unwrap_or_default();
    match cmd {
        "vfs" => {
            out.push_str("VF  CONNECTED  GID                    MAC                NODE GUID         SOCKET\n");
            for r in rows {
                out.push_str(&format!(
                    "{:<3} {:<10} {:<22} {:<18} {:<17} {}\n",
                    r["vf"].to_string(),
                    r["connected"].to_string(),
                    r["gid"].as_str().unwrap_or(""),
                    r["mac"].as_str().unwrap_or(""),
                    r["node_guid"].as_str().unwrap_or(""),
                    r["socket"].as_str().unwrap_or(""),
                ));
            }
        }
        "qps" => {
            out.push_str("VF  QPN       TYPE STATE  SQ_PSN    EPSN      UNA\n");
            for r in rows {
                out.push_str(&format!(
                    "{:<3} {:<9} {:<4} {:<6} {:<9} {:<9} {}\n",
                    r["vf"].to_string(),
                    r["qpn"].to_string(),
                    r["type"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["sq_psn"].to_string(),
                    r["expected_psn"].to_string(),
                    r["una"],
                ));
            }
        }
        _ => {
            for vf in v["vfs"].as_array().cloned().unwrap_or_default() {
                out.push_str(&format!("vf{}:\n", vf["vf"]));
                for part in ["device", "backend"] {
                    if let Some(m) = vf[part].as_object() {
                        for (k, x) in m {
                            if x.as_u64() != Some(0) {
                                out.push_str(&format!("  {part}.{k} = {x}\n"));
                            }
                        }
                    }
                }
            }
            if let Some(m) = v["switch"].as_object() {
                out.push_str("switch:\n");
                for (k, x) in m {
                    out.push_str(&format!("  {k} = {x}\n"));
                }
            }
        }
    }
    out
}
