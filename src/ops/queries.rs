//! Reads: what a caller may see of programs, balances, mandates, receipts and
//! checkpoints, each as a typed view (the doors serialise it), after the catalogue's
//! authorisation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64STD;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use settle_engine::model::ProgramSpec;
use settle_engine::{Envelope, Event};
use settle_mandates::money::{Amount, Currency};
use settle_mandates::receipt::{ReceiptDocument, verify_receipt};

use super::{App, SIGNED_DECIMAL_PATTERN};
use crate::audit::statements::{BalanceLine, balance_of};
use crate::auth::Principal;
use crate::catalogue::{Op, Target, allow};
use crate::error::{Error, Kind};
use crate::receipts::{Issuer, mandate_record};

/// Most mandates in one list page.
pub const MAX_PAGE: usize = 1000;

/// A partner.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerParams {
    /// Partner id.
    pub partner: String,
}

/// A conversion.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionParams {
    /// Conversion id.
    pub conversion: String,
}

/// A partner's mandate.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptParams {
    /// Partner id.
    pub partner: String,
    /// Mandate id: `md_<seq>_<hop>` (payment), `cb_<seq>_<hop>` (clawback) or
    /// `aj_<seq>_<n>` (adjustment).
    pub mandate_id: String,
}

/// A program as `GET /v1/programs/{id}` (and the `describe_program` tool) answers it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Program")]
pub struct ProgramView {
    /// The id of the program's current open mandate (its standing authorisation).
    pub open_mandate: String,
    /// Program id.
    pub program: String,
    /// Its rule versions, oldest first.
    pub versions: Vec<RuleVersionView>,
}

/// One rule version of a program.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "RuleVersion")]
pub struct RuleVersionView {
    /// Applies to conversions occurring from here on.
    pub effective_from: DateTime<Utc>,
    /// The rules in plain language, one sentence a line.
    pub explanation: Vec<String>,
    /// The rules as published.
    pub spec: ProgramSpec,
    /// 1, 2, ...
    pub version: u32,
}

/// A program's rule versions, with a plain-language account of each: the vendor's, or
/// the program a partner is enrolled in.
pub fn program(app: &App, p: &Principal, id: &str) -> Result<ProgramView, Error> {
    let own = app
        .svc
        .with_state(|s| p.partner.as_deref().and_then(|me| s.partners.get(me)).is_some_and(|pt| pt.program == id));
    allow(p, Op::DescribeProgram, &[Target::Program { id, own }])?;
    app.svc
        .with_state(|s| {
            s.programs.get(id).map(|pr| ProgramView {
                open_mandate: pr.open_mandate.clone(),
                program: id.to_owned(),
                versions: pr
                    .versions
                    .iter()
                    .map(|v| RuleVersionView {
                        effective_from: v.effective_from,
                        explanation: v.spec.explain(),
                        spec: v.spec.clone(),
                        version: v.version,
                    })
                    .collect(),
            })
        })
        .ok_or_else(|| Error::not_found(format!("program '{id}' not found")))
}

/// A partner's balance in its program's currency, as decimal strings.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Balance")]
pub struct BalanceView {
    /// Net of the adjustment mandates of accepted disputes (positive: paid more; negative:
    /// owed back).
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub adjusted: String,
    /// Clawed back, in total.
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub clawed_back: String,
    /// The program's currency.
    pub currency: Currency,
    /// Earned (mandates issued), in total.
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub earned: String,
    /// In open payout batches: sent to a rail, not yet confirmed.
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub in_payout: String,
    /// In the holding period (the refund window).
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub on_hold: String,
    /// Paid on rails, in total.
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub paid: String,
    /// The partner.
    pub partner: String,
    /// Payable now (negative: an offset owed from clawbacks of money already paid).
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub payable: String,
    /// Its program.
    pub program: String,
}

impl From<BalanceLine> for BalanceView {
    fn from(b: BalanceLine) -> Self {
        Self {
            adjusted: b.adjusted,
            clawed_back: b.clawed_back,
            currency: b.currency,
            earned: b.earned,
            in_payout: b.in_payout,
            on_hold: b.on_hold,
            paid: b.paid,
            partner: b.partner,
            payable: b.payable,
            program: b.program,
        }
    }
}

