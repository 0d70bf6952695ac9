//! ISO 20022 `camt.054` (Bank To Customer Debit Credit Notification), versions
//! `.001.02` and `.001.08`: what a bank reports of the payments it booked, returned or
//! holds pending. Read with quick-xml's serde deserialiser (elements by local name, so a
//! prefixed document reads as a default-namespace one; no DTD, no external entities);
//! only what reconciliation needs is kept ([`Notification`]). A document that is not such
//! a notification is refused as the rules refuse (422 over HTTP): any text is a body the
//! API's document allows.

use serde::Deserialize;

use crate::error::Error;

/// The versions read.
pub const VERSIONS: [&str; 2] = ["camt.054.001.02", "camt.054.001.08"];

/// A notification, as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `camt.054.001.02` or `camt.054.001.08`.
    pub version: &'static str,
    /// The bank's message id (`GrpHdr/MsgId`): what makes a notification the same one.
    pub message_id: String,
    /// Every transaction reported, in document order, with its entry's facts.
    pub items: Vec<Item>,
}

/// One transaction of an entry (an entry without details is one item of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The entry's status: `BOOK`, `PDNG`, `INFO`, ...
    pub status: String,
    /// Money came in (`CRDT`): for a payment the vendor sent, a return.
    pub credit: bool,
    /// The entry reverses an earlier one.
    pub reversal: bool,
    /// The end-to-end id of the payment, if reported.
    pub end_to_end_id: Option<String>,
    /// The amount and its currency (the transaction's, else the entry's).
    pub amount: (String, String),
    /// The bank's reference (the transaction's, else the entry's, else the entry
    /// reference).
    pub bank_reference: Option<String>,
    /// The ISO reason code of a return (`AC04`, ...), or its proprietary reason.
    pub return_reason: Option<String>,
    /// The booking date.
    pub booking_date: Option<String>,
}

impl Item {
    /// Booked, not pending or for information only.
    #[must_use]
    pub fn booked(&self) -> bool {
        self.status == "BOOK"
    }

    /// A return of a payment the vendor sent: return information, money coming back, or
    /// a reversal.
    #[must_use]
    pub fn returned(&self) -> bool {
        self.return_reason.is_some() || self.credit || self.reversal
    }
}

/// Reads a notification.
pub fn parse(xml: &[u8]) -> Result<Notification, Error> {
    let text = std::str::from_utf8(xml).map_err(|_| Error::rejected("a camt.054 notification must be UTF-8"))?;
    let version = VERSIONS
        .into_iter()
        .find(|v| ['"', '\''].iter().any(|q| text.contains(&format!("urn:iso:std:iso:20022:tech:xsd:{v}{q}"))))
        .ok_or_else(|| {
            Error::rejected(format!("not a camt.054 notification of a version read here ({})", VERSIONS.join(", ")))
        })?;
    let doc: Document = quick_xml::de::from_str(text)
        .map_err(|e| Error::rejected(format!("not a readable {version} notification: {e}")))?;
    let body = doc.body.ok_or_else(|| Error::rejected("no BkToCstmrDbtCdtNtfctn in the document"))?;
    let message_id = body.header.message_id.trim().to_owned();
    if message_id.is_empty() {
        return Err(Error::rejected("the notification has no GrpHdr/MsgId"));
    }
    let mut items = Vec::new();
    for n in body.notifications {
        for e in n.entries {
            let status = e.status.code();
            let credit = e.indicator.trim() == "CRDT";
            let reversal = e.reversal.as_deref().is_some_and(|r| matches!(r.trim(), "true" | "1"));
            let entry_ref = e.bank_reference.clone().or(e.entry_reference.clone());
            let booking_date = e.booking_date.and_then(|d| d.date.or(d.date_time));
            let txs: Vec<Tx> = e.details.into_iter().flat_map(|d| d.transactions).collect();
            if txs.is_empty() {
                items.push(Item {
                    status,
                    credit,
                    reversal,
                    end_to_end_id: None,
                    amount: e.amount.pair(),
                    bank_reference: entry_ref,
                    return_reason: None,
                    booking_date,
                });
                continue;
            }
            for t in txs {
                let refs = t.refs.unwrap_or_default();
                let amount = t.amount.or(t.amount_details.and_then(|a| a.transaction).map(|a| a.amount));
                items.push(Item {
                    status: status.clone(),
                    credit: t.indicator.as_deref().map_or(credit, |i| i.trim() == "CRDT"),
                    reversal,
                    end_to_end_id: refs.end_to_end_id.map(|s| s.trim().to_owned()).filter(|s| s != "NOTPROVIDED"),
                    amount: amount.as_ref().unwrap_or(&e.amount).pair(),
                    bank_reference: refs.bank_reference.or(entry_ref.clone()),
                    return_reason: t
                        .return_info
                        .map(|r| r.reason.and_then(|r| r.code.or(r.proprietary)).unwrap_or_else(|| "NARR".into())),
                    booking_date: booking_date.clone(),
                });
            }
        }
    }
    Ok(Notification { version, message_id, items })
}

// What is read of the document, by its elements' names.

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "BkToCstmrDbtCdtNtfctn")]
    body: Option<Body>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "GrpHdr")]
    header: Header,
    #[serde(rename = "Ntfctn", default)]
    notifications: Vec<Ntfctn>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "MsgId")]
    message_id: String,
}

