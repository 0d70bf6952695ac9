//! `settle demo`: a whole partner program, end to end, on the embedded store.
//!
//! Everything derives from `--seed`: keys, partners, leads, chains, deals, refunds and
//! the simulated clock. Same seed, byte-identical log and export, on any machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use settle_engine::model::*;
use settle_engine::state::HopStatus;
use settle_engine::{Envelope, Event};
use settle_mandates::money::{Amount, Currency, Rounding};
use sha2::{Digest, Sha256};

mod disputes;

use crate::home::Home;
use crate::keystore::{KeyFile, KeyHome};
use crate::service::{Service, Submit, SubmitError};

/// Days the demo simulates.
pub const DAYS: i64 = 150;
/// Partners per program.
const PARTNERS: [usize; 2] = [24, 16];

/// The resellers' monthly budget: about nine tenths of what their deals earn in an
/// average month at `per_day` conversions a day, so busy months hold some deals.
fn resellers_budget(per_day: u64) -> Budget {
    Budget { max: i64::try_from(per_day).unwrap_or(i64::MAX / 4_000_000).saturating_mul(3_000_000) }
}

fn derive(label: &str, seed: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"settle demo/");
    h.update(label.as_bytes());
    h.update(seed.to_be_bytes());
    h.finalize().into()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

fn pct(s: &str) -> Result<Percent> {
    Ok(serde_json::from_value(serde_json::Value::String(s.into()))?)
}

fn programs(usd: Currency, per_day: u64) -> Result<Vec<ProgramSpec>> {
    let start = t0();
    Ok(vec![
        ProgramSpec {
            allocation: Some(Allocation::CURRENT),
            program: "growth".into(),
            name: "Growth partners (3-tier shares)".into(),
            currency: usd,
            holding_days: 14,
            attribution_window_days: 120,
            pool_rounding: Rounding::HalfEven,
            pool: PoolRule {
                percent: Some(pct("10")?),
                flat: None,
                cap: Some(500_000),
                floor: None,
                tiers: vec![],
                tier_mode: None,
                spiffs: vec![Spiff {
                    name: "February push".into(),
                    from: start + Duration::days(31),
                    until: start + Duration::days(59),
                    percent: Some(pct("2")?),
                    flat: None,
                }],
                recurring_months: None,
            },
            split: SplitRule::Shares {
                originator: pct("30")?,
                intermediaries: pct("20")?,
                closer: pct("40")?,
                remaining: Position::Closer,
            },
            budget: None,
            payment_range: None,
            disputes: None,
            valid_from: start,
            valid_until: None,
        },
        ProgramSpec {
            allocation: Some(Allocation::CURRENT),
            program: "resellers".into(),
            name: "Resellers (10% / 2% / 1% by level, paid in real time)".into(),
            currency: usd,
            holding_days: 0,
            attribution_window_days: 120,
            pool_rounding: Rounding::HalfEven,
            pool: PoolRule::default(),
            split: SplitRule::Levels { rates: vec![pct("10")?, pct("2")?, pct("1")?] },
            budget: Some(resellers_budget(per_day)),
            payment_range: None,
            disputes: None,
            valid_from: start,
            valid_until: None,
        },
    ])
}

/// What the demo did.
#[derive(Debug, Default)]
pub struct Stats {
    facts: u64,
    rejected_as_expected: u64,
    conversions: u64,
    settled: u64,
    held: u64,
    no_commission: u64,
    duplicates: u64,
    mandates: u64,
    clawbacks: u64,
    payouts: u64,
    by_role: BTreeMap<String, i64>,
    clawed: i64,
    paid: i64,
    held_ids: BTreeSet<String>,
    released: u64,
    batches: u64,
    bank_batches: u64,
    returned: u64,
    disputes: u64,
    accepted: u64,
    rejected: u64,
    withdrawn: u64,
    overdue: u64,
    adjustments: u64,
    adjusted: i64,
}

/// A lead the demo registered: `lead-{n}`, on `day`.
struct Lead {
    n: u64,
    day: i64,
}

