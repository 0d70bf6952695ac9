//! Signed webhooks, delivered from the log.
//!
//! The outbox is the log itself: every event a subscriber hears of (a mandate issued, a
//! clawback, holds released, a settlement confirmed or failed, a payout booked) is a
//! record written in the same atomic, durable batch as the fact that caused it, so a
//! crash can lose no webhook. Each subscription keeps a cursor (the next sequence it has
//! not yet handled) beside the log; a worker per subscription walks the log from there,
//! in order, and delivers each event at least once:
//!
//! - signed per Standard Webhooks, `webhook-signature: v1,<HMAC> v1a,<Ed25519>`
//!   ([`settle_mandates::webhook`]), with `webhook-id` = `evt_<sequence>`, the same on
//!   every attempt, so receivers deduplicate by it;
//! - retried with exponential backoff and jitter on any answer but 2xx (or none in
//!   time), then moved to the subscription's dead letters, which the vendor replays;
//! - a partner's subscription hears only of that partner's money.
//!
//! Subscriptions, cursors and dead letters are operational state beside the log
//! ([`settle_ledger::Ledger::aux_put`]): not part of the verifiable history, never exported
//! (the secrets stay on the server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use settle_engine::model::Event;
use settle_engine::{Envelope, State};
use settle_mandates::keys::SigningKey;
use settle_mandates::webhook::{self, Secret};
use sha2::{Digest, Sha256};

use crate::api::{Principal, Problem, internal, key_reused, not_found, unprocessable};
use crate::catalogue::Op;
use crate::keystore::PrincipalKind;
use crate::service::Service;

/// The event types a subscription can ask for.
pub const EVENT_TYPES: &[&str] = &[
    "mandate.issued",
    "clawback.issued",
    "hold.released",
    "settlement.confirmed",
    "settlement.failed",
    "payout.batched",
    "payout.booked",
];
/// Most subscriptions one principal may hold.
pub const MAX_SUBSCRIPTIONS_PER_PRINCIPAL: usize = 20;
/// Longest subscriber URL, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Records a worker reads from the log at a time.
const SCAN_CHUNK: u64 = 256;
/// How often an idle worker looks for new records.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often a paused or failing worker looks again.
const PAUSED_POLL: Duration = Duration::from_secs(1);
/// How often a moving cursor is synced (see [`StoredCursor`]).
const CURSOR_SYNC: Duration = Duration::from_secs(1);
/// Dead letters counted in a subscription's description (more show as this number).
pub const DEAD_LETTERS_COUNTED: usize = 10_000;
/// Most dead letters listed in one answer.
pub const MAX_DEAD_LETTERS_LISTED: usize = 1000;

/// When and how often to retry a delivery.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubles with every failed attempt.
    pub base: Duration,
    /// Longest delay between two attempts.
    pub cap: Duration,
    /// Attempts before an event goes to the dead letters.
    pub attempts: u32,
    /// How long to wait for the subscriber's answer.
    pub timeout: Duration,
    /// Deliver to loopback and private addresses too (off by default: a subscriber must
    /// not make the server reach into its own network).
    pub allow_private: bool,
}

impl Default for RetryPolicy {
    /// 5 s doubling to at most 1 h, 18 attempts (4.2 to 8.4 hours of retries), 10 s to
    /// answer.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
            attempts: 18,
            timeout: Duration::from_secs(10),
            allow_private: false,
        }
    }
}

impl RetryPolicy {
    /// The wait after `failed` failed attempts: `min(cap, base·2^(failed-1))`, of which
    /// a random half is jitter (so failed subscribers do not retry in lockstep):
    /// `jitter_permille` in 0..=1000 picks where in that half.
    #[must_use]
    pub fn delay(&self, failed: u32, jitter_permille: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << failed.saturating_sub(1).min(20));
        let half = exp.min(self.cap) / 2;
        half + half * jitter_permille.min(1000) / 1000
    }
}

/// A subscription, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    /// `whsub_<hex>`.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Event types delivered (all of [`EVENT_TYPES`] when empty).
    pub events: Vec<String>,
    /// Who subscribed (the `by` of the principal).
    pub owner: String,
    /// The partner whose events it hears of; none for the vendor (every event).
    pub partner: Option<String>,
    /// The symmetric secret, `whsec_<base64>`.
    pub secret: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The first record it hears of (the log size when it was created).
    pub from_seq: u64,
    /// The stored API token that subscribed: deliveries pause while it is revoked (empty
    /// for a subscriber that holds none: an agent that signs its own tokens).
    #[serde(default)]
    pub token_id: String,
    /// The partner agent that subscribed: deliveries pause while its grant is not current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Where its creation's answer is kept (removed with it).
    #[serde(default)]
    pub idem: String,
}

impl Subscription {
    /// A subscription as stored in the `aux` keyspace. Before the stored form named only
    /// stored API tokens, an agent that signs its own tokens was recorded with the id of
    /// its principal (`agent-key:<agent>`), which no token store holds: read as none, so
    /// its deliveries are checked against its grant alone, as they always were.
    fn from_stored(v: &[u8]) -> serde_json::Result<Self> {
        let mut sub: Self = serde_json::from_slice(v)?;
        if sub.token_id.starts_with(crate::api::AGENT_KEY_TOKEN_ID) {
            sub.token_id.clear();
        }
        Ok(sub)
    }
}

/// An event that could not be delivered.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookDeadLetter")]
pub struct DeadLetter {
    /// `webhook-id`.
    pub webhook_id: String,
    /// The record.
    pub seq: u64,
    /// Event type.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = EVENT_TYPES))]
    pub kind: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
    /// When it was given up on.
    pub failed_at: DateTime<Utc>,
}

/// One event ready to send.
#[derive(Debug, Clone)]
pub struct Message {
    /// `webhook-id`.
    pub id: String,
    /// The record.
    pub seq: u64,
    /// Event type.
    pub kind: &'static str,
    /// The JSON body (JCS bytes).
    pub body: Vec<u8>,
}

