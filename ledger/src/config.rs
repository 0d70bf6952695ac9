//! How to open a ledger: its origin, signing key, accepted event types and sync mode.

use std::sync::Arc;

use fjall::PersistMode;
use settle_mandates::keys::SigningKey;

/// Which event types and versions the log accepts.
pub type Acceptor = Arc<dyn Fn(&str, u32) -> bool + Send + Sync>;

/// How to open a ledger.
#[derive(Clone)]
pub struct LedgerConfig {
    /// Log identity in checkpoints, e.g. `settle.example/log`.
    pub origin: String,
    /// Key that signs checkpoints (rotatable with [`Ledger::rotate_key`](crate::Ledger::rotate_key)).
    pub key: SigningKey,
    /// Event types accepted.
    pub accepts: Acceptor,
    /// Durable sync mode per batch.
    pub persist: PersistMode,
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig").field("origin", &self.origin).finish_non_exhaustive()
    }
}
