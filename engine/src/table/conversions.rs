//! The conversions table: every conversion by the sequence of its fact, in fixed-size
//! chunks, with a look-up by id.

use std::collections::BTreeMap;

use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::pack::{Reader, decode, encode, hop_of};
use super::{hash_of, position_u32};
use crate::records::Conversion;

/// Conversions per chunk.
const CHUNK: usize = 16_384;

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
    /// (`None`: a hop owed nothing has none; see [`crate::ids::mandate_seq`]), and
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::HopStatus;
    use crate::table::pack::tests::conversion;

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
}
