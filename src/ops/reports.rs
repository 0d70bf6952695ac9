//! What people and agents read beyond balances and mandates: a partner's statement for a
//! period, its leads and their status, its agents, and the payout batches with their
//! mandates. Each is an operation of the catalogue, authorised there: a partner reads
//! its own only (another partner's is not found).

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use settle_engine::model::{AgentScope, ID_PATTERN};
use settle_engine::state::{BatchStatus, State};
use settle_engine::{EngineConfig, Envelope, Event};
use settle_mandates::money::Amount;

use super::App;
use crate::audit::StatementLine;
use crate::auth::Principal;
use crate::catalogue::{Op, Target, allow};
use crate::error::Error;

/// Most statement lines one answer holds: a longer period is refused (422), to be asked
/// for in parts (or with `settle statement`, which streams).
pub const MAX_STATEMENT_LINES: usize = 100_000;
/// Most leads, or payout batches, one answer holds (the newest).
pub const MAX_LISTED: usize = 1000;

/// Replays of the log for statements and flows running at once: more wait their turn,
/// so no caller can make the server replay its log on every core.
static REPLAYS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The period of a statement: `[from, to)`, open where left out.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    /// From (inclusive), RFC 3339.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive), RFC 3339.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

/// A partner's statement: every line names the fact, conversion, rule version, hop and
/// mandate behind it, between its opening and closing balances.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Statement")]
pub struct StatementView {
    /// The partner.
    pub partner: String,
    /// From (inclusive), where given.
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive), where given.
    pub to: Option<DateTime<Utc>>,
    /// The lines, in log order: `opening` first, `closing` last.
    pub lines: Vec<StatementLine>,
}

/// Whether partner `id` exists.
fn known(app: &App, id: &str) -> Result<(), Error> {
    if app.svc.with_state(|s| s.partners.contains_key(id)) {
        Ok(())
    } else {
        Err(Error::not_found(format!("partner '{id}' not found")))
    }
}

