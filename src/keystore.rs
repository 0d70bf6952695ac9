//! The vendor's keys and API tokens, kept in `DATA/keys.json` (mode 0600), or, for a log
//! on PostgreSQL, in the store itself ([`KeyHome`]), where every node of the log finds
//! them.
//!
//! Seeds are 32 random bytes from the OS (or, for `settle demo`, derived from the demo
//! seed so the run is reproducible). API tokens are stored only as SHA-256 hashes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use settle_ledger::backend::{Backend, Batch, Durability, Space};
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use sha2::{Digest, Sha256};

/// What a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// Vendor administrator: everything.
    VendorAdmin,
    /// Vendor's agent: writes and reads within its scopes.
    VendorAgent,
    /// A partner: reads its own data, registers its leads.
    Partner,
    /// A partner's agent: acts for the partner within the agent's grant.
    PartnerAgent,
}

/// A scope of an API token.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Publish and amend programs, enroll/suspend partners, authorise agents.
    ProgramsWrite,
    /// Register leads and hand them off.
    LeadsWrite,
    /// Record conversions.
    ConversionsWrite,
    /// Record refunds.
    RefundsWrite,
    /// Confirm settlements, advance holds.
    SettlementsWrite,
    /// Read (own data for partners; everything for the vendor).
    Read,
    /// Subscribe to webhooks, delete subscriptions, replay deliveries.
    WebhooksWrite,
    /// Issue, list and revoke API tokens (a vendor administrator's).
    TokensWrite,
    /// Open, comment on and withdraw disputes (a partner's own; the vendor's for any).
    DisputesWrite,
}

/// One stored signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// Hex seed.
    pub seed: String,
    /// Valid from (Unix s).
    pub valid_from: Option<i64>,
    /// Valid until (Unix s), none while current.
    pub valid_until: Option<i64>,
}

/// One stored API token (hash only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    /// Token id (shown in lists).
    pub id: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// Kind of principal.
    pub kind: PrincipalKind,
    /// Partner id for partner and partner-agent tokens; agent id for agents.
    pub subject: String,
    /// For partner agents: the partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// When it was issued (Unix s); absent in tokens issued before lifecycles existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// When it stops working (Unix s, exclusive); absent: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When it was revoked (Unix s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// For a token issued over the API: the issuer's idempotency key and the SHA-256 of
    /// its request, so a retry gets the same token (never its secret again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_for: Option<IssuedFor>,
}

/// The request a token was issued for over the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedFor {
    /// The issuer's idempotency key (scoped to the issuing token).
    pub key: String,
    /// Hex SHA-256 of the request's JSON.
    pub request: String,
}

impl StoredToken {
    /// Not revoked, and not expired at `now`.
    #[must_use]
    pub fn in_force(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Vendor id (`iss`).
    pub vendor: String,
    /// Log origin in checkpoints.
    pub origin: String,
    /// Hex secret for mandate salts.
    pub salt_secret: String,
    /// Signing keys, oldest first; the last is current.
    pub keys: Vec<StoredKey>,
    /// API tokens.
    #[serde(default)]
    pub tokens: Vec<StoredToken>,
}

fn seed_of(hexs: &str) -> Result<[u8; 32]> {
    hex::decode(hexs).ok().and_then(|b| b.try_into().ok()).context("a key seed is not 32 hex bytes")
}

impl KeyFile {
    /// Path of the key file in a data dir.
    #[must_use]
    pub fn path(data: &Path) -> PathBuf {
        data.join("keys.json")
    }

    /// A new key file from seed material.
    #[must_use]
    pub fn new(vendor: &str, origin: &str, key_seed: [u8; 32], salt: [u8; 32], valid_from: i64) -> Self {
        Self {
            vendor: vendor.into(),
            origin: origin.into(),
            salt_secret: hex::encode(salt),
            keys: vec![StoredKey { seed: hex::encode(key_seed), valid_from: Some(valid_from), valid_until: None }],
            tokens: Vec::new(),
        }
    }

    /// Loads `DATA/keys.json`.
    pub fn load(data: &Path) -> Result<Self> {
        let p = Self::path(data);
        let b = std::fs::read(&p).with_context(|| {
            format!(
                "no key file in {} (run `settle keys create --data {}` or `settle demo`)",
                data.display(),
                data.display()
            )
        })?;
        Self::parse(&b, &p.display().to_string())
    }

