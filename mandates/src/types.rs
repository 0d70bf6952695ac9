//! AP2 v0.2-shaped signed objects: the program's open (standing) mandate, the closed
//! per-hop payment mandate, the clawback mandate, the adjustment mandate of a dispute
//! the vendor accepted, and the payment receipt payload.
//!
//! Each type has its own JWS `typ` and AP2 `vct`, checked on verification, so one can
//! never be replayed as another. Every object that is signed and whose hash is disclosed
//! carries a `salt` of 128 bits derived (HMAC-SHA-256) from a vendor secret and the
//! object's id: unguessable, yet identical on every replay.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::jws::{self, JwsError};
use crate::keys::{Jwk, KeyRing, SigningKey};
use crate::money::{Amount, Currency};

/// JWS `typ` of an open payment mandate.
pub const TYP_OPEN_MANDATE: &str = "settle-open-mandate+jws";
/// JWS `typ` of a closed payment mandate (one hop of one conversion).
pub const TYP_PAYMENT_MANDATE: &str = "settle-payment-mandate+jws";
/// JWS `typ` of a clawback mandate.
pub const TYP_CLAWBACK_MANDATE: &str = "settle-clawback-mandate+jws";
/// JWS `typ` of an adjustment mandate (a dispute's accepted correction of one partner's
/// commission).
pub const TYP_ADJUSTMENT_MANDATE: &str = "settle-adjustment-mandate+jws";
/// JWS `typ` of a receipt.
pub const TYP_RECEIPT: &str = "settle-receipt+jws";

/// AP2 `vct` of an open payment mandate.
pub const VCT_OPEN_MANDATE: &str = "mandate.payment.open.1";
/// AP2 `vct` of a closed payment mandate.
pub const VCT_PAYMENT_MANDATE: &str = "mandate.payment.1";
/// Our `vct` of a clawback mandate (AP2 v0.2 defines no refund object).
pub const VCT_CLAWBACK_MANDATE: &str = "settle.mandate.clawback.1";
/// Our `vct` of an adjustment mandate: positive pays the partner more, negative takes
/// back (AP2 v0.2 defines no dispute object).
pub const VCT_ADJUSTMENT_MANDATE: &str = "settle.mandate.adjustment.1";
/// Our `vct` of a receipt (AP2 payment receipt fields plus proof binding).
pub const VCT_RECEIPT: &str = "settle.receipt.1";

/// Largest integer every JSON implementation reads exactly (2^53 − 1, I-JSON).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a signed object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignedError {
    /// The JWS layer failed.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The payload is not the expected object.
    #[error("payload is not a valid {what}: {why}")]
    Payload {
        /// Object type.
        what: &'static str,
        /// Parser message.
        why: String,
    },
    /// The payload is not in canonical (JCS) form.
    #[error("payload of {0} is not canonical JSON")]
    NotCanonical(&'static str),
    /// The signing key was not valid when the object says it was issued.
    #[error("key '{kid}' was not valid at iat {iat}")]
    KeyNotValid {
        /// Key id.
        kid: String,
        /// Issued-at.
        iat: i64,
    },
}

/// 128-bit salt for object `id`: base64url of the first 16 bytes of
/// HMAC-SHA-256(`secret`, "settle/salt/v1\n" ‖ id).
#[must_use]
pub fn derive_salt(secret: &[u8; 32], id: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"settle/salt/v1\n");
    mac.update(id.as_bytes());
    B64.encode(&mac.finalize().into_bytes()[..16])
}

/// base64url(SHA-256(token)): how a receipt references the mandate it answers.
#[must_use]
pub fn token_reference(token: &str) -> String {
    B64.encode(Sha256::digest(token.as_bytes()))
}

/// An object signed as a compact JWS of a fixed type.
pub trait Signed: Serialize + DeserializeOwned {
    /// Name in error messages.
    const WHAT: &'static str;
    /// JWS `typ` for this object (may depend on the value).
    fn typ(&self) -> &'static str;
    /// Issued-at, Unix seconds (the key must have been valid then).
    fn iat(&self) -> i64;
    /// Checks what the type's invariants require of a decoded value (its `vct`, signs,
    /// ranges); a message says what is wrong.
    fn check(&self) -> Result<(), String>;

