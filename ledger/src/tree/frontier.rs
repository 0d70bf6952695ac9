//! The right edge of the tree, which grows it one leaf at a time (the writer, recovery
//! and the verification pass all build the tree through it).

use settle_mandates::merkle::{self, Hash};

/// The right edge of the tree: complete subtrees by decreasing height.
#[derive(Debug, Clone, Default)]
pub(crate) struct Frontier {
    pub(crate) nodes: Vec<(u32, Hash)>,
    pub(crate) size: u64,
}

impl Frontier {
    /// Adds a leaf; returns the nodes completed (level ≥ 1) to store, with their index.
    pub(crate) fn push(&mut self, leaf: Hash, mut out: impl FnMut(u32, u64, Hash)) {
        let index = self.size;
        out(0, index, leaf);
        self.nodes.push((0, leaf));
        self.size += 1;
        // Bounded: each turn merges two nodes into one, and there are at most 64 levels.
        while self.nodes.len() >= 2 {
            let (lr, r) = self.nodes[self.nodes.len() - 1];
            let (ll, l) = self.nodes[self.nodes.len() - 2];
            if ll != lr {
                break;
            }
            self.nodes.truncate(self.nodes.len() - 2);
            let h = merkle::node_hash(&l, &r);
            let level = ll + 1;
            out(level, index >> level, h);
            self.nodes.push((level, h));
        }
    }

    /// The root of the tree of `size` leaves.
    pub(crate) fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut r)) = it.next() else { return merkle::empty_root() };
        for (_, l) in it {
            r = merkle::node_hash(l, &r);
        }
        r
    }
}
