//! The PostgreSQL backend: each keyspace a table of `bytea` keys and values
//! (`settle_records`, `settle_idempotency`, ...), created and migrated by settle
//! ([`MIGRATIONS`]); a sync is one transaction holding every batch written since the
//! last one, checked against the writer's lease inside it ([`Lease`]).
//!
//! The driver is tokio-postgres, on a runtime of the backend's own (two threads), so the
//! ledger's threads and the doors' async tasks call it alike: each call is handed to that
//! runtime and waited for on a plain channel (never a nested runtime).
//!
//! **One writer, fenced.** Opening the backend takes the writer lease: a session-level
//! advisory lock on the writer's connection, and the epoch row bumped to a number of its
//! own. Every sync checks, inside its transaction, that the epoch is still its own, so a
//! writer that was paused while another took over can never commit again: its sync
//! fails, the ledger is poisoned, and nothing of it is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::{Backend, Batch, Bytes, Change, Durability, Entries, Space};
use crate::error::{LedgerError, Result};

/// The schema's migrations, in order: version, what it does, its SQL. Applied once
/// each, in one transaction each, under an advisory lock (two nodes starting together
/// migrate once), and recorded in `settle_migrations`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "the keyspaces and the writer's epoch",
    "CREATE TABLE settle_records (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_tiles (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_upper (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_idempotency (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_checkpoints (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_projections (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_aux (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_head (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE settle_writer (
         id int PRIMARY KEY CHECK (id = 1),
         epoch bigint NOT NULL,
         holder text NOT NULL,
         since timestamptz NOT NULL
     );
     INSERT INTO settle_writer VALUES (1, 0, '', now());",
)];

/// The advisory lock of the writer lease ("settle" in ASCII).
const WRITER_LOCK: i64 = 0x0000_7365_7474_6c65;
/// The advisory lock migrations run under.
const MIGRATION_LOCK: i64 = WRITER_LOCK + 1;
/// Rows a range read fetches at a time...
const PAGE: i64 = 512;
/// ...of stored entries (at most 64 KiB each, or one record of up to a MiB).
const RECORDS_PAGE: i64 = 64;

/// Rows a range read of `space` fetches at a time.
fn page_of(space: Space) -> i64 {
    if space == Space::Records { RECORDS_PAGE } else { PAGE }
}

/// Runs `f` on the backend's runtime (`handle`) and waits for it on this thread, on a
/// plain channel: callable from any thread, an async runtime's included.
fn wait<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    f: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().map_err(|_| LedgerError::Storage("PostgreSQL: the backend's runtime stopped".into()))?
}
/// Connections for reads (each pipelines the queries given it).
const READERS: usize = 2;
/// How long a node tries to reach the database again after losing its connection
/// (a restart, or a failover to a replica), before it gives up (and its ledger stops).
pub const RECONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest one attempt at a commit may take before the connection is taken for lost.
pub const ATTEMPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Idle time before a keepalive probe, and between probes.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a standby tries the writer lease again.
pub const STANDBY_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The writer's lease: its epoch, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The epoch this writer took; the next writer takes a greater one.
    pub epoch: i64,
    /// Who holds it (`host:pid`).
    pub holder: String,
}

/// The ledger's keyspaces in a PostgreSQL database.
pub struct PostgresBackend {
    /// Its runtime (taken only when it is dropped).
    rt: Option<tokio::runtime::Runtime>,
    config: Arc<tokio_postgres::Config>,
    readers: Vec<Slot>,
    next: AtomicUsize,
    /// The connection that holds the lease and commits the log's batches.
    writer: Arc<tokio::sync::Mutex<Conn>>,
    /// Batches written since the last sync, committed by the next one.
    pending: Arc<Mutex<Vec<Batch>>>,
    lease: Lease,
    shown: String,
    /// Opened to read a log another node writes: every write is refused.
    reader: bool,
}

