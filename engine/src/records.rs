//! The records the state keeps of every lead and conversion for its life: a lead and
//! its referral chain ([`Lead`]), a conversion and its hops ([`Conversion`], [`Hop`],
//! [`HopStatus`]), the split a held conversion pays on release ([`HeldDeal`]), and where a
//! hop's payment mandate lies in the log. The packed tables (`table`) store these; the
//! state (`state`) holds the tables.

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use settle_mandates::money::Amount;

use crate::ids::{mandate_id, mandate_seq};

/// A lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lead {
    /// Program.
    pub program: CompactString,
    /// Customer key.
    pub customer: CompactString,
    /// Referral chain, originator first.
    pub chain: Vec<CompactString>,
    /// Registered at.
    pub registered_at: DateTime<Utc>,
    /// The owning lead when this one is a duplicate.
    pub duplicate_of: Option<CompactString>,
}

/// Where one hop's money is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopStatus {
    /// In the holding period.
    Held,
    /// Payable.
    Payable,
    /// In an open payout batch: sent to a rail, not yet confirmed.
    Batched,
    /// Settled on a rail.
    Paid,
    /// Owed nothing, so no mandate: a hop whose part is 0 under
    /// `largest_remainder.v2` (v1 signed a mandate of 0 for it).
    Nothing,
}

/// One hop of a settled conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Payee.
    pub partner: CompactString,
    /// Amount of the mandate, minor units.
    pub amount: i64,
    /// Clawed back so far, minor units.
    pub clawed: i64,
    /// Status.
    pub status: HopStatus,
    /// End of hold, Unix seconds.
    pub payable_at: i64,
}

/// A conversion that produced mandates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    /// Conversion id.
    pub id: CompactString,
    /// Program (empty for a deal whose lead was never registered: no commission).
    pub program: CompactString,
    /// Rule version used (0 with no program).
    pub rule_version: u32,
    /// Revenue in its own currency, minor units.
    pub revenue: Amount,
    /// Refunded so far, same currency.
    pub refunded: i64,
    /// Pool, program currency.
    pub pool: Amount,
    /// The hops (empty when held or no commission).
    pub hops: Vec<Hop>,
    /// The fact whose derived events hold the mandates when it is not the conversion's
    /// own: the `conversion_released` that settled it after a hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<u64>,
    /// What a held conversion is paid from if it is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Box<HeldDeal>>,
}

impl Conversion {
    /// A conversion just recorded: nothing refunded, no hops yet.
    pub(crate) fn recorded(id: &str, program: CompactString, rule_version: u32, revenue: Amount, pool: Amount) -> Self {
        Self {
            id: id.into(),
            program,
            rule_version,
            revenue,
            refunded: 0,
            pool,
            hops: Vec::new(),
            released_at: None,
            held: None,
        }
    }

    /// Id of hop `hop`'s payment mandate, for this conversion recorded at `seq`.
    #[must_use]
    pub fn mandate_id(&self, seq: u64, hop: usize) -> String {
        mandate_id(self.released_at.unwrap_or(seq), hop)
    }
}

/// A deal's split as computed when it was recorded: what a held conversion pays on release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDeal {
    /// Payees, originator first.
    pub chain: Vec<String>,
    /// Each hop's part of the pool, minor units (Σ = pool).
    pub parts: Vec<i64>,
    /// When the deal was won.
    pub occurred_at: DateTime<Utc>,
    /// Revenue in the program's currency, minor units (counts toward the closer's volume).
    pub revenue: i64,
    /// Why it is held.
    pub reason: String,
}

/// Position name of hop `i` of `n`.
#[must_use]
pub fn role_of(i: usize, n: usize) -> &'static str {
    match (i, n) {
        (_, 1) => "sole",
        (0, _) => "originator",
        (i, n) if i + 1 == n => "closer",
        _ => "intermediary",
    }
}

/// The log position of the payment mandate of hop `hop` of conversion `c`, whose
/// mandates follow the fact at `seq` (the conversion, or its release): one record per
/// hop that has a mandate, in hop order (`None` for a hop without one).
#[must_use]
pub fn mandate_seq_of(c: &Conversion, seq: u64, hop: usize) -> Option<u64> {
    if c.hops.get(hop)?.status == HopStatus::Nothing {
        return None;
    }
    let before = c.hops[..hop].iter().filter(|h| h.status != HopStatus::Nothing).count();
    mandate_seq(seq, before)
}
