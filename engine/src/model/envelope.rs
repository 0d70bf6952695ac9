//! An event as stored ([`Envelope`]): its envelope members around the event, and its
//! canonical (RFC 8785) bytes, the leaf of the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::Event;

/// An event as stored: the envelope (RFC 8785 canonical JSON of this is the leaf).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Version of the event type.
    pub v: u32,
    /// Log time of the fact (derived events carry their fact's time).
    pub at: DateTime<Utc>,
    /// Principal that caused it (`vendor:admin`, `partner:p1`, `agent:a1`, `engine`).
    pub by: String,
    /// Client idempotency key (facts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Sequence of the fact that caused it (derived only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<u64>,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// Canonical bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        if let Some(b) = self.sorted_bytes() {
            return b;
        }
        // Events hold no floats and only string keys: always canonicalisable.
        settle_mandates::jcs::to_vec(self).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The canonical bytes assembled without a JSON tree: the envelope's members written
    /// in RFC 8785 order around the event's data as serde writes it, then checked to be
    /// canonical (so the data's own members must come out sorted; where they do not,
    /// `None`, and [`Envelope::to_bytes`] takes the general path). Same bytes either way.
    fn sorted_bytes(&self) -> Option<Vec<u8>> {
        let event = serde_json::to_vec(&self.event).ok()?;
        // serde writes an adjacently tagged variant as {"type":"<kind>","data":<data>},
        // or {"type":"<kind>"} when it has no data.
        let kind = self.event.kind();
        let rest = event
            .strip_prefix(b"{\"type\":\"")?
            .strip_prefix(kind.as_bytes())?
            .strip_prefix(b"\"")?
            .strip_suffix(b"}")?;
        let data = match rest {
            [] => None,
            r => Some(r.strip_prefix(b",\"data\":")?),
        };
        let mut out = Vec::with_capacity(event.len() + 96 + self.by.len());
        let member = |out: &mut Vec<u8>, name: &[u8]| {
            out.push(if out.is_empty() { b'{' } else { b',' });
            out.extend_from_slice(name);
        };
        member(&mut out, b"\"at\":");
        serde_json::to_writer(&mut out, &self.at).ok()?;
        member(&mut out, b"\"by\":");
        serde_json::to_writer(&mut out, &self.by).ok()?;
        if let Some(c) = self.cause {
            member(&mut out, b"\"cause\":");
            out.extend_from_slice(c.to_string().as_bytes());
        }
        if let Some(d) = data {
            member(&mut out, b"\"data\":");
            out.extend_from_slice(d);
        }
        if let Some(k) = &self.key {
            member(&mut out, b"\"key\":");
            serde_json::to_writer(&mut out, k).ok()?;
        }
        member(&mut out, b"\"type\":");
        serde_json::to_writer(&mut out, kind).ok()?;
        member(&mut out, b"\"v\":");
        out.extend_from_slice(self.v.to_string().as_bytes());
        out.push(b'}');
        settle_mandates::jcs::is_canonical(&out).then_some(out)
    }

    /// Parses stored bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, serde_json::Error> {
        /// The envelope's members, the event's data left unparsed: what the derived
        /// `Deserialize` reads, without buffering the whole envelope first (as
        /// `#[serde(flatten)]` does).
        #[derive(Deserialize)]
        struct Parts<'a> {
            v: u32,
            at: DateTime<Utc>,
            by: String,
            #[serde(default)]
            key: Option<String>,
            #[serde(default)]
            cause: Option<u64>,
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(default, borrow)]
            data: Option<&'a serde_json::value::RawValue>,
        }
        // A JSON object, as the derived reading requires (a struct would also take an
        // array of its fields in order).
        if b.trim_ascii_start().first() != Some(&b'{') {
            return Err(serde::de::Error::custom("an event envelope must be a JSON object"));
        }
        let p: Parts<'_> = serde_json::from_slice(b)?;
        // The event as its own derived `Deserialize` reads it fastest: tag, then data.
        let mut tagged = Vec::with_capacity(p.kind.len() + p.data.map_or(0, |d| d.get().len()) + 20);
        tagged.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut tagged, &p.kind)?;
        if let Some(d) = p.data {
            tagged.extend_from_slice(b",\"data\":");
            tagged.extend_from_slice(d.get().as_bytes());
        }
        tagged.push(b'}');
        let event = serde_json::from_slice(&tagged)?;
        Ok(Self { v: p.v, at: p.at, by: p.by, key: p.key, cause: p.cause, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConversionOutcomeKind, CustomerKey, LeadOutcomeKind};
    use settle_mandates::money::Amount;

    /// The kinds a conversion and its settlement write take the direct path to their
    /// canonical bytes (no JSON tree), which gives the reference bytes, and they read
    /// back as the derived `Deserialize` reads them.
    #[test]
    fn hot_kinds_are_written_canonical_without_sorting() {
        let usd: settle_mandates::money::Currency = "USD".parse().unwrap();
        let amount = Amount::from_minor(12_345, usd).unwrap();
        let at: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let s = |x: &str| x.to_owned();
        let events = [
            Event::LeadRegistered {
                lead: s("l1"),
                program: s("growth"),
                customer: s("acme.example"),
                customer_key: Some(CustomerKey::CURRENT),
                partner: s("p1"),
            },
            Event::LeadRegistered {
                lead: s("l1"),
                program: s("growth"),
                customer: s("Bücher.example"),
                customer_key: None,
                partner: s("p1"),
            },
            Event::LeadHandedOff { lead: s("l1"), from: s("p1"), to: s("p2") },
            Event::ConversionRecorded {
                conversion: s("c1"),
                lead: s("l1"),
                revenue: amount,
                occurred_at: at,
                subscription_month: Some(2),
                fx: None,
            },
            Event::LeadOutcome {
                lead: s("l1"),
                outcome: LeadOutcomeKind::Owner,
                owner: None,
                chain: vec![s("p1"), s("p2")],
            },
            Event::ConversionOutcome {
                conversion: s("c1"),
                outcome: ConversionOutcomeKind::Settled,
                reason: None,
                pool: amount,
                rule_version: Some(1),
            },
            Event::MandateIssued { mandate_id: s("md_7_0"), partner: s("p1"), amount, mandate: s("eyJ.eyJ.sig") },
            Event::ClawbackIssued {
                mandate_id: s("cb_9_0"),
                reverses: s("md_7_0"),
                partner: s("p1"),
                amount,
                offset: amount,
                mandate: s("eyJ.eyJ.sig"),
            },
            Event::MandatePaid {
                mandate_id: s("md_7_0"),
                settlement: s("st1"),
                partner: s("p1"),
                rail: s("book"),
                confirmation_id: s("bk-1"),
            },
            Event::HoldsAdvanced { to: at },
        ];
        for (i, event) in events.into_iter().enumerate() {
            let (key, cause) = if i % 2 == 0 { (Some(s("k-\"é\"")), None) } else { (None, Some(7)) };
            let e = Envelope { v: 1, at, by: s("vendor:admin"), key, cause, event };
            let reference = serde_json_canonicalizer::to_vec(&serde_json::to_value(&e).unwrap()).unwrap();
            assert_eq!(e.sorted_bytes().as_deref(), Some(&reference[..]), "{}", e.event.kind());
            assert_eq!(e.to_bytes(), reference);
            assert_eq!(Envelope::from_bytes(&reference).unwrap(), e, "{}", e.event.kind());
            assert_eq!(serde_json::from_slice::<Envelope>(&reference).unwrap(), e);
        }
        // A kind with no data, and refusals as the derived reading refuses them.
        let unit = br#"{"at":"2026-03-01T12:00:00Z","by":"engine","type":"no_such_kind","v":1}"#;
        assert!(Envelope::from_bytes(unit).is_err());
        assert!(Envelope::from_bytes(br#"{"at":"2026-03-01T12:00:00Z","by":"engine","v":1}"#).is_err());
        let array = br#"[1,"2026-03-01T12:00:00Z","engine",null,null,"holds_advanced",{"to":"2026-03-01T12:00:00Z"}]"#;
        assert!(serde_json::from_slice::<Envelope>(array).is_err());
        assert!(Envelope::from_bytes(array).is_err());
    }
}
