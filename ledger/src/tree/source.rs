//! The tree as stored, read as a [`NodeSource`]: tiles in the store, the open tile and the
//! upper levels in memory.

use std::collections::HashMap;

use settle_mandates::merkle::{Hash, NodeSource};

use super::tile::{OpenTile, TILE_HEIGHT, TILE_NODES, tile_slot};
use crate::backend::Bytes;
use crate::error::{LedgerError, Result};
use crate::store::Ks;

/// The tree as stored: tiles in the store (the last one read is kept), the open tile and the
/// upper levels in memory.
pub(crate) struct TreeSource<'a> {
    tiles: &'a Ks,
    upper: &'a HashMap<(u32, u64), Hash>,
    open: &'a OpenTile,
    last_tile: std::cell::RefCell<Option<(u64, Bytes)>>,
}

impl<'a> TreeSource<'a> {
    pub(crate) fn new(tiles: &'a Ks, upper: &'a HashMap<(u32, u64), Hash>, open: &'a OpenTile) -> Self {
        Self { tiles, upper, open, last_tile: std::cell::RefCell::new(None) }
    }

    fn missing(level: u32, index: u64, what: &str) -> LedgerError {
        LedgerError::Inconsistent { seq: index << level, what: format!("Merkle node ({level}, {index}) {what}") }
    }
}

impl NodeSource for TreeSource<'_> {
    type Error = LedgerError;
    fn node(&self, level: u32, index: u64) -> Result<Hash> {
        if level >= TILE_HEIGHT {
            return self.upper.get(&(level, index)).copied().ok_or_else(|| Self::missing(level, index, "is missing"));
        }
        if let Some(h) = self.open.node(level, index) {
            return Ok(h);
        }
        let (tile, slot) = tile_slot(level, index);
        let mut last = self.last_tile.borrow_mut();
        if last.as_ref().is_none_or(|(t, _)| *t != tile) {
            let v = self.tiles.get(tile.to_be_bytes())?.ok_or_else(|| Self::missing(level, index, "is missing"))?;
            if v.len() != TILE_NODES * 32 {
                return Err(Self::missing(level, index, "is in a malformed tile"));
            }
            *last = Some((tile, v));
        }
        let v = last.as_ref().map(|(_, v)| v).ok_or_else(|| Self::missing(level, index, "is missing"))?;
        v.get(slot * 32..slot * 32 + 32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Self::missing(level, index, "is in a malformed tile"))
    }
}
