//! Scatter/gather lists resolved to guest-physical segments, and payload copies between them.

use crate::memory::{copy_between, MemoryError, SharedMemory};
use crate::mr::{KeyError, Mr};
use crate::packet::{Payload, Segment, Segments};
use crate::table::Table;
use crate::types::{MemKey, PdHandle};
use crate::verbs::{Access, Sge};

/// Looks up `key` and checks an access of `[va, va + len)` under `pd`.
pub fn check_key(
    mrs: &Table<Mr>,
    key: MemKey,
    pd: PdHandle,
    va: u64,
    len: u64,
    need: Access,
) -> Result<&Mr, KeyError> {
    let mr = mrs.get(key.index()).ok_or(KeyError::BadKey)?;
    mr.check(key, pd, va, len, need)?;
    Ok(mr)
}

/// Total bytes an SGL describes (saturating; a hostile SGL cannot overflow it).
pub fn sgl_len(sgl: &[Sge]) -> u64 {
    sgl.iter()
        .fold(0u64, |acc, s| acc.saturating_add(s.len as u64))
}

/// Checks every SGE of `sgl` for `need` under `pd`.
pub fn check_sgl(mrs: &Table<Mr>, pd: PdHandle, sgl: &[Sge], need: Access) -> Result<(), KeyError> {
    for s in sgl {
        if s.len > 0 {
            check_key(mrs, s.lkey, pd, s.addr, s.len as u64, need)?;
        }
    }
    Ok(())
}

/// The guest-physical segments of bytes `[off, off + len)` of an SGL, checked for `need`.
pub fn sgl_segments(
    mrs: &Table<Mr>,
    pd: PdHandle,
    sgl: &[Sge],
    off: u64,
    len: u64,
    need: Access,
    out: &mut Segments,
) -> Result<(), KeyError> {
    let mut skip = off;
    let mut left = len;
    for s in sgl {
        if left == 0 {
            break;
        }
        let sl = s.len as u64;
        if skip >= sl {
            skip -= sl;
            continue;
        }
        let take = (sl - skip).min(left);
        let va = s.addr.checked_add(skip).ok_or(KeyError::Bounds)?;
        let mr = check_key(mrs, s.lkey, pd, va, take, need)?;
        mr.translate(va, take, out)?;
        left -= take;
        skip = 0;
    }
    if left > 0 {
        return Err(KeyError::Bounds);
    }
    Ok(())
}

/// The segments of `[va, va + len)` of one MR (already checked).
pub fn mr_segments(mr: &Mr, va: u64, len: u64) -> Result<Segments, KeyError> {
    let mut out = Segments::new();
    mr.translate(va, len, &mut out)?;
    Ok(out)
}

/// Copies a payload into `dst` segments of `dst_mem`. The segments must total the payload's
/// length.
pub fn scatter(
    payload: &Payload,
    dst_mem: &SharedMemory,
    dst: &[Segment],
) -> Result<(), MemoryError> {
    match payload {
        Payload::Bytes(b) => {
            let mut off = 0usize;
            for d in dst {
                let end = off + d.len as usize;
                let src = b.get(off..end).ok_or(MemoryError {
                    gpa: d.gpa,
                    len: d.len as u64,
                })?;
                dst_mem.write(d.gpa, src)?;
                off = end;
            }
            Ok(())
        }
        Payload::Gather { mem, segs, .. } => {
            let (mut si, mut so) = (0usize, 0u32);
            for d in dst {
                let mut dgpa = d.gpa;
                let mut dleft = d.len;
                while dleft > 0 {
                    let s = segs.get(si).ok_or(MemoryError {
                        gpa: dgpa,
                        len: dleft as u64,
                    })?;
                    let n = (s.len - so).min(dleft);
                    copy_between(mem, s.gpa + so as u64, dst_mem, dgpa, n as usize)?;
                    so += n;
                    if so == s.len {
                        si += 1;
                        so = 0;
                    }
                    dgpa += n as u64;
                    dleft -= n;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VecMemory;
    use crate::mr::MrMap;

    fn table() -> Table<Mr> {
        let mut t = Table::new(1, 10);
        t.insert(Mr {
            pd: PdHandle(1),
            iova: 0x1000,
            len: 0x1000,
            access: Access::LOCAL_WRITE,
            key: MemKey::from_parts(1, 0x11),
            map: MrMap::Contiguous { gpa: 0x1000 },
            valid: true,
            fast_reg: None,
        });
        t
    }

    #[test]
    fn sgl_segments_skip_offset_and_span_sges() {
        let t = table();
        let k = MemKey::from_parts(1, 0x11);
        let sgl = [
            Sge {
                addr: 0x1000,
                len: 16,
                lkey: k,
            },
            Sge {
                addr: 0x1800,
                len: 16,
                lkey: k,
            },
        ];
        let mut out = Segments::new();
        sgl_segments(&t, PdHandle(1), &sgl, 8, 16, Access::LOCAL_WRITE, &mut out).unwrap();
        assert_eq!(
            out.as_slice(),
            &[
                Segment {
                    gpa: 0x1008,
                    len: 8
                },
                Segment {
                    gpa: 0x1800,
                    len: 8
                }
            ]
        );
        let mut out = Segments::new();
        assert_eq!(
            sgl_segments(&t, PdHandle(1), &sgl, 8, 32, Access::empty(), &mut out),
            Err(KeyError::Bounds)
        );
        assert_eq!(
            sgl_segments(&t, PdHandle(2), &sgl, 0, 4, Access::empty(), &mut out),
            Err(KeyError::BadKey)
        );
    }

    #[test]
    fn scatter_gather_payload_across_uneven_segments() {
        let src = VecMemory::shared(64);
        let dst = VecMemory::shared(64);
        src.write(0, b"abcdefgh").unwrap();
        let p = Payload::Gather {
            mem: src.clone(),
            segs: vec![Segment { gpa: 0, len: 3 }, Segment { gpa: 3, len: 5 }].into(),
            len: 8,
        };
        scatter(
            &p,
            &dst,
            &[Segment { gpa: 10, len: 5 }, Segment { gpa: 40, len: 3 }],
        )
        .unwrap();
        let mut out = [0u8; 5];
        dst.read(10, &mut out).unwrap();
        assert_eq!(&out, b"abcde");
        let mut out = [0u8; 3];
        dst.read(40, &mut out).unwrap();
        assert_eq!(&out, b"fgh");
        assert!(scatter(
            &Payload::Bytes(vec![1; 4]),
            &dst,
            &[Segment { gpa: 62, len: 4 }]
        )
        .is_err());
    }
}