/// A partner's balance: earned, on hold, payable, in payout, paid, clawed back and
/// adjusted.
pub fn balance(app: &App, p: &Principal, id: &str) -> Result<BalanceView, Error> {
    allow(p, Op::GetBalance, &[Target::DataOf(id)])?;
    match app.svc.with_state(|s| balance_of(s, id, 0)) {
        Some(b) => b.map(BalanceView::from).map_err(Error::internal),
        None => Err(Error::not_found(format!("partner '{id}' not found"))),
    }
}

/// A page of a partner's payment mandates (what [`mandates`] answers).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "MandatePage")]
pub struct MandatePage {
    /// The mandates, in log order; pass the last one's `seq` as `after` for the next page.
    pub mandates: Vec<MandateItem>,
    /// The partner.
    pub partner: String,
}

/// One payment mandate of a partner.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MandateItem {
    /// Its amount.
    pub amount: Amount,
    /// The signed mandate (compact JWS).
    pub mandate: String,
    /// Its id, `md_<seq>_<hop>`.
    pub mandate_id: String,
    /// The conversion it pays (`GET /v1/conversions/{id}`).
    pub conversion: String,
    /// Log position of its record.
    pub seq: u64,
}

/// A page of a partner's payment mandates, in log order, after record `after`: `limit`
/// of them, 1..=[`MAX_PAGE`] (default 100; another limit is refused, 422).
pub async fn mandates(
    app: &App,
    p: &Principal,
    id: String,
    after: Option<u64>,
    limit: Option<usize>,
) -> Result<MandatePage, Error> {
    allow(p, Op::ListMandates, &[Target::DataOf(&id)])?;
    if !app.svc.with_state(|s| s.partners.contains_key(&id)) {
        return Err(Error::not_found(format!("partner '{id}' not found")));
    }
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::rejected(format!("limit must be 1..={MAX_PAGE}, not {limit}")));
    }
    let svc = app.svc.clone();
    tokio::task::spawn_blocking(move || -> Result<MandatePage, Error> {
        let seqs = svc.with_state(|s| mandate_positions(s, &id, after, limit));
        let mut mandates = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let r =
                svc.ledger().record(seq).map_err(Error::internal)?.ok_or_else(|| Error::internal("missing record"))?;
            let env = Envelope::from_bytes(&r.event).map_err(Error::internal)?;
            if let Event::MandateIssued { mandate_id, amount, mandate, .. } = env.event {
                let conversion = svc
                    .with_state(|s| s.mandate_hop(&mandate_id).map(|(_, _, c)| c.id.to_string()))
                    .unwrap_or_default();
                mandates.push(MandateItem { amount, mandate, mandate_id, conversion, seq: r.seq });
            }
        }
        Ok(MandatePage { mandates, partner: id })
    })
    .await
    .map_err(Error::internal)?
}

/// The log positions of partner `id`'s payment mandates after record `after`, in log
/// order, at most `limit`: after the conversion that issued them, or the release of a
/// held one (a hop owed nothing has none).
fn mandate_positions(s: &settle_engine::State, id: &str, after: Option<u64>, limit: usize) -> Vec<u64> {
    let from = after.map_or(0, |a| a.saturating_add(1));
    let position = |base: u64, c: &settle_engine::state::Conversion| {
        let i = c.hops.iter().position(|h| h.partner == id)?;
        settle_engine::state::mandate_seq_of(c, base, i)
    };
    let mut v: Vec<u64> = s
        .conversions
        .hops_of(from, id)
        .filter(|(_, _, _, released)| !released)
        .filter_map(|(cs, _, position, _)| settle_engine::state::mandate_seq(cs, position?))
        .take(limit)
        .collect();
    v.extend(
        s.releases
            .range(from..)
            .filter_map(|(r, cs)| s.conversions.get(*cs).and_then(|c| position(*r, &c)))
            .take(limit),
    );
    v.sort_unstable();
    v.truncate(limit);
    v
}

/// A conversion as `GET /v1/conversions/{id}` answers it: its chain, each hop's partner
/// and role; the money of every hop for the vendor, of its own hops for a partner.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Conversion")]
pub struct ConversionView {
    /// Conversion id.
    pub conversion: String,
    /// Its hops, originator first (for a held conversion, the split it would pay).
    pub hops: Vec<HopView>,
    /// The pool.
    pub pool: Amount,
    /// Its program.
    pub program: String,
    /// Revenue refunded so far, in the revenue's currency (to the vendor only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded: Option<Amount>,
    /// Revenue (to the vendor only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue: Option<Amount>,
    /// The rule version that priced it.
    pub rule_version: u32,
    /// `settled` (its mandates issued) or `held`.
    #[schemars(extend("enum" = ["settled", "held"]))]
    pub status: &'static str,
}

