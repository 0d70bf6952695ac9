//! Why the ledger refused or failed ([`LedgerError`]), and the crate's `Result`.

use settle_mandates::merkle::ProofError;

/// Why the ledger refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The store failed; the ledger is now poisoned.
    #[error("storage error: {0}")]
    Storage(String),
    /// A previous storage error poisoned the ledger; reopen it.
    #[error("ledger is poisoned by an earlier storage error; reopen it")]
    Poisoned,
    /// An event over [`MAX_EVENT_BYTES`](crate::MAX_EVENT_BYTES) or an append over
    /// [`MAX_RECORDS_PER_APPEND`](crate::MAX_RECORDS_PER_APPEND).
    #[error("too large: {0}")]
    TooLarge(String),
    /// Event type or version unknown to this log.
    #[error("unknown event type '{kind}' version {version}")]
    UnknownEvent {
        /// Type.
        kind: String,
        /// Version.
        version: u32,
    },
    /// The key was used before with different content.
    #[error("idempotency key '{key}' was already used with different content (first at seq {seq})")]
    KeyConflict {
        /// The key.
        key: String,
        /// Where the original append starts.
        seq: u64,
    },
    /// The append expected another next sequence number.
    #[error("expected next sequence {expected}, log is at {actual}")]
    SequenceMismatch {
        /// What the caller expected.
        expected: u64,
        /// Actual next sequence.
        actual: u64,
    },
    /// The queue is full ([`Ledger::try_append`](crate::Ledger::try_append) and
    /// [`Ledger::try_reserve`](crate::Ledger::try_reserve) at once;
    /// [`Ledger::reserve_blocking`](crate::Ledger::reserve_blocking) once it has waited
    /// [`RESERVE_WAIT`](crate::RESERVE_WAIT) for room).
    #[error("ingest queue is full")]
    QueueFull,
    /// The ledger is closed.
    #[error("ledger is closed")]
    Closed,
    /// Records, tree and index disagree (found on open or on read).
    #[error("inconsistent log at seq {seq}: {what}")]
    Inconsistent {
        /// Where.
        seq: u64,
        /// What.
        what: String,
    },
    /// A proof was asked for positions outside the log.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// Empty append, bad key...
    #[error("invalid append: {0}")]
    Invalid(String),

    /// Another node holds the log's writer lease (PostgreSQL: one writer per log).
    #[error("PostgreSQL: another settle writes this log ({holder}, epoch {epoch}); one writer per log")]
    WriterElsewhere {
        /// Who holds the lease (`host:pid`).
        holder: String,
        /// Its epoch.
        epoch: i64,
    },
}

impl From<fjall::Error> for LedgerError {
    fn from(e: fjall::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

pub(crate) type Result<T, E = LedgerError> = std::result::Result<T, E>;
