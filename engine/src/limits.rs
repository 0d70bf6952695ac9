//! The named limits of the log's vocabulary (ids, text, chains, rules, books), and the
//! checks of ids and free text against them: the lowest layer of the crate (it names
//! nothing else in it), which customer keys, the rules' validation and every decision
//! use alike. `model` re-exports all of it, where it always was.

/// Most hops in a referral chain.
pub const MAX_HOPS: usize = 8;
/// Most tiers in a pool rule.
pub const MAX_TIERS: usize = 16;
/// Most spiffs in a pool rule.
pub const MAX_SPIFFS: usize = 16;
/// Most levels in a per-level split.
pub const MAX_LEVELS: usize = MAX_HOPS;
/// Most partners in one program (its open mandate lists them all).
pub const MAX_PARTNERS_PER_PROGRAM: usize = 4096;
/// Longest free text (names, reasons, rail codes), bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most mandate ids in one `holds_released` event (more are split over several).
pub const MAX_RELEASED_PER_EVENT: usize = 10_000;
/// Longest id, bytes.
pub const MAX_ID_BYTES: usize = 128;
/// What an id is: 1..=[`MAX_ID_BYTES`] bytes of `A-Z a-z 0-9 . _ : -`, as
/// [`check_id`] checks it, as a regular expression.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";
/// Most mandates named in one settlement.
pub const MAX_SETTLEMENT_MANDATES: usize = 10_000;
/// The rail of payouts by bank transfer: its batches pay the partner's registered payout
/// instrument, and a bank may return a batch it paid.
pub const BANK_RAIL: &str = "bank";
/// The largest magnitude of any total of a partner's book (earned, clawed back, on hold,
/// payable, in payout, paid), minor units: a fact that would take `earned` past it is
/// refused, so a total never wraps and is always shown as an amount.
pub const MAX_BOOK_TOTAL: i64 = settle_mandates::money::MAX_MINOR_UNITS;
/// Longest holding period, days.
pub const MAX_HOLDING_DAYS: u32 = 365;
/// Longest attribution window, days.
pub const MAX_WINDOW_DAYS: u32 = 730;

/// A value a check refused: what is wrong with it, in words. A decision refuses its fact
/// as invalid with these words (`Rejection::Invalid`), the rules' validation its rules
/// (`RuleError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Checks an id: 1..=128 bytes of `[A-Za-z0-9._:-]`.
pub fn check_id(what: &str, id: &str) -> Result<(), InvalidValue> {
    if id.is_empty()
        || id.len() > MAX_ID_BYTES
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(InvalidValue(format!(
            "{what} id '{id}' must be 1..={MAX_ID_BYTES} characters of A-Z a-z 0-9 . _ : -"
        )));
    }
    Ok(())
}

/// Checks free text: at most [`MAX_TEXT_BYTES`] bytes.
pub fn check_text(what: &str, s: &str) -> Result<(), InvalidValue> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(InvalidValue(format!("{what} is longer than {MAX_TEXT_BYTES} bytes")));
    }
    Ok(())
}
