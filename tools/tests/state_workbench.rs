//! The experimenter's workbench as a user runs it, through the `vhca` binary: `state bench`,
//! `state stats`, `state schema` and `state export`, their JSON read as an outside script
//! would, and the exported documents checked against the schema by an independent validator
//! (the `jsonschema` crate).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use vhca_device::checkpoint::{self, codec, SectionKind};

fn vhca(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vhca"))
        .args(args)
        .output()
        .expect("run vhca");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "vhca {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(args: &[&str]) -> Value {
    let out = vhca(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vhca {args:?}: not JSON ({e}): {out}"))
}

/// A directory of this test's own (tests run in parallel, in one process each binary).
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vhca-workbench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `vhca state sample` into `d`, returning the file.
fn sample(d: &Path, codec: &str) -> PathBuf {
    let f = d.join(format!("sample.{codec}"));
    vhca(&["state", "sample", path(&f), "--codec", codec]);
    f
}

#[test]
fn bench_json_lists_every_codec_and_an_idle_qp_fits_in_128_binary_bytes() {
    let r = json(&["state", "bench", "--qps", "1,64", "--reps", "1", "--json"]);
    let codecs: Vec<&str> = codec::all().iter().map(|c| c.name()).collect();
    assert!(codecs.len() >= 3, "{codecs:?}");
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for (run, n) in runs.iter().zip([1, 64]) {
        assert_eq!(run["qps"], n);
        let full = run["full"].as_array().expect("full rows");
        let names: Vec<&str> = full.iter().map(|f| f["codec"].as_str().unwrap()).collect();
        assert_eq!(names, codecs, "one full row per codec, in order");
        for f in full {
            let per_qp = f["bytes_per_qp"].as_f64().unwrap();
            assert!(per_qp > 0.0, "{f}");
            let kinds = f["kinds"].as_array().unwrap();
            let qps = kinds
                .iter()
                .find(|k| k["kind"] == "qps")
                .expect("a qps kind");
            assert_eq!(qps["items"], n, "{f}");
            assert!(f["bytes"].as_u64().unwrap() > qps["bytes"].as_u64().unwrap());
            assert_eq!(f["migration"].as_array().unwrap().len(), 3, "{f}");
        }
        // Issue 11: state per idle RC QP ≤ 128 bytes in the migration codec.
        let binary = &full[0];
        assert_eq!(binary["codec"], "binary");
        let per_qp = binary["bytes_per_qp"].as_f64().unwrap();
        assert!(per_qp <= 128.0, "{per_qp} bytes per idle RC QP");
        let delta = run["delta"]["rows"].as_array().expect("delta rows");
        let names: Vec<&str> = delta.iter().map(|d| d["codec"].as_str().unwrap()).collect();
        assert_eq!(names, codecs, "one delta row per codec");
        assert_eq!(run["delta"]["changed_qps"], 1);
    }
}

#[test]
fn stats_reports_the_section_table_qp_bytes() {
    let d = dir("stats");
    for codec in codec::all() {
        let f = sample(&d, codec.name());
        let blob = std::fs::read(&f).unwrap();
        let table: u64 = checkpoint::header(&blob)
            .unwrap()
            .sections
            .iter()
            .filter(|s| s.kind == SectionKind::Qps)
            .map(|s| u64::from(s.len))
            .sum();
        let s = json(&["state", "stats", path(&f), "--json"]);
        let qps = s["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == "qps")
            .expect("qps kind");
        assert_eq!(qps["bytes"].as_u64().unwrap(), table, "{}", codec.name());
        assert_eq!(s["file_bytes"].as_u64().unwrap(), blob.len() as u64);
        let parts = s["qp_parts"].as_array().unwrap();
        for part in ["init", "attr", "rq", "req", "resp"] {
            assert!(
                parts
                    .iter()
                    .any(|p| p["part"] == part && p["bytes"].as_u64() > Some(0)),
                "{part}: {s}"
            );
        }
        let text = vhca(&["state", "stats", path(&f)]);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("qps "))
            .unwrap_or_else(|| panic!("no qps line: {text}"));
        assert!(
            line.split_whitespace().any(|w| w == table.to_string()),
            "{line}"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A document for the schema validator.
fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).expect("the schema compiles")
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| e.to_string()).collect()
}

#[test]
fn the_schema_accepts_exported_states_and_deltas_and_rejects_mutations() {
    let schema = json(&["state", "schema"]);
    let defs = schema["$defs"].as_object().expect("$defs");
    let qp = defs.get("QpStateV2").expect("QpStateV2 in $defs");
    assert!(qp["required"].as_array().unwrap().len() >= 7, "{qp}");
    let v = validator(&schema);

    let d = dir("schema");
    let bin = sample(&d, "binary");
    let full = json(&["state", "export", path(&bin)]);
    assert!(full["Full"]["qps"].as_array().unwrap().len() >= 3);
    assert_eq!(errors(&v, &full), Vec::<String>::new());
    // Every codec and the v1 fixtures export to documents the schema accepts.
    for codec in codec::all() {
        let f = sample(&d, codec.name());
        assert_eq!(
            json(&["state", "export", path(&f)]),
            full,
            "{}",
            codec.name()
        );
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device/tests/fixtures");
    for name in [
        "checkpoint-v1-sample.bin",
        "checkpoint-v1.json",
        "checkpoint-v1-variants.bin",
        "checkpoint-v2-variants.json",
        "checkpoint-v2-variants.lz4",
    ] {
        let doc = json(&["state", "export", path(&fixtures.join(name))]);
        assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{name}");
    }

    // A delta: one QP moved on and one MR gone since the base.
    let base = checkpoint::decode(&std::fs::read(&bin).unwrap()).unwrap().1;
    let mut cur = base.clone();
    cur.qps[0].req.psn = cur.qps[0].req.psn.add(1);
    cur.mrs.pop();
    let delta_file = d.join("delta.cbor");
    let blob = checkpoint::save_delta(&base, &cur, codec::by_name("cbor").unwrap()).unwrap();
    std::fs::write(&delta_file, blob).unwrap();
    let delta = json(&["state", "export", path(&delta_file)]);
    assert_eq!(
        delta["Delta"]["changed"]["qps"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        delta["Delta"]["removed"]["mrs"].as_array().unwrap().len(),
        1
    );
    assert_eq!(errors(&v, &delta), Vec::<String>::new());

    // Mutations the schema must refuse.
    let mut psn_as_text = full.clone();
    psn_as_text["Full"]["qps"][0]["req"]["psn"] = Value::from("12345");
    let mut no_init = full.clone();
    no_init["Full"]["qps"][0]
        .as_object_mut()
        .unwrap()
        .remove("init");
    let mut short_digest = delta.clone();
    short_digest["Delta"]["base"]["digest"]
        .as_array_mut()
        .unwrap()
        .pop();
    let mut byte_too_big = full.clone();
    byte_too_big["Full"]["identity"]["mac"][0] = Value::from(256);
    let mut both = full.clone();
    both["Delta"] = delta["Delta"].clone();
    for (what, doc) in [
        ("a string where a PSN goes", psn_as_text),
        ("a QP without its init", no_init),
        ("a 31-byte base digest", short_digest),
        ("a MAC byte of 256", byte_too_big),
        ("Full and Delta at once", both),
    ] {
        assert!(!v.is_valid(&doc), "the schema accepted {what}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