/// One hop of a conversion.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HopView {
    /// What the hop was paid (what it would be paid, held): to the vendor and the hop's
    /// own partner only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// Clawed back from it by refunds (as `amount`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clawed_back: Option<Amount>,
    /// 0 = originator.
    pub hop: u32,
    /// Its payment mandate, if it has one (as `amount`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mandate_id: Option<String>,
    /// The partner.
    pub partner: String,
    /// `sole`, `originator`, `intermediary` or `closer`.
    pub role: &'static str,
    /// `held`, `payable`, `batched`, `paid` or `nothing` (as `amount`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Conversion `id` as `p` may see it: the vendor every one; a partner one it is on (any
/// other is not found, as one that does not exist).
pub fn conversion(app: &App, p: &Principal, id: &str) -> Result<ConversionView, Error> {
    let found = app.svc.with_state(|s| {
        let cs = s.conversions.seq_of(id)?;
        let c = s.conversions.get(cs)?;
        let chain: Vec<String> = match &c.held {
            Some(h) if c.hops.is_empty() => h.chain.clone(),
            _ => c.hops.iter().map(|h| h.partner.to_string()).collect(),
        };
        Some((cs, c, chain))
    });
    let parties = found.as_ref().map(|(_, _, chain)| chain.as_slice());
    allow(p, Op::GetConversion, &[Target::Conversion { id, parties }])?;
    let (cs, c, chain) = found.ok_or_else(|| Error::not_found(format!("conversion '{id}' not found")))?;
    if chain.is_empty() {
        return Err(Error::not_found(format!("conversion '{id}' earned no commission: it has no chain to show")));
    }
    let cur = c.pool.currency();
    let sees = |partner: &str| p.is_vendor() || p.partner.as_deref() == Some(partner);
    let amount = |m: i64| Amount::from_minor(m, cur).map_err(Error::internal);
    let n = chain.len();
    let mut hops = Vec::with_capacity(n);
    for (i, partner) in chain.iter().enumerate() {
        let mine = sees(partner);
        let hop = u32::try_from(i).unwrap_or(u32::MAX);
        let role = settle_engine::state::role_of(i, n);
        let view = match (c.hops.get(i), &c.held) {
            (Some(h), _) if mine => HopView {
                amount: Some(amount(h.amount)?),
                clawed_back: Some(amount(h.clawed)?),
                hop,
                mandate_id: (h.status != settle_engine::state::HopStatus::Nothing).then(|| c.mandate_id(cs, i)),
                partner: partner.clone(),
                role,
                status: serde_json::to_value(h.status).ok().and_then(|v| v.as_str().map(str::to_owned)),
            },
            (None, Some(held)) if mine => HopView {
                amount: Some(amount(held.parts.get(i).copied().unwrap_or(0))?),
                clawed_back: None,
                hop,
                mandate_id: None,
                partner: partner.clone(),
                role,
                status: Some("held".into()),
            },
            _ => HopView {
                amount: None,
                clawed_back: None,
                hop,
                mandate_id: None,
                partner: partner.clone(),
                role,
                status: None,
            },
        };
        hops.push(view);
    }
    Ok(ConversionView {
        conversion: id.to_owned(),
        hops,
        pool: c.pool,
        program: c.program.to_string(),
        refunded: p
            .is_vendor()
            .then(|| Amount::from_minor(c.refunded, c.revenue.currency()))
            .transpose()
            .map_err(Error::internal)?,
        revenue: p.is_vendor().then_some(c.revenue),
        rule_version: c.rule_version,
        status: if c.hops.is_empty() { "held" } else { "settled" },
    })
}

