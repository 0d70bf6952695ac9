//! An independent reference model of `docs/commission-rules.md`, written from that
//! document alone (not from the engine's code): small, slow and plainly exact.
//!
//! Every quantity is a rational over big integers ([`BigRational`]); nothing is rounded
//! except in the places the document names (the pool, an FX conversion, a refund
//! fraction, a clawback target), each by [`round`], and the splits go through
//! [`allocate`] (`largest_remainder.v2`). The model reads a program as the JSON of its
//! `spec` (the document's field names) and is fed deals and refunds as plain values, so
//! it shares no type and no arithmetic with the engine.
//!
//! Scope: one program with one rule version, leads with their chains, conversions
//! (percent, flat, tiers tiered/marginal, spiffs, cap/floor, FX, recurring months;
//! shares and levels splits), the outcomes `settled`, `no_commission` and `held` (the
//! validity window, the monthly budget and the payment range), and refunds (amount,
//! fraction, full) with their cumulative clawbacks. Not modelled: amendments,
//! releases, suspensions, direct deals, holds, payouts.

use chrono::{DateTime, Datelike, Utc};
use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{Signed, ToPrimitive, Zero};
use serde_json::Value;
use std::cmp::Ordering;

/// An exact rational.
pub type Q = BigRational;

/// "A deal whose rounded pool (or FX-converted revenue) would exceed 10^15 minor units
/// is refused."
pub const LIMIT: i64 = 1_000_000_000_000_000;

/// The integer `n` as a rational.
pub fn int(n: i64) -> Q {
    Q::from_integer(BigInt::from(n))
}

fn big(n: &BigInt) -> Q {
    Q::from_integer(n.clone())
}

/// `x` as an `i64`; the model's own integers always fit (they are at most [`LIMIT`] or
/// checked against it first).
fn small(n: &BigInt) -> i64 {
    n.to_i64().unwrap_or_else(|| panic!("{n} does not fit an i64"))
}

/// An exact decimal string (`"12.5"`, `"-0.25"`, `"33.333333"`), as a rational.
pub fn decimal(s: &str) -> Result<Q, String> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits_only = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_only(whole) || !digits_only(frac) {
        return Err(format!("'{s}' is not a decimal number"));
    }
    let digits = format!("{whole}{frac}");
    let numerator: BigInt = digits.parse().map_err(|_| format!("'{s}' is not a decimal number"))?;
    let scale = u32::try_from(frac.len()).map_err(|_| format!("'{s}' has too many decimals"))?;
    let value = Q::new(numerator, BigInt::from(10).pow(scale));
    Ok(if negative { -value } else { value })
}

/// The number of decimals a decimal string is written with, trailing zeros ignored.
fn decimals(s: &str) -> usize {
    s.split_once('.').map_or(0, |(_, f)| f.trim_end_matches('0').len())
}

/// The rounding rules of the document, named as in `pool_rounding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Toward −∞.
    Floor,
    /// Toward 0.
    TowardZero,
    /// To the nearer integer, an exact half to the even one.
    HalfEven,
    /// To the nearer integer, an exact half away from 0.
    HalfAwayFromZero,
}

impl Rounding {
    /// The rule named `s` (`"half_even"`, ...).
    pub fn named(s: &str) -> Result<Self, String> {
        match s {
            "floor" => Ok(Self::Floor),
            "toward_zero" => Ok(Self::TowardZero),
            "half_even" => Ok(Self::HalfEven),
            "half_away_from_zero" => Ok(Self::HalfAwayFromZero),
            _ => Err(format!("unknown rounding '{s}'")),
        }
    }
}

/// The largest integer not above `x`.
pub fn floor(x: &Q) -> BigInt {
    x.numer().div_floor(x.denom())
}

