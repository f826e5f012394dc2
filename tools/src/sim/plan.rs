//! A seed's plan: topology, connections, workload sizes and the faults injected on purpose.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use vhca_device::{Mtu, Nanos};

#[derive(Clone, Debug)]
pub struct RcPlan {
    /// Indices into `Plan::vfs`.
    pub a: usize,
    pub b: usize,
    pub mtu: Mtu,
    /// Largest message either side sends.
    pub max_size: u32,
    pub depth: [usize; 2],
    pub ops: [usize; 2],
    /// Receive buffers each side keeps posted: fewer than the peer's depth provokes RNR NAKs.
    pub rq_slots: [usize; 2],
    /// (side, op index): that op uses a bad rkey on purpose.
    pub bad_rkey_at: Option<(usize, usize)>,
    pub timeout: u8,
    pub max_rd_atomic: u8,
    /// Every opcode the device has. Off: only the nine vhca had when the v1 checkpoint
    /// samples were recorded (the first nine of `rc::KINDS`), so `vhca state`'s sample, built from this
    /// workload, stays the state those fixtures hold.
    pub all_ops: bool,
    /// Each side also registers and invalidates a fast-register MR and binds and invalidates a
    /// type 2 window. Off in `vhca state`'s sample (see `all_ops`).
    pub local_keys: bool,
    /// With `local_keys`, the peer's requests through them sometimes use a stale key or a
    /// range outside, which ends the connection (REMOTE_ACCESS_ERROR). Off in the demo.
    pub remote_key_errors: bool,
}

/// A UC connection: both sides send SENDs and WRITEs (with and without immediates).
#[derive(Clone, Debug)]
pub struct UcPlan {
    pub a: usize,
    pub b: usize,
    pub mtu: Mtu,
    pub max_size: u32,
    pub ops: [usize; 2],
}

#[derive(Clone, Debug)]
pub struct UdPlan {
    pub members: Vec<usize>,
    pub ops: usize,
    /// Sends with a wrong Q_Key on purpose: must never be received (on QP1, which sends the
    /// GSI Q_Key whatever the WR says, they must be).
    pub bad_qkey_every: Option<usize>,
    /// The members' QP1 (GSI) instead of a UD QP: one member per VF, MAD-sized datagrams.
    pub gsi: bool,
}

/// One migration: at `at`, VF `vf` (index into `Plan::vfs`) leaves its PF; after `blackout`
/// it resumes on PF `dest_pf`.
#[derive(Clone, Copy, Debug)]
pub struct PlannedMigration {
    pub at: Nanos,
    pub vf: usize,
    pub blackout_ns: u64,
    pub dest_pf: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// (pf, number of VFs) for each PF.
    pub pfs: Vec<u16>,
    /// (pf, vf index) of every VF.
    pub vfs: Vec<(usize, u16)>,
    pub rc: Vec<RcPlan>,
    pub ud: Vec<UdPlan>,
    pub uc: Vec<UcPlan>,
    /// RC connection index → virtual time at which its VF pair's link is cut.
    pub cuts: Vec<(usize, Nanos)>,
    /// VFs that migrate mid-run (`vhca sim --migrate`).
    pub migrations: Vec<PlannedMigration>,
    pub vf_mem_bytes: usize,
}

fn size(rng: &mut ChaCha8Rng, max: u32) -> u32 {
    let r = rng.gen_range(0..100);
    let s = if r < 35 {
        rng.gen_range(0..=64)
    } else if r < 65 {
        rng.gen_range(65..=4096)
    } else if r < 92 {
        rng.gen_range(4097..=65_536)
    } else {
        rng.gen_range(65_537..=1 << 20)
    };
    s.min(max)
}

