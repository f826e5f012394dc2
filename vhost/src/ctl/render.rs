//! `vhca ctl`'s text output: the JSON answers as short tables.

use serde_json::Value;

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
                for part in ["device", "backend", "slot"] {
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
