//! `largest_remainder.v2`: a deal's pool, its weights and every split in exact integer
//! arithmetic (docs/commission-rules.md, "The arithmetic").
//!
//! A percentage has at most six decimals, so p % of an amount is `amount × n / 10^8`
//! with `n = p × 10^6` a whole number ([`units`]): an exact pool is a numerator over
//! [`POOL_DENOMINATOR`]. Share weights are whole numbers too (every weight is scaled by
//! the number of intermediaries, who share equally). A split compares remainders over
//! one common divisor, so equal fractions are equal and a tie goes to the lower hop.
//!
//! Bounds (all far inside `i128`): revenue and every amount in rules ≤ 10^15 minor
//! units; a percentage ≤ 10^8 units; a pool numerator ≤ (2 + 2 × `MAX_SPIFFS`) × 10^23;
//! a weight ≤ [`MAX_WEIGHT`]; a product `total × weight` ≤ 10^30.

use settle_mandates::money::MAX_MINOR_UNITS;

use crate::model::{Percent, PoolRule, Position, ProgramSpec, SplitRule, TierMode};
use crate::rules::Deal;

/// The divisor of every exact pool: p % of x minor units is `x × units(p) / 10^8`.
pub const POOL_DENOMINATOR: i128 = 100_000_000;

/// The largest weight [`allocate`] takes: a clawback's weights are what hops hold.
pub const MAX_WEIGHT: i128 = MAX_MINOR_UNITS as i128;

/// A percentage as a whole number of 10^-6 percent (`"12.5"` → 12,500,000): exact, as a
/// percentage has at most six decimals.
#[must_use]
pub fn units(p: Percent) -> i128 {
    let v = p.value();
    let shift = 6_u32.checked_sub(v.scale()).unwrap_or_else(|| unreachable!("a percentage has at most 6 decimals"));
    v.mantissa() * 10_i128.pow(shift)
}

/// A deal's exact pool, `numerator / POOL_DENOMINATOR` minor units (before rounding),
/// and the whole-number weight of each hop (hop 0 = originator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactPool {
    /// The pool's numerator over [`POOL_DENOMINATOR`].
    pub numerator: i128,
    /// Weight of each hop; only ratios matter.
    pub weights: Vec<i128>,
}

/// The exact pool of a deal and the hop weights, from the rules.
#[must_use]
pub fn exact_pool(spec: &ProgramSpec, d: &Deal) -> ExactPool {
    let p = &spec.pool;
    let revenue = i128::from(d.revenue);
    match &spec.split {
        SplitRule::Levels { rates } => {
            // Level 1 = closer = last hop; hop i is level hops − i. Revenue is common to
            // every level amount, so the rates alone are the weights.
            let weights: Vec<i128> = (0..d.hops).map(|i| rates.get(d.hops - 1 - i).map_or(0, |r| units(*r))).collect();
            let pool = revenue * weights.iter().sum::<i128>() + spiffs(spec, d, revenue);
            ExactPool { numerator: bounded(p, pool), weights }
        }
        SplitRule::Shares { originator, intermediaries, closer, remaining } => {
            let mut pool = p.percent.map_or(0, |pc| revenue * units(pc));
            if !p.tiers.is_empty() {
                pool += tiers(p, d, revenue);
            }
            pool += p.flat.map_or(0, |f| i128::from(f) * POOL_DENOMINATOR);
            pool += spiffs(spec, d, revenue);
            ExactPool {
                numerator: bounded(p, pool),
                weights: share_weights(d.hops, *originator, *intermediaries, *closer, *remaining),
            }
        }
    }
}

/// The tier part of a pool: the closer's volume before this deal and after it decide
/// the rate (`tiered`) or the bands (`marginal`).
fn tiers(p: &PoolRule, d: &Deal, revenue: i128) -> i128 {
    let before = i128::from(d.closer_volume_before);
    let after = before + revenue;
    match p.tier_mode {
        Some(TierMode::Marginal) => {
            let mut sum = 0;
            for (i, t) in p.tiers.iter().enumerate() {
                let band_end = p.tiers.get(i + 1).map_or(i128::MAX, |n| i128::from(n.from));
                let (a, b) = (before.max(i128::from(t.from)), after.min(band_end));
                if b > a {
                    sum += (b - a) * units(t.percent);
                }
            }
            sum
        }
        _ => {
            let rate = p.tiers.iter().rev().find(|t| i128::from(t.from) <= after).map_or(0, |t| units(t.percent));
            revenue * rate
        }
    }
}

