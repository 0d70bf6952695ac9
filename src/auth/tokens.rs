//! The API tokens of a data directory, live: issued, listed and revoked from the command
//! line or over the API, and honoured by a running server at once.
//!
//! Tokens live in the key file (hashed: SHA-256 of the secret, which is shown once and
//! never stored). In a data directory, every change is a read-modify-write of
//! `DATA/keys.json` under an exclusive lock on `DATA/keys.lock`, written atomically, so
//! the CLI and a server never lose each other's changes; a server looks tokens up in a
//! hash table by their hash (O(1)) and reloads it when the file changed (a `stat` per
//! look-up), so a token issued or revoked by `settle keys` takes effect on the next
//! request, without a restart. In a PostgreSQL store, the key file is written only by the
//! node that holds the log's writer lease (a running server: tokens are issued and
//! revoked over its API; before it starts, with `settle keys`), so that node's table is
//! always current.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::keystore::{IssuedFor, KeyFile, KeyHome, PrincipalKind, Scope, StoredToken, random_seed, token_hash};

/// The longest life a token may be issued with, seconds (ten years).
pub const MAX_TOKEN_LIFE_SECS: i64 = 10 * 365 * 86_400;

/// Serialises the changes of a key file kept in a store, within this process (only the
/// process holding the writer lease writes it).
static STORE_EDITS: Mutex<()> = Mutex::new(());

/// Runs `f` on the key file of `home` under its lock, then saves it atomically.
pub fn update<T>(home: &KeyHome, f: impl FnOnce(&mut KeyFile) -> Result<T>) -> Result<T> {
    match home {
        KeyHome::Dir(data) => update_dir(data, f),
        KeyHome::Store(_) => {
            let _edit = STORE_EDITS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut kf = home.load()?;
            let out = f(&mut kf)?;
            home.save(&kf)?;
            Ok(out)
        }
    }
}

