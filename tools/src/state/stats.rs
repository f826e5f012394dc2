//! `vhca state stats`: where one checkpoint's bytes go, by kind of object and by part of a QP.

use super::sizes::{self, KindBytes, PartBytes};
use serde::Serialize;
use std::fmt::Write as _;
use vhca_device::checkpoint::{self, container, CheckpointError, CheckpointV2};

/// Where the per-kind numbers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KindSource {
    /// The blob's own v2 section table: nothing decoded.
    SectionTable,
    /// A v1 blob is one payload with no sections: its state, upgraded to v2, encoded section
    /// by section with the blob's codec.
    ReEncodedAsV2,
}

/// One checkpoint's sizes.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub version: u16,
    pub codec: &'static str,
    pub delta: bool,
    /// The whole file.
    pub file_bytes: u64,
    /// Header and section table (v2), or the header (v1).
    pub container_bytes: u64,
    pub kinds_from: KindSource,
    pub kinds: Vec<KindBytes>,
    /// QPs in the blob (a delta: the QPs it carries).
    pub qps: u64,
    /// The QP bytes by part, each part encoded alone with the blob's codec (`sizes::qp_parts`).
    pub qp_parts: Vec<PartBytes>,
}

/// Measures a checkpoint: v1 or v2, any codec, full or delta.
pub fn stats(blob: &[u8]) -> Result<Stats, CheckpointError> {
    let (h, c) = checkpoint::decode_any(blob)?;
    let (kinds_from, kinds, container_bytes) = if h.version == 1 {
        let v2 = container::Table::parse(&container::encode(&c, h.codec)?)?;
        (
            KindSource::ReEncodedAsV2,
            sizes::by_kind(&v2.sections),
            checkpoint::HEADER_LEN as u64,
        )
    } else {
        (
            KindSource::SectionTable,
            sizes::by_kind(&h.sections),
            sizes::container_bytes(h.sections.len()),
        )
    };
    let qps = match &c {
        CheckpointV2::Full(s) => &s.qps,
        CheckpointV2::Delta(d) => &d.changed.qps,
    };
    Ok(Stats {
        version: h.version,
        codec: h.codec.name(),
        delta: h.delta,
        file_bytes: blob.len() as u64,
        container_bytes,
        kinds_from,
        kinds,
        qps: qps.len() as u64,
        qp_parts: sizes::qp_parts(h.codec, qps)?,
    })
}

impl Stats {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let what = if self.delta { "delta" } else { "full" };
        let _ = writeln!(
            o,
            "v{} {what} checkpoint, codec {}: {} bytes",
            self.version, self.codec, self.file_bytes
        );
        match self.kinds_from {
            KindSource::SectionTable => {
                let _ = writeln!(
                    o,
                    "header and section table: {} bytes; by kind, from the section table:",
                    self.container_bytes
                );
            }
            KindSource::ReEncodedAsV2 => {
                let _ = writeln!(
                    o,
                    "v1: one payload of {} bytes after the {}-byte header, no sections; by kind, \
                     its state upgraded to v2 and re-encoded section by section with {}:",
                    self.file_bytes - self.container_bytes,
                    self.container_bytes,
                    self.codec
                );
            }
        }
        let _ = writeln!(
            o,
            "  {:<10} {:>8} {:>8} {:>10} {:>10}",
            "kind", "sections", "items", "bytes", "bytes/item"
        );
        for k in &self.kinds {
            let _ = writeln!(
                o,
                "  {:<10} {:>8} {:>8} {:>10} {:>10.1}",
                k.kind, k.sections, k.items, k.bytes, k.bytes_per_item
            );
        }
        if self.qps == 0 {
            return o;
        }
        let total: u64 = self.qp_parts.iter().map(|p| p.bytes).sum();
        let _ = writeln!(
            o,
            "QP bytes by part ({} QPs; each part of every QP encoded alone with {}, {} bytes in all):",
            self.qps, self.codec, total
        );
        let _ = writeln!(
            o,
            "  {:<12} {:>10} {:>10} {:>6}",
            "part", "bytes", "bytes/QP", "share"
        );
        for p in &self.qp_parts {
            let _ = writeln!(
                o,
                "  {:<12} {:>10} {:>10.1} {:>5.1}%",
                p.part,
                p.bytes,
                p.bytes_per_qp,
                100.0 * sizes::per(p.bytes, total)
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpoint::codec::{BINARY, JSON};
    use vhca_device::checkpoint::SectionKind;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../device/tests/fixtures");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Every byte of a v2 blob is the header, the table or a section, in every codec.
    #[test]
    fn kinds_and_container_add_up_to_the_file() {
        let bin = crate::state::sample(BINARY).unwrap();
        for codec in checkpoint::codec::all() {
            let blob = crate::state::convert(&bin, *codec).unwrap();
            let s = stats(&blob).unwrap();
            assert_eq!(s.kinds_from, KindSource::SectionTable);
            let sum: u64 = s.kinds.iter().map(|k| k.bytes).sum();
            assert_eq!(s.container_bytes + sum, s.file_bytes, "{}", codec.name());
            assert_eq!(s.qps, 3, "{}", codec.name());
            let names: Vec<&str> = s.qp_parts.iter().map(|p| p.part).collect();
            assert_eq!(names, ["init", "attr", "rq", "req", "resp", "qpn+src_port"]);
            assert!(s.qp_parts.iter().all(|p| p.bytes > 0), "{:?}", s.qp_parts);
            assert!(s.text().contains("QP bytes by part"), "{}", s.text());
        }
    }

    /// A v1 blob has no sections: its kinds are its upgraded state re-encoded, which is what
    /// the same state saves as v2 today.
    #[test]
    fn a_v1_blob_is_measured_as_its_state_re_encoded() {
        for (name, codec) in [
            ("checkpoint-v1-sample.bin", BINARY),
            ("checkpoint-v1-sample.json", JSON),
        ] {
            let s = stats(&fixture(name)).unwrap();
            assert_eq!((s.version, s.codec), (1, codec.name()));
            assert_eq!(s.kinds_from, KindSource::ReEncodedAsV2);
            assert!(s.text().contains("v1: one payload"), "{}", s.text());
            let now = stats(&crate::state::sample(codec).unwrap()).unwrap();
            assert_eq!(s.kinds, now.kinds, "{name}");
            assert_eq!(s.qp_parts, now.qp_parts, "{name}");
        }
    }

    /// A delta is measured from its own table: the QPs it carries, and its base section.
    #[test]
    fn a_delta_reports_only_what_it_carries() {
        let base = checkpoint::decode(&crate::state::sample(BINARY).unwrap())
            .unwrap()
            .1;
        let mut cur = base.clone();
        cur.qps[1].req.psn = cur.qps[1].req.psn.add(1);
        let blob = checkpoint::save_delta(&base, &cur, BINARY).unwrap();
        let s = stats(&blob).unwrap();
        assert!(s.delta);
        assert_eq!(s.qps, 1);
        let qps = s.kinds.iter().find(|k| k.kind == "qps").unwrap();
        assert_eq!(qps.items, 1);
        assert_eq!(sizes::bytes_of(&s.kinds, SectionKind::Base), 32);
        assert!(s.text().starts_with("v2 delta checkpoint, codec binary"));
    }
}
