//! settle as a library: everything the `settle` command line runs (the sequencer, the
//! doors, the workspace, the audits, the demo, the bank rail), and the simulator
//! `settle-sim` runs over a storage model (`sim`). The binaries are thin: `src/main.rs`
//! (the command line) and `src/bin/settle-sim.rs`.

pub mod app;
pub mod audit;
pub mod auth;
pub mod bank;
pub mod catalogue;
pub mod demo;
pub mod doors;
pub mod error;
#[cfg(test)]
mod golden;
pub mod home;
pub mod keystore;
pub mod load;
pub mod ops;
pub mod rates;
pub mod receipts;
pub mod service;
pub mod sim;
pub mod webhooks;
