//! `largest_remainder.v1`: the arithmetic of rule versions recorded before exact
//! arithmetic (a spec without `allocation`). Kept unchanged so that older logs replay to
//! the same bytes; nothing new is priced with it. Shares and targets are divided in
//! `rust_decimal` (28 significant digits), which is its known defect: equal remainders
//! that are not finite decimals may compare unequal, and a whole clawback target may
//! come out one unit short (docs/commission-rules.md, "The arithmetic").

use rust_decimal::Decimal;
use settle_mandates::money::{Amount, Currency, MoneyError, Rounding};

use crate::model::{PoolRule, Position, ProgramSpec, SplitRule, TierMode};
use crate::rules::Deal;

/// Exact weight of each hop and the exact pool in minor units (before rounding).
#[derive(Debug, Clone, PartialEq)]
pub struct ExactPool {
    /// Exact pool, minor units (may have a fraction).
    pub pool: Decimal,
    /// Weight of each hop (any scale; only ratios matter), hop 0 = originator.
    pub weights: Vec<Decimal>,
}

fn tier_rate_at(rule: &PoolRule, volume: i64) -> Decimal {
    rule.tiers.iter().rev().find(|t| t.from <= volume).map_or(Decimal::ZERO, |t| t.percent.fraction())
}

/// The exact pool of a deal and the hop weights, from the program's rules.
#[must_use]
pub fn exact_pool(spec: &ProgramSpec, d: &Deal) -> ExactPool {
    let p = &spec.pool;
    let revenue = Decimal::from(d.revenue);
    let mut pool = Decimal::ZERO;
    match &spec.split {
        SplitRule::Levels { rates } => {
            // Level 1 = closer = last hop; hop i is level hops - i.
            let weights: Vec<Decimal> = (0..d.hops)
                .map(|i| rates.get(d.hops - 1 - i).map_or(Decimal::ZERO, |r| revenue * r.fraction()))
                .collect();
            pool = weights.iter().sum();
            pool += spiffs(spec, d, revenue);
            apply_bounds(p, &mut pool);
            ExactPool { pool, weights }
        }
        SplitRule::Shares { originator, intermediaries, closer, remaining } => {
            if let Some(pc) = p.percent {
                pool += revenue * pc.fraction();
            }
            if !p.tiers.is_empty() {
                pool += match p.tier_mode {
                    Some(TierMode::Marginal) => {
                        let (lo, hi) = (d.closer_volume_before, d.closer_volume_before.saturating_add(d.revenue));
                        let mut sum = Decimal::ZERO;
                        for (i, t) in p.tiers.iter().enumerate() {
                            let band_end = p.tiers.get(i + 1).map_or(i64::MAX, |n| n.from);
                            let a = lo.max(t.from);
                            let b = hi.min(band_end);
                            if b > a {
                                sum += Decimal::from(b - a) * t.percent.fraction();
                            }
                        }
                        sum
                    }
                    _ => revenue * tier_rate_at(p, d.closer_volume_before.saturating_add(d.revenue)),
                };
            }
            if let Some(f) = p.flat {
                pool += Decimal::from(f);
            }
            pool += spiffs(spec, d, revenue);
            apply_bounds(p, &mut pool);
            ExactPool {
                pool,
                weights: share_weights(d.hops, originator.value(), intermediaries.value(), closer.value(), *remaining),
            }
        }
    }
}

fn spiffs(spec: &ProgramSpec, d: &Deal, revenue: Decimal) -> Decimal {
    spec.pool
        .spiffs
        .iter()
        .filter(|s| s.from <= d.occurred_at && d.occurred_at < s.until)
        .map(|s| {
            s.percent.map_or(Decimal::ZERO, |p| revenue * p.fraction()) + s.flat.map_or(Decimal::ZERO, Decimal::from)
        })
        .sum()
}

fn apply_bounds(p: &PoolRule, pool: &mut Decimal) {
    if let Some(c) = p.cap {
        *pool = (*pool).min(Decimal::from(c));
    }
    if let Some(f) = p.floor {
        *pool = (*pool).max(Decimal::from(f));
    }
}

/// Weights (in percent) by position; absent positions' shares and the unassigned rest
/// go to `remaining` (for a one-hop chain, the sole partner is originator and closer).
#[must_use]
pub fn share_weights(
    hops: usize,
    originator: Decimal,
    intermediaries: Decimal,
    closer: Decimal,
    remaining: Position,
) -> Vec<Decimal> {
    if hops == 0 {
        return Vec::new();
    }
    if hops == 1 {
        return vec![Decimal::ONE_HUNDRED];
    }
    let mut w = vec![Decimal::ZERO; hops];
    w[0] = originator;
    w[hops - 1] = closer;
    let mids = hops - 2;
    let mut rest = Decimal::ONE_HUNDRED - originator - closer;
    if mids > 0 {
        let each = intermediaries / Decimal::from(mids);
        for x in &mut w[1..hops - 1] {
            *x = each;
        }
        rest -= intermediaries;
    }
    // The rest: to the named position (intermediaries share equally; none present → closer).
    match remaining {
        Position::Originator => w[0] += rest,
        Position::Closer => w[hops - 1] += rest,
        Position::Intermediaries if mids > 0 => {
            let each = rest / Decimal::from(mids);
            for x in &mut w[1..hops - 1] {
                *x += each;
            }
        }
        Position::Intermediaries => w[hops - 1] += rest,
    }
    w
}

