//! Random streams and the few distributions the simulator needs (no `rand_distr`).
//!
//! Every stream is a ChaCha8 generator keyed by the configured seed and a domain (what the stream is
//! for), with the ChaCha stream number as the index inside that domain (the customer index, the
//! campaign index…). Streams are independent of each other and of the order in which they are used,
//! which is what lets a customer be generated alone, in a streaming way, and identically every time.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator used everywhere.
pub(crate) type SimRng = ChaCha8Rng;

/// Domain of a customer's profile stream (cheap facts: ISP, devices, hard cases).
pub(crate) const PROFILE: u64 = 1;
/// Domain of a customer's timeline stream (sessions and their events).
pub(crate) const TIMELINE: u64 = 2;
/// Domain of the shared world (carrier NAT pools, offices, hotels).
pub(crate) const WORLD: u64 = 3;
/// Domain of the campaign plan.
pub(crate) const PLAN: u64 = 4;
/// Domain of the attacker's actions on one account (index: campaign << 32 | customer).
pub(crate) const ATTACK: u64 = 5;

/// SplitMix64 finaliser: a bijective 64-bit mixer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream `index` of domain `domain` for seed `seed`.
pub(crate) fn stream(seed: u64, domain: u64, index: u64) -> SimRng {
    let mut r = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(domain)));
    r.set_stream(index);
    r
}

/// A uniform float in [0, 1).
#[inline]
pub(crate) fn unit(rng: &mut SimRng) -> f64 {
    rng.random::<f64>()
}

/// True with probability `p`.
#[inline]
pub(crate) fn chance(rng: &mut SimRng, p: f64) -> bool {
    unit(rng) < p
}

/// A uniform integer in `lo..=hi` (`lo` when `hi < lo`).
#[inline]
pub(crate) fn between(rng: &mut SimRng, lo: u32, hi: u32) -> u32 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

/// A uniform i64 in `lo..hi` (`lo` when empty).
#[inline]
pub(crate) fn span(rng: &mut SimRng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

/// An exponential variate with the given mean.
#[inline]
pub(crate) fn exp(rng: &mut SimRng, mean: f64) -> f64 {
    -mean * (1.0 - unit(rng)).ln()
}

/// A standard normal variate (Box–Muller, one of the pair).
pub(crate) fn normal(rng: &mut SimRng) -> f64 {
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal variate with the given median and log-scale `sigma`.
pub(crate) fn lognormal(rng: &mut SimRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// A Poisson variate (Knuth for small means, rounded normal for large ones).
pub(crate) fn poisson(rng: &mut SimRng, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        let x = mean + mean.sqrt() * normal(rng);
        return x.round().max(0.0) as u32;
    }
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = unit(rng);
    while p > limit {
        k += 1;
        p *= unit(rng);
    }
    k
}

/// An index drawn with probability proportional to `weights` (all non-negative, sum > 0).
pub(crate) fn weighted(rng: &mut SimRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = unit(rng) * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| stream(7, PROFILE, 3).random()).collect();
        let b: Vec<u64> = (0..4).map(|_| stream(7, PROFILE, 3).random()).collect();
        assert_eq!(a, b);
        let x: u64 = stream(7, PROFILE, 3).random();
        let y: u64 = stream(7, PROFILE, 4).random();
        let z: u64 = stream(7, TIMELINE, 3).random();
        let w: u64 = stream(8, PROFILE, 3).random();
        assert!(x != y && x != z && x != w);
    }

    #[test]
    fn distributions_have_the_right_means() {
        let mut r = stream(1, 99, 0);
        let n = 20_000;
        let m: f64 = (0..n).map(|_| exp(&mut r, 3.0)).sum::<f64>() / n as f64;
        assert!((m - 3.0).abs() < 0.15, "{m}");
        let p: f64 = (0..n).map(|_| poisson(&mut r, 2.5) as f64).sum::<f64>() / n as f64;
        assert!((p - 2.5).abs() < 0.1, "{p}");
        let q: f64 = (0..n).map(|_| poisson(&mut r, 50.0) as f64).sum::<f64>() / n as f64;
        assert!((q - 50.0).abs() < 0.5, "{q}");
        let mut hits = [0u32; 3];
        for _ in 0..n {
            hits[weighted(&mut r, &[1.0, 0.0, 3.0])] += 1;
        }
        assert_eq!(hits[1], 0);
        assert!((hits[2] as f64 / n as f64 - 0.75).abs() < 0.02);
    }
}