/// Rounds the exact `x` to an integer by `rule`: "`floor` toward −∞, `toward_zero`
/// toward 0, `half_even` to the nearer integer and a tie (exactly ½) to the even one,
/// `half_away_from_zero` to the nearer and a tie away from 0".
pub fn round(x: &Q, rule: Rounding) -> BigInt {
    let down = floor(x);
    let up = &down + 1;
    // The part above the floor, in [0, 1), compared exactly with one half.
    let above = x - big(&down);
    let half = Q::new(BigInt::from(1), BigInt::from(2));
    match rule {
        Rounding::Floor => down,
        Rounding::TowardZero => {
            if x.is_negative() && !above.is_zero() {
                up
            } else {
                down
            }
        }
        Rounding::HalfEven => match above.cmp(&half) {
            Ordering::Less => down,
            Ordering::Greater => up,
            Ordering::Equal => {
                if down.is_even() {
                    down
                } else {
                    up
                }
            }
        },
        Rounding::HalfAwayFromZero => match above.cmp(&half) {
            Ordering::Less => down,
            Ordering::Greater => up,
            Ordering::Equal => {
                if x.is_negative() {
                    down
                } else {
                    up
                }
            }
        },
    }
}

/// `largest_remainder.v2`: splits `pool` minor units by `weights`.
///
/// 1. each exact share `P × wᵢ / Σw`, as a rational, floored;
/// 2. the `L = P − Σ floors` units left go one each to the largest fractional parts,
///    compared exactly;
/// 3. ties to the lower hop index;
/// 4. every weight 0: the last hop gets everything.
pub fn allocate(pool: i64, weights: &[Q]) -> Vec<i64> {
    let n = weights.len();
    assert!(n > 0, "a split needs at least one hop");
    assert!(weights.iter().all(|w| !w.is_negative()), "negative weight in {weights:?}");
    let total: Q = weights.iter().sum();
    if total.is_zero() {
        let mut out = vec![0; n];
        out[n - 1] = pool;
        return out;
    }
    let exact: Vec<Q> = weights.iter().map(|w| int(pool) * w / &total).collect();
    let mut out: Vec<BigInt> = exact.iter().map(floor).collect();
    let fractions: Vec<Q> = exact.iter().zip(&out).map(|(e, f)| e - big(f)).collect();
    let left = BigInt::from(pool) - out.iter().sum::<BigInt>();
    let left = usize::try_from(small(&left)).expect("the floors never exceed the pool");
    assert!(left < n, "{left} units left over {n} hops");
    let mut order: Vec<usize> = (0..n).collect();
    // Largest fraction first; equal fractions (equal as rationals): lower index first.
    order.sort_by(|&a, &b| fractions[b].cmp(&fractions[a]).then(a.cmp(&b)));
    for &i in order.iter().take(left) {
        out[i] += 1;
    }
    out.iter().map(small).collect()
}

/// Minor-unit digits of the ISO 4217 currencies the tests use.
pub fn exponent(code: &str) -> Option<u32> {
    match code {
        "JPY" | "KRW" | "CLP" => Some(0),
        "USD" | "EUR" | "GBP" => Some(2),
        "BHD" | "KWD" | "JOD" | "OMR" | "TND" => Some(3),
        "CLF" | "UYW" => Some(4),
        _ => None,
    }
}

/// Who takes what the shares leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remaining {
    /// Hop 0.
    Originator,
    /// The hops between, equally.
    Intermediaries,
    /// The last hop.
    Closer,
}

/// How the pool is split.
#[derive(Debug, Clone)]
pub enum Split {
    /// Shares of the pool by position, in percent.
    Shares {
        /// Of the originator.
        originator: Q,
        /// Of all intermediaries together.
        intermediaries: Q,
        /// Of the closer.
        closer: Q,
        /// Who takes the rest.
        remaining: Remaining,
    },
    /// Rates of revenue by level (closer first), in percent.
    Levels(Vec<Q>),
}

