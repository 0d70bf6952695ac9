//! The state's tables that grow with history, packed: conversions and leads.
//!
//! Every conversion ever recorded stays in the state for its life (a refund can claw back
//! any of them), and so does every lead (a later conversion or duplicate may name it), so
//! these tables grow with history: as structs, with their hops and chains, about 570
//! bytes a settled conversion and its half of a lead. Here each is kept as a few dozen
//! bytes of varints and strings and decoded when the engine reads it. Conversions are
//! keyed by the sequence of their fact; the engine adds them in log order, so they are
//! appended to fixed-size chunks (no reallocation of the whole table as it grows) and
//! found by binary search.
//!
//! The look-ups by name (a conversion by its id, a lead by its id, the lead that owns a
//! customer) are hash tables of positions in these tables, four bytes an entry: the key
//! is read from the packed bytes at the position, never stored twice. A string-keyed
//! map would hold each key again, with its node's overhead: about 170 bytes a
//! conversion more in all (docs/performance.md).
//!
//! The encoding never leaves the process: the state's JSON form (saved projections) is
//! the map of key → value it always was, with the owners of customers beside the leads.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use settle_mandates::money::{Amount, Currency};

use chrono::{DateTime, Utc};
use compact_str::CompactString;

use crate::customer;
use crate::state::{Conversion, HeldDeal, Hop, HopStatus, Lead};

/// Conversions per chunk.
const CHUNK: usize = 16_384;

/// The hash of a look-up key. Fixed keys: a table's layout never depends on the run
/// (equal keys are compared in full, so a collision costs a comparison, never a wrong
/// answer).
fn hash_of(key: impl Hash) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// A position in a table, as its look-ups store it.
fn position_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or_else(|_| panic!("a packed table holds at most 2^32 entries"))
}

/// A conversion as stored: the sequence of its fact and its packed bytes.
type Entry = (u64, Box<[u8]>);

/// Conversions by the sequence of their fact, ascending, with a look-up by id.
#[derive(Clone, Default)]
pub struct Conversions {
    chunks: Vec<Vec<Entry>>,
    len: usize,
    /// The position (in log order) of every conversion, by the hash of its id.
    ids: HashTable<u32>,
}

/// The packed conversion at position `i` (log order).
fn nth(chunks: &[Vec<Entry>], i: u32) -> &Entry {
    let i = i as usize;
    &chunks[i / CHUNK][i % CHUNK]
}

impl PartialEq for Conversions {
    fn eq(&self, other: &Self) -> bool {
        // The id look-up follows from the conversions.
        self.len == other.len && self.chunks == other.chunks
    }
}

impl Eq for Conversions {}