#[derive(Deserialize)]
struct Ntfctn {
    #[serde(rename = "Ntry", default)]
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "NtryRef")]
    entry_reference: Option<String>,
    #[serde(rename = "Amt")]
    amount: Money,
    #[serde(rename = "CdtDbtInd")]
    indicator: String,
    #[serde(rename = "RvslInd")]
    reversal: Option<String>,
    #[serde(rename = "Sts")]
    status: Status,
    #[serde(rename = "BookgDt")]
    booking_date: Option<DateOrTime>,
    #[serde(rename = "AcctSvcrRef")]
    bank_reference: Option<String>,
    #[serde(rename = "NtryDtls", default)]
    details: Vec<Details>,
}

/// `.02`: the code as the element's text; `.08`: a `Cd` (or `Prtry`) inside it.
#[derive(Deserialize)]
struct Status {
    #[serde(rename = "$text")]
    text: Option<String>,
    #[serde(rename = "Cd")]
    code: Option<String>,
    #[serde(rename = "Prtry")]
    proprietary: Option<String>,
}

impl Status {
    fn code(&self) -> String {
        let s = self.code.as_ref().or(self.text.as_ref()).or(self.proprietary.as_ref());
        s.map(|s| s.trim().to_owned()).unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct DateOrTime {
    #[serde(rename = "Dt")]
    date: Option<String>,
    #[serde(rename = "DtTm")]
    date_time: Option<String>,
}

#[derive(Deserialize, Clone)]
struct Money {
    #[serde(rename = "@Ccy")]
    currency: String,
    #[serde(rename = "$text")]
    value: String,
}

impl Money {
    fn pair(&self) -> (String, String) {
        (self.value.trim().to_owned(), self.currency.trim().to_owned())
    }
}

#[derive(Deserialize)]
struct Details {
    #[serde(rename = "TxDtls", default)]
    transactions: Vec<Tx>,
}

#[derive(Deserialize)]
struct Tx {
    #[serde(rename = "Refs")]
    refs: Option<Refs>,
    #[serde(rename = "Amt")]
    amount: Option<Money>,
    #[serde(rename = "CdtDbtInd")]
    indicator: Option<String>,
    #[serde(rename = "AmtDtls")]
    amount_details: Option<AmountDetails>,
    #[serde(rename = "RtrInf")]
    return_info: Option<ReturnInfo>,
}

#[derive(Deserialize, Default)]
struct Refs {
    #[serde(rename = "AcctSvcrRef")]
    bank_reference: Option<String>,
    #[serde(rename = "EndToEndId")]
    end_to_end_id: Option<String>,
}

#[derive(Deserialize)]
struct AmountDetails {
    #[serde(rename = "TxAmt")]
    transaction: Option<TxAmount>,
}

#[derive(Deserialize)]
struct TxAmount {
    #[serde(rename = "Amt")]
    amount: Money,
}

#[derive(Deserialize)]
struct ReturnInfo {
    #[serde(rename = "Rsn")]
    reason: Option<Reason>,
}

#[derive(Deserialize)]
struct Reason {
    #[serde(rename = "Cd")]
    code: Option<String>,
    #[serde(rename = "Prtry")]
    proprietary: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notifications pyiso20022 writes (tests/vectors/bank), in both versions: a
    /// booked payment, a return with its reason, a pending entry.
    #[test]
    fn both_versions_read_the_same() {
        for (v, xml) in [
            ("camt.054.001.02", include_str!("../../tests/vectors/bank/camt.054.001.02.xml")),
            ("camt.054.001.08", include_str!("../../tests/vectors/bank/camt.054.001.08.xml")),
        ] {
            let n = parse(xml.as_bytes()).unwrap();
            assert_eq!((n.version, n.message_id.as_str(), n.items.len()), (v, "BANK-MSG-1", 3));
            let [booked, returned, pending] = &n.items[..] else { unreachable!() };
            assert!(booked.booked() && !booked.returned(), "{booked:?}");
            assert_eq!(booked.end_to_end_id.as_deref(), Some("payout-6-p01-0"));
            assert_eq!(booked.amount, ("123.45".into(), "USD".into()));
            assert_eq!(booked.bank_reference.as_deref(), Some("BREF0001"));
            assert!(returned.booked() && returned.returned() && returned.credit);
            assert_eq!(returned.return_reason.as_deref(), Some("AC04"));
            assert!(!pending.booked());
            assert_eq!(pending.status, "PDNG");
        }
    }

    /// Prefixed elements read as default-namespace ones; what is not a notification of a
    /// version read here is refused.
    #[test]
    fn prefixes_are_read_and_other_documents_refused() {
        let xml = include_str!("../../tests/vectors/bank/camt.054.001.08.xml")
            .replace("<Document xmlns=", "<c:Document xmlns:c=")
            .replace("</Document>", "</c:Document>")
            .replace("<Ntry>", "<c:Ntry>")
            .replace("</Ntry>", "</c:Ntry>");
        assert_eq!(parse(xml.as_bytes()).unwrap().items.len(), 3);
        for bad in [
            "not xml at all",
            "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.08\"/>",
            "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.054.001.08\"><BkToCstmrDbtCdtNtfctn><GrpHdr><MsgId> </MsgId></GrpHdr></BkToCstmrDbtCdtNtfctn></Document>",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