impl Split {
    /// The weights of the hops of an `n`-hop chain.
    pub fn weights(&self, n: usize) -> Vec<Q> {
        match self {
            Self::Shares { originator, intermediaries, closer, remaining } => {
                // "A sole partner gets 100 %."
                if n == 1 {
                    return vec![int(100)];
                }
                let k = n - 2;
                let mut w = vec![Q::zero(); n];
                w[0] = originator.clone();
                w[n - 1] = closer.clone();
                let each = |x: &Q| x / int(i64::try_from(k).expect("at most 8 hops"));
                if k > 0 {
                    for wi in &mut w[1..n - 1] {
                        *wi = each(intermediaries);
                    }
                }
                // "100 % minus the shares given, plus the share of any absent position":
                // the shares given are those of the positions present.
                let given: Q = w.iter().sum();
                let rest = int(100) - given;
                match remaining {
                    Remaining::Originator => w[0] += rest,
                    Remaining::Closer => w[n - 1] += rest,
                    Remaining::Intermediaries if k > 0 => {
                        let part = each(&rest);
                        for wi in &mut w[1..n - 1] {
                            *wi += part.clone();
                        }
                    }
                    Remaining::Intermediaries => w[n - 1] += rest,
                }
                w
            }
            // "Hop i earns rates[n−1−i] × revenue"; beyond the last rate, 0.
            Self::Levels(rates) => (0..n).map(|i| rates.get(n - 1 - i).cloned().unwrap_or_else(Q::zero)).collect(),
        }
    }
}

/// How tiers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierMode {
    /// The whole deal at the rate the volume including it reaches.
    Tiered,
    /// Each part of the deal at its band's rate.
    Marginal,
}

/// A spiff: `[from, until)`, a percent of revenue and a flat amount.
#[derive(Debug, Clone)]
pub struct Spiff {
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    percent: Q,
    flat: Q,
}

/// One program (one rule version), read from its spec's JSON.
#[derive(Debug, Clone)]
pub struct Program {
    /// Program currency.
    pub currency: String,
    exponent: u32,
    window_days: i64,
    /// `pool_rounding`.
    pub rounding: Rounding,
    percent: Option<Q>,
    flat: Option<Q>,
    cap: Option<Q>,
    floor: Option<Q>,
    /// `(from, percent)`.
    tiers: Vec<(Q, Q)>,
    tier_mode: Option<TierMode>,
    spiffs: Vec<Spiff>,
    recurring_months: Option<i64>,
    /// The split.
    pub split: Split,
    budget: Option<i64>,
    payment_range: Option<(i64, i64)>,
    valid_from: DateTime<Utc>,
    valid_until: Option<DateTime<Utc>>,
}

fn time(v: &Value, what: &str) -> Result<DateTime<Utc>, String> {
    let s = v.as_str().ok_or_else(|| format!("{what} is not a time"))?;
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("{what}: {e}"))
}

/// A percentage: "decimal strings, `"10"` meaning 10 %: from 0 to 100, with at most 6
/// decimals".
fn percent(v: &Value, what: &str) -> Result<Q, String> {
    let s = v.as_str().ok_or_else(|| format!("{what} is not a decimal string"))?;
    let q = decimal(s)?;
    if q.is_negative() || q > int(100) || decimals(s) > 6 {
        return Err(format!("{what} {s} is not a percentage from 0 to 100 with at most 6 decimals"));
    }
    Ok(q)
}

/// "Money in rules is integer minor units": refused if negative or over the limit.
fn money(v: &Value, what: &str) -> Result<i64, String> {
    let m = v.as_i64().ok_or_else(|| format!("{what} is not an integer"))?;
    if !(0..=LIMIT).contains(&m) {
        return Err(format!("{what} {m} is negative or over the limit"));
    }
    Ok(m)
}

fn opt<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