/// What a worker reports about its subscription.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookDelivery")]
struct Progress {
    /// Events delivered since the server started.
    delivered: u64,
    /// Failed attempts since the server started.
    failed_attempts: u64,
    /// The record being delivered, if one is.
    pending: Option<u64>,
    /// Attempts made at it.
    pending_attempts: u32,
    /// The last failure.
    last_error: Option<String>,
    /// When a delivery last succeeded.
    last_success_at: Option<DateTime<Utc>>,
}

/// The event types a subscription hears of, as its JSON Schema: each one of
/// [`EVENT_TYPES`].
fn event_types_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": EVENT_TYPES},
    })
}

/// A subscription and its delivery state, as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookSubscription")]
pub struct SubscriptionView {
    /// `whsub_<hex>`.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Event types delivered.
    #[schemars(schema_with = "event_types_schema")]
    pub events: Vec<String>,
    /// Who subscribed (e.g. `partner:p1`).
    pub owner: String,
    /// The partner whose events it hears of; `null`: the vendor's (every event).
    pub partner: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The first log record it hears of.
    pub from_seq: u64,
    /// The next log record not yet handled.
    pub cursor: u64,
    /// Events given up on (counted up to 10,000).
    pub dead_letters: usize,
    /// Delivery progress.
    delivery: Progress,
    /// The vendor's Ed25519 key for `v1a` signatures, `whpk_<base64>`.
    pub public_key: String,
    /// Its RFC 7638 key id (as in the JWKS).
    pub kid: String,
    /// `whsec_<base64>`: the HMAC key for `v1` signatures; only in the answer to the
    /// subscription's creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookSubscriptions")]
pub struct SubscriptionList {
    /// The caller's subscriptions (every one, for the vendor), oldest first.
    pub subscriptions: Vec<SubscriptionView>,
}

/// `GET /v1/webhooks/{id}/dead-letters`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookDeadLetters")]
pub struct DeadLetterList {
    /// The subscription.
    pub subscription: String,
    /// Its dead letters, oldest first (at most 1000).
    pub dead_letters: Vec<DeadLetter>,
}

/// The answer to `POST /v1/webhooks/{id}/replay`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "WebhookReplay")]
pub enum ReplayView {
    /// The cursor rewound to `from_seq`.
    Rewound {
        /// The subscription.
        subscription: String,
        /// Where deliveries start again.
        from_seq: u64,
        /// Records from there to the end of the log.
        queued_records: u64,
    },
    /// The dead letters queued for delivery again.
    DeadLetters {
        /// The subscription.
        subscription: String,
        /// How many.
        queued_dead_letters: usize,
    },
}

struct Worker {
    sub: Subscription,
    progress: Mutex<Progress>,
    /// Set when the subscription is deleted: the worker writes nothing more.
    deleted: std::sync::atomic::AtomicBool,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Worker {
    /// Whether `p` may see this subscription: the vendor sees all, a partner its own.
    fn seen_by(&self, p: &Principal) -> bool {
        p.is_vendor() || (self.sub.partner.is_some() && self.sub.partner == p.partner)
    }

    /// Stops the delivery task (at its next await).
    fn abort(&self) {
        if let Some(h) = lock(&self.task).take() {
            h.abort();
        }
    }

    fn new(sub: Subscription) -> Self {
        Self {
            sub,
            progress: Mutex::new(Progress::default()),
            deleted: std::sync::atomic::AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }
}

/// A worker's cursor as stored. Every move is written before the next delivery and
/// handed to the operating system at once (one `write`, no sync), so a killed server
/// repeats only the event in flight. It is synced by every group commit of the log (the
/// same journal) and, while it moves, when the last sync is [`CURSOR_SYNC`] old; a machine
/// that loses power repeats the deliveries since the last sync. A sync per delivered event
/// would cost an fsync per event per subscription, each holding the store's journal, and
/// so the log's appends, while it runs: deliveries would go at the disk's fsync rate
/// (a tenth of the rate, measured).
struct StoredCursor {
    key: Vec<u8>,
    /// A delivered event was passed since the last sync.
    unsynced: bool,
    synced_at: std::time::Instant,
}

impl StoredCursor {
    fn new(id: &str) -> Self {
        Self { key: cursor_key(id), unsynced: false, synced_at: std::time::Instant::now() }
    }

    /// Writes `cursor`; `delivered`: it passed an event the receiver took (or that went to
    /// the dead letters), so it is synced within [`CURSOR_SYNC`].
    fn write(&mut self, ledger: &settle_ledger::Ledger, cursor: u64, delivered: bool) {
        self.unsynced |= delivered;
        let sync = self.due();
        if ledger.aux_put(&self.key, &cursor.to_be_bytes(), sync).is_ok() && sync {
            self.synced();
        }
    }

    /// Syncs `cursor` if an unsynced move is [`CURSOR_SYNC`] old.
    fn sync_if_due(&mut self, ledger: &settle_ledger::Ledger, cursor: u64) {
        if self.due() && ledger.aux_put(&self.key, &cursor.to_be_bytes(), true).is_ok() {
            self.synced();
        }
    }

    fn due(&self) -> bool {
        self.unsynced && self.synced_at.elapsed() >= CURSOR_SYNC
    }

    fn synced(&mut self) {
        self.unsynced = false;
        self.synced_at = std::time::Instant::now();
    }
}

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector<Guarded>>, Full<Bytes>>;

/// Reads extra trusted CA certificates (PEM) for https receivers with a private CA.
pub fn read_ca(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| anyhow::anyhow!("cannot read CA certificates from {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", path.display());
    Ok(certs)
}

/// The webhook deliverer of a running server.
pub struct Webhooks {
    svc: Arc<Service>,
    key: SigningKey,
    policy: RetryPolicy,
    client: Http,
    workers: Mutex<HashMap<String, Arc<Worker>>>,
    /// Subscription writes, one at a time (idempotency checks are read-then-write).
    writes: Mutex<()>,
    /// The API tokens, live: a subscription whose token is revoked or expires pauses.
    tokens: Arc<crate::tokens::Tokens>,
}

fn sub_key(id: &str) -> Vec<u8> {
    format!("wh/sub/{id}").into_bytes()
}
fn cursor_key(id: &str) -> Vec<u8> {
    format!("wh/cur/{id}").into_bytes()
}
fn dead_prefix(id: &str) -> Vec<u8> {
    format!("wh/dead/{id}/").into_bytes()
}
fn dead_key(id: &str, seq: u64) -> Vec<u8> {
    format!("wh/dead/{id}/{seq:020}").into_bytes()
}
fn replay_prefix(id: &str) -> Vec<u8> {
    format!("wh/replay/{id}/").into_bytes()
}
fn replay_key(id: &str, seq: u64) -> Vec<u8> {
    format!("wh/replay/{id}/{seq:020}").into_bytes()
}
fn reset_key(id: &str) -> Vec<u8> {
    format!("wh/reset/{id}").into_bytes()
}
fn idem_key(key: &str) -> Vec<u8> {
    format!("wh/key/{key}").into_bytes()
}
fn seq_of_key(k: &[u8]) -> Option<u64> {
    std::str::from_utf8(k).ok()?.rsplit('/').next()?.parse().ok()
}

/// A mutex's guard; a panic elsewhere does not poison webhook bookkeeping.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn storage(e: impl std::fmt::Display) -> Problem {
    internal(format!("webhook store: {e}"))
}

/// The request body of `POST /v1/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    /// `http://` or `https://` URL that receives the events (a public address, unless
    /// the server delivers to private ones too).
    #[schemars(regex(pattern = r"^https?://[^/?#\s]+(?:[/?#]\S*)?$"), length(max = MAX_URL_BYTES))]
    pub url: String,
    /// Event types to deliver; all when absent or empty.
    #[serde(default)]
    #[schemars(schema_with = "event_types_schema")]
    pub events: Vec<String>,
}

/// The request body of `POST /v1/webhooks/{id}/replay`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Redeliver every dead letter (the default when `from_seq` is absent).
    #[serde(default)]
    pub dead_letters: bool,
    /// Or: redeliver every event from this record on (receivers deduplicate by
    /// `webhook-id`).
    #[serde(default)]
    pub from_seq: Option<u64>,
}

