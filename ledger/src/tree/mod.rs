//! The log's RFC 9162 Merkle tree as the ledger keeps it: the lower [`TILE_HEIGHT`]
//! levels as tiles of 256 leaves (the tile being filled in memory), the levels above
//! node by node (stored, and all kept in memory), the right edge ([`Frontier`]) that
//! grows it one leaf at a time, and the [`NodeSource`](settle_mandates::merkle::NodeSource)
//! that proofs and roots read it through ([`TreeSource`]).

mod frontier;
mod source;
mod tile;

pub(crate) use frontier::Frontier;
pub(crate) use source::TreeSource;
pub use tile::TILE_HEIGHT;
pub(crate) use tile::{OpenTile, TILE_WIDTH, upper_key};