/// Partner `id`'s statement for the period `q` (the log replayed by an engine of its own,
/// off the async threads).
pub async fn statement(app: &App, p: &Principal, id: String, q: StatementQuery) -> Result<StatementView, Error> {
    allow(p, Op::GetStatement, &[Target::DataOf(&id)])?;
    known(app, &id)?;
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f >= t
    {
        return Err(Error::rejected("from must be before to"));
    }
    let cfg = EngineConfig { vendor: app.keys.vendor.clone(), salt_secret: app.keys.salt().map_err(Error::internal)? };
    let svc = app.svc.clone();
    let partner = id.clone();
    let turn = REPLAYS.acquire().await.map_err(Error::internal)?;
    let lines = tokio::task::spawn_blocking(move || {
        crate::audit::statement(svc.ledger(), cfg, &partner, q.from, q.to).map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)??;
    drop(turn);
    if lines.len() > MAX_STATEMENT_LINES {
        return Err(Error::rejected(format!(
            "the statement holds {} lines, more than {MAX_STATEMENT_LINES}: ask for a shorter period",
            lines.len()
        )));
    }
    Ok(StatementView { partner: id, from: q.from, to: q.to, lines })
}

/// A lead as its partners see it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Lead")]
pub struct LeadView {
    /// Lead id.
    pub lead: String,
    /// Its program.
    pub program: String,
    /// The customer key it was registered for.
    pub customer: String,
    /// Its referral chain, originator first.
    pub chain: Vec<String>,
    /// Registered at.
    pub registered_at: DateTime<Utc>,
    /// End of its attribution window: deals closed later earn it nothing.
    pub attributable_until: DateTime<Utc>,
    /// `attributable` (its window is open), `expired` (closed), or `duplicate` (another
    /// lead owns the customer: it earns nothing).
    #[schemars(extend("enum" = ["attributable", "expired", "duplicate"]))]
    pub status: String,
    /// The owning lead of a duplicate (shown to the vendor only).
    pub duplicate_of: Option<String>,
}

/// A partner's leads.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "LeadList")]
pub struct LeadList {
    /// The partner.
    pub partner: String,
    /// Leads it is on the chain of, newest first (at most 1000).
    pub leads: Vec<LeadView>,
}

/// The leads partner `id` is on the chain of, newest first, as `p` may see them.
pub fn leads(app: &App, p: &Principal, id: &str, now: DateTime<Utc>) -> Result<LeadList, Error> {
    allow(p, Op::ListLeads, &[Target::DataOf(id)])?;
    known(app, id)?;
    let mut leads = app.svc.with_state(|s| lead_views(s, id, p.is_vendor(), now));
    leads.sort_by(|a, b| b.registered_at.cmp(&a.registered_at).then_with(|| a.lead.cmp(&b.lead)));
    leads.truncate(MAX_LISTED);
    Ok(LeadList { partner: id.to_owned(), leads })
}

fn lead_views(s: &State, id: &str, vendor: bool, now: DateTime<Utc>) -> Vec<LeadView> {
    s.leads
        .iter()
        .filter(|(_, l)| l.chain.iter().any(|c| c == id))
        .map(|(lead, l)| {
            let days = s.programs.get(l.program.as_str()).map_or(0, |pr| pr.latest().spec.attribution_window_days);
            let until = l.registered_at + Duration::days(i64::from(days));
            let status = match (&l.duplicate_of, until > now) {
                (Some(_), _) => "duplicate",
                (None, true) => "attributable",
                (None, false) => "expired",
            };
            LeadView {
                lead: lead.to_owned(),
                program: l.program.to_string(),
                customer: l.customer.to_string(),
                chain: l.chain.iter().map(ToString::to_string).collect(),
                registered_at: l.registered_at,
                attributable_until: until,
                status: status.into(),
                duplicate_of: l.duplicate_of.as_ref().filter(|_| vendor).map(ToString::to_string),
            }
        })
        .collect()
}

/// An agent's grant.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Agent")]
pub struct AgentView {
    /// Agent id.
    pub agent: String,
    /// What it may do.
    pub scopes: Vec<AgentScope>,
    /// Start of its authority.
    pub not_before: DateTime<Utc>,
    /// End of its authority (exclusive).
    pub expires_at: DateTime<Utc>,
    /// Revoked.
    pub revoked: bool,
    /// In force now: not revoked, and between `not_before` and `expires_at`.
    pub current: bool,
}

/// A partner's agents.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "AgentList")]
pub struct AgentList {
    /// The partner.
    pub partner: String,
    /// Its agents, by id.
    pub agents: Vec<AgentView>,
}

/// Partner `id`'s agents, revoked and expired ones too.
pub fn agents(app: &App, p: &Principal, id: &str, now: DateTime<Utc>) -> Result<AgentList, Error> {
    allow(p, Op::ListAgents, &[Target::DataOf(id)])?;
    known(app, id)?;
    let agents = app.svc.with_state(|s| {
        s.agents
            .iter()
            .filter(|(_, a)| a.partner == id)
            .map(|(agent, a)| AgentView {
                agent: agent.clone(),
                scopes: a.scopes.clone(),
                not_before: a.not_before,
                expires_at: a.expires_at,
                revoked: a.revoked,
                current: a.is_current(now),
            })
            .collect()
    });
    Ok(AgentList { partner: id.to_owned(), agents })
}

/// Which payout batches to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutQuery {
    /// Only this partner's (a partner sees only its own).
    #[serde(default)]
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: Option<String>,
    /// Only those in this state.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("enum" = ["open", "paid", "failed", "returned"]))]
    pub status: Option<String>,
}

/// A payout batch: mandates of one partner sent to a rail.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "PayoutBatch")]
pub struct BatchView {
    /// Batch id.
    pub batch: String,
    /// The partner paid.
    pub partner: String,
    /// The rail (`book`, `bank`, ...).
    pub rail: String,
    /// `open` (sent, not yet confirmed), `paid`, `failed` or `returned`.
    #[schemars(extend("enum" = ["open", "paid", "failed", "returned"]))]
    pub status: String,
    /// What the rail is to pay: the mandates, less what earlier clawbacks absorbed.
    pub amount: Amount,
    /// Of the mandates' value, what earlier negative balances absorbed.
    pub offset: Amount,
    /// Its mandates, in the batch's order.
    pub mandate_ids: Vec<String>,
    /// Log position of its `payout_batched` fact.
    pub seq: u64,
}

/// Payout batches.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "PayoutList")]
pub struct PayoutList {
    /// Newest first (at most 1000).
    pub batches: Vec<BatchView>,
}

fn batch_status(s: BatchStatus) -> &'static str {
    match s {
        BatchStatus::Open => "open",
        BatchStatus::Paid => "paid",
        BatchStatus::Failed => "failed",
        BatchStatus::Returned => "returned",
    }
}