    /// Canonical bytes and compact JWS.
    fn sign(&self, key: &SigningKey) -> String {
        // Our objects hold no floats and no non-string keys: always canonicalisable.
        let bytes = crate::jcs::to_vec(self).unwrap_or_else(|e| unreachable!("{e}"));
        jws::sign(self.typ(), &bytes, key)
    }
}

fn decode_verified<T: Signed>(v: &jws::Verified) -> Result<T, SignedError> {
    let obj: T =
        serde_json::from_slice(&v.payload).map_err(|e| SignedError::Payload { what: T::WHAT, why: e.to_string() })?;
    // Refuse anything but the canonical encoding: one object, one byte string.
    if crate::jcs::to_vec(&obj).ok().as_deref() != Some(v.payload.as_slice()) {
        return Err(SignedError::NotCanonical(T::WHAT));
    }
    obj.check().map_err(|why| SignedError::Payload { what: T::WHAT, why })?;
    if obj.typ() != v.header.typ {
        return Err(JwsError::WrongType { expected: obj.typ().into(), found: v.header.typ.clone() }.into());
    }
    if !v.key.valid_at(obj.iat()) {
        return Err(SignedError::KeyNotValid { kid: v.key.kid.clone(), iat: obj.iat() });
    }
    Ok(obj)
}

/// Verifies `token` as a `T` of JWS type `typ`, returning the object and its key.
pub fn verify_as<T: Signed>(token: &str, ring: &KeyRing, typ: &str) -> Result<(T, Jwk), SignedError> {
    verify_as_with(token, ring, typ, true)
}

/// As [`verify_as`]; `check_signature` false when a batch check already covered it.
pub fn verify_as_with<T: Signed>(
    token: &str,
    ring: &KeyRing,
    typ: &str,
    check_signature: bool,
) -> Result<(T, Jwk), SignedError> {
    let v = jws::verify_with(token, ring, typ, check_signature)?;
    let obj = decode_verified(&v)?;
    Ok((obj, v.key))
}

/// Decodes an already signature-checked payload (e.g. after batch verification).
pub fn decode_as<T: Signed>(v: &jws::Verified) -> Result<T, SignedError> {
    decode_verified(v)
}

/// A constraint of an open payment mandate (AP2 v0.2). An unknown constraint type fails
/// to parse, which AP2 requires be treated as failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Constraint {
    /// Only these payees may be paid.
    #[serde(rename = "payment.allowed_payees")]
    AllowedPayees {
        /// Partner ids.
        payees: Vec<String>,
    },
    /// Each payment within `[min, max]` minor units.
    #[serde(rename = "payment.amount_range")]
    AmountRange {
        /// Currency.
        currency: Currency,
        /// Max, minor units.
        max: i64,
        /// Min, minor units.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
    },
    /// Running total per period at most `max` (the verifier keeps the total).
    #[serde(rename = "payment.budget")]
    Budget {
        /// Max, minor units.
        max: i64,
        /// Currency.
        currency: Currency,
        /// Budget period (`month`): totals reset at each period's start (UTC).
        period: String,
    },
    /// Payments only within `[not_before, not_after)`, Unix seconds.
    #[serde(rename = "payment.execution_date")]
    ExecutionDate {
        /// Start.
        not_before: i64,
        /// End, exclusive.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_after: Option<i64>,
    },
}

/// A program's standing authorisation: an AP2 open payment mandate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenMandate {
    /// The constraints.
    pub constraints: Vec<Constraint>,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Vendor (payer) id.
    pub iss: String,
    /// Id of this standing authorisation (`om_<program>_<seq>`).
    pub mandate_id: String,
    /// Program id.
    pub program: String,
    /// Program rule version in force.
    pub rule_version: u32,
    /// Derived salt.
    pub salt: String,
    /// Always [`VCT_OPEN_MANDATE`].
    pub vct: String,
}

impl Signed for OpenMandate {
    const WHAT: &'static str = "open mandate";
    fn typ(&self) -> &'static str {
        TYP_OPEN_MANDATE
    }
    fn iat(&self) -> i64 {
        self.iat
    }
    fn check(&self) -> Result<(), String> {
        if self.vct != VCT_OPEN_MANDATE {
            return Err(format!("vct '{}' is not {VCT_OPEN_MANDATE}", self.vct));
        }
        Ok(())
    }
}