impl Program {
    /// Reads and checks a spec as publication does; `Err` is a refusal.
    pub fn from_spec(spec: &Value) -> Result<Self, String> {
        let currency = spec["currency"].as_str().ok_or("no currency")?.to_owned();
        let exponent = exponent(&currency).ok_or_else(|| format!("unknown currency {currency}"))?;
        let holding = spec["holding_days"].as_i64().ok_or("no holding_days")?;
        let window_days = spec["attribution_window_days"].as_i64().ok_or("no attribution_window_days")?;
        if !(0..=365).contains(&holding) || !(1..=730).contains(&window_days) {
            return Err("holding or window out of range".into());
        }
        let rounding = Rounding::named(spec["pool_rounding"].as_str().ok_or("no pool_rounding")?)?;
        match opt(spec, "allocation").map(Value::as_str) {
            None | Some(Some("largest_remainder.v2")) => {}
            Some(other) => return Err(format!("allocation {other:?} is not modelled")),
        }
        let pool = &spec["pool"];
        let amount = |key: &str| opt(pool, key).map(|v| money(v, key)).transpose();
        let (flat, cap, floor) = (amount("flat")?, amount("cap")?, amount("floor")?);
        if let (Some(c), Some(f)) = (cap, floor)
            && f > c
        {
            return Err("floor > cap".into());
        }
        let pct = opt(pool, "percent").map(|v| percent(v, "percent")).transpose()?;
        let tiers = match opt(pool, "tiers") {
            None => vec![],
            Some(t) => t
                .as_array()
                .ok_or("tiers is not a list")?
                .iter()
                .map(|t| Ok((int(money(&t["from"], "tier from")?), percent(&t["percent"], "tier percent")?)))
                .collect::<Result<Vec<_>, String>>()?,
        };
        let tier_mode = match opt(pool, "tier_mode").map(Value::as_str) {
            None => None,
            Some(Some("tiered")) => Some(TierMode::Tiered),
            Some(Some("marginal")) => Some(TierMode::Marginal),
            Some(other) => return Err(format!("tier_mode {other:?}")),
        };
        if tiers.len() > 16 {
            return Err("more than 16 tiers".into());
        }
        if !tiers.is_empty() {
            if !tiers[0].0.is_zero() || tiers.windows(2).any(|w| w[1].0 <= w[0].0) {
                return Err("tiers must start at 0 and ascend strictly".into());
            }
            if tier_mode.is_none() || pct.is_some() {
                return Err("tiers need a tier_mode and no percent".into());
            }
        }
        let spiffs = match opt(pool, "spiffs") {
            None => vec![],
            Some(s) => s
                .as_array()
                .ok_or("spiffs is not a list")?
                .iter()
                .map(|s| {
                    let spiff = Spiff {
                        from: time(&s["from"], "spiff from")?,
                        until: time(&s["until"], "spiff until")?,
                        percent: opt(s, "percent")
                            .map(|v| percent(v, "spiff percent"))
                            .transpose()?
                            .unwrap_or_else(Q::zero),
                        flat: int(opt(s, "flat").map(|v| money(v, "spiff flat")).transpose()?.unwrap_or(0)),
                    };
                    if spiff.until < spiff.from {
                        return Err("a spiff ends before it starts".to_owned());
                    }
                    Ok(spiff)
                })
                .collect::<Result<Vec<_>, String>>()?,
        };
        if spiffs.len() > 16 {
            return Err("more than 16 spiffs".into());
        }
        let recurring_months =
            opt(pool, "recurring_months").map(|v| v.as_i64().ok_or("recurring_months")).transpose()?;
        let split = &spec["split"];
        let split = match split["kind"].as_str() {
            Some("shares") => {
                let remaining = match split["remaining"].as_str() {
                    Some("originator") => Remaining::Originator,
                    Some("intermediaries") => Remaining::Intermediaries,
                    Some("closer") => Remaining::Closer,
                    other => return Err(format!("remaining {other:?}")),
                };
                let (o, i, c) = (
                    percent(&split["originator"], "originator")?,
                    percent(&split["intermediaries"], "intermediaries")?,
                    percent(&split["closer"], "closer")?,
                );
                if &o + &i + &c > int(100) {
                    return Err("shares total over 100 %".into());
                }
                // "a shares pool with nothing in it": read here as a pool that can never
                // be more than 0 (no percent, flat, tiers, spiffs or floor at all).
                if pct.is_none() && flat.is_none() && tiers.is_empty() && spiffs.is_empty() && floor.is_none() {
                    return Err("a shares pool with nothing in it".into());
                }
                Split::Shares { originator: o, intermediaries: i, closer: c, remaining }
            }
            Some("levels") => {
                let rates = split["rates"]
                    .as_array()
                    .ok_or("rates is not a list")?
                    .iter()
                    .map(|r| percent(r, "rate"))
                    .collect::<Result<Vec<_>, String>>()?;
                if rates.is_empty() || rates.len() > 8 {
                    return Err("a levels split has 1 to 8 rates".into());
                }
                // "rates over 100 %": together (each one is a percentage already).
                if rates.iter().sum::<Q>() > int(100) {
                    return Err("rates over 100 %".into());
                }
                if pct.is_some() || flat.is_some() || !tiers.is_empty() {
                    return Err("a levels pool may not have percent, flat or tiers".into());
                }
                Split::Levels(rates)
            }
            other => return Err(format!("split kind {other:?}")),
        };
        let budget = opt(spec, "budget").map(|b| money(&b["max"], "budget max")).transpose()?;
        let payment_range = opt(spec, "payment_range")
            .map(|r| Ok::<_, String>((money(&r["min"], "range min")?, money(&r["max"], "range max")?)))
            .transpose()?;
        if let Some((min, max)) = payment_range
            && min > max
        {
            return Err("payment_range min > max".into());
        }
        let valid_from = time(&spec["valid_from"], "valid_from")?;
        let valid_until = opt(spec, "valid_until").map(|v| time(v, "valid_until")).transpose()?;
        if valid_until.is_some_and(|u| u <= valid_from) {
            return Err("valid_until <= valid_from".into());
        }
        Ok(Self {
            currency,
            exponent,
            window_days,
            rounding,
            percent: pct,
            flat: flat.map(int),
            cap: cap.map(int),
            floor: floor.map(int),
            tiers,
            tier_mode,
            spiffs,
            recurring_months,
            split,
            budget,
            payment_range,
            valid_from,
            valid_until,
        })
    }

