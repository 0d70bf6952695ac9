//! The ids the engine gives what it signs, and where their records lie in the log: a
//! payment mandate is named after the fact that paid it and its hop (`md_<seq>_<hop>`),
//! a clawback after its refund (`cb_<seq>_<hop>`), an adjustment after the dispute's
//! resolution and its place in it (`aj_<seq>_<n>`), an open mandate after its program and
//! fact (`om_<program>_<seq>`).

/// Mandate id of hop `hop` of the conversion recorded at `seq`.
#[must_use]
pub fn mandate_id(seq: u64, hop: usize) -> String {
    format!("md_{seq}_{hop}")
}

/// Parses a mandate id back into (conversion seq, hop).
#[must_use]
pub fn parse_mandate_id(id: &str) -> Option<(u64, usize)> {
    let rest = id.strip_prefix("md_")?;
    let (s, h) = rest.split_once('_')?;
    Some((s.parse().ok()?, h.parse().ok()?))
}

/// Log position of the `position`-th `mandate_issued` record after the fact at `seq`
/// (the conversion, or its release: its derived events start with its mandates, in hop
/// order, one per hop owed something).
#[must_use]
pub fn mandate_seq(seq: u64, position: usize) -> Option<u64> {
    seq.checked_add(1)?.checked_add(u64::try_from(position).ok()?)
}

/// Id of the clawback of hop `hop` that the refund recorded at `seq` caused.
#[must_use]
pub fn clawback_id(seq: u64, hop: usize) -> String {
    format!("cb_{seq}_{hop}")
}

/// Parses a clawback id back into (refund seq, hop).
#[must_use]
pub fn parse_clawback_id(id: &str) -> Option<(u64, usize)> {
    let rest = id.strip_prefix("cb_")?;
    let (s, h) = rest.split_once('_')?;
    Some((s.parse().ok()?, h.parse().ok()?))
}

/// Id of the `n`-th adjustment mandate of the dispute resolution recorded at `seq`.
#[must_use]
pub fn adjustment_id(seq: u64, n: usize) -> String {
    format!("aj_{seq}_{n}")
}

/// Id of the open mandate of `program` (re)issued by the fact at `seq`.
#[must_use]
pub fn open_mandate_id(program: &str, seq: u64) -> String {
    format!("om_{program}_{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mandate_id_parses_back() {
        assert_eq!(mandate_id(17, 3), "md_17_3");
        assert_eq!(parse_mandate_id(&mandate_id(17, 3)), Some((17, 3)));
        assert_eq!(parse_mandate_id(&clawback_id(17, 3)), None);
        assert_eq!(parse_mandate_id("md_x_1"), None);
        assert_eq!(mandate_seq(u64::MAX, 0), None);
        assert_eq!(mandate_seq(9, 2), Some(12));
        assert_eq!(open_mandate_id("growth", 4), "om_growth_4");
        assert_eq!(parse_clawback_id(&clawback_id(9, 1)), Some((9, 1)));
        assert_eq!(parse_clawback_id(&mandate_id(9, 1)), None);
        assert_eq!(adjustment_id(30, 2), "aj_30_2");
    }
}
