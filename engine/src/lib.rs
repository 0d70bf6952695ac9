//! # settle-engine
//!
//! The deterministic projection of settle: from the log's facts (programs, partners,
//! agents, leads, conversions, refunds, time, settlements) to exact multi-tier splits,
//! one signed mandate per hop, clawbacks along the whole chain, holds, and double-entry
//! balances.
//!
//! Pure: no clock, disk, network or randomness. Time comes in each fact's envelope, the
//! sequence number a fact will get is an argument, keys and secrets are arguments.
//!
//! - [`model`]: the events and the program rules (data, not code).
//! - [`rules`]: a program's rules: validation and their plain-language explanation.
//! - [`customer`]: the named normalisations of customer keys (UTS #46 for domains, NFKC
//!   and full case folding for other names).
//! - [`arith`]: the named arithmetic of a rule version: pool, split (largest
//!   remainder), FX, refund fractions, clawbacks; [`arith::v2`] exact in integers.
//! - [`state`]: [`Engine::decide`], the one state transition.
//! - [`table`]: the state's conversions, packed.
//! - [`replay`]: signing decisions on all cores, and replaying a log to check it.

pub mod arith;
pub mod customer;
pub mod model;
pub mod replay;
pub mod rules;
pub mod state;
pub mod table;

pub use model::{Envelope, Event};
pub use state::{Decision, Engine, EngineConfig, Rejection, State};
