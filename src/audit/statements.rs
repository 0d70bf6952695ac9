//! Statements (every line names the fact, conversion, rule version, hop and mandate
//! behind it, between opening and closing balances) and every partner's balances as of
//! any log position; both replay the log with an engine of their own.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use serde::Serialize;
use settle_engine::state::{Book, State};
use settle_engine::{Engine, EngineConfig, Envelope, Event};
use settle_ledger::Ledger;
use settle_mandates::money::{Amount, Currency};

/// A statement line.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StatementLine {
    /// Sequence of the fact.
    pub seq: u64,
    /// Log time.
    pub at: String,
    /// `opening`, `earned`, `clawback`, `clawback_offset`, `hold_released`,
    /// `payout_batched`, `payout_returned` (a failed batch), `paid`, `paid_returned` (a
    /// bank's return of a payment), `adjustment` (a dispute's, signed), `closing`.
    pub entry: String,
    /// Conversion or settlement id.
    pub reference: String,
    /// Mandate id.
    pub mandate_id: String,
    /// Rule version.
    pub rule_version: String,
    /// Hop (0 = originator).
    pub hop: String,
    /// Role on the hop.
    pub role: String,
    /// Signed change, decimal.
    pub amount: String,
    /// Currency.
    pub currency: String,
    /// Balances after the fact.
    pub on_hold: String,
    /// Payable after the fact (negative: offset owed).
    pub payable: String,
    /// In open payout batches after the fact.
    pub in_payout: String,
    /// Paid to date after the fact.
    pub paid: String,
    /// The rail's word on a payout: its confirmation id of a payment (a bank's
    /// reference), or its error code for a failure or a return (a bank's ISO reason code).
    pub rail_reference: String,
}

/// `minor` units of `cur` as a decimal string: how statements and balances show money.
fn decimal(minor: i64, cur: Currency) -> Result<String, settle_mandates::money::MoneyError> {
    Amount::from_minor(minor, cur).map(|a| a.to_decimal_string())
}

/// [`decimal`] for a statement line (a total past the bounds of money shows empty).
fn dec(minor: i64, cur: Currency) -> String {
    decimal(minor, cur).unwrap_or_default()
}

fn mandate_basis(token: &str) -> Option<settle_mandates::types::Mandate> {
    let p = token.split('.').nth(1)?;
    serde_json::from_slice(&B64.decode(p).ok()?).ok()
}

fn balance_line(
    entry: &str,
    seq: u64,
    at: &str,
    b: &Book,
    c: Option<settle_mandates::money::Currency>,
) -> StatementLine {
    let c = c.unwrap_or_else(|| "USD".parse().unwrap_or_else(|_| unreachable!()));
    StatementLine {
        seq,
        at: at.to_owned(),
        entry: entry.into(),
        reference: String::new(),
        mandate_id: String::new(),
        rule_version: String::new(),
        hop: String::new(),
        role: String::new(),
        amount: dec(b.on_hold + b.payable + b.in_payout + b.paid, c),
        currency: c.to_string(),
        on_hold: dec(b.on_hold, c),
        payable: dec(b.payable, c),
        in_payout: dec(b.in_payout, c),
        paid: dec(b.paid, c),
        rail_reference: String::new(),
    }
}

/// What a statement covers: whose (every partner's when `None`) and the period
/// `[from, to)` (open where `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Period<'a> {
    /// The partners.
    pub partners: Option<&'a std::collections::BTreeSet<String>>,
    /// From (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive).
    pub to: Option<DateTime<Utc>>,
}

impl Period<'_> {
    fn wanted(&self, partner: &str) -> bool {
        self.partners.is_none_or(|s| s.contains(partner))
    }

    fn holds(&self, at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }
}

