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
