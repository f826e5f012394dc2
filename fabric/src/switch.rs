//! The in-process switch: forwards packets between VF ports by destination GID, in virtual
//! time, with seeded faults and counters.

use crate::faults::{draw, FaultConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use vhca_device::packet::{Opcode, Payload};
use vhca_device::{Gid, Nanos, Packet, Psn, Qpn};

/// A cheap hasher for the forwarding table: GIDs are not attacker-chosen keys here (the table
/// is filled by the world, not by packets), and SipHash cost a visible share of each packet.
#[derive(Default)]
pub struct GidHasher(u64);

impl Hasher for GidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

type GidMap<V> = HashMap<Gid, V, BuildHasherDefault<GidHasher>>;

/// A switch port; the world maps it to a VF.
pub type PortId = usize;

/// What the switch did with the packets it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SwitchCounters {
    pub received: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    /// Corrupted on the link and dropped by the receiving port's ICRC check.
    pub corrupted: u64,
    /// Corrupted and delivered (robustness testing only).
    pub corrupted_undetected: u64,
    pub no_route: u64,
    /// Dropped by a link cut on purpose (`cut`).
    pub cut: u64,
}

struct Pending {
    at: Nanos,
    seq: u64,
    port: PortId,
    pkt: Packet,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A packet's trip through the switch, for traces and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Dropped,
    Forwarded,
}

/// The in-process switch.
pub struct Switch {
    table: GidMap<PortId>,
    last_route: std::cell::Cell<Option<(Gid, PortId)>>,
    faults: FaultConfig,
    rng: ChaCha8Rng,
    latency_ns: u64,
    fifo: VecDeque<(PortId, Packet)>,
    heap: BinaryHeap<Pending>,
    seq: u64,
    cuts: HashSet<(Gid, Gid)>,
    pub counters: SwitchCounters,
}

impl Switch {
    pub fn new(seed: u64, faults: FaultConfig, latency_ns: u64) -> Switch {
        Switch {
            table: GidMap::default(),
            last_route: std::cell::Cell::new(None),
            faults,
            rng: ChaCha8Rng::seed_from_u64(seed),
            latency_ns,
            fifo: VecDeque::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            cuts: HashSet::new(),
            counters: SwitchCounters::default(),
        }
    }

    /// Points `gid` at `port` (a VF came up, or moved: the switch's table is what migration
    /// updates in-process).
    pub fn attach(&mut self, gid: Gid, port: PortId) {
        self.last_route.set(None);
        self.table.insert(gid, port);
    }

    pub fn detach(&mut self, gid: &Gid) {
        self.last_route.set(None);
        self.table.remove(gid);
    }

    pub fn route(&self, gid: &Gid) -> Option<PortId> {
        // The last destination first: traffic comes in bursts to one port.
        if let Some((g, p)) = self.last_route.get() {
            if g == *gid {
                return Some(p);
            }
        }
        let p = self.table.get(gid).copied();
        if let Some(p) = p {
            self.last_route.set(Some((*gid, p)));
        }
        p
    }

    pub fn set_faults(&mut self, faults: FaultConfig) {
        self.faults = faults;
    }

    pub fn faults(&self) -> &FaultConfig {
        &self.faults
    }

    /// Drops every packet from `a` to `b` until `heal` (a dead link, on purpose).
    pub fn cut(&mut self, a: Gid, b: Gid) {
        self.cuts.insert((a, b));
    }

    pub fn heal(&mut self, a: Gid, b: Gid) {
        self.cuts.remove(&(a, b));
    }

    /// An ideal link: no latency and no faults. Packets can then be handed over at once
    /// instead of queued ([`Switch::route_now`]).
    pub fn is_ideal(&self) -> bool {
        self.latency_ns == 0 && self.faults.is_none()
    }

