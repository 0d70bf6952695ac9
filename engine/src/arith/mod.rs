//! The arithmetic of a rule version, by its name ([`Allocation`]): a deal's pool and
//! split, FX, a refund fraction, the cumulative clawback target and its split.
//!
//! [`v2`] (exact, in integers) prices everything recorded now; [`v1`] (decimal
//! division) only what older logs recorded, unchanged, so that they replay to the same
//! bytes. Every function here names the allocation it follows; nothing else in the
//! engine divides money.

pub mod v1;
pub mod v2;

use rust_decimal::Decimal;
use settle_mandates::money::{Amount, Currency, MoneyError, Rounding};

use crate::model::{Allocation, ProgramSpec};
use crate::rules::Deal;

/// A priced deal: its pool in minor units and the part of each hop (Σ parts = pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The pool, rounded by the rules' pool rounding.
    pub pool: i64,
    /// Each hop's part, hop 0 = originator.
    pub parts: Vec<i64>,
}

/// Prices a deal under `spec`: its pool and split. Refuses a pool beyond
/// [`settle_mandates::money::MAX_MINOR_UNITS`].
pub fn price(spec: &ProgramSpec, deal: &Deal) -> Result<Priced, MoneyError> {
    let (pool, parts) = match spec.allocation() {
        Allocation::V1 => v1::price(spec, deal)?,
        Allocation::V2 => {
            let exact = v2::exact_pool(spec, deal);
            let pool = Amount::from_ratio(exact.numerator, v2::POOL_DENOMINATOR, spec.currency, spec.pool_rounding)?
                .minor_units();
            (pool, v2::allocate(pool, &exact.weights))
        }
    };
    assert_eq!(parts.iter().sum::<i64>(), pool, "split does not sum to the pool");
    Ok(Priced { pool, parts })
}

/// `amount × factor` in `to`'s minor units, rounded once by `rounding`: an FX conversion
/// of revenue (`factor` = the rate) or a fraction of it (`to` = its own currency).
pub fn times(
    allocation: Allocation,
    amount: Amount,
    factor: Decimal,
    to: Currency,
    rounding: Rounding,
) -> Result<Amount, MoneyError> {
    match allocation {
        Allocation::V1 => v1::times(amount, factor, to, rounding),
        Allocation::V2 => amount.times_exact(factor, to, rounding),
    }
}

/// The cumulative clawback target of a conversion: `pool × refunded / revenue`, rounded
/// by `rounding`, at most the pool, and exactly the pool once all is refunded.
pub fn clawback_target(
    allocation: Allocation,
    pool: i64,
    refunded: i64,
    revenue: i64,
    cur: Currency,
    rounding: Rounding,
) -> Result<i64, MoneyError> {
    if refunded == revenue {
        return Ok(pool);
    }
    let target = match allocation {
        Allocation::V1 => v1::clawback_target(pool, refunded, revenue, cur, rounding)?,
        Allocation::V2 => {
            Amount::from_ratio(i128::from(pool) * i128::from(refunded), i128::from(revenue), cur, rounding)?
                .minor_units()
        }
    };
    Ok(target.min(pool))
}

/// Splits a clawback of `delta` in proportion to what each hop still `holds`, by
/// largest remainder (ties to the lower hop).
#[must_use]
pub fn allocate_clawback(allocation: Allocation, delta: i64, holds: &[i64]) -> Vec<i64> {
    match allocation {
        Allocation::V1 => v1::allocate_clawback(delta, holds),
        Allocation::V2 => v2::allocate(delta, &holds.iter().map(|h| i128::from(*h)).collect::<Vec<_>>()),
    }
}