    /// The tier amount of a deal of `revenue` when the closer already has `volume`.
    fn tier_amount(&self, volume: &Q, revenue: &Q) -> Q {
        let rate = |p: &Q| p / int(100);
        match self.tier_mode {
            Some(TierMode::Tiered) => {
                // The tier that the volume including this deal reaches.
                let after = volume + revenue;
                let reached = self.tiers.iter().rev().find(|(from, _)| *from <= after).expect("tiers start at 0");
                rate(&reached.1) * revenue
            }
            Some(TierMode::Marginal) => {
                // Each part of [volume, volume + revenue) at its band's rate.
                let (start, end) = (volume.clone(), volume + revenue);
                let mut total = Q::zero();
                for (j, (from, p)) in self.tiers.iter().enumerate() {
                    let upper = self.tiers.get(j + 1).map(|t| t.0.clone());
                    let lo = if *from > start { from.clone() } else { start.clone() };
                    let hi = match upper {
                        Some(u) if u < end => u,
                        _ => end.clone(),
                    };
                    if hi > lo {
                        total += rate(p) * (hi - lo);
                    }
                }
                total
            }
            None => unreachable!("tiers without a mode are refused"),
        }
    }

    /// The exact pool (before its one rounding) of a deal of `revenue` (program minor
    /// units) by an `n`-hop chain whose closer has `volume` this month, at `at`.
    fn exact_pool(&self, revenue: &Q, volume: &Q, at: DateTime<Utc>, n: usize) -> Q {
        let rate = |p: &Q| p / int(100);
        let mut pool = match &self.split {
            // "The pool is the sum of the hops' amounts" (the levels present).
            Split::Levels(rates) => rates.iter().take(n).map(|r| rate(r) * revenue).sum(),
            Split::Shares { .. } if !self.tiers.is_empty() => self.tier_amount(volume, revenue),
            Split::Shares { .. } => self.percent.as_ref().map_or_else(Q::zero, |p| rate(p) * revenue),
        };
        if let Some(f) = &self.flat {
            pool += f;
        }
        for s in self.spiffs.iter().filter(|s| s.from <= at && at < s.until) {
            pool += rate(&s.percent) * revenue + &s.flat;
        }
        if let Some(c) = &self.cap
            && pool > *c
        {
            pool = c.clone();
        }
        if let Some(f) = &self.floor
            && pool < *f
        {
            pool = f.clone();
        }
        pool
    }
}