/// A reader's connection, replaced when it is lost.
type Slot = Arc<tokio::sync::Mutex<Arc<Conn>>>;

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl Conn {
    /// Connects, trying again every [`STANDBY_POLL`] until `deadline` while the server
    /// cannot be reached (it is restarting, or a replica is being promoted).
    async fn connect_by(config: &tokio_postgres::Config, deadline: Instant) -> Result<Self> {
        loop {
            match Self::connect(config).await {
                Ok(c) => return Ok(c),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(STANDBY_POLL).await,
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect(config: &tokio_postgres::Config) -> Result<Self> {
        let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; every call on the
            // client then fails, and the ledger with it.
            let _ = connection.await;
        });
        Ok(Self { client, statements: Mutex::new(HashMap::new()) })
    }

    /// The statement of `sql`, prepared once per connection.
    async fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await.map_err(pg)?;
        self.statements.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<(Bytes, Bytes)>> {
        let st = self.statement(sql).await?;
        let rows = self.client.query(&st, params).await.map_err(pg)?;
        rows.iter()
            .map(|r| {
                let k: Vec<u8> = r.try_get(0).map_err(pg)?;
                let v: Vec<u8> = r.try_get(1).map_err(pg)?;
                Ok((Bytes::from(k), Bytes::from(v)))
            })
            .collect()
    }
}

fn pg(e: tokio_postgres::Error) -> LedgerError {
    LedgerError::Storage(format!("PostgreSQL: {e}"))
}

fn table(space: Space) -> String {
    format!("settle_{}", space.name())
}

impl PostgresBackend {
    /// Connects to the database of `url` (libpq URL syntax: several hosts and
    /// `target_session_attrs` included), creates or migrates the schema, and takes the
    /// writer lease. Refused when another node holds it.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_waiting(url, None::<fn(&Lease)>, false)
    }

    /// Connects to read a log another node writes (a standby serving reads): no lease,
    /// and every write is refused.
    pub fn open_reader(url: &str) -> Result<Self> {
        Self::open_waiting(url, None::<fn(&Lease)>, true)
    }

    /// [`PostgresBackend::open`], but while another node holds the lease, waits for it
    /// as a standby: `waiting` is told who holds it (once for each holder), and the lease
    /// is tried again every [`STANDBY_POLL`] until that node's session ends (it stopped,
    /// died, or lost its connection), then taken with a newer epoch.
    pub fn open_standby(url: &str, waiting: impl Fn(&Lease)) -> Result<Self> {
        Self::open_waiting(url, Some(waiting), false)
    }

    fn open_waiting(url: &str, waiting: Option<impl Fn(&Lease)>, reader: bool) -> Result<Self> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| LedgerError::Invalid(format!("not a PostgreSQL URL: {e}")))?;
        // A server that vanishes without closing the connection (its machine died) is
        // noticed in seconds, not when the kernel gives up.
        config.keepalives(true).keepalives_idle(KEEPALIVE).keepalives_interval(KEEPALIVE).keepalives_retries(3);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("settle-postgres")
            .enable_all()
            .build()
            .map_err(|e| LedgerError::Storage(e.to_string()))?;
        let holder = format!("{}:{}", host_name(), std::process::id());
        let (writer, readers, lease) = rt.block_on(async {
            let mut writer = Conn::connect(&config).await?;
            let mut told: Option<Lease> = None;
            let lease = loop {
                if reader {
                    break Lease { epoch: 0, holder: String::new() };
                }
                if told.is_none() {
                    migrate(&mut writer.client).await?;
                    durable_commits(&writer.client).await?;
                }
                let attempt = match take_lease(&writer.client, &holder).await {
                    // A standby that loses its connection (the server restarted, or failed
                    // over to a replica) connects again and goes on waiting.
                    // It waits as long as it takes: a standby has nothing to give up.
                    Err(_) if waiting.is_some() && lost(&writer).await => {
                        tokio::time::sleep(STANDBY_POLL).await;
                        if let Ok(c) = Conn::connect(&config).await {
                            durable_commits(&c.client).await?;
                            writer = c;
                        }
                        continue;
                    }
                    other => other?,
                };
                match attempt {
                    Ok(lease) => break lease,
                    Err(other) => match &waiting {
                        None => return Err(LedgerError::WriterElsewhere { holder: other.holder, epoch: other.epoch }),
                        Some(tell) => {
                            if told.as_ref() != Some(&other) {
                                tell(&other);
                                told = Some(other);
                            }
                            tokio::time::sleep(STANDBY_POLL).await;
                        }
                    },
                }
            };
            let mut readers: Vec<Slot> = Vec::with_capacity(READERS);
            for _ in 0..READERS {
                readers.push(Arc::new(tokio::sync::Mutex::new(Arc::new(Conn::connect(&config).await?))));
            }
            Ok::<_, LedgerError>((writer, readers, lease))
        })?;
        Ok(Self {
            rt: Some(rt),
            config: Arc::new(config),
            readers,
            next: AtomicUsize::new(0),
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            pending: Arc::new(Mutex::new(Vec::new())),
            lease,
            shown: shown_url(url),
            reader,
        })
    }

    /// The lease this backend holds.
    #[must_use]
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Empties every keyspace (a demo replacing the previous one), in one transaction
    /// under the lease.
    pub fn clear(&self) -> Result<()> {
        let writer = Arc::clone(&self.writer);
        let epoch = self.lease.epoch;
        self.run(async move {
            let mut w = writer.lock().await;
            let tx = w.client.transaction().await.map_err(pg)?;
            fence(&tx, epoch).await?;
            let tables: Vec<String> = Space::ALL.iter().map(|s| table(*s)).collect();
            tx.batch_execute(&format!("TRUNCATE {}", tables.join(", "))).await.map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
    }

    /// Runs `f` on the backend's runtime and waits for it on this thread.
    fn run<T: Send + 'static>(&self, f: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        wait(&self.handle(), f)
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime is taken only when the backend is dropped"),
        }
    }

    fn reader(&self) -> Reader {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        Reader { slot: Arc::clone(&self.readers[i]), config: Arc::clone(&self.config) }
    }

    /// Commits in one transaction on the writer's connection, after checking the lease
    /// inside it: `batches`, preceded by the batches still pending when `with_pending`
    /// (taken once the connection is this caller's, so commits keep the order the
    /// batches were written in). In the log's batches, a key of the log's keyspaces
    /// (entries, the key index, tiles and upper nodes) is written once: a commit that
    /// would change a stored value there fails instead.
    ///
    /// When the connection is lost (the server restarted, or its primary failed over to a
    /// replica), or an attempt does not end within [`ATTEMPT_WAIT`], it connects again
    /// (with several hosts and `target_session_attrs=read-write`, to whichever is now the
    /// primary), takes the lease again if no other node took it meanwhile (else it is
    /// fenced), and commits the same changes again: a batch is a set of keys and their
    /// values, so committing it twice is committing it once, whether or not the first
    /// commit survived.
    fn commit(&self, batches: Vec<Batch>, with_pending: bool) -> Result<()> {
        let writer = Arc::clone(&self.writer);
        let config = Arc::clone(&self.config);
        let epoch = self.lease.epoch;
        let pending = with_pending.then(|| Arc::clone(&self.pending));
        self.run(async move {
            let deadline = Instant::now() + RECONNECT_WAIT;
            let mut w = writer.lock().await;
            let mut all = match pending {
                Some(p) => std::mem::take(&mut *p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)),
                None => Vec::new(),
            };
            all.extend(batches);
            if all.is_empty() {
                return Ok(());
            }
            loop {
                let attempt =
                    tokio::time::timeout(ATTEMPT_WAIT, commit_once(&mut w, all.clone(), epoch, with_pending)).await;
                match attempt {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(_)) | Err(_) if Instant::now() < deadline && (attempt.is_err() || lost(&w).await) => {
                        *w = relock(&config, epoch, deadline).await?;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(LedgerError::Storage(format!(
                            "PostgreSQL: no commit within {} s",
                            RECONNECT_WAIT.as_secs()
                        )));
                    }
                }
            }
        })
    }
}

