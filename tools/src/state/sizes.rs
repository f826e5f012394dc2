//! Where a checkpoint's bytes go: by kind of section, read from a v2 section table without
//! decoding anything, and by part of a QP, measured by encoding each part on its own.

use serde::Serialize;
use vhca_device::checkpoint::container::{ENTRY_LEN, HEADER_LEN};
use vhca_device::checkpoint::{codec, CheckpointError, Codec, QpStateV2, SectionInfo, SectionKind};

/// One kind of section, summed over the sections of that kind (QPs come in several).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindBytes {
    /// The section kind's name (`SectionKind::name`).
    pub kind: &'static str,
    pub sections: u32,
    /// Objects in those sections (1 for a single value such as the identity).
    pub items: u64,
    /// Payload bytes of those sections.
    pub bytes: u64,
    pub bytes_per_item: f64,
}

/// A section table summed by kind, in the format's kind order; kinds the table lacks are left
/// out.
pub fn by_kind(sections: &[SectionInfo]) -> Vec<KindBytes> {
    SectionKind::ALL
        .iter()
        .filter_map(|k| {
            let of: Vec<&SectionInfo> = sections.iter().filter(|s| s.kind == *k).collect();
            if of.is_empty() {
                return None;
            }
            let items: u64 = of.iter().map(|s| u64::from(s.items)).sum();
            let bytes: u64 = of.iter().map(|s| u64::from(s.len)).sum();
            Some(KindBytes {
                kind: k.name(),
                sections: of.len() as u32,
                items,
                bytes,
                bytes_per_item: per(bytes, items),
            })
        })
        .collect()
}

/// The bytes of a kind in a by-kind list (0 when absent).
pub fn bytes_of(kinds: &[KindBytes], kind: SectionKind) -> u64 {
    kinds
        .iter()
        .find(|k| k.kind == kind.name())
        .map_or(0, |k| k.bytes)
}

/// What a v2 blob spends in front of its sections: the header and one table entry per
/// section.
pub fn container_bytes(sections: usize) -> u64 {
    (HEADER_LEN + sections * ENTRY_LEN) as u64
}

/// `bytes / items`, 0 for no items.
pub fn per(bytes: u64, items: u64) -> f64 {
    if items == 0 {
        0.0
    } else {
        bytes as f64 / items as f64
    }
}

/// The bytes one part of the QPs takes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartBytes {
    /// `init`, `attr`, `rq`, `req`, `resp`, or `qpn+src_port` (the rest of a `QpStateV2`).
    pub part: &'static str,
    pub bytes: u64,
    pub bytes_per_qp: f64,
}

fn column<T: Serialize>(
    codec: &dyn Codec,
    qps: &[QpStateV2],
    part: impl Fn(&QpStateV2) -> T,
) -> Result<u64, CheckpointError> {
    let col: Vec<T> = qps.iter().map(part).collect();
    Ok(codec::encode_value(codec, &col)?.len() as u64)
}

/// Each part of `qps` measured by encoding it alone with `codec`: the part of every QP as one
/// sequence. One sequence rather than one value per QP, so that what a codec spends once per
/// value (an LZ4 frame, a JSON array's brackets) is counted once, as in a QP section, and a
/// compressing codec sees the repetition across QPs that it sees in the section. The parts
/// add up to roughly, not exactly, the QP sections' bytes: those interleave the parts.
pub fn qp_parts(codec: &dyn Codec, qps: &[QpStateV2]) -> Result<Vec<PartBytes>, CheckpointError> {
    let n = qps.len() as u64;
    let parts = [
        ("init", column(codec, qps, |q| q.init)?),
        ("attr", column(codec, qps, |q| q.attr)?),
        ("rq", column(codec, qps, |q| q.rq.clone())?),
        ("req", column(codec, qps, |q| q.req.clone())?),
        ("resp", column(codec, qps, |q| q.resp.clone())?),
        ("qpn+src_port", column(codec, qps, |q| (q.qpn, q.src_port))?),
    ];
    Ok(parts
        .into_iter()
        .map(|(part, bytes)| PartBytes {
            part,
            bytes,
            bytes_per_qp: per(bytes, n),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhca_device::checkpoint::codec::BINARY;

    fn info(kind: SectionKind, items: u32, len: u32) -> SectionInfo {
        SectionInfo {
            kind,
            items,
            offset: 0,
            len,
            crc32: 0,
        }
    }

    #[test]
    fn kinds_sum_their_sections_in_format_order() {
        let t = [
            info(SectionKind::Identity, 1, 40),
            info(SectionKind::Qps, 1024, 90_000),
            info(SectionKind::Qps, 10, 900),
            info(SectionKind::Pds, 2, 3),
        ];
        let k = by_kind(&t);
        let names: Vec<&str> = k.iter().map(|k| k.kind).collect();
        assert_eq!(names, ["identity", "pds", "qps"]);
        assert_eq!((k[2].sections, k[2].items, k[2].bytes), (2, 1034, 90_900));
        assert_eq!(k[2].bytes_per_item, 90_900.0 / 1034.0);
        assert_eq!(bytes_of(&k, SectionKind::Qps), 90_900);
        assert_eq!(bytes_of(&k, SectionKind::Mrs), 0);
        assert_eq!(container_bytes(4), 16 + 4 * 16);
    }

    #[test]
    fn no_qps_no_part_bytes_beyond_an_empty_sequence() {
        for p in qp_parts(BINARY, &[]).unwrap() {
            // postcard: an empty sequence is its length, one zero byte.
            assert_eq!((p.bytes, p.bytes_per_qp), (1, 0.0), "{}", p.part);
        }
    }
}