/// `writeln!` into the demo's summary (a `String`: writing to it cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        let _ = std::fmt::Write::write_fmt(&mut $out, format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// Runs the demo on `home` (which must be new or a previous demo's), its audit bundle
/// in `data/bundle` (in a data directory, `data` is `home`'s); answers its summary, for
/// the caller to print.
#[allow(clippy::too_many_lines)]
#[allow(clippy::float_arithmetic)] // Rates for display only; no money is a float.
pub fn run(data: &Path, home: &Home, conversions: u64, seed: u64, quiet: bool) -> Result<String> {
    let kf =
        KeyFile::new("vendor.demo", "settle.demo/log", derive("key", seed), derive("salt", seed), t0().timestamp());
    let data = prepare(data, home, &kf)?;
    let data = data.as_path();
    let svc = Service::open(home)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let usd: Currency = "USD".parse()?;
    let mut st = Stats::default();
    let started = Instant::now();
    let mut n_key = 0u64;
    let mut key = || {
        n_key += 1;
        format!("demo-{n_key}")
    };
    let admin = "vendor:admin".to_owned();
    let at = |day: i64, i: i64| t0() + Duration::days(day) + Duration::seconds(i);

    // Programs and partners, with three partners acting through agents.
    let mut setup = Vec::new();
    let mut partners: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let per_day = conversions.div_ceil(u64::try_from(DAYS).unwrap_or(1)).max(1);
    for spec in programs(usd, per_day)? {
        setup.push(fact(key(), admin.clone(), at(0, 0), Event::ProgramPublished { spec }));
    }
    let roles = [PartnerRole::Partner, PartnerRole::Connector, PartnerRole::Receiver, PartnerRole::Master];
    let mut n = 0;
    for (pi, count) in PARTNERS.iter().enumerate() {
        for _ in 0..*count {
            n += 1;
            let id = format!("p{n:02}");
            let program = ["growth", "resellers"][pi].to_owned();
            setup.push(fact(
                key(),
                admin.clone(),
                at(0, 1),
                Event::PartnerEnrolled {
                    partner: id.clone(),
                    program,
                    name: format!("Partner {n:02}"),
                    role: roles[n % 4],
                },
            ));
            partners[pi].push(id);
        }
    }
    let agents = [("agent-p01", "p01"), ("agent-p02", "p02"), ("agent-p25", "p25")];
    for (a, p) in agents {
        setup.push(fact(
            key(),
            format!("partner:{p}"),
            at(0, 2),
            Event::AgentAuthorised {
                agent: a.into(),
                partner: p.into(),
                public_key: None,
                scopes: vec![AgentScope::LeadsWrite, AgentScope::Read, AgentScope::DisputesWrite],
                not_before: at(0, 0),
                expires_at: at(DAYS + 30, 0),
            },
        ));
    }
    submit(&svc, setup, &mut st, 0)?;
    // A third of the partners are paid by bank transfer: their accounts beside the log,
    // the vendor's own as the payments' debtor.
    let bank_partners = bank_accounts(&svc, seed, &mut key, at(0, 3))?;
    submit(&svc, bank_partners.1, &mut st, 0)?;
    let bank_partners = bank_partners.0;
    // Bank payouts sent last week, which the bank's notification of this week answers.
    let mut sent_to_bank: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut bank_refs = 0u64;

    // Four fifths into the days that have conversions, the vendor raises the resellers'
    // budget and releases what it held.
    let budget_raised_day = i64::try_from(conversions.div_ceil(per_day)).unwrap_or(DAYS).min(DAYS) * 4 / 5;
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(conversions) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg:12} [{bar:30}] {pos}/{len} conversions {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("settling");
    let mut leads: Vec<Lead> = Vec::new();
    let mut converted: Vec<(u64, i64)> = Vec::new(); // (n of conversion `deal-{n}`, revenue)
    let mut refunded = BTreeSet::new();
    let mut done = 0u64;
    let mut n_lead = 0u64;
    let mut customers = 0u64;
    for day in 0..DAYS {
        if done >= conversions {
            break;
        }
        let mut facts = Vec::new();
        let mut i = 10;
        let today = per_day.min(conversions - done);
        // New leads: about one per two conversions, chains of 1..4 hops.
        for _ in 0..today.div_ceil(2) {
            n_lead += 1;
            let program = usize::from(rng.random_bool(0.4));
            let ps = &partners[program];
            let duplicate = customers > 0 && rng.random_bool(0.05);
            let customer = if duplicate {
                rng.random_range(0..customers)
            } else {
                customers += 1;
                customers - 1
            };
            let origin = rng.random_range(0..ps.len());
            let id = format!("lead-{n_lead}");
            let agent = agents.iter().find(|(_, p)| *p == ps[origin]).map(|(a, _)| *a);
            let by = agent.map_or_else(|| format!("partner:{}", ps[origin]), |a| format!("agent:{a}"));
            i += 1;
            facts.push(fact(
                key(),
                by,
                at(day, i),
                Event::LeadRegistered {
                    lead: id.clone(),
                    program: ["growth", "resellers"][program].into(),
                    customer: format!("customer-{customer}.example"),
                    customer_key: Some(CustomerKey::CURRENT),
                    partner: ps[origin].clone(),
                },
            ));
            let mut chain = vec![origin];
            if !duplicate {
                let hops = [1, 2, 2, 3, 3, 3, 4][rng.random_range(0..7)];
                let handoff = |i: i64, chain: &[usize], to: usize, k: String| {
                    fact(
                        k,
                        admin.clone(),
                        at(day, i),
                        Event::LeadHandedOff {
                            lead: id.clone(),
                            from: ps[*chain.last().unwrap_or(&0)].clone(),
                            to: ps[to].clone(),
                        },
                    )
                };
                while chain.len() < hops {
                    let next = rng.random_range(0..ps.len());
                    if chain.contains(&next) {
                        continue;
                    }
                    i += 1;
                    facts.push(handoff(i, &chain, next, key()));
                    chain.push(next);
                }
                if chain.len() >= 2 && rng.random_bool(0.02) {
                    // A handoff back to the originator would be a referral cycle: refused.
                    i += 1;
                    facts.push(handoff(i, &chain, chain[0], key()));
                }
            }
            leads.push(Lead { n: n_lead, day });
        }
        // Conversions on recent leads (registered in the last hundred days).
        let recent = leads.iter().rposition(|l| l.day + 100 < day).map_or(0, |p| p + 1);
        for _ in 0..today {
            let l = &leads[rng.random_range(recent..leads.len())];
            done += 1;
            let revenue = rng.random_range(10_000..5_000_000i64);
            let id = format!("deal-{done}");
            i += 1;
            facts.push(fact(
                key(),
                "agent:vendor-crm",
                at(day, i),
                Event::ConversionRecorded {
                    conversion: id.clone(),
                    lead: format!("lead-{}", l.n),
                    revenue: Amount::from_minor(revenue, usd)?,
                    occurred_at: at(day, i),
                    subscription_month: None,
                    fx: None,
                },
            ));
            converted.push((done, revenue));
        }
        // Refunds: 5% partial, 2% full, on earlier deals.
        for _ in 0..today {
            if converted.len() < 10 {
                break;
            }
            let roll = rng.random_range(0..100);
            if roll >= 7 {
                continue;
            }
            let k = rng.random_range(0..converted.len());
            let (n, rev) = converted.swap_remove(k);
            let cid = format!("deal-{n}");
            refunded.insert(cid.clone());
            let size = if roll < 5 {
                RefundSize::Amount(Amount::from_minor(rev * rng.random_range(10..60i64) / 100, usd)?)
            } else {
                RefundSize::Full
            };
            i += 1;
            facts.push(fact(
                key(),
                "agent:vendor-crm",
                at(day, i),
                Event::RefundRecorded { refund: format!("refund-{cid}"), conversion: cid, size },
            ));
        }
        // A chunk is decided and signed while the one before it is written and synced.
        let mut queued = None;
        for chunk in facts.chunks(crate::service::MAX_BATCH) {
            let next = (svc.queue_blocking(chunk.to_vec()), cycles(chunk));
            if let Some((q, c)) = queued.replace(next) {
                count_results(svc.wait_blocking(q), c, &mut st, day)?;
            }
        }
        if let Some((q, c)) = queued {
            count_results(svc.wait_blocking(q), c, &mut st, day)?;
        }
        // The vendor raises the resellers' budget and releases the deals it held (all but
        // those refunded meanwhile: only whole deals are released).
        if day == budget_raised_day {
            let mut spec = programs(usd, per_day)?.swap_remove(1);
            spec.budget = Some(Budget { max: resellers_budget(per_day).max.saturating_mul(2) });
            let mut raise =
                vec![fact(key(), admin.clone(), at(day, 85_000), Event::ProgramAmended { spec, effective_from: t0() })];
            for (n, c) in st.held_ids.iter().filter(|c| !refunded.contains(*c)).enumerate() {
                let t = at(day, 85_001 + i64::try_from(n).unwrap_or(0));
                raise.push(fact(key(), admin.clone(), t, Event::ConversionReleased { conversion: c.clone() }));
            }
            for chunk in raise.chunks(crate::service::MAX_BATCH) {
                submit(&svc, chunk.to_vec(), &mut st, day)?;
            }
        }
        // End of day: holds that ended become payable.
        let eod = at(day, 86_000);
        submit(&svc, vec![fact(key(), "engine:clock", eod, Event::HoldsAdvanced { to: eod })], &mut st, day)?;
        // Weekly payouts on the built-in book rail, after the week's disputes.
        if day % 7 == 6 {
            let (deal, lead) =
                (format!("deal-{}", done.saturating_sub(per_day)), format!("lead-{}", n_lead.saturating_sub(30)));
            let facts = svc
                .with_state(|s| disputes::week(s, day / 7, &deal, &lead, &agents, &mut key, |i| at(day, 85_500 + i)));
            submit(&svc, facts, &mut st, day)?;
            // The bank's notification of last week's transfers: each booked; p05's is
            // returned after booking every fourth week (AC04, account closed), its money
            // payable again for this week's batch.
            let mut answers = Vec::new();
            for (n, (b, p, ids)) in std::mem::take(&mut sent_to_bank).into_iter().enumerate() {
                let answer = |ok: bool, n: usize, refs: &mut u64| {
                    *refs += 1;
                    let (settlement, batch, partner) = (format!("camt054:DEMO-{day}:{n}"), Some(b.clone()), p.clone());
                    let (rail, mandate_ids) = (BANK_RAIL.to_owned(), ids.clone());
                    if ok {
                        let confirmation_id = format!("DEMOBANK{refs:08}");
                        Event::SettlementConfirmed { settlement, batch, partner, rail, mandate_ids, confirmation_id }
                    } else {
                        let error = "AC04".to_owned();
                        Event::SettlementFailed { settlement, batch, partner, rail, mandate_ids, error }
                    }
                };
                answers.push(fact(key(), "rail:bank", at(day, 3_600), answer(true, 2 * n, &mut bank_refs)));
                if p == "p05" && day % 28 == 13 {
                    answers.push(fact(key(), "rail:bank", at(day, 3_601), answer(false, 2 * n + 1, &mut bank_refs)));
                }
            }
            for group in crate::service::by_mandates(answers) {
                submit(&svc, group, &mut st, day)?;
            }
            let payable: BTreeMap<String, Vec<String>> = svc.with_state(|s| {
                let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (cs, c) in s.conversions.iter() {
                    for (h, hop) in c.hops.iter().enumerate() {
                        if hop.status == HopStatus::Payable {
                            m.entry(hop.partner.to_string()).or_default().push(c.mandate_id(cs, h));
                        }
                    }
                }
                // Accepted disputes' positive adjustments are paid with them.
                for (id, a) in s.adjustments.iter().filter(|(_, a)| a.status == HopStatus::Payable) {
                    m.entry(a.partner.clone()).or_default().push(id.clone());
                }
                m
            });
            // Each partner's payable mandates go out in a payout batch that the book rail
            // then confirms; p03's rail refuses the first batch every fourth week, and
            // its mandates go out again in a new one. Partners paid by bank transfer are
            // paid when the bank's notification comes, a week later (below).
            let mut pay = Vec::new();
            for (p, ids) in payable {
                let bank = bank_partners.contains(&p);
                // A bank transfer of nothing is refused: while earlier clawbacks of paid
                // money leave the partner owing all its mandates are worth, they wait.
                if bank && svc.with_state(|s| s.books.get(&p).map_or(0, |b| b.payable_now())) == 0 {
                    continue;
                }
                for (j, chunk) in ids.chunks(MAX_SETTLEMENT_MANDATES).enumerate() {
                    let sid = format!("payout-{day}-{p}-{j}");
                    let rail = if bank { BANK_RAIL } else { "book" };
                    let batch = |b: &str| Event::PayoutBatched {
                        batch: b.to_owned(),
                        partner: p.clone(),
                        rail: rail.into(),
                        mandate_ids: chunk.to_vec(),
                    };
                    if bank {
                        pay.push(fact(key(), "agent:vendor-payouts", at(day, 86_150), batch(&sid)));
                        sent_to_bank.push((sid, p.clone(), chunk.to_vec()));
                        continue;
                    }
                    let answer = |b: &str, ok: bool| {
                        let (settlement, batch, partner, rail) =
                            (b.to_owned(), Some(b.to_owned()), p.clone(), "book".to_owned());
                        let mandate_ids = chunk.to_vec();
                        if ok {
                            let confirmation_id = format!("book-{b}");
                            Event::SettlementConfirmed {
                                settlement,
                                batch,
                                partner,
                                rail,
                                confirmation_id,
                                mandate_ids,
                            }
                        } else {
                            let error = "account_closed".to_owned();
                            Event::SettlementFailed { settlement, batch, partner, rail, error, mandate_ids }
                        }
                    };
                    if day % 28 == 27 && p == "p03" {
                        let first = format!("{sid}-try1");
                        pay.push(fact(key(), "agent:vendor-payouts", at(day, 86_050), batch(&first)));
                        pay.push(fact(key(), "rail:book", at(day, 86_100), answer(&first, false)));
                    }
                    pay.push(fact(key(), "agent:vendor-payouts", at(day, 86_150), batch(&sid)));
                    pay.push(fact(key(), "rail:book", at(day, 86_200), answer(&sid, true)));
                }
            }
            for group in crate::service::by_mandates(pay) {
                submit(&svc, group, &mut st, day)?;
            }
            svc.checkpoint(at(day, 86_300).timestamp())?;
        }
        bar.set_position(done);
    }
    drop((leads, converted, refunded));
    let last = svc.ledger().size();
    let end_time = svc
        .ledger()
        .record(last - 1)?
        .map(|r| Envelope::from_bytes(&r.event).map(|e| e.at.timestamp()))
        .transpose()?
        .unwrap_or_default();
    let cp = svc.checkpoint(end_time)?;
    // No saved engine state: serialising the whole projection costs about as much memory
    // again as the projection itself (the demo's peak); `settle serve` on this store
    // rebuilds it by replaying the log.
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    svc.close()?;
    drop(svc);

    // A partner's check, from exported files and public keys only; then the full audit.
    let bundle = data.join("bundle");
    let (manifest, receipts) = crate::audit::export_counted(home, &bundle)?;
    // A sample, as three partners would check their own receipts (all of them are checked
    // by `settle audit --bundle`): verifying every receipt would double the demo's time.
    let (mut sample, mut sampled) = (Vec::new(), Vec::new());
    for p in ["p01", "p05", "p25"] {
        let f = bundle.join("partners").join(p).join("receipts.jsonl");
        // A partner enrolled without a mandate yet has an empty receipts file.
        if f.metadata().is_ok_and(|m| m.len() > 0) {
            sample.push(f);
            sampled.push(p);
        }
    }
    let verified = crate::audit::verify_files(&crate::audit::VerifyOptions {
        keys: &bundle.join(crate::audit::JWKS_FILE),
        files: &sample,
        origin: Some(&manifest.origin),
        partner: None,
        known: &[],
        proofs: &[],
    })?
    .receipts;
    let audit_t = Instant::now();
    let audit = crate::audit::audit_data(home)?;
    let audit_secs = audit_t.elapsed().as_secs_f64();
    let secs = elapsed.as_secs_f64();
    let mut out = String::new();
    outln!(out, "settle demo (seed {seed}) in {}", home.describe());
    outln!(
        out,
        "  facts recorded      {} ({} refused as expected: referral cycles)",
        st.facts,
        st.rejected_as_expected
    );
    outln!(
        out,
        "  conversions         {} settled, {} held ({} released once the budget was raised), {} without commission ({} duplicate leads)",
        st.settled,
        st.held,
        st.released,
        st.no_commission,
        st.duplicates
    );
    outln!(
        out,
        "  mandates signed     {} payments, {} clawbacks, {} payouts ({} payout batches: {} by bank transfer, {} returned, {} awaiting the bank)",
        st.mandates,
        st.clawbacks,
        st.payouts,
        st.batches,
        st.bank_batches,
        st.returned,
        sent_to_bank.len()
    );
    for (role, v) in &st.by_role {
        outln!(out, "  earned by {role:<13} {}", Amount::from_minor(*v, usd)?);
    }
    outln!(out, "  clawed back         {}", Amount::from_minor(st.clawed, usd)?);
    outln!(out, "  paid out            {}", Amount::from_minor(st.paid, usd)?);
    outln!(
        out,
        "  disputes            {} opened: {} accepted ({} adjustment mandates, net {}), {} rejected, {} withdrawn; {} flagged overdue",
        st.disputes,
        st.accepted,
        st.adjustments,
        Amount::from_minor(st.adjusted, usd)?,
        st.rejected,
        st.withdrawn,
        st.overdue
    );
    outln!(
        out,
        "  log                 {} records, checkpoint size {} root {}",
        manifest.records,
        cp.checkpoint.size,
        &manifest.root[..16]
    );
    outln!(
        out,
        "  receipts            {verified} of {receipts} verified offline with the JWKS only: a sample, the receipts of {} in {}",
        sampled.join(", "),
        bundle.display()
    );
    outln!(
        out,
        "  audit               {} records, {} mandates re-derived and verified, {} checkpoints: money conserved: yes ({audit_secs:.1}s)",
        audit.records,
        audit.mandates,
        audit.checkpoints
    );
    outln!(
        out,
        "  throughput          {:.0} conversions/s, {:.0} mandates/s (settle, sign, durable append; {secs:.1}s)",
        st.conversions as f64 / secs,
        (st.mandates + st.clawbacks) as f64 / secs
    );
    // The primitives bound both figures; measured now, so the ratios carry over.
    let (sign, verify) = (crate::rates::raw_signing_rate(), crate::rates::raw_batch_verify_rate());
    let audit_rate = audit.mandates as f64 / audit_secs.max(1e-9);
    outln!(
        out,
        "  raw throughput      {sign} signatures/s, {verify} batch-verified signatures/s, per core (this run); \
         audit {audit_rate:.0} mandates/s = {:.2} of two cores' batch verification",
        audit_rate / (2.0 * verify.max(1) as f64)
    );
    Ok(out)
}