impl Conversions {
    /// How many.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// None yet?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn position(&self, seq: u64) -> Option<(usize, usize)> {
        // The last chunk whose first key is ≤ seq.
        let c = self.chunks.partition_point(|ch| ch.first().is_some_and(|(k, _)| *k <= seq)).checked_sub(1)?;
        let i = self.chunks[c].binary_search_by_key(&seq, |(k, _)| *k).ok()?;
        Some((c, i))
    }

    /// The conversion recorded at `seq`.
    #[must_use]
    pub fn get(&self, seq: u64) -> Option<Conversion> {
        self.position(seq).map(|(c, i)| decode(&self.chunks[c][i].1))
    }

    /// The sequence of the fact that recorded conversion `id`.
    #[must_use]
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        let chunks = &self.chunks;
        self.ids.find(hash_of(id), |&i| Reader(&nth(chunks, i).1).s() == id).map(|&i| nth(chunks, i).0)
    }

    /// Records `c` at `seq`: replaces the conversion there, or adds one after the last.
    ///
    /// # Panics
    /// If `seq` is new and not after every sequence already here (the engine records
    /// conversions in log order), or names a conversion id already recorded; if a
    /// replacement changes the id.
    pub fn insert(&mut self, seq: u64, c: &Conversion) {
        let bytes = encode(c);
        if let Some((ch, i)) = self.position(seq) {
            let slot = &mut self.chunks[ch][i].1;
            assert_eq!(Reader(slot).s(), c.id.as_str(), "the conversion at {seq} keeps its id");
            *slot = bytes;
            return;
        }
        let last = self.chunks.last().and_then(|ch| ch.last()).map(|(k, _)| *k);
        assert!(last.is_none_or(|l| l < seq), "conversion at {seq} is out of log order (last {last:?})");
        assert!(self.seq_of(&c.id).is_none(), "conversion '{}' is already recorded", c.id);
        if self.chunks.last().is_none_or(|ch| ch.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(ch) = self.chunks.last_mut() {
            ch.push((seq, bytes));
        }
        let chunks = &self.chunks;
        self.ids
            .insert_unique(hash_of(c.id.as_str()), position_u32(self.len), |&i| hash_of(Reader(&nth(chunks, i).1).s()));
        self.len += 1;
    }

    /// Changes the conversion at `seq` with `f`; `None` if there is none.
    ///
    /// # Panics
    /// If `f` changes the conversion's id.
    pub fn update<R>(&mut self, seq: u64, f: impl FnOnce(&mut Conversion) -> R) -> Option<R> {
        let (ch, i) = self.position(seq)?;
        let slot = &mut self.chunks[ch][i].1;
        let mut c = decode(slot);
        let r = f(&mut c);
        assert_eq!(Reader(slot).s(), c.id.as_str(), "the conversion at {seq} keeps its id");
        *slot = encode(&c);
        Some(r)
    }

    /// Every conversion with its sequence, in log order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Conversion)> + '_ {
        self.iter_from(0)
    }

    /// The conversions recorded at `from` or later, with their sequences, in log order.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, Conversion)> + '_ {
        self.entries_from(from).map(|(k, b)| (*k, decode(b)))
    }

    /// The packed entries at `from` or later, in log order.
    fn entries_from(&self, from: u64) -> impl Iterator<Item = &Entry> + '_ {
        let c = self.chunks.partition_point(|ch| ch.last().is_some_and(|(k, _)| *k < from));
        let skip = self.chunks.get(c).map_or(0, |ch| ch.partition_point(|(k, _)| *k < from));
        self.chunks[c..].iter().flatten().skip(skip)
    }

    /// Every conversion, in log order.
    pub fn values(&self) -> impl Iterator<Item = Conversion> + '_ {
        self.iter().map(|(_, c)| c)
    }

    /// From `from` on, in log order: (sequence, hop) of every conversion one of whose hops
    /// pays `partner`, the position of that hop's mandate among the conversion's mandates
    /// (`None`: a hop owed nothing has none; see [`crate::state::mandate_seq`]), and
    /// whether the conversion was released from a hold (its mandates then belong to the
    /// release's fact). Reads only the hops' payees and statuses, decoding nothing else: a
    /// partner's listing scans the table.
    pub fn hops_of<'a>(
        &'a self,
        from: u64,
        partner: &'a str,
    ) -> impl Iterator<Item = (u64, usize, Option<usize>, bool)> + 'a {
        self.entries_from(from).filter_map(move |(k, b)| {
            let (hop, released) = hop_of(b, partner);
            hop.map(|(h, position)| (*k, h, position, released))
        })
    }
}

impl std::fmt::Debug for Conversions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Conversions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Conversions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<u64, Conversion>::deserialize(d)?;
        let mut t = Self::default();
        for (k, c) in &m {
            if t.seq_of(&c.id).is_some() {
                return Err(serde::de::Error::custom(format!("conversion '{}' is saved twice", c.id)));
            }
            t.insert(*k, c);
        }
        Ok(t)
    }
}

/// Leads, found by id, and the lead that owns each customer of a program.
#[derive(Clone, Default)]
pub struct Leads {
    /// Packed leads (each starts with its id) in the order they were added.
    packed: Vec<Box<[u8]>>,
    /// Positions in `packed` by the hash of the lead's id.
    ids: HashTable<u32>,
    /// Positions in `packed` of the owning leads, by the hash of (program, the v2 form of
    /// the recorded customer key, [`customer::fold`]): a key recorded under one
    /// normalisation is found by the exact key ([`Leads::owner`]) and by its v2 form
    /// ([`Leads::owners_folded`]). Keys of one v2 form may be several (v1 recorded
    /// `bücher.example` and `bÜcher.example` apart): each is an entry of its own.
    owners: HashTable<u32>,
}