/// A reader's connection slot, reconnected when its connection was lost.
struct Reader {
    slot: Slot,
    config: Arc<tokio_postgres::Config>,
}

impl Reader {
    /// Runs a query on the slot's connection; when the connection turns out to be lost,
    /// connects again (trying until [`RECONNECT_WAIT`]) and runs it once more.
    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<(Bytes, Bytes)>> {
        let conn = Arc::clone(&*self.slot.lock().await);
        match conn.rows(sql, params).await {
            Err(_) if lost(&conn).await => {
                let fresh = {
                    let mut slot = self.slot.lock().await;
                    if lost(&slot).await {
                        *slot = Arc::new(Conn::connect_by(&self.config, Instant::now() + RECONNECT_WAIT).await?);
                    }
                    Arc::clone(&*slot)
                };
                fresh.rows(sql, params).await
            }
            done => done,
        }
    }
}

/// Whether `conn` is lost (closed, or not answering a trivial query): a failure on it
/// was the connection's, not the statement's.
async fn lost(conn: &Conn) -> bool {
    conn.client.is_closed() || conn.client.simple_query("SELECT 1").await.is_err()
}

/// A new writer connection after the last one was lost: the lease taken again on it, if
/// the epoch is still `epoch` and no other session holds the lock.
async fn relock(config: &tokio_postgres::Config, epoch: i64, deadline: Instant) -> Result<Conn> {
    let conn = Conn::connect_by(config, deadline).await?;
    durable_commits(&conn.client).await?;
    loop {
        let got: bool = conn
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        let now: i64 = conn
            .client
            .query_one("SELECT epoch FROM settle_writer WHERE id = 1", &[])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        if now != epoch {
            return Err(LedgerError::Storage(format!(
                "PostgreSQL: this node's writer lease (epoch {epoch}) was taken over while it reconnected; it writes no more"
            )));
        }
        if got {
            return Ok(conn);
        }
        // The epoch is still ours: the session that holds the lock is our own lost one,
        // which the server has not ended yet.
        if Instant::now() >= deadline {
            return Err(LedgerError::Storage(
                "PostgreSQL: this node's lost session still holds the writer lock".into(),
            ));
        }
        tokio::time::sleep(STANDBY_POLL).await;
    }
}

