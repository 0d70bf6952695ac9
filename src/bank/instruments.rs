//! Payout instruments: where a partner is paid on the bank rail (account holder, IBAN,
//! optional BIC, currency), and the vendor's own account the payments leave from. Bank
//! details are personal data: they are kept beside the log (the `aux` keyspace, as
//! webhook secrets are), never in it and never in an audit bundle, and can be erased.
//! The log names an instrument by a salted hash ([`reference`]), so it still verifies
//! once the details and their salt are gone.

use chrono::{DateTime, Utc};
use iban::IbanLike;
use serde::{Deserialize, Serialize};
use settle_mandates::money::Currency;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::service::Service;

/// Where the instruments of partner `p` are kept: `bank/instrument/<p>/<reference>`.
fn prefix(partner: &str) -> Vec<u8> {
    format!("bank/instrument/{partner}/").into_bytes()
}

/// Where the vendor's (the debtor's) account is kept.
const DEBTOR_KEY: &[u8] = b"bank/debtor";

/// Domain separation of the hash of an instrument.
const DOMAIN: &[u8] = b"settle/payout-instrument/v1\n";

/// Longest account holder or debtor name, characters (ISO 20022 `Max140Text`).
pub const MAX_NAME_CHARS: usize = 140;

/// A bank account, as given: holder, IBAN, optional BIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The account holder's name, as the bank knows it (1..=140 characters).
    pub holder: String,
    /// IBAN, with or without spaces (checked: country format and mod-97 check digits).
    pub iban: String,
    /// BIC of the holder's bank (8 or 11 characters), when the bank needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bic: Option<String>,
}

impl Account {
    /// The account checked and in its canonical form: the holder's name trimmed, the IBAN
    /// in its electronic form (no spaces, upper case), the BIC upper case.
    pub fn checked(self) -> Result<Self, Error> {
        let holder = self.holder.trim().to_owned();
        let n = holder.chars().count();
        if n == 0 || n > MAX_NAME_CHARS || holder.chars().any(char::is_control) {
            return Err(Error::rejected(format!(
                "an account holder's name is 1..={MAX_NAME_CHARS} characters, without control characters"
            )));
        }
        let iban: iban::Iban = (self.iban.trim().to_ascii_uppercase().parse())
            .map_err(|e| Error::rejected(format!("'{}' is not a valid IBAN: {e}", self.iban)))?;
        let bic = self.bic.map(|b| b.trim().to_ascii_uppercase());
        if let Some(b) = &bic {
            check_bic(b)?;
        }
        Ok(Self { holder, iban: iban.electronic_str().to_owned(), bic })
    }

    /// The IBAN with all but its country code and last four characters hidden.
    #[must_use]
    pub fn masked_iban(&self) -> String {
        let n = self.iban.len();
        let (head, tail) = (&self.iban[..2.min(n)], &self.iban[n.saturating_sub(4)..]);
        format!("{head}{}{tail}", "*".repeat(n.saturating_sub(6)))
    }
}

/// A BIC as ISO 9362 (and the pain.001 schema's `BICFIDec2014Identifier`) writes it:
/// four letters or digits (the institution), two letters (the country), two letters or
/// digits (the location), and optionally three more (the branch).
fn check_bic(b: &str) -> Result<(), Error> {
    let ok = (b.len() == 8 || b.len() == 11)
        && b.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && b.as_bytes()[4..6].iter().all(u8::is_ascii_uppercase);
    if ok { Ok(()) } else { Err(Error::rejected(format!("'{b}' is not a BIC (8 or 11 characters, ISO 9362)"))) }
}

/// A partner's instrument as stored beside the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// Its reference: what the log names.
    pub instrument: String,
    /// The partner.
    pub partner: String,
    /// The currency it is paid in.
    pub currency: Currency,
    /// The account.
    pub account: Account,
    /// The salt of the reference (hex, 32 bytes).
    pub salt: String,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
}

/// What the API shows of an instrument: its reference, the holder, the IBAN masked.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "PayoutInstrument")]
pub struct View {
    /// Its reference (`pi_…`), as the log names it.
    pub instrument: String,
    /// The partner.
    pub partner: String,
    /// The currency it is paid in.
    pub currency: String,
    /// The account holder.
    pub holder: String,
    /// The IBAN, all but its country and last four characters hidden.
    pub iban: String,
    /// The BIC, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bic: Option<String>,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
}

impl From<&Stored> for View {
    fn from(s: &Stored) -> Self {
        Self {
            instrument: s.instrument.clone(),
            partner: s.partner.clone(),
            currency: s.currency.code().to_owned(),
            holder: s.account.holder.clone(),
            iban: s.account.masked_iban(),
            bic: s.account.bic.clone(),
            registered_at: s.registered_at,
        }
    }
}

/// The reference of `account` as partner `partner`'s instrument in `currency`, salted
/// with `salt`: `pi_` and the hex SHA-256 of a domain tag, the salt and the RFC 8785
/// JSON of `{"bic", "currency", "holder", "iban", "partner"}` (docs/payouts.md). Whoever
/// holds the details and the salt can check it; once they are erased, it names nothing.
pub fn reference(salt: &[u8; 32], partner: &str, currency: Currency, account: &Account) -> Result<String, Error> {
    let details = serde_json::json!({
        "bic": account.bic,
        "currency": currency.code(),
        "holder": account.holder,
        "iban": account.iban,
        "partner": partner,
    });
    let jcs = settle_mandates::jcs::to_vec(&details).map_err(Error::internal)?;
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(salt);
    h.update(&jcs);
    Ok(format!("pi_{}", hex::encode(h.finalize())))
}

