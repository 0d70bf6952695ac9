//! The bank rail: partners' payout instruments kept beside the log
//! ([`instruments`]), ISO 20022 payment files of payout batches ([`pain001`]), and the
//! bank's notifications read back ([`camt054`]) and reconciled to the batches and their
//! mandates ([`reconcile`]). docs/payouts.md tells the flow and every field.

pub mod camt054;
pub mod instruments;
pub mod pain001;
pub mod reconcile;

use chrono::{DateTime, NaiveDate, Utc};
use settle_engine::Envelope;
use settle_engine::model::{BANK_RAIL, Event};
use settle_engine::state::BatchStatus;
use settle_mandates::money::{Amount, Currency};

use crate::error::Error;
use crate::service::Service;

/// A payout batch on the bank rail, as its records tell it.
#[derive(Debug, Clone)]
pub struct BankBatch {
    /// Batch id.
    pub id: String,
    /// Partner paid.
    pub partner: String,
    /// What the bank is to pay.
    pub amount: Amount,
    /// Part of the mandates' value absorbed by earlier clawbacks of paid money.
    pub offset: Amount,
    /// The partner's instrument it pays.
    pub instrument: String,
    /// Its mandates, in its order.
    pub mandate_ids: Vec<String>,
    /// When it was made (log time).
    pub at: DateTime<Utc>,
    /// Where it is.
    pub status: BatchStatus,
}

/// Payout batch `id`, which must be on the bank rail: from the state and its
/// `payout_batch_created` record.
pub fn bank_batch(svc: &Service, id: &str) -> Result<BankBatch, Error> {
    let (rail, seq, status) = svc
        .with_state(|s| s.batches.get(id).map(|b| (b.rail.clone(), b.seq, b.status)))
        .ok_or_else(|| Error::not_found(format!("payout batch '{id}' not found")))?;
    if rail != BANK_RAIL {
        return Err(Error::rejected(format!("payout batch '{id}' went to rail '{rail}', not '{BANK_RAIL}'")));
    }
    let read = |seq: u64| -> Result<Envelope, Error> {
        let r = svc.ledger().record(seq).map_err(Error::internal)?;
        let r = r.ok_or_else(|| Error::internal(format!("record {seq} of payout batch '{id}' is missing")))?;
        Envelope::from_bytes(&r.event).map_err(Error::internal)
    };
    let created = read(seq + 1)?;
    match created.event {
        Event::PayoutBatchCreated {
            batch, partner, amount, offset, instrument: Some(instrument), mandate_ids, ..
        } if batch == id => {
            Ok(BankBatch { id: batch, partner, amount, offset, instrument, mandate_ids, at: created.at, status })
        }
        _ => Err(Error::internal(format!("record {} is not payout batch '{id}' on the bank rail", seq + 1))),
    }
}

/// The payments of payout batches `ids` on the bank rail, each to be executed on
/// `execution_date` (else on the day it was made), and the time of the latest.
pub fn payments(
    svc: &Service,
    ids: &[String],
    execution_date: Option<NaiveDate>,
) -> Result<(Vec<pain001::Payment>, DateTime<Utc>), Error> {
    let mut out = Vec::with_capacity(ids.len());
    let mut latest = DateTime::<Utc>::MIN_UTC;
    for id in ids {
        let b = bank_batch(svc, id)?;
        // Never a second payment: a file pays open batches; a paid one is written again
        // only alone (the same message id as its own file, which a bank refuses twice).
        match b.status {
            BatchStatus::Open => {}
            BatchStatus::Paid if ids.len() == 1 => {}
            s => {
                return Err(Error::rejected(format!(
                    "payout batch '{id}' is {}: {}",
                    reconcile::name(s),
                    if s == BatchStatus::Paid {
                        "its payment file is written again only on its own"
                    } else {
                        "its mandates are payable again, and a new batch pays them"
                    }
                )));
            }
        }
        let stored = instruments::get(svc, &b.partner, &b.instrument)?.ok_or_else(|| {
            Error::rejected(format!(
                "the bank details of partner '{}' that payout batch '{id}' pays ({}) were erased",
                b.partner, b.instrument
            ))
        })?;
        let mandates = svc.with_state(|s| {
            b.mandate_ids
                .iter()
                .map(|m| {
                    let item = s.payout_item(m)?;
                    Some((m.clone(), Amount::from_minor(item.amount, item.currency).ok()?))
                })
                .collect::<Option<Vec<_>>>()
        });
        let mandates =
            mandates.ok_or_else(|| Error::internal(format!("a mandate of payout batch '{id}' is unknown")))?;
        latest = latest.max(b.at);
        out.push(pain001::Payment {
            execution_date: execution_date.unwrap_or_else(|| b.at.date_naive()),
            batch: b.id,
            amount: b.amount,
            offset: b.offset,
            mandates,
            creditor: stored.account,
        });
    }
    Ok((out, latest))
}