/// Makes the writer's commits durable as the server is configured to make them (on its
/// disk, and on its synchronous standbys when it has some): a database or role that
/// turned `synchronous_commit` off or to `local` would acknowledge what a crash or a
/// failover can lose.
async fn durable_commits(client: &Client) -> Result<()> {
    let row = client.query_one("SHOW synchronous_commit", &[]).await.map_err(pg)?;
    let level: String = row.try_get(0).map_err(pg)?;
    if level == "off" || level == "local" {
        client.batch_execute("SET synchronous_commit = on").await.map_err(pg)?;
    }
    Ok(())
}

/// This machine's name, for the lease's holder.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The keyspaces whose keys are written once: a stored value there is never replaced
/// by another (a commit that would is refused), only written again identical.
fn written_once(space: Space) -> bool {
    matches!(space, Space::Records | Space::Keys | Space::Tiles | Space::Upper)
}

/// Most bytes of values one statement of a commit sends (a group commit can hold
/// thousands of records of up to a MiB; PostgreSQL takes at most 1 GB a parameter).
const STATEMENT_BYTES: usize = 16 * 1024 * 1024;

/// One attempt at committing `batches` on `w`; with `guard`, a value of a keyspace
/// written once is never replaced (the log's batches; direct writes are checkpoints,
/// saved state and the aux keyspace, and a test's edits of a store).
async fn commit_once(w: &mut Conn, batches: Vec<Batch>, epoch: i64, guard: bool) -> Result<()> {
    // The statements, prepared (once per connection) before the transaction, then sent
    // together: tokio-postgres pipelines what is polled together, so a commit costs the
    // round trips of BEGIN, one flight of statements and COMMIT, whatever it holds.
    let changes = last_changes(batches);
    let fence_st = w.statement(FENCE).await?;
    let mut jobs = Vec::new();
    for (space, (puts, removes)) in &changes {
        if !removes.is_empty() {
            let st = w.statement(&format!("DELETE FROM {} WHERE k = ANY($1)", table(*space))).await?;
            jobs.push(Job { st, keys: removes.iter().map(Vec::as_slice).collect(), values: None, space: *space });
        }
        // In a keyspace written once, an existing key takes only its own value again.
        let sql = if guard && written_once(*space) {
            format!(
                "INSERT INTO {t} AS t (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v WHERE t.v = EXCLUDED.v",
                t = table(*space)
            )
        } else {
            format!(
                "INSERT INTO {} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                table(*space)
            )
        };
        let st = if puts.is_empty() { None } else { Some(w.statement(&sql).await?) };
        let mut rest = puts.as_slice();
        while let Some(st) = st.as_ref().filter(|_| !rest.is_empty()) {
            // As many as fit in STATEMENT_BYTES, and at least one.
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|(_, v)| {
                    let before = bytes;
                    bytes += v.len();
                    before < STATEMENT_BYTES
                })
                .count();
            let (chunk, after) = rest.split_at(n.max(1));
            rest = after;
            jobs.push(Job {
                st: st.clone(),
                keys: chunk.iter().map(|(k, _)| k.as_slice()).collect(),
                values: Some(chunk.iter().map(|(_, v)| v.as_slice()).collect()),
                space: *space,
            });
        }
    }
    let tx = w.client.transaction().await.map_err(pg)?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = jobs
        .iter()
        .map(|j| match &j.values {
            None => vec![&j.keys as &(dyn ToSql + Sync)],
            Some(values) => vec![&j.keys as &(dyn ToSql + Sync), values],
        })
        .collect();
    let writes = jobs.iter().zip(&params).map(|(j, p)| tx.execute(&j.st, p.as_slice()));
    let (fenced, wrote) =
        futures_util::future::try_join(tx.query(&fence_st, &[&epoch]), futures_util::future::try_join_all(writes))
            .await
            .map_err(pg)?;
    if fenced.len() != 1 {
        return Err(taken_over(epoch));
    }
    for (j, n) in jobs.iter().zip(wrote) {
        let sent = u64::try_from(j.keys.len()).unwrap_or(u64::MAX);
        if guard && j.values.is_some() && written_once(j.space) && n != sent {
            return Err(LedgerError::Storage(format!(
                "PostgreSQL: {} of {sent} values of {} would replace others already stored; refused",
                sent - n,
                table(j.space)
            )));
        }
    }
    tx.commit().await.map_err(pg)
}