fn spiffs(spec: &ProgramSpec, d: &Deal, revenue: i128) -> i128 {
    spec.pool
        .spiffs
        .iter()
        .filter(|s| s.from <= d.occurred_at && d.occurred_at < s.until)
        .map(|s| s.percent.map_or(0, |p| revenue * units(p)) + s.flat.map_or(0, |f| i128::from(f) * POOL_DENOMINATOR))
        .sum()
}

/// `cap` (at most), then `floor` (at least), on the exact pool.
fn bounded(p: &PoolRule, mut pool: i128) -> i128 {
    if let Some(c) = p.cap {
        pool = pool.min(i128::from(c) * POOL_DENOMINATOR);
    }
    if let Some(f) = p.floor {
        pool = pool.max(i128::from(f) * POOL_DENOMINATOR);
    }
    pool
}

/// Whole-number weights by position, each scaled by k = the number of intermediaries
/// (at least 1), so that their equal shares stay whole: absent positions' shares and the
/// unassigned rest go to `remaining`; a sole partner weighs 1.
#[must_use]
pub fn share_weights(
    hops: usize,
    originator: Percent,
    intermediaries: Percent,
    closer: Percent,
    remaining: Position,
) -> Vec<i128> {
    match hops {
        0 => return Vec::new(),
        1 => return vec![1],
        _ => {}
    }
    let mids = hops - 2;
    let k = i128::try_from(mids.max(1)).unwrap_or_else(|_| unreachable!("at most MAX_HOPS hops"));
    let (o, i, c) = (units(originator), units(intermediaries), units(closer));
    let mut w = vec![0; hops];
    w[0] = o * k;
    w[hops - 1] = c * k;
    // 100 % is 10^8 units; the shares total at most that (validated at publication).
    let mut rest = POOL_DENOMINATOR - o - c;
    if mids > 0 {
        // Each of k intermediaries: i / k, times k.
        w[1..hops - 1].fill(i);
        rest -= i;
    }
    match remaining {
        Position::Originator => w[0] += rest * k,
        Position::Intermediaries if mids > 0 => w[1..hops - 1].iter_mut().for_each(|x| *x += rest),
        Position::Closer | Position::Intermediaries => w[hops - 1] += rest * k,
    }
    w
}