/// Streams the statements of `period` by replaying the log once (facts only, no
/// signing). Every line names the fact, conversion, rule version, hop and mandate behind
/// it; each partner's lines open with its balances before the period and close with its
/// balances after it.
pub fn statements(
    ledger: &Ledger,
    cfg: EngineConfig,
    period: Period<'_>,
    sink: impl FnMut(&str, StatementLine) -> Result<()>,
) -> Result<()> {
    let mut engine = Engine::new(cfg);
    let mut books = Books { period, accounts: BTreeMap::new(), sink };
    // The fact being read, and the records it caused so far.
    let mut fact: Option<(u64, DateTime<Utc>)> = None;
    let mut caused: Vec<Envelope> = Vec::new();
    let mut derived_left = 0usize;
    let mut last_seq = 0;
    for r in ledger.records(0) {
        let r = r?;
        let env = Envelope::from_bytes(&r.event)?;
        if env.event.is_fact() {
            books.after(engine.state(), fact, &mut caused)?;
            if period.to.is_some_and(|t| env.at >= t) {
                fact = None;
                break;
            }
            fact = Some((r.seq, env.at));
            if matches!(env.event, Event::SettlementFailed { batch: Some(_), .. } | Event::SettlementConfirmed { .. }) {
                caused.push(env.clone());
            }
            let d = engine
                .decide(env, r.seq)
                .map_err(|e| anyhow::anyhow!("record {} is rejected on replay: {e}", r.seq))?;
            derived_left = d.outputs.len();
        } else {
            anyhow::ensure!(derived_left > 0, "record {} is a derived event no fact caused", r.seq);
            derived_left -= 1;
            caused.push(env);
        }
        last_seq = r.seq;
    }
    books.after(engine.state(), fact, &mut caused)?;
    books.close(engine.state(), last_seq)?;
    if let Some(s) = period.partners
        && let Some(p) = s.iter().find(|p| !engine.state().partners.contains_key(*p))
    {
        bail!("partner '{p}' not found");
    }
    Ok(())
}

/// A partner's book as a statement last saw it.
#[derive(Default)]
struct Account {
    /// After the last fact read (in or before the period).
    last: Book,
    /// Its opening line is written.
    opened: bool,
    /// Its program's currency, once a line named it.
    currency: Option<Currency>,
}

/// The statements being written: the period, every wanted partner's account, the sink.
struct Books<'a, S> {
    period: Period<'a>,
    accounts: BTreeMap<String, Account>,
    sink: S,
}

impl<S: FnMut(&str, StatementLine) -> Result<()>> Books<'_, S> {
    /// Writes the lines of the records the fact at `fact` caused (`st` is the state after
    /// it), each partner's opening line before its first, and remembers every wanted
    /// partner's book after it.
    fn after(&mut self, st: &State, fact: Option<(u64, DateTime<Utc>)>, caused: &mut Vec<Envelope>) -> Result<()> {
        let Some((seq, at)) = fact else { return Ok(()) };
        let in_range = self.period.holds(at);
        let at_s = at.to_rfc3339();
        let mut lines: Vec<(String, StatementLine)> = Vec::new();
        // The rail's word, on the lines of the payouts it answered.
        let said = caused.iter().find_map(|e| match &e.event {
            Event::SettlementConfirmed { confirmation_id, .. } => Some(confirmation_id.clone()),
            Event::SettlementFailed { error, .. } => Some(error.clone()),
            _ => None,
        });
        for env in caused.drain(..) {
            for e in entries(st, &env).into_iter().filter(|e| self.period.wanted(&e.partner)) {
                let partner = e.partner.clone();
                let mut l = line(st, seq, &at_s, e);
                if matches!(l.entry.as_str(), "paid" | "payout_returned" | "paid_returned") {
                    l.rail_reference = said.clone().unwrap_or_default();
                }
                lines.push((partner, l));
            }
        }
        for (partner, line) in lines {
            let a = self.accounts.entry(partner.clone()).or_default();
            a.currency = Some(line.currency.parse()?);
            if in_range {
                if !a.opened {
                    a.opened = true;
                    (self.sink)(&partner, balance_line("opening", seq, &at_s, &a.last, a.currency))?;
                }
                (self.sink)(&partner, line)?;
            }
        }
        if self.period.from.is_none_or(|f| at < f) || in_range {
            for (p, b) in st.books.iter().filter(|(p, _)| self.period.wanted(p)) {
                self.accounts.entry(p.clone()).or_default().last = *b;
            }
        }
        Ok(())
    }

    /// Writes every wanted partner's opening line (if none was written) and closing line.
    fn close(&mut self, st: &State, last_seq: u64) -> Result<()> {
        let end = self.period.to.or(st.now).map(|t| t.to_rfc3339()).unwrap_or_default();
        let start = self.period.from.map_or_else(String::new, |f| f.to_rfc3339());
        for p in st.partners.keys().filter(|p| self.period.wanted(p)) {
            let a = self.accounts.entry(p.clone()).or_default();
            if !a.opened {
                (self.sink)(p, balance_line("opening", last_seq, &start, &a.last, a.currency))?;
            }
            (self.sink)(p, balance_line("closing", last_seq, &end, &a.last, a.currency))?;
        }
        Ok(())
    }
}