/// One statement of a commit: removals (`values` none) or puts, of `space`.
struct Job<'a> {
    st: Statement,
    keys: Vec<&'a [u8]>,
    values: Option<Vec<&'a [u8]>>,
    space: Space,
}

/// The fence: the lease's epoch is still this writer's (see [`fence`]).
const FENCE: &str = "SELECT 1 FROM settle_writer WHERE id = 1 AND epoch = $1 FOR SHARE";

/// Checks, inside `tx`, that the lease is still `epoch`, and holds a share lock on the
/// epoch row until the transaction ends, so that no other node takes over in between
/// (taking the lease updates the row, and waits for this commit).
async fn fence(tx: &tokio_postgres::Transaction<'_>, epoch: i64) -> Result<()> {
    let n = tx.query(FENCE, &[&epoch]).await.map_err(pg)?.len();
    if n != 1 {
        return Err(taken_over(epoch));
    }
    Ok(())
}

/// The error of a commit fenced off: another node took the lease after `epoch`.
fn taken_over(epoch: i64) -> LedgerError {
    LedgerError::Storage(format!(
        "PostgreSQL: this node's writer lease (epoch {epoch}) was taken over; it writes no more"
    ))
}

/// The password left out of a URL, for messages.
#[must_use]
pub fn shown_url(url: &str) -> String {
    let url = match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    };
    match url.split_once('?') {
        Some((base, query)) => {
            let kept: Vec<&str> =
                query.split('&').filter(|p| !p.to_ascii_lowercase().starts_with("password=")).collect();
            if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
        }
        None => url,
    }
}

