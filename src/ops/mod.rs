//! The operations every door shares, door-neutral: the HTTP API, the MCP tools and A2A
//! `SendMessage` each authenticate a [`Principal`](crate::auth::Principal), read a request
//! into the types here, and frame what these answer (a typed view, or an
//! [`Error`](crate::error::Error)); none of them builds a fact, decides authority or
//! renders an answer on its own, so the doors cannot drift apart.
//!
//! - [`commands`]: requests → facts, each after the catalogue's authorisation, and
//!   recording them ([`commands::record`]); what a write answers ([`commands::OutcomeView`]).
//! - [`queries`]: programs, balances, mandates, receipts, checkpoints, as typed views.
//! - [`disputes`]: disputes opened, commented, resolved and withdrawn, and their views.
//! - [`reports`]: a partner's statement, leads and agents; payout batches.
//! - [`audits`]: audits of the live log, run in the background.
//! - [`admin`]: API tokens and webhook subscriptions.

pub mod admin;
pub mod audits;
pub mod commands;
pub mod disputes;
pub mod queries;
pub mod reports;

use std::sync::Arc;

use crate::auth::sessions::Sessions;
use crate::auth::tokens::Tokens;
use crate::auth::{Authenticator, Principal};
use crate::error::Error;
use crate::keystore::KeyFile;
use crate::service::Service;
use crate::webhooks::Webhooks;

/// A decimal string greater than zero, as amounts and rates are sent (`"12.50"`).
pub const POSITIVE_DECIMAL_PATTERN: &str = r"^(?:0*[1-9][0-9]*(?:\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)$";
/// A decimal string in (0, 1], as refund fractions are sent (`"0.25"`).
pub const FRACTION_PATTERN: &str = r"^(?:0+\.[0-9]*[1-9][0-9]*|0*1(?:\.0+)?)$";
/// A decimal string with an optional sign, as balances are answered (`"-3.20"`).
pub const SIGNED_DECIMAL_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";
/// A payable mandate id: a payment mandate's, `md_<seq>_<hop>`, or a positive
/// adjustment's, `aj_<seq>_<n>`.
pub const MANDATE_ID_PATTERN: &str = r"^(?:md|aj)_[0-9]+_[0-9]+$";

/// What every door holds: the service, the keys, the tokens and the public base URL.
#[derive(Clone)]
pub struct App {
    /// The sequencer and the ledger.
    pub svc: Arc<Service>,
    /// Signing keys.
    pub keys: Arc<KeyFile>,
    /// API tokens, live: issued or revoked, they take effect at the next request.
    pub tokens: Arc<Tokens>,
    /// `http://<listen address>`.
    pub base: String,
    /// The webhook deliverer (`settle serve` only).
    pub hooks: Option<Arc<Webhooks>>,
    /// The workspace's signed-in people.
    pub sessions: Arc<Sessions>,
    /// Audits of the live log, run in the background.
    pub audits: Arc<audits::Audits>,
    /// The last flows of every partner's books read (the workspace's overview).
    pub flows: Arc<reports::FlowCache>,
}

impl App {
    /// What resolves this app's bearer tokens.
    #[must_use]
    pub fn authenticator(&self) -> Authenticator<'_> {
        Authenticator { svc: &self.svc, tokens: &self.tokens, origin: &self.keys.origin }
    }

    /// The principal of an `Authorization` value (`Bearer <token>`).
    pub fn principal(&self, authorization: Option<&[u8]>) -> Result<Principal, Error> {
        self.authenticator().bearer(authorization)
    }
}
