//! Projections: a read model's state stored beside the log, in the same batch as the
//! records it reflects ([`ProjectionUpdate`]), and its stored form (the last sequence it
//! reflects, then the state).

use crate::error::{LedgerError, Result};

/// Projection state to store with an append.
#[derive(Debug, Clone)]
pub struct ProjectionUpdate {
    /// Projection name.
    pub name: String,
    /// Its serialised state after this append.
    pub state: Vec<u8>,
}

/// The stored value of a projection's `state` as of record `seq`: `seq` (8 bytes, big
/// endian), then the state.
pub(crate) fn encode(seq: u64, state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + state.len());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(state);
    v
}

/// The sequence and state of projection `name`'s stored value.
pub(crate) fn decode(name: &str, v: &[u8]) -> Result<(u64, Vec<u8>)> {
    let seq = u64::from_be_bytes(
        v.get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| LedgerError::Inconsistent { seq: 0, what: format!("projection {name} is truncated") })?,
    );
    Ok((seq, v[8..].to_vec()))
}