/// Per keyspace, the last change of each key in `batches` (in order): the puts and the
/// removals to make.
type Changes = (Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<u8>>);

fn last_changes(batches: Vec<Batch>) -> BTreeMap<Space, Changes> {
    let mut last: BTreeMap<Space, BTreeMap<Vec<u8>, Option<Vec<u8>>>> = BTreeMap::new();
    for b in batches {
        for c in b.into_changes() {
            match c {
                Change::Put(s, k, v) => last.entry(s).or_default().insert(k.to_vec(), Some(v.to_vec())),
                Change::Remove(s, k) => last.entry(s).or_default().insert(k.to_vec(), None),
            };
        }
    }
    last.into_iter()
        .map(|(s, m)| {
            let mut puts = Vec::new();
            let mut removes = Vec::new();
            for (k, v) in m {
                match v {
                    Some(v) => puts.push((k, v)),
                    None => removes.push(k),
                }
            }
            (s, (puts, removes))
        })
        .collect()
}

/// Applies the migrations not yet applied, under [`MIGRATION_LOCK`].
async fn migrate(client: &mut Client) -> Result<()> {
    // Under the lock from the first statement: two nodes starting together on a new
    // database would otherwise both create the migrations' table.
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS settle_migrations (
             version int PRIMARY KEY, what text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    for (version, what, sql) in MIGRATIONS {
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
        let done = tx.query_opt("SELECT 1 FROM settle_migrations WHERE version = $1", &[version]).await.map_err(pg)?;
        if done.is_none() {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute("INSERT INTO settle_migrations (version, what) VALUES ($1, $2)", &[version, what])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
    }
    Ok(())
}

/// Takes the writer lease on `client`'s session: the advisory lock, then a new epoch.
/// `Ok(Err(lease))` when another session holds the lock: the lease it holds.
async fn take_lease(client: &Client, holder: &str) -> Result<std::result::Result<Lease, Lease>> {
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    if !got {
        let row = client.query_one("SELECT epoch, holder FROM settle_writer WHERE id = 1", &[]).await.map_err(pg)?;
        return Ok(Err(Lease { epoch: row.try_get(0).map_err(pg)?, holder: row.try_get(1).map_err(pg)? }));
    }
    let row = client
        .query_one(
            "UPDATE settle_writer SET epoch = epoch + 1, holder = $1, since = now() WHERE id = 1 RETURNING epoch",
            &[&holder],
        )
        .await
        .map_err(pg)?;
    Ok(Ok(Lease { epoch: row.try_get(0).map_err(pg)?, holder: holder.to_owned() }))
}

/// The condition and parameter of a range bound on `k` (`>=`/`>` for a start, `<=`/`<`
/// for an end).
fn bound(b: Bound<&[u8]>, incl: &str, excl: &str, n: usize) -> (Option<String>, Option<Vec<u8>>) {
    match b {
        Bound::Included(k) => (Some(format!("k {incl} ${n}")), Some(k.to_vec())),
        Bound::Excluded(k) => (Some(format!("k {excl} ${n}")), Some(k.to_vec())),
        Bound::Unbounded => (None, None),
    }
}

/// A range read, page by page: each page a query from just after the last key read.
struct Pages {
    conn: Arc<Reader>,
    space: Space,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    page: std::vec::IntoIter<(Bytes, Bytes)>,
    done: bool,
    rt: tokio::runtime::Handle,
}

impl Pages {
    fn fetch(&mut self) -> Result<()> {
        let conn = Arc::clone(&self.conn);
        let (space, from, to) = (self.space, self.from.clone(), self.to.clone());
        let page = page_of(space);
        let rows = wait(&self.rt, async move {
            let (c1, p1) = bound(as_ref(&from), ">=", ">", 1);
            let (c2, p2) = bound(as_ref(&to), "<=", "<", if p1.is_some() { 2 } else { 1 });
            let conds: Vec<String> = [c1, c2].into_iter().flatten().collect();
            let sql = format!(
                "SELECT k, v FROM {}{}{} ORDER BY k LIMIT {page}",
                table(space),
                if conds.is_empty() { "" } else { " WHERE " },
                conds.join(" AND ")
            );
            let params: Vec<Vec<u8>> = [p1, p2].into_iter().flatten().collect();
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            conn.rows(&sql, &refs).await
        })?;
        self.done = i64::try_from(rows.len()).unwrap_or(page) < page;
        if let Some((k, _)) = rows.last() {
            self.from = Bound::Excluded(k.to_vec());
        }
        self.page = rows.into_iter();
        Ok(())
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Iterator for Pages {
    type Item = Result<(Bytes, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(kv) = self.page.next() {
                return Some(Ok(kv));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

impl Backend for PostgresBackend {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>> {
        let conn = self.reader();
        let key = key.to_vec();
        let rows = self.run(async move {
            let sql = format!("SELECT k, v FROM {} WHERE k = $1", table(space));
            conn.rows(&sql, &[&key]).await
        })?;
        Ok(rows.into_iter().next().map(|(_, v)| v))
    }

    fn range(&self, space: Space, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Entries {
        Box::new(Pages {
            conn: Arc::new(self.reader()),
            space,
            from: owned(from),
            to: owned(to),
            page: Vec::new().into_iter(),
            done: false,
            rt: self.handle(),
        })
    }

    fn last_before(&self, space: Space, to: Bound<&[u8]>) -> Result<Option<(Bytes, Bytes)>> {
        let conn = self.reader();
        let to = owned(to);
        let rows = self.run(async move {
            let (cond, param) = bound(as_ref(&to), "<=", "<", 1);
            let sql = format!(
                "SELECT k, v FROM {}{} ORDER BY k DESC LIMIT 1",
                table(space),
                cond.map(|c| format!(" WHERE {c}")).unwrap_or_default()
            );
            match param {
                Some(p) => conn.rows(&sql, &[&p]).await,
                None => conn.rows(&sql, &[]).await,
            }
        })?;
        Ok(rows.into_iter().next())
    }

    fn write(&self, batch: Batch, durability: Durability) -> Result<()> {
        if self.reader {
            return Err(LedgerError::Storage("PostgreSQL: a reader of this log does not write".into()));
        }
        match durability {
            Durability::Later => {
                self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(batch);
                Ok(())
            }
            // A commit is durable on the server (and on its synchronous standbys).
            Durability::Process | Durability::Synced => self.commit(vec![batch], false),
        }
    }

    fn sync(&self) -> Result<()> {
        if self.reader {
            return Ok(());
        }
        if self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty() {
            return Ok(());
        }
        self.commit(Vec::new(), true)
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        // Let go of the lease at once, so that the next process to open the log (the
        // command after this one) finds it free; the connections close with the runtime.
        let writer = Arc::clone(&self.writer);
        let _ = self.run(async move {
            let unlock = async {
                let w = writer.lock().await;
                w.client.simple_query("SELECT pg_advisory_unlock_all()").await.map(|_| ()).map_err(pg)
            };
            tokio::time::timeout(KEEPALIVE, unlock).await.unwrap_or(Ok(()))
        });
        // Not dropped in place: that would block (or, inside an async context, panic).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
