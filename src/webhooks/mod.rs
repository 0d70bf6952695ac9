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

mod client;
mod events;
mod subscription;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::{Value, json};
use settle_mandates::keys::SigningKey;
use settle_mandates::webhook::{self, Secret};

use crate::auth::tokens::Tokens;
use crate::auth::{Principal, PrincipalKind};
use crate::catalogue::{Op, allow};
use crate::error::Error;
use crate::service::{Service, request_hash};
pub use client::read_ca;
pub use events::{EVENT_TYPES, EventType};
use subscription::keys::{
    cursor_key, dead_prefix, idem_key, replay_key, replay_prefix, reset_key, seq_of_key, sub_key,
};
pub use subscription::{
    DeadLetterList, ReplayBody, ReplayView, RetryPolicy, SubscribeBody, Subscription, SubscriptionList,
    SubscriptionView,
};
use worker::Worker;

/// Most subscriptions one principal may hold.
pub const MAX_SUBSCRIPTIONS_PER_PRINCIPAL: usize = 20;
/// Dead letters counted in a subscription's description (more show as this number).
pub const DEAD_LETTERS_COUNTED: usize = 10_000;
/// Most dead letters listed in one answer.
pub const MAX_DEAD_LETTERS_LISTED: usize = 1000;

/// The webhook deliverer of a running server.
pub struct Webhooks {
    svc: Arc<Service>,
    key: SigningKey,
    policy: RetryPolicy,
    client: client::Http,
    workers: Mutex<HashMap<String, Arc<Worker>>>,
    /// Subscription writes, one at a time (idempotency checks are read-then-write).
    writes: Mutex<()>,
    /// The API tokens, live: a subscription whose token is revoked or expires pauses.
    tokens: Arc<Tokens>,
}

/// A mutex's guard; a panic elsewhere does not poison webhook bookkeeping.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("webhook store: {e}"))
}

