//! What deciding a fact yields: its derived events, each with what is still to be signed
//! ([`Decision`], [`Output`], [`ToSign`]), or why it was refused ([`Rejection`]).

use settle_mandates::money::MoneyError;
use settle_mandates::types::{Mandate, OpenMandate};

use crate::limits::InvalidValue;
use crate::model::Envelope;
use crate::rules::RuleError;

/// Why a fact was refused. Nothing is recorded and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Bad shape or value.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// It exists already, or conflicts with what is recorded.
    #[error("{0}")]
    Conflict(String),
    /// Money error.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// Rules refused.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// A derived event is not a fact.
    #[error("'{0}' is derived by the engine and cannot be submitted")]
    NotAFact(&'static str),
}

impl From<InvalidValue> for Rejection {
    /// An id or text that failed its check (`check_id`, `check_text`): invalid, in the
    /// check's words.
    fn from(e: InvalidValue) -> Self {
        Self::Invalid(e.0)
    }
}

/// Something the engine still has to sign before the derived event is final.
#[derive(Debug, Clone)]
pub enum ToSign {
    /// A payment or clawback mandate.
    Mandate(Box<Mandate>),
    /// A program's open mandate.
    Open(OpenMandate),
}

/// A derived event, possibly waiting for its signature.
#[derive(Debug, Clone)]
pub struct Output {
    /// The event; its `mandate` field is filled by signing.
    pub envelope: Envelope,
    /// What to sign, if anything.
    pub sign: Option<ToSign>,
}

/// What a fact caused: the fact as it will be stored, and its derived events.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Sequence the fact gets.
    pub seq: u64,
    /// The fact.
    pub fact: Envelope,
    /// Derived events, in log order after the fact.
    pub outputs: Vec<Output>,
    /// The fact's canonical bytes, when deciding needed them (their hash is in every
    /// mandate the fact caused), so they are not made twice.
    pub fact_bytes: Option<Vec<u8>>,
}