/// A deal as given: its lead, revenue (minor units of its currency), FX rate (decimal
/// string), time and subscription month.
#[derive(Debug, Clone)]
pub struct Deal {
    /// Index of the lead (as registered with [`Model::register`]).
    pub lead: usize,
    /// Revenue in minor units of `currency`.
    pub revenue: i64,
    /// The revenue's currency.
    pub currency: String,
    /// `fx.rate`: program units per one unit of `currency`.
    pub fx: Option<String>,
    /// When the deal was won.
    pub occurred_at: DateTime<Utc>,
    /// Month of a subscription.
    pub subscription_month: Option<u32>,
}

/// A conversion's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Paid: one mandate per hop.
    Settled,
    /// Owed but not paid past the program's authorisation.
    Held,
    /// Nothing owed.
    NoCommission,
}

impl Outcome {
    /// The name in `conversion_outcome`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Held => "held",
            Self::NoCommission => "no_commission",
        }
    }
}

/// What a conversion came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The outcome.
    pub outcome: Outcome,
    /// The pool reported (0 when nothing is owed).
    pub pool: i64,
    /// Each hop's mandate (settled only; empty otherwise).
    pub hops: Vec<i64>,
}

/// A refund's size.
#[derive(Debug, Clone)]
pub enum RefundSize {
    /// Minor units of the conversion's currency.
    Amount(i64),
    /// A fraction of the revenue (decimal string).
    Fraction(String),
    /// The rest.
    Full,
}

#[derive(Debug, Clone)]
struct Lead {
    chain: Vec<String>,
    registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Conversion {
    chain: Vec<String>,
    occurred_at: DateTime<Utc>,
    /// Revenue in the conversion's own currency.
    revenue: i64,
    /// Revenue in the program currency (after FX), when the deal earned.
    program_revenue: i64,
    outcome: Outcome,
    pool: i64,
    hops: Vec<i64>,
    clawed: Vec<i64>,
    refunded: i64,
}

/// The model: one program, its leads and conversions.
#[derive(Debug, Clone)]
pub struct Model {
    /// The program.
    pub program: Program,
    leads: Vec<Lead>,
    conversions: Vec<Conversion>,
}

fn same_month(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a.year(), a.month()) == (b.year(), b.month())
}

impl Model {
    /// Publishes `spec`; `Err` if publication refuses it.
    pub fn new(spec: &Value) -> Result<Self, String> {
        Ok(Self { program: Program::from_spec(spec)?, leads: vec![], conversions: vec![] })
    }

    /// Registers a lead whose chain (after its handoffs) is `chain`; its index.
    pub fn register(&mut self, chain: Vec<String>, registered_at: DateTime<Utc>) -> usize {
        self.leads.push(Lead { chain, registered_at });
        self.leads.len() - 1
    }

    /// The revenue in the program currency: exact, and `None` without a needed rate.
    fn converted(&self, d: &Deal) -> Result<Option<BigInt>, String> {
        if d.currency == self.program.currency {
            return Ok(Some(BigInt::from(d.revenue)));
        }
        let Some(rate) = &d.fx else { return Ok(None) };
        let from = exponent(&d.currency).ok_or_else(|| format!("unknown currency {}", d.currency))?;
        // Revenue (minor units of its currency) → units → × rate program units → program
        // minor units; rounded once.
        let units = int(d.revenue) / big(&BigInt::from(10).pow(from));
        let exact = units * decimal(rate)? * big(&BigInt::from(10).pow(self.program.exponent));
        Ok(Some(round(&exact, self.program.rounding)))
    }

