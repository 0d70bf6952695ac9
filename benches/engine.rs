//! Settlement costs. Targets (issue: engine): split computation ≥ 1,000,000 conversions/s
//! per core (3-hop chain); full settlement (split + 3 signed mandates + durable append)
//! ≥ 60% of the raw Ed25519 signing bound on 2 cores for the same number of signatures,
//! measured in the same run.

#[path = "fixtures.rs"]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::Signer;
use rayon::prelude::*;
use settle::home::Home;
use settle::keystore::KeyFile;
use settle::service::{Service, Submit};
use settle_engine::Event;
use settle_engine::arith;
use settle_engine::replay::sign_decisions;
use settle_engine::rules::Deal;
use settle_ledger::{Append, Ledger, LedgerConfig, NewRecord};
use settle_mandates::keys::SigningKey;

// The allocator the `settle` binary runs with, so the figures are the shipped ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: u64 = 512;

/// Decides the next [`BATCH`] conversions (numbered after `n`, logged from `seq`).
fn decide_batch(engine: &mut settle_engine::Engine, seq: &mut u64, n: &mut u64) -> Vec<settle_engine::state::Decision> {
    let mut ds = Vec::with_capacity(usize::try_from(BATCH).unwrap());
    for _ in 0..BATCH {
        *n += 1;
        let d = engine.decide(fixtures::env(*seq, fixtures::conversion(1_000_000 + *n)), *seq).unwrap();
        *seq += 1 + d.outputs.len() as u64;
        ds.push(d);
    }
    ds
}

