//! Deterministic simulation of the whole settlement path over faulty storage: the real
//! sequencer ([`Service`]), engine and ledger, over the storage model of [`disk`], driven
//! from one seed: a simulated clock; a schedule of clients submitting facts (programs,
//! partners, leads, handoffs, conversions, refunds, holds advanced, payouts,
//! settlements), retries under the same idempotency key, concurrent duplicates, a key
//! reused for other content; checkpoints and saved states; and faults: power cuts
//! between and during calls (during recovery too), failed syncs, a full disk, a bit
//! flipped at rest.
//!
//! Its invariants are checked as it goes and after every recovery ([`World::check`]):
//! every acknowledged append is present exactly once and a retry of it answers the same
//! outcome; a key reused for other content is refused; nothing is paid twice; the audit
//! passes (chain and tree agree with the records, every checkpoint's signature, every
//! split and mandate derived again, every book balanced); checkpoints handed out stay
//! covered by the log; replaying the log gives the same state, byte for byte, as the
//! live one; a flipped bit is detected and reported, never served; a ledger whose sync
//! failed refuses writes until it is reopened. A failure names its seed, its step and
//! the schedule up to it, and the same seed replays it exactly.

pub mod disk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use settle_engine::{Engine, EngineConfig, Event};

use crate::auth::{Principal, PrincipalKind, Scope};
use crate::home::Home;
use crate::keystore::{KeyFile, KeyHome};
use crate::ops::commands::{
    self, AdvanceBody, ConversionBody, Fact, LeadBody, PartnerBody, PayoutBody, RefundBody, SettlementBody,
};
use crate::service::{Outcome, Service, Submit, SubmitError};
use disk::{Disk, Fault};

/// How a run goes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Client steps in a run.
    pub steps: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { steps: 120 }
    }
}

/// What a run that held did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Appends acknowledged.
    pub acked: usize,
    /// Retries answered with the original outcome.
    pub retries: usize,
    /// Restarts (after a crash, a failed sync, a full disk), recoveries that crashed
    /// included.
    pub restarts: usize,
    /// Power cuts.
    pub crashes: u64,
    /// Syncs that failed.
    pub failed_syncs: u64,
    /// Bits flipped at rest, each detected.
    pub flips: usize,
    /// Records in the log at the end.
    pub records: u64,
}

/// A run that held: what it did, and its schedule.
#[derive(Debug, Clone)]
pub struct Report {
    /// What it did.
    pub summary: Summary,
    /// Every step, fault and recovery, in order.
    pub schedule: Vec<String>,
}

/// An invariant that did not hold.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The seed.
    pub seed: u64,
    /// At which step.
    pub step: usize,
    /// What did not hold.
    pub what: String,
    /// The schedule up to it.
    pub schedule: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} step {}: {}", self.seed, self.step, self.what)
    }
}

/// A submission acknowledged: what was sent, and what it answered.
struct Acked {
    sub: Submit,
    seq: u64,
    records: Vec<Vec<u8>>,
}

/// One simulated run.
struct World {
    seed: u64,
    rng: ChaCha8Rng,
    disk: Arc<Disk>,
    keys: KeyFile,
    svc: Option<Arc<Service>>,
    now: DateTime<Utc>,
    vendor: Principal,
    schedule: Vec<String>,
    step: usize,
    acked: BTreeMap<String, Acked>,
    /// Keys sent whose outcome is unknown (the process died or the storage failed):
    /// their append may or may not be in the log.
    unknown: BTreeMap<String, Submit>,
    /// Checkpoints handed out: size and root.
    checkpoints: Vec<(u64, [u8; 32])>,
    /// The webhook cursor last written with a sync that succeeded.
    cursor: Option<u64>,
    partners: Vec<String>,
    leads: Vec<(String, String)>,
    conversions: Vec<String>,
    n: u64,
    summary: Summary,
}

type Checked = Result<(), String>;