/// Every third partner's bank account (`p02`, `p05`, ...), kept beside the log, and the
/// facts that register them; the vendor's account, the debtor of the payment files.
/// Salts and account numbers derive from `seed`.
fn bank_accounts(
    svc: &Service,
    seed: u64,
    mut key: impl FnMut() -> String,
    t: DateTime<Utc>,
) -> Result<(BTreeSet<String>, Vec<Submit>)> {
    use crate::bank::instruments::Account;
    let debtor =
        Account { holder: "Settle Demo Vendor Inc.".into(), iban: demo_iban(0), bic: Some("COBADEFFXXX".into()) };
    crate::bank::instruments::set_debtor(svc, "Settle Demo Vendor Inc.", debtor)?;
    let mut partners = BTreeSet::new();
    let mut facts = Vec::new();
    for n in (2..=PARTNERS.iter().sum::<usize>()).step_by(3) {
        let p = format!("p{n:02}");
        let r = crate::bank::Registration {
            holder: format!("Partner {n:02} GmbH"),
            iban: demo_iban(u64::from_be_bytes(derive(&format!("account/{p}"), seed)[..8].try_into()?)),
            bic: (n % 2 == 0).then(|| "DEUTDEFFXXX".to_owned()),
            currency: None,
        };
        let (event, _) = crate::bank::prepare(svc, &p, r, derive(&format!("instrument/{p}"), seed), t)?;
        facts.push(fact(key(), "vendor:admin", t, event));
        partners.insert(p);
    }
    Ok((partners, facts))
}

