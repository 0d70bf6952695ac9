//! Commission arithmetic: the pool of a deal and its exact split along the chain.
//!
//! Everything is computed exactly with `rust_decimal`, then brought to minor units once:
//! the pool by the program's named rounding, the split by largest remainder
//! ([`allocate`]), so that for every conversion Σ hop amounts = pool, exactly.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::model::{PoolRule, Position, ProgramSpec, SplitRule, TierMode};

/// Why a rule set was refused at publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid program rules: {0}")]
pub struct RuleError(pub String);

/// Validates a program's rules; totals over 100 % and the like are refused.
pub fn validate(spec: &ProgramSpec) -> Result<(), RuleError> {
    let err = |s: String| Err(RuleError(s));
    crate::state::check_id("program", &spec.program).map_err(|e| RuleError(e.to_string()))?;
    if spec.holding_days > crate::model::MAX_HOLDING_DAYS {
        return err(format!("holding_days over {}", crate::model::MAX_HOLDING_DAYS));
    }
    if spec.attribution_window_days == 0 || spec.attribution_window_days > crate::model::MAX_WINDOW_DAYS {
        return err(format!("attribution_window_days must be 1..={}", crate::model::MAX_WINDOW_DAYS));
    }
    let p = &spec.pool;
    let nonneg = |name: &str, v: Option<i64>| -> Result<(), RuleError> {
        match v {
            Some(x) if !(0..=settle_mandates::money::MAX_MINOR_UNITS).contains(&x) => {
                Err(RuleError(format!("{name} must be between 0 and {}", settle_mandates::money::MAX_MINOR_UNITS)))
            }
            _ => Ok(()),
        }
    };
    nonneg("pool.flat", p.flat)?;
    nonneg("pool.cap", p.cap)?;
    nonneg("pool.floor", p.floor)?;
    if let (Some(c), Some(f)) = (p.cap, p.floor)
        && f > c
    {
        return err("pool.floor is above pool.cap".into());
    }
    if p.tiers.len() > crate::model::MAX_TIERS || p.spiffs.len() > crate::model::MAX_SPIFFS {
        return err("too many tiers or spiffs".into());
    }
    if !p.tiers.is_empty() {
        if p.tiers.iter().any(|t| !(0..=settle_mandates::money::MAX_MINOR_UNITS).contains(&t.from)) {
            return err(format!("tier 'from' must be between 0 and {}", settle_mandates::money::MAX_MINOR_UNITS));
        }
        if p.tiers[0].from != 0 {
            return err("the first tier must start at volume 0".into());
        }
        if p.tiers.windows(2).any(|w| w[1].from <= w[0].from) {
            return err("tiers must have strictly ascending 'from'".into());
        }
        if p.tier_mode.is_none() {
            return err("tiers need a tier_mode (tiered or marginal)".into());
        }
        if p.percent.is_some() {
            return err("give either pool.percent or pool.tiers, not both".into());
        }
    }
    crate::state::check_text("program name", &spec.name).map_err(|e| RuleError(e.to_string()))?;
    for s in &p.spiffs {
        crate::state::check_text("spiff name", &s.name).map_err(|e| RuleError(e.to_string()))?;
        if s.until <= s.from {
            return err(format!("spiff '{}' ends before it starts", s.name));
        }
        nonneg("spiff.flat", s.flat)?;
    }
    if let Some(b) = &spec.budget {
        nonneg("budget.max", Some(b.max))?;
    }
    if let Some(r) = &spec.payment_range {
        nonneg("payment_range.min", Some(r.min))?;
        nonneg("payment_range.max", Some(r.max))?;
        if r.min > r.max {
            return err("payment_range.min is above max".into());
        }
    }
    if spec.valid_until.is_some_and(|u| u <= spec.valid_from) {
        return err("valid_until is not after valid_from".into());
    }
    match &spec.split {
        SplitRule::Shares { originator, intermediaries, closer, .. } => {
            let total = originator.value() + intermediaries.value() + closer.value();
            if total > Decimal::ONE_HUNDRED {
                return err(format!("split shares total {total}% (over 100%)"));
            }
            if p.percent.is_none() && p.flat.is_none() && p.tiers.is_empty() && p.spiffs.is_empty() {
                return err("the pool has no percent, flat, tiers or spiffs".into());
            }
        }
        SplitRule::Levels { rates } => {
            if rates.is_empty() || rates.len() > crate::model::MAX_LEVELS {
                return err(format!("levels split needs 1..={} rates", crate::model::MAX_LEVELS));
            }
            let total: Decimal = rates.iter().map(|r| r.value()).sum();
            if total > Decimal::ONE_HUNDRED {
                return err(format!("level rates total {total}% (over 100%)"));
            }
            if p.percent.is_some() || p.flat.is_some() || !p.tiers.is_empty() {
                return err(
                    "a levels split defines the pool itself: pool.percent, flat and tiers must be absent".into()
                );
            }
        }
    }
    Ok(())
}

