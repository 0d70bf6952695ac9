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
//! The modules, each naming only those listed before it:
//! - [`limits`]: the named limits, and the checks of ids and free text against them.
//! - [`customer`]: the named normalisations of customer keys (UTS #46 for domains, NFKC
//!   and full case folding for other names).
//! - [`model`]: the events and the program rules (data, not code).
//! - [`rules`]: a program's rules: validation, the inputs of a deal's pool, and their
//!   plain-language explanation.
//! - [`arith`]: the named arithmetic of a rule version: pool, split (largest
//!   remainder), FX, refund fractions, clawbacks; [`arith::v2`] exact in integers.
//! - [`ids`]: the ids of mandates and where their records lie in the log.
//! - [`records`]: what the state keeps of each lead and conversion (its hops, a held
//!   deal).
//! - [`table`]: the state's leads and conversions, packed.
//! - [`book`]: a partner's book, moved by balanced double entries.
//! - [`decision`]: what deciding a fact yields, or why it was refused.
//! - [`state`]: the projection's state and what it answers without deciding.
//! - [`decide`]: [`Engine::decide`], the one state transition, one module per fact.
//! - [`replay`]: signing decisions on all cores, and replaying a log to check it.

pub mod arith;
pub mod book;
pub mod customer;
pub mod decide;
pub mod decision;
pub mod ids;
pub mod limits;
pub mod model;
pub mod records;
pub mod replay;
pub mod rules;
pub mod state;
pub mod table;

pub use decide::{Engine, EngineConfig};
pub use decision::{Decision, Rejection};
pub use model::{Envelope, Event};
pub use state::State;