/// The aux key of the simulated webhook worker's cursor.
const CURSOR: &[u8] = b"wh/cursor/sim";

/// The program every run publishes: 10 % pools, split 30/20/50, a day's hold.
fn program() -> serde_json::Value {
    json!({
        "program": "sim", "name": "Simulated program", "currency": "USD",
        "holding_days": 1, "attribution_window_days": 90, "pool_rounding": "half_even",
        "pool": {"percent": "10"},
        "split": {"kind": "shares", "originator": "30", "intermediaries": "20", "closer": "50", "remaining": "closer"},
        "valid_from": "2026-01-01T00:00:00Z"
    })
}

fn body<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| unreachable!("the simulator's request does not decode: {e}"))
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let keys = KeyFile::new("vendor", "settle.sim/log", rng.random(), rng.random(), 0);
        let vendor = Principal {
            kind: PrincipalKind::VendorAdmin,
            subject: "sim".into(),
            partner: None,
            scopes: [
                Scope::ProgramsWrite,
                Scope::LeadsWrite,
                Scope::ConversionsWrite,
                Scope::RefundsWrite,
                Scope::SettlementsWrite,
                Scope::Read,
            ]
            .into(),
            token_id: "tok_sim".into(),
        };
        Self {
            seed,
            rng,
            disk: Disk::new(),
            keys,
            svc: None,
            now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default(),
            vendor,
            schedule: Vec::new(),
            step: 0,
            acked: BTreeMap::new(),
            unknown: BTreeMap::new(),
            checkpoints: Vec::new(),
            cursor: None,
            partners: Vec::new(),
            leads: Vec::new(),
            conversions: Vec::new(),
            n: 0,
            summary: Summary::default(),
        }
    }

    fn note(&mut self, s: String) {
        self.schedule.push(format!("{:>4} {s}", self.step));
    }

    fn violation(&self, what: String) -> Violation {
        Violation { seed: self.seed, step: self.step, what, schedule: self.schedule.clone() }
    }

    fn svc(&self) -> Result<&Arc<Service>, String> {
        self.svc.as_ref().ok_or_else(|| "no process is running".to_owned())
    }

    /// Starts a process on the disk: opens the log, restores the engine. A crash armed
    /// may strike during the recovery: then another power cut, and another start.
    fn start(&mut self) -> Checked {
        for attempt in 0..8 {
            if attempt > 0 || self.rng.random_bool(0.2) {
                // A crash during recovery (not always: the run must go on).
                if attempt < 7 && self.rng.random_bool(0.5) {
                    let at = self.rng.random_range(1..=40);
                    self.disk.arm(Fault::CrashAtCall(at));
                }
            }
            let backend = self.disk.start_process();
            self.summary.restarts += 1;
            match Service::open_on(backend, &Home::Dir("sim".into())) {
                Ok(svc) => {
                    self.disk.disarm();
                    self.svc = Some(svc);
                    return Ok(());
                }
                Err(e) if self.disk.is_down() => {
                    let keep = self.rng.random_range(0..64);
                    let (n, kept) = self.disk.power_cut(keep);
                    self.note(format!("recovery crashed ({e:#}); power cut: {kept} of {n} unsynced batches survive"));
                }
                Err(e) => return Err(format!("the log does not open: {e:#}")),
            }
        }
        Err("the log did not open after 8 recoveries".into())
    }

    /// The process dies (its threads end with the stale store), the power goes, and a
    /// new process recovers; then every invariant is checked.
    fn crash_and_recover(&mut self, why: &str) -> Checked {
        // The power goes first: the dying process syncs nothing more (its handles are
        // stale), and only then are its threads stopped.
        let keep = self.rng.random_range(0..64);
        let (n, kept) = self.disk.power_cut(keep);
        if let Some(svc) = self.svc.take() {
            let _ = svc.close();
        }
        self.note(format!("{why}; power cut: {kept} of {n} unsynced batches survive"));
        self.start()?;
        self.check()?;
        // A client retries what it sent and heard nothing of: appended now if it was
        // lost, answered as written if it survived.
        let unknown: Vec<Submit> = std::mem::take(&mut self.unknown).into_values().collect();
        for sub in unknown {
            let r = self.send(vec![sub.clone()])?;
            let answer = match r.first() {
                Some(Ok(o)) if o.replayed => "survived",
                Some(Ok(_)) => "was lost: appended now",
                Some(Err(_)) => "refused now",
                None => "unanswered",
            };
            self.note(format!("retry of {} (unanswered before): {answer}", sub.key));
            if let Some(r) = r.first() {
                self.settle_outcome(&sub, r)?;
            }
        }
        Ok(())
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}{}", self.n)
    }

    /// Sends `subs` as one call (concurrent submissions: one group commit); answers
    /// each one's result.
    fn send(&mut self, subs: Vec<Submit>) -> Result<Vec<Result<Outcome, SubmitError>>, String> {
        let svc = Arc::clone(self.svc()?);
        let r = svc.submit_blocking(subs);
        // The next step starts once the ledger is quiet: the order of the store's calls,
        // and so where a fault strikes, is the seed's alone. Once every answer is an
        // acknowledgement, nothing of the call is left to sync: a sync failing now means
        // it was acknowledged before it was durable.
        let quiet = svc.ledger().wait_durable_blocking();
        if let Err(e) = quiet
            && !r.is_empty()
            && r.iter().all(Result::is_ok)
        {
            return Err(format!("a call was acknowledged before it was durable: its sync failed after ({e})"));
        }
        Ok(r)
    }

    /// Records what a submission answered: an acknowledgement is remembered (a second
    /// one for the same key must be the same outcome), a storage failure leaves its
    /// outcome unknown.
    fn settle_outcome(&mut self, sub: &Submit, r: &Result<Outcome, SubmitError>) -> Checked {
        match r {
            Ok(o) => {
                let records: Vec<Vec<u8>> = o.records.iter().map(settle_engine::Envelope::to_bytes).collect();
                if let Some(a) = self.acked.get(&sub.key) {
                    if a.seq != o.seq || a.records != records {
                        return Err(format!(
                            "key {} answered seq {} then seq {} (or other records)",
                            sub.key, a.seq, o.seq
                        ));
                    }
                    self.summary.retries += 1;
                } else {
                    self.unknown.remove(&sub.key);
                    self.acked.insert(sub.key.clone(), Acked { sub: sub.clone(), seq: o.seq, records });
                    self.summary.acked += 1;
                }
                Ok(())
            }
            Err(SubmitError::Storage(_)) => {
                if !self.acked.contains_key(&sub.key) {
                    self.unknown.insert(sub.key.clone(), sub.clone());
                }
                Ok(())
            }
            Err(SubmitError::Rejected(_)) => Ok(()),
            Err(SubmitError::KeyConflict(k)) => Err(format!("key {k} conflicts, though it was sent with one content")),
            Err(SubmitError::Busy) => Err("the queue was full with one client".into()),
        }
    }

    fn submission(&self, key: String, fact: Fact) -> Submit {
        Submit { key, by: self.vendor.by(), at: self.now, event: fact.event, request: fact.request }
    }

    /// The next client step's fact, drawn from the seed (`None`: nothing to do yet).
    fn next_fact(&mut self) -> Result<Option<(String, Fact)>, String> {
        let p = self.vendor.clone();
        let e = |e: crate::error::Error| e.detail;
        if self.partners.len() < 2 {
            let id = self.fresh("p");
            self.partners.push(id.clone());
            let b: PartnerBody = body(json!({"partner": id, "program": "sim", "name": id, "role": "partner"}));
            return Ok(Some((format!("enroll {id}"), b.fact(&p).map_err(e)?)));
        }
        let pick = |rng: &mut ChaCha8Rng, v: &[String]| v[rng.random_range(0..v.len())].clone();
        Ok(Some(match self.rng.random_range(0..100) {
            0..5 if self.partners.len() < 6 => {
                let id = self.fresh("p");
                self.partners.push(id.clone());
                let b: PartnerBody = body(json!({"partner": id, "program": "sim", "name": id, "role": "partner"}));
                (format!("enroll {id}"), b.fact(&p).map_err(e)?)
            }
            0..25 => {
                let id = self.fresh("l");
                let partner = pick(&mut self.rng, &self.partners);
                // A small set of customers: duplicates happen.
                let customer = format!("c{}.example", self.rng.random_range(0..40));
                self.leads.push((id.clone(), partner.clone()));
                let b: LeadBody = body(json!({"lead": id, "program": "sim", "customer": customer, "partner": partner}));
                (format!("lead {id} of {partner} for {customer}"), b.fact(&p).map_err(e)?)
            }
            25..35 if !self.leads.is_empty() => {
                let i = self.rng.random_range(0..self.leads.len());
                let (lead, from) = self.leads[i].clone();
                let to = pick(&mut self.rng, &self.partners);
                self.leads[i].1.clone_from(&to);
                let ev = Event::LeadHandedOff { from: from.clone(), lead: lead.clone(), to: to.clone() };
                (format!("handoff {lead} {from} → {to}"), ev.into())
            }
            35..65 if !self.leads.is_empty() => {
                let id = self.fresh("d");
                let lead = self.leads[self.rng.random_range(0..self.leads.len())].0.clone();
                let revenue = format!("{}.{:02}", self.rng.random_range(1..50_000), self.rng.random_range(0..100));
                self.conversions.push(id.clone());
                let b: ConversionBody = body(json!({"conversion": id, "lead": lead, "revenue": revenue,
                    "currency": "USD", "occurred_at": self.now}));
                (format!("conversion {id} on {lead}: {revenue} USD"), b.fact(&p, self.now).map_err(e)?)
            }
            65..72 if !self.conversions.is_empty() => {
                let id = self.fresh("r");
                let conversion = pick(&mut self.rng, &self.conversions);
                let b: RefundBody = if self.rng.random_bool(0.5) {
                    body(json!({"refund": id, "conversion": conversion, "full": true}))
                } else {
                    body(json!({"refund": id, "conversion": conversion, "fraction": "0.25"}))
                };
                (format!("refund {id} of {conversion}"), b.fact(&p).map_err(e)?)
            }
            72..80 => {
                let b: AdvanceBody = body(json!({"to": self.now}));
                (format!("advance holds to {}", self.now), b.fact(&p).map_err(e)?)
            }
            80..90 => {
                let partner = pick(&mut self.rng, &self.partners);
                let payable = self.payable(&partner)?;
                if payable.is_empty() {
                    return Ok(None);
                }
                let id = self.fresh("b");
                let b: PayoutBody =
                    body(json!({"batch": id, "partner": partner, "rail": "book", "mandate_ids": payable}));
                (format!("payout {id} of {partner}: {} mandates", payable.len()), b.fact(&p).map_err(e)?)
            }
            90..94 => {
                // Paying again what a batch holds (open, or paid and closed): refused.
                let Some((batch, partner, mandates)) = self.any_batch()? else { return Ok(None) };
                let id = self.fresh("b");
                let b: PayoutBody =
                    body(json!({"batch": id, "partner": partner, "rail": "book", "mandate_ids": mandates}));
                (format!("payout {id} of {batch}'s mandates again (must be refused)"), b.fact(&p).map_err(e)?)
            }
            94..100 => {
                let Some((batch, partner, mandates)) = self.open_batch()? else { return Ok(None) };
                let id = self.fresh("s");
                let b: SettlementBody = body(json!({"settlement": id, "batch": batch, "partner": partner,
                    "rail": "book", "mandate_ids": mandates, "confirmation_id": format!("conf-{id}")}));
                (format!("settlement {id} of {batch}"), b.fact(&p).map_err(e)?)
            }
            _ => return Ok(None),
        }))
    }

    fn payable(&self, partner: &str) -> Result<Vec<String>, String> {
        Ok(self.svc()?.with_state(|s| s.payable_mandates(partner).take(50).collect()))
    }

    /// A batch's mandates, open or closed (a closed batch's from its fact in the log).
    fn any_batch(&mut self) -> Result<Option<(String, String, Vec<String>)>, String> {
        let svc = Arc::clone(self.svc()?);
        let batches: Vec<(String, String, u64)> =
            svc.with_state(|s| s.batches.iter().map(|(id, b)| (id.clone(), b.partner.clone(), b.seq)).collect());
        if batches.is_empty() {
            return Ok(None);
        }
        let (id, partner, seq) = batches[self.rng.random_range(0..batches.len())].clone();
        let r = svc.ledger().record(seq).map_err(|e| e.to_string())?.ok_or("a batch's fact is missing")?;
        let env = settle_engine::Envelope::from_bytes(&r.event).map_err(|e| e.to_string())?;
        let Event::PayoutBatched { mandate_ids, .. } = env.event else {
            return Err(format!("record {seq} is not batch {id}"));
        };
        Ok(Some((id, partner, mandate_ids)))
    }

    fn open_batch(&self) -> Result<Option<(String, String, Vec<String>)>, String> {
        Ok(self.svc()?.with_state(|s| {
            s.batches
                .iter()
                .find(|(_, b)| b.status == settle_engine::state::BatchStatus::Open)
                .map(|(id, b)| (id.clone(), b.partner.clone(), b.mandate_ids.clone()))
        }))
    }

    /// One step of the schedule.
    fn step(&mut self) -> Checked {
        self.now += Duration::seconds(self.rng.random_range(1..14_400));
        let roll = self.rng.random_range(0..100);
        match roll {
            // A power cut between calls.
            0..4 => return self.crash_and_recover("power cut between calls"),
            // A checkpoint (it must stay covered by the log, whatever comes), or the
            // engine's state saved; either may meet a fault.
            4..13 => {
                let fault = match self.rng.random_range(0..100) {
                    0..8 => Some(Fault::CrashAt(self.rng.random_range(1..=2))),
                    8..12 => Some(Fault::FailSyncAt(1)),
                    _ => None,
                };
                if let Some(f) = fault {
                    self.disk.arm(f);
                }
                let svc = Arc::clone(self.svc()?);
                let what = if roll < 10 { "checkpoint" } else { "state saved" };
                let r = if roll < 10 {
                    svc.checkpoint(self.now.timestamp()).map(|c| Some((c.checkpoint.size, c.checkpoint.root)))
                } else {
                    svc.save_state().map(|()| None)
                };
                self.disk.disarm();
                let f = fault.map(|f| format!(" [fault: {f:?}]")).unwrap_or_default();
                return match r {
                    Ok(c) => {
                        self.note(format!(
                            "{what}{}{f}",
                            c.map(|(n, _)| format!(" of {n} records")).unwrap_or_default()
                        ));
                        self.checkpoints.extend(c);
                        Ok(())
                    }
                    Err(e) if fault.is_some() => {
                        self.note(format!("{what} failed{f}: {e:#}"));
                        self.crash_and_recover("the process stops after a storage failure")
                    }
                    Err(e) => Err(format!("{what} failed on a healthy disk: {e:#}")),
                };
            }
            // A retry of an acknowledged submission: the same outcome.
            13..20 if !self.acked.is_empty() => {
                let i = self.rng.random_range(0..self.acked.len());
                let sub = self.acked.values().nth(i).map(|a| a.sub.clone()).ok_or("no submission")?;
                self.note(format!("retry {}", sub.key));
                let r = self.send(vec![sub.clone()])?;
                return match r.first() {
                    Some(Ok(o)) if !o.replayed => Err(format!("retry of {} was appended again at {}", sub.key, o.seq)),
                    Some(r) => self.settle_outcome(&sub, r),
                    None => Err("no answer".into()),
                };
            }
            // A key reused for other content: refused, never appended.
            20..22 if !self.acked.is_empty() => {
                let i = self.rng.random_range(0..self.acked.len());
                let key = self.acked.keys().nth(i).cloned().ok_or("no key")?;
                let ev = Event::HoldsAdvanced { to: self.now };
                let sub = Submit { key: key.clone(), by: self.vendor.by(), at: self.now, event: ev, request: None };
                self.note(format!("reuse of {key} for other content"));
                let r = self.send(vec![sub])?;
                return match r.first() {
                    Some(Err(SubmitError::KeyConflict(_))) => Ok(()),
                    other => Err(format!("a key reused for other content answered {other:?}")),
                };
            }
            // A bit flipped at rest in a stored record: detected, never served.
            22..24 => return self.flip(),
            // A webhook worker's cursor, as the worker writes it (beside the log, synced
            // or not): what it delivered up to.
            24..28 => {
                let svc = Arc::clone(self.svc()?);
                let (at, synced) = (svc.ledger().size(), self.rng.random_bool(0.5));
                svc.ledger()
                    .aux_put(CURSOR, &at.to_be_bytes(), synced)
                    .map_err(|e| format!("a webhook cursor's write failed on a healthy disk: {e}"))?;
                self.note(format!("webhook cursor at {at}{}", if synced { ", synced" } else { "" }));
                if synced {
                    self.cursor = Some(at);
                }
                return Ok(());
            }
            _ => {}
        }
        let Some((what, fact)) = self.next_fact()? else { return Ok(()) };
        let key = self.fresh("k");
        let sub = self.submission(key.clone(), fact);
        // Faults armed for this call.
        let fault = match self.rng.random_range(0..100) {
            0..6 => Some(Fault::CrashAt(self.rng.random_range(1..=3))),
            6..9 => Some(Fault::FailSyncAt(1)),
            9..10 => Some(Fault::FullAt(1)),
            _ => None,
        };
        let twice = self.rng.random_bool(0.1);
        self.note(format!(
            "{key}: {what}{}{}",
            if twice { " (sent twice at once)" } else { "" },
            fault.map(|f| format!(" [fault: {f:?}]")).unwrap_or_default()
        ));
        if let Some(f) = fault {
            self.disk.arm(f);
        }
        let subs = if twice { vec![sub.clone(), sub.clone()] } else { vec![sub.clone()] };
        let results = self.send(subs)?;
        self.disk.disarm();
        let failed = results.iter().any(|r| matches!(r, Err(SubmitError::Storage(_))));
        if failed && fault.is_none() {
            return Err(format!(
                "{key} failed on a healthy disk: {:?}",
                results.first().and_then(|r| r.as_ref().err())
            ));
        }
        if twice
            && let [Ok(a), Ok(b)] = results.as_slice()
            && a.seq != b.seq
        {
            return Err(format!("{key} sent twice at once was appended at {} and {}", a.seq, b.seq));
        }
        if what.ends_with("(must be refused)") && results.iter().any(Result::is_ok) {
            return Err(format!("{key}: mandates already batched were batched again"));
        }
        for r in &results {
            self.settle_outcome(&sub, r)?;
        }
        if failed || self.disk.is_down() {
            // A ledger that failed refuses every write until it is reopened.
            if !self.disk.is_down() {
                let probe_key = self.fresh("k");
                let probe = self.submission(probe_key, Event::HoldsAdvanced { to: self.now }.into());
                let key = probe.key.clone();
                let r = self.send(vec![probe.clone()])?;
                if let Some(Ok(o)) = r.first() {
                    return Err(format!("after a storage failure, {key} was acknowledged at {}", o.seq));
                }
                self.unknown.insert(key, probe);
            }
            return self.crash_and_recover("the process stops after a storage failure");
        }
        Ok(())
    }

    /// Flips a bit of a stored record at rest: the record must not be served (a read of
    /// it fails, or gives the bytes it had), and the audit must fail; then the disk is
    /// replaced by a good copy and everything holds again.
    fn flip(&mut self) -> Checked {
        let nth = self.rng.random_range(0..10_000);
        let (at, bit) = (self.rng.random_range(0..100_000), self.rng.random_range(0..8));
        let svc = Arc::clone(self.svc()?);
        let size = svc.ledger().size();
        if size == 0 {
            return Ok(());
        }
        let before: Vec<_> =
            (0..size).map(|s| svc.ledger().record(s)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let Some(key) = self.disk.flip(nth, at, bit) else { return Ok(()) };
        let first = key.get(..8).and_then(|k| k.try_into().ok()).map_or(0, u64::from_be_bytes);
        self.note(format!("bit {bit} flipped at rest in the entry of record {first}"));
        self.summary.flips += 1;
        for (s, want) in before.iter().enumerate() {
            let s = s as u64;
            if let Ok(Some(got)) = svc.ledger().record(s)
                && Some(&got) != want.as_ref()
            {
                self.disk.unflip();
                return Err(format!("record {s} was served with a flipped bit"));
            }
        }
        let audit = crate::audit::audit_ledger(svc.ledger(), &self.keys, &Arc::default());
        if audit.is_ok() {
            self.disk.unflip();
            return Err(format!("the audit passed with a bit flipped in record {first}"));
        }
        if self.rng.random_bool(0.5) {
            // Restarted on the corrupted disk: the recovery or the audit reports it,
            // and nothing rewrites the stored bytes.
            drop(svc);
            self.disk.restart_keeping_all();
            if let Some(svc) = self.svc.take() {
                let _ = svc.close();
            }
            self.note("restart on the corrupted disk".into());
            let backend = self.disk.start_process();
            let reported = match Service::open_on(backend, &Home::Dir("sim".into())) {
                Err(_) => true,
                Ok(svc) => {
                    let audited = crate::audit::audit_ledger(svc.ledger(), &self.keys, &Arc::default());
                    let _ = svc.close();
                    audited.is_err()
                }
            };
            let intact = self.disk.flip_in_place();
            self.disk.unflip();
            if !reported {
                return Err(format!("a restart on a bit flipped in record {first} reported nothing"));
            }
            if !intact {
                return Err(format!("the bit flipped in record {first} was rewritten (silently repaired)"));
            }
            self.disk.restart_keeping_all();
            self.start()?;
            return self.check();
        }
        self.disk.unflip();
        Ok(())
    }

    /// Every invariant, on the process just recovered.
    fn check(&mut self) -> Checked {
        let svc = Arc::clone(self.svc()?);
        let ledger = svc.ledger();
        // The audit: chain, tree, checkpoints' signatures, every split and mandate
        // derived again, every book balanced.
        crate::audit::audit_ledger(ledger, &self.keys, &Arc::default()).map_err(|e| format!("{e:#}"))?;
        // Checkpoints handed out stay covered.
        for (size, root) in &self.checkpoints {
            let got = ledger.root(*size).map_err(|e| format!("the root of a checkpoint's size {size}: {e}"))?;
            if ledger.size() < *size || got != *root {
                return Err(format!("a checkpoint of {size} records handed out is no longer covered by the log"));
            }
        }
        // A webhook cursor is never ahead of the durable log, and one synced is kept.
        let stored = ledger.aux_get(CURSOR).map_err(|e| e.to_string())?;
        let stored = stored.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_be_bytes);
        if stored.is_some_and(|c| c > ledger.size()) || self.cursor.is_some_and(|c| stored.is_none_or(|s| s < c)) {
            return Err(format!("the webhook cursor is {stored:?}: synced {:?}, log {}", self.cursor, ledger.size()));
        }
        // Every acknowledged append present exactly once, answered again as it was.
        let acked: Vec<Submit> = self.acked.values().map(|a| a.sub.clone()).collect();
        for sub in acked {
            let r = svc.submit_blocking(vec![sub.clone()]);
            match r.first() {
                Some(Ok(o)) if o.replayed => self.settle_outcome(&sub, &Ok(o.clone()))?,
                Some(Ok(o)) => return Err(format!("acknowledged {} was lost: appended again at {}", sub.key, o.seq)),
                other => return Err(format!("acknowledged {} answers {other:?}", sub.key)),
            }
        }
        // No fact twice; nothing paid twice.
        let mut facts = BTreeSet::new();
        let mut paid = BTreeSet::new();
        for r in ledger.records(0) {
            let r = r.map_err(|e| e.to_string())?;
            let env = settle_engine::Envelope::from_bytes(&r.event).map_err(|e| e.to_string())?;
            if env.event.is_fact() && !matches!(env.event, Event::HoldsAdvanced { .. }) {
                let fp = serde_json::to_vec(&env.event).map_err(|e| e.to_string())?;
                if !facts.insert(fp) {
                    return Err(format!("the fact at {} is in the log twice", r.seq));
                }
            }
            if let Event::PayoutBooked { mandate_ids, .. } = &env.event {
                for m in mandate_ids {
                    if !paid.insert(m.clone()) {
                        return Err(format!("mandate {m} paid twice (again at {})", r.seq));
                    }
                }
            }
        }
        // The same log replayed gives the same state, byte for byte.
        let cfg = EngineConfig {
            vendor: self.keys.vendor.clone(),
            salt_secret: self.keys.salt().map_err(|e| e.to_string())?,
        };
        let mut engine = Engine::new(cfg);
        crate::service::replay(ledger, &mut engine, 0, None).map_err(|e| format!("{e:#}"))?;
        let replayed = serde_json::to_vec(engine.state()).map_err(|e| e.to_string())?;
        let live = svc.with_state(serde_json::to_vec).map_err(|e| e.to_string())?;
        if replayed != live {
            return Err("the live state differs from the log replayed".into());
        }
        Ok(())
    }
}