    /// On an ideal link, the port a packet goes to right now (counted as received and
    /// delivered), or `None` when it is dropped (no route, cut link). The caller delivers it
    /// without the packet ever being queued: the benchmark path.
    pub fn route_now(&mut self, pkt: &Packet) -> Option<PortId> {
        self.counters.received += 1;
        let Some(port) = self.route(&pkt.dst_gid) else {
            self.counters.no_route += 1;
            return None;
        };
        if !self.cuts.is_empty() && self.cuts.contains(&(pkt.src_gid, pkt.dst_gid)) {
            self.counters.cut += 1;
            return None;
        }
        self.counters.delivered += 1;
        Some(port)
    }

    /// Takes a packet from a port at `now`.
    pub fn send(&mut self, now: Nanos, pkt: Packet) -> Event {
        self.counters.received += 1;
        let Some(port) = self.route(&pkt.dst_gid) else {
            self.counters.no_route += 1;
            return Event::Dropped;
        };
        if !self.cuts.is_empty() && self.cuts.contains(&(pkt.src_gid, pkt.dst_gid)) {
            self.counters.cut += 1;
            return Event::Dropped;
        }
        if self.latency_ns == 0 && self.faults.is_none() {
            self.fifo.push_back((port, pkt));
            return Event::Forwarded;
        }
        let fate = draw(&self.faults, &mut self.rng);
        if fate.drop {
            self.counters.dropped += 1;
            return Event::Dropped;
        }
        if fate.corrupt {
            self.counters.corrupted += 1;
            return Event::Dropped;
        }
        let mut pkt = pkt;
        if fate.corrupt_undetected {
            self.counters.corrupted_undetected += 1;
            mutate(&mut pkt, &mut self.rng);
        }
        if fate.extra_delay_ns > 0 {
            self.counters.delayed += 1;
        }
        if fate.duplicate {
            self.counters.duplicated += 1;
            let at = now.saturating_add(self.latency_ns + fate.dup_extra_delay_ns);
            self.push(at, port, pkt.clone());
        }
        let at = now.saturating_add(self.latency_ns + fate.extra_delay_ns);
        self.push(at, port, pkt);
        Event::Forwarded
    }

    fn push(&mut self, at: Nanos, port: PortId, pkt: Packet) {
        self.seq += 1;
        self.heap.push(Pending {
            at,
            seq: self.seq,
            port,
            pkt,
        });
    }

    /// The next packet due at or before `now`, with the port it leaves on.
    pub fn poll_deliver(&mut self, now: Nanos) -> Option<(PortId, Packet)> {
        if let Some(x) = self.fifo.pop_front() {
            self.counters.delivered += 1;
            return Some(x);
        }
        if self.heap.peek().is_some_and(|p| p.at <= now) {
            let p = self.heap.pop()?;
            self.counters.delivered += 1;
            return Some((p.port, p.pkt));
        }
        None
    }

    /// When the next packet is due, if any is in flight.
    pub fn next_event(&self, now: Nanos) -> Option<Nanos> {
        if !self.fifo.is_empty() {
            return Some(now);
        }
        self.heap.peek().map(|p| p.at)
    }

    pub fn in_flight(&self) -> usize {
        self.fifo.len() + self.heap.len()
    }
}

