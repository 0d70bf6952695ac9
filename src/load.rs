//! `settle load`: a load generator that drives the HTTP API on 127.0.0.1, the server and
//! the generator sharing the machine's cores, as the performance targets are stated.
//!
//! It creates a fresh store, serves it in-process on a free loopback port, sets up a
//! program with three-hop referral chains over HTTP, then measures two phases:
//! batched conversions (`POST /v1/conversions/batch`, several batches in flight) and
//! single conversions at a fixed arrival rate (open loop: latency is measured from each
//! request's scheduled start, so a stall is not hidden by the generator waiting). It
//! reports the raw Ed25519 signing rate measured in the same run for comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::home::Home;
use crate::keystore::{KeyFile, PrincipalKind, Scope};
use crate::ops::App;
use crate::rates::per_sec;
use crate::service::{MAX_BATCH, Service};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// A new store: a new data directory, or an empty PostgreSQL database.
    pub home: Home,
    /// Conversions in the batched phase.
    pub conversions: u64,
    /// Conversions per batch request.
    pub batch: usize,
    /// Requests in flight in the batched phase.
    pub concurrency: usize,
    /// Arrival rate of the single-conversion phase, per second.
    pub rate: u64,
    /// Length of the single-conversion phase.
    pub seconds: u64,
    /// Leads (each with a three-hop chain) the conversions are spread over.
    pub leads: usize,
    /// Ask for full answers to the conversions, not minimal ones (`Prefer: return=minimal`).
    pub full_answers: bool,
}

type Http = Client<HttpConnector, Full<Bytes>>;

struct Driver {
    client: Http,
    base: String,
    auth: String,
    /// The conversions' `Prefer` header: `return=minimal`, or `return=representation`.
    prefer: &'static str,
}

#[derive(serde::Deserialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

#[derive(serde::Deserialize)]
struct BatchItem {
    mandates: Option<Vec<serde::de::IgnoredAny>>,
    detail: Option<String>,
}