    /// Why a deal earns nothing (the `no_commission` checks 2–5 that apply here).
    fn earns_nothing(&self, d: &Deal) -> Result<Option<&'static str>, String> {
        let lead = &self.leads[d.lead];
        let window = chrono::Duration::days(self.program.window_days);
        if !(lead.registered_at <= d.occurred_at && d.occurred_at < lead.registered_at + window) {
            return Ok(Some("outside the attribution window"));
        }
        if let (Some(m), Some(n)) = (d.subscription_month, self.program.recurring_months)
            && !(1..=n).contains(&i64::from(m))
        {
            return Ok(Some("beyond the recurring months"));
        }
        if self.converted(d)?.is_none() {
            return Ok(Some("no fx rate"));
        }
        Ok(None)
    }

    /// True when the document does not settle what this deal comes to: it earns
    /// nothing (window, month), yet its FX-converted revenue would exceed the limit;
    /// whether it is refused or recorded as `no_commission` is not said.
    pub fn is_ambiguous(&self, d: &Deal) -> bool {
        let over = matches!(self.converted(d), Ok(Some(r)) if r > BigInt::from(LIMIT));
        over && matches!(self.earns_nothing(d), Ok(Some(_)))
    }

    /// Records a conversion; `Err` (with the reason) if it is refused and nothing is
    /// recorded.
    pub fn convert(&mut self, d: &Deal) -> Result<Decided, String> {
        if d.subscription_month == Some(0) {
            return Err("subscription_month 0".into());
        }
        if d.revenue <= 0 || d.revenue > LIMIT {
            return Err("revenue out of range".into());
        }
        let chain = self.leads[d.lead].chain.clone();
        let n = chain.len();
        let mut c = Conversion {
            chain,
            occurred_at: d.occurred_at,
            revenue: d.revenue,
            program_revenue: 0,
            outcome: Outcome::NoCommission,
            pool: 0,
            hops: vec![],
            clawed: vec![0; n],
            refunded: 0,
        };
        if self.earns_nothing(d)?.is_none() {
            let revenue = self.converted(d)?.expect("earns, so converted");
            if revenue > BigInt::from(LIMIT) {
                return Err("FX-converted revenue over the limit".into());
            }
            let revenue = small(&revenue);
            // The closer's volume: this program's settled deals closed by the same
            // partner, in the deal's UTC month (of occurred_at), recorded before.
            let closer = &c.chain[n - 1];
            let volume: i64 = self
                .conversions
                .iter()
                .filter(|x| {
                    // Settled deals, and those whose pool is 0 (the only no_commission
                    // deals with a program revenue recorded).
                    (x.outcome == Outcome::Settled || (x.outcome == Outcome::NoCommission && x.program_revenue > 0))
                        && x.chain.last() == Some(closer)
                        && same_month(x.occurred_at, d.occurred_at)
                })
                .map(|x| x.program_revenue)
                .sum();
            let p = &self.program;
            let exact = p.exact_pool(&int(revenue), &int(volume), d.occurred_at, n);
            let pool = round(&exact, p.rounding);
            if pool > BigInt::from(LIMIT) {
                return Err("pool over the limit".into());
            }
            let pool = small(&pool);
            if pool == 0 {
                // "the pool is 0": no_commission (commission-rules.md, check 6), and it
                // still counts toward the closer's volume ("Tiers").
                c.program_revenue = revenue;
                self.conversions.push(c);
                return Ok(Decided { outcome: Outcome::NoCommission, pool: 0, hops: vec![] });
            }
            let hops = allocate(pool, &p.split.weights(n));
            let used: i64 = self
                .conversions
                .iter()
                .filter(|x| x.outcome == Outcome::Settled && same_month(x.occurred_at, d.occurred_at))
                .map(|x| x.pool)
                .sum();
            let outside = d.occurred_at < p.valid_from || p.valid_until.is_some_and(|u| d.occurred_at >= u);
            let over_budget = p.budget.is_some_and(|max| used + pool > max);
            let out_of_range =
                p.payment_range.is_some_and(|(min, max)| hops.iter().any(|&h| h != 0 && !(min..=max).contains(&h)));
            c.outcome = if outside || over_budget || out_of_range { Outcome::Held } else { Outcome::Settled };
            c.program_revenue = revenue;
            c.pool = pool;
            c.hops = hops;
        }
        let decided = Decided {
            outcome: c.outcome,
            pool: c.pool,
            hops: if c.outcome == Outcome::Settled { c.hops.clone() } else { vec![] },
        };
        self.conversions.push(c);
        Ok(decided)
    }

    /// Conversions recorded so far.
    pub fn conversions(&self) -> usize {
        self.conversions.len()
    }

    /// The chain of conversion `i`.
    pub fn chain(&self, i: usize) -> &[String] {
        &self.conversions[i].chain
    }

    /// Revenue of conversion `i` not refunded yet (its own currency).
    pub fn left(&self, i: usize) -> i64 {
        let c = &self.conversions[i];
        c.revenue - c.refunded
    }

    /// The cumulative clawback target, exact and rounded, of a conversion with `pool`
    /// and `revenue` once `refunded` of it is refunded: `pool × refunded / revenue`
    /// rounded by the pool rounding, at most the pool; exactly the pool when all of the
    /// revenue is refunded.
    pub fn target(pool: i64, refunded: i64, revenue: i64, rounding: Rounding) -> (Q, i64) {
        let exact = int(pool) * int(refunded) / int(revenue);
        if refunded == revenue {
            return (exact, pool);
        }
        (exact.clone(), small(&round(&exact, rounding)).min(pool))
    }

    /// Records a refund of conversion `i`; the clawback of each hop (0 where none), or
    /// `Err` if it is refused.
    pub fn refund(&mut self, i: usize, size: &RefundSize) -> Result<Vec<i64>, String> {
        let rounding = self.program.rounding;
        let c = &mut self.conversions[i];
        let left = c.revenue - c.refunded;
        let amount = match size {
            RefundSize::Amount(a) => *a,
            RefundSize::Fraction(f) => {
                let f = decimal(f)?;
                if !(f.is_positive() && f <= int(1)) {
                    return Err("fraction not in (0, 1]".into());
                }
                let a = small(&round(&(int(c.revenue) * f), rounding));
                if a == 0 {
                    return Err("the fraction rounds to nothing".into());
                }
                a
            }
            RefundSize::Full => left,
        };
        if amount <= 0 {
            return Err("nothing to refund".into());
        }
        if amount > left {
            return Err("exceeds what is not yet refunded".into());
        }
        c.refunded += amount;
        let n = c.chain.len();
        if c.outcome != Outcome::Settled {
            return Ok(vec![0; n]);
        }
        let (_, target) = Self::target(c.pool, c.refunded, c.revenue, rounding);
        let already: i64 = c.clawed.iter().sum();
        let delta = (target - already).max(0);
        let holds: Vec<Q> = c.hops.iter().zip(&c.clawed).map(|(h, k)| int(h - k)).collect();
        let parts = allocate(delta, &holds);
        for (k, p) in c.clawed.iter_mut().zip(&parts) {
            *k += p;
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_of_exact_halves_and_hairs() {
        let q = |s: &str| decimal(s).unwrap();
        let r = |s: &str, m| small(&round(&q(s), m));
        use Rounding::*;
        for (x, f, z, e, a) in [
            ("2.5", 2, 2, 2, 3),
            ("3.5", 3, 3, 4, 4),
            ("-2.5", -3, -2, -2, -3),
            ("-2.4", -3, -2, -2, -2),
            ("572.5000000000000005", 572, 572, 573, 573),
            ("7", 7, 7, 7, 7),
        ] {
            assert_eq!([r(x, Floor), r(x, TowardZero), r(x, HalfEven), r(x, HalfAwayFromZero)], [f, z, e, a], "{x}");
        }
    }

    #[test]
    fn the_documented_allocations() {
        let w = |xs: &[i64]| xs.iter().map(|&x| int(x)).collect::<Vec<_>>();
        assert_eq!(allocate(100, &w(&[1, 1, 1])), [34, 33, 33]);
        assert_eq!(allocate(123_457, &w(&[30, 20, 50])), [37_037, 24_691, 61_729]);
        assert_eq!(allocate(5, &w(&[0, 0])), [0, 5]);
    }
}
