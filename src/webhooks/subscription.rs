//! Subscriptions: what a subscriber asked for and how it is stored beside the log (the
//! `aux` keyspace: subscriptions, cursors, dead letters, queued replays and the answers
//! to their creation), what the API shows of them, and the retry policy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::events::EVENT_TYPES;
use crate::auth::AGENT_KEY_TOKEN_ID;

/// Longest subscriber URL, bytes.
pub const MAX_URL_BYTES: usize = 2048;

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
    pub(super) fn from_stored(v: &[u8]) -> serde_json::Result<Self> {
        let mut sub: Self = serde_json::from_slice(v)?;
        if sub.token_id.starts_with(AGENT_KEY_TOKEN_ID) {
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

/// What a worker reports about its subscription.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookDelivery")]
pub(super) struct Progress {
    /// Events delivered since the server started.
    pub(super) delivered: u64,
    /// Failed attempts since the server started.
    pub(super) failed_attempts: u64,
    /// The record being delivered, if one is.
    pub(super) pending: Option<u64>,
    /// Attempts made at it.
    pub(super) pending_attempts: u32,
    /// The last failure.
    pub(super) last_error: Option<String>,
    /// When a delivery last succeeded.
    pub(super) last_success_at: Option<DateTime<Utc>>,
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
    pub(super) delivery: Progress,
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

/// Where each thing of subscription `id` is kept in the `aux` keyspace.
pub(super) mod keys {
    pub fn sub_key(id: &str) -> Vec<u8> {
        format!("wh/sub/{id}").into_bytes()
    }
    pub fn cursor_key(id: &str) -> Vec<u8> {
        format!("wh/cur/{id}").into_bytes()
    }
    pub fn dead_prefix(id: &str) -> Vec<u8> {
        format!("wh/dead/{id}/").into_bytes()
    }
    pub fn dead_key(id: &str, seq: u64) -> Vec<u8> {
        format!("wh/dead/{id}/{seq:020}").into_bytes()
    }
    pub fn replay_prefix(id: &str) -> Vec<u8> {
        format!("wh/replay/{id}/").into_bytes()
    }
    pub fn replay_key(id: &str, seq: u64) -> Vec<u8> {
        format!("wh/replay/{id}/{seq:020}").into_bytes()
    }
    pub fn reset_key(id: &str) -> Vec<u8> {
        format!("wh/reset/{id}").into_bytes()
    }
    pub fn idem_key(key: &str) -> Vec<u8> {
        format!("wh/key/{key}").into_bytes()
    }
    pub fn seq_of_key(k: &[u8]) -> Option<u64> {
        std::str::from_utf8(k).ok()?.rsplit('/').next()?.parse().ok()
    }
}