/// Event type, log time and data of record `seq` as `partner` (or the vendor, `None`)
/// may see it; `None` when it is not a webhook event or not theirs.
#[must_use]
pub fn event_of(seq: u64, env: &Envelope, partner: Option<&str>, state: &State) -> Option<(&'static str, Value)> {
    let mine = |p: &str| partner.is_none_or(|me| me == p);
    let conversion_of = |mandate: &str| state.mandate_hop(mandate).map(|(_, _, c)| c.id.clone());
    let partner_of = |mandate: &str| state.mandate_hop(mandate).map(|(_, i, c)| c.hops[i].partner.clone());
    let (kind, mut data) = match &env.event {
        Event::MandateIssued { mandate_id, partner: p, amount, mandate } if mine(p) => (
            "mandate.issued",
            json!({"mandate_id": mandate_id, "partner": p, "amount": amount, "conversion": conversion_of(mandate_id), "mandate": mandate}),
        ),
        Event::ClawbackIssued { mandate_id, reverses, partner: p, amount, offset, mandate } if mine(p) => (
            "clawback.issued",
            json!({"mandate_id": mandate_id, "reverses": reverses, "partner": p, "amount": amount, "offset": offset, "mandate": mandate}),
        ),
        Event::HoldsReleased { mandate_ids, total } => match partner {
            None => ("hold.released", json!({"mandate_ids": mandate_ids, "total": total})),
            Some(me) => {
                let ids: Vec<&String> = mandate_ids.iter().filter(|m| partner_of(m).as_deref() == Some(me)).collect();
                if ids.is_empty() {
                    return None;
                }
                ("hold.released", json!({"mandate_ids": ids}))
            }
        },
        Event::SettlementConfirmed { settlement, batch, partner: p, rail, confirmation_id, mandate_ids } if mine(p) => {
            (
                "settlement.confirmed",
                with_batch(
                    json!({"settlement": settlement, "partner": p, "rail": rail, "confirmation_id": confirmation_id, "mandate_ids": mandate_ids}),
                    batch.as_deref(),
                ),
            )
        }
        Event::SettlementFailed { settlement, batch, partner: p, rail, error, mandate_ids } if mine(p) => (
            "settlement.failed",
            with_batch(
                json!({"settlement": settlement, "partner": p, "rail": rail, "error": error, "mandate_ids": mandate_ids}),
                batch.as_deref(),
            ),
        ),
        Event::PayoutBatchCreated { batch, partner: p, rail, amount, offset, mandate_ids } if mine(p) => (
            "payout.batched",
            json!({"batch": batch, "partner": p, "rail": rail, "amount": amount, "offset": offset, "mandate_ids": mandate_ids}),
        ),
        Event::PayoutBooked { settlement, partner: p, paid, offset, mandate_ids } if mine(p) => (
            "payout.booked",
            json!({"settlement": settlement, "partner": p, "paid": paid, "offset": offset, "mandate_ids": mandate_ids}),
        ),
        _ => return None,
    };
    data["seq"] = json!(seq);
    Some((kind, data))
}

fn with_batch(mut data: Value, batch: Option<&str>) -> Value {
    if let Some(b) = batch {
        data["batch"] = json!(b);
    }
    data
}

/// The message for record `seq` to subscription `sub`, if it hears of it.
#[must_use]
pub fn message_for(sub: &Subscription, seq: u64, env: &Envelope, state: &State) -> Option<Message> {
    let (kind, data) = event_of(seq, env, sub.partner.as_deref(), state)?;
    if !sub.events.is_empty() && !sub.events.iter().any(|e| e == kind) {
        return None;
    }
    let body = json!({"type": kind, "timestamp": env.at.to_rfc3339_opts(SecondsFormat::AutoSi, true), "data": data});
    Some(Message { id: format!("evt_{seq}"), seq, kind, body: settle_mandates::jcs::to_vec(&body).ok()? })
}