/// Splits `total` minor units (≥ 0) in proportion to `weights` by largest remainder:
/// floor every exact share, then give the leftover units one each to the largest
/// fractional parts; ties go to the lower index (the originator side). If all weights
/// are zero, everything goes to the last part. Σ result = total, always.
#[must_use]
pub fn allocate(total: i64, weights: &[Decimal]) -> Vec<i64> {
    assert!(total >= 0, "allocate takes a non-negative total");
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let sum: Decimal = weights.iter().sum();
    let mut out = vec![0i64; n];
    if sum <= Decimal::ZERO {
        out[n - 1] = total;
        return out;
    }
    let t = Decimal::from(total);
    let mut fracs: Vec<(Decimal, usize)> = Vec::with_capacity(n);
    let mut given = 0i64;
    for (i, w) in weights.iter().enumerate() {
        // Ratio first when the product would leave Decimal's range (very large pools).
        let exact = t.checked_mul(*w).map_or_else(|| (*w / sum) * t, |x| x / sum);
        let fl = exact.floor();
        let v = i64::try_from(fl).unwrap_or_else(|_| unreachable!("share ≤ total"));
        out[i] = v;
        given += v;
        fracs.push((exact - fl, i));
    }
    let mut left = total - given;
    assert!((0..=i64::try_from(n).unwrap_or(i64::MAX)).contains(&left), "largest remainder leftover out of range");
    fracs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in fracs {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    debug_assert_eq!(out.iter().sum::<i64>(), total);
    out
}

/// The pool of a deal in minor units and its split.
pub fn price(spec: &ProgramSpec, d: &Deal) -> Result<(i64, Vec<i64>), MoneyError> {
    let exact = exact_pool(spec, d);
    let pool = Amount::from_decimal(
        exact.pool / Decimal::from(10_i64.pow(spec.currency.exponent())),
        spec.currency,
        spec.pool_rounding,
    )?;
    let parts = allocate(pool.minor_units(), &exact.weights);
    Ok((pool.minor_units(), parts))
}

/// `amount × factor` in `to`, as v1 computed it (a decimal product, then rounded).
pub fn times(amount: Amount, factor: Decimal, to: Currency, rounding: Rounding) -> Result<Amount, MoneyError> {
    let product = amount.to_decimal().checked_mul(factor).ok_or(MoneyError::Overflow)?;
    Amount::from_decimal(product, to, rounding)
}

/// The cumulative clawback target `pool × refunded / revenue` (ratio first), rounded.
pub fn clawback_target(
    pool: i64,
    refunded: i64,
    revenue: i64,
    cur: Currency,
    rounding: Rounding,
) -> Result<i64, MoneyError> {
    let exact = Decimal::from(pool) * (Decimal::from(refunded) / Decimal::from(revenue));
    Ok(Amount::from_decimal(exact / Decimal::from(10_i64.pow(cur.exponent())), cur, rounding)?.minor_units())
}

/// Splits a clawback `delta` over what each hop still holds.
#[must_use]
pub fn allocate_clawback(delta: i64, holds: &[i64]) -> Vec<i64> {
    let w: Vec<Decimal> = holds.iter().map(|h| Decimal::from(*h)).collect();
    allocate(delta, &w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn allocate_examples() {
        let check = |total: i64, w: &[&str], want: &[i64]| {
            let w: Vec<Decimal> = w.iter().map(|s| d(s)).collect();
            assert_eq!(allocate(total, &w), want, "{total} by {w:?}");
        };
        check(100, &["1", "1", "1"], &[34, 33, 33]); // tie → lowest index
        check(1000, &["50", "30", "20"], &[500, 300, 200]);
        check(1, &["20", "30", "50"], &[0, 0, 1]); // largest fraction wins
        check(7, &["0", "0"], &[0, 7]);
        check(0, &["1", "2"], &[0, 0]);
        // Exact 3333.67, 3333.67, 3333.67: two leftover units, to the largest fraction (hop 2) then the tie-break (hop 0).
        check(10001, &["33.333333", "33.333333", "33.333334"], &[3334, 3333, 3334]);
    }

    #[test]
    fn share_weights_put_the_rest_where_named() {
        let w = |h, r| share_weights(h, d("30"), d("20"), d("40"), r);
        assert_eq!(w(3, Position::Closer), vec![d("30"), d("20"), d("50")]);
        assert_eq!(w(2, Position::Closer), vec![d("30"), d("70")]); // no intermediaries: their 20 → closer
        assert_eq!(w(2, Position::Originator), vec![d("60"), d("40")]);
        assert_eq!(w(4, Position::Intermediaries), vec![d("30"), d("15"), d("15"), d("40")]);
        assert_eq!(w(1, Position::Originator), vec![d("100")]);
    }

    proptest! {
        #[test]
        fn parts_always_sum_to_the_pool(total in 0i64..=1_000_000_000_000, w in prop::collection::vec(0u32..1_000_000, 1..9)) {
            let ws: Vec<Decimal> = w.iter().map(|x| Decimal::new(i64::from(*x), 4)).collect();
            let parts = allocate(total, &ws);
            prop_assert_eq!(parts.iter().sum::<i64>(), total);
            prop_assert!(parts.iter().all(|p| *p >= 0));
            let sum: Decimal = ws.iter().sum();
            if sum > Decimal::ZERO {
                for (p, x) in parts.iter().zip(&ws) {
                    let exact = Decimal::from(total) * *x / sum;
                    prop_assert!((Decimal::from(*p) - exact).abs() < Decimal::ONE, "part {} vs exact {}", p, exact);
                }
            }
        }
    }
}
