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
                mandates.push(MandateItem { amount, mandate, mandate_id, seq: r.seq });
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
#[derive(Debug, Serialize, JsonSchema)]
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

/// The latest signed checkpoint.
pub fn latest_checkpoint(app: &App) -> Result<CheckpointView, Error> {
    match app.svc.ledger().latest_checkpoint() {
        Ok(Some(c)) => Ok(CheckpointView {
            note: c.note,
            origin: c.checkpoint.origin,
            root: B64STD.encode(c.checkpoint.root),
            size: c.checkpoint.size,
            time: c.checkpoint.time,
        }),
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
