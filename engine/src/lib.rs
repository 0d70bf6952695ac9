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
//! - [`rules`]: the pool and its split ([`rules::allocate`]: largest remainder).
//! - [`state`]: [`Engine::decide`], the one state transition.
//! - [`table`]: the state's conversions, packed.
//! - [`replay`]: signing decisions on all cores, and replaying a log to check it.

pub mod model;
pub mod replay;
pub mod rules;
pub mod state;
pub mod table;

pub use model::{Envelope, Event};
pub use state::{Decision, Engine, EngineConfig, Rejection, State};
