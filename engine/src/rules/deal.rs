//! The inputs of one deal's pool: what the arithmetic of a rule version prices.

use chrono::{DateTime, Utc};

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