impl Driver {
    /// POSTs `body`; returns the status and the raw answer.
    async fn post_bytes(&self, path: &str, key: &str, body: &Value) -> Result<(u16, Bytes)> {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("authorization", &self.auth)
            .header("idempotency-key", key)
            .header("prefer", self.prefer)
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let resp = self.client.request(req).await.with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// POSTs `body`; returns the status and the parsed body.
    async fn post(&self, path: &str, key: &str, body: &Value) -> Result<(u16, Value)> {
        let (status, bytes) = self.post_bytes(path, key, body).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    async fn expect(&self, path: &str, key: &str, body: &Value) -> Result<Value> {
        let (status, v) = self.post(path, key, body).await?;
        if !(200..300).contains(&status) {
            bail!("POST {path} answered {status}: {v}");
        }
        Ok(v)
    }
}

fn partner(i: usize) -> String {
    format!("p{:03}", i % PARTNERS)
}

const PARTNERS: usize = 30;

fn conversion(id: String, lead: usize, n: u64) -> Value {
    // Revenues from 100.00 to 5,099.99, deterministic.
    let cents = 10_000 + (n.wrapping_mul(7_919) % 500_000);
    json!({"conversion": id, "lead": format!("lead-{lead}"), "revenue": format!("{}.{:02}", cents / 100, cents % 100), "currency": "USD"})
}

/// `n / elapsed` per second, in integers.
fn ms(d: Duration) -> String {
    let us = d.as_micros();
    format!("{}.{:02} ms", us / 1000, (us % 1000) / 10)
}

/// Runs the load and prints the figures.
pub fn run(cfg: &LoadConfig) -> Result<()> {
    if cfg.batch == 0 || cfg.batch > MAX_BATCH {
        bail!("--batch must be 1..={MAX_BATCH}");
    }
    if cfg.concurrency == 0 || cfg.leads == 0 {
        bail!("--concurrency and --leads must be at least 1");
    }
    let key_home = cfg.home.create_fresh().context("settle load writes a fresh store")?;
    // Quiet unless asked (RUST_LOG=fjall=debug shows the storage engine's write halts).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let mut kf = KeyFile::new(
        "vendor",
        "settle.load/log",
        crate::keystore::random_seed()?,
        crate::keystore::random_seed()?,
        chrono::Utc::now().timestamp(),
    );
    let all = vec![Scope::ProgramsWrite, Scope::LeadsWrite, Scope::ConversionsWrite, Scope::Read];
    let req = crate::auth::tokens::TokenRequest {
        kind: PrincipalKind::VendorAdmin,
        subject: "load".into(),
        partner: None,
        scopes: all,
        expires_in: None,
    };
    let (token, _) = crate::auth::tokens::issue(&mut kf, req, chrono::Utc::now().timestamp())?;
    key_home.save(&kf)?;
    // The new store's lease is let go here; the service takes it again.
    drop(key_home);
    let raw_sign = crate::rates::raw_signing_rate();
    let svc = Service::open(&cfg.home)?;
    let key_home = svc.key_home().clone();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let svc2 = svc.clone();
    let report = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tokens = Arc::new(crate::auth::tokens::Tokens::open(key_home)?);
        let app = App {
            svc: svc2.clone(),
            keys: Arc::new(kf),
            tokens,
            base: format!("http://{addr}"),
            hooks: None,
            sessions: Arc::default(),
            audits: Arc::default(),
            flows: Arc::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(
                axum::serve::ListenerExt::tap_io(listener, crate::doors::http::no_delay),
                crate::doors::http::router(app, addr),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
        });
        let ticker = tokio::spawn(crate::app::background(svc2));
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(http);
        let d = Arc::new(Driver {
            client,
            base: format!("http://{addr}"),
            auth: format!("Bearer {token}"),
            prefer: if cfg.full_answers { "return=representation" } else { "return=minimal" },
        });
        let report = drive(&d, cfg).await;
        ticker.abort();
        let _ = stop.send(());
        let _ = server.await;
        report
    })?;
    drop(rt);
    svc.checkpoint(chrono::Utc::now().timestamp())?;
    svc.save_state()?;
    svc.close()?;
    println!(
        "settle load on 127.0.0.1 (server and generator in one process, sharing the cores), the log in {}",
        cfg.home.describe()
    );
    println!("  raw signing         {raw_sign} signatures/s on one core, measured in this run");
    for line in report {
        println!("  {line}");
    }
    Ok(())
}