/// Which way a closed mandate moves money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Vendor pays the partner.
    Payment,
    /// The partner's commission is reversed (a refund clawed back).
    Clawback,
    /// A dispute's accepted correction: the amount is signed (positive pays the partner
    /// more, negative takes back).
    Adjustment,
}

/// The payee of a mandate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payee {
    /// Partner id.
    pub id: String,
}

/// AP2 payment instrument: settle pays into the partner's commission account, settled
/// on a rail later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    /// Account id (the partner's).
    pub id: String,
    /// `settle.commission_account`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Where in the log the cause of a mandate stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRef {
    /// Hex SHA-256 of the causing event's canonical bytes (= its Merkle leaf data).
    pub event_hash: String,
    /// Sequence number (= Merkle leaf index) of the causing event.
    pub seq: u64,
}

/// Why a mandate says what it says: enough to recompute its amount from the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MandateBasis {
    /// Principal (human or agent) that caused it.
    pub caused_by: String,
    /// Conversion id (empty for an adjustment of a conversion missing on a lead: its
    /// dispute names the lead).
    pub conversion: String,
    /// For an adjustment: the dispute it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute: Option<String>,
    /// Hop, 0 = originator.
    pub hop: u32,
    /// Number of hops in the chain.
    pub hops: u32,
    /// The log entry that caused this mandate.
    pub log: LogRef,
    /// The open mandate this payment is authorised under.
    pub open_mandate: String,
    /// The pool of the whole conversion (what the hops add up to).
    pub pool: Amount,
    /// Program id.
    pub program: String,
    /// For a clawback: the mandate it reverses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverses: Option<String>,
    /// Role of the payee on this hop (`originator`, `intermediary`, `closer`).
    pub role: String,
    /// Rounding policy id (e.g. `largest_remainder.v1`).
    pub rounding: String,
    /// Rule version the amount was computed under.
    pub rule_version: u32,
}

/// A closed mandate: one hop of one conversion (payment) or its reversal (clawback).
/// Fields are declared in canonical (sorted) order so signing skips re-ordering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mandate {
    /// Why.
    pub basis: MandateBasis,
    /// Payment or clawback.
    pub direction: Direction,
    /// Earliest execution (end of the holding period), Unix seconds.
    pub execution_date: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Vendor id.
    pub iss: String,
    /// Who is paid (or clawed back from).
    pub payee: Payee,
    /// The amount: never negative for a payment or a clawback (the direction says which
    /// way); for an adjustment, signed and never zero.
    pub payment_amount: Amount,
    /// Where it is paid.
    pub payment_instrument: Instrument,
    /// Derived salt.
    pub salt: String,
    /// Mandate id.
    pub transaction_id: String,
    /// [`VCT_PAYMENT_MANDATE`], [`VCT_CLAWBACK_MANDATE`] or [`VCT_ADJUSTMENT_MANDATE`].
    pub vct: String,
}

impl Mandate {
    /// The `vct` for a direction.
    #[must_use]
    pub fn vct_for(direction: Direction) -> &'static str {
        match direction {
            Direction::Payment => VCT_PAYMENT_MANDATE,
            Direction::Clawback => VCT_CLAWBACK_MANDATE,
            Direction::Adjustment => VCT_ADJUSTMENT_MANDATE,
        }
    }

    /// The JWS `typ` for a direction.
    #[must_use]
    pub fn typ_for(direction: Direction) -> &'static str {
        match direction {
            Direction::Payment => TYP_PAYMENT_MANDATE,
            Direction::Clawback => TYP_CLAWBACK_MANDATE,
            Direction::Adjustment => TYP_ADJUSTMENT_MANDATE,
        }
    }

    /// Verifies a payment, clawback or adjustment mandate token.
    pub fn verify(token: &str, ring: &KeyRing) -> Result<(Self, Jwk), SignedError> {
        Self::verify_with(token, ring, true)
    }

    /// As [`Mandate::verify`]; `check_signature` false when a batch check covered it.
    pub fn verify_with(token: &str, ring: &KeyRing, check_signature: bool) -> Result<(Self, Jwk), SignedError> {
        verify_as_with(token, ring, Self::token_typ(token)?, check_signature)
    }

    /// The JWS `typ` of a mandate token (payment, clawback or adjustment), or why it has
    /// none.
    pub fn token_typ(token: &str) -> Result<&'static str, JwsError> {
        jws::parse(token, TYP_PAYMENT_MANDATE)
            .map(|_| TYP_PAYMENT_MANDATE)
            .or_else(|_| jws::parse(token, TYP_CLAWBACK_MANDATE).map(|_| TYP_CLAWBACK_MANDATE))
            .or_else(|_| jws::parse(token, TYP_ADJUSTMENT_MANDATE).map(|_| TYP_ADJUSTMENT_MANDATE))
    }
}

