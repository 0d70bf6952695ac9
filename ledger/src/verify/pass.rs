//! One verification pass over a log, whatever it is read from: each record's hash and
//! chain link, the tree grown record by record, every signed checkpoint's root and
//! signature where it stands, and consistency with the checkpoints an auditor held
//! before ([`Known`]).

use std::collections::{HashMap, HashSet};

use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::KeyRing;
use settle_mandates::merkle::{self, Hash, NodeSource};
use sha2::{Digest, Sha256};

use super::{Failure, VerifyReport};
use crate::record::{GENESIS_CHAIN, Record, chain_link};
use crate::tree::Frontier;

/// A checkpoint the auditor held before this audit (from an earlier export, a receipt,
/// `GET /v1/checkpoints/latest`): the log audited must extend it, or it was cut back or
/// rewritten since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Where it came from, for messages (`old.note`, `receipts.jsonl:3`).
    pub source: String,
    /// The signed note.
    pub note: String,
}

/// The nodes of the tree a consistency proof from `m` leaves needs that are complete
/// before the end of the log: the complete subtrees that make up the first `m` leaves,
/// and the right siblings on the path from leaf `m − 1` to the root. The rest (the
/// right edge of the tree at its final size) is the final frontier.
pub(super) fn proof_nodes(m: u64) -> impl Iterator<Item = (u32, u64)> {
    (0..64u32).flat_map(move |level| {
        let mut out = Vec::with_capacity(2);
        if m > 0 {
            if (m >> level) & 1 == 1 {
                out.push((level, (m >> level) - 1));
            }
            let a = (m - 1) >> level;
            if a & 1 == 0 {
                out.push((level, a + 1));
            }
        }
        out
    })
}

/// Nodes captured during a pass, by (level, index).
pub(super) struct Captured<'a>(pub(super) &'a HashMap<(u32, u64), Hash>);

impl NodeSource for Captured<'_> {
    type Error = (u32, u64);
    fn node(&self, level: u32, index: u64) -> Result<Hash, (u32, u64)> {
        self.0.get(&(level, index)).copied().ok_or((level, index))
    }
}

/// The state of a pass: where the chain and the tree stand, the checkpoints not yet
/// reached, and what the checkpoints held before need.
pub(super) struct Pass<'a> {
    ring: &'a KeyRing,
    origin: &'a str,
    chain: Hash,
    pub(super) frontier: Frontier,
    /// Signed notes not yet reached, by size.
    pub(super) checkpoints: std::collections::VecDeque<(u64, String)>,
    pub(super) checked: u64,
    last_cp: u64,
    /// Checkpoints the auditor held before, verified.
    known: Vec<(Known, Checkpoint)>,
    /// The nodes their consistency proofs need, and those captured so far.
    wanted: HashSet<(u32, u64)>,
    nodes: HashMap<(u32, u64), Hash>,
}

impl<'a> Pass<'a> {
    pub(super) fn new(ring: &'a KeyRing, origin: &'a str, mut notes: Vec<(u64, String)>) -> Self {
        notes.sort_by_key(|(s, _)| *s);
        Self {
            ring,
            origin,
            chain: GENESIS_CHAIN,
            frontier: Frontier::default(),
            checkpoints: notes.into(),
            checked: 0,
            last_cp: 0,
            known: Vec::new(),
            wanted: HashSet::new(),
            nodes: HashMap::new(),
        }
    }

    /// Verifies the checkpoints the auditor held (signature, key validity, the log's
    /// origin) and notes which nodes their consistency proofs need.
    pub(super) fn hold(&mut self, known: &[Known]) -> Result<(), Failure> {
        for k in known {
            let (cp, _) = Checkpoint::verify(&k.note, self.ring, Some(self.origin))
                .map_err(|e| Failure { seq: 0, what: format!("the checkpoint you hold from {}: {e}", k.source) })?;
            self.wanted.extend(proof_nodes(cp.size));
            self.known.push((k.clone(), cp));
        }
        Ok(())
    }

