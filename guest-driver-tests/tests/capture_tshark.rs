//! A pcap capture of every opcode, decoded by tshark: the `rc_every_opcode` program runs on
//! two in-process VFs with a capture on the world's tap, and tshark's InfiniBand dissector
//! must read back, packet by packet, the opcode, destination QP, PSN, RETH and AETH fields
//! that were sent.
//!
//! tshark comes with CI (`.ci/run` installs it); there a missing tshark fails the test.
//! Elsewhere the test says so and skips.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;
use vhca_device::{Mtu, Packet, Psn};
use vhca_fabric::capture::Capture;
use vhca_fabric::{Context, World, WorldConfig};
use vhca_guest::programs::{rc_every_opcode, rc_pair};

/// The fields compared: opcode, destination QP, PSN, RETH (or AtomicETH) VA and R_Key, RETH
/// DMA length, AETH syndrome and MSN (absent headers: None).
type Fields = Vec<Option<u64>>;

fn sent_fields(p: &Packet) -> Fields {
    let reth = p.ext.reth;
    let aeth = p.ext.aeth;
    // tshark files an AtomicETH's VA and R_Key under the RETH field names.
    let atomic = p.ext.atomic;
    vec![
        Some(p.bth.opcode.0.into()),
        Some(p.bth.dest_qp.0.into()),
        Some(p.bth.psn.0.into()),
        reth.map(|r| r.va).or(atomic.map(|a| a.va)),
        reth.map(|r| r.rkey.0.into())
            .or(atomic.map(|a| a.rkey.0.into())),
        reth.map(|r| r.len.into()),
        aeth.map(|a| a.syndrome.to_byte().into()),
        aeth.map(|a| a.msn.0.into()),
    ]
}

/// One line of `tshark -T fields -E separator=|` (numbers in decimal or 0x-hex).
fn decoded_fields(line: &str) -> Fields {
    line.split('|')
        .map(|f| {
            let f = f.trim();
            if f.is_empty() {
                None
            } else if let Some(h) = f.strip_prefix("0x") {
                Some(u64::from_str_radix(h, 16).unwrap_or_else(|_| panic!("field {f:?}")))
            } else {
                Some(f.parse().unwrap_or_else(|_| panic!("field {f:?}")))
            }
        })
        .collect()
}

fn tshark_available() -> bool {
    match Command::new("tshark").arg("--version").output() {
        Ok(o) => o.status.success(),
        Err(_) => false,
    }
}

#[test]
fn tshark_decodes_a_capture_of_every_opcode() {
    if !tshark_available() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tshark is not installed, but CI must run this test (.ci/run installs it)");
        }
        eprintln!("SKIPPED: tshark not installed (apt-get install tshark)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vhca-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("every-opcode.pcap");

    let sent: Rc<RefCell<Vec<Fields>>> = Rc::default();
    {
        let mut w = World::new(WorldConfig {
            latency_ns: 1_000,
            ..Default::default()
        });
        let p0 = w.add_pf(2);
        let a = w.add_vf(p0).unwrap();
        let b = w.add_vf(p0).unwrap();
        let mut cap = Capture::create(&path).unwrap();
        let log = sent.clone();
        w.tap = Some(Box::new(move |now, p: &Packet| {
            log.borrow_mut().push(sent_fields(p));
            cap.packet(Duration::from_nanos(now.0), p);
        }));
        let shared = Rc::new(RefCell::new(w));
        let (mut a, mut b) = (Context::open(&shared, a), Context::open(&shared, b));
        let (ea, eb) = rc_pair(
            &mut a,
            &mut b,
            1 << 18,
            16,
            (Psn(0xfff_ff0), Psn(0x12_3456)),
            Mtu::Mtu1024,
        )
        .unwrap();
        for size in [0, 1, 3000] {
            rc_every_opcode(&mut a, &ea, &mut b, &eb, size).unwrap();
        }
        // Dropping the contexts and the world closes the capture.
    }
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["--disable-protocol", "rpcordma"])
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "infiniband.bth.opcode", "-e", "infiniband.bth.destqp"])
        .args(["-e", "infiniband.bth.psn", "-e", "infiniband.reth.va"])
        .args([
            "-e",
            "infiniband.reth.r_key",
            "-e",
            "infiniband.reth.dmalen",
        ])
        .args([
            "-e",
            "infiniband.aeth.syndrome",
            "-e",
            "infiniband.aeth.msn",
        ])
        .output()
        .expect("run tshark");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let got: Vec<&str> = text.lines().collect();
    let want = sent.borrow();
    assert_eq!(got.len(), want.len(), "{text}");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(
            &decoded_fields(g),
            w,
            "packet {} decodes differently: {g}",
            i + 1
        );
    }
    // The capture holds every opcode the program uses: SEND/WRITE FIRST..LAST, with and
    // without immediate, READ request and responses, ACKs and atomics.
    let ops: std::collections::BTreeSet<u8> = want.iter().map(|f| f[0].unwrap() as u8).collect();
    assert!(ops.len() >= 18, "opcodes seen: {ops:?}");
}