/// Stores `account` as partner `partner`'s instrument in `currency`, salted with `salt`
/// (synced before it returns), for a `payout_instrument_registered` fact to name.
pub fn put(
    svc: &Service,
    partner: &str,
    currency: Currency,
    account: Account,
    salt: [u8; 32],
    at: DateTime<Utc>,
) -> Result<Stored, Error> {
    svc.writable()?;
    let account = account.checked()?;
    let instrument = reference(&salt, partner, currency, &account)?;
    let s = Stored {
        instrument,
        partner: partner.to_owned(),
        currency,
        account,
        salt: hex::encode(salt),
        registered_at: at,
    };
    let key = [prefix(partner), s.instrument.as_bytes().to_vec()].concat();
    svc.ledger().aux_put(&key, &serde_json::to_vec(&s).map_err(Error::internal)?, true).map_err(Error::internal)?;
    Ok(s)
}

/// Partner `partner`'s instrument `instrument`, if its details are kept.
pub fn get(svc: &Service, partner: &str, instrument: &str) -> Result<Option<Stored>, Error> {
    let key = [prefix(partner), instrument.as_bytes().to_vec()].concat();
    let Some(v) = svc.ledger().aux_get(&key).map_err(Error::internal)? else { return Ok(None) };
    serde_json::from_slice(&v).map(Some).map_err(Error::internal)
}

/// Erases the details of partner `partner`'s instruments (all of them, or only
/// `instrument`): how many were kept.
pub fn erase(svc: &Service, partner: &str, instrument: Option<&str>) -> Result<usize, Error> {
    svc.writable()?;
    let keys: Vec<Vec<u8>> = match instrument {
        Some(i) => vec![[prefix(partner), i.as_bytes().to_vec()].concat()],
        None => svc
            .ledger()
            .aux_scan(&prefix(partner), usize::MAX)
            .map_err(Error::internal)?
            .into_iter()
            .map(|(k, _)| k)
            .collect(),
    };
    let mut n = 0;
    for k in &keys {
        n += usize::from(svc.ledger().aux_get(k).map_err(Error::internal)?.is_some());
    }
    let removes: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    svc.ledger().aux_apply(&[], &removes, true).map_err(Error::internal)?;
    Ok(n)
}

/// The vendor's own account, the debtor of every payment file, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debtor {
    /// The vendor's name, as its bank knows it.
    pub name: String,
    /// Its account.
    pub account: Account,
}

/// Configures the debtor's account (synced before it returns).
pub fn set_debtor(svc: &Service, name: &str, account: Account) -> Result<Debtor, Error> {
    svc.writable()?;
    let holder = Account { holder: name.to_owned(), ..account }.checked()?;
    let d = Debtor { name: holder.holder.clone(), account: holder };
    svc.ledger()
        .aux_put(DEBTOR_KEY, &serde_json::to_vec(&d).map_err(Error::internal)?, true)
        .map_err(Error::internal)?;
    Ok(d)
}

/// The debtor's account, if configured.
pub fn debtor(svc: &Service) -> Result<Option<Debtor>, Error> {
    let Some(v) = svc.ledger().aux_get(DEBTOR_KEY).map_err(Error::internal)? else { return Ok(None) };
    serde_json::from_slice(&v).map(Some).map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            holder: " Jane Doe ".into(),
            iban: "de89 3704 0044 0532 0130 00".into(),
            bic: Some("cobadeffxxx".into()),
        }
    }

    #[test]
    fn an_account_is_checked_and_made_canonical() {
        let a = account().checked().unwrap();
        assert_eq!(
            (a.holder.as_str(), a.iban.as_str(), a.bic.as_deref()),
            ("Jane Doe", "DE89370400440532013000", Some("COBADEFFXXX"))
        );
        assert_eq!(a.masked_iban(), "DE****************3000");
        // A wrong check digit, a wrong length, a bad BIC, an empty or too long name.
        for bad in [
            Account { iban: "DE88370400440532013000".into(), ..account() },
            Account { iban: "DE8937040044053201300".into(), ..account() },
            Account { bic: Some("COBA1EFF".into()), ..account() },
            Account { bic: Some("COBADEF".into()), ..account() },
            Account { holder: "  ".into(), ..account() },
            Account { holder: "x".repeat(141), ..account() },
            Account { holder: "a\nb".into(), ..account() },
        ] {
            assert!(bad.clone().checked().is_err(), "{bad:?}");
        }
    }

    /// The reference is the documented hash (docs/payouts.md), recomputed here from its
    /// parts: another salt, another reference; the details cannot be read back from it.
    #[test]
    fn the_reference_is_a_salted_hash_of_the_details() {
        let a = account().checked().unwrap();
        let usd: Currency = "USD".parse().unwrap();
        let r = reference(&[7; 32], "p01", usd, &a).unwrap();
        let jcs = br#"{"bic":"COBADEFFXXX","currency":"USD","holder":"Jane Doe","iban":"DE89370400440532013000","partner":"p01"}"#;
        let mut h = Sha256::new();
        h.update(b"settle/payout-instrument/v1\n");
        h.update([7u8; 32]);
        h.update(jcs);
        assert_eq!(r, format!("pi_{}", hex::encode(h.finalize())));
        assert_ne!(r, reference(&[8; 32], "p01", usd, &a).unwrap());
        assert!(!r.contains("DE89"));
        let vector = serde_json::json!({
            "domain": "settle/payout-instrument/v1\n",
            "salt_hex": hex::encode([7u8; 32]),
            "details_jcs": std::str::from_utf8(jcs).unwrap(),
            "reference": r,
        });
        crate::golden::check("bank/instrument.json", &vector);
    }
}
