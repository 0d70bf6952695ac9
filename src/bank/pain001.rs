//! ISO 20022 `pain.001.001.09` (Customer Credit Transfer Initiation): the payment file
//! of payout batches on the bank rail. One transaction per batch (one partner's payment:
//! the batch's amount, its mandates listed in the structured remittance information),
//! one payment-information block per execution date and currency. Written with
//! quick-xml's serde serialiser from the types below, which follow the schema's element
//! order.
//!
//! The file is a pure function of its payments: the same batches give the same bytes,
//! down to the message id, so a bank that refuses a message id it has seen refuses a
//! file sent twice.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use settle_mandates::money::{Amount, Currency};
use sha2::{Digest, Sha256};

use super::instruments::{Account, Debtor};
use crate::error::Error;

/// The schema's namespace.
pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09";

/// Longest identifier of the schema (`Max35Text`).
const MAX_ID: usize = 35;
/// Longest unstructured remittance information (`Max140Text`).
const MAX_REMITTANCE: usize = 140;

/// One partner's payment: a payout batch on the bank rail.
#[derive(Debug, Clone)]
pub struct Payment {
    /// The payout batch.
    pub batch: String,
    /// What it pays.
    pub amount: Amount,
    /// Part of its mandates' value absorbed by earlier clawbacks of paid money.
    pub offset: Amount,
    /// When the bank is to execute it.
    pub execution_date: NaiveDate,
    /// Its mandates and what each was issued for.
    pub mandates: Vec<(String, Amount)>,
    /// The partner's account.
    pub creditor: Account,
}

/// The end-to-end id of payout batch `batch`, which the bank reports back: the batch id
/// itself when it is at most 35 characters of letters, digits, `-`, `.` and `:`
/// (characters every bank takes), else `S` and the first 34 hex digits of its SHA-256.
#[must_use]
pub fn end_to_end_id(batch: &str) -> String {
    id_or_digest(batch, MAX_ID, b"-.:", "S")
}

/// `id` itself when it is at most `max` bytes of letters, digits and `extra`, else
/// `prefix` and as many hex digits of its SHA-256 as fit in `max`.
pub(super) fn id_or_digest(id: &str, max: usize, extra: &[u8], prefix: &str) -> String {
    if id.len() <= max && id.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b)) {
        return id.to_owned();
    }
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    format!("{prefix}{}", &digest[..(max - prefix.len()).min(digest.len())])
}

/// The message id of a file of `payments`: `settle-` and 24 hex digits of the SHA-256 of
/// their batch ids in the file's order. The execution date is left out: a file of the
/// same batches for another day is the same instruction, and a bank refuses it twice.
fn message_id(payments: &[Payment]) -> String {
    let mut h = Sha256::new();
    for p in payments {
        h.update(p.batch.as_bytes());
        h.update([0x1e]);
    }
    format!("settle-{}", &hex::encode(h.finalize())[..24])
}