    /// A key file's bytes, read from `what`.
    fn parse(b: &[u8], what: &str) -> Result<Self> {
        let k: Self = serde_json::from_slice(b).with_context(|| format!("{what} is not a settle key file"))?;
        if k.keys.is_empty() {
            bail!("{what} holds no signing key");
        }
        Ok(k)
    }

    /// Writes `DATA/keys.json` with owner-only permissions, atomically.
    pub fn save(&self, data: &Path) -> Result<()> {
        std::fs::create_dir_all(data)?;
        let p = Self::path(data);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    /// The current signing key.
    pub fn current(&self) -> Result<SigningKey> {
        let k = self.keys.last().context("no signing key")?;
        Ok(SigningKey::from_seed(&seed_of(&k.seed)?))
    }

    /// When the current key became valid (receipts it signs are dated no earlier).
    #[must_use]
    pub fn current_valid_from(&self) -> Option<i64> {
        self.keys.last().and_then(|k| k.valid_from)
    }

    /// The salt secret.
    pub fn salt(&self) -> Result<[u8; 32]> {
        seed_of(&self.salt_secret)
    }

    /// The public JWKS: every key with its validity period.
    pub fn jwks(&self) -> Result<Jwks> {
        Ok(Jwks {
            keys: self
                .keys
                .iter()
                .map(|k| Ok(SigningKey::from_seed(&seed_of(&k.seed)?).to_jwk(k.valid_from, k.valid_until)))
                .collect::<Result<_>>()?,
        })
    }

    /// The key ring for verification.
    pub fn ring(&self) -> Result<KeyRing> {
        Ok(KeyRing::new(&self.jwks()?)?)
    }

    /// Retires the current key at `now` and adds a new one from `seed`.
    pub fn rotate(&mut self, seed: [u8; 32], now: i64) {
        if let Some(k) = self.keys.last_mut() {
            k.valid_until = Some(now);
        }
        self.keys.push(StoredKey { seed: hex::encode(seed), valid_from: Some(now), valid_until: None });
    }
}

/// The entry of the key file in a store's aux keyspace.
pub const STORE_KEY: &[u8] = b"settle/keys.json";

/// Where a key file is kept.
#[derive(Clone)]
pub enum KeyHome {
    /// `DATA/keys.json`, edited under a lock on `DATA/keys.lock`.
    Dir(PathBuf),
    /// The aux entry [`STORE_KEY`] of a PostgreSQL store: shared by the nodes of the log,
    /// written (synced) by the node that holds the writer lease. Not part of the hashed
    /// log, never exported.
    Store(Arc<dyn Backend>),
}

impl KeyHome {
    /// The key file.
    pub fn load(&self) -> Result<KeyFile> {
        match self {
            Self::Dir(data) => KeyFile::load(data),
            Self::Store(b) => {
                let v = b.get(Space::Aux, STORE_KEY)?.with_context(|| {
                    format!(
                        "no key file in {} (run `settle keys create --store URL` or `settle demo --store URL`)",
                        b.describe()
                    )
                })?;
                KeyFile::parse(&v, &format!("the key file of {}", b.describe()))
            }
        }
    }

    /// Writes the key file (atomically; synced in a store).
    pub fn save(&self, kf: &KeyFile) -> Result<()> {
        match self {
            Self::Dir(data) => kf.save(data),
            Self::Store(b) => {
                let mut batch = Batch::with_capacity(1);
                batch.insert(Space::Aux, STORE_KEY.to_vec(), serde_json::to_vec_pretty(kf)?);
                Ok(b.write(batch, Durability::Synced)?)
            }
        }
    }

    /// Whether a key file is there.
    pub fn exists(&self) -> Result<bool> {
        match self {
            Self::Dir(data) => Ok(KeyFile::path(data).exists()),
            Self::Store(b) => Ok(b.get(Space::Aux, STORE_KEY)?.is_some()),
        }
    }
}

/// Hex SHA-256 of a token.
#[must_use]
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 random bytes from the OS.
pub fn random_seed() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(b)
}
