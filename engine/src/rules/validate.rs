//! The validation of a program's rules at publication (and amendment): ids, text and
//! every number within its named limit, tiers ascending, shares at most 100 %.

use rust_decimal::Decimal;
use settle_mandates::money::MAX_MINOR_UNITS;

use super::RuleError;
use crate::model::{
    InvalidValue, MAX_DISPUTE_DAYS, MAX_HOLDING_DAYS, MAX_LEVELS, MAX_SPIFFS, MAX_TIERS, MAX_WINDOW_DAYS, PoolRule,
    ProgramSpec, SplitRule, check_id, check_text,
};

/// Validates a program's rules; totals over 100 % and the like are refused.
pub fn validate(spec: &ProgramSpec) -> Result<(), RuleError> {
    check_id("program", &spec.program).map_err(refused)?;
    if spec.holding_days > MAX_HOLDING_DAYS {
        return err(format!("holding_days over {MAX_HOLDING_DAYS}"));
    }
    if spec.attribution_window_days == 0 || spec.attribution_window_days > MAX_WINDOW_DAYS {
        return err(format!("attribution_window_days must be 1..={MAX_WINDOW_DAYS}"));
    }
    let days = |d: u32| (1..=MAX_DISPUTE_DAYS).contains(&d);
    if spec.disputes.is_some_and(|d| !days(d.window_days) || !days(d.response_days)) {
        return err(format!("disputes.window_days and disputes.response_days must be 1..={MAX_DISPUTE_DAYS}"));
    }
    pool(&spec.pool)?;
    check_text("program name", &spec.name).map_err(refused)?;
    for s in &spec.pool.spiffs {
        check_text("spiff name", &s.name).map_err(refused)?;
        if s.until < s.from {
            return err(format!("spiff '{}' ends before it starts", s.name));
        }
        nonneg("spiff.flat", s.flat)?;
    }
    bounds(spec)?;
    split(spec)
}

fn err(s: String) -> Result<(), RuleError> {
    Err(RuleError(s))
}

fn refused(e: InvalidValue) -> RuleError {
    RuleError(e.to_string())
}

/// An amount of the rules, if given, is between 0 and the largest amount.
fn nonneg(name: &str, v: Option<i64>) -> Result<(), RuleError> {
    match v {
        Some(x) if !(0..=MAX_MINOR_UNITS).contains(&x) => {
            err(format!("{name} must be between 0 and {MAX_MINOR_UNITS}"))
        }
        _ => Ok(()),
    }
}

/// The pool's amounts, and its tiers: few enough, ascending from 0, with a mode, and not
/// beside a percentage.
fn pool(p: &PoolRule) -> Result<(), RuleError> {
    nonneg("pool.flat", p.flat)?;
    nonneg("pool.cap", p.cap)?;
    nonneg("pool.floor", p.floor)?;
    if let (Some(c), Some(f)) = (p.cap, p.floor)
        && f > c
    {
        return err("pool.floor is above pool.cap".into());
    }
    if p.tiers.len() > MAX_TIERS || p.spiffs.len() > MAX_SPIFFS {
        return err("too many tiers or spiffs".into());
    }
    if !p.tiers.is_empty() {
        if p.tiers.iter().any(|t| !(0..=MAX_MINOR_UNITS).contains(&t.from)) {
            return err(format!("tier 'from' must be between 0 and {MAX_MINOR_UNITS}"));
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
    Ok(())
}

/// The standing authorisation's bounds: budget, payment range, validity.
fn bounds(spec: &ProgramSpec) -> Result<(), RuleError> {
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
    Ok(())
}

/// The split: shares or level rates at most 100 % in all, and a pool they can split.
fn split(spec: &ProgramSpec) -> Result<(), RuleError> {
    let p = &spec.pool;
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
            if rates.is_empty() || rates.len() > MAX_LEVELS {
                return err(format!("levels split needs 1..={MAX_LEVELS} rates"));
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
