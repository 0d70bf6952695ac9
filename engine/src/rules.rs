//! A program's rules: their validation at publication, the inputs of one deal's pool
//! ([`Deal`]) and the rules in plain language ([`ProgramSpec::explain`]). The arithmetic
//! that prices a deal is in [`crate::arith`], named per rule version.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::model::{Position, ProgramSpec, SplitRule, TierMode};

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
        if s.until < s.from {
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
            self.allocation().name()
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
