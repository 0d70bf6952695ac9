//! Opening a store: reads the tail of the log, the stored tree, the head and the key
//! index, and checks that they agree ([`recover`]), rebuilding what the ledger keeps in
//! memory (the frontier, the open tile, the upper levels). Disagreement is reported,
//! never repaired.

use std::collections::HashMap;

use settle_mandates::merkle::{self, Hash, NodeSource};

use crate::entry;
use crate::error::{LedgerError, Result};
use crate::record::{GENESIS_CHAIN, Record};
use crate::store::{HEAD, Head, Stores};
use crate::tree::{Frontier, OpenTile, TILE_HEIGHT, TreeSource};

/// What opening the store finds: the log's size and last chain link, and the tree.
pub(crate) struct Recovered {
    pub(crate) size: u64,
    pub(crate) chain: Hash,
    pub(crate) frontier: Frontier,
    pub(crate) upper: HashMap<(u32, u64), Hash>,
    pub(crate) open_tile: OpenTile,
}

fn inconsistent(seq: u64, what: &str) -> LedgerError {
    LedgerError::Inconsistent { seq, what: what.into() }
}

/// Reads the tail of the log, the stored tree and the key index, checking they agree:
/// the records of the tile holding the last record must hash and chain on from the
/// record before them, and the open tile is rebuilt from those after the last complete
/// tile; the last complete tile must end
/// where the upper levels say; nothing of the tree may lie beyond the log; the head
/// written with the last group commit must name the log's size and last link, and the
/// key index the same for its last key; the latest checkpoint's root must be the tree's.
/// Anything else is reported, never repaired. (The whole chain is re-checked by the
/// verification pass, [`verify_log`](crate::verify_log).)
pub(crate) fn recover(s: &Stores) -> Result<Recovered> {
    let upper = load_upper(s)?;
    let Some((k, v)) = s.records.last_key_value()? else { return recover_empty(s, upper) };
    let first = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| inconsistent(0, "bad record key"))?);
    if v.first() == Some(&1) {
        return Err(inconsistent(
            first,
            "the store was written by an earlier settle (record format 1, whose chain links do not cover \
             the type and version); this version cannot open it: export it with that version",
        ));
    }
    let (n, _) = entry::last_link(&v).ok_or_else(|| inconsistent(first, "last record does not decode"))?;
    let seq = first + n - 1;
    let size = seq + 1;
    let rec = s.record(seq)?;
    let tile = size >> TILE_HEIGHT;
    let (chain, open_tile) = recheck_last_tile(s, seq)?;
    check_head(s, size, &chain)?;
    if s.tiles.get(tile.to_be_bytes())?.is_some() || upper.keys().any(|&(l, i)| ((i + 1) << l) > size) {
        return Err(inconsistent(size, "tree has leaves beyond the last record"));
    }
    let src = TreeSource::new(&s.tiles, &upper, &open_tile);
    check_last_complete_tile(&src, &rec)?;
    let nodes = frontier_nodes(&src, size)?;
    check_latest_checkpoint(s, &src, size)?;
    drop(src);
    Ok(Recovered { size, chain: rec.chain, frontier: Frontier { nodes, size }, upper, open_tile })
}

/// A reader's view of a log: its size, the tree's upper nodes and its open tile.
pub(crate) type View = (u64, HashMap<(u32, u64), Hash>, OpenTile);

/// A reader's view of a log another process writes, as of its latest signed checkpoint
/// (`None`: no checkpoint yet): its size, the tree's upper nodes and open tile at that
/// size, the records of the tile holding its last record re-checked from the record
/// before them, and the tree's root at that size checked against the checkpoint's.
/// Everything it reads was committed before the checkpoint was, so it is the same
/// whatever the writer commits meanwhile.
pub(crate) fn view_at_checkpoint(s: &Stores) -> Result<Option<View>> {
    let Some(cp) = s.latest_checkpoint()? else { return Ok(None) };
    let size = cp.checkpoint.size;
    if size == 0 {
        return Ok(Some((0, HashMap::new(), OpenTile::new(0))));
    }
    let upper: HashMap<(u32, u64), Hash> =
        load_upper(s)?.into_iter().filter(|&((l, i), _)| ((i + 1) << l) <= size).collect();
    let (_, open_tile) = recheck_last_tile(s, size - 1)?;
    let src = TreeSource::new(&s.tiles, &upper, &open_tile);
    if merkle::root(&src, size)? != cp.checkpoint.root {
        return Err(inconsistent(size, "the latest checkpoint's root differs from the tree"));
    }
    drop(src);
    Ok(Some((size, upper, open_tile)))
}

/// The stored upper levels of the tree (from [`TILE_HEIGHT`] up).
fn load_upper(s: &Stores) -> Result<HashMap<(u32, u64), Hash>> {
    let mut upper = HashMap::new();
    for g in s.upper.iter() {
        let (k, v) = g?;
        let (Some(&level), Some(ix), Ok(h)) = (k.first(), k.get(1..9), <[u8; 32]>::try_from(v.as_ref())) else {
            return Err(inconsistent(0, "a stored Merkle node is malformed"));
        };
        let index = u64::from_be_bytes(ix.try_into().unwrap_or([0; 8]));
        upper.insert((u32::from(level), index), h);
    }
    Ok(upper)
}