/// A German IBAN of a demo bank (routing code 37040044) with account number `n` (mod
/// 10^10), its check digits computed as ISO 13616 says: 98 less the remainder mod 97 of
/// the digits of the BBAN, the country and `00` (letters as 10..35).
fn demo_iban(n: u64) -> String {
    let bban = format!("37040044{:010}", n % 10_000_000_000);
    let digits = format!("{bban}131400"); // "DE00": D = 13, E = 14
    let rem = digits.bytes().fold(0u64, |r, d| (r * 10 + u64::from(d - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

/// A fact as the demo submits it (no HTTP request behind it).
fn fact(key: String, by: impl Into<String>, at: DateTime<Utc>, event: Event) -> Submit {
    Submit { request: None, key, by: by.into(), at, event }
}

/// Makes `home` ready for a new demo whose key file is `kf` (a previous demo there is
/// replaced, anything else refused) and saves `kf` there; returns the directory the
/// bundle goes in: the data directory itself, or `data` beside a PostgreSQL store (new,
/// or holding only a previous demo's bundle).
fn prepare(data: &Path, home: &Home, kf: &KeyFile) -> Result<std::path::PathBuf> {
    match home {
        Home::Dir(dir) => {
            prepare_dir(dir)?;
            kf.save(dir)?;
            Ok(dir.clone())
        }
        Home::Postgres(url) => {
            let only_bundle = data.exists()
                && std::fs::read_dir(data)?.map(|e| e.map(|e| e.file_name())).collect::<Result<Vec<_>, _>>()?
                    == [std::ffi::OsString::from("bundle")];
            if only_bundle {
                std::fs::remove_dir_all(data.join("bundle"))?;
            } else if data.exists() && std::fs::read_dir(data)?.next().is_some() {
                bail!("{} is not empty; the demo's bundle needs a new --data directory", data.display());
            }
            std::fs::create_dir_all(data)?;
            let pg = std::sync::Arc::new(settle_ledger::backend::PostgresBackend::open(url)?);
            let kh = KeyHome::Store(pg.clone());
            let previous = kh.exists()? && kh.load()?.vendor == "vendor.demo";
            let empty = crate::home::log_is_empty(pg.as_ref())?;
            if previous {
                pg.clear()?;
            } else if !empty || kh.exists()? {
                bail!("{} holds a log that is not a previous demo's; give the demo an empty database", home.describe());
            }
            kh.save(kf)?;
            Ok(data.to_path_buf())
        }
    }
}

fn prepare_dir(data: &Path) -> Result<()> {
    if data.exists() {
        let empty = std::fs::read_dir(data)?.next().is_none();
        if !empty {
            let previous = KeyFile::load(data).map(|k| k.vendor == "vendor.demo").unwrap_or(false);
            if !previous {
                bail!("{} is not empty and holds no previous demo; choose a new --data directory", data.display());
            }
            std::fs::remove_dir_all(data)
                .with_context(|| format!("cannot replace the previous demo in {}", data.display()))?;
        }
    }
    std::fs::create_dir_all(data)?;
    Ok(())
}

fn submit(svc: &Service, facts: Vec<Submit>, st: &mut Stats, day: i64) -> Result<()> {
    let may_fail = cycles(&facts);
    count_results(svc.submit_blocking(facts), may_fail, st, day)
}

/// Which facts may be refused as expected (a hand-off may close a referral cycle).
fn cycles(facts: &[Submit]) -> Vec<bool> {
    facts.iter().map(|f| matches!(&f.event, Event::LeadHandedOff { .. })).collect()
}

/// Counts what the facts submitted recorded; a refusal not expected ends the demo.
fn count_results(
    results: Vec<Result<crate::service::Outcome, SubmitError>>,
    cycles: Vec<bool>,
    st: &mut Stats,
    day: i64,
) -> Result<()> {
    for (r, may_fail) in results.into_iter().zip(cycles) {
        match r {
            Ok(o) => {
                st.facts += 1;
                for env in &o.records {
                    count(&env.event, st);
                }
            }
            Err(SubmitError::Rejected(e)) if may_fail && e.to_string().contains("cycle") => {
                st.rejected_as_expected += 1
            }
            Err(e) => bail!("day {day}: {e}"),
        }
    }
    Ok(())
}

fn count(e: &Event, st: &mut Stats) {
    match e {
        Event::ConversionRecorded { .. } => st.conversions += 1,
        Event::ConversionOutcome { conversion, outcome, reason, .. } => match outcome {
            ConversionOutcomeKind::Settled if reason.as_deref().is_some_and(|r| r.starts_with("released")) => {
                st.released += 1;
            }
            ConversionOutcomeKind::Settled => st.settled += 1,
            ConversionOutcomeKind::Held => {
                st.held += 1;
                st.held_ids.insert(conversion.clone());
            }
            ConversionOutcomeKind::NoCommission => st.no_commission += 1,
        },
        Event::PayoutBatchCreated { rail, .. } => {
            st.batches += 1;
            st.bank_batches += u64::from(rail == BANK_RAIL);
        }
        Event::PayoutReturned { amount, .. } => {
            st.returned += 1;
            st.paid -= amount.minor_units();
        }
        Event::LeadOutcome { outcome: LeadOutcomeKind::Duplicate, .. } => st.duplicates += 1,
        Event::MandateIssued { mandate_id, amount, .. } => {
            st.mandates += 1;
            let role = settle_engine::state::parse_mandate_id(mandate_id)
                .map_or("?", |(_, h)| if h == 0 { "originator" } else { "downstream" });
            *st.by_role.entry(role.into()).or_default() += amount.minor_units();
        }
        Event::ClawbackIssued { amount, .. } => {
            st.clawbacks += 1;
            st.clawed += amount.minor_units();
        }
        Event::PayoutBooked { paid, .. } => {
            st.payouts += 1;
            st.paid += paid.minor_units();
        }
        Event::DisputeOpened { .. } => st.disputes += 1,
        Event::DisputeResolved { outcome: DisputeOutcome::Accepted, .. } => st.accepted += 1,
        Event::DisputeResolved { outcome: DisputeOutcome::Rejected, .. } => st.rejected += 1,
        Event::DisputeWithdrawn { .. } => st.withdrawn += 1,
        Event::DisputeOverdue { .. } => st.overdue += 1,
        Event::AdjustmentIssued { amount, .. } => {
            st.adjustments += 1;
            st.adjusted += amount.minor_units();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use settle_engine::{Engine, EngineConfig};

    use crate::home::Home;
    use crate::service::{PROJECTION, PROJECTION_MIN_RECORDS, Service, open_ledger, replay, restore};

    // The service's saved state, over the history a demo writes.

    /// The engine state is stored with the appends as the log grows, not only when the
    /// service stops: after a run that never saved it, the store holds a state as of the
    /// last record of some append, and restoring from it builds exactly the state a
    /// replay of the whole log builds.
    #[test]
    fn the_state_is_stored_with_the_appends_as_the_log_grows() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("store");
        let home = Home::Dir(data.clone());
        super::run(&data, &home, 400, 3, true).unwrap();
        let (ledger, keys, _) = open_ledger(&home).unwrap();
        let (seq, _) = ledger.projection(PROJECTION).unwrap().expect("a state stored with an append");
        let size = ledger.size();
        assert!(seq + 1 >= PROJECTION_MIN_RECORDS && seq + 1 < size, "stored as of {seq} of {size}");
        let next = ledger.record(seq + 1).unwrap().unwrap();
        assert!(settle_engine::model::is_fact_kind(&next.kind), "stored mid-append: {} follows", next.kind);
        let cfg = || EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt().unwrap() };
        let restored = restore(&ledger, cfg()).unwrap().0;
        let mut replayed = Engine::new(cfg());
        replay(&ledger, &mut replayed, 0, None).unwrap();
        assert_eq!(serde_json::to_vec(restored.state()).unwrap(), serde_json::to_vec(replayed.state()).unwrap());
    }

    /// A saved projection restores to exactly the state a replay of the whole log builds:
    /// the packed tables' look-ups (ids, the owners of customers) are rebuilt from it.
    #[test]
    fn a_saved_state_restores_as_the_log_replays() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("store");
        let home = Home::Dir(data.clone());
        super::run(&data, &home, 400, 3, true).unwrap();
        let replayed = {
            let svc = Service::open(&home).unwrap();
            svc.save_state().unwrap();
            let st = svc.with_state(|s| serde_json::to_vec(s).unwrap());
            svc.close().unwrap();
            st
        };
        let (ledger, keys, _) = open_ledger(&home).unwrap();
        let (seq, saved) = ledger.projection(PROJECTION).unwrap().expect("a saved projection");
        assert_eq!(seq + 1, ledger.size(), "saved as of the last record");
        assert_eq!(saved, replayed, "what is saved is the replayed state's JSON");
        let cfg = EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt().unwrap() };
        let restored = restore(&ledger, cfg).unwrap().0;
        assert_eq!(serde_json::to_vec(restored.state()).unwrap(), replayed);
        // The look-ups work on the restored state: every lead and conversion is found.
        let st = restored.state();
        assert!(st.leads.len() > 100 && st.conversions.len() == 400, "{} leads", st.leads.len());
        for (seq, c) in st.conversions.iter() {
            assert_eq!(st.conversions.seq_of(&c.id), Some(seq));
        }
        let owners = st
            .leads
            .iter()
            .filter(|(id, l)| st.leads.owner(&l.program, &l.customer).is_some_and(|(o, _)| o.as_str() == *id));
        assert!(owners.count() > 100, "the owners of customers are restored");
    }
}
