//! The leads table: every lead by id, and the lead that owns each customer of a program
//! (found by the exact recorded key, or by its v2 form).

use std::collections::BTreeMap;

use compact_str::CompactString;
use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::pack::{Reader, decode_lead, encode_lead};
use super::{hash_of, position_u32};
use crate::customer;
use crate::records::Lead;

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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use proptest::prelude::*;

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