/// A store without records: nothing else may be in it but checkpoints and
/// projections.
fn recover_empty(s: &Stores, upper: HashMap<(u32, u64), Hash>) -> Result<Recovered> {
    if s.tiles.first_key_value()?.is_some()
        || !upper.is_empty()
        || s.keys.first_key_value()?.is_some()
        || s.head.get(HEAD)?.is_some()
    {
        return Err(inconsistent(0, "no records, but the tree, the key index or the head is not empty"));
    }
    Ok(Recovered { size: 0, chain: GENESIS_CHAIN, frontier: Frontier::default(), upper, open_tile: OpenTile::new(0) })
}

/// The chain link of the last record `seq`, and the open tile, from the records after
/// the last complete tile. The records of the tile holding the last record (the open
/// one, or the last complete one when the log ends on a tile boundary) are re-hashed and
/// re-linked from the record before them.
fn recheck_last_tile(s: &Stores, seq: u64) -> Result<(Hash, OpenTile)> {
    let tile = (seq + 1) >> TILE_HEIGHT;
    let mut open_tile = OpenTile::new(tile);
    let mut scratch = Frontier { nodes: Vec::new(), size: tile << TILE_HEIGHT };
    let check_from = (seq >> TILE_HEIGHT) << TILE_HEIGHT;
    let mut chain = match check_from.checked_sub(1) {
        None => GENESIS_CHAIN,
        Some(before) => s.record(before)?.chain,
    };
    for r in s.scan(check_from, seq + 1)? {
        let r = r?;
        chain = r.check_link(&chain).map_err(|what| inconsistent(r.seq, what))?;
        if r.seq >= tile << TILE_HEIGHT {
            scratch.push(merkle::leaf_hash(&r.event), |level, index, h| open_tile.set(level, index, h));
        }
    }
    Ok((chain, open_tile))
}

/// The last complete tile must be the one the upper levels were built on; when the log
/// ends on it, its last leaf must be the last record's, `rec`.
fn check_last_complete_tile(src: &TreeSource<'_>, rec: &Record) -> Result<()> {
    let (seq, size) = (rec.seq, rec.seq + 1);
    let tile = size >> TILE_HEIGHT;
    if tile == 0 {
        return Ok(());
    }
    let below = merkle::node_hash(&src.node(TILE_HEIGHT - 1, 2 * tile - 2)?, &src.node(TILE_HEIGHT - 1, 2 * tile - 1)?);
    if below != src.node(TILE_HEIGHT, tile - 1)? {
        return Err(inconsistent((tile - 1) << TILE_HEIGHT, "the last complete tile differs from the tree above it"));
    }
    if size == tile << TILE_HEIGHT && src.node(0, seq)? != merkle::leaf_hash(&rec.event) {
        return Err(inconsistent(seq, "last record's leaf hash differs from the tree"));
    }
    Ok(())
}

/// The frontier of a tree of `size` leaves: its complete subtrees, largest first.
fn frontier_nodes(src: &TreeSource<'_>, size: u64) -> Result<Vec<(u32, Hash)>> {
    let mut nodes = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1 << level) != 0 {
            nodes.push((level, src.node(level, start >> level)?));
            start += 1 << level;
        }
    }
    Ok(nodes)
}

/// The latest checkpoint must cover no more than the log's `size` records, and its root
/// must be the tree's.
fn check_latest_checkpoint(s: &Stores, src: &TreeSource<'_>, size: u64) -> Result<()> {
    let Some(cp) = s.latest_checkpoint()? else { return Ok(()) };
    if cp.checkpoint.size > size {
        return Err(LedgerError::Inconsistent {
            seq: size,
            what: format!("a checkpoint covers {} records but the log has {size}", cp.checkpoint.size),
        });
    }
    if merkle::root(src, cp.checkpoint.size)? != cp.checkpoint.root {
        return Err(inconsistent(cp.checkpoint.size, "latest checkpoint root differs from the tree"));
    }
    Ok(())
}

/// The head and the key index must agree with a log of `size` records ending in
/// `chain`.
fn check_head(s: &Stores, size: u64, chain: &Hash) -> Result<()> {
    let at = size - 1;
    let inconsistent = |what: &str| LedgerError::Inconsistent { seq: at, what: what.into() };
    let head = s.head.get(HEAD)?.ok_or_else(|| inconsistent("the log's head is missing"))?;
    let head = Head::decode(&head).ok_or_else(|| inconsistent("the log's head does not decode"))?;
    if head.size != size {
        return Err(LedgerError::Inconsistent {
            seq: head.size.min(size),
            what: format!("the head names {} records, the log has {size}", head.size),
        });
    }
    if head.chain != *chain {
        return Err(inconsistent("the head names another last chain link than the log's"));
    }
    let entry = s.key_entry(&head.last_key, at)?;
    match entry {
        Some(e) if e.appended.first_seq + u64::from(e.appended.count) == size && e.appended.chain == *chain => Ok(()),
        Some(_) => Err(inconsistent("the key index disagrees with the log's last append")),
        None => Err(inconsistent("the key index has no entry for the log's last append")),
    }
}
