//! Memory of the ledger as its log grows (issue: ledger, "memory stays flat (no growth
//! with log length) during appends and during the verification pass"). Appends N records
//! of 300 bytes (default 12 million) through group commit with 2,048 concurrent
//! appenders, printing the resident memory after each million; then runs the
//! verification pass over the whole log, sampling the resident memory as it goes.
//! Not a timing: run with `cargo bench --bench ledger_memory` (a number among the
//! arguments sets N; a plain `cargo bench` runs it too, for about two minutes and some
//! gigabytes of temporary files). The storage engine's caches and memtables fill during
//! the first millions; what matters is the growth after that, printed in KiB per million
//! records.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use settle_ledger::{Append, Ledger, LedgerConfig, NewRecord};
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENT: usize = 300;
const APPENDERS: u64 = 2048;
const STEP: u64 = 1_000_000;

fn rss_kib() -> u64 {
    memory_stats::memory_stats().map_or(0, |m| u64::try_from(m.physical_mem).unwrap_or(u64::MAX) >> 10)
}

fn append(i: u64) -> Append {
    let mut event = format!(r#"{{"i":{i},"pad":""#).into_bytes();
    event.resize(EVENT - 2, b'x');
    event.extend_from_slice(b"\"}");
    Append {
        key: format!("k{i}").into_bytes(),
        content_hash: [0; 32],
        records: vec![NewRecord { kind: "bench".into(), version: 1, event }],
        expected_seq: None,
        projection: None,
        looked_up: None,
    }
}

/// Runs `f` while another thread samples the resident memory every 20 ms; returns what
/// `f` returned and the highest sample (KiB).
fn with_peak<R>(f: impl FnOnce() -> R) -> (R, u64) {
    /// Stops the sampler however `f` ends, so a panic in `f` is not a hang.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    let peak = AtomicU64::new(rss_kib());
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let _stop = Stop(&done);
        f()
    });
    // The sampler has been joined: its last sample is in.
    (out, peak.load(Ordering::Relaxed).max(rss_kib()))
}

fn main() {
    // `cargo bench` passes harness flags (`--bench`); a number among the arguments sets N.
    let n: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(12 * STEP);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = SigningKey::from_seed(&[1; 32]);
    let config = LedgerConfig {
        origin: "settle.bench/memory".into(),
        key: key.clone(),
        accepts: Arc::new(|_, _| true),
        persist: fjall::PersistMode::SyncAll,
    };
    let ledger = Ledger::open(dir.path(), config).expect("a new ledger");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    println!("appending {n} records of {EVENT} bytes, {APPENDERS} concurrent appenders");
    println!("{:>12} {:>10} {:>14} {:>16}", "records", "seconds", "resident MiB", "peak in step MiB");
    let mut samples = vec![(0u64, rss_kib())];
    while ledger.size() < n {
        let per_task = STEP.min(n - ledger.size()).div_ceil(APPENDERS);
        let ((), peak) = with_peak(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..APPENDERS {
                    let (l, next) = (ledger.clone(), next.clone());
                    set.spawn(async move {
                        for _ in 0..per_task {
                            l.append(append(next.fetch_add(1, Ordering::Relaxed))).await.expect("append");
                        }
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("an appender failed");
                }
            });
        });
        let rss = rss_kib();
        samples.push((ledger.size(), rss));
        println!("{:>12} {:>10.1} {:>14} {:>16}", ledger.size(), start.elapsed().as_secs_f64(), rss >> 10, peak >> 10);
    }
    // Growth over the second half of the run, after the caches and memtables have filled:
    // the least-squares slope of resident memory against log size (a flush or compaction
    // moves a single sample by tens of MiB).
    // In integers (no float in this workspace): slope = (m·Σxy − Σx·Σy) / (m·Σx² − (Σx)²).
    let tail = &samples[samples.len() / 2..];
    if tail.len() >= 3 {
        let m = i128::try_from(tail.len()).unwrap_or(i128::MAX);
        let (mut sx, mut sy, mut sxy, mut sxx) = (0i128, 0i128, 0i128, 0i128);
        for &(x, y) in tail {
            let (x, y) = (i128::from(x), i128::from(y));
            (sx, sy, sxy, sxx) = (sx + x, sy + y, sxy + x * y, sxx + x * x);
        }
        let (cov, var) = (m * sxy - sx * sy, m * sxx - sx * sx);
        let kib_per_million = if var == 0 { 0 } else { cov * 1_000_000 / var };
        println!(
            "appends: from {} to {} records, resident memory grows {kib_per_million:+} KiB per million records",
            tail[0].0,
            tail[tail.len() - 1].0,
        );
    } else {
        println!("appends: too few samples to fit a growth (run to 4 million records or more)");
    }

    ledger.checkpoint_blocking(1).expect("a checkpoint");
    let ring = KeyRing::new(&Jwks { keys: vec![key.to_jwk(None, None)] }).expect("a key ring");
    let before = rss_kib();
    let t = Instant::now();
    let (report, peak) = with_peak(|| settle_ledger::verify_log(&ledger, &ring).expect("the log verifies"));
    println!(
        "verification pass over {} records and {} checkpoint(s) in {:.1} s: resident {} MiB before, peak {} MiB during ({:+} KiB)",
        report.records,
        report.checkpoints,
        t.elapsed().as_secs_f64(),
        before >> 10,
        peak >> 10,
        peak.cast_signed() - before.cast_signed(),
    );
}
