//! `settle`: the command line (the HTTP API server, the demo, the audits, ...) over the
//! `settle` library.

use settle::{app, audit, auth, bank, demo, keystore, load, service, webhooks};

/// mimalloc: the settlement path allocates and frees many short-lived buffers (JSON,
/// JWS, records) from several threads; glibc's allocator spent a fifth of the load
/// profile in malloc/free and consolidation. Its v2 line (which returns freed pages to
/// the system after 10 ms, v3 after a second) without transparent huge pages: the same
/// throughput, and a fifth less peak memory (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use settle::home::Home;

/// Set when a write to standard output found its reader gone.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Standard output, for everything a command prints. Rust ignores SIGPIPE, so a write to
/// a pipe whose reader has gone (`settle balances | head -1`) fails with EPIPE instead of
/// ending the process, and `println!` would panic on it; a write through this notes it,
/// and `main` then ends quietly with success, as a Unix tool that SIGPIPE ends would (and
/// as ripgrep does). Any other error, and EPIPE on anything but standard output, stays an
/// error.
struct Stdout;

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().lock().write(buf).inspect_err(reader_gone)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush().inspect_err(reader_gone)
    }
}

fn reader_gone(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        READER_GONE.store(true, Ordering::Relaxed);
    }
}

/// `println!` through [`Stdout`]: the write's error is returned, not a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut Stdout, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Commission settlement with signed mandates and verifiable receipts.
#[derive(Parser)]
#[command(name = "settle", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole partner program end to end on the embedded store, then verify it.
    Demo {
        /// Data directory (created; a previous demo there is replaced). With --store, it
        /// holds only the demo's audit bundle.
        #[arg(long, default_value = "settle-demo-data")]
        data: PathBuf,
        /// Run on this store instead: `fjall:DIR` (the same as --data DIR) or
        /// `postgres://user@host:port/database` (empty, or a previous demo's, which is
        /// replaced).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Number of conversions.
        #[arg(long, default_value_t = 10_000)]
        conversions: u64,
        /// Seed: same seed, byte-identical log and export.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Replay and check everything: chain, tree, checkpoints, splits, mandates, money.
    Audit {
        /// A live data directory.
        #[arg(long, conflicts_with_all = ["bundle", "file", "store"], required_unless_present_any = ["bundle", "file", "store"])]
        data: Option<PathBuf>,
        /// A live store instead: `fjall:DIR` (the same as --data DIR) or
        /// `postgres://user@host:port/database`.
        #[arg(long, value_name = "URL", conflicts_with_all = ["bundle", "file"])]
        store: Option<String>,
        /// An exported bundle (checked with public keys only).
        #[arg(long, conflicts_with = "file")]
        bundle: Option<PathBuf>,
        /// An exported log file (`settle export --file`): chain, tree, checkpoints and
        /// signatures, with no database.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --bundle or --file: the vendor's JWKS as you obtained it (else the
        /// export's own).
        #[arg(long, conflicts_with_all = ["data", "store"])]
        keys: Option<PathBuf>,
        /// With --bundle or --file: a file of checkpoints you held before (a signed note,
        /// the JSON of GET /v1/checkpoints/latest, a bundle's checkpoints.json, receipts,
        /// a log file); the log must extend each (repeat for more files).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["data", "store"])]
        known: Vec<PathBuf>,
    },
    /// Write a self-contained audit bundle (--out), or the log alone as one
    /// self-contained JSON Lines file (--file).
    Export {
        #[command(flatten)]
        place: Place,
        /// Output directory (new or empty).
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        out: Option<PathBuf>,
        /// Output file (must not exist): the log, its signed checkpoints and the vendor's
        /// public keys.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Verify receipts offline with the vendor's public keys.
    Verify {
        /// JWKS file.
        #[arg(long)]
        keys: PathBuf,
        /// The log identity every receipt's checkpoint must name.
        #[arg(long)]
        origin: Option<String>,
        /// Refuse receipts whose mandate does not pay (claw back from, or adjust for) this partner.
        #[arg(long, value_name = "ID")]
        partner: Option<String>,
        /// A file of checkpoints you held before (a signed note, the JSON of GET
        /// /v1/checkpoints/latest, a bundle's checkpoints.json, receipts); every receipt's
        /// checkpoint must be the same or extend it (repeat for more files).
        #[arg(long, value_name = "FILE")]
        known: Vec<PathBuf>,
        /// With --known: a consistency proof between a held checkpoint and a receipt's of
        /// another size, as GET /v1/checkpoints/consistency returns it (repeat for more).
        #[arg(long, value_name = "FILE", requires = "known")]
        proof: Vec<PathBuf>,
        /// Receipt files: one JSON receipt, or JSON Lines of receipts.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// A partner's statement for a period.
    Statement {
        #[command(flatten)]
        place: Place,
        /// Partner id.
        #[arg(long)]
        partner: String,
        /// From (inclusive), YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// To (exclusive), YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        to: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
    },
    /// Every partner's balances as of a log position (default: the end of the log).
    Balances {
        #[command(flatten)]
        place: Place,
        /// Log position: the books after every fact recorded at or before it.
        #[arg(long)]
        at: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
    },
    /// Serve the HTTP API.
    Serve {
        #[command(flatten)]
        place: Place,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8417")]
        listen: std::net::SocketAddr,
        /// Webhook retries: delay before the first retry, in ms (doubles per attempt).
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
        webhook_backoff_ms: u64,
        /// Webhook retries: longest delay between two attempts, in ms.
        #[arg(long, default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(1..))]
        webhook_backoff_cap_ms: u64,
        /// Webhook attempts before an event goes to the dead letters.
        #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u32).range(1..=100))]
        webhook_attempts: u32,
        /// How long a webhook receiver has to answer, in ms.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        webhook_timeout_ms: u64,
        /// Extra CA certificates (PEM) trusted for https webhook receivers, beside the
        /// Mozilla root store.
        #[arg(long)]
        webhook_ca: Option<PathBuf>,
        /// Deliver webhooks to loopback and private addresses too (off by default, so a
        /// subscriber cannot make the server reach into its own network).
        #[arg(long)]
        webhook_allow_private: bool,
    },
    /// Serve MCP over stdio for an agent (token in SETTLE_TOKEN; tools listed without).
    Mcp {
        #[command(flatten)]
        place: Place,
    },
    /// Drive the HTTP API on 127.0.0.1 with a load and report throughput and latency.
    Load {
        /// A new store: `--data DIR` (new or empty) or `--store URL` (an empty database).
        #[command(flatten)]
        place: Place,
        /// Conversions in the batched phase.
        #[arg(long, default_value_t = 100_000)]
        conversions: u64,
        /// Conversions per batch request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Batch requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Arrival rate of single conversions, per second (0: skip that phase).
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Length of the single-conversion phase, seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Leads (3-hop chains) the conversions are spread over.
        #[arg(long, default_value_t = 1_000)]
        leads: usize,
        /// Ask for the full answer to every write (the records written and the signed
        /// mandates, about 9 KiB a conversion) instead of the minimal one (`Prefer:
        /// return=minimal`: outcome and mandate ids).
        #[arg(long)]
        full_answers: bool,
    },
    /// Manage signing keys and API tokens.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Pay partners by bank transfer: their accounts, ISO 20022 payment files, and the
    /// bank's notifications reconciled.
    Payouts {
        #[command(subcommand)]
        cmd: PayoutsCmd,
    },
}

/// A bank account on the command line.
#[derive(clap::Args)]
struct AccountArgs {
    /// IBAN (spaces allowed).
    #[arg(long)]
    iban: String,
    /// BIC of the account's bank (8 or 11 characters).
    #[arg(long)]
    bic: Option<String>,
}

#[derive(Subcommand)]
enum PayoutsCmd {
    /// Set the vendor's own account: the debtor of every payment file.
    Debtor {
        #[command(flatten)]
        place: Place,
        /// The vendor's name, as its bank knows it.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        account: AccountArgs,
    },
    /// Register where a partner is paid on the bank rail (replacing its earlier account).
    Instrument {
        #[command(flatten)]
        place: Place,
        /// Partner id.
        #[arg(long)]
        partner: String,
        /// The account holder's name.
        #[arg(long)]
        holder: String,
        #[command(flatten)]
        account: AccountArgs,
        /// ISO 4217 currency it is paid in (default: the partner's program's).
        #[arg(long)]
        currency: Option<String>,
    },
    /// Erase a partner's bank details (every account it registered): the log keeps only
    /// their salted hashes.
    Erase {
        #[command(flatten)]
        place: Place,
        /// Partner id.
        #[arg(long)]
        partner: String,
    },
    /// Write the ISO 20022 pain.001.001.09 payment file of payout batches on the bank rail.
    File {
        #[command(flatten)]
        place: Place,
        /// Payout batch id (repeat for a file of several).
        #[arg(long, required = true)]
        batch: Vec<String>,
        /// Output file (replaced if it exists; the same batches give the same bytes).
        #[arg(long)]
        out: PathBuf,
        /// Requested execution date, YYYY-MM-DD (default: each batch's own day).
        #[arg(long)]
        execution_date: Option<chrono::NaiveDate>,
    },
    /// Apply a bank's camt.054 notification (.001.02 or .001.08): booked payments pay
    /// their batches, returns fail them; what matches nothing is reported.
    Reconcile {
        #[command(flatten)]
        place: Place,
        /// The notification (XML).
        #[arg(long)]
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Csv,
    Json,
}

/// Where the log and the keys are.
#[derive(clap::Args)]
struct Place {
    /// Data directory: the log on the embedded store (fjall) and the keys.
    #[arg(long, required_unless_present = "store")]
    data: Option<PathBuf>,
    /// The store instead: `fjall:DIR` (the same as --data DIR) or
    /// `postgres://user@host:port/database` (the log's tables and the keys in that
    /// database; several hosts and target_session_attrs=read-write as libpq takes them).
    #[arg(long, value_name = "URL", conflicts_with = "data")]
    store: Option<String>,
}

impl Place {
    fn home(&self) -> Result<Home> {
        Home::of(self.data.as_deref(), self.store.as_deref())
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create the vendor's keys in a new data directory.
    Create {
        #[command(flatten)]
        place: Place,
        /// Vendor id (the `iss` of every mandate).
        #[arg(long, default_value = "vendor")]
        vendor: String,
        /// Log origin for checkpoints.
        #[arg(long, default_value = "settle.local/log")]
        origin: String,
    },
    /// Retire the current signing key and start a new one (old signatures stay valid).
    Rotate {
        #[command(flatten)]
        place: Place,
    },
    /// List keys (public) and tokens (ids, kinds, scopes, lives; never secrets).
    List {
        #[command(flatten)]
        place: Place,
    },
    /// Issue an API token; it is printed once and stored hashed.
    Token {
        #[command(flatten)]
        place: Place,
        /// Principal kind.
        #[arg(long, value_enum)]
        kind: PrincipalArg,
        /// Partner id (partner tokens), agent id (agent tokens), or a name.
        #[arg(long)]
        subject: String,
        /// For partner agents: the partner they act for.
        #[arg(long)]
        partner: Option<String>,
        /// Scopes (repeat or comma-separate).
        #[arg(long, value_enum, value_delimiter = ',', required = true)]
        scope: Vec<keystore::Scope>,
        /// Life of the token (`90d`, `12h`, `30m`); without it, until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Revoke an API token by its id (`tok_…`): a running server refuses it at once.
    Revoke {
        #[command(flatten)]
        place: Place,
        /// The token's id, as `settle keys list` shows it.
        id: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrincipalArg {
    VendorAdmin,
    VendorAgent,
    Partner,
    PartnerAgent,
}

fn print_lines<T: serde::Serialize>(lines: &[T], format: Format) -> Result<()> {
    match format {
        Format::Csv => audit::write_csv(lines, Stdout),
        Format::Json => {
            outln!("{}", serde_json::to_string_pretty(lines)?)?;
            Ok(())
        }
    }
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("'{s}' is not a date (YYYY-MM-DD) or an RFC 3339 time"))?;
    Ok(d.and_hms_opt(0, 0, 0).context("bad date")?.and_utc())
}

/// The end of an audit's line when it checked checkpoints held before.
fn extends(known: usize) -> String {
    if known == 0 { String::new() } else { format!("; the log extends the {known} checkpoint(s) you hold") }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Demo { data, store, conversions, seed, quiet } => {
            if conversions == 0 {
                bail!("--conversions must be at least 1");
            }
            let home = Home::of(Some(&data), store.as_deref())?;
            let summary = demo::run(&data, &home, conversions, seed, quiet)?;
            std::io::Write::write_all(&mut Stdout, summary.as_bytes())?;
            Ok(())
        }
        Cmd::Audit { data, store, bundle, file, keys, known } => {
            let live = match (data, store) {
                (None, None) => None,
                (data, store) => Some(Home::of(data.as_deref(), store.as_deref())?),
            };
            audit_cmd(live, bundle, file, keys, &known)
        }
        Cmd::Export { place, out: None, file: Some(f) } => {
            let n = audit::export_file(&place.home()?, &f)?;
            outln!("exported {n} records with their checkpoints and keys to {}", f.display())?;
            Ok(())
        }
        Cmd::Export { place, out, file: _ } => {
            let out = out.context("give --out or --file")?;
            let m = audit::export(&place.home()?, &out)?;
            outln!(
                "exported {} records and {} files to {} (root {})",
                m.records,
                m.files.len() + 1,
                out.display(),
                m.root
            )?;
            Ok(())
        }
        Cmd::Verify { keys, origin, partner, known, proof, files } => {
            let known = audit::read_known(&known)?;
            let v = audit::verify_files(&audit::VerifyOptions {
                keys: &keys,
                files: &files,
                origin: origin.as_deref(),
                partner: partner.as_deref(),
                known: &known,
                proofs: &proof,
            })?;
            if known.is_empty() {
                outln!("{} receipts verified", v.receipts)?;
            } else {
                outln!(
                    "{} receipts verified; their {} checkpoint(s) extend the {} checkpoint(s) you hold",
                    v.receipts,
                    v.checkpoints,
                    v.known
                )?;
            }
            Ok(())
        }
        Cmd::Statement { place, partner, from, to, format } => {
            let from = from.as_deref().map(parse_time).transpose()?;
            let to = to.as_deref().map(parse_time).transpose()?;
            // The ledger alone: the statement replays the log with an engine of its own.
            let (ledger, kf, _) = service::open_ledger_to_read(&place.home()?)?;
            let cfg = settle_engine::EngineConfig { vendor: kf.vendor.clone(), salt_secret: kf.salt()? };
            let lines = audit::statement(&ledger, cfg, &partner, from, to)?;
            ledger.close()?;
            print_lines(&lines, format)
        }
        Cmd::Balances { place, at, format } => {
            let (ledger, kf, _) = service::open_ledger_to_read(&place.home()?)?;
            let cfg = settle_engine::EngineConfig { vendor: kf.vendor.clone(), salt_secret: kf.salt()? };
            let lines = audit::balances(&ledger, cfg, at)?;
            ledger.close()?;
            print_lines(&lines, format)
        }
        Cmd::Serve {
            place,
            listen,
            webhook_backoff_ms,
            webhook_backoff_cap_ms,
            webhook_attempts,
            webhook_timeout_ms,
            webhook_ca,
            webhook_allow_private,
        } => {
            let policy = webhooks::RetryPolicy {
                base: Duration::from_millis(webhook_backoff_ms),
                cap: Duration::from_millis(webhook_backoff_cap_ms),
                attempts: webhook_attempts,
                timeout: Duration::from_millis(webhook_timeout_ms),
                allow_private: webhook_allow_private,
            };
            app::serve(&place.home()?, listen, policy, webhook_ca.as_deref())
        }
        Cmd::Mcp { place } => app::mcp_stdio(&place.home()?),
        Cmd::Load { place, conversions, batch, concurrency, rate, seconds, leads, full_answers } => {
            let home = place.home()?;
            load::run(&load::LoadConfig { home, conversions, batch, concurrency, rate, seconds, leads, full_answers })
        }
        Cmd::Keys { cmd } => keys(cmd),
        Cmd::Payouts { cmd } => payouts(cmd),
    }
}

/// `settle audit`: of a log file, a live store, or a bundle.
fn audit_cmd(
    live: Option<Home>,
    bundle: Option<PathBuf>,
    file: Option<PathBuf>,
    keys: Option<PathBuf>,
    known: &[PathBuf],
) -> Result<()> {
    let known = audit::read_known(known)?;
    if let Some(f) = file {
        debug_assert!(live.is_none() && bundle.is_none());
        let (r, origin) = audit::audit_file(&f, keys.as_deref(), &known)?;
        outln!(
            "audit ok: {} — log file of {origin}: {} records, {} checkpoints, chain and signatures verified, root {}{}",
            f.display(),
            r.records,
            r.checkpoints,
            hex::encode(r.root),
            extends(known.len())
        )?;
        if keys.is_none() {
            outln!("note: checked against the file's own keys; pin the vendor's keys with --keys")?;
        }
        return Ok(());
    }
    let mut unpinned = false;
    let (r, what) = match (live, bundle) {
        (Some(h), _) => (audit::audit_data(&h)?, h.describe()),
        (None, Some(b)) => {
            let r = audit::audit_bundle(&b, keys.as_deref(), &known)?;
            unpinned = keys.is_none();
            (r, b.display().to_string())
        }
        (None, None) => bail!("give --data, --store, --bundle or --file"),
    };
    let uncovered =
        if r.uncovered > 0 { format!(" ({} records not yet under a checkpoint)", r.uncovered) } else { String::new() };
    outln!(
        "audit ok: {} — {} records, {} checkpoints, {} mandates re-derived and verified, {} receipts, {} partner books balanced, money conserved{uncovered}{}",
        what,
        r.records,
        r.checkpoints,
        r.mandates,
        r.receipts,
        r.partners,
        extends(known.len())
    )?;
    if unpinned {
        outln!("note: checked against the bundle's own jwks.json; pin the vendor's keys with --keys")?;
    }
    Ok(())
}

fn keys(cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::Create { place, vendor, origin } => {
            let home = place.home()?;
            let kh = home.key_home()?;
            if kh.exists()? {
                bail!("{} already has keys; use `settle keys rotate`", home.describe());
            }
            let kf = keystore::KeyFile::new(
                &vendor,
                &origin,
                keystore::random_seed()?,
                keystore::random_seed()?,
                chrono::Utc::now().timestamp(),
            );
            kh.save(&kf)?;
            outln!("created keys for {vendor} in {} (kid {})", home.describe(), kf.current()?.kid())?;
            Ok(())
        }
        KeysCmd::Rotate { place } => {
            let home = place.home()?;
            // The running process would go on signing with the retired key: refuse. (On
            // PostgreSQL, taking the writer lease is that check.)
            let kh = match &home {
                Home::Dir(data) if data.join("log").exists() => {
                    let (l, _, kh) = service::open_ledger(&home).map_err(|e| {
                        anyhow::anyhow!("the log in {} is in use (stop `settle serve` first): {e:#}", data.display())
                    })?;
                    l.close()?;
                    kh
                }
                _ => home.key_home()?,
            };
            // Under the key file's lock, as every change of it (tokens too).
            let seed = keystore::random_seed()?;
            let (old, new) = auth::tokens::update(&kh, |kf| {
                let old = kf.current()?.kid().to_owned();
                kf.rotate(seed, chrono::Utc::now().timestamp());
                Ok((old, kf.current()?.kid().to_owned()))
            })?;
            outln!("retired {old}; new signing key {new} (takes effect when settle next opens the log)")?;
            Ok(())
        }
        KeysCmd::List { place } => {
            let kf = place.home()?.key_home()?.load()?;
            outln!("{}", serde_json::to_string_pretty(&kf.jwks()?)?)?;
            let now = chrono::Utc::now().timestamp();
            for t in &kf.tokens {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(r), _) => format!("revoked at {r}"),
                    (None, Some(e)) if e <= now => format!("expired at {e}"),
                    (None, Some(e)) => format!("in force until {e}"),
                    (None, None) => "in force".to_owned(),
                };
                outln!("token {} {:?} {} scopes {:?} {state}", t.id, t.kind, t.subject, t.scopes)?;
            }
            Ok(())
        }
        KeysCmd::Revoke { place, id } => {
            let now = chrono::Utc::now().timestamp();
            if auth::tokens::update(&place.home()?.key_home()?, |kf| auth::tokens::revoke(kf, &id, now))? {
                outln!("token {id} revoked")?;
            } else {
                outln!("token {id} was already revoked")?;
            }
            Ok(())
        }
        KeysCmd::Token { place, kind, subject, partner, scope, expires_in } => {
            let kind = match kind {
                PrincipalArg::VendorAdmin => keystore::PrincipalKind::VendorAdmin,
                PrincipalArg::VendorAgent => keystore::PrincipalKind::VendorAgent,
                PrincipalArg::Partner => keystore::PrincipalKind::Partner,
                PrincipalArg::PartnerAgent => keystore::PrincipalKind::PartnerAgent,
            };
            let expires_in = expires_in
                .map(|d| i64::try_from(d.as_secs()).map_err(|_| anyhow::anyhow!("--expires-in is too long")))
                .transpose()?;
            let req = auth::tokens::TokenRequest { kind, subject, partner, scopes: scope, expires_in };
            let now = chrono::Utc::now().timestamp();
            let (token, t) = auth::tokens::update(&place.home()?.key_home()?, |kf| auth::tokens::issue(kf, req, now))?;
            outln!("{token}")?;
            eprintln!("token {} stored (hashed); this is the only time it is shown", t.id);
            Ok(())
        }
    }
}

/// The vendor's command-line principal, as the log names who stated a fact.
const CLI_BY: &str = "vendor:cli";

fn payouts(cmd: PayoutsCmd) -> Result<()> {
    let place = match &cmd {
        PayoutsCmd::Debtor { place, .. }
        | PayoutsCmd::Instrument { place, .. }
        | PayoutsCmd::Erase { place, .. }
        | PayoutsCmd::File { place, .. }
        | PayoutsCmd::Reconcile { place, .. } => place,
    };
    let svc = service::Service::open(&place.home()?)?;
    let before = svc.ledger().size();
    let done = payouts_on(&svc, cmd);
    // What it recorded is under a signed checkpoint before it ends: its receipts (a
    // bank-paid mandate's, say) can be proved at once, as `settle serve` would sign within
    // a second.
    if done.is_ok() && svc.ledger().size() > before {
        svc.checkpoint(chrono::Utc::now().timestamp())?;
    }
    svc.close()?;
    done
}

/// Records `event` from the command line; its refusal is the command's error.
fn record_cli(svc: &service::Service, event: settle_engine::Event) -> Result<()> {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let sub =
        service::Submit { key: hex::encode(key), by: CLI_BY.into(), at: chrono::Utc::now(), event, request: None };
    svc.submit_blocking(vec![sub]).pop().context("no outcome")??;
    Ok(())
}

fn payouts_on(svc: &service::Service, cmd: PayoutsCmd) -> Result<()> {
    use bank::instruments::Account;
    match cmd {
        PayoutsCmd::Debtor { name, account: AccountArgs { iban, bic }, .. } => {
            let d = bank::instruments::set_debtor(svc, &name, Account { holder: name.clone(), iban, bic })?;
            outln!("debtor account set: {} {}", d.name, d.account.masked_iban())?;
        }
        PayoutsCmd::Instrument { partner, holder, account: AccountArgs { iban, bic }, currency, .. } => {
            let mut salt = [0u8; 32];
            getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let r = bank::Registration { holder, iban, bic, currency };
            let (event, stored) = bank::prepare(svc, &partner, r, salt, chrono::Utc::now())?;
            let recorded = record_cli(svc, event);
            bank::settled(svc, &stored)?;
            recorded?;
            let v = bank::instruments::View::from(&stored);
            outln!("partner {partner} is paid to {} {} ({}) as {}", v.holder, v.iban, v.currency, v.instrument)?;
        }
        PayoutsCmd::Erase { partner, .. } => {
            if let Some((event, _)) = bank::removal(svc, &partner)? {
                record_cli(svc, event)?;
            }
            let n = bank::instruments::erase(svc, &partner, None)?;
            outln!("erased the bank details of partner {partner} ({n} account(s))")?;
        }
        PayoutsCmd::File { batch, out, execution_date, .. } => {
            let xml = bank::payment_file(svc, &batch, execution_date)?;
            let tmp = out.with_extension("partial");
            std::fs::write(&tmp, &xml).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
            outln!("wrote {} ({} payout batch(es), {} bytes)", out.display(), batch.len(), xml.len())?;
        }
        PayoutsCmd::Reconcile { file, format, .. } => {
            let xml = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let r = bank::reconcile::reconcile(svc, &xml, CLI_BY, chrono::Utc::now())?;
            match format {
                ReportFormat::Json => outln!("{}", serde_json::to_string_pretty(&r)?)?,
                ReportFormat::Text => print_report(&r)?,
            }
        }
    }
    Ok(())
}

fn print_report(r: &bank::reconcile::Report) -> Result<()> {
    let counts: Vec<String> = r.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let again = if r.already_applied { " (applied before: nothing changed now)" } else { "" };
    outln!("{} {}: {}{again}", r.version, r.message_id, counts.join(", "))?;
    for l in &r.lines {
        let what = bank::reconcile::name(l.outcome);
        outln!(
            "  {what:9} {} {} {} {}{}",
            l.end_to_end_id.as_deref().unwrap_or("-"),
            l.amount,
            l.currency,
            l.batch.as_deref().map(|b| format!("batch {b}")).unwrap_or_default(),
            l.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        )?;
    }
    Ok(())
}

fn main() -> ExitCode {
    // The worker threads that sign, hash and verify on all cores, named for profiles.
    let _ = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("settle-pool-{i}")).build_global();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // What was printed went to a reader that stopped reading: done (see `Stdout`).
        Err(_) if READER_GONE.load(Ordering::Relaxed) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("settle: {msg}");
            ExitCode::FAILURE
        }
    }
}
