//! The packed form of the tables' records: unsigned LEB128 varints, signed ones
//! zigzagged, strings as length and UTF-8 bytes, a currency as its three letters. The
//! bytes never leave the process.

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use settle_mandates::money::{Amount, Currency};

use crate::records::{Conversion, HeldDeal, Hop, HopStatus, Lead};

fn put_u(out: &mut Vec<u8>, mut v: u64) {
    // Bounded: seven bits fewer each time, so at most nine times for a u64.
    while v >= 0x80 {
        out.push(u8::try_from(v & 0x7f).unwrap_or(0) | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).unwrap_or(0));
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, ((v << 1) ^ (v >> 63)).cast_unsigned());
}

fn put_s(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_amount(out: &mut Vec<u8>, a: Amount) {
    put_i(out, a.minor_units());
    out.extend_from_slice(a.currency().code().as_bytes());
}

const STATUS: [HopStatus; 5] =
    [HopStatus::Held, HopStatus::Payable, HopStatus::Batched, HopStatus::Paid, HopStatus::Nothing];

/// The packed bytes of conversion `c`.
pub(super) fn encode(c: &Conversion) -> Box<[u8]> {
    let mut out = Vec::with_capacity(64 + 24 * c.hops.len());
    put_s(&mut out, &c.id);
    put_s(&mut out, &c.program);
    put_u(&mut out, u64::from(c.rule_version));
    put_amount(&mut out, c.revenue);
    put_i(&mut out, c.refunded);
    put_amount(&mut out, c.pool);
    put_u(&mut out, c.hops.len() as u64);
    for h in &c.hops {
        put_s(&mut out, &h.partner);
        put_i(&mut out, h.amount);
        put_i(&mut out, h.clawed);
        out.push(u8::try_from(STATUS.iter().position(|s| *s == h.status).unwrap_or(0)).unwrap_or(0));
        put_i(&mut out, h.payable_at);
    }
    match c.released_at {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            put_u(&mut out, r);
        }
    }
    match &c.held {
        None => out.push(0),
        Some(h) => {
            out.push(1);
            // Held deals are few and rare: their JSON is packed enough.
            put_s(&mut out, &serde_json::to_string(h).unwrap_or_else(|e| unreachable!("a held deal is JSON: {e}")));
        }
    }
    out.into_boxed_slice()
}

/// Reads what [`encode`] wrote; the bytes never come from outside the process.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().unwrap_or_else(|| unreachable!("packed conversion ends early"));
        self.0 = rest;
        *b
    }

    fn u(&mut self) -> u64 {
        let mut v = 0u64;
        // A u64 is at most ten groups of seven bits (what `put_u` writes).
        for shift in (0..64).step_by(7) {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
        }
        unreachable!("packed varint longer than a u64")
    }

    fn i(&mut self) -> i64 {
        let u = self.u();
        (u >> 1).cast_signed() ^ -((u & 1).cast_signed())
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }

    /// The next string.
    pub(super) fn s(&mut self) -> &'a str {
        let n = usize::try_from(self.u()).unwrap_or(usize::MAX);
        std::str::from_utf8(self.bytes(n)).unwrap_or_else(|e| unreachable!("packed string is UTF-8: {e}"))
    }

    fn time(&mut self) -> DateTime<Utc> {
        let secs = self.i();
        let nanos = u32::try_from(self.u()).unwrap_or(0);
        DateTime::from_timestamp(secs, nanos).unwrap_or_else(|| unreachable!("packed time {secs}.{nanos}"))
    }

    fn amount(&mut self) -> Amount {
        let minor = self.i();
        let code = std::str::from_utf8(self.bytes(3)).unwrap_or_default();
        let cur: Currency = code.parse().unwrap_or_else(|_| unreachable!("packed currency {code}"));
        Amount::from_minor(minor, cur).unwrap_or_else(|e| unreachable!("packed amount: {e}"))
    }
}

/// The first hop of packed conversion `b` that pays `partner`, and whether it was released.
/// The first hop paying `partner` and its mandate's position (hops before it that have a
/// mandate), and whether the conversion was released.
pub(super) fn hop_of(b: &[u8], partner: &str) -> (Option<(usize, Option<usize>)>, bool) {
    let mut r = Reader(b);
    let _ = (r.s(), r.s(), r.u());
    let skip_amount = |r: &mut Reader<'_>| {
        r.u();
        r.bytes(3);
    };
    skip_amount(&mut r);
    r.u();
    skip_amount(&mut r);
    let n = usize::try_from(r.u()).unwrap_or(0);
    let nothing = STATUS.iter().position(|s| *s == HopStatus::Nothing);
    let (mut found, mut with_mandates) = (None, 0);
    for i in 0..n {
        let payee = r.s() == partner && found.is_none();
        let _ = (r.u(), r.u());
        let has_mandate = Some(usize::from(r.byte())) != nothing;
        let _ = r.u();
        if payee {
            found = Some((i, has_mandate.then_some(with_mandates)));
        }
        with_mandates += usize::from(has_mandate);
    }
    (found, r.byte() == 1)
}

