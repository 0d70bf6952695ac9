//! Where the tree's nodes are stored: tiles below [`TILE_HEIGHT`] (which slot of which
//! tile holds a node, and the tile being filled), upper nodes by [`upper_key`].

use settle_mandates::merkle::Hash;

/// Height of a tile: the tree's lower levels are stored as tiles of 2^TILE_HEIGHT = 256
/// leaves (in the manner of C2SP tlog-tiles), written once, when complete, as one value
/// holding every node of the tile below its root. Appending costs one write per 256
/// records instead of one per node, and the lower part of an inclusion proof is one
/// read. Nodes from this height up (one per 128 records on average, about 2.5 MB for ten
/// million) are stored one by one and all kept in memory.
pub const TILE_HEIGHT: u32 = 8;
/// Leaves of a tile.
pub(crate) const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Nodes a tile stores: its levels 0 to TILE_HEIGHT − 1, lowest first (256 + 128 + … + 2);
/// its root is the upper node above it.
pub(crate) const TILE_NODES: usize = 2 * (1 << TILE_HEIGHT) - 2;

/// Where node (`level` < TILE_HEIGHT, `index`) sits: its tile, and its slot in the tile.
pub(crate) fn tile_slot(level: u32, index: u64) -> (u64, usize) {
    let shift = TILE_HEIGHT - level;
    let offset = TILE_NODES + 2 - (2 << shift);
    (index >> shift, offset + usize::try_from(index & ((1 << shift) - 1)).unwrap_or(usize::MAX))
}

/// Key of an upper node (level ≥ [`TILE_HEIGHT`]) in the `upper` keyspace: level, then
/// index, so opening the ledger loads them all with one scan.
pub(crate) fn upper_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = u8::try_from(level).unwrap_or(u8::MAX);
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The tile being filled: leaves `index`·256 .. + `count`, and every node of it complete.
#[derive(Debug, Clone)]
pub(crate) struct OpenTile {
    pub(crate) index: u64,
    pub(crate) count: u64,
    nodes: Box<[Hash; TILE_NODES]>,
}

impl OpenTile {
    pub(crate) fn new(index: u64) -> Self {
        Self { index, count: 0, nodes: Box::new([[0; 32]; TILE_NODES]) }
    }

    /// Records a node of this tile completed by the frontier (leaves count as level 0).
    pub(crate) fn set(&mut self, level: u32, index: u64, h: Hash) {
        let (_, slot) = tile_slot(level, index);
        self.nodes[slot] = h;
        if level == 0 {
            self.count += 1;
        }
    }

    /// Node (`level`, `index`) of this tile, if complete.
    pub(crate) fn node(&self, level: u32, index: u64) -> Option<Hash> {
        let (tile, slot) = tile_slot(level, index);
        let complete = ((index + 1) << level) - (tile << TILE_HEIGHT) <= self.count;
        (tile == self.index && complete).then(|| self.nodes[slot])
    }

    /// The stored value of the tile once complete: every node, lowest level first.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.nodes.concat()
    }
}