/// The payment file of `payments` (at least one, each batch once) from `debtor`'s
/// account, created at `created` (the time of the latest batch: the file is the same
/// whenever it is written).
pub fn write(debtor: &Debtor, created: DateTime<Utc>, payments: &[Payment]) -> Result<Vec<u8>, Error> {
    if payments.is_empty() {
        return Err(Error::rejected("a payment file needs at least one payout batch"));
    }
    let msg_id = message_id(payments);
    let mut blocks: BTreeMap<(NaiveDate, &str), Vec<&Payment>> = BTreeMap::new();
    for p in payments {
        blocks.entry((p.execution_date, p.amount.currency().code())).or_default().push(p);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut infos = Vec::with_capacity(blocks.len());
    let mut grand = Decimal::ZERO;
    for (i, ((date, _), ps)) in blocks.into_iter().enumerate() {
        let currency = ps[0].amount.currency();
        let mut txs = Vec::with_capacity(ps.len());
        for p in &ps {
            let e2e = end_to_end_id(&p.batch);
            if !seen.insert(e2e.clone()) {
                return Err(Error::rejected(format!("payout batch '{}' is named twice", p.batch)));
            }
            txs.push(transaction(p, e2e, currency.code() == "EUR"));
        }
        let sum = total(ps.iter().map(|p| p.amount), currency)?;
        grand += sum.to_decimal();
        infos.push(PaymentInformation {
            id: format!("{msg_id}-{}", i + 1),
            method: "TRF",
            batch_booking: false,
            count: ps.len().to_string(),
            control_sum: sum.to_decimal_string(),
            type_info: (currency.code() == "EUR").then_some(TypeInfo { service_level: Code { code: "SEPA" } }),
            execution_date: DateChoice { date: date.to_string() },
            debtor: Party { name: debtor.name.clone() },
            debtor_account: CashAccount::of(&debtor.account, Some(currency)),
            debtor_agent: Agent::of(debtor.account.bic.as_deref()).unwrap_or_else(Agent::not_provided),
            charge_bearer: if currency.code() == "EUR" { "SLEV" } else { "SHAR" },
            transactions: txs,
        });
    }
    let doc = Document {
        xmlns: NAMESPACE,
        initiation: Initiation {
            header: GroupHeader {
                id: msg_id,
                created: created.to_rfc3339_opts(SecondsFormat::Secs, true),
                count: payments.len().to_string(),
                control_sum: grand.to_string(),
                initiating_party: Party { name: debtor.name.clone() },
            },
            payments: infos,
        },
    };
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut ser = quick_xml::se::Serializer::new(&mut xml);
    ser.indent(' ', 2);
    doc.serialize(ser).map_err(Error::internal)?;
    xml.push('\n');
    Ok(xml.into_bytes())
}

type Decimal = rust_decimal::Decimal;

/// The sum of `amounts`, exact.
fn total(mut amounts: impl Iterator<Item = Amount>, currency: Currency) -> Result<Amount, Error> {
    amounts.try_fold(Amount::zero(currency), |s, a| s.checked_add(a)).map_err(|e| Error::rejected(e.to_string()))
}

/// The transaction of payment `p`. Its mandates are listed in the remittance
/// information: one `Strd` per mandate, after a `Ustrd` that names the batch; a SEPA
/// payment (EUR) carries only one `Ustrd` (the EPC's rule), with as many mandate ids as
/// fit in its 140 characters.
fn transaction(p: &Payment, e2e: String, sepa: bool) -> Transaction {
    let n = p.mandates.len();
    let mut said = format!("Commission payout {}: {n} mandate{}", p.batch, if n == 1 { "" } else { "s" });
    if !p.offset.is_zero() {
        said.push_str(&format!(", less {} owed from clawbacks", p.offset));
    }
    if sepa {
        for (i, (id, _)) in p.mandates.iter().enumerate() {
            let more = if i + 1 < n { format!(" +{}", n - i - 1) } else { String::new() };
            if said.chars().count() + 1 + id.len() + more.len() > MAX_REMITTANCE {
                said.push_str(&format!(" +{}", n - i));
                break;
            }
            said.push(' ');
            said.push_str(id);
        }
    }
    Transaction {
        payment_id: PaymentId { instruction: e2e.clone(), end_to_end: e2e },
        amount: InstructedAmount { amount: Money::of(p.amount) },
        creditor_agent: Agent::of(p.creditor.bic.as_deref()),
        creditor: Party { name: p.creditor.holder.clone() },
        creditor_account: CashAccount::of(&p.creditor, None),
        remittance: Remittance {
            unstructured: said.chars().take(MAX_REMITTANCE).collect(),
            structured: if sepa { Vec::new() } else { structured(p) },
        },
    }
}

/// One `Strd` per mandate: its id and the amount it was issued for (`InstdAmt` is the
/// batch's, net of what clawbacks and offsets took).
fn structured(p: &Payment) -> Vec<Structured> {
    p.mandates
        .iter()
        .map(|(id, amount)| Structured {
            document: ReferredDocument {
                kind: DocumentType { code_or_proprietary: Proprietary { proprietary: "SETTLE-MANDATE" } },
                number: id.clone(),
            },
            amounts: RemittanceAmount { due: Money::of(*amount) },
        })
        .collect()
}

// The schema's elements, in its order.

#[derive(Serialize)]
#[serde(rename = "Document")]
struct Document {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    #[serde(rename = "CstmrCdtTrfInitn")]
    initiation: Initiation,
}

#[derive(Serialize)]
struct Initiation {
    #[serde(rename = "GrpHdr")]
    header: GroupHeader,
    #[serde(rename = "PmtInf")]
    payments: Vec<PaymentInformation>,
}

#[derive(Serialize)]
struct GroupHeader {
    #[serde(rename = "MsgId")]
    id: String,
    #[serde(rename = "CreDtTm")]
    created: String,
    #[serde(rename = "NbOfTxs")]
    count: String,
    #[serde(rename = "CtrlSum")]
    control_sum: String,
    #[serde(rename = "InitgPty")]
    initiating_party: Party,
}

#[derive(Serialize)]
struct Party {
    #[serde(rename = "Nm")]
    name: String,
}

#[derive(Serialize)]
struct PaymentInformation {
    #[serde(rename = "PmtInfId")]
    id: String,
    #[serde(rename = "PmtMtd")]
    method: &'static str,
    #[serde(rename = "BtchBookg")]
    batch_booking: bool,
    #[serde(rename = "NbOfTxs")]
    count: String,
    #[serde(rename = "CtrlSum")]
    control_sum: String,
    #[serde(rename = "PmtTpInf", skip_serializing_if = "Option::is_none")]
    type_info: Option<TypeInfo>,
    #[serde(rename = "ReqdExctnDt")]
    execution_date: DateChoice,
    #[serde(rename = "Dbtr")]
    debtor: Party,
    #[serde(rename = "DbtrAcct")]
    debtor_account: CashAccount,
    #[serde(rename = "DbtrAgt")]
    debtor_agent: Agent,
    #[serde(rename = "ChrgBr")]
    charge_bearer: &'static str,
    #[serde(rename = "CdtTrfTxInf")]
    transactions: Vec<Transaction>,
}

#[derive(Serialize)]
struct TypeInfo {
    #[serde(rename = "SvcLvl")]
    service_level: Code,
}

#[derive(Serialize)]
struct Code {
    #[serde(rename = "Cd")]
    code: &'static str,
}

#[derive(Serialize)]
struct DateChoice {
    #[serde(rename = "Dt")]
    date: String,
}

#[derive(Serialize)]
struct CashAccount {
    #[serde(rename = "Id")]
    id: AccountId,
    #[serde(rename = "Ccy", skip_serializing_if = "Option::is_none")]
    currency: Option<&'static str>,
}

impl CashAccount {
    fn of(a: &Account, currency: Option<Currency>) -> Self {
        Self { id: AccountId { iban: a.iban.clone() }, currency: currency.map(Currency::code) }
    }
}

#[derive(Serialize)]
struct AccountId {
    #[serde(rename = "IBAN")]
    iban: String,
}

#[derive(Serialize)]
struct Agent {
    #[serde(rename = "FinInstnId")]
    institution: Institution,
}

impl Agent {
    fn of(bic: Option<&str>) -> Option<Self> {
        bic.map(|b| Self { institution: Institution { bic: Some(b.to_owned()), other: None } })
    }

    /// A debtor's bank named by no BIC (`NOTPROVIDED`, as SEPA files say it).
    fn not_provided() -> Self {
        Self { institution: Institution { bic: None, other: Some(Other { id: "NOTPROVIDED" }) } }
    }
}

#[derive(Serialize)]
struct Institution {
    #[serde(rename = "BICFI", skip_serializing_if = "Option::is_none")]
    bic: Option<String>,
    #[serde(rename = "Othr", skip_serializing_if = "Option::is_none")]
    other: Option<Other>,
}

#[derive(Serialize)]
struct Other {
    #[serde(rename = "Id")]
    id: &'static str,
}

#[derive(Serialize)]
struct Transaction {
    #[serde(rename = "PmtId")]
    payment_id: PaymentId,
    #[serde(rename = "Amt")]
    amount: InstructedAmount,
    #[serde(rename = "CdtrAgt", skip_serializing_if = "Option::is_none")]
    creditor_agent: Option<Agent>,
    #[serde(rename = "Cdtr")]
    creditor: Party,
    #[serde(rename = "CdtrAcct")]
    creditor_account: CashAccount,
    #[serde(rename = "RmtInf")]
    remittance: Remittance,
}

#[derive(Serialize)]
struct PaymentId {
    #[serde(rename = "InstrId")]
    instruction: String,
    #[serde(rename = "EndToEndId")]
    end_to_end: String,
}

#[derive(Serialize)]
struct InstructedAmount {
    #[serde(rename = "InstdAmt")]
    amount: Money,
}

#[derive(Serialize)]
struct Money {
    #[serde(rename = "@Ccy")]
    currency: &'static str,
    #[serde(rename = "$text")]
    value: String,
}

impl Money {
    fn of(a: Amount) -> Self {
        Self { currency: a.currency().code(), value: a.to_decimal_string() }
    }
}

#[derive(Serialize)]
struct Remittance {
    #[serde(rename = "Ustrd")]
    unstructured: String,
    #[serde(rename = "Strd", skip_serializing_if = "Vec::is_empty")]
    structured: Vec<Structured>,
}

#[derive(Serialize)]
struct Structured {
    #[serde(rename = "RfrdDocInf")]
    document: ReferredDocument,
    #[serde(rename = "RfrdDocAmt")]
    amounts: RemittanceAmount,
}

#[derive(Serialize)]
struct ReferredDocument {
    #[serde(rename = "Tp")]
    kind: DocumentType,
    #[serde(rename = "Nb")]
    number: String,
}

#[derive(Serialize)]
struct DocumentType {
    #[serde(rename = "CdOrPrtry")]
    code_or_proprietary: Proprietary,
}

#[derive(Serialize)]
struct Proprietary {
    #[serde(rename = "Prtry")]
    proprietary: &'static str,
}

#[derive(Serialize)]
struct RemittanceAmount {
    #[serde(rename = "DuePyblAmt")]
    due: Money,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Amount {
        Amount::from_minor(minor, "USD".parse().unwrap()).unwrap()
    }

    fn payment(batch: &str, minor: i64, day: u32) -> Payment {
        Payment {
            batch: batch.into(),
            amount: usd(minor),
            offset: usd(0),
            execution_date: NaiveDate::from_ymd_opt(2026, 3, day).unwrap(),
            mandates: vec![("md_1_0".into(), usd(minor))],
            creditor: Account { holder: "A & B <C>".into(), iban: "DE89370400440532013000".into(), bic: None },
        }
    }

    fn debtor() -> Debtor {
        let account = Account { holder: "V".into(), iban: "GB82WEST12345698765432".into(), bic: None };
        Debtor { name: "Vendor".into(), account }
    }

    /// A block per execution date and currency, the control sums exact, ids that map back
    /// to the batches, names escaped; the same payments, the same bytes.
    #[test]
    fn blocks_sums_and_ids() {
        let at = DateTime::<Utc>::from_timestamp(1_772_000_000, 0).unwrap();
        let long = "a-payout-batch-id-longer-than-thirty-five";
        let ps = [payment("b1", 1_005, 1), payment(long, 2_000, 1), payment("b_3", 7, 2)];
        let xml = String::from_utf8(write(&debtor(), at, &ps).unwrap()).unwrap();
        assert_eq!(xml.matches("<PmtInf>").count(), 2);
        assert!(xml.contains("<NbOfTxs>3</NbOfTxs>") && xml.contains("<CtrlSum>30.12</CtrlSum>"), "{xml}");
        assert!(xml.contains("<CtrlSum>30.05</CtrlSum>") && xml.contains("<CtrlSum>0.07</CtrlSum>"), "{xml}");
        assert!(xml.contains("<EndToEndId>b1</EndToEndId>"));
        assert_eq!(end_to_end_id(long).len(), 35);
        assert!(xml.contains(&format!("<EndToEndId>{}</EndToEndId>", end_to_end_id(long))));
        assert!(end_to_end_id("b_3").starts_with('S'), "'_' is not every bank's");
        assert!(xml.contains("A &amp; B &lt;C&gt;"));
        assert_eq!(write(&debtor(), at, &ps).unwrap(), xml.as_bytes());
        // Another set of batches, another message id.
        let other = String::from_utf8(write(&debtor(), at, &ps[..2]).unwrap()).unwrap();
        let id = |x: &str| x.split("<MsgId>").nth(1).unwrap().split('<').next().unwrap().to_owned();
        assert_ne!(id(&xml), id(&other));
        assert!(write(&debtor(), at, &[]).is_err());
        assert!(write(&debtor(), at, &[payment("b1", 1, 1), payment("b1", 2, 1)]).is_err(), "a batch twice");
    }

    /// A whole file: two currencies, two days, a BIC and none, an offset, several
    /// mandates (golden vector `tests/vectors/bank/pain.001.001.09.xml`).
    #[test]
    fn a_whole_file_is_the_golden_vector() {
        let eur = |minor| Amount::from_minor(minor, "EUR".parse().unwrap()).unwrap();
        let mut a = payment("payout-6-p02-0", 150_000, 7);
        a.offset = usd(2_500);
        a.mandates = vec![("md_101_0".into(), usd(100_000)), ("md_140_2".into(), usd(52_500))];
        let mut b = payment("payout_6_p05_0", 9_999, 7);
        b.amount = eur(9_999);
        b.mandates = vec![("md_120_1".into(), eur(9_999))];
        b.creditor = Account {
            holder: "Müller & Söhne GmbH".into(),
            iban: "FR1420041010050500013M02606".into(),
            bic: Some("BNPAFRPPXXX".into()),
        };
        let c = payment("payout-13-p02-0", 1, 14);
        let d = Debtor {
            name: "Settle Demo Vendor Inc.".into(),
            account: Account {
                holder: "Settle Demo Vendor Inc.".into(),
                iban: "DE89370400440532013000".into(),
                bic: Some("COBADEFFXXX".into()),
            },
        };
        let at = DateTime::<Utc>::from_timestamp(1_776_000_000, 0).unwrap();
        let xml = String::from_utf8(write(&d, at, &[a, b, c]).unwrap()).unwrap();
        crate::golden::check_text("bank/pain.001.001.09.xml", &xml);
    }
}
