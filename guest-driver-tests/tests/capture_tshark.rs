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
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_placement};

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

/// A tshark whose InfiniBand dissector knows IBTA 1.5's FLUSH and ATOMIC WRITE (Wireshark ≥
/// 4.2): the host's, or the one in the trixie chroot the QEMU stages use (`.ci/run` builds it,
/// with tshark 4.4, before the tests). Returns the command prefix and the directory a capture
/// must be in for it to read it (the chroot's /tmp, as a host path and as its own path).
fn ib15_tshark() -> Option<(Vec<String>, std::path::PathBuf, std::path::PathBuf)> {
    let knows = |cmd: &[String]| {
        Command::new(&cmd[0])
            .args(&cmd[1..])
            .args(["-G", "fields"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("\tinfiniband.feth\t"))
            .unwrap_or(false)
    };
    let host = vec!["tshark".to_string()];
    if knows(&host) {
        let d = std::env::temp_dir();
        return Some((host, d.clone(), d));
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/qemu-chroot");
    let chrooted = vec![
        "chroot".to_string(),
        root.to_string_lossy().into_owned(),
        "tshark".to_string(),
    ];
    if root.join("usr/bin/tshark").exists() && knows(&chrooted) {
        return Some((chrooted, root.join("tmp"), "/tmp".into()));
    }
    None
}

/// ATOMIC WRITE and FLUSH on the wire, read back by tshark: the `rc_placement` program on two
/// in-process VFs with a capture. The host's tshark (4.0 on bookworm, which predates IBTA 1.5's
/// opcodes) must read every packet's opcode number and PSN as sent; a tshark that knows IBTA
/// 1.5 must also name opcodes 0x1c and 0x1d, find FLUSH's FETH and RETH and ATOMIC WRITE's
/// RETH, and see the READ RESPONSE ONLY answering each. Under CI both are required.
#[test]
fn tshark_decodes_atomic_write_and_flush() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if !tshark_available() {
        assert!(
            !ci,
            "tshark is not installed, but CI must run this test (.ci/run installs it)"
        );
        eprintln!("SKIPPED: tshark not installed (apt-get install tshark)");
        return;
    }
    let newer = ib15_tshark();
    let dir = match &newer {
        Some((_, host_dir, _)) => host_dir.clone(),
        None => std::env::temp_dir(),
    };
    let name = format!("vhca-placement-{}.pcap", std::process::id());
    let path = dir.join(&name);
    let sent: Rc<RefCell<Vec<Packet>>> = Rc::default();
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
            log.borrow_mut().push(p.clone());
            cap.packet(Duration::from_nanos(now.0), p);
        }));
        let shared = Rc::new(RefCell::new(w));
        let (mut a, mut b) = (Context::open(&shared, a), Context::open(&shared, b));
        let (ea, eb) =
            rc_pair(&mut a, &mut b, 1 << 12, 16, (Psn(5), Psn(9)), Mtu::Mtu1024).unwrap();
        rc_placement(&mut a, &ea, &mut b, &eb, 0x1122_3344_5566_7788).unwrap();
    }
    let sent = sent.borrow();
    let run = |cmd: &[String], file: &std::path::Path, fields: &[&str]| -> Vec<Vec<String>> {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..])
            .arg("-r")
            .arg(file)
            .args(["--disable-protocol", "rpcordma"])
            .args(["-T", "fields", "-E", "separator=|"]);
        for f in fields {
            c.args(["-e", f]);
        }
        let out = c.output().expect("run tshark");
        assert!(
            out.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('|').map(|f| f.trim().to_string()).collect())
            .collect()
    };
    // Every tshark: opcode numbers and PSNs, packet by packet.
    let got = run(
        &["tshark".to_string()],
        &path,
        &["infiniband.bth.opcode", "infiniband.bth.psn"],
    );
    let want: Vec<Vec<String>> = sent
        .iter()
        .map(|p| vec![p.bth.opcode.0.to_string(), p.bth.psn.0.to_string()])
        .collect();
    assert_eq!(got, want);
    let ops: Vec<u8> = sent.iter().map(|p| p.bth.opcode.0).collect();
    assert_eq!(
        ops.iter().filter(|o| **o == 0x1c).count(),
        2,
        "two FLUSHes: {ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|o| **o == 0x1d).count(),
        2,
        "two ATOMIC WRITEs: {ops:?}"
    );
    let Some((cmd, _, inside)) = newer else {
        let _ = std::fs::remove_file(&path);
        assert!(
            !ci,
            "CI must have a tshark that knows FLUSH (the trixie chroot's 4.4)"
        );
        eprintln!("SKIPPED the IBTA 1.5 names: no tshark here knows FLUSH and ATOMIC WRITE");
        return;
    };
    let got = run(
        &cmd,
        &inside.join(&name),
        &[
            "_ws.col.Info",
            "infiniband.feth",
            "infiniband.reth.va",
            "infiniband.reth.r_key",
            "infiniband.reth.dmalen",
        ],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(got.len(), sent.len());
    for (p, g) in sent.iter().zip(&got) {
        let info = g[0].to_uppercase();
        match p.bth.opcode.0 {
            0x1c => {
                assert!(info.contains("FLUSH"), "{info}");
                // The FETH word as rxe lays it out (placement in bits 3-0, selectivity in
                // 5-4; Wireshark splits the same word as 2-0 and 4-3, see docs/transport.md).
                let f = p.ext.feth.unwrap();
                let word = u32::from(f.placement) | u32::from(f.selectivity) << 4;
                assert_eq!(g[1].replace(':', ""), format!("{word:08x}"), "{g:?}");
            }
            0x1d => assert!(info.contains("ATOMIC WRITE"), "{info}"),
            0x10 => assert!(info.contains("READ RESPONSE ONLY"), "{info}"),
            _ => {}
        }
        if p.bth.opcode.is_flush_or_atomic_write() {
            let r = p.ext.reth.unwrap();
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            assert_eq!(hex(&g[2]), r.va, "{g:?}");
            assert_eq!(hex(&g[3]), u64::from(r.rkey.0), "{g:?}");
            assert_eq!(g[4].parse::<u32>().unwrap(), r.len, "{g:?}");
        }
    }
}