/// The hash an owner is found by: its program and the v2 form of its customer key.
fn owner_hash(program: &str, customer: &str) -> u64 {
    hash_of((program, &*customer::fold(customer)))
}

/// The id, program and customer at the start of a packed lead.
fn lead_keys(b: &[u8]) -> (&str, &str, &str) {
    let mut r = Reader(b);
    (r.s(), r.s(), r.s())
}

impl Leads {
    /// How many.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// None yet?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    fn find(&self, id: &str) -> Option<u32> {
        let packed = &self.packed;
        self.ids.find(hash_of(id), |&i| lead_keys(&packed[i as usize]).0 == id).copied()
    }

    /// The lead `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<Lead> {
        self.find(id).map(|i| decode_lead(&self.packed[i as usize]))
    }

    /// Whether lead `id` exists.
    #[must_use]
    pub fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// Records the new lead `id`.
    ///
    /// # Panics
    /// If lead `id` exists (the engine refuses a second registration first).
    pub fn insert(&mut self, id: &str, l: &Lead) {
        assert!(self.find(id).is_none(), "lead '{id}' already exists");
        let at = position_u32(self.packed.len());
        self.packed.push(encode_lead(id, l));
        let packed = &self.packed;
        self.ids.insert_unique(hash_of(id), at, |&i| hash_of(lead_keys(&packed[i as usize]).0));
    }

    /// Changes lead `id` with `f`; `None` if there is none.
    ///
    /// # Panics
    /// If `f` changes the lead's program or customer (its owner look-up holds them).
    pub fn update<R>(&mut self, id: &str, f: impl FnOnce(&mut Lead) -> R) -> Option<R> {
        let i = self.find(id)? as usize;
        let mut l = decode_lead(&self.packed[i]);
        let r = f(&mut l);
        let (_, program, customer) = lead_keys(&self.packed[i]);
        assert!(program == l.program && customer == l.customer, "lead '{id}' keeps its program and customer");
        self.packed[i] = encode_lead(id, &l);
        Some(r)
    }

    /// The lead that owns `customer` in `program`, with its id: the recorded key equal to
    /// `customer`, byte for byte (how a v1 registration finds its owner).
    #[must_use]
    pub fn owner(&self, program: &str, customer: &str) -> Option<(CompactString, Lead)> {
        let packed = &self.packed;
        let i = *self.owners.find(owner_hash(program, customer), |&i| {
            let (_, p, c) = lead_keys(&packed[i as usize]);
            p == program && c == customer
        })?;
        let b = &packed[i as usize];
        Some((lead_keys(b).0.into(), decode_lead(b)))
    }

    /// The leads that own a customer key in `program` whose v2 form ([`customer::fold`])
    /// is `folded` (itself a v2 key), with their ids, earliest registration first (equal
    /// times: by id): how a v2 registration finds its owner, among those recorded under
    /// v1 too.
    #[must_use]
    pub fn owners_folded(&self, program: &str, folded: &str) -> Vec<(CompactString, Lead)> {
        let packed = &self.packed;
        let mut found: Vec<(CompactString, Lead)> = (self.owners.iter_hash(hash_of((program, folded))))
            .map(|&i| &packed[i as usize])
            .filter(|b| {
                let (_, p, c) = lead_keys(b);
                p == program && customer::fold(c) == folded
            })
            .map(|b| (lead_keys(b).0.into(), decode_lead(b)))
            .collect();
        found.sort_unstable_by(|(a, l), (b, m)| (l.registered_at, a).cmp(&(m.registered_at, b)));
        found
    }

    /// Makes lead `id` the owner of its customer in its program (in place of any other).
    /// Returns false if there is no lead `id`.
    pub fn set_owner(&mut self, id: &str) -> bool {
        let Some(at) = self.find(id) else { return false };
        let packed = &self.packed;
        let (_, program, customer) = lead_keys(&packed[at as usize]);
        let h = owner_hash(program, customer);
        let same = |&i: &u32| {
            let (_, p, c) = lead_keys(&packed[i as usize]);
            p == program && c == customer
        };
        match self.owners.find_mut(h, same) {
            Some(slot) => *slot = at,
            None => {
                self.owners.insert_unique(h, at, |&i| {
                    let (_, p, c) = lead_keys(&packed[i as usize]);
                    owner_hash(p, c)
                });
            }
        }
        true
    }

    /// Every lead with its id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Lead)> + '_ {
        let mut v: Vec<(&str, &[u8])> = self.packed.iter().map(|b| (lead_keys(b).0, &b[..])).collect();
        v.sort_unstable_by_key(|(id, _)| *id);
        v.into_iter().map(|(id, b)| (id, decode_lead(b)))
    }

    /// `program \u{1f} customer` → owning lead id, in key order.
    fn owner_map(&self) -> BTreeMap<String, &str> {
        self.owners
            .iter()
            .map(|&i| {
                let (id, p, c) = lead_keys(&self.packed[i as usize]);
                (format!("{p}\u{1f}{c}"), id)
            })
            .collect()
    }
}

