//! Statements (every line names the fact, conversion, rule version, hop and mandate
//! behind it, between opening and closing balances) and every partner's balances as of
//! any log position; both replay the log with an engine of their own.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use settle_engine::state::{Book, State};
use settle_engine::{Engine, EngineConfig, Envelope, Event};
use settle_ledger::Ledger;
use settle_mandates::money::{Amount, Currency};

/// A statement line.
#[derive(Debug, Clone, Serialize)]
pub struct StatementLine {
    /// Sequence of the fact.
    pub seq: u64,
    /// Log time.
    pub at: String,
    /// `opening`, `earned`, `clawback`, `hold_released`, `paid`, `closing`.
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
    }
}

/// Streams the statements of `partners` (all when `None`) for facts in `[from, to)` by
/// replaying the log once (facts only, no signing). Every line names the fact,
/// conversion, rule version, hop and mandate behind it; each partner's lines open with
/// its balances before the period and close with its balances after it.
pub fn statements(
    ledger: &Ledger,
    cfg: EngineConfig,
    partners: Option<&std::collections::BTreeSet<String>>,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    mut sink: impl FnMut(&str, StatementLine) -> Result<()>,
) -> Result<()> {
    struct Acc {
        last: Book,
        opened: bool,
        currency: Option<settle_mandates::money::Currency>,
    }
    let mut engine = Engine::new(cfg);
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let mut pending: Vec<Envelope> = Vec::new();
    let mut fact: Option<(u64, chrono::DateTime<chrono::Utc>)> = None;
    let mut derived_left = 0usize;
    let wanted = |p: &str| partners.is_none_or(|s| s.contains(p));
    let mut last_seq = 0;
    let mut flush = |engine: &Engine,
                     pending: &mut Vec<Envelope>,
                     fact: Option<(u64, chrono::DateTime<chrono::Utc>)>,
                     acc: &mut BTreeMap<String, Acc>|
     -> Result<()> {
        let Some((seq, at)) = fact else { return Ok(()) };
        let in_range = from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t);
        let at_s = at.to_rfc3339();
        let st = engine.state();
        let mut lines: Vec<(String, StatementLine)> = Vec::new();
        for env in pending.drain(..) {
            let mut push = |partner: &str,
                            entry: &str,
                            reference: String,
                            mid: String,
                            amount: i64,
                            c: settle_mandates::money::Currency,
                            token: Option<&str>,
                            hop_info: Option<(u32, u32, String)>| {
                if !wanted(partner) {
                    return;
                }
                let b = st.books.get(partner).copied().unwrap_or_default();
                let basis = token.and_then(mandate_basis);
                let (rv, hop, role) = basis.as_ref().map_or(
                    hop_info.map_or((String::new(), String::new(), String::new()), |(rv, h, r)| {
                        (rv.to_string(), h.to_string(), r)
                    }),
                    |m| (m.basis.rule_version.to_string(), m.basis.hop.to_string(), m.basis.role.clone()),
                );
                lines.push((
                    partner.to_owned(),
                    StatementLine {
                        seq,
                        at: at_s.clone(),
                        entry: entry.into(),
                        reference: basis.as_ref().map_or(reference, |m| m.basis.conversion.clone()),
                        mandate_id: mid,
                        rule_version: rv,
                        hop,
                        role,
                        amount: dec(amount, c),
                        currency: c.to_string(),
                        on_hold: dec(b.on_hold, c),
                        payable: dec(b.payable, c),
                        in_payout: dec(b.in_payout, c),
                        paid: dec(b.paid, c),
                    },
                ));
            };
            match &env.event {
                Event::MandateIssued { mandate_id, partner, amount, mandate } => push(
                    partner,
                    "earned",
                    String::new(),
                    mandate_id.clone(),
                    amount.minor_units(),
                    amount.currency(),
                    Some(mandate),
                    None,
                ),
                Event::ClawbackIssued { mandate_id, partner, amount, offset, mandate, .. } => push(
                    partner,
                    if offset.is_zero() { "clawback" } else { "clawback_offset" },
                    String::new(),
                    mandate_id.clone(),
                    -amount.minor_units(),
                    amount.currency(),
                    Some(mandate),
                    None,
                ),
                Event::PayoutBooked { settlement, partner, paid, .. } => push(
                    partner,
                    "paid",
                    settlement.clone(),
                    String::new(),
                    paid.minor_units(),
                    paid.currency(),
                    None,
                    None,
                ),
                Event::PayoutBatchCreated { batch, partner, amount, .. } => push(
                    partner,
                    "payout_batched",
                    batch.clone(),
                    String::new(),
                    amount.minor_units(),
                    amount.currency(),
                    None,
                    None,
                ),
                // A failed batch's money is payable again (the fact itself is the line).
                Event::SettlementFailed { batch: Some(batch), partner, .. } => {
                    if let Some(b) = st.batches.get(batch) {
                        push(
                            partner,
                            "payout_returned",
                            batch.clone(),
                            String::new(),
                            b.amount.minor_units(),
                            b.amount.currency(),
                            None,
                            None,
                        );
                    }
                }
                Event::HoldsReleased { mandate_ids, .. } => {
                    for id in mandate_ids {
                        let Some((_, h, c)) = st.mandate_hop(id) else { continue };
                        let hop = &c.hops[h];
                        let info = (
                            c.rule_version,
                            u32::try_from(h).unwrap_or(u32::MAX),
                            settle_engine::state::role_of(h, c.hops.len()).to_owned(),
                        );
                        push(
                            &hop.partner,
                            "hold_released",
                            c.id.to_string(),
                            id.clone(),
                            hop.amount - hop.clawed,
                            c.pool.currency(),
                            None,
                            Some(info),
                        );
                    }
                }
                _ => {}
            }
        }
        for (partner, line) in lines {
            let a = acc.entry(partner.clone()).or_insert(Acc { last: Book::default(), opened: false, currency: None });
            a.currency = Some(line.currency.parse()?);
            if in_range {
                if !a.opened {
                    a.opened = true;
                    sink(&partner, balance_line("opening", seq, &at_s, &a.last, a.currency))?;
                }
                sink(&partner, line)?;
            }
        }
        // Remember every wanted partner's book after this fact.
        if from.is_none_or(|f| at < f) || in_range {
            for (p, b) in &st.books {
                if wanted(p) {
                    let a =
                        acc.entry(p.clone()).or_insert(Acc { last: Book::default(), opened: false, currency: None });
                    a.last = *b;
                }
            }
        }
        Ok(())
    };
    for r in ledger.records(0) {
        let r = r?;
        let env = Envelope::from_bytes(&r.event)?;
        if env.event.is_fact() {
            flush(&engine, &mut pending, fact, &mut acc)?;
            if to.is_some_and(|t| env.at >= t) {
                fact = None;
                break;
            }
            fact = Some((r.seq, env.at));
            if matches!(env.event, Event::SettlementFailed { batch: Some(_), .. }) {
                pending.push(env.clone());
            }
            let d = engine
                .decide(env, r.seq)
                .map_err(|e| anyhow::anyhow!("record {} is rejected on replay: {e}", r.seq))?;
            derived_left = d.outputs.len();
        } else {
            anyhow::ensure!(derived_left > 0, "record {} is a derived event no fact caused", r.seq);
            derived_left -= 1;
            pending.push(env);
        }
        last_seq = r.seq;
    }
    flush(&engine, &mut pending, fact, &mut acc)?;
    let end = to.map_or_else(|| engine.state().now.map(|t| t.to_rfc3339()).unwrap_or_default(), |t| t.to_rfc3339());
    let start = from.map_or_else(String::new, |f| f.to_rfc3339());
    for p in engine.state().partners.keys().filter(|p| wanted(p)) {
        let a = acc.entry(p.clone()).or_insert(Acc { last: Book::default(), opened: false, currency: None });
        if !a.opened {
            sink(p, balance_line("opening", last_seq, &start, &a.last, a.currency))?;
        }
        sink(p, balance_line("closing", last_seq, &end, &a.last, a.currency))?;
    }
    if let Some(s) = partners
        && let Some(p) = s.iter().find(|p| !engine.state().partners.contains_key(*p))
    {
        bail!("partner '{p}' not found");
    }
    Ok(())
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
    statements(ledger, cfg, Some(&set), from, to, |_, l| {
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