/// Inputs of one deal's pool.
#[derive(Debug, Clone, Copy)]
pub struct Deal {
    /// Revenue in the program currency, minor units.
    pub revenue: i64,
    /// The closer's revenue in the same month before this deal, minor units.
    pub closer_volume_before: i64,
    /// When the deal occurred.
    pub occurred_at: DateTime<Utc>,
    /// Number of hops in the chain.
    pub hops: usize,
}

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

impl ProgramSpec {
    /// The rules in plain language, one sentence per line, so that an agent or a finance
    /// reader can explain any number the engine produced from them.
    #[must_use]
    pub fn explain(&self) -> Vec<String> {
        let cur = self.currency;
        let money = |m: i64| {
            settle_mandates::money::Amount::from_minor(m, cur)
                .map_or_else(|_| format!("{m} minor units"), |a| format!("{} {}", a.to_decimal_string(), cur.code()))
        };
        let pct = |p: crate::model::Percent| format!("{}%", p.value());
        let mut out = Vec::new();
        let p = &self.pool;
        let mut pool = Vec::new();
        if !p.tiers.is_empty() {
            let bands: Vec<String> =
                p.tiers.iter().map(|t| format!("{} from {}", pct(t.percent), money(t.from))).collect();
            let mode = match p.tier_mode {
                Some(TierMode::Marginal) => "each part of the deal at the rate of its volume band",
                _ => "the whole deal at the rate of the tier the closer's monthly volume reaches",
            };
            pool.push(format!("volume tiers ({}), {mode}", bands.join(", ")));
        } else if let Some(r) = p.percent {
            pool.push(format!("{} of revenue", pct(r)));
        }
        if let Some(f) = p.flat {
            pool.push(format!("{} flat per deal", money(f)));
        }
        if let SplitRule::Levels { rates } = &self.split {
            let r: Vec<String> = rates.iter().map(|r| pct(*r)).collect();
            pool.push(format!("the sum of the level rates present ({}, closer first) of revenue", r.join(" / ")));
        }
        for s in &p.spiffs {
            let mut extra = Vec::new();
            if let Some(r) = s.percent {
                extra.push(format!("{} of revenue", pct(r)));
            }
            if let Some(f) = s.flat {
                extra.push(money(f));
            }
            pool.push(format!(
                "plus bonus '{}' ({}) for deals from {} until {}",
                s.name,
                extra.join(" + "),
                s.from.to_rfc3339(),
                s.until.to_rfc3339()
            ));
        }
        out.push(format!("Pool of a deal: {}.", if pool.is_empty() { "nothing".to_owned() } else { pool.join("; ") }));
        if let Some(c) = p.cap {
            out.push(format!("The pool is capped at {} per deal.", money(c)));
        }
        if let Some(f) = p.floor {
            out.push(format!("The pool is at least {} per deal.", money(f)));
        }
        if let Some(m) = p.recurring_months {
            out.push(format!("Subscriptions earn for their first {m} months only."));
        }
        if let Some(b) = &self.budget {
            out.push(format!("Pools are limited to {} per calendar month (UTC); a deal that would exceed it is held with the reason and issues no mandates.", money(b.max)));
        }
        let rounding = serde_json::to_value(self.pool_rounding)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push(format!("The pool is rounded to minor units of {} by {rounding}.", cur.code()));
        match &self.split {
            SplitRule::Shares { originator, intermediaries, closer, remaining } => out.push(format!(
                "Split: originator {}, intermediaries {} shared equally, closer {}; the rest (and the share of an absent position) goes to the {}.",
                pct(*originator),
                pct(*intermediaries),
                pct(*closer),
                match remaining {
                    Position::Originator => "originator",
                    Position::Intermediaries => "intermediaries",
                    Position::Closer => "closer",
                }
            )),
            SplitRule::Levels { .. } => out.push(
                "Split: each level earns its rate of revenue (level 1 = closer); levels beyond the rates earn nothing.".to_owned(),
            ),
        }
        out.push(format!(
            "Shares are exact, then brought to minor units by largest remainder ({}): the hops always sum to the pool exactly.",
            crate::model::SPLIT_POLICY
        ));
        if let Some(r) = &self.payment_range {
            out.push(format!("Each hop's payment must lie between {} and {}; otherwise the deal is held with the reason and issues no mandates.", money(r.min), money(r.max)));
        }
        out.push(format!(
            "Commissions are held {} days (the refund window) before they are payable; a lead's deals earn for {} days after its registration.",
            self.holding_days, self.attribution_window_days
        ));
        out
    }
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
