//! The hostile guest's keys that change under work requests: memory windows and fast-register
//! MRs (commands ALLOC_MW, DEALLOC_MW, ALLOC_MR), and the WQEs that use them or came with
//! IBTA 1.5 (BIND_MW, REG_MR, ATOMIC_WRITE, FLUSH). Their fields are mostly plausible (a known
//! window or MR, the next key byte, a page list of real pages, an aligned address) so that the
//! device's later checks are reached, and sometimes anything. Separate from `hostile.rs`
//! because it is the one part that knows these objects.

use super::{Prog, World, DATA, FULL, H_MEM};
use vhca_device::{Access, FlushLevel, FlushPlacement, MemKey, SendOp};
use vhca_vhost::protocol::command::{body, Command, Status};

/// Rights a window or fast-register MR may be given, and sometimes some it may not.
fn rights(p: &mut Prog<'_>) -> Access {
    match p.u8() % 4 {
        0 => Access::REMOTE_READ,
        1 => Access::REMOTE_READ | Access::REMOTE_WRITE | Access::REMOTE_ATOMIC,
        2 => FULL,
        _ => Access::from_bits_truncate(u32::from(p.u16())),
    }
}

/// `k` with the next key byte, the same one or any (what a consumer puts in a new key).
fn rekey(p: &mut Prog<'_>, k: u32) -> MemKey {
    let k = MemKey(k);
    let byte = match p.u8() % 4 {
        0 | 1 => k.key_byte().wrapping_add(1),
        2 => k.key_byte(),
        _ => p.u8(),
    };
    MemKey::from_parts(k.index(), byte)
}

impl World {
    /// ALLOC_MW, DEALLOC_MW or ALLOC_MR; the keys join those the program picks from.
    pub(super) fn key_command(&mut self, p: &mut Prog<'_>) {
        let pd = p.pick(&self.pds);
        let cmd = match p.u8() % 3 {
            0 => Command::AllocMw {
                pd,
                mw_type: match p.u8() % 8 {
                    0..=3 => 2,
                    4..=6 => 1,
                    _ => p.u32(),
                },
            },
            1 => Command::DeallocMw {
                key: p.pick(&self.mws),
            },
            _ => Command::AllocMr {
                pd,
                max_num_sg: match p.u8() {
                    0xf0.. => p.u32(),
                    n => 1 + u32::from(n % 32),
                },
            },
        };
        let r = self.exec(&cmd);
        if r.status != Status::Ok {
            return;
        }
        match cmd {
            Command::DeallocMw { key } => {
                self.mws.retain(|&k| k != key);
                self.keys.retain(|&k| k != key);
            }
            Command::AllocMw { .. } | Command::AllocMr { .. } => {
                if let Ok(key) = body::read_u32(&r.body) {
                    if matches!(cmd, Command::AllocMw { .. }) {
                        self.mws.push(key);
                    } else {
                        self.frmrs.push(key);
                    }
                    self.keys.push(key);
                }
            }
            _ => {}
        }
    }

    /// A BIND_MW, REG_MR, ATOMIC_WRITE or FLUSH work request (`which` 0–3).
    pub(super) fn key_op(
        &mut self,
        p: &mut Prog<'_>,
        which: u8,
        rkey: MemKey,
        remote_addr: u64,
    ) -> SendOp {
        match which % 4 {
            0 => {
                let mw = p.pick(&self.mws);
                SendOp::BindMw {
                    mw: MemKey(mw),
                    rkey: rekey(p, mw),
                    mr: MemKey(p.pick(&self.keys)),
                    addr: u64::from(p.u16()) % DATA,
                    len: match p.u8() {
                        0xf0.. => p.u64(),
                        _ => u64::from(p.u16()),
                    },
                    access: rights(p),
                }
            }
            1 => {
                let mr = p.pick(&self.frmrs);
                let npages = match p.u8() {
                    0xf8.. => p.u32() % 1024,
                    n => 1 + u32::from(n % 8),
                };
                let page_shift = if p.u8() < 0xf0 { 12 } else { p.u8() };
                // Real pages of the hostile memory, or anything.
                let wild = p.u8() >= 0xe0;
                let list: Vec<u8> = (0..npages.min(64))
                    .flat_map(|_| {
                        let page = if wild {
                            p.u64()
                        } else {
                            (u64::from(p.u16()) * 4096) % H_MEM
                        };
                        page.to_le_bytes()
                    })
                    .collect();
                let page_list = self.alloc(list.len() as u64);
                let _ = self.hmem.write(page_list, &list);
                let iova = match p.u8() % 4 {
                    0 => 0,
                    1 => u64::from(p.u16()) << 12,
                    2 => u64::from(p.u16()),
                    _ => p.u64(),
                };
                let psize = 1u64 << (page_shift % 64);
                SendOp::RegMr {
                    mr: rekey(p, mr),
                    page_list,
                    npages,
                    page_shift,
                    iova,
                    len: match p.u8() {
                        0xf0.. => p.u64(),
                        n => (u64::from(npages).saturating_mul(psize))
                            .saturating_sub(u64::from(n) * 16)
                            .saturating_sub(iova % psize),
                    },
                    access: rights(p),
                }
            }
            2 => SendOp::AtomicWrite {
                remote_addr,
                rkey,
                value: p.u64(),
            },
            _ => SendOp::Flush {
                remote_addr,
                rkey,
                len: u32::from(p.u16()),
                placement: FlushPlacement::from_bits_truncate(p.u8()),
                level: if p.u8().is_multiple_of(2) {
                    FlushLevel::Range
                } else {
                    FlushLevel::Mr
                },
            },
        }
    }
}