impl Signed for Mandate {
    const WHAT: &'static str = "mandate";
    fn typ(&self) -> &'static str {
        Self::typ_for(self.direction)
    }
    fn iat(&self) -> i64 {
        self.iat
    }
    fn check(&self) -> Result<(), String> {
        if self.vct != Self::vct_for(self.direction) {
            return Err(format!("vct '{}' does not match direction", self.vct));
        }
        let adjustment = self.direction == Direction::Adjustment;
        if adjustment && (self.payment_amount.is_zero() || self.basis.dispute.is_none()) {
            return Err("an adjustment moves money and names its dispute".into());
        }
        if (!adjustment && self.payment_amount.minor_units() < 0) || self.basis.pool.minor_units() < 0 {
            return Err("amounts of a payment or clawback mandate are never negative".into());
        }
        if !adjustment && self.basis.dispute.is_some() {
            return Err("only an adjustment names a dispute".into());
        }
        if self.payment_amount.currency() != self.basis.pool.currency() {
            return Err("payment and pool currencies differ".into());
        }
        if self.basis.hop >= self.basis.hops || self.basis.log.seq > MAX_SAFE_INTEGER {
            return Err("hop or log position out of range".into());
        }
        Ok(())
    }
}

/// AP2 receipt status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Outcome succeeded.
    Success,
    /// Outcome failed.
    Error,
}

/// What outcome a receipt proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The mandate is recorded in the log (leaf `data.mandate` = the mandate token).
    MandateRecorded,
    /// The mandate was paid on a rail (leaf: its `mandate_paid` record, `data.mandate_id`).
    PaymentSettled,
    /// Payment on a rail failed (leaf: its `mandate_payment_failed` record, `data.mandate_id`).
    PaymentFailed,
}

/// A receipt's signed payload: AP2 payment receipt fields plus the proof binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPayload {
    /// AP2 error code (failed receipts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// AP2 error description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Issued at (the checkpoint's time), Unix seconds.
    pub iat: i64,
    /// Vendor id.
    pub iss: String,
    /// What outcome.
    pub kind: ReceiptKind,
    /// Merkle leaf index of the proving log entry.
    pub leaf_index: u64,
    /// Network confirmation id, when the rail gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_confirmation_id: Option<String>,
    /// The mandate id.
    pub payment_id: String,
    /// Rail confirmation id (settled receipts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psp_confirmation_id: Option<String>,
    /// Rail name for settled/failed receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<String>,
    /// base64url(SHA-256(mandate token)).
    pub reference: String,
    /// Hex root of that checkpoint.
    pub root: String,
    /// AP2 status.
    pub status: Status,
    /// Tree size of the checkpoint proven against.
    pub tree_size: u64,
    /// Always [`VCT_RECEIPT`].
    pub vct: String,
}

impl Signed for ReceiptPayload {
    const WHAT: &'static str = "receipt";
    fn typ(&self) -> &'static str {
        TYP_RECEIPT
    }
    fn iat(&self) -> i64 {
        self.iat
    }
    fn check(&self) -> Result<(), String> {
        if self.vct != VCT_RECEIPT {
            return Err(format!("vct '{}' is not {VCT_RECEIPT}", self.vct));
        }
        if self.leaf_index > MAX_SAFE_INTEGER || self.tree_size > MAX_SAFE_INTEGER {
            return Err("leaf_index and tree_size must be below 2^53".into());
        }
        Ok(())
    }
}
