//! Audits of the live log, run in the background on `settle serve`: the same audit as
//! `settle audit` (chain, hashes, tree, every checkpoint's signature, every split and
//! mandate derived again, money conserved) over the server's own ledger, while it goes
//! on taking writes. A run is started, then asked after: how many records its pass has
//! verified so far, then its result and the signed checkpoint it covered. Runs are kept
//! in memory (the last [`KEPT`]); one runs at a time: starting one while another runs
//! answers the running one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::App;
use super::queries::CheckpointView;
use crate::audit::AuditReport;
use crate::auth::Principal;
use crate::catalogue::{Op, allow};
use crate::error::Error;

/// Runs kept, newest last.
pub const KEPT: usize = 20;

/// How a run ended: when, and what it found or why it failed.
type End = (DateTime<Utc>, Result<Finding, String>);

/// One run.
struct Run {
    id: String,
    by: String,
    started_at: DateTime<Utc>,
    /// Records in the log when it started.
    total: u64,
    /// Records its pass has verified so far.
    seen: Arc<AtomicU64>,
    /// When it ended, and how.
    end: Mutex<Option<End>>,
}

/// What a run that passed found.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(rename = "AuditFinding")]
pub struct Finding {
    /// Records checked.
    pub records: u64,
    /// Checkpoints whose root and signature were checked.
    pub checkpoints: u64,
    /// Mandates derived again and their signatures checked.
    pub mandates: u64,
    /// Partners whose books balance.
    pub partners: usize,
    /// Records after the last checkpoint checked (not yet signed over).
    pub uncovered: u64,
    /// The last signed checkpoint the run checked: every record it covers was audited.
    pub checkpoint: Option<CheckpointView>,
}

/// An audit run as it stands.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Audit")]
pub struct AuditView {
    /// Run id (`au_<n>`, counted from the server's start).
    pub id: String,
    /// `running`, `passed` or `failed`.
    #[schemars(extend("enum" = ["running", "passed", "failed"]))]
    pub status: String,
    /// Who started it.
    pub started_by: String,
    /// When.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Records in the log when it started (it audits those appended meanwhile too).
    pub records_at_start: u64,
    /// Records its pass has verified so far.
    pub records_verified: u64,
    /// What it found, once passed.
    pub finding: Option<Finding>,
    /// Why it failed: the first record or check that did not hold.
    pub error: Option<String>,
}

/// The runs of one server.
#[derive(Default)]
pub struct Audits {
    runs: Mutex<VecDeque<Arc<Run>>>,
    next: AtomicU64,
}

impl Run {
    fn view(&self) -> AuditView {
        let end = self.end.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (status, finished_at, finding, error) = match end {
            None => ("running", None, None, None),
            Some((at, Ok(f))) => ("passed", Some(at), Some(f), None),
            Some((at, Err(e))) => ("failed", Some(at), None, Some(e)),
        };
        AuditView {
            id: self.id.clone(),
            status: status.into(),
            started_by: self.by.clone(),
            started_at: self.started_at,
            finished_at,
            records_at_start: self.total,
            records_verified: self.seen.load(Ordering::Relaxed),
            finding,
            error,
        }
    }

    fn running(&self) -> bool {
        self.end.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }
}

fn finding(app: &App, r: &AuditReport) -> Finding {
    let covered = r.records - r.uncovered;
    let checkpoint = app.svc.ledger().checkpoint_at(covered).ok().flatten().map(CheckpointView::from);
    Finding {
        records: r.records,
        checkpoints: r.checkpoints,
        mandates: r.mandates,
        partners: r.partners,
        uncovered: r.uncovered,
        checkpoint,
    }
}

/// Starts an audit of the live log (vendor only), or answers the one running; `true`
/// when this call started it.
pub fn start(app: &App, p: &Principal, now: DateTime<Utc>) -> Result<(AuditView, bool), Error> {
    allow(p, Op::StartAudit, &[])?;
    let mut runs = app.audits.runs.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = runs.iter().find(|r| r.running()) {
        return Ok((r.view(), false));
    }
    let n = app.audits.next.fetch_add(1, Ordering::Relaxed) + 1;
    let run = Arc::new(Run {
        id: format!("au_{n}"),
        by: p.by(),
        started_at: now,
        total: app.svc.ledger().size(),
        seen: Arc::default(),
        end: Mutex::new(None),
    });
    let (app2, r2) = (app.clone(), Arc::clone(&run));
    // Kept once its thread has started: a run that never started is not left running.
    std::thread::Builder::new()
        .name("settle-audit".into())
        .spawn(move || {
            let out = crate::audit::audit_ledger(app2.svc.ledger(), &app2.keys, &r2.seen);
            let out = out.map(|rep| finding(&app2, &rep)).map_err(|e| format!("{e:#}"));
            *r2.end.lock().unwrap_or_else(PoisonError::into_inner) = Some((Utc::now(), out));
        })
        .map_err(Error::internal)?;
    if runs.len() >= KEPT {
        runs.pop_front();
    }
    runs.push_back(Arc::clone(&run));
    Ok((run.view(), true))
}

/// Audit run `id` as it stands (vendor only).
pub fn get(app: &App, p: &Principal, id: &str) -> Result<AuditView, Error> {
    allow(p, Op::GetAudit, &[])?;
    let runs = app.audits.runs.lock().unwrap_or_else(PoisonError::into_inner);
    runs.iter()
        .find(|r| r.id == id)
        .map(|r| r.view())
        .ok_or_else(|| Error::not_found(format!("audit '{id}' not found")))
}

/// The latest audit run, if any (vendor only): what the workspace's audit page shows.
pub fn latest(app: &App, p: &Principal) -> Result<Option<AuditView>, Error> {
    allow(p, Op::GetAudit, &[])?;
    Ok(app.audits.runs.lock().unwrap_or_else(PoisonError::into_inner).back().map(|r| r.view()))
}