/// [`update`] of `DATA/keys.json`, under the file lock.
fn update_dir<T>(data: &Path, f: impl FnOnce(&mut KeyFile) -> Result<T>) -> Result<T> {
    let lock_path = data.join("keys.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let mut kf = KeyFile::load(data)?;
    let out = f(&mut kf)?;
    kf.save(data)?;
    drop(lock);
    Ok(out)
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Kind of principal.
    pub kind: PrincipalKind,
    /// Partner id, agent id or a name.
    pub subject: String,
    /// For a partner agent, its partner.
    pub partner: Option<String>,
    /// Scopes (at least one).
    pub scopes: Vec<Scope>,
    /// Its life from `now`, seconds; `None`: until revoked.
    pub expires_in: Option<i64>,
}

/// Issues a token in `kf` at `now`: returns the secret (shown once) and what is stored.
pub fn issue(kf: &mut KeyFile, req: TokenRequest, now: i64) -> Result<(String, StoredToken)> {
    if req.kind == PrincipalKind::PartnerAgent && req.partner.is_none() {
        bail!("a partner-agent token needs a partner (--partner)");
    }
    if req.scopes.is_empty() {
        bail!("a token needs at least one scope");
    }
    let expires_at = match req.expires_in {
        Some(s) if s <= 0 || s > MAX_TOKEN_LIFE_SECS => {
            bail!("a token's life must be between 1 second and {} days", MAX_TOKEN_LIFE_SECS / 86_400)
        }
        Some(s) => Some(now + s),
        None => None,
    };
    let secret = format!("stl_{}", hex::encode(random_seed()?));
    let hash = token_hash(&secret);
    let t = StoredToken {
        id: format!("tok_{}", &hash[..12]),
        hash,
        kind: req.kind,
        subject: req.subject,
        partner: req.partner,
        scopes: req.scopes,
        created_at: Some(now),
        expires_at,
        revoked_at: None,
        issued_for: None,
    };
    kf.tokens.push(t.clone());
    Ok((secret, t))
}

/// Revokes token `id` in `kf` at `now`: `Ok(false)` if it was revoked already.
pub fn revoke(kf: &mut KeyFile, id: &str, now: i64) -> Result<bool> {
    let t = kf.tokens.iter_mut().find(|t| t.id == id).with_context(|| format!("no token '{id}'"))?;
    if t.revoked_at.is_some() {
        return Ok(false);
    }
    t.revoked_at = Some(now);
    Ok(true)
}

/// What issuing under an idempotency key gave.
#[derive(Debug)]
pub enum Issued {
    /// A new token: its secret (shown this once) and what is stored.
    New(String, StoredToken),
    /// The token this key issued before for the same request (no secret).
    Again(StoredToken),
}

/// Why a token was not issued.
#[derive(Debug)]
pub enum IssueError {
    /// The key issued a token for another request.
    KeyReused,
    /// The request or the store refused it.
    Refused(anyhow::Error),
}

/// A server's live view of its tokens.
pub struct Tokens {
    home: KeyHome,
    loaded: RwLock<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// What the file was when read (modification time and length).
    stamp: Option<(SystemTime, u64)>,
    by_hash: HashMap<String, StoredToken>,
    /// Token id → its hash.
    by_id: HashMap<String, String>,
}

impl Loaded {
    fn by_id(&self, id: &str) -> Option<&StoredToken> {
        self.by_id.get(id).and_then(|h| self.by_hash.get(h))
    }
}

/// What the key file was when read: its modification time and length in a data
/// directory; nothing in a store, where only this node changes it (and reloads).
fn stamp(home: &KeyHome) -> Option<(SystemTime, u64)> {
    match home {
        KeyHome::Dir(data) => {
            std::fs::metadata(KeyFile::path(data)).ok().and_then(|m| m.modified().ok().map(|t| (t, m.len())))
        }
        KeyHome::Store(_) => None,
    }
}

impl Tokens {
    /// The tokens of the key file in `home`, read now.
    pub fn open(home: KeyHome) -> Result<Self> {
        let t = Self { home, loaded: RwLock::new(Loaded::default()) };
        t.reload()?;
        Ok(t)
    }

    fn reload(&self) -> Result<()> {
        let stamp = stamp(&self.home);
        let kf = self.home.load()?;
        let by_id = kf.tokens.iter().map(|t| (t.id.clone(), t.hash.clone())).collect();
        let by_hash = kf.tokens.into_iter().map(|t| (t.hash.clone(), t)).collect();
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Loaded { stamp, by_hash, by_id };
        Ok(())
    }

    /// The tokens as the file holds them now: reread first if it changed since it was
    /// read (a `stat`; the file is small).
    fn current(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        let now = stamp(&self.home);
        let read = || self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = now != read().stamp; // the read lock is let go before a reload writes
        if stale && let Err(e) = self.reload() {
            tracing::error!("cannot reread the API tokens: {e:#}");
        }
        read()
    }

    /// The token whose secret is `secret`, if it is in force at `now` (not revoked, not
    /// expired).
    #[must_use]
    pub fn find(&self, secret: &str, now: i64) -> Option<StoredToken> {
        self.current().by_hash.get(&token_hash(secret)).filter(|t| t.in_force(now)).cloned()
    }

    /// The token with id `id`, in force or not.
    #[must_use]
    pub fn by_id(&self, id: &str) -> Option<StoredToken> {
        self.current().by_id(id).cloned()
    }

    /// Whether the token with id `id` is in force at `now` (checked before every webhook
    /// delivery: a look-up by id, no scan).
    #[must_use]
    pub fn id_in_force(&self, id: &str, now: i64) -> bool {
        self.current().by_id(id).is_some_and(|t| t.in_force(now))
    }

    /// Every token, without secrets, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<StoredToken> {
        let mut v: Vec<StoredToken> = self.current().by_hash.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Issues a token (see [`issue`]), saved before it is answered.
    #[cfg(test)]
    pub fn issue(&self, req: TokenRequest, now: i64) -> Result<(String, StoredToken)> {
        let out = update(&self.home, |kf| issue(kf, req, now))?;
        self.reload()?;
        Ok(out)
    }

    /// Issues a token for `request` once per idempotency `key`: the same key and request
    /// again get [`Issued::Again`], another request under it [`IssueError::KeyReused`].
    pub fn issue_once(
        &self,
        key: &str,
        request: &serde_json::Value,
        req: TokenRequest,
        now: i64,
    ) -> Result<Issued, IssueError> {
        let asked = IssuedFor { key: key.to_owned(), request: token_hash(&request.to_string()) };
        let mut reused = false;
        let out = update(&self.home, |kf| {
            if let Some(t) = kf.tokens.iter().find(|t| t.issued_for.as_ref().is_some_and(|f| f.key == asked.key)) {
                reused = t.issued_for.as_ref() != Some(&asked);
                return Ok(Issued::Again(t.clone()));
            }
            let (secret, mut t) = issue(kf, req, now)?;
            t.issued_for = Some(asked.clone());
            if let Some(stored) = kf.tokens.last_mut() {
                stored.issued_for = Some(asked);
            }
            Ok(Issued::New(secret, t))
        })
        .map_err(IssueError::Refused)?;
        if reused {
            return Err(IssueError::KeyReused);
        }
        self.reload().map_err(IssueError::Refused)?;
        Ok(out)
    }

    /// Revokes token `id` (see [`revoke`]), saved before it is answered.
    pub fn revoke(&self, id: &str, now: i64) -> Result<bool> {
        let out = update(&self.home, |kf| revoke(kf, id, now))?;
        self.reload()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kf() -> KeyFile {
        KeyFile::new("v", "o", [1; 32], [2; 32], 0)
    }

    fn req(expires_in: Option<i64>) -> TokenRequest {
        TokenRequest {
            kind: PrincipalKind::VendorAdmin,
            subject: "ops".into(),
            partner: None,
            scopes: vec![Scope::Read],
            expires_in,
        }
    }

    #[test]
    fn a_token_is_found_while_in_force_only() {
        let dir = tempfile::tempdir().unwrap();
        kf().save(dir.path()).unwrap();
        let tokens = Tokens::open(KeyHome::Dir(dir.path().to_path_buf())).unwrap();
        let (secret, t) = tokens.issue(req(Some(60)), 1_000).unwrap();
        assert_eq!(tokens.find(&secret, 1_000).map(|x| x.id), Some(t.id.clone()));
        assert!(tokens.find(&secret, 1_060).is_none(), "expired at its expiry");
        assert!(tokens.find("stl_wrong", 1_000).is_none());
        assert!(tokens.revoke(&t.id, 1_010).unwrap());
        assert!(!tokens.revoke(&t.id, 1_011).unwrap(), "revoked once");
        assert!(tokens.find(&secret, 1_020).is_none(), "revoked");
        let stored = std::fs::read_to_string(KeyFile::path(dir.path())).unwrap();
        assert!(!stored.contains(&secret), "the secret is never stored");
    }

    #[test]
    fn a_change_made_by_another_process_is_seen_at_the_next_look_up() {
        let dir = tempfile::tempdir().unwrap();
        kf().save(dir.path()).unwrap();
        let server = Tokens::open(KeyHome::Dir(dir.path().to_path_buf())).unwrap();
        // As `settle keys token` does, in another process: through the file.
        let (secret, t) = update(&KeyHome::Dir(dir.path().to_path_buf()), |k| issue(k, req(None), 5)).unwrap();
        assert!(server.find(&secret, 6).is_some(), "a new token works at once");
        update(&KeyHome::Dir(dir.path().to_path_buf()), |k| revoke(k, &t.id, 7)).unwrap();
        assert!(server.find(&secret, 8).is_none(), "a revoked token stops at once");
    }

    #[test]
    fn lives_out_of_range_and_empty_scopes_are_refused() {
        let mut k = kf();
        assert!(issue(&mut k, req(Some(0)), 0).is_err());
        assert!(issue(&mut k, req(Some(MAX_TOKEN_LIFE_SECS + 1)), 0).is_err());
        let mut r = req(None);
        r.scopes.clear();
        assert!(issue(&mut k, r, 0).is_err());
        assert!(k.tokens.is_empty(), "nothing was issued");
    }
}