/// Whether deliveries may go to `ip`: public addresses only, unless the server allows
/// private ones (`--webhook-allow-private`, for receivers on the same host or network).
#[must_use]
pub fn deliverable(ip: std::net::IpAddr, allow_private: bool) -> bool {
    use std::net::IpAddr;
    if allow_private {
        return true;
    }
    match ip {
        IpAddr::V4(v) => {
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_documentation()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64
                || v.octets()[0] == 0)
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return deliverable(IpAddr::V4(v4), false);
            }
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_unique_local()
                || v.is_unicast_link_local()
                || v.is_multicast())
        }
    }
}

/// A resolver that drops addresses deliveries may not go to (so a public name that
/// resolves to an internal address is refused at connect time, not only at subscribe).
#[derive(Clone)]
struct Guarded {
    inner: hyper_util::client::legacy::connect::dns::GaiResolver,
    allow_private: bool,
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Guarded {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allow = self.allow_private;
        let fut = self.inner.call(name);
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = fut.await?.filter(|a| deliverable(a.ip(), allow)).collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the receiver's name resolves only to private addresses",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

fn check_url(url: &str, allow_private: bool) -> Result<(), Problem> {
    if url.len() > MAX_URL_BYTES {
        return Err(unprocessable(format!("url is longer than {MAX_URL_BYTES} bytes")));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| unprocessable(format!("url '{url}' does not parse: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(unprocessable(format!("url '{url}' must start with http:// or https://"))),
    }
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(unprocessable(format!("url '{url}' has no host")));
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    if literal.is_ok_and(|ip| !deliverable(ip, allow_private)) || (!allow_private && host == "localhost") {
        return Err(unprocessable(format!(
            "url '{url}' points at a private address; this server delivers to public addresses only"
        )));
    }
    Ok(())
}

impl Webhooks {
    /// The deliverer for `svc`, signing with `key`; starts no worker yet. https receivers
    /// are checked against the Mozilla root store (`webpki-roots`) and `extra_roots`.
    pub fn new(
        svc: Arc<Service>,
        key: SigningKey,
        policy: RetryPolicy,
        extra_roots: Vec<CertificateDer<'static>>,
        tokens: Arc<crate::tokens::Tokens>,
    ) -> anyhow::Result<Arc<Self>> {
        let resolver = Guarded {
            inner: hyper_util::client::legacy::connect::dns::GaiResolver::new(),
            allow_private: policy.allow_private,
        };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.set_connect_timeout(Some(policy.timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for ca in extra_roots {
            roots.add(ca).map_err(|e| anyhow::anyhow!("a CA certificate is not usable: {e}"))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4).build(https);
        Ok(Arc::new(Self {
            svc,
            key,
            policy,
            client,
            workers: Mutex::new(HashMap::new()),
            writes: Mutex::new(()),
            tokens,
        }))
    }

    /// Starts a worker for every stored subscription (inside a tokio runtime).
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        for (_, v) in self.svc.ledger().aux_scan(b"wh/sub/", usize::MAX)? {
            self.spawn(Worker::new(Subscription::from_stored(&v)?));
        }
        Ok(())
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Worker>>> {
        lock(&self.workers)
    }

    fn spawn(self: &Arc<Self>, w: Worker) {
        let w = Arc::new(w);
        let me = Arc::clone(self);
        let w2 = Arc::clone(&w);
        let h = tokio::spawn(async move { me.run(w2).await });
        *lock(&w.task) = Some(h.abort_handle());
        self.workers().insert(w.sub.id.clone(), w);
    }

    /// Stops every worker (cursors are already stored).
    pub fn stop(&self) {
        for w in self.workers().values() {
            w.abort();
        }
    }

    /// Subscription `id` if `p` may call `op` on it (a subscription not seen by `p` is
    /// not found).
    fn visible(&self, p: &Principal, op: Op, id: &str) -> Result<Arc<Worker>, Problem> {
        crate::api::allow(p, op, &[])?;
        let w = self.workers().get(id).cloned();
        match w {
            Some(w) if w.seen_by(p) => Ok(w),
            _ => Err(not_found(format!("webhook subscription '{id}' not found"))),
        }
    }

    /// Runs the write `f` once per idempotency key: the same key and request again get
    /// the original answer (`true`: replayed), another request under it a 409.
    fn once(
        &self,
        key: &str,
        request: &Value,
        f: impl FnOnce() -> Result<(Value, Vec<(Vec<u8>, Vec<u8>)>), Problem>,
    ) -> Result<(Value, bool), Problem> {
        let _one_at_a_time = lock(&self.writes);
        let hash = hex::encode(Sha256::digest(settle_mandates::jcs::to_vec(request).map_err(storage)?));
        let ledger = self.svc.ledger();
        if let Some(v) = ledger.aux_get(&idem_key(key)).map_err(storage)? {
            let prior: Value = serde_json::from_slice(&v).map_err(storage)?;
            if prior["hash"] != json!(hash) {
                return Err(key_reused(format!("idempotency key '{key}' was already used with a different request")));
            }
            return Ok((prior["response"].clone(), true));
        }
        // The write and its answer under the key: one atomic, durable batch.
        let (response, mut writes) = f()?;
        let record = serde_json::to_vec(&json!({"hash": hash, "response": response})).map_err(storage)?;
        writes.push((idem_key(key), record));
        let entries: Vec<(&[u8], &[u8])> = writes.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        ledger.aux_apply(&entries, &[], true).map_err(storage)?;
        Ok((response, false))
    }

    /// `POST /v1/webhooks`: subscribes `p` (idempotent on `key`); the answer carries the
    /// secret.
    pub fn subscribe(
        self: &Arc<Self>,
        p: &Principal,
        key: &str,
        body: SubscribeBody,
    ) -> Result<(Value, bool), Problem> {
        crate::api::allow(p, Op::Subscribe, &[])?;
        let request = serde_json::to_value(&body).map_err(storage)?;
        let mut created = None;
        let answer = self.once(key, &request, || {
            check_url(&body.url, self.policy.allow_private)?;
            if let Some(e) = body.events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
                return Err(unprocessable(format!("unknown event type '{e}'; known: {}", EVENT_TYPES.join(", "))));
            }
            let owner = p.by();
            if self.workers().values().filter(|w| w.sub.owner == owner).count() >= MAX_SUBSCRIPTIONS_PER_PRINCIPAL {
                return Err(unprocessable(format!(
                    "at most {MAX_SUBSCRIPTIONS_PER_PRINCIPAL} subscriptions per principal; delete one first"
                )));
            }
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(storage)?;
            let mut idb = [0u8; 12];
            getrandom::fill(&mut idb).map_err(storage)?;
            let mut events = body.events.clone();
            events.sort();
            events.dedup();
            let ledger = self.svc.ledger();
            let sub = Subscription {
                id: format!("whsub_{}", hex::encode(idb)),
                url: body.url.clone(),
                events,
                owner,
                partner: if p.is_vendor() { None } else { p.partner.clone() },
                secret: Secret::from_bytes(&raw).to_text(),
                created_at: Utc::now(),
                from_seq: ledger.size(),
                token_id: p.stored_token().unwrap_or_default().to_owned(),
                agent: (p.kind == PrincipalKind::PartnerAgent).then(|| p.subject.clone()),
                idem: String::from_utf8_lossy(&idem_key(key)).into_owned(),
            };
            let writes = vec![
                (cursor_key(&sub.id), sub.from_seq.to_be_bytes().to_vec()),
                (sub_key(&sub.id), serde_json::to_vec(&sub).map_err(storage)?),
            ];
            let w = Worker::new(sub);
            let response = self.describe(&w, true);
            created = Some(w);
            Ok((response, writes))
        })?;
        if let Some(w) = created {
            self.spawn(w);
        }
        Ok(answer)
    }

    fn view(&self, w: &Worker, with_secret: bool) -> SubscriptionView {
        let ledger = self.svc.ledger();
        let cursor = self.stored_cursor(&w.sub);
        let dead = ledger.aux_scan(&dead_prefix(&w.sub.id), DEAD_LETTERS_COUNTED).map_or(0, |v| v.len());
        let progress = lock(&w.progress).clone();
        SubscriptionView {
            id: w.sub.id.clone(),
            url: w.sub.url.clone(),
            events: if w.sub.events.is_empty() {
                EVENT_TYPES.iter().map(|s| (*s).to_owned()).collect()
            } else {
                w.sub.events.clone()
            },
            owner: w.sub.owner.clone(),
            partner: w.sub.partner.clone(),
            created_at: w.sub.created_at,
            from_seq: w.sub.from_seq,
            cursor,
            dead_letters: dead,
            delivery: progress,
            public_key: webhook::public_key_text(&self.key),
            kid: self.key.kid().to_owned(),
            secret: with_secret.then(|| w.sub.secret.clone()),
        }
    }

    fn describe(&self, w: &Worker, with_secret: bool) -> Value {
        serde_json::to_value(self.view(w, with_secret)).unwrap_or_else(|e| json!({"error": e.to_string()}))
    }

    /// `GET /v1/webhooks`: the principal's subscriptions (every one for the vendor).
    pub fn list(&self, p: &Principal) -> Result<SubscriptionList, Problem> {
        crate::api::allow(p, Op::ListSubscriptions, &[])?;
        let mut ws: Vec<Arc<Worker>> = self.workers().values().filter(|w| w.seen_by(p)).cloned().collect();
        ws.sort_by(|a, b| a.sub.created_at.cmp(&b.sub.created_at).then(a.sub.id.cmp(&b.sub.id)));
        Ok(SubscriptionList { subscriptions: ws.iter().map(|w| self.view(w, false)).collect() })
    }

    /// `GET /v1/webhooks/{id}`.
    pub fn get(&self, p: &Principal, id: &str) -> Result<SubscriptionView, Problem> {
        let w = self.visible(p, Op::GetSubscription, id)?;
        Ok(self.view(&w, false))
    }

    /// `DELETE /v1/webhooks/{id}`: stops deliveries and forgets the subscription, its
    /// cursor, dead letters, queued replays and the stored answer to its creation (a
    /// retry of that creation then subscribes anew), in one atomic batch.
    pub fn delete(&self, p: &Principal, id: &str) -> Result<(), Problem> {
        let _one_at_a_time = lock(&self.writes);
        let w = self.visible(p, Op::Unsubscribe, id)?;
        w.deleted.store(true, std::sync::atomic::Ordering::Release);
        w.abort();
        self.workers().remove(id);
        let ledger = self.svc.ledger();
        let mut keys = vec![cursor_key(id), sub_key(id), reset_key(id)];
        if !w.sub.idem.is_empty() {
            keys.push(w.sub.idem.clone().into_bytes());
        }
        for prefix in [dead_prefix(id), replay_prefix(id)] {
            keys.extend(ledger.aux_scan(&prefix, usize::MAX).map_err(storage)?.into_iter().map(|(k, _)| k));
        }
        let removes: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        ledger.aux_apply(&[], &removes, true).map_err(storage)
    }

    /// `GET /v1/webhooks/{id}/dead-letters`.
    pub fn dead_letters(&self, p: &Principal, id: &str) -> Result<DeadLetterList, Problem> {
        let w = self.visible(p, Op::DeadLetters, id)?;
        let list = self.svc.ledger().aux_scan(&dead_prefix(&w.sub.id), MAX_DEAD_LETTERS_LISTED).map_err(storage)?;
        let dead = list.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect();
        Ok(DeadLetterList { subscription: id.to_owned(), dead_letters: dead })
    }

    /// `POST /v1/webhooks/{id}/replay` (vendor only): queues the dead letters, or rewinds
    /// the cursor to `from_seq`.
    pub fn replay(&self, p: &Principal, key: &str, id: &str, body: &ReplayBody) -> Result<(Value, bool), Problem> {
        self.visible(p, Op::ReplayDeliveries, id)?;
        let request = json!({"subscription": id, "dead_letters": body.dead_letters, "from_seq": body.from_seq});
        self.once(key, &request, || {
            let ledger = self.svc.ledger();
            if let Some(from) = body.from_seq {
                if body.dead_letters {
                    return Err(unprocessable("give either from_seq or dead_letters, not both"));
                }
                let size = ledger.size();
                if from > size {
                    return Err(unprocessable(format!("from_seq {from} is past the end of the log ({size} records)")));
                }
                // Stored with the answer: a restart before the worker sees it loses nothing.
                let writes = vec![(reset_key(id), from.to_be_bytes().to_vec())];
                let v =
                    ReplayView::Rewound { subscription: id.to_owned(), from_seq: from, queued_records: size - from };
                return Ok((serde_json::to_value(v).map_err(storage)?, writes));
            }
            let dead = ledger.aux_scan(&dead_prefix(id), usize::MAX).map_err(storage)?;
            let writes = dead.iter().filter_map(|(k, _)| seq_of_key(k)).map(|s| (replay_key(id, s), vec![])).collect();
            let v = ReplayView::DeadLetters { subscription: id.to_owned(), queued_dead_letters: dead.len() };
            Ok((serde_json::to_value(v).map_err(storage)?, writes))
        })
    }

    /// The worker of one subscription: queued replays first, then the log from its
    /// cursor, one event at a time, in order.
    async fn run(self: Arc<Self>, w: Arc<Worker>) {
        let id = w.sub.id.clone();
        let ledger = self.svc.ledger().clone();
        let mut cursor = self.stored_cursor(&w.sub);
        let mut stored = StoredCursor::new(&id);
        let gone = || w.deleted.load(std::sync::atomic::Ordering::Acquire);
        loop {
            if gone() {
                return;
            }
            stored.sync_if_due(&ledger, cursor);
            if !self.authorised(&w.sub) {
                lock(&w.progress).last_error =
                    Some("paused: the token that subscribed is revoked, or the agent's grant is not current".into());
                tokio::time::sleep(PAUSED_POLL).await;
                continue;
            }
            // A rewind asked for by a replay (stored durably with its answer).
            if let Ok(Some(v)) = ledger.aux_get(&reset_key(&id))
                && let Ok(b) = <[u8; 8]>::try_from(v.as_slice())
            {
                cursor = u64::from_be_bytes(b);
                let ok = ledger.aux_apply(&[(&cursor_key(&id), &cursor.to_be_bytes())], &[&reset_key(&id)], true);
                if ok.is_err() {
                    tokio::time::sleep(IDLE_POLL).await;
                }
                continue;
            }
            // Replays of dead letters.
            if let Ok(queued) = ledger.aux_scan(&replay_prefix(&id), 64)
                && !queued.is_empty()
            {
                let mut failed = false;
                for (k, _) in queued {
                    if !self.authorised(&w.sub) {
                        break;
                    }
                    let mut removes = vec![k.clone()];
                    if let Some(seq) = seq_of_key(&k)
                        && let Some(m) = self.message_at(&w.sub, seq)
                        && self.deliver(&w, &m).await
                    {
                        removes.push(dead_key(&id, seq));
                    }
                    if gone() {
                        return;
                    }
                    let r: Vec<&[u8]> = removes.iter().map(Vec::as_slice).collect();
                    failed |= ledger.aux_apply(&[], &r, false).is_err();
                }
                if failed {
                    tokio::time::sleep(IDLE_POLL).await;
                }
                tokio::task::yield_now().await;
                continue;
            }
            let size = ledger.size();
            if cursor >= size {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            let end = size.min(cursor + SCAN_CHUNK);
            let mut records = Vec::new();
            for r in ledger.records(cursor).take(usize::try_from(end - cursor).unwrap_or(usize::MAX)) {
                match r
                    .map_err(|e| e.to_string())
                    .and_then(|r| Envelope::from_bytes(&r.event).map(|e| (r.seq, e)).map_err(|e| e.to_string()))
                {
                    Ok(x) => records.push(x),
                    Err(e) => {
                        tracing::error!("webhooks: cannot read the log at {cursor}: {e}");
                        break;
                    }
                }
            }
            if records.is_empty() {
                tokio::time::sleep(PAUSED_POLL).await;
                continue;
            }
            // One look at the engine state per chunk (it shares a lock with the sequencer).
            let messages: Vec<(u64, Option<Message>)> = self
                .svc
                .with_state(|s| records.iter().map(|(seq, env)| (*seq, message_for(&w.sub, *seq, env, s))).collect());
            for (seq, m) in messages {
                if gone() {
                    return;
                }
                if let Some(m) = m {
                    // Authority is checked before every delivery (the cursor stays here).
                    if !self.authorised(&w.sub) {
                        break;
                    }
                    cursor = seq + 1;
                    self.deliver(&w, &m).await;
                    if gone() {
                        return;
                    }
                    // Past this event for good (taken, or a dead letter): stored before the
                    // next delivery, so a crash repeats only the event in flight.
                    stored.write(&ledger, cursor, true);
                } else {
                    cursor = seq + 1;
                }
            }
            // Records this subscription does not hear of: one cursor write per chunk.
            if gone() {
                return;
            }
            stored.write(&ledger, cursor, false);
        }
    }

    /// Whether the subscriber may still hear of its events: its token is in force and, for
    /// a partner's agent, the partner's grant recorded in the log is current.
    fn authorised(&self, sub: &Subscription) -> bool {
        if !sub.token_id.is_empty() && !self.tokens.id_in_force(&sub.token_id, Utc::now().timestamp()) {
            return false;
        }
        let Some(agent) = &sub.agent else { return true };
        let now = Utc::now();
        self.svc.with_state(|s| {
            s.agents.get(agent).is_some_and(|a| a.is_current(now) && Some(&a.partner) == sub.partner.as_ref())
        })
    }

    /// The next record `sub` has not handled, as stored.
    fn stored_cursor(&self, sub: &Subscription) -> u64 {
        let stored = self.svc.ledger().aux_get(&cursor_key(&sub.id)).ok().flatten();
        stored.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(sub.from_seq, u64::from_be_bytes)
    }

    fn message_at(&self, sub: &Subscription, seq: u64) -> Option<Message> {
        let r = self.svc.ledger().record(seq).ok()??;
        let env = Envelope::from_bytes(&r.event).ok()?;
        self.svc.with_state(|s| message_for(sub, seq, &env, s))
    }

    /// Delivers `m` with retries; true when the subscriber took it, false when it went to
    /// the dead letters.
    async fn deliver(&self, w: &Worker, m: &Message) -> bool {
        let mut failed = 0u32;
        loop {
            {
                let mut p = lock(&w.progress);
                p.pending = Some(m.seq);
                p.pending_attempts = failed;
            }
            let err = match self.attempt(&w.sub, m).await {
                Ok(()) => {
                    let mut p = lock(&w.progress);
                    p.delivered += 1;
                    p.pending = None;
                    p.pending_attempts = 0;
                    p.last_success_at = Some(Utc::now());
                    return true;
                }
                Err(e) => e,
            };
            failed += 1;
            {
                let mut p = lock(&w.progress);
                p.failed_attempts += 1;
                p.last_error = Some(format!("{}: {err}", m.id));
            }
            if failed >= self.policy.attempts {
                let d = DeadLetter {
                    webhook_id: m.id.clone(),
                    seq: m.seq,
                    kind: m.kind.into(),
                    attempts: failed,
                    last_error: err,
                    failed_at: Utc::now(),
                };
                tracing::warn!("webhook {} to {} is dead after {failed} attempts", m.id, w.sub.url);
                if let Ok(v) = serde_json::to_vec(&d)
                    && !w.deleted.load(std::sync::atomic::Ordering::Acquire)
                {
                    let _ = self.svc.ledger().aux_put(&dead_key(&w.sub.id, m.seq), &v, true);
                }
                lock(&w.progress).pending = None;
                return false;
            }
            let jitter = rand::rng().random_range(0..=1000);
            tokio::time::sleep(self.policy.delay(failed, jitter)).await;
        }
    }

    async fn attempt(&self, sub: &Subscription, m: &Message) -> Result<(), String> {
        let secret = Secret::parse(&sub.secret).map_err(|e| e.to_string())?;
        let ts = Utc::now().timestamp();
        let sig = webhook::sign(&m.id, ts, &m.body, &secret, &self.key);
        let req = hyper::Request::post(&sub.url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("settle-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &m.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(Full::new(Bytes::from(m.body.clone())))
            .map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(self.policy.timeout, async {
            let r = self.client.request(req).await.map_err(|e| format!("cannot deliver: {e}"))?;
            let status = r.status();
            // Drain (bounded by the timeout) so the connection can be reused.
            let _ = r.into_body().collect().await;
            Ok::<StatusCode, String>(status)
        })
        .await
        .map_err(|_| format!("no answer within {} ms", self.policy.timeout.as_millis()))??;
        if res.is_success() { Ok(()) } else { Err(format!("answered {res}")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> settle_mandates::money::Amount {
        settle_mandates::money::Amount::from_minor(minor, "USD".parse().expect("USD")).expect("amount")
    }

    /// One record of each webhook type, and the state they refer to: a conversion
    /// recorded at seq 100 paying p1 (hop 0) and p2 (hop 1).
    fn fixture() -> (State, Vec<(u64, Envelope)>) {
        use settle_engine::state::{Conversion, Hop, HopStatus};
        let mut state = State::default();
        let hop = |partner: &str, amount| Hop {
            partner: partner.into(),
            amount,
            clawed: 0,
            status: HopStatus::Payable,
            payable_at: 0,
        };
        state.conversions.insert(
            100,
            &Conversion {
                id: "C-100".into(),
                program: "growth".into(),
                rule_version: 1,
                revenue: usd(1_000_000),
                refunded: 0,
                pool: usd(100_000),
                hops: vec![hop("p1", 40_000), hop("p2", 60_000)],
                released_at: None,
                held: None,
            },
        );
        let at: DateTime<Utc> = "2026-11-25T08:00:00Z".parse().expect("time");
        let env = |event| Envelope { v: 1, at, by: "engine".into(), key: None, cause: Some(100), event };
        let records = vec![
            (
                101,
                env(Event::MandateIssued {
                    mandate_id: "md_100_0".into(),
                    partner: "p1".into(),
                    amount: usd(40_000),
                    mandate: "eyJ.p1.sig".into(),
                }),
            ),
            (
                102,
                env(Event::MandateIssued {
                    mandate_id: "md_100_1".into(),
                    partner: "p2".into(),
                    amount: usd(60_000),
                    mandate: "eyJ.p2.sig".into(),
                }),
            ),
            (
                110,
                env(Event::ClawbackIssued {
                    mandate_id: "mc_109_0".into(),
                    reverses: "md_100_0".into(),
                    partner: "p1".into(),
                    amount: usd(4_000),
                    offset: usd(0),
                    mandate: "eyJ.c1.sig".into(),
                }),
            ),
            (
                120,
                env(Event::HoldsReleased {
                    mandate_ids: vec!["md_100_0".into(), "md_100_1".into()],
                    total: usd(96_000),
                }),
            ),
            (
                130,
                env(Event::SettlementConfirmed {
                    settlement: "S1".into(),
                    batch: None,
                    partner: "p1".into(),
                    rail: "book".into(),
                    confirmation_id: "BK-1".into(),
                    mandate_ids: vec!["md_100_0".into()],
                }),
            ),
            (
                131,
                env(Event::PayoutBooked {
                    settlement: "S1".into(),
                    partner: "p1".into(),
                    paid: usd(36_000),
                    offset: usd(0),
                    mandate_ids: vec!["md_100_0".into()],
                }),
            ),
            (
                135,
                env(Event::PayoutBatchCreated {
                    batch: "B2".into(),
                    partner: "p2".into(),
                    rail: "sepa".into(),
                    amount: usd(60_000),
                    offset: usd(0),
                    mandate_ids: vec!["md_100_1".into()],
                }),
            ),
            (
                140,
                env(Event::SettlementFailed {
                    settlement: "S2".into(),
                    batch: Some("B2".into()),
                    partner: "p2".into(),
                    rail: "sepa".into(),
                    error: "AC04".into(),
                    mandate_ids: vec!["md_100_1".into()],
                }),
            ),
            (150, env(Event::HoldsAdvanced { to: at })),
        ];
        (state, records)
    }

    fn sub(partner: Option<&str>) -> Subscription {
        Subscription {
            id: "whsub_test".into(),
            url: "http://127.0.0.1:9/h".into(),
            events: vec![],
            owner: "test".into(),
            partner: partner.map(str::to_owned),
            secret: Secret::from_bytes(&[1; 32]).to_text(),
            created_at: Utc::now(),
            from_seq: 0,
            token_id: String::new(),
            agent: None,
            idem: String::new(),
        }
    }

    /// A subscription stored by an earlier settle for an agent that signs its own tokens
    /// named its principal's id as its token; read back, it names none (so a token store,
    /// which never holds such an id, does not pause it), and a stored token stays as it is.
    #[test]
    fn a_stored_subscription_names_only_a_stored_token() {
        let stored = |token: &str| serde_json::to_vec(&Subscription { token_id: token.into(), ..sub(None) }).unwrap();
        let agent = format!("{}agent-7", crate::api::AGENT_KEY_TOKEN_ID);
        assert_eq!(Subscription::from_stored(&stored(&agent)).unwrap().token_id, "");
        assert_eq!(Subscription::from_stored(&stored("tok_1")).unwrap().token_id, "tok_1");
        assert_eq!(Subscription::from_stored(&stored("")).unwrap().token_id, "");
    }

    /// The bodies each kind of subscriber receives, byte for byte (golden vector
    /// `tests/vectors/webhook_messages.json`; rewrite with SETTLE_BLESS=1).
    #[test]
    fn message_bodies_match_the_golden_vector_and_partners_hear_only_of_their_money() {
        let (state, records) = fixture();
        let mut out = serde_json::Map::new();
        for (who, partner) in [("vendor", None), ("p1", Some("p1")), ("p2", Some("p2"))] {
            let s = sub(partner);
            let msgs: Vec<Value> = records
                .iter()
                .filter_map(|(seq, env)| message_for(&s, *seq, env, &state))
                .map(|m| json!({"webhook-id": m.id, "body": String::from_utf8(m.body).expect("UTF-8")}))
                .collect();
            out.insert(who.into(), Value::Array(msgs));
        }
        let ids = |who: &str| -> Vec<String> {
            out[who]
                .as_array()
                .expect("list")
                .iter()
                .map(|m| m["webhook-id"].as_str().expect("id").to_owned())
                .collect()
        };
        assert_eq!(
            ids("vendor"),
            ["evt_101", "evt_102", "evt_110", "evt_120", "evt_130", "evt_131", "evt_135", "evt_140"]
        );
        assert_eq!(ids("p1"), ["evt_101", "evt_110", "evt_120", "evt_130", "evt_131"]);
        assert_eq!(ids("p2"), ["evt_102", "evt_120", "evt_135", "evt_140"]);
        let p1_release = &out["p1"].as_array().expect("list")[2]["body"];
        assert!(!p1_release.as_str().expect("body").contains("md_100_1"), "p2's mandate in p1's release: {p1_release}");
        let mut only = sub(None);
        only.events = vec!["settlement.failed".into()];
        let picked: Vec<u64> =
            records.iter().filter_map(|(seq, env)| message_for(&only, *seq, env, &state).map(|m| m.seq)).collect();
        assert_eq!(picked, [140], "an event filter delivers only its types");
        crate::golden::check("webhook_messages.json", &Value::Object(out));
    }

    /// docs/webhooks.md says how many types a subscription without `events` gets, names
    /// each of them there, and describes each in its table of event types.
    #[test]
    fn the_webhooks_guide_names_every_event_type() {
        let doc = include_str!("../docs/webhooks.md");
        let item = doc.split("\n- ").find(|i| i.starts_with("`events` is optional")).expect("the `events` item");
        let count = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
        assert!(item.contains(&format!("all {} types", count[EVENT_TYPES.len()])), "{item}");
        for t in EVENT_TYPES {
            assert!(item.contains(&format!("`{t}`")), "{t} is not named in: {item}");
        }
        let table: std::collections::BTreeSet<&str> =
            doc.lines().filter_map(|l| l.strip_prefix("| `")?.split('`').next()).collect();
        assert_eq!(table, EVENT_TYPES.iter().copied().collect(), "the table of event types");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_half_of_it_jitter() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            attempts: 5,
            timeout: Duration::from_secs(1),
            allow_private: false,
        };
        let ms = |failed, j| p.delay(failed, j).as_millis();
        assert_eq!([ms(1, 0), ms(2, 0), ms(3, 0), ms(4, 0), ms(5, 0), ms(30, 0)], [50, 100, 200, 400, 500, 500]);
        assert_eq!([ms(1, 1000), ms(3, 1000), ms(9, 1000), ms(9, 5000)], [100, 400, 1000, 1000]);
        assert_eq!(ms(3, 500), 300);
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        check_url("https://hooks.example.com/settle", false).unwrap();
        check_url("http://8.8.8.8:8080/hooks", false).unwrap();
        for bad in ["ftp://x/y", "/relative", "http://", "not a url"] {
            assert!(check_url(bad, true).is_err(), "{bad}");
        }
        assert!(check_url(&format!("http://h/{}", "a".repeat(MAX_URL_BYTES)), true).is_err());
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/h",
            "http://localhost/h",
            "http://10.1.2.3/h",
            "http://192.168.0.1/h",
            "http://172.16.5.5/h",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/h",
            "http://0.0.0.0/h",
            "http://[::1]/h",
            "http://[fd00::1]/h",
            "http://[fe80::1]/h",
            "http://[::ffff:127.0.0.1]/h",
        ] {
            assert!(check_url(url, false).is_err(), "{url} must be refused");
            check_url(url, true).unwrap();
        }
        assert!(deliverable("93.184.216.34".parse().unwrap(), false));
        assert!(deliverable("2606:2800:220:1::1".parse().unwrap(), false));
        assert!(!deliverable("10.0.0.1".parse().unwrap(), false));
        assert!(deliverable("10.0.0.1".parse().unwrap(), true));
    }
}
