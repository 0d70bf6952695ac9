//! Durable log costs on this machine. Targets (issue: ledger): group-committed durable
//! appends of 300-byte events ≥ 300,000/s with many appenders; single appender p99 ≤ 2 ms;
//! verification pass ≥ 500,000 events/s; inclusion proofs ≥ 100,000/s. Each is reported
//! next to the raw fjall batch-write rate measured in the same run, and next to raw fjall
//! writing what an append must write at least (the record and its idempotency entry).

#[path = "fixtures.rs"]
mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use settle_ledger::{Append, Ledger, LedgerConfig, NewRecord};
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};

// The allocator the `settle` binary runs with, so the figures are the shipped ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENT: usize = 300;
const BATCH: usize = 1000;

fn config() -> LedgerConfig {
    LedgerConfig {
        origin: "settle.bench/log".into(),
        key: SigningKey::from_seed(&[1; 32]),
        accepts: Arc::new(|_, _| true),
        persist: PersistMode::SyncAll,
    }
}

/// The shape of the appenders' idempotency keys: the index is a keyspace of the LSM tree,
/// so keys in time order are appended, keys in random order are merged by compaction.
#[derive(Clone, Copy)]
enum Keys {
    /// `k{i}`: a counter as text; later keys interleave with earlier ones ("k1000000"
    /// sorts between "k100000" and "k100001").
    Counter,
    /// `k{i:016}`: time-ordered, like ULIDs or UUIDv7.
    Ordered,
    /// 32 hex digits of SHA-256(i): random, like UUIDv4.
    Random,
}

impl Keys {
    fn key(self, i: u64) -> Vec<u8> {
        match self {
            Self::Counter => format!("k{i}").into_bytes(),
            Self::Ordered => format!("k{i:016}").into_bytes(),
            Self::Random => {
                use sha2::Digest;
                hex::encode(&sha2::Sha256::digest(i.to_be_bytes())[..16]).into_bytes()
            }
        }
    }
}

