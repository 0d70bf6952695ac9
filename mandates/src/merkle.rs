//! RFC 9162 (Certificate Transparency 2.0) Merkle tree hashing, proof generation over
//! any store of complete subtrees, and proof verification.
//!
//! Leaf hash = SHA-256(0x00 ‖ leaf), interior = SHA-256(0x01 ‖ left ‖ right), and a tree
//! of n leaves splits at the largest power of two smaller than n (RFC 9162 §2.1.1).
//! Proof *generation* takes a [`NodeSource`]: anything that can return the hash of a
//! complete, aligned subtree (`level`, `index`) covering leaves
//! `[index·2^level, (index+1)·2^level)`. The ledger answers from its stored nodes; tests
//! answer from a plain list of leaves. Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Bounds how deep a proof may be (a tree of at most 2^63 leaves).
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Index not below the tree size, or sizes out of order.
    #[error("leaf {index} is not in a tree of size {size}")]
    OutOfRange {
        /// Leaf index or first size.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The proof has the wrong number of hashes for the positions.
    #[error("proof has the wrong length for these positions")]
    WrongLength,
    /// The recomputed root differs.
    #[error("recomputed root does not match")]
    RootMismatch,
}

/// Hash of an empty tree: SHA-256 of nothing.
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Leaf hash: SHA-256(0x00 ‖ data).
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 ‖ left ‖ right).
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Root of a list of leaf hashes, straight from the RFC's definition (MTH). O(n); for
/// tests and small trees.
#[must_use]
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = usize::try_from(split(n as u64)).unwrap_or(usize::MAX);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// Something that knows the hashes of complete, aligned subtrees.
pub trait NodeSource {
    /// Error of the underlying store.
    type Error;
    /// Hash of the complete subtree of height `level` at position `index`.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// A [`NodeSource`] over leaf hashes held in memory (for tests and small trees).
impl NodeSource for [Hash] {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        let start = usize::try_from(index << level).unwrap_or(usize::MAX);
        let end = usize::try_from((index + 1) << level).unwrap_or(usize::MAX);
        Ok(root_of(&self[start..end]))
    }
}

/// Hash of leaves `[start, end)`, decomposed into complete subtrees (MTH of that range,
/// where `start` is aligned as in the RFC's recursion).
pub fn range_hash<S: NodeSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return src.node(n.trailing_zeros(), start >> n.trailing_zeros());
    }
    let k = split(n);
    let l = range_hash(src, start, start + k)?;
    let r = range_hash(src, start + k, end)?;
    Ok(node_hash(&l, &r))
}

/// Root of the first `size` leaves.
pub fn root<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 { Ok(empty_root()) } else { range_hash(src, 0, size) }
}

/// Inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162
/// §2.1.3.1), leaf-side first.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if index >= size {
        return Ok(Err(ProofError::OutOfRange { index, size }));
    }
    let mut path = Vec::new();
    let (mut start, mut end, mut m) = (0u64, size, index);
    // Walk down from the root, collecting siblings; reverse at the end.
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            path.push(range_hash(src, start + k, end)?);
            end = start + k;
        } else {
            path.push(range_hash(src, start, start + k)?);
            start += k;
            m -= k;
        }
    }
    path.reverse();
    Ok(Ok(path))
}

