//! Where a node keeps its log and its keys ([`Home`]): a data directory (the log on the
//! embedded store, fjall, in `DATA/log`, and the key file `DATA/keys.json`), or a
//! PostgreSQL database (the log's keyspaces as tables, the key file in its aux keyspace,
//! where every node of the log finds it). Every command that takes `--data DIR` also
//! takes `--store URL`: `fjall:DIR` (the same as `--data DIR`) or `postgres://…`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use settle_ledger::backend::{Backend, FjallBackend, PostgresBackend, Space};

use crate::keystore::{KeyFile, KeyHome};

/// Where a node keeps its log and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// A data directory.
    Dir(PathBuf),
    /// A PostgreSQL database (libpq URL syntax: `postgres://user@host:port/db`, several
    /// hosts and `target_session_attrs=read-write` included).
    Postgres(String),
}

impl Home {
    /// From a command's `--store URL` and `--data DIR` (the store wins; one of them is
    /// needed).
    pub fn of(data: Option<&Path>, store: Option<&str>) -> Result<Self> {
        match (store, data) {
            (Some(s), _) => Self::parse(s),
            (None, Some(d)) => Ok(Self::Dir(d.to_path_buf())),
            (None, None) => bail!("give --data DIR or --store URL"),
        }
    }

    /// `fjall:DIR` or `postgres://…` (`postgresql://…`).
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(dir) = s.strip_prefix("fjall:") {
            if dir.is_empty() {
                bail!("--store fjall:DIR needs a directory");
            }
            return Ok(Self::Dir(PathBuf::from(dir)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        // Only the scheme is echoed: the rest may hold a password.
        let scheme = s.split_once("://").map_or("a path", |(scheme, _)| scheme);
        bail!("--store takes fjall:DIR or postgres://user@host:port/database, not {scheme}")
    }

    /// The log's backend, opened (on PostgreSQL, with the writer lease: refused while
    /// another node holds it), and where its key file is. In a data directory the key
    /// file must be there before the log is opened (so that no log is created where
    /// there are no keys).
    pub fn open(&self) -> Result<(Arc<dyn Backend>, KeyHome)> {
        match self {
            Self::Dir(data) => {
                KeyFile::load(data)?;
                let log = data.join("log");
                let b = FjallBackend::open(&log, fjall_persist())
                    .with_context(|| format!("cannot open the log in {}", data.display()))?;
                Ok((Arc::new(b), KeyHome::Dir(data.clone())))
            }
            Self::Postgres(url) => {
                let b: Arc<dyn Backend> = Arc::new(PostgresBackend::open(url)?);
                Ok((Arc::clone(&b), KeyHome::Store(b)))
            }
        }
    }

    /// Where its key file is, without opening the log (on PostgreSQL, the connection
    /// takes the writer lease: no server may be writing the log).
    pub fn key_home(&self) -> Result<KeyHome> {
        match self {
            Self::Dir(data) => Ok(KeyHome::Dir(data.clone())),
            Self::Postgres(url) => Ok(KeyHome::Store(Arc::new(PostgresBackend::open(url)?))),
        }
    }

    /// A new store: a data directory that does not exist or is empty (created), or a
    /// database that holds no log and no key file (its writer lease taken). Returns where
    /// the new key file goes.
    pub fn create_fresh(&self) -> Result<KeyHome> {
        match self {
            Self::Dir(data) => {
                if data.exists() && std::fs::read_dir(data)?.next().is_some() {
                    bail!("{} is not empty: a new store needs a new or empty directory", data.display());
                }
                std::fs::create_dir_all(data)?;
                Ok(KeyHome::Dir(data.clone()))
            }
            Self::Postgres(url) => {
                let b: Arc<dyn Backend> = Arc::new(PostgresBackend::open(url)?);
                if !log_is_empty(b.as_ref())? || KeyHome::Store(Arc::clone(&b)).exists()? {
                    bail!("{} already holds a log or keys: a new store needs an empty database", self.describe());
                }
                Ok(KeyHome::Store(b))
            }
        }
    }

    /// Where it is, for messages (a PostgreSQL URL without its password).
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Dir(d) => d.display().to_string(),
            Self::Postgres(url) => settle_ledger::backend::shown_url(url),
        }
    }
}

/// Whether the log on `b` has no record.
pub fn log_is_empty(b: &dyn Backend) -> Result<bool> {
    Ok(b.last_before(Space::Records, std::ops::Bound::Unbounded)?.is_none())
}

/// How the embedded store syncs: every durable write reaches the disk.
fn fjall_persist() -> fjall::PersistMode {
    fjall::PersistMode::SyncAll
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_a_data_directory_or_a_postgresql_url() {
        assert_eq!(Home::parse("fjall:/tmp/x").unwrap(), Home::Dir("/tmp/x".into()));
        assert_eq!(Home::parse("postgres://u@h:5/db").unwrap(), Home::Postgres("postgres://u@h:5/db".into()));
        assert_eq!(Home::parse("postgresql://h/db").unwrap(), Home::Postgres("postgresql://h/db".into()));
        for bad in ["fjall:", "mysql://h/db", "/tmp/x", ""] {
            assert!(Home::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Home::of(Some(Path::new("d")), Some("fjall:e")).unwrap(), Home::Dir("e".into()));
        assert_eq!(Home::of(Some(Path::new("d")), None).unwrap(), Home::Dir("d".into()));
        assert!(Home::of(None, None).is_err());
        assert_eq!(
            Home::Postgres("postgres://u:secret@h/db".into()).describe(),
            "postgres://u@h/db",
            "a password is never shown"
        );
        assert_eq!(
            Home::Postgres("postgres://u@h/db?password=secret&sslmode=disable".into()).describe(),
            "postgres://u@h/db?sslmode=disable"
        );
        let refused = Home::parse("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(refused.contains("not mysql") && !refused.contains("secret"), "{refused}");
    }
}
