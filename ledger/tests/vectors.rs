//! Golden vectors of the stored record's hash chain and of its export line
//! (`tests/vectors/records.json`, computed independently of the crate): the crate's own
//! functions, and a real ledger appending the same events, must give the same bytes, and
//! store them as the golden entry (`tests/vectors/entry.json`).

use std::sync::Arc;

use serde::Deserialize;
use settle_ledger::{Append, GENESIS_CHAIN, Ledger, LedgerConfig, NewRecord, Record, chain_link};
use settle_mandates::keys::SigningKey;
use settle_mandates::merkle::Hash;

#[derive(Deserialize)]
struct Vectors {
    records: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    seq: u64,
    #[serde(rename = "type")]
    kind: String,
    v: u32,
    event: String,
    event_hash: String,
    chain: String,
    export_line: String,
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/records.json")).unwrap();
    serde_json::from_str::<Vectors>(&text).unwrap().records
}

fn hash(h: &str) -> Hash {
    hex::decode(h).unwrap().try_into().unwrap()
}

#[test]
fn chain_links_and_export_lines_match_the_vectors() {
    let mut prev = GENESIS_CHAIN;
    for v in vectors() {
        let event_hash = hash(&v.event_hash);
        let chain = chain_link(&prev, v.seq, &event_hash, &v.kind, v.v);
        assert_eq!(hex::encode(chain), v.chain, "chain of record {}", v.seq);
        let r = Record { seq: v.seq, kind: v.kind, version: v.v, event: v.event.into_bytes(), event_hash, chain };
        assert_eq!(r.to_export_line().unwrap(), v.export_line, "export line of record {}", v.seq);
        prev = chain;
    }
}

#[test]
fn a_ledger_appending_the_vectors_stores_their_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        origin: "settle.test/vectors".into(),
        key: SigningKey::from_seed(&[1; 32]),
        accepts: Arc::new(|_, _| true),
        persist: fjall::PersistMode::Buffer,
    };
    let l = Ledger::open(dir.path(), config).unwrap();
    let vs = vectors();
    l.append_blocking(Append {
        key: b"vectors".to_vec(),
        content_hash: [0; 32],
        records: vs
            .iter()
            .map(|v| NewRecord { kind: v.kind.clone(), version: v.v, event: v.event.clone().into_bytes() })
            .collect(),
        expected_seq: None,
        projection: None,
        looked_up: None,
    })
    .unwrap();
    for v in &vs {
        let r = l.record(v.seq).unwrap().unwrap();
        assert_eq!((hex::encode(r.event_hash), hex::encode(r.chain)), (v.event_hash.clone(), v.chain.clone()));
    }
    l.close().unwrap();
    drop(l);
    // The one append is one stored entry, byte for byte the golden one (tests/vectors/entry.json).
    #[derive(Deserialize)]
    struct Entry {
        key: String,
        value: String,
    }
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/entry.json")).unwrap();
    let want: Entry = serde_json::from_str(&text).unwrap();
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let records = db.keyspace("records", fjall::KeyspaceCreateOptions::default).unwrap();
    let stored: Vec<(String, String)> = records
        .iter()
        .map(|g| {
            let (k, v) = g.into_inner().unwrap();
            (hex::encode(k), hex::encode(v))
        })
        .collect();
    assert_eq!(stored, vec![(want.key, want.value)]);
}
