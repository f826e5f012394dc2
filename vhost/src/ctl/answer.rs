//! What the control socket answers: the PF's VFs, QPs and counters as JSON.

use super::server::error_line;
use super::Request;
use crate::shared::Shared;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

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
                        let mut v = encode(q)?;
                        v["vf"] = json!(i);
                        Ok(v)
                    })
                })
                .collect::<Result<_, String>>()?,
        )),
        "counters" => Ok(json!({
            "vfs": st.ports.iter().enumerate().map(|(i, p)| Ok(json!({
                "vf": i,
                "device": device_counters(p.vf.counters()),
                "backend": encode(&p.counters)?,
                "slot": json!({
                    "calls_full": shared.slots[i].calls_full.load(Ordering::Relaxed),
                    "calls_failed": shared.slots[i].calls_failed.load(Ordering::Relaxed),
                }),
            }))).collect::<Result<Vec<_>, String>>()?,
            "switch": st.fabric.counters(),
            "dropped_suspended": st.dropped_suspended,
        })),
        other => Err(format!(
            "unknown command {other:?} (known: vfs, qps, counters)"
        )),
    }
}

/// The device's counters as a JSON object, one member per counter.
fn device_counters(c: &vhca_device::resources::Counters) -> Value {
    Value::Object(
        c.fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect(),
    )
}

fn encode(v: impl Serialize) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot encode the answer: {e}"))
}

/// The reply line (without its newline) to one request line as the client sent it: any
/// bytes, perhaps not UTF-8, perhaps not JSON. Every request gets an answer.
pub fn reply_line(shared: &Shared, line: &[u8]) -> String {
    let line = match std::str::from_utf8(line) {
        Ok(l) => l,
        Err(e) => return error_line(&format!("bad request: not UTF-8 ({e})")),
    };
    match serde_json::from_str::<Request>(line.trim_end_matches('\r')) {
        Ok(r) => match answer(shared, &r.cmd) {
            Ok(v) => json!({"ok": true, "result": v}).to_string(),
            Err(e) => error_line(&e),
        },
        Err(e) => error_line(&format!("bad request: {e}")),
    }
}