fn bench(c: &mut Criterion) {
    let spec = fixtures::spec();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let mut rev = 1_234_567i64;
    g.bench_function("split_3_hops", |b| {
        b.iter(|| {
            rev += 1;
            let d = Deal { revenue: rev, closer_volume_before: 0, occurred_at: fixtures::t(60), hops: 3 };
            arith::price(&spec, &d).unwrap()
        });
    });

    let (mut engine, mut seq) = fixtures::engine_with_chain();
    // The fixture must settle: three signed mandates, not a "no commission" outcome.
    let first = engine.decide(fixtures::env(seq, fixtures::conversion(0)), seq).unwrap();
    assert_eq!(first.outputs.iter().filter(|o| o.sign.is_some()).count(), 3, "the fixture conversion must pay 3 hops");
    seq += 1 + first.outputs.len() as u64;
    let mut i = 0u64;
    g.bench_function("decide_conversion_unsigned", |b| {
        b.iter(|| {
            i += 1;
            let d = engine.decide(fixtures::env(seq, fixtures::conversion(i)), seq).unwrap();
            seq += 1 + d.outputs.len() as u64;
            d
        });
    });

    // Canonical bytes of the records a conversion writes: the mandate event (carrying its
    // signed JWS) is the largest.
    let key = SigningKey::from_seed(&[3; 32]);
    let (mut fresh, at) = fixtures::engine_with_chain();
    let d = fresh.decide(fixtures::env(at, fixtures::conversion(0)), at).unwrap();
    let signed = sign_decisions(vec![d], &key).remove(0);
    let issued = signed.iter().find(|r| r.kind == "mandate_issued").unwrap().envelope.clone();
    g.bench_function("canonical_bytes_mandate_issued", |b| b.iter(|| std::hint::black_box(&issued).to_bytes()));

    // Raw signing bound: 3 signatures per conversion on both cores, same payload size.
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let payload = settle_mandates::jcs::to_vec(&fixtures::mandate(1)).unwrap();
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("raw_sign_3_per_conversion_2_cores", |b| {
        b.iter(|| (0..BATCH * 3).into_par_iter().map(|_| dalek.sign(&payload).to_bytes()[0]).collect::<Vec<u8>>());
    });

    // The same signatures over the bytes a compact JWS signs (the base64url header, a dot
    // and the base64url payload: about one and a half times the payload's length): the
    // most the mandate format allows, were nothing but the signatures to cost anything.
    let token = settle_mandates::jws::sign(settle_mandates::types::TYP_PAYMENT_MANDATE, &payload, &key);
    let input = token.as_bytes()[..token.rfind('.').unwrap()].to_vec();
    g.bench_function("raw_sign_jws_input_3_per_conversion_2_cores", |b| {
        b.iter(|| (0..BATCH * 3).into_par_iter().map(|_| dalek.sign(&input).to_bytes()[0]).collect::<Vec<u8>>());
    });

    // Decide and sign without the ledger: what the full settlement costs before its append.
    let (mut engine2, mut seq2) = fixtures::engine_with_chain();
    let mut n2 = 0u64;
    g.bench_function("decide_and_sign_2_cores", |b| {
        b.iter(|| {
            let ds = decide_batch(&mut engine2, &mut seq2, &mut n2);
            sign_decisions(ds, &key)
        });
    });

    // Full settlement: decide, sign on all cores, durable group append, per batch of 512.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(
        dir.path(),
        LedgerConfig {
            origin: "settle.bench/log".into(),
            key: key.clone(),
            accepts: Arc::new(|_, _| true),
            persist: fjall::PersistMode::SyncAll,
        },
    )
    .unwrap();
    let (mut engine, mut seq) = fixtures::engine_with_chain();
    // The setup facts occupy the first sequence numbers: append placeholders for them.
    for s in 0..seq {
        ledger
            .append_blocking(Append {
                key: format!("setup{s}").into_bytes(),
                content_hash: [0; 32],
                records: vec![NewRecord { kind: "setup".into(), version: 1, event: b"{}".to_vec() }],
                expected_seq: Some(s),
                projection: None,
                looked_up: None,
            })
            .unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut n = 0u64;
    // As `settle serve` runs it: the next batch is decided and signed while the previous
    // one is being committed (at most two batches in flight).
    g.bench_function("settle_conversion_full_2_cores", |b| {
        b.iter_custom(|iters| {
            fixtures::groups_two_in_flight(&ledger, &rt, iters, || {
                let ds = decide_batch(&mut engine, &mut seq, &mut n);
                let firsts: Vec<u64> = ds.iter().map(|d| d.seq).collect();
                let signed = sign_decisions(ds, &key);
                signed
                    .into_iter()
                    .zip(firsts)
                    .map(|(recs, first)| Append {
                        key: format!("c{first}").into_bytes(),
                        content_hash: [0; 32],
                        records: recs
                            .into_iter()
                            .map(|r| NewRecord { kind: r.kind.into(), version: r.version, event: r.bytes })
                            .collect(),
                        expected_seq: Some(first),
                        projection: None,
                        looked_up: None,
                    })
                    .collect()
            })
        });
    });

    // The floor under full settlement on this machine: only what the formats oblige, with
    // nothing of settle's own, pipelined as the full bench is (the next batch is signed
    // while the last is written). `floor_sign_and_write`: the same signatures over the same
    // JWS signing inputs on all cores, and the same records' bytes written durably with
    // fjall (one value and one key a conversion, one sync a batch) on a thread of its
    // own. `floor_formats`: also each mandate made from its object as its format says
    // (canonical JSON, base64url, the compact JWS) and each record's Merkle leaf hashed.
    // No deciding, no envelopes, no chain, no tree, no look-up, no answers: what full
    // settlement can reach at most is these rows' ratio to the signing bound.
    let (mut floor_engine, mut floor_seq) = fixtures::engine_with_chain();
    let mut floor_n = 0u64;
    let decided = decide_batch(&mut floor_engine, &mut floor_seq, &mut floor_n);
    let mandates: Vec<settle_engine::decision::ToSign> =
        decided.iter().flat_map(|d| d.outputs.iter().filter_map(|o| o.sign.clone())).collect();
    let signed = sign_decisions(decided, &key);
    let inputs: Vec<Vec<u8>> = signed
        .iter()
        .flatten()
        .filter_map(|r| match &r.envelope.event {
            Event::MandateIssued { mandate, .. } => Some(mandate.as_bytes()[..mandate.rfind('.')?].to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(inputs.len() as u64, 3 * BATCH, "three signing inputs a conversion");
    assert_eq!(mandates.len(), inputs.len());
    let leaves: Vec<Vec<u8>> = signed.iter().flatten().map(|r| r.bytes.clone()).collect();
    let values: Arc<Vec<Vec<u8>>> =
        Arc::new(signed.iter().map(|recs| recs.iter().flat_map(|r| r.bytes.clone()).collect()).collect());
    let floor_dir = tempfile::tempdir().unwrap();
    let db = fjall::Database::builder(floor_dir.path()).open().unwrap();
    let records = db.keyspace("records", settle_ledger::keyspace_options).unwrap();
    let keys = db.keyspace("keys", settle_ledger::index_keyspace_options).unwrap();
    let (to_write, batches) = std::sync::mpsc::sync_channel::<u64>(0);
    let (written_tx, written) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for first in batches {
            let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncAll));
            for (i, v) in (first..).zip(values.iter()) {
                batch.insert(&records, i.to_be_bytes(), v.as_slice());
                batch.insert(&keys, format!("c{i}"), [7u8; 44]);
            }
            batch.commit().unwrap();
            written_tx.send(()).unwrap();
        }
    });
    let mut next = 0u64;
    let mut floor = |name: &str, work: &(dyn Fn() + Sync)| {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                let mut pending = 0;
                for _ in 0..iters {
                    work();
                    if pending > 0 {
                        written.recv().unwrap();
                        pending -= 1;
                    }
                    to_write.send(next).unwrap();
                    next += BATCH;
                    pending += 1;
                }
                for _ in 0..pending {
                    written.recv().unwrap();
                }
                start.elapsed()
            });
        });
    };
    floor("floor_sign_and_write_2_cores", &|| {
        let sigs: Vec<u8> = inputs.par_iter().map(|m| dalek.sign(m).to_bytes()[0]).collect();
        std::hint::black_box(sigs);
    });
    floor("floor_formats_2_cores", &|| {
        use settle_mandates::types::Signed;
        let tokens: Vec<String> = mandates
            .par_iter()
            .map(|t| match t {
                settle_engine::decision::ToSign::Mandate(m) => m.sign(&key),
                settle_engine::decision::ToSign::Open(m) => m.sign(&key),
            })
            .collect();
        let hashes: Vec<_> = leaves.par_iter().map(|r| settle_mandates::merkle::leaf_hash(r)).collect();
        std::hint::black_box((tokens, hashes));
    });
    drop(to_write);
    writer.join().unwrap();

    // The same through the service, as the doors call it: each batch decided under the
    // sequencer's lock, signed on the pool while the next is decided, queued in its turn,
    // answered once durable (two batches in flight).
    let dir = tempfile::tempdir().unwrap();
    KeyFile::new("vendor.bench", "settle.bench/log", [3; 32], [7; 32], 0).save(dir.path()).unwrap();
    let svc = Service::open(&Home::Dir(dir.path().to_path_buf())).unwrap();
    let submit = |key: String, at: i64, event: Event| Submit {
        key,
        by: "vendor:bench".into(),
        at: fixtures::t(at),
        event,
        request: None,
    };
    let setup: Vec<Submit> =
        fixtures::chain_setup().into_iter().enumerate().map(|(i, e)| submit(format!("setup{i}"), 0, e)).collect();
    assert!(svc.submit_blocking(setup).iter().all(Result::is_ok));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut n = 0u64;
    g.bench_function("settle_conversion_service_2_cores", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let mut in_flight = std::collections::VecDeque::new();
            for _ in 0..iters {
                let batch: Vec<Submit> = (0..BATCH)
                    .map(|_| {
                        n += 1;
                        submit(format!("c{n}"), 1000, fixtures::conversion(1_000_000 + n))
                    })
                    .collect();
                let svc = Arc::clone(&svc);
                in_flight.push_back(rt.spawn(async move { svc.try_submit(batch).await }));
                if in_flight.len() > 1 {
                    let done = rt.block_on(in_flight.pop_front().unwrap()).unwrap();
                    assert!(done.iter().all(Result::is_ok), "a conversion failed");
                }
            }
            for h in in_flight {
                assert!(rt.block_on(h).unwrap().iter().all(Result::is_ok), "a conversion failed");
            }
            start.elapsed()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