/// Runs the simulation of `seed`.
pub fn run(seed: u64, opts: &Options) -> Result<Report, Violation> {
    let mut w = World::new(seed);
    let mut go = || -> Checked {
        // A fresh disk: the vendor's keys, synced, then the first process.
        KeyHome::Store(w.disk.start_process()).save(&w.keys).map_err(|e| format!("saving the keys: {e:#}"))?;
        w.start()?;
        w.summary.restarts = 0;
        let fact = commands::publish(&w.vendor, body(program())).map_err(|e| e.detail)?;
        let sub = w.submission("program".into(), fact);
        let r = w.send(vec![sub.clone()])?;
        w.settle_outcome(&sub, &r[0])?;
        if !w.acked.contains_key("program") {
            return Err(format!("the program was not recorded: {:?}", r[0].as_ref().err()));
        }
        for i in 0..opts.steps {
            w.step = i + 1;
            w.step()?;
        }
        w.crash_and_recover("the end: a last power cut")
    };
    let out = go();
    let counts = w.disk.counts();
    w.summary.crashes = counts.crashes;
    w.summary.failed_syncs = counts.failed_syncs;
    w.summary.records = w.svc.as_ref().map_or(0, |s| s.ledger().size());
    if let Some(svc) = w.svc.take() {
        let _ = svc.close();
    }
    match out {
        Ok(()) => Ok(Report { summary: w.summary, schedule: w.schedule }),
        Err(what) => Err(w.violation(what)),
    }
}
