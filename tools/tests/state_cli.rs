//! `vhca state` from the command line: a sample in every codec, a v1 checkpoint upgraded to
//! v2, and what the tools say about each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vhca(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vhca"))
        .args(args)
        .output()
        .expect("vhca runs")
}

fn ok(args: &[&str]) -> String {
    let out = vhca(args);
    assert!(
        out.status.success(),
        "vhca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh directory of this test's own under the target directory.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_sample_converts_to_every_codec_and_back() {
    let d = scratch("state_cli_codecs");
    let sample = d.join("sample.bin");
    ok(&["state", "sample", s(&sample)]);
    let text = ok(&["state", "inspect", s(&sample)]);
    assert!(text.contains("format version 2, codec binary"), "{text}");
    assert!(text.contains("valid: yes"), "{text}");
    for codec in ["json", "cbor", "lz4", "binary"] {
        let other = d.join(format!("sample.{codec}"));
        ok(&["state", "convert", s(&sample), s(&other), "--to", codec]);
        let text = ok(&["state", "inspect", s(&other)]);
        assert!(text.contains(&format!("codec {codec}")), "{text}");
        ok(&["state", "validate", s(&other)]);
        // Same state: diff finds nothing and exits 0.
        assert_eq!(ok(&["state", "diff", s(&sample), s(&other)]), "");
    }
    let out = vhca(&[
        "state",
        "convert",
        s(&sample),
        s(&d.join("x")),
        "--to",
        "xml",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("binary, json, cbor, lz4"));
}

#[test]
fn a_v1_checkpoint_upgrades_to_the_v2_sample() {
    let d = scratch("state_cli_upgrade");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device/tests/fixtures");
    let sample = d.join("sample.bin");
    ok(&["state", "sample", s(&sample)]);
    for (v1, codec) in [
        ("checkpoint-v1-sample.bin", "binary"),
        ("checkpoint-v1-sample.json", "json"),
    ] {
        let old = fixtures.join(v1);
        assert!(ok(&["state", "inspect", s(&old)]).contains("format version 1"));
        let new = d.join(format!("{v1}.v2"));
        ok(&["state", "upgrade", s(&old), s(&new)]);
        let text = ok(&["state", "inspect", s(&new)]);
        assert!(
            text.contains(&format!("format version 2, codec {codec}")),
            "{text}"
        );
        // The v1 sample, upgraded, is the state today's sample saves.
        assert_eq!(ok(&["state", "diff", s(&new), s(&sample)]), "");
        // A v2 checkpoint is not upgraded again.
        assert!(!vhca(&["state", "upgrade", s(&new), s(&d.join("again"))])
            .status
            .success());
    }
    let up = d.join("to-cbor");
    ok(&[
        "state",
        "upgrade",
        s(&fixtures.join("checkpoint-v1.bin")),
        s(&up),
        "--to",
        "cbor",
    ]);
    assert!(ok(&["state", "inspect", s(&up)]).contains("codec cbor"));
}