impl PartialEq for Leads {
    fn eq(&self, other: &Self) -> bool {
        // The same leads and owners, whatever the order they were added in.
        self.len() == other.len()
            && self.packed.iter().all(|b| other.find(lead_keys(b).0).is_some_and(|j| other.packed[j as usize] == *b))
            && self.owner_map() == other.owner_map()
    }
}

impl Eq for Leads {}

impl std::fmt::Debug for Leads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leads").field("by_id", &LeadMap(self)).field("owners", &self.owner_map()).finish()
    }
}

/// The leads as a map id → lead, in id order.
struct LeadMap<'a>(&'a Leads);

impl std::fmt::Debug for LeadMap<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Serialize for LeadMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

/// The JSON form: `{"by_id": {id: lead}, "owners": {"program\u001fcustomer": id}}`.
#[derive(Serialize)]
struct LeadsOut<'a> {
    by_id: LeadMap<'a>,
    owners: BTreeMap<String, &'a str>,
}

#[derive(Deserialize)]
struct LeadsIn {
    by_id: BTreeMap<String, Lead>,
    owners: BTreeMap<String, String>,
}

impl Serialize for Leads {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LeadsOut { by_id: LeadMap(self), owners: self.owner_map() }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Leads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let saved = LeadsIn::deserialize(d)?;
        let mut t = Self::default();
        for (id, l) in &saved.by_id {
            t.insert(id, l);
        }
        for (key, id) in &saved.owners {
            let owns = t.get(id).is_some_and(|l| *key == format!("{}\u{1f}{}", l.program, l.customer));
            if !owns {
                return Err(D::Error::custom(format!("saved owner '{id}' of '{key}' is not a lead of that customer")));
            }
            t.set_owner(id);
        }
        Ok(t)
    }
}

// The packed form: unsigned LEB128 varints, signed ones zigzagged, strings as length and
// UTF-8 bytes, a currency as its three letters.

