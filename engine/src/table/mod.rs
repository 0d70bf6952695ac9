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
//!
//! One home each: the conversions table (`conversions`), the leads table and its owners
//! of customers (`leads`), the packed form both are kept in (`pack`).

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

mod conversions;
mod leads;
mod pack;

pub use conversions::Conversions;
pub use leads::Leads;

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