fn append(i: u64, keys: Keys) -> Append {
    let mut event = format!(r#"{{"i":{i},"pad":""#).into_bytes();
    event.resize(EVENT - 2, b'x');
    event.extend_from_slice(b"\"}");
    Append {
        key: keys.key(i),
        content_hash: [0; 32],
        records: vec![NewRecord { kind: "bench".into(), version: 1, event }],
        expected_seq: None,
        projection: None,
        looked_up: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    g.sample_size(10).measurement_time(Duration::from_secs(8));

    // Raw fjall: batches of 1,000 300-byte values, one durable sync per batch.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path()).open().unwrap();
    let ks = db.keyspace("raw", KeyspaceCreateOptions::default).unwrap();
    let mut n = 0u64;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("raw_fjall_batch_1000_sync", |b| {
        b.iter(|| {
            let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
            for _ in 0..BATCH {
                n += 1;
                batch.insert(&ks, n.to_be_bytes(), vec![b'x'; EVENT]);
            }
            batch.commit().unwrap();
        });
    });

    // Raw fjall writing what each append must write at least: the record and its
    // idempotency entry (44 bytes under a counter key), in one batch, in two keyspaces
    // with the ledger's own options. Once with one `SyncAll` per batch, as above; once
    // with no sync at all, which is what fjall alone can do with the CPU of this machine
    // for the ledger's write shape.
    let records = db.keyspace("raw_records", settle_ledger::keyspace_options).unwrap();
    let keys = db.keyspace("raw_keys", settle_ledger::index_keyspace_options).unwrap();
    for (name, persist) in [
        ("raw_fjall_batch_1000_sync_with_key", Some(PersistMode::SyncAll)),
        ("raw_fjall_batch_1000_with_key_no_sync", None),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut batch = db.batch().durability(persist);
                for _ in 0..BATCH {
                    n += 1;
                    batch.insert(&records, n.to_be_bytes(), vec![b'x'; EVENT]);
                    batch.insert(&keys, format!("k{n}"), vec![7u8; 44]);
                }
                batch.commit().unwrap();
            });
        });
    }

    // The floor under group commit: raw fjall writing the record and its key entry as
    // above, one sync a batch, on a thread of its own, while all cores make the next
    // batch's share of what the log's contract obliges beyond the write: each key looked
    // up (an idempotency key is answered once) and each record's Merkle leaf hashed (RFC
    // 9162). No tasks, no answers, no chain, no tree: what group commit can reach at most
    // is this row's ratio to `raw_fjall_batch_1000_sync_with_key`.
    {
        use rayon::prelude::*;
        let records = db.keyspace("floor_records", settle_ledger::keyspace_options).unwrap();
        let keys = db.keyspace("floor_keys", settle_ledger::index_keyspace_options).unwrap();
        let (to_write, batches) = std::sync::mpsc::sync_channel::<(u64, Vec<(String, Vec<u8>)>)>(0);
        let (written_tx, written) = std::sync::mpsc::channel::<()>();
        let (db2, records2, keys2) = (db.clone(), records.clone(), keys.clone());
        let writer = std::thread::spawn(move || {
            for (first, items) in batches {
                let mut batch = db2.batch().durability(Some(PersistMode::SyncAll));
                for (seq, (key, event)) in (first..).zip(items) {
                    batch.insert(&records2, seq.to_be_bytes(), event);
                    batch.insert(&keys2, key, vec![7u8; 44]);
                }
                batch.commit().unwrap();
                written_tx.send(()).unwrap();
            }
        });
        let mut next = 0u64;
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function("floor_look_up_hash_and_write_1000_sync", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut pending = 0;
                for _ in 0..iters {
                    let items: Vec<(String, Vec<u8>)> = (next..next + BATCH as u64)
                        .into_par_iter()
                        .map(|i| {
                            let key = format!("f{i}");
                            assert!(keys.get(&key).unwrap().is_none(), "a new key");
                            let event = vec![b'x'; EVENT];
                            std::hint::black_box(settle_mandates::merkle::leaf_hash(&event));
                            (key, event)
                        })
                        .collect();
                    if pending > 0 {
                        written.recv().unwrap();
                        pending -= 1;
                    }
                    to_write.send((next, items)).unwrap();
                    next += BATCH as u64;
                    pending += 1;
                }
                for _ in 0..pending {
                    written.recv().unwrap();
                }
                start.elapsed()
            });
        });
        drop(to_write);
        writer.join().unwrap();
    }

    // Group commit: concurrent appenders (tokio tasks), one record each. 256 as before,
    // and 2,048: about as many events per sync as the raw batches above hold; with 2,048,
    // also the two other key shapes (each appends to the same growing log).
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), config()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    const PER_ITER: u64 = 20_000;
    for (appenders, keys, suffix) in [
        (256u64, Keys::Counter, ""),
        (2048, Keys::Counter, ""),
        (2048, Keys::Ordered, "_ordered_keys"),
        (2048, Keys::Random, "_random_keys"),
    ] {
        g.throughput(Throughput::Elements((PER_ITER / appenders + 1) * appenders));
        g.bench_function(format!("group_commit_{appenders}_appenders{suffix}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..appenders {
                        let l = ledger.clone();
                        let next = next.clone();
                        set.spawn(async move {
                            // Each task appends until the iteration's share is taken.
                            for _ in 0..PER_ITER / appenders + 1 {
                                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                l.append(append(i, keys)).await.unwrap();
                            }
                        });
                    }
                    while set.join_next().await.is_some() {}
                });
            });
        });
    }

    // Group commit as the service feeds it: its sequencer hands the ledger each group of
    // appends it decided in one reserved place (`Reserved::append_group`), two groups in
    // flight, instead of one call a record. The same appends (one record, one key each),
    // so the same work a record for the writer; what differs is how the callers hand
    // them over, and that the group's checks run on all cores.
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("group_commit_groups_of_1000", |b| {
        b.iter_custom(|iters| {
            fixtures::groups_two_in_flight(&ledger, &rt, iters, || {
                (0..BATCH)
                    .map(|_| append(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed), Keys::Counter))
                    .collect()
            })
        });
    });

    // One appender waiting for each acknowledgement: latency distribution.
    g.throughput(Throughput::Elements(1));
    let mut lat = Vec::new();
    let base = 10_000_000_000u64;
    let mut k = 0u64;
    g.bench_function("single_appender_ack", |b| {
        b.iter(|| {
            k += 1;
            let t = Instant::now();
            ledger.append_blocking(append(base + k, Keys::Counter)).unwrap();
            lat.push(t.elapsed());
        });
    });
    lat.sort();
    if !lat.is_empty() {
        let p = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)];
        eprintln!("single appender latency over {} appends: p50 {:?}, p99 {:?}", lat.len(), p(50), p(99));
    }

    // Verification pass and proofs over the log built above.
    ledger.checkpoint_blocking(1).unwrap();
    let ring = KeyRing::new(&Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] }).unwrap();
    let size = ledger.size();
    eprintln!("log size for verification and proofs: {size}");
    g.throughput(Throughput::Elements(size));
    g.bench_function("verification_pass", |b| b.iter(|| settle_ledger::verify_log(&ledger, &ring).unwrap()));
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            i = (i + 7919) % size;
            ledger.inclusion_proof(i, size).unwrap()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