/// The receipt of a partner's mandate (payment `md_`, clawback `cb_` or adjustment `aj_`), proved against
/// the latest signed checkpoint.
pub fn receipt(app: &App, p: &Principal, id: &str, mid: &str) -> Result<ReceiptDocument, Error> {
    allow(p, Op::GetReceipt, &[Target::DataOf(id)])?;
    let nf = || Error::not_found(format!("mandate '{mid}' of partner '{id}' not found"));
    let ledger = app.svc.ledger();
    let m = mandate_record(ledger, mid).map_err(Error::internal)?.ok_or_else(nf)?;
    if m.partner != id {
        return Err(nf());
    }
    let cp = ledger.checkpoint_covering(m.record.seq).ok().flatten().ok_or_else(|| {
        Error::new(Kind::NotYetCheckpointed, "no signed checkpoint covers this mandate yet; retry in a second")
    })?;
    // Prove against the latest checkpoint.
    let cp = ledger.latest_checkpoint().ok().flatten().unwrap_or(cp);
    let key = app.keys.current().map_err(Error::internal)?;
    let by = Issuer::current(&app.keys, &key, &cp);
    crate::receipts::receipt(ledger, &by, &m, mid).map_err(Error::internal)
}

/// A receipt's verification: valid, with what it proves, or not, with why.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Verdict {
    /// Every check passed.
    Valid {
        /// Its checkpoint.
        checkpoint: VerifiedCheckpoint,
        /// Its leaf's index in the log.
        leaf_index: u64,
        /// The mandate it proves.
        mandate_id: String,
        /// `true`.
        valid: bool,
    },
    /// A check failed.
    Invalid {
        /// The first check that failed.
        reason: String,
        /// `false`.
        valid: bool,
    },
}

/// A checkpoint a receipt was verified against.
#[derive(Debug, Serialize)]
pub struct VerifiedCheckpoint {
    /// The log's identity.
    pub origin: String,
    /// Its root hash, base64.
    pub root: String,
    /// Its number of leaves.
    pub size: u64,
}

/// Verifies a receipt document against the vendor's JWKS, as a partner would offline.
pub fn verify(app: &App, doc: &ReceiptDocument) -> Result<Verdict, Error> {
    let ring = app.keys.ring().map_err(Error::internal)?;
    Ok(match verify_receipt(doc, &ring, Some(&app.keys.origin)) {
        Ok(v) => Verdict::Valid {
            checkpoint: VerifiedCheckpoint {
                origin: v.checkpoint.origin,
                root: B64STD.encode(v.checkpoint.root),
                size: v.checkpoint.size,
            },
            leaf_index: v.receipt.leaf_index,
            mandate_id: v.receipt.payment_id,
            valid: true,
        },
        Err(e) => Verdict::Invalid { reason: e.to_string(), valid: false },
    })
}

/// A signed checkpoint of the log.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(rename = "Checkpoint")]
pub struct CheckpointView {
    /// The C2SP signed note: origin, size and root hash, signed by the vendor's key.
    pub note: String,
    /// The log's origin line.
    pub origin: String,
    /// The tree's root hash (base64).
    pub root: String,
    /// Records in the tree.
    pub size: u64,
    /// When it was signed (Unix seconds).
    pub time: i64,
}

impl From<settle_ledger::SignedCheckpoint> for CheckpointView {
    fn from(c: settle_ledger::SignedCheckpoint) -> Self {
        Self {
            note: c.note,
            origin: c.checkpoint.origin,
            root: B64STD.encode(c.checkpoint.root),
            size: c.checkpoint.size,
            time: c.checkpoint.time,
        }
    }
}

/// The latest signed checkpoint.
pub fn latest_checkpoint(app: &App) -> Result<CheckpointView, Error> {
    match app.svc.ledger().latest_checkpoint() {
        Ok(Some(c)) => Ok(c.into()),
        Ok(None) => Err(Error::not_found("no checkpoint yet")),
        Err(e) => Err(Error::internal(e)),
    }
}

/// An RFC 9162 consistency proof.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ConsistencyProof")]
pub struct ConsistencyView {
    /// The earlier tree size.
    pub from: u64,
    /// The proof's hashes (base64).
    pub proof: Vec<String>,
    /// The later tree size (a signed checkpoint's).
    pub to: u64,
}

/// An RFC 9162 consistency proof between two signed checkpoint sizes.
pub fn consistency(app: &App, from: u64, to: u64) -> Result<ConsistencyView, Error> {
    let l = app.svc.ledger();
    if l.checkpoint_at(to).ok().flatten().is_none() {
        return Err(Error::not_found(format!("no signed checkpoint of size {to}")));
    }
    let proof = l.consistency_proof(from, to).map_err(|e| Error::rejected(e.to_string()))?;
    Ok(ConsistencyView { from, proof: proof.iter().map(|h| B64STD.encode(h)).collect(), to })
}
