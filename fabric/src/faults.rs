//! Seeded fault injection for the in-process switch.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Probabilities (0.0–1.0) and magnitudes of the faults the switch injects per packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultConfig {
    pub drop: f64,
    pub duplicate: f64,
    /// Held back by up to `reorder_window_ns` so later packets overtake it.
    pub reorder: f64,
    pub reorder_window_ns: u64,
    /// Extra latency of up to `max_delay_ns`.
    pub delay: f64,
    pub max_delay_ns: u64,
    /// Bits flipped on the wire; the receiving port's ICRC check drops the packet.
    pub corrupt: f64,
    /// Bits flipped and delivered anyway (a broken ICRC): for robustness tests only, since it
    /// makes silent data corruption possible.
    pub corrupt_undetected: f64,
}

/// The named levels `vhca sim --faults` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum FaultLevel {
    None,
    Light,
    Heavy,
}

impl std::str::FromStr for FaultLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(FaultLevel::None),
            "light" => Ok(FaultLevel::Light),
            "heavy" => Ok(FaultLevel::Heavy),
            _ => Err(format!("unknown fault level {s:?} (none, light, heavy)")),
        }
    }
}

impl std::fmt::Display for FaultLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultLevel::None => "none",
            FaultLevel::Light => "light",
            FaultLevel::Heavy => "heavy",
        })
    }
}

impl FaultConfig {
    pub fn level(level: FaultLevel) -> FaultConfig {
        match level {
            FaultLevel::None => FaultConfig::default(),
            FaultLevel::Light => FaultConfig {
                drop: 0.01,
                duplicate: 0.005,
                reorder: 0.005,
                reorder_window_ns: 20_000,
                delay: 0.01,
                max_delay_ns: 50_000,
                corrupt: 0.001,
                corrupt_undetected: 0.0,
            },
            // Issue #2: at least 10% loss plus duplication, reordering and delay.
            FaultLevel::Heavy => FaultConfig {
                drop: 0.10,
                duplicate: 0.03,
                reorder: 0.03,
                reorder_window_ns: 50_000,
                delay: 0.05,
                max_delay_ns: 200_000,
                corrupt: 0.01,
                corrupt_undetected: 0.0,
            },
        }
    }

    pub fn is_none(&self) -> bool {
        *self == FaultConfig::default()
    }
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fate {
    pub drop: bool,
    pub duplicate: bool,
    pub corrupt: bool,
    pub corrupt_undetected: bool,
    pub extra_delay_ns: u64,
    pub dup_extra_delay_ns: u64,
}

/// Draws a packet's fate. Every draw is made whatever the outcome, so that a seed's stream of
/// random numbers does not depend on earlier fates (replays stay aligned).
pub fn draw(cfg: &FaultConfig, rng: &mut ChaCha8Rng) -> Fate {
    let mut roll = |p: f64| rng.gen::<f64>() < p;
    let drop = roll(cfg.drop);
    let duplicate = roll(cfg.duplicate);
    let reorder = roll(cfg.reorder);
    let delay = roll(cfg.delay);
    let corrupt = roll(cfg.corrupt);
    let corrupt_undetected = roll(cfg.corrupt_undetected);
    let r1 = rng.gen_range(0..=cfg.reorder_window_ns.max(1));
    let r2 = rng.gen_range(0..=cfg.max_delay_ns.max(1));
    let r3 = rng.gen_range(0..=cfg.reorder_window_ns.max(cfg.max_delay_ns).max(1));
    Fate {
        drop,
        duplicate,
        corrupt,
        corrupt_undetected,
        extra_delay_ns: if reorder { r1 } else { 0 } + if delay { r2 } else { 0 },
        dup_extra_delay_ns: r3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn heavy_drops_about_ten_percent_and_is_seeded() {
        let cfg = FaultConfig::level(FaultLevel::Heavy);
        let mut a = ChaCha8Rng::seed_from_u64(7);
        let mut b = ChaCha8Rng::seed_from_u64(7);
        let fates: Vec<Fate> = (0..20_000).map(|_| draw(&cfg, &mut a)).collect();
        let again: Vec<Fate> = (0..20_000).map(|_| draw(&cfg, &mut b)).collect();
        assert_eq!(fates, again);
        let drops = fates.iter().filter(|f| f.drop).count();
        assert!((1800..2200).contains(&drops), "{drops}");
        assert!(fates.iter().any(|f| f.duplicate));
        assert!(fates.iter().any(|f| f.extra_delay_ns > 0));
        let none = FaultConfig::level(FaultLevel::None);
        for _ in 0..1000 {
            let f = draw(&none, &mut a);
            assert!(!f.drop && !f.duplicate && !f.corrupt && f.extra_delay_ns == 0);
        }
    }
}