/// Consistency proof between the trees of sizes `old` and `new` (RFC 9162 §2.1.4.1).
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if old > new {
        return Ok(Err(ProofError::OutOfRange { index: old, size: new }));
    }
    if old == 0 || old == new {
        return Ok(Ok(Vec::new()));
    }
    let mut path = Vec::new();
    let (mut start, mut end, mut m, mut whole) = (0u64, new, old, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                path.push(range_hash(src, start, end)?);
            }
            break;
        }
        let k = split(n);
        if m <= k {
            path.push(range_hash(src, start + k, end)?);
            end = start + k;
        } else {
            path.push(range_hash(src, start, start + k)?);
            start += k;
            m -= k;
            whole = false;
        }
    }
    path.reverse();
    Ok(Ok(path))
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size` with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(ProofError::WrongLength);
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `old` leaves with `old_root` is a prefix of the tree of
/// `new` leaves with `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange { index: old, size: new });
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(ProofError::WrongLength);
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if old == 0 {
        // The empty tree is a prefix of every tree; its root must be the empty root.
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if *old_root == empty_root() { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn every_inclusion_and_consistency_proof_up_to_80_leaves() {
        let all = leaves(80);
        for n in 1..=80u64 {
            let ls = &all[..n as usize];
            let r = root_of(ls);
            assert_eq!(root(ls, n).unwrap(), r);
            for i in 0..n {
                let p = inclusion_proof(ls, i, n).unwrap().unwrap();
                verify_inclusion(i, n, &ls[i as usize], &p, &r).unwrap();
                if !p.is_empty() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(i, n, &ls[i as usize], &bad, &r).is_err());
                    assert!(verify_inclusion(i, n, &ls[i as usize], &p[1..], &r).is_err());
                }
            }
            for m in 0..=n {
                let old = root_of(&ls[..m as usize]);
                let p = consistency_proof(ls, m, n).unwrap().unwrap();
                verify_consistency(m, n, &old, &r, &p).unwrap();
                if m > 0 && m < n {
                    let wrong = leaf_hash(b"x");
                    assert!(verify_consistency(m, n, &wrong, &r, &p).is_err());
                }
            }
        }
    }

    /// The RFC's first step: a leaf index at or past the tree size fails, even with a path
    /// that the loop alone would lead to the root (one leaf, index 1, no hashes; or the
    /// last leaf's path reused one position further).
    #[test]
    fn an_index_past_the_tree_fails_before_the_path_is_walked() {
        let ls = leaves(6);
        let r1 = root_of(&ls[..1]);
        verify_inclusion(0, 1, &ls[0], &[], &r1).unwrap();
        assert_eq!(verify_inclusion(1, 1, &ls[0], &[], &r1), Err(ProofError::OutOfRange { index: 1, size: 1 }));
        assert_eq!(verify_inclusion(0, 0, &ls[0], &[], &r1), Err(ProofError::OutOfRange { index: 0, size: 0 }));
        let r = root_of(&ls);
        let p = inclusion_proof(ls.as_slice(), 5, 6).unwrap().unwrap();
        verify_inclusion(5, 6, &ls[5], &p, &r).unwrap();
        for i in [6, 7, u64::MAX] {
            assert_eq!(verify_inclusion(i, 6, &ls[5], &p, &r), Err(ProofError::OutOfRange { index: i, size: 6 }));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn proofs_verify_for_random_positions(n in 1u64..400, i in any::<prop::sample::Index>(), m in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let ls = leaves(n);
            let r = root_of(&ls);
            let i = i.index(n as usize) as u64;
            let p = inclusion_proof(ls.as_slice(), i, n).unwrap().unwrap();
            prop_assert!(verify_inclusion(i, n, &ls[i as usize], &p, &r).is_ok());
            if !p.is_empty() {
                let mut bad = p.clone();
                let j = flip.index(bad.len());
                bad[j][usize::from(bit) % 32] ^= 1 << bit;
                prop_assert!(verify_inclusion(i, n, &ls[i as usize], &bad, &r).is_err());
            }
            let m = m.index(n as usize + 1) as u64;
            let old = root_of(&ls[..m as usize]);
            let c = consistency_proof(ls.as_slice(), m, n).unwrap().unwrap();
            prop_assert!(verify_consistency(m, n, &old, &r, &c).is_ok());
            if !c.is_empty() {
                let mut bad = c.clone();
                let j = flip.index(bad.len());
                bad[j][0] ^= 1 << bit;
                prop_assert!(verify_consistency(m, n, &old, &r, &bad).is_err());
            }
        }
    }
}
