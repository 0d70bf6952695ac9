//! The tree, read: roots and RFC 9162 inclusion and consistency proofs over the durable
//! tree (tiles, the open tile, the upper levels).

use settle_mandates::merkle::{self, Hash, ProofError};

use super::Ledger;
use crate::error::Result;
use crate::tree::TreeSource;

impl Ledger {
    /// Root of the first `size` records.
    pub fn root(&self, size: u64) -> Result<Hash> {
        self.check_size(size)?;
        self.with_tree(|t| merkle::root(t, size))
    }

    /// Inclusion proof of record `index` in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size)?;
        Ok(self.with_tree(|t| merkle::inclusion_proof(t, index, size))??)
    }

    /// Consistency proof between tree sizes `old` and `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_size(new)?;
        Ok(self.with_tree(|t| merkle::consistency_proof(t, old, new))??)
    }

    /// Runs `f` on the durable tree (tiles, the open tile, the upper levels).
    fn with_tree<R>(&self, f: impl FnOnce(&TreeSource<'_>) -> R) -> R {
        let upper = self.inner.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = self.inner.open_tile.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&TreeSource::new(&self.inner.stores.tiles, &upper, &open))
    }

    /// A tree of `size` records must be durable.
    fn check_size(&self, size: u64) -> Result<()> {
        let n = self.size();
        if size > n {
            return Err(ProofError::OutOfRange { index: size, size: n }.into());
        }
        Ok(())
    }
}