/// Splits `total` minor units (≥ 0) in proportion to `weights` (each in
/// `0..=MAX_WEIGHT`) by largest remainder, exactly: every exact share `total × wᵢ / Σw`
/// is floored, and the leftover units go one each to the largest remainders, compared
/// over their common divisor Σw; equal remainders go to the lower index. All weights
/// zero: everything to the last part. Σ result = total, always.
#[must_use]
pub fn allocate(total: i64, weights: &[i128]) -> Vec<i64> {
    assert!((0..=MAX_MINOR_UNITS).contains(&total), "allocate takes a total in 0..=MAX_MINOR_UNITS");
    assert!(weights.iter().all(|w| (0..=MAX_WEIGHT).contains(w)), "allocate takes weights in 0..=MAX_WEIGHT");
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let sum: i128 = weights.iter().sum();
    let mut out = vec![0i64; n];
    if sum == 0 {
        out[n - 1] = total;
        return out;
    }
    let t = i128::from(total);
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(n);
    let mut given = 0i64;
    for (i, w) in weights.iter().enumerate() {
        let product = t * w;
        let share = i64::try_from(product / sum).unwrap_or_else(|_| unreachable!("a share is at most the total"));
        out[i] = share;
        given += share;
        remainders.push((product % sum, i));
    }
    let left = usize::try_from(total - given).unwrap_or_else(|_| unreachable!("floors never exceed the total"));
    assert!(left < n, "largest remainder leaves fewer units than parts");
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in &remainders[..left] {
        out[i] += 1;
    }
    assert_eq!(out.iter().sum::<i64>(), total, "a split sums to its total");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn pct(s: &str) -> Percent {
        Percent::try_from(s.parse::<Decimal>().unwrap()).unwrap()
    }

    #[test]
    fn allocate_examples() {
        let check = |total: i64, w: &[i128], want: &[i64]| assert_eq!(allocate(total, w), want, "{total} by {w:?}");
        check(100, &[1, 1, 1], &[34, 33, 33]); // tie → lowest index
        check(1000, &[50, 30, 20], &[500, 300, 200]);
        check(1, &[20, 30, 50], &[0, 0, 1]); // largest remainder wins
        check(7, &[0, 0], &[0, 7]);
        check(0, &[1, 2], &[0, 0]);
        // Clawback 39 over holds 35/23/59 of 117: every exact part has remainder 2/3 of a
        // unit (13.67, 7.67, 19.67); the one unit left goes to the lowest hop.
        check(39, &[35, 23, 59], &[12, 8, 19]);
        // Levels 40/10/10 on 3 hops: pool 280 by 10 : 10 : 40, remainders 2/3, 2/3, 2/3.
        check(280, &[10, 10, 40], &[47, 47, 186]);
    }

    #[test]
    fn share_weights_are_whole_and_put_the_rest_where_named() {
        let w = |h, r| share_weights(h, pct("30"), pct("20"), pct("40"), r);
        let m = 1_000_000; // one percent
        assert_eq!(w(3, Position::Closer), vec![30 * m, 20 * m, 50 * m]);
        assert_eq!(w(2, Position::Closer), vec![30 * m, 70 * m]);
        assert_eq!(w(2, Position::Originator), vec![60 * m, 40 * m]);
        // Two intermediaries: every weight × 2; each has 20 / 2 plus the rest 10 / 2.
        assert_eq!(w(4, Position::Intermediaries), vec![60 * m, 30 * m, 30 * m, 80 * m]);
        assert_eq!(w(1, Position::Originator), vec![1]);
        // Three intermediaries share 10 %: 3.333…% each, kept exact as 10 × 3 / 3.
        let v = share_weights(5, pct("30"), pct("10"), pct("40"), Position::Closer);
        assert_eq!(v, vec![90 * m, 10 * m, 10 * m, 10 * m, 180 * m]);
        // Shares 30/40/10, rest to the closer, 5 hops, pool 18: exact 5.4, 2.4, 2.4, 2.4, 5.4.
        let v = share_weights(5, pct("30"), pct("40"), pct("10"), Position::Closer);
        assert_eq!(allocate(18, &v), vec![6, 3, 2, 2, 5]);
    }

    #[test]
    fn units_are_exact() {
        assert_eq!(units(pct("10")), 10_000_000);
        assert_eq!(units(pct("33.333333")), 33_333_333);
        assert_eq!(units(pct("0.000001")), 1);
        assert_eq!(units(pct("100")), POOL_DENOMINATOR);
    }

    proptest! {
        #[test]
        fn parts_sum_to_the_total_and_stay_within_a_unit(
            total in 0i64..=MAX_MINOR_UNITS, w in prop::collection::vec(0i128..=MAX_WEIGHT, 1..9)
        ) {
            let parts = allocate(total, &w);
            prop_assert_eq!(parts.iter().sum::<i64>(), total);
            let sum: i128 = w.iter().sum();
            if sum > 0 {
                for (p, x) in parts.iter().zip(&w) {
                    // |p − total × x / sum| < 1  ⇔  |p × sum − total × x| < sum
                    prop_assert!((i128::from(*p) * sum - i128::from(total) * x).abs() < sum);
                }
            }
        }

        /// Equal weights differ by at most one unit, and the larger parts come first.
        #[test]
        fn equal_weights_favour_the_lower_hops(total in 0i64..10_000, n in 1usize..9, w in 1i128..1000) {
            let parts = allocate(total, &vec![w; n]);
            prop_assert!(parts.windows(2).all(|p| p[0] >= p[1] && p[0] - p[1] <= 1));
        }
    }
}
