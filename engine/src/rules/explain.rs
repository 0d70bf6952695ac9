//! The rules in plain language ([`ProgramSpec::explain`]): one sentence per line, so
//! that an agent or a finance reader can explain any number the engine produced.

use settle_mandates::money::{Amount, Currency};

use crate::model::{Percent, Position, ProgramSpec, SplitRule, TierMode};

/// An amount of the program's currency in words (`12.50 USD`).
fn money(m: i64, cur: Currency) -> String {
    Amount::from_minor(m, cur)
        .map_or_else(|_| format!("{m} minor units"), |a| format!("{} {}", a.to_decimal_string(), cur.code()))
}

/// A percentage in words (`2.5%`).
fn pct(p: Percent) -> String {
    format!("{}%", p.value())
}

impl ProgramSpec {
    /// The rules in plain language, one sentence per line, so that an agent or a finance
    /// reader can explain any number the engine produced from them.
    #[must_use]
    pub fn explain(&self) -> Vec<String> {
        let cur = self.currency;
        let pool = self.pool_terms();
        let mut out = Vec::new();
        out.push(format!("Pool of a deal: {}.", if pool.is_empty() { "nothing".to_owned() } else { pool.join("; ") }));
        self.pool_limits(&mut out);
        let rounding = serde_json::to_value(self.pool_rounding)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push(format!("The pool is rounded to minor units of {} by {rounding}.", cur.code()));
        out.push(self.split_sentence());
        out.push(format!(
            "Shares are exact, then brought to minor units by largest remainder ({}): the hops always sum to the pool exactly.",
            self.allocation().name()
        ));
        if let Some(r) = &self.payment_range {
            out.push(format!("Each hop's payment must lie between {} and {}; otherwise the deal is held with the reason and issues no mandates.", money(r.min, cur), money(r.max, cur)));
        }
        out.push(format!(
            "Commissions are held {} days (the refund window) before they are payable; a lead's deals earn for {} days after its registration.",
            self.holding_days, self.attribution_window_days
        ));
        let d = self.dispute_rules();
        out.push(format!(
            "A partner may dispute a commission for {} days after it (a missing deal: after its lead's attribution window); the vendor answers within {} days, or the dispute is flagged overdue.",
            d.window_days, d.response_days
        ));
        out
    }

    /// What a deal's pool is made of: tiers or a percentage, a flat amount, level rates,
    /// bonuses.
    fn pool_terms(&self) -> Vec<String> {
        let cur = self.currency;
        let p = &self.pool;
        let mut pool = Vec::new();
        if !p.tiers.is_empty() {
            let bands: Vec<String> =
                p.tiers.iter().map(|t| format!("{} from {}", pct(t.percent), money(t.from, cur))).collect();
            let mode = match p.tier_mode {
                Some(TierMode::Marginal) => "each part of the deal at the rate of its volume band",
                _ => "the whole deal at the rate of the tier the closer's monthly volume reaches",
            };
            pool.push(format!("volume tiers ({}), {mode}", bands.join(", ")));
        } else if let Some(r) = p.percent {
            pool.push(format!("{} of revenue", pct(r)));
        }
        if let Some(f) = p.flat {
            pool.push(format!("{} flat per deal", money(f, cur)));
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
                extra.push(money(f, cur));
            }
            pool.push(format!(
                "plus bonus '{}' ({}) for deals from {} until {}",
                s.name,
                extra.join(" + "),
                s.from.to_rfc3339(),
                s.until.to_rfc3339()
            ));
        }
        pool
    }

    /// The limits of a pool: cap, floor, recurring months, monthly budget.
    fn pool_limits(&self, out: &mut Vec<String>) {
        let cur = self.currency;
        let p = &self.pool;
        if let Some(c) = p.cap {
            out.push(format!("The pool is capped at {} per deal.", money(c, cur)));
        }
        if let Some(f) = p.floor {
            out.push(format!("The pool is at least {} per deal.", money(f, cur)));
        }
        if let Some(m) = p.recurring_months {
            out.push(format!("Subscriptions earn for their first {m} months only."));
        }
        if let Some(b) = &self.budget {
            out.push(format!("Pools are limited to {} per calendar month (UTC); a deal that would exceed it is held with the reason and issues no mandates.", money(b.max, cur)));
        }
    }

    /// How the pool is split, in one sentence.
    fn split_sentence(&self) -> String {
        match &self.split {
            SplitRule::Shares { originator, intermediaries, closer, remaining } => format!(
                "Split: originator {}, intermediaries {} shared equally, closer {}; the rest (and the share of an absent position) goes to the {}.",
                pct(*originator),
                pct(*intermediaries),
                pct(*closer),
                match remaining {
                    Position::Originator => "originator",
                    Position::Intermediaries => "intermediaries",
                    Position::Closer => "closer",
                }
            ),
            SplitRule::Levels { .. } => {
                "Split: each level earns its rate of revenue (level 1 = closer); levels beyond the rates earn nothing."
                    .to_owned()
            }
        }
    }
}