/// Flips something in a packet: a header field or a payload byte.
pub fn mutate(pkt: &mut Packet, rng: &mut ChaCha8Rng) {
    match rng.gen_range(0..8) {
        0 => pkt.bth.opcode = Opcode(rng.gen()),
        1 => pkt.bth.psn = Psn::new(rng.gen()),
        2 => pkt.bth.dest_qp = Qpn::new(rng.gen()),
        3 => pkt.bth.pkey = rng.gen(),
        4 => pkt.bth.ack_req = !pkt.bth.ack_req,
        5 => {
            if let Some(r) = &mut pkt.ext.reth {
                r.va ^= 1 << rng.gen_range(0..64);
                r.len ^= 1 << rng.gen_range(0..32);
            }
        }
        6 => {
            if let Some(a) = &mut pkt.ext.aeth {
                a.syndrome = vhca_device::packet::Syndrome::from_byte(rng.gen());
            }
        }
        _ => {
            pkt.payload.materialize();
            if let Payload::Bytes(b) = &mut pkt.payload {
                if !b.is_empty() {
                    let i = rng.gen_range(0..b.len());
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{FaultConfig, FaultLevel};
    use vhca_device::packet::{Bth, ExtHeaders};

    fn pkt(dst: Gid, psn: u32) -> Packet {
        Packet {
            src_gid: Gid::from_ipv4([10, 0, 0, 1]),
            dst_gid: dst,
            src_port: 0,
            bth: Bth::new(Opcode::RC_SEND_ONLY, Qpn(17), Psn(psn)),
            ext: ExtHeaders::default(),
            payload: Payload::empty(),
        }
    }

    #[test]
    fn routes_by_gid_and_counts_unknown_destinations() {
        let mut s = Switch::new(1, FaultConfig::default(), 0);
        let g = Gid::from_ipv4([10, 0, 0, 2]);
        s.attach(g, 3);
        s.send(Nanos(0), pkt(g, 1));
        s.send(Nanos(0), pkt(Gid::from_ipv4([10, 0, 0, 9]), 2));
        assert_eq!(
            s.poll_deliver(Nanos(0)).map(|(p, k)| (p, k.bth.psn)),
            Some((3, Psn(1)))
        );
        assert!(s.poll_deliver(Nanos(0)).is_none());
        assert_eq!(s.counters.no_route, 1);
    }

    #[test]
    fn latency_holds_packets_until_due_in_order() {
        let mut s = Switch::new(1, FaultConfig::default(), 1000);
        let g = Gid::from_ipv4([10, 0, 0, 2]);
        s.attach(g, 0);
        s.send(Nanos(0), pkt(g, 1));
        s.send(Nanos(10), pkt(g, 2));
        assert!(s.poll_deliver(Nanos(999)).is_none());
        assert_eq!(s.next_event(Nanos(999)), Some(Nanos(1000)));
        assert_eq!(s.poll_deliver(Nanos(1010)).unwrap().1.bth.psn, Psn(1));
        assert_eq!(s.poll_deliver(Nanos(1010)).unwrap().1.bth.psn, Psn(2));
    }

    #[test]
    fn heavy_faults_are_reproducible_from_the_seed() {
        let run = |seed| {
            let mut s = Switch::new(seed, FaultConfig::level(FaultLevel::Heavy), 1000);
            let g = Gid::from_ipv4([10, 0, 0, 2]);
            s.attach(g, 0);
            for i in 0..2000 {
                s.send(Nanos(i * 10), pkt(g, i as u32));
            }
            let mut order = Vec::new();
            while let Some((_, p)) = s.poll_deliver(Nanos(u64::MAX)) {
                order.push(p.bth.psn.0);
            }
            (order, s.counters.clone())
        };
        let (a, ca) = run(5);
        let (b, cb) = run(5);
        assert_eq!(a, b);
        assert_eq!(ca, cb);
        assert!(ca.dropped > 100 && ca.duplicated > 0 && ca.delayed > 0);
        assert!(
            a.windows(2).any(|w| w[0] > w[1]),
            "some packets were reordered"
        );
        let (c, _) = run(6);
        assert_ne!(a, c);
    }

    #[test]
    fn cut_links_drop_one_direction() {
        let mut s = Switch::new(1, FaultConfig::default(), 0);
        let a = Gid::from_ipv4([10, 0, 0, 1]);
        let b = Gid::from_ipv4([10, 0, 0, 2]);
        s.attach(a, 0);
        s.attach(b, 1);
        s.cut(a, b);
        assert_eq!(s.send(Nanos(0), pkt(b, 1)), Event::Dropped);
        let mut back = pkt(a, 2);
        back.src_gid = b;
        assert_eq!(s.send(Nanos(0), back), Event::Forwarded);
        s.heal(a, b);
        assert_eq!(s.send(Nanos(0), pkt(b, 3)), Event::Forwarded);
    }
}