    /// Proves the log of `size` leaves with `root` (its latest checkpoint: every record is
    /// covered) consistent with every checkpoint held: RFC 9162 consistency proofs
    /// computed from the nodes captured during the pass and verified.
    fn check_known(&mut self, size: u64, root: &Hash) -> Result<(), Failure> {
        if self.known.is_empty() {
            return Ok(());
        }
        let mut start = 0u64;
        for &(level, h) in &self.frontier.nodes {
            self.nodes.insert((level, start >> level), h);
            start += 1 << level;
        }
        for (k, cp) in &self.known {
            let m = cp.size;
            if m > size {
                return Err(Failure {
                    seq: size,
                    what: format!(
                        "the log was cut back: you hold a checkpoint of {m} records from {} (root {}), this log has only {size}",
                        k.source,
                        hex::encode(cp.root)
                    ),
                });
            }
            let proof = merkle::consistency_proof(&Captured(&self.nodes), m, size)
                .map_err(|(l, i)| Failure {
                    seq: m,
                    what: format!("cannot compute the consistency proof from {m}: node {l}/{i} was not kept"),
                })?
                .map_err(|e| Failure { seq: m, what: format!("consistency proof from {m}: {e}") })?;
            merkle::verify_consistency(m, size, &cp.root, root, &proof).map_err(|e| Failure {
                seq: m,
                what: format!(
                    "the log was rewritten: the checkpoint of {m} records you hold from {} (root {}) is not a prefix \
                     of this log of {size} records (root {}): {e}",
                    k.source,
                    hex::encode(cp.root),
                    hex::encode(root)
                ),
            })?;
        }
        Ok(())
    }

    pub(super) fn check_checkpoints(&mut self) -> Result<(), Failure> {
        let size = self.frontier.size;
        while let Some((cp_size, note)) = self.checkpoints.front() {
            if *cp_size > size {
                break;
            }
            let (cp, _) = Checkpoint::verify(note, self.ring, Some(self.origin))
                .map_err(|e| Failure { seq: size, what: format!("checkpoint: {e}") })?;
            if cp.size < size {
                return Err(Failure { seq: cp.size, what: "checkpoints are not in order of size".into() });
            }
            let root = self.frontier.root();
            if cp.root != root {
                return Err(Failure {
                    seq: size,
                    what: format!(
                        "checkpoint root {} differs from the recomputed root {}",
                        hex::encode(cp.root),
                        hex::encode(root)
                    ),
                });
            }
            self.checked += 1;
            self.last_cp = size;
            self.checkpoints.pop_front();
        }
        Ok(())
    }

    pub(super) fn feed(&mut self, r: &Record) -> Result<(), Failure> {
        let (seq, event, event_hash, chain) = (r.seq, &r.event, &r.event_hash, &r.chain);
        let expected = self.frontier.size;
        if seq != expected {
            return Err(Failure {
                seq: expected,
                what: format!("expected record {expected}, found record {seq} (gap or reordering)"),
            });
        }
        let eh: Hash = Sha256::digest(event).into();
        if &eh != event_hash {
            return Err(Failure {
                seq,
                what: format!("event hash is {}, the event bytes hash to {}", hex::encode(event_hash), hex::encode(eh)),
            });
        }
        let c = chain_link(&self.chain, seq, &eh, &r.kind, r.version);
        if &c != chain {
            return Err(Failure {
                seq,
                what: format!("chain link is {}, expected {}", hex::encode(chain), hex::encode(c)),
            });
        }
        self.chain = c;
        let leaf = merkle::leaf_hash(event);
        if self.wanted.is_empty() {
            self.frontier.push(leaf, |_, _, _| {});
        } else {
            let (wanted, nodes) = (&self.wanted, &mut self.nodes);
            self.frontier.push(leaf, |level, index, h| {
                if wanted.contains(&(level, index)) {
                    nodes.insert((level, index), h);
                }
            });
        }
        self.check_checkpoints()
    }

    pub(super) fn finish(mut self, require_covered: bool) -> Result<VerifyReport, Failure> {
        self.check_checkpoints()?;
        let size = self.frontier.size;
        if let Some((cp_size, _)) = self.checkpoints.pop_front() {
            return Err(Failure {
                seq: size,
                what: format!(
                    "a checkpoint is signed over {cp_size} records, but the log has only {size} (records missing at the end)"
                ),
            });
        }
        if require_covered && self.last_cp != size {
            return Err(Failure {
                seq: self.last_cp,
                what: format!(
                    "{} records after the last signed checkpoint (size {}) are not covered",
                    size - self.last_cp,
                    self.last_cp
                ),
            });
        }
        let root = self.frontier.root();
        if require_covered {
            self.check_known(size, &root)?;
        }
        Ok(VerifyReport { records: size, checkpoints: self.checked, root, uncovered: size - self.last_cp })
    }
}