/// One movement of a partner's money a record shows, before the books are read.
struct Entry<'a> {
    partner: String,
    entry: &'static str,
    /// The conversion, settlement or batch (a mandate's own basis names its conversion).
    reference: String,
    mandate_id: String,
    /// Signed minor units.
    amount: i64,
    currency: Currency,
    /// The signed mandate, whose basis names rule version, hop and role.
    token: Option<&'a str>,
    /// Rule version, hop and role, where no mandate is at hand.
    hop: Option<(u32, u32, String)>,
}

/// The movements record `env` shows (`st`: the state after its fact).
fn entries<'a>(st: &State, env: &'a Envelope) -> Vec<Entry<'a>> {
    let plain = |partner: &str, entry, reference: &str, amount: &Amount| Entry {
        partner: partner.to_owned(),
        entry,
        reference: reference.to_owned(),
        mandate_id: String::new(),
        amount: amount.minor_units(),
        currency: amount.currency(),
        token: None,
        hop: None,
    };
    match &env.event {
        Event::MandateIssued { mandate_id, partner, amount, mandate } => {
            vec![Entry { mandate_id: mandate_id.clone(), token: Some(mandate), ..plain(partner, "earned", "", amount) }]
        }
        Event::ClawbackIssued { mandate_id, partner, amount, offset, mandate, .. } => {
            let entry = if offset.is_zero() { "clawback" } else { "clawback_offset" };
            vec![Entry {
                mandate_id: mandate_id.clone(),
                amount: -amount.minor_units(),
                token: Some(mandate),
                ..plain(partner, entry, "", amount)
            }]
        }
        // A dispute's adjustment, signed: positive pays more, negative is owed back.
        Event::AdjustmentIssued { mandate_id, partner, amount, mandate, .. } => {
            vec![Entry {
                mandate_id: mandate_id.clone(),
                token: Some(mandate),
                ..plain(partner, "adjustment", "", amount)
            }]
        }
        Event::PayoutBooked { settlement, partner, paid, .. } => vec![plain(partner, "paid", settlement, paid)],
        Event::PayoutBatchCreated { batch, partner, amount, .. } => {
            vec![plain(partner, "payout_batched", batch, amount)]
        }
        // A failed batch's money is payable again (the fact itself is the line).
        Event::SettlementFailed { batch: Some(batch), partner, .. } => st
            .batches
            .get(batch)
            .filter(|b| b.status == settle_engine::state::BatchStatus::Failed)
            .map(|b| plain(partner, "payout_returned", batch, &b.amount))
            .into_iter()
            .collect(),
        // A bank returned a batch it paid: the payment is undone, the money payable again.
        Event::PayoutReturned { batch, partner, amount, .. } => {
            vec![Entry { amount: -amount.minor_units(), ..plain(partner, "paid_returned", batch, amount) }]
        }
        Event::HoldsReleased { mandate_ids, .. } => mandate_ids.iter().filter_map(|id| released(st, id)).collect(),
        _ => Vec::new(),
    }
}

/// The movement of a held mandate's release.
fn released<'a>(st: &State, id: &str) -> Option<Entry<'a>> {
    let (_, h, c) = st.mandate_hop(id)?;
    let hop = &c.hops[h];
    Some(Entry {
        partner: hop.partner.to_string(),
        entry: "hold_released",
        reference: c.id.to_string(),
        mandate_id: id.to_owned(),
        amount: hop.amount - hop.clawed,
        currency: c.pool.currency(),
        token: None,
        hop: Some((
            c.rule_version,
            u32::try_from(h).unwrap_or(u32::MAX),
            settle_engine::state::role_of(h, c.hops.len()).to_owned(),
        )),
    })
}