/// The conversion [`encode`] packed into `b`.
pub(super) fn decode(b: &[u8]) -> Conversion {
    let mut r = Reader(b);
    let id = r.s().into();
    let program = r.s().into();
    let rule_version = u32::try_from(r.u()).unwrap_or(u32::MAX);
    let revenue = r.amount();
    let refunded = r.i();
    let pool = r.amount();
    let n = usize::try_from(r.u()).unwrap_or(0);
    let mut hops = Vec::with_capacity(n);
    for _ in 0..n {
        let partner = r.s().into();
        let amount = r.i();
        let clawed = r.i();
        let status = STATUS[usize::from(r.byte()) % STATUS.len()];
        let payable_at = r.i();
        hops.push(Hop { partner, amount, clawed, status, payable_at });
    }
    let released_at = (r.byte() == 1).then(|| r.u());
    let held = (r.byte() == 1).then(|| {
        let h: HeldDeal = serde_json::from_str(r.s()).unwrap_or_else(|e| unreachable!("packed held deal: {e}"));
        Box::new(h)
    });
    Conversion { id, program, rule_version, revenue, refunded, pool, hops, released_at, held }
}

fn put_time(out: &mut Vec<u8>, t: DateTime<Utc>) {
    put_i(out, t.timestamp());
    put_u(out, u64::from(t.timestamp_subsec_nanos()));
}

/// The packed bytes of lead `id`, `l`: its id, program and customer first.
pub(super) fn encode_lead(id: &str, l: &Lead) -> Box<[u8]> {
    let mut out = Vec::with_capacity(64 + 8 * l.chain.len());
    put_s(&mut out, id);
    put_s(&mut out, &l.program);
    put_s(&mut out, &l.customer);
    put_u(&mut out, l.chain.len() as u64);
    for p in &l.chain {
        put_s(&mut out, p);
    }
    put_time(&mut out, l.registered_at);
    match &l.duplicate_of {
        None => out.push(0),
        Some(o) => {
            out.push(1);
            put_s(&mut out, o);
        }
    }
    out.into_boxed_slice()
}

/// The lead [`encode_lead`] packed into `b`.
pub(super) fn decode_lead(b: &[u8]) -> Lead {
    let mut r = Reader(b);
    let _id = r.s();
    let program = r.s().into();
    let customer = r.s().into();
    let n = usize::try_from(r.u()).unwrap_or(0);
    let chain = (0..n).map(|_| CompactString::from(r.s())).collect();
    let registered_at = r.time();
    let duplicate_of = (r.byte() == 1).then(|| r.s().into());
    Lead { program, customer, chain, registered_at, duplicate_of }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(m: i64) -> Amount {
        Amount::from_minor(m, "USD".parse().unwrap()).unwrap()
    }

    pub(in crate::table) fn conversion(
        amounts: &[i64],
        released: Option<u64>,
        held: bool,
        refunded: i64,
    ) -> Conversion {
        let status = STATUS;
        let hops = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| Hop {
                partner: format!("partner-{i}").into(),
                amount: *a,
                clawed: a / 3,
                status: status[i % status.len()],
                payable_at: -5 + i64::try_from(i).unwrap() * 1_000_000_007,
            })
            .collect();
        let held = held.then(|| {
            Box::new(HeldDeal {
                chain: vec!["a".into(), "b".into()],
                parts: vec![1, -2],
                occurred_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
                revenue: 99,
                reason: "budget \"quoted\" é".into(),
            })
        });
        Conversion {
            id: "deal-ünïcode-and-a-rather-long-identifier".into(),
            program: "growth".into(),
            rule_version: 7,
            revenue: Amount::from_minor(123_456_789, "JPY".parse().unwrap()).unwrap(),
            refunded,
            pool: usd(-42),
            hops,
            released_at: released,
            held,
        }
    }

    proptest! {
        #[test]
        fn packing_round_trips(
            amounts in prop::collection::vec(-1_000_000_000_000_000i64..1_000_000_000_000_000, 0..6),
            released in prop::option::of(any::<u64>()),
            held in any::<bool>(),
            refunded in any::<i64>(),
        ) {
            let c = conversion(&amounts, released, held, refunded);
            prop_assert_eq!(decode(&encode(&c)), c);
        }
    }
}
