//! Deciding payout instruments: a partner's bank account for the `bank` rail, registered
//! (by a salted hash of its details, which the log never holds) or removed.

use settle_mandates::money::Currency;

use super::{Apply, Decider};
use crate::decision::Rejection;
use crate::model::check_id;

/// Prefix of an instrument's reference.
const PREFIX: &str = "pi_";

/// Whether `id` is an instrument reference: `pi_` and 64 lowercase hex digits.
fn check_reference(id: &str) -> Result<(), Rejection> {
    let hex = id.strip_prefix(PREFIX).unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Rejection::Invalid(format!(
            "payout instrument '{id}' must be '{PREFIX}' and 64 lowercase hex digits (a salted SHA-256)"
        )));
    }
    Ok(())
}

impl Decider<'_> {
    /// `payout_instrument_registered`: the partner's instrument from now on (replacing
    /// any earlier one), in its program's currency.
    pub(super) fn instrument_registered(
        &mut self,
        partner: String,
        instrument: String,
        currency: Currency,
    ) -> Result<Apply, Rejection> {
        check_id("partner", &partner)?;
        check_reference(&instrument)?;
        let p = self.st.partners.get(&partner).ok_or_else(|| Rejection::NotFound(format!("partner '{partner}'")))?;
        let paid_in = self.st.program(&p.program)?.latest().spec.currency;
        if currency != paid_in {
            return Err(Rejection::Invalid(format!(
                "partner '{partner}' is paid in {paid_in} (its program's currency), not {currency}"
            )));
        }
        Ok(Box::new(move |s| {
            if let Some(p) = s.partners.get_mut(&partner) {
                p.instrument = Some(instrument);
            }
        }))
    }

    /// `payout_instrument_removed`: the partner's current instrument, removed.
    pub(super) fn instrument_removed(&mut self, partner: String, instrument: String) -> Result<Apply, Rejection> {
        check_id("partner", &partner)?;
        let p = self.st.partners.get(&partner).ok_or_else(|| Rejection::NotFound(format!("partner '{partner}'")))?;
        if p.instrument.as_deref() != Some(instrument.as_str()) {
            return Err(Rejection::NotFound(format!("payout instrument '{instrument}' of partner '{partner}'")));
        }
        Ok(Box::new(move |s| {
            if let Some(p) = s.partners.get_mut(&partner) {
                p.instrument = None;
            }
        }))
    }
}
