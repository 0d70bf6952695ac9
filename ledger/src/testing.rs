//! Helpers shared by the unit tests (`tests`, and the verification pass's own): a
//! ledger config, a key ring, and an append of test events.

use std::sync::Arc;

use fjall::PersistMode;
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use sha2::{Digest, Sha256};

use crate::append::{Append, NewRecord};
use crate::config::LedgerConfig;

/// A ledger config: origin `settle.test/log`, signed with the key of `seed`, accepting
/// `test_*` events of version 1, synced on every batch.
pub(crate) fn config(seed: u8) -> LedgerConfig {
    LedgerConfig {
        origin: "settle.test/log".into(),
        key: SigningKey::from_seed(&[seed; 32]),
        accepts: Arc::new(|k, v| k.starts_with("test_") && v == 1),
        persist: PersistMode::SyncAll,
    }
}

/// The key ring of the keys of `seeds`, valid at any time.
pub(crate) fn ring(seeds: &[u8]) -> KeyRing {
    KeyRing::new(&Jwks { keys: seeds.iter().map(|s| SigningKey::from_seed(&[*s; 32]).to_jwk(None, None)).collect() })
        .unwrap()
}

/// An append under `key` of one `test_event` record `{"e": …}` per event, its content
/// hash that of the events.
pub(crate) fn append(key: &str, events: &[&str]) -> Append {
    Append {
        key: key.as_bytes().to_vec(),
        content_hash: Sha256::digest(events.concat().as_bytes()).into(),
        records: events
            .iter()
            .map(|e| NewRecord {
                kind: "test_event".into(),
                version: 1,
                event: format!(r#"{{"e":"{e}"}}"#).into_bytes(),
            })
            .collect(),
        expected_seq: None,
        projection: None,
        looked_up: None,
    }
}

/// Where a test's ledger lives: a temporary directory (fjall), or a database of its own
/// on a throw-away PostgreSQL server, so that the same test runs on both backends.
pub(crate) struct Store {
    dir: tempfile::TempDir,
    postgres: Option<(std::sync::Arc<crate::backend::throwaway::ThrowawayPostgres>, String)>,
}

/// Databases created on the test servers of this process.
static DATABASES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Store {
    /// A new store on fjall.
    pub(crate) fn fjall() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), postgres: None }
    }

    /// A new store on a throw-away PostgreSQL server of its own.
    pub(crate) fn postgres() -> Self {
        Self::on(std::sync::Arc::new(crate::backend::throwaway::ThrowawayPostgres::start()))
    }

    fn on(server: std::sync::Arc<crate::backend::throwaway::ThrowawayPostgres>) -> Self {
        let n = DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = server.database(&format!("t{n}"));
        Self { dir: tempfile::tempdir().unwrap(), postgres: Some((server, url)) }
    }

    /// Another new store on the same backend (on PostgreSQL, another database on the
    /// same server).
    pub(crate) fn fresh(&self) -> Self {
        match &self.postgres {
            None => Self::fjall(),
            Some((server, _)) => Self::on(std::sync::Arc::clone(server)),
        }
    }

    /// Opens its ledger.
    pub(crate) fn open(&self, config: LedgerConfig) -> crate::error::Result<crate::Ledger> {
        match &self.postgres {
            None => crate::Ledger::open(self.dir.path(), config),
            Some((_, url)) => {
                crate::Ledger::open_on(std::sync::Arc::new(crate::backend::PostgresBackend::open(url)?), config)
            }
        }
    }
}