/// The statement line of movement `e` of the fact at `seq`, with its partner's balances
/// after the fact.
fn line(st: &State, seq: u64, at: &str, e: Entry<'_>) -> StatementLine {
    let b = st.books.get(&e.partner).copied().unwrap_or_default();
    let c = e.currency;
    let basis = e.token.and_then(mandate_basis);
    let (rule_version, hop, role) = match (&basis, e.hop) {
        (Some(m), _) => (m.basis.rule_version.to_string(), m.basis.hop.to_string(), m.basis.role.clone()),
        (None, Some((rv, h, r))) => (rv.to_string(), h.to_string(), r),
        (None, None) => (String::new(), String::new(), String::new()),
    };
    StatementLine {
        seq,
        at: at.to_owned(),
        entry: e.entry.into(),
        // A mandate names its conversion; an adjustment, its dispute.
        reference: basis
            .as_ref()
            .map_or(e.reference, |m| m.basis.dispute.clone().unwrap_or(m.basis.conversion.clone())),
        mandate_id: e.mandate_id,
        rule_version,
        hop,
        role,
        amount: dec(e.amount, c),
        currency: c.to_string(),
        on_hold: dec(b.on_hold, c),
        payable: dec(b.payable, c),
        in_payout: dec(b.in_payout, c),
        paid: dec(b.paid, c),
        rail_reference: String::new(),
    }
}

/// One partner's statement, in memory (the CLI's `settle statement`).
pub fn statement(
    ledger: &Ledger,
    cfg: EngineConfig,
    partner: &str,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<StatementLine>> {
    let set: std::collections::BTreeSet<String> = [partner.to_owned()].into();
    let mut out = Vec::new();
    statements(ledger, cfg, Period { partners: Some(&set), from, to }, |_, l| {
        out.push(l);
        Ok(())
    })?;
    Ok(out)
}

/// Writes a statement as CSV.
pub fn write_csv<T: Serialize>(lines: &[T], w: impl Write) -> Result<()> {
    let mut c = csv::Writer::from_writer(w);
    for l in lines {
        c.serialize(l)?;
    }
    c.flush()?;
    Ok(())
}

/// One partner's balances as of a log position (`settle balances`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceLine {
    /// Last record reflected: the books are those after every fact up to here.
    pub seq: u64,
    /// Partner.
    pub partner: String,
    /// Program.
    pub program: String,
    /// Currency of the program.
    pub currency: Currency,
    /// Total earned.
    pub earned: String,
    /// Total clawed back.
    pub clawed_back: String,
    /// On hold.
    pub on_hold: String,
    /// Payable (negative: offset owed).
    pub payable: String,
    /// In open payout batches.
    pub in_payout: String,
    /// Paid.
    pub paid: String,
    /// Net of the adjustment mandates of accepted disputes (positive: paid more).
    pub adjusted: String,
}

/// The balance of `partner` in `st` after record `seq`, as decimal strings in its
/// program's currency (`None` if it is not enrolled): the one rendering of a balance,
/// the API's and `settle balances`'.
pub fn balance_of(st: &State, partner: &str, seq: u64) -> Option<Result<BalanceLine>> {
    let pt = st.partners.get(partner)?;
    Some((|| {
        let b = st.books.get(partner).copied().unwrap_or_default();
        let currency = st
            .programs
            .get(&pt.program)
            .map(|pr| pr.latest().spec.currency)
            .with_context(|| format!("partner '{partner}' is in no program"))?;
        // Every total of a book is bounded (MAX_BOOK_TOTAL): always an amount.
        let a = |m: i64| decimal(m, currency);
        Ok(BalanceLine {
            seq,
            partner: partner.to_owned(),
            program: pt.program.clone(),
            currency,
            earned: a(b.earned)?,
            clawed_back: a(b.clawed_back)?,
            on_hold: a(b.on_hold)?,
            payable: a(b.payable)?,
            in_payout: a(b.in_payout)?,
            paid: a(b.paid)?,
            adjusted: a(b.adjusted)?,
        })
    })())
}

/// Every partner's books after each fact recorded at or before `at` (all of the log when
/// `None`): the log replayed from its first record, so any past position can be asked.
pub fn balances(ledger: &Ledger, cfg: EngineConfig, at: Option<u64>) -> Result<Vec<BalanceLine>> {
    let size = ledger.size();
    if size == 0 {
        bail!("the log is empty");
    }
    if let Some(a) = at
        && a >= size
    {
        bail!("--at {a} is past the end of the log ({size} records, the last is {})", size - 1);
    }
    let mut engine = Engine::new(cfg);
    let last = crate::service::replay(ledger, &mut engine, 0, at)?.unwrap_or(0);
    let st = engine.state();
    st.partners.keys().filter_map(|id| balance_of(st, id, last)).collect()
}
