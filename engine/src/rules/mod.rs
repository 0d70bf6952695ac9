//! A program's rules: their validation at publication ([`validate`]), the inputs of one
//! deal's pool ([`Deal`]) and the rules in plain language ([`ProgramSpec::explain`]).
//! The rules themselves are data, in `model`; the arithmetic that prices a deal is in the
//! `arith` module, named per rule version (it reads a [`Deal`] from here).
//!
//! [`ProgramSpec::explain`]: crate::model::ProgramSpec::explain

mod deal;
mod explain;
mod validate;

pub use deal::Deal;
pub use validate::validate;

/// Why a rule set was refused at publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid program rules: {0}")]
pub struct RuleError(pub String);