fn put_u(out: &mut Vec<u8>, mut v: u64) {
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

fn encode(c: &Conversion) -> Box<[u8]> {
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
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().unwrap_or_else(|| unreachable!("packed conversion ends early"));
        self.0 = rest;
        *b
    }

    fn u(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
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

    fn s(&mut self) -> &'a str {
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
fn hop_of(b: &[u8], partner: &str) -> (Option<(usize, Option<usize>)>, bool) {
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

fn decode(b: &[u8]) -> Conversion {
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

fn encode_lead(id: &str, l: &Lead) -> Box<[u8]> {
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

fn decode_lead(b: &[u8]) -> Lead {
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(m: i64) -> Amount {
        Amount::from_minor(m, "USD".parse().unwrap()).unwrap()
    }

    fn conversion(amounts: &[i64], released: Option<u64>, held: bool, refunded: i64) -> Conversion {
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

    #[test]
    fn a_table_finds_replaces_and_updates_across_chunks() {
        let mut t = Conversions::default();
        let n = u64::try_from(CHUNK).unwrap() * 2 + 5;
        let named = |s: u64, c: Conversion| Conversion { id: format!("deal-{s}").into(), ..c };
        for s in 0..n {
            t.insert(s * 3 + 1, &named(s, conversion(&[i64::try_from(s).unwrap()], None, false, 0)));
        }
        assert_eq!(t.len(), usize::try_from(n).unwrap());
        assert!(t.get(0).is_none() && t.get(2).is_none() && t.get(n * 3 + 1).is_none());
        let probe = u64::try_from(CHUNK).unwrap() + 3;
        assert_eq!(t.get(probe * 3 + 1).unwrap().hops[0].amount, i64::try_from(probe).unwrap());
        // Every conversion is found by its id, across chunks; an unknown id is not.
        for s in [0, 1, probe, n - 1] {
            assert_eq!(t.seq_of(&format!("deal-{s}")), Some(s * 3 + 1), "deal-{s}");
        }
        assert_eq!(t.seq_of(&format!("deal-{n}")), None);
        assert_eq!(t.seq_of("deal-"), None);
        t.insert(4, &named(1, conversion(&[-9, 9], Some(77), true, 5)));
        assert_eq!(t.seq_of("deal-1"), Some(4), "a replacement keeps the id's look-up");
        assert_eq!(t.get(4).unwrap().released_at, Some(77));
        assert_eq!(t.len(), usize::try_from(n).unwrap(), "a replacement adds nothing");
        assert_eq!(t.update(4, |c| std::mem::replace(&mut c.refunded, 6)), Some(5));
        assert_eq!(t.get(4).unwrap().refunded, 6);
        assert!(t.update(5, |_| ()).is_none());
        let seqs: Vec<u64> = t.iter().map(|(s, _)| s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs.len() == t.len());
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Conversions>(&json).unwrap(), t);
        // Six hops: hop 4 is owed nothing (no mandate), so hop 5's mandate is the fifth.
        t.insert(n * 3 + 10, &named(n + 5, conversion(&[1, 2, 3, 4, 0, 6], None, false, 0)));
        assert_eq!(t.hops_of(n * 3 + 10, "partner-4").collect::<Vec<_>>(), vec![(n * 3 + 10, 4, None, false)]);
        assert_eq!(t.hops_of(n * 3 + 10, "partner-5").collect::<Vec<_>>(), vec![(n * 3 + 10, 5, Some(4), false)]);
        // A partner's hops, read without decoding, agree with decoding everything.
        for (from, who) in [(0, "partner-1"), (probe * 3, "partner-0"), (0, "nobody"), (0, "partner-5")] {
            let fast: Vec<_> = t.hops_of(from, who).collect();
            let slow: Vec<_> = t
                .iter_from(from)
                .filter_map(|(s, c)| {
                    let i = c.hops.iter().position(|h| h.partner == who)?;
                    let position = (c.hops[i].status != HopStatus::Nothing)
                        .then(|| c.hops[..i].iter().filter(|h| h.status != HopStatus::Nothing).count());
                    Some((s, i, position, c.released_at.is_some()))
                })
                .collect();
            assert_eq!(fast, slow, "{who} from {from}");
        }
        assert_eq!(
            t.hops_of(0, "partner-1").collect::<Vec<_>>(),
            vec![(4, 1, Some(1), true), (n * 3 + 10, 1, Some(1), false)]
        );
    }

    proptest! {
        #[test]
        fn a_lead_round_trips(
            chain in prop::collection::vec("[a-z0-9ü-]{1,40}", 0..6),
            secs in -50_000_000_000i64..50_000_000_000,
            nanos in 0u32..1_000_000_000,
            dup in prop::option::of("[a-z0-9-]{1,30}"),
        ) {
            let l = Lead {
                program: "growth".into(),
                customer: "customer-12345.example".into(),
                chain: chain.into_iter().map(CompactString::from).collect(),
                registered_at: DateTime::from_timestamp(secs, nanos).unwrap(),
                duplicate_of: dup.map(CompactString::from),
            };
            let mut t = Leads::default();
            t.insert("lead-1", &l);
            prop_assert_eq!(t.get("lead-1"), Some(l.clone()));
            t.update("lead-1", |x| x.chain.push("closer".into()));
            let grown = t.get("lead-1").unwrap();
            prop_assert_eq!(grown.chain.last().map(CompactString::as_str), Some("closer"));
            let json = serde_json::to_string(&t).unwrap();
            prop_assert_eq!(serde_json::from_str::<Leads>(&json).unwrap(), t);
        }
    }

    #[test]
    #[should_panic(expected = "out of log order")]
    fn a_new_conversion_before_the_last_is_refused() {
        let mut t = Conversions::default();
        t.insert(10, &conversion(&[1], None, false, 0));
        t.insert(9, &conversion(&[1], None, false, 0));
    }

    #[test]
    #[should_panic(expected = "already recorded")]
    fn a_second_conversion_with_an_id_is_refused() {
        let mut t = Conversions::default();
        t.insert(1, &conversion(&[1], None, false, 0));
        t.insert(2, &conversion(&[2], None, false, 0));
    }

    fn lead(program: &str, customer: &str, at: i64) -> Lead {
        Lead {
            program: program.into(),
            customer: customer.into(),
            chain: vec!["p1".into()],
            registered_at: DateTime::from_timestamp(at, 0).unwrap(),
            duplicate_of: None,
        }
    }

    proptest! {
        /// The packed leads and their look-ups answer as a plain map of leads and a plain
        /// map of owners do, through growth, chain updates and a JSON round trip.
        #[test]
        fn leads_answer_as_plain_maps(ops in prop::collection::vec((0u8..3, 0u8..4, any::<bool>()), 1..300)) {
            let mut t = Leads::default();
            let mut leads: BTreeMap<String, Lead> = BTreeMap::new();
            let mut owners: BTreeMap<(String, String), String> = BTreeMap::new();
            for (n, (p, c, owns)) in ops.into_iter().enumerate() {
                let (program, customer) = (format!("prog{p}"), format!("customer-{c}.example"));
                let id = format!("lead-{n}");
                let l = lead(&program, &customer, i64::try_from(n).unwrap());
                t.insert(&id, &l);
                leads.insert(id.clone(), l);
                if owns {
                    prop_assert!(t.set_owner(&id));
                    owners.insert((program, customer), id.clone());
                }
                if n % 3 == 0 {
                    t.update(&id, |x| x.chain.push("p2".into()));
                    leads.get_mut(&id).unwrap().chain.push("p2".into());
                }
            }
            let back: Leads = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            prop_assert_eq!(&back, &t);
            for table in [&t, &back] {
                prop_assert_eq!(table.len(), leads.len());
                for (id, l) in &leads {
                    prop_assert_eq!(table.get(id), Some(l.clone()));
                }
                prop_assert!(table.get("lead-x").is_none() && !table.contains_key("lead-x"));
                for p in 0..3 {
                    for c in 0..4 {
                        let key = (format!("prog{p}"), format!("customer-{c}.example"));
                        let want = owners.get(&key).map(|id| (id.clone(), leads[id].clone()));
                        let got = table.owner(&key.0, &key.1).map(|(id, l)| (id.to_string(), l));
                        prop_assert_eq!(got, want);
                    }
                }
                let ids: Vec<&str> = table.iter().map(|(id, _)| id).collect();
                prop_assert_eq!(ids, leads.keys().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_saved_owner_must_own_its_customer() {
        let mut t = Leads::default();
        t.insert("lead-1", &lead("growth", "a.example", 1));
        t.insert("lead-2", &lead("growth", "b.example", 2));
        assert!(t.set_owner("lead-1") && !t.set_owner("lead-3"));
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""owners":{"growth\u001fa.example":"lead-1"}"#), "{json}");
        let forged = json.replace(r#":"lead-1"}"#, r#":"lead-2"}"#);
        let err = serde_json::from_str::<Leads>(&forged).unwrap_err().to_string();
        assert!(err.contains("saved owner 'lead-2'"), "{err}");
    }

    #[test]
    #[should_panic(expected = "keeps its program and customer")]
    fn a_lead_keeps_its_customer() {
        let mut t = Leads::default();
        t.insert("lead-1", &lead("growth", "a.example", 1));
        t.update("lead-1", |l| l.customer = "b.example".into());
    }
}