/// The `pain.001.001.09` file of payout batches `ids` on the bank rail.
pub fn payment_file(svc: &Service, ids: &[String], execution_date: Option<NaiveDate>) -> Result<Vec<u8>, Error> {
    let debtor = instruments::debtor(svc)?.ok_or_else(|| {
        Error::rejected("no debtor account is configured: set the vendor's with `settle payouts debtor`")
    })?;
    let (payments, created) = payments(svc, ids, execution_date)?;
    pain001::write(&debtor, created, &payments)
}

/// A partner's payout instrument to register: its account, and the currency it is paid
/// in (its program's when not given).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PayoutInstrumentRegistration")]
pub struct Registration {
    /// The account holder's name, as the bank knows it (1..=140 characters).
    pub holder: String,
    /// IBAN, with or without spaces (checked: country format and mod-97 check digits).
    pub iban: String,
    /// BIC of the holder's bank (8 or 11 characters), when the bank needs it.
    #[serde(default)]
    pub bic: Option<String>,
    /// ISO 4217 currency it is paid in: the partner's program's (the default).
    #[serde(default)]
    pub currency: Option<String>,
}

/// Stores `r` as partner `partner`'s instrument (salted with `salt`) and answers the
/// fact that registers it; [`settled`] then forgets the details if the fact was not
/// recorded.
pub fn prepare(
    svc: &Service,
    partner: &str,
    r: Registration,
    salt: [u8; 32],
    at: DateTime<Utc>,
) -> Result<(Event, instruments::Stored), Error> {
    let program_currency = svc.with_state(|s| {
        let p = s.partners.get(partner)?;
        s.programs.get(&p.program).map(|g| g.latest().spec.currency)
    });
    let program_currency =
        program_currency.ok_or_else(|| Error::not_found(format!("partner '{partner}' not found")))?;
    let currency: Currency = match r.currency {
        Some(c) => c.parse().map_err(|e: settle_mandates::money::MoneyError| Error::rejected(e.to_string()))?,
        None => program_currency,
    };
    let account = instruments::Account { holder: r.holder, iban: r.iban, bic: r.bic };
    let stored = instruments::put(svc, partner, currency, account, salt, at)?;
    let event = Event::PayoutInstrumentRegistered {
        partner: partner.to_owned(),
        instrument: stored.instrument.clone(),
        currency,
    };
    Ok((event, stored))
}

/// After recording a registration: its details are kept only if the log names them (a
/// refused fact, or a retry answered with an earlier registration, leaves them unnamed).
pub fn settled(svc: &Service, stored: &instruments::Stored) -> Result<(), Error> {
    if named(svc, &stored.partner)?.as_deref() != Some(stored.instrument.as_str()) {
        instruments::erase(svc, &stored.partner, Some(&stored.instrument))?;
    }
    Ok(())
}

/// The instrument the log names for partner `partner` now, if any.
fn named(svc: &Service, partner: &str) -> Result<Option<String>, Error> {
    let current = svc.with_state(|s| s.partners.get(partner).map(|p| p.instrument.clone()));
    current.ok_or_else(|| Error::not_found(format!("partner '{partner}' not found")))
}

/// The fact that removes partner `partner`'s current instrument, and that instrument, if
/// it has one.
pub fn removal(svc: &Service, partner: &str) -> Result<Option<(Event, String)>, Error> {
    Ok(named(svc, partner)?.map(|instrument| {
        (Event::PayoutInstrumentRemoved { partner: partner.to_owned(), instrument: instrument.clone() }, instrument)
    }))
}

/// Partner `partner`'s current instrument, as the API shows it.
pub fn current(svc: &Service, partner: &str) -> Result<instruments::View, Error> {
    let id = named(svc, partner)?
        .ok_or_else(|| Error::not_found(format!("partner '{partner}' has no payout instrument")))?;
    let stored = instruments::get(svc, partner, &id)?
        .ok_or_else(|| Error::not_found(format!("the bank details of partner '{partner}' were erased")))?;
    Ok(instruments::View::from(&stored))
}