/// The payout batches `q` asks for, newest first: a partner sees only its own.
pub async fn payouts(app: &App, p: &Principal, q: &PayoutQuery) -> Result<PayoutList, Error> {
    let partner = match (p.is_vendor(), q.partner.as_deref()) {
        (true, asked) => asked,
        (false, asked) => {
            Some(asked.or(p.partner.as_deref()).ok_or_else(|| Error::forbidden("this token acts for no partner"))?)
        }
    };
    let targets: Vec<Target<'_>> = partner.map(Target::DataOf).into_iter().collect();
    allow(p, Op::ListPayouts, &targets)?;
    if let Some(asked) = &q.partner {
        settle_engine::state::check_id("partner", asked).map_err(|e| Error::malformed(e.to_string()))?;
    }
    if let Some(st) = q.status.as_deref()
        && !["open", "paid", "failed", "returned"].contains(&st)
    {
        return Err(Error::malformed(format!("status must be open, paid, failed or returned, not '{st}'")));
    }
    let mut batches: Vec<BatchView> = app.svc.with_state(|s| {
        s.batches
            .iter()
            .filter(|(_, b)| partner.is_none_or(|me| b.partner == me))
            .filter(|(_, b)| q.status.as_deref().is_none_or(|st| batch_status(b.status) == st))
            .map(|(id, b)| BatchView {
                batch: id.clone(),
                partner: b.partner.clone(),
                rail: b.rail.clone(),
                status: batch_status(b.status).into(),
                amount: b.amount,
                offset: b.offset,
                mandate_ids: b.mandate_ids.clone(),
                seq: b.seq,
            })
            .collect()
    });
    batches.sort_by(|a, b| b.seq.cmp(&a.seq).then_with(|| a.batch.cmp(&b.batch)));
    batches.truncate(MAX_LISTED);
    // A closed batch's mandates are the log's: its `payout_batched` fact names them.
    let svc = app.svc.clone();
    tokio::task::spawn_blocking(move || {
        for b in batches.iter_mut().filter(|b| b.mandate_ids.is_empty() && b.seq > 0) {
            let r = svc.ledger().record(b.seq).map_err(Error::internal)?;
            let env = r.map(|r| Envelope::from_bytes(&r.event)).transpose().map_err(Error::internal)?;
            if let Some(Envelope { event: Event::PayoutBatched { batch, mandate_ids, .. }, .. }) = env
                && batch == b.batch
            {
                b.mandate_ids = mandate_ids;
            }
        }
        Ok(PayoutList { batches })
    })
    .await
    .map_err(Error::internal)?
}

/// What moved in every partner's books since a time, by currency (decimal sums of the
/// statements' lines): earned, clawed back, adjusted by disputes (signed), paid (net of the
/// bank's returns).
#[derive(Debug, Clone, Default)]
pub struct Flows {
    /// `[earned, clawed back, adjusted, paid]` by currency.
    pub by_currency: std::collections::BTreeMap<settle_mandates::money::Currency, [rust_decimal::Decimal; 4]>,
    /// The log size they were read at.
    pub size: u64,
}

/// The last [`Flows`] read: of which period start, at which log size.
#[derive(Default)]
pub struct FlowCache(std::sync::Mutex<Option<(DateTime<Utc>, Flows)>>);

/// Every partner's flows since `from` (the vendor's; [`Op::GetStatement`] of every
/// partner): the log replayed by an engine of its own, once per log size and period.
pub async fn flows(app: &App, p: &Principal, from: DateTime<Utc>) -> Result<Flows, Error> {
    allow(p, Op::GetStatement, &[])?;
    if !p.is_vendor() {
        return Err(Error::forbidden("only the vendor sees every partner's flows"));
    }
    let size = app.svc.ledger().size();
    let cached = |c: &Option<(DateTime<Utc>, Flows)>| c.as_ref().filter(|(f, x)| *f == from && x.size == size).cloned();
    if let Some((_, f)) = cached(&app.flows.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)) {
        return Ok(f);
    }
    let cfg = EngineConfig { vendor: app.keys.vendor.clone(), salt_secret: app.keys.salt().map_err(Error::internal)? };
    let svc = app.svc.clone();
    let _turn = REPLAYS.acquire().await.map_err(Error::internal)?;
    // Read while this call waited its turn?
    if let Some((_, f)) = cached(&app.flows.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)) {
        return Ok(f);
    }
    let flows = tokio::task::spawn_blocking(move || {
        let mut out = Flows { size, ..Flows::default() };
        let period = crate::audit::Period { partners: None, from: Some(from), to: None };
        crate::audit::statements(svc.ledger(), cfg, period, |_, l| {
            // A clawback's line is negative: it is counted as what was clawed back.
            let (column, sign) = match l.entry.as_str() {
                "earned" => (0, 1),
                "clawback" | "clawback_offset" => (1, -1),
                "adjustment" => (2, 1),
                "paid" | "paid_returned" => (3, 1),
                _ => return Ok(()),
            };
            let (Ok(cur), Ok(amount)) = (l.currency.parse(), settle_mandates::money::parse_decimal(&l.amount)) else {
                anyhow::bail!("statement line {} has no amount in a currency", l.seq)
            };
            out.by_currency.entry(cur).or_default()[column] += amount * rust_decimal::Decimal::from(sign);
            Ok(())
        })
        .map(|()| out)
        .map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)??;
    *app.flows.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((from, flows.clone()));
    Ok(flows)
}
