//! Projections: saving a read model's state as of the last record (ordered with the
//! appends, through the writer), and reading the stored state.

use super::Ledger;
use crate::error::Result;
use crate::projection::{self, ProjectionUpdate};
use crate::writer::Cmd;

impl Ledger {
    /// Stores a projection's state as of record `seq`, which must be the last record
    /// (so the state is exactly the log's, never ahead or behind). Ordered with appends.
    pub fn save_projection_blocking(&self, update: ProjectionUpdate, seq: u64) -> Result<()> {
        self.ask_blocking(|tx| Cmd::Projection(update, seq, tx))
    }

    /// Async [`Ledger::save_projection_blocking`].
    pub async fn save_projection(&self, update: ProjectionUpdate, seq: u64) -> Result<()> {
        self.ask(|tx| Cmd::Projection(update, seq, tx)).await
    }

    /// The stored projection state and the last sequence it reflects. Projections are
    /// written in the same group commit as the records they reflect, so a projection
    /// read while that commit syncs may name a sequence past [`Ledger::size`] (it is
    /// durable with those records, or lost with them; after a failed sync, until the log
    /// is reopened, it may name records that never became durable).
    pub fn projection(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>> {
        let Some(v) = self.inner.stores.projections.get(name)? else { return Ok(None) };
        projection::decode(name, &v).map(Some)
    }
}