async fn drive(d: &Arc<Driver>, cfg: &LoadConfig) -> Result<Vec<String>> {
    let mut out = Vec::new();
    // Set-up: a program paying three positions, partners, leads with two hand-offs each.
    let spec = json!({
        "program": "load", "name": "Load", "currency": "USD", "holding_days": 0,
        "attribution_window_days": 365, "pool_rounding": "half_even", "pool": {"percent": "10"},
        "split": {"kind": "shares", "originator": "30", "intermediaries": "20", "closer": "50", "remaining": "closer"},
        "valid_from": "2020-01-01T00:00:00Z"
    });
    d.expect("/v1/programs", "program", &spec).await?;
    for i in 0..PARTNERS {
        let p = partner(i);
        d.expect(
            "/v1/partners",
            &format!("enroll-{p}"),
            &json!({"partner": p, "program": "load", "name": p, "role": "partner"}),
        )
        .await?;
    }
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(16)));
    let mut set = tokio::task::JoinSet::new();
    for l in 0..cfg.leads {
        let (d, permit) = (d.clone(), sem.clone().acquire_owned().await?);
        set.spawn(async move {
            let _permit = permit;
            let lead = format!("lead-{l}");
            let reg =
                json!({"lead": lead, "program": "load", "customer": format!("{lead}.example"), "partner": partner(l)});
            d.expect("/v1/leads", &format!("reg-{l}"), &reg).await?;
            for h in 1..3 {
                let body = json!({"from": partner(l + h - 1), "to": partner(l + h)});
                d.expect(&format!("/v1/leads/{lead}/handoffs"), &format!("hand-{l}-{h}"), &body).await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    out.push(format!(
        "set-up              {} leads with 3-hop chains, {} requests in {}",
        cfg.leads,
        cfg.leads * 3,
        ms(t.elapsed())
    ));

    // Phase 1: batches.
    let batches = cfg.conversions.div_ceil(cfg.batch as u64);
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
    for b in 0..batches {
        let (d, permit) = (d.clone(), sem.clone().acquire_owned().await?);
        let first = b * cfg.batch as u64;
        let last = (first + cfg.batch as u64).min(cfg.conversions);
        let leads = cfg.leads;
        set.spawn(async move {
            let _permit = permit;
            let items: Vec<Value> = (first..last)
                .map(|n| conversion(format!("b-{n}"), usize::try_from(n).unwrap_or(0) % leads, n))
                .collect();
            let (status, bytes) =
                d.post_bytes("/v1/conversions/batch", &format!("batch-{b}"), &json!({"items": items})).await?;
            if !(200..300).contains(&status) {
                let text = String::from_utf8_lossy(&bytes);
                bail!("POST /v1/conversions/batch answered {status}: {}", text.chars().take(300).collect::<String>());
            }
            // A client reads what it needs: here, how many mandates each item carries.
            let answer: BatchAnswer = serde_json::from_slice(&bytes).context("batch answer does not parse")?;
            let mut mandates = 0u64;
            for r in &answer.results {
                let m = r.mandates.as_ref().with_context(|| format!("a conversion failed: {:?}", r.detail))?;
                mandates += m.len() as u64;
            }
            Ok::<(u64, u64), anyhow::Error>((answer.results.len() as u64, mandates))
        });
    }
    let (mut convs, mut mandates) = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        let (c, m) = r??;
        convs += c;
        mandates += m;
    }
    let el = t.elapsed();
    out.push(format!(
        "batched             {convs} conversions, {mandates} mandates in {} (batches of {}, {} in flight, {} answers): {} conversions/s, {} mandates/s",
        ms(el),
        cfg.batch,
        cfg.concurrency,
        if cfg.full_answers { "full" } else { "minimal" },
        per_sec(convs, el),
        per_sec(mandates, el)
    ));

    // Phase 2: single conversions at a fixed arrival rate.
    if cfg.rate > 0 && cfg.seconds > 0 {
        let total = cfg.rate * cfg.seconds;
        let gap = Duration::from_nanos(1_000_000_000 / cfg.rate);
        let start = tokio::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for n in 0..total {
            let due = start + gap * u32::try_from(n).unwrap_or(u32::MAX);
            tokio::time::sleep_until(due).await;
            let d = d.clone();
            let leads = cfg.leads;
            set.spawn(async move {
                let body = conversion(format!("s-{n}"), usize::try_from(n).unwrap_or(0) % leads, n);
                let v = d.expect("/v1/conversions", &format!("single-{n}"), &body).await?;
                if v["mandates"].as_array().is_none_or(Vec::is_empty) {
                    bail!("a single conversion settled without mandates: {v}");
                }
                let took = due.elapsed();
                if took > Duration::from_millis(20) {
                    tracing::debug!(target: "settle::load", "slow single {n}: {} ms", took.as_millis());
                }
                Ok::<Duration, anyhow::Error>(took)
            });
        }
        let mut lat = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        while let Some(r) = set.join_next().await {
            lat.push(r??);
        }
        let el = start.elapsed();
        lat.sort_unstable();
        let q = |num: usize| lat[(lat.len() * num / 1000).min(lat.len() - 1)];
        out.push(format!(
            "singles             {} conversions offered at {}/s for {} s, achieved {}/s; latency p50 {}, p90 {}, p99 {}, max {}",
            lat.len(),
            cfg.rate,
            cfg.seconds,
            per_sec(lat.len() as u64, el),
            ms(q(500)),
            ms(q(900)),
            ms(q(990)),
            ms(lat[lat.len() - 1])
        ));
    }
    Ok(out)
}