impl Plan {
    pub fn draw(rng: &mut ChaCha8Rng) -> Plan {
        let npf = rng.gen_range(2..=3);
        let pfs: Vec<u16> = (0..npf).map(|_| rng.gen_range(1..=3)).collect();
        let vfs: Vec<(usize, u16)> = pfs
            .iter()
            .enumerate()
            .flat_map(|(p, &n)| (0..n).map(move |v| (p, v)))
            .collect();
        let nrc = rng.gen_range(3..=8);
        let mut large = 0;
        let rc = (0..nrc)
            .map(|_| {
                let a = rng.gen_range(0..vfs.len());
                // Mostly different VFs; sometimes a loopback connection inside one VF.
                let b = if rng.gen_bool(0.1) {
                    a
                } else {
                    rng.gen_range(0..vfs.len())
                };
                let is_large = large < 2 && rng.gen_bool(0.3);
                large += is_large as usize;
                let max_size = if is_large { 1 << 20 } else { 65_536 };
                let depth = [rng.gen_range(1..=6), rng.gen_range(1..=6)];
                let ops = [rng.gen_range(5..=30), rng.gen_range(0..=30)];
                RcPlan {
                    a,
                    b,
                    mtu: Mtu::ALL[rng.gen_range(0..5)],
                    max_size,
                    depth,
                    ops,
                    rq_slots: [
                        rng.gen_range(1..=depth[1] + 2),
                        rng.gen_range(1..=depth[0] + 2),
                    ],
                    bad_rkey_at: if rng.gen_bool(0.05) {
                        let side = rng.gen_range(0..2);
                        Some((side, rng.gen_range(0..ops[side].max(1))))
                    } else {
                        None
                    },
                    timeout: rng.gen_range(8..=12),
                    max_rd_atomic: rng.gen_range(1..=8),
                    all_ops: true,
                    local_keys: true,
                    remote_key_errors: true,
                }
            })
            .collect::<Vec<_>>();
        let nud = rng.gen_range(2..=4);
        let ud = vec![UdPlan {
            members: (0..nud).map(|_| rng.gen_range(0..vfs.len())).collect(),
            ops: rng.gen_range(5..=40),
            bad_qkey_every: rng.gen_bool(0.2).then(|| rng.gen_range(3..=10)),
            gsi: false,
        }];
        let cuts = if rng.gen_bool(0.05) {
            vec![(
                rng.gen_range(0..rc.len()),
                Nanos(rng.gen_range(0..5_000_000)),
            )]
        } else {
            Vec::new()
        };
        let uc = (0..rng.gen_range(1..=3))
            .map(|_| {
                let a = rng.gen_range(0..vfs.len());
                UcPlan {
                    a,
                    b: if rng.gen_bool(0.1) {
                        a
                    } else {
                        rng.gen_range(0..vfs.len())
                    },
                    mtu: Mtu::ALL[rng.gen_range(0..5)],
                    max_size: if rng.gen_bool(0.3) { 1 << 18 } else { 16_384 },
                    ops: [rng.gen_range(5..=40), rng.gen_range(0..=40)],
                }
            })
            .collect();
        // QP1 of a few distinct VFs (a VF has one): MADs between them.
        let mut ud = ud;
        if vfs.len() >= 2 {
            let mut members: Vec<usize> = (0..vfs.len()).collect();
            members.shuffle(rng);
            members.truncate(rng.gen_range(2..=vfs.len().min(4)));
            ud.push(UdPlan {
                members,
                ops: rng.gen_range(5..=40),
                bad_qkey_every: rng.gen_bool(0.3).then(|| rng.gen_range(3..=10)),
                gsi: true,
            });
        }
        Plan {
            pfs,
            vfs,
            rc,
            ud,
            uc,
            cuts,
            migrations: Vec::new(),
            vf_mem_bytes: 160 << 20,
        }
    }

    /// Adds 1–4 migrations at random moments of the first few milliseconds, each with a
    /// blackout of 20 µs to 2 ms, to random PFs (the same PF included: a move between hosts
    /// whose PFs have the same number).
    pub fn draw_migrations(&mut self, rng: &mut ChaCha8Rng) {
        let n = rng.gen_range(1..=4);
        for _ in 0..n {
            self.migrations.push(PlannedMigration {
                at: Nanos(rng.gen_range(0..6_000_000)),
                vf: rng.gen_range(0..self.vfs.len()),
                blackout_ns: rng.gen_range(20_000..=2_000_000),
                dest_pf: rng.gen_range(0..self.pfs.len()),
            });
        }
        self.migrations.sort_by_key(|m| m.at);
    }

    /// A message size from the run's distribution: mostly small, some up to 1 MiB.
    pub fn size_of(rng: &mut ChaCha8Rng, max: u32) -> u32 {
        size(rng, max)
    }
}