impl Webhooks {
    /// The deliverer for `svc`, signing with `key`; starts no worker yet. https receivers
    /// are checked against the Mozilla root store (`webpki-roots`) and `extra_roots`.
    pub fn new(
        svc: Arc<Service>,
        key: SigningKey,
        policy: RetryPolicy,
        extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
        tokens: Arc<Tokens>,
    ) -> anyhow::Result<Arc<Self>> {
        let client = client::build(&policy, extra_roots)?;
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
    fn visible(&self, p: &Principal, op: Op, id: &str) -> Result<Arc<Worker>, Error> {
        allow(p, op, &[])?;
        let w = self.workers().get(id).cloned();
        match w {
            Some(w) if w.seen_by(p) => Ok(w),
            _ => Err(Error::not_found(format!("webhook subscription '{id}' not found"))),
        }
    }

    /// Runs the write `f` once per idempotency key: the same key and request again get
    /// the original answer (`true`: replayed), another request under it a 409.
    fn once(
        &self,
        key: &str,
        request: &Value,
        f: impl FnOnce() -> Result<(Value, Vec<(Vec<u8>, Vec<u8>)>), Error>,
    ) -> Result<(Value, bool), Error> {
        let _one_at_a_time = lock(&self.writes);
        let hash = hex::encode(request_hash(request));
        let ledger = self.svc.ledger();
        if let Some(v) = ledger.aux_get(&idem_key(key)).map_err(storage)? {
            let prior: Value = serde_json::from_slice(&v).map_err(storage)?;
            if prior["hash"] != json!(hash) {
                return Err(Error::key_reused(format!(
                    "idempotency key '{key}' was already used with a different request"
                )));
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
    pub fn subscribe(self: &Arc<Self>, p: &Principal, key: &str, body: SubscribeBody) -> Result<(Value, bool), Error> {
        allow(p, Op::Subscribe, &[])?;
        let request = serde_json::to_value(&body).map_err(storage)?;
        let mut created = None;
        let answer = self.once(key, &request, || {
            client::check_url(&body.url, self.policy.allow_private)?;
            if let Some(e) = body.events.iter().find(|e| EventType::parse(e).is_none()) {
                return Err(Error::rejected(format!("unknown event type '{e}'; known: {}", EVENT_TYPES.join(", "))));
            }
            let owner = p.by();
            if self.workers().values().filter(|w| w.sub.owner == owner).count() >= MAX_SUBSCRIPTIONS_PER_PRINCIPAL {
                return Err(Error::rejected(format!(
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
    pub fn list(&self, p: &Principal) -> Result<SubscriptionList, Error> {
        allow(p, Op::ListSubscriptions, &[])?;
        let mut ws: Vec<Arc<Worker>> = self.workers().values().filter(|w| w.seen_by(p)).cloned().collect();
        ws.sort_by(|a, b| a.sub.created_at.cmp(&b.sub.created_at).then(a.sub.id.cmp(&b.sub.id)));
        Ok(SubscriptionList { subscriptions: ws.iter().map(|w| self.view(w, false)).collect() })
    }

    /// `GET /v1/webhooks/{id}`.
    pub fn get(&self, p: &Principal, id: &str) -> Result<SubscriptionView, Error> {
        let w = self.visible(p, Op::GetSubscription, id)?;
        Ok(self.view(&w, false))
    }

    /// `DELETE /v1/webhooks/{id}`: stops deliveries and forgets the subscription, its
    /// cursor, dead letters, queued replays and the stored answer to its creation (a
    /// retry of that creation then subscribes anew), in one atomic batch.
    pub fn delete(&self, p: &Principal, id: &str) -> Result<(), Error> {
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
    pub fn dead_letters(&self, p: &Principal, id: &str) -> Result<DeadLetterList, Error> {
        let w = self.visible(p, Op::DeadLetters, id)?;
        let list = self.svc.ledger().aux_scan(&dead_prefix(&w.sub.id), MAX_DEAD_LETTERS_LISTED).map_err(storage)?;
        let dead = list.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect();
        Ok(DeadLetterList { subscription: id.to_owned(), dead_letters: dead })
    }

    /// `POST /v1/webhooks/{id}/replay` (vendor only): queues the dead letters, or rewinds
    /// the cursor to `from_seq`.
    pub fn replay(&self, p: &Principal, key: &str, id: &str, body: &ReplayBody) -> Result<(Value, bool), Error> {
        self.visible(p, Op::ReplayDeliveries, id)?;
        let request = json!({"subscription": id, "dead_letters": body.dead_letters, "from_seq": body.from_seq});
        self.once(key, &request, || {
            let ledger = self.svc.ledger();
            if let Some(from) = body.from_seq {
                if body.dead_letters {
                    return Err(Error::rejected("give either from_seq or dead_letters, not both"));
                }
                let size = ledger.size();
                if from > size {
                    return Err(Error::rejected(format!(
                        "from_seq {from} is past the end of the log ({size} records)"
                    )));
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::DateTime;
    use settle_engine::{Envelope, Event, State};

    use super::client::{check_url, deliverable};
    use super::events::message_for;
    use super::subscription::MAX_URL_BYTES;
    use super::*;

    fn usd(minor: i64) -> settle_mandates::money::Amount {
        settle_mandates::money::Amount::from_minor(minor, "USD".parse().expect("USD")).expect("amount")
    }

    /// One record of each webhook type, and the state they refer to: a conversion
    /// recorded at seq 100 paying p1 (hop 0) and p2 (hop 1).
    fn fixture() -> (State, Vec<(u64, Envelope)>) {
        use settle_engine::model::{DisputeOutcome, DisputeStatus, DisputeSubject};
        use settle_engine::state::{Conversion, Dispute, Hop, HopStatus};
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
                    rail: "bank".into(),
                    amount: usd(60_000),
                    offset: usd(0),
                    credit: None,
                    instrument: Some(format!("pi_{}", "ab".repeat(32))),
                    mandate_ids: vec!["md_100_1".into()],
                }),
            ),
            (
                140,
                env(Event::SettlementFailed {
                    settlement: "S2".into(),
                    batch: Some("B2".into()),
                    partner: "p2".into(),
                    rail: "bank".into(),
                    error: "AC04".into(),
                    mandate_ids: vec!["md_100_1".into()],
                }),
            ),
            (
                145,
                env(Event::PayoutReturned {
                    settlement: "S3".into(),
                    batch: "B1".into(),
                    partner: "p1".into(),
                    amount: usd(36_000),
                    mandate_ids: vec!["md_100_0".into()],
                }),
            ),
            (150, env(Event::HoldsAdvanced { to: at })),
            (
                160,
                env(Event::DisputeOpened {
                    dispute: "D1".into(),
                    partner: "p2".into(),
                    subject: DisputeSubject::Mandate { mandate: "md_100_1".into() },
                    claimed: Some(usd(1_000)),
                    statement: "the closer's share is too small".into(),
                    evidence: vec!["receipt of md_100_1".into()],
                }),
            ),
            (161, env(Event::DisputeCommented { dispute: "D1".into(), text: "checking".into() })),
            (
                162,
                env(Event::DisputeResolved {
                    dispute: "D1".into(),
                    outcome: DisputeOutcome::Accepted,
                    reason: "agreed".into(),
                    adjustments: vec![],
                }),
            ),
            (
                163,
                env(Event::AdjustmentIssued {
                    mandate_id: "aj_162_0".into(),
                    dispute: "D1".into(),
                    partner: "p2".into(),
                    amount: usd(1_000),
                    mandate: "eyJ.a2.sig".into(),
                }),
            ),
            (165, env(Event::DisputeOverdue { dispute: "D2".into(), due_at: at })),
            (166, env(Event::DisputeWithdrawn { dispute: "D2".into(), reason: String::new() })),
        ];
        for (id, partner) in [("D1", "p2"), ("D2", "p1")] {
            let d = Dispute {
                partner: partner.into(),
                program: "growth".into(),
                opened_by: format!("partner:{partner}"),
                subject: DisputeSubject::Conversion { conversion: "C-100".into() },
                claimed: None,
                statement: "claim".into(),
                evidence: vec![],
                opened_at: at,
                due_at: at,
                status: DisputeStatus::Open,
                overdue: false,
                seq: 160,
                comments: vec![],
                closed: None,
                adjustments: vec![],
            };
            state.disputes.insert(id.into(), d);
        }
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
        let agent = format!("{}agent-7", crate::auth::AGENT_KEY_TOKEN_ID);
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
            [
                "evt_101", "evt_102", "evt_110", "evt_120", "evt_130", "evt_131", "evt_135", "evt_140", "evt_145",
                "evt_160", "evt_161", "evt_162", "evt_163", "evt_165", "evt_166"
            ]
        );
        assert_eq!(ids("p1"), ["evt_101", "evt_110", "evt_120", "evt_130", "evt_131", "evt_145", "evt_165", "evt_166"]);
        assert_eq!(ids("p2"), ["evt_102", "evt_120", "evt_135", "evt_140", "evt_160", "evt_161", "evt_162", "evt_163"]);
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
        let doc = include_str!("../../docs/webhooks.md");
        let item = doc.split("\n- ").find(|i| i.starts_with("`events` is optional")).expect("the `events` item");
        let count = [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
            "thirteen", "fourteen",
        ];
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
