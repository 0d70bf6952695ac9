//! The running store: opening it (keys, service, tokens), serving it (`settle serve`:
//! the HTTP door with webhooks; `settle mcp`: MCP over stdio), what it does on its own
//! while it runs (checkpoints, holds released), and closing it cleanly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use settle_engine::Event;
use settle_engine::model::DisputeStatus;

use crate::auth::tokens::Tokens;
use crate::doors;
use crate::home::Home;
use crate::ops::App;
use crate::service::{Service, Submit};
use crate::webhooks::{RetryPolicy, Webhooks};

/// How often the store looks whether a checkpoint is due.
const TICK: Duration = Duration::from_secs(1);
/// Every this many ticks, held commissions due are released.
const HOLDS_EVERY_TICKS: u64 = 60;

/// What a running store does on its own: a signed checkpoint at least every second while
/// the log grows (so receipts are available within a second), and held commissions
/// released once a minute when due. Runs until its task is aborted.
pub async fn background(svc: Arc<Service>) {
    let mut tick = tokio::time::interval(TICK);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        let l = svc.ledger().clone();
        let size = l.size();
        let covered = l.latest_checkpoint().ok().flatten().map_or(0, |c| c.checkpoint.size);
        if size > covered
            && let Err(e) = l.checkpoint(Utc::now().timestamp()).await
        {
            tracing::error!("checkpoint failed: {e}");
        }
        if n.is_multiple_of(HOLDS_EVERY_TICKS) {
            release_due_holds(&svc).await;
        }
    }
}

/// Advances the engine's clock when something is due now: held commissions to release,
/// or an open dispute past its response time to flag overdue.
async fn release_due_holds(svc: &Arc<Service>) {
    let now = Utc::now();
    let due = svc.with_state(|s| {
        s.holds.keys().next().is_some_and(|t| *t <= now.timestamp())
            || s.disputes.values().any(|d| d.status == DisputeStatus::Open && !d.overdue && d.due_at <= now)
    });
    if due {
        let sub = Submit {
            request: None,
            key: format!("clock/advance/{}", now.timestamp()),
            by: "engine:clock".into(),
            at: now,
            event: Event::HoldsAdvanced { to: now },
        };
        let _ = svc.submit(vec![sub]).await;
    }
}

/// The store of `home`, opened for the doors: its keys, service (engine restored) and
/// tokens; `base` is the public base URL the doors name (no webhook deliverer: `serve`
/// starts one).
pub fn open(home: &Home, base: String) -> Result<App> {
    app_of(Service::open(home)?, base)
}

/// The doors' view of `svc`: its keys and tokens.
fn app_of(svc: Arc<Service>, base: String) -> Result<App> {
    let keys = Arc::new(svc.key_home().load()?);
    let tokens = Arc::new(Tokens::open(svc.key_home().clone())?);
    Ok(App {
        svc,
        keys,
        tokens,
        base,
        hooks: None,
        sessions: Arc::default(),
        audits: Arc::default(),
        flows: Arc::default(),
    })
}

/// The writer's service of `home`; on PostgreSQL, when another node holds the writer
/// lease, this node is first its standby ([`standby`]) until it takes the lease over, or
/// `None` if it was stopped while a standby.
fn writer_of(home: &Home, listen: std::net::SocketAddr, rt: &tokio::runtime::Runtime) -> Result<Option<Arc<Service>>> {
    let Home::Postgres(url) = home else { return Service::open(home).map(Some) };
    match Service::open(home) {
        Ok(svc) => Ok(Some(svc)),
        Err(e) if crate::service::writer_elsewhere(&e) => match standby(url, home, listen, rt)? {
            Some(backend) => Service::open_on(backend, home).map(Some),
            None => Ok(None),
        },
        Err(e) => Err(e),
    }
}

/// A standby of the log at `url`: serves its reads on `listen` (the log as of its latest
/// signed checkpoint, caught up twice a second; every write refused with 503) while it
/// waits for the writer lease, then stops serving and returns the backend that holds the
/// lease. `None` when it is stopped (SIGTERM, Ctrl-C) first.
fn standby(
    url: &str,
    home: &Home,
    listen: std::net::SocketAddr,
    rt: &tokio::runtime::Runtime,
) -> Result<Option<Arc<dyn settle_ledger::backend::Backend>>> {
    let (took, lease) = tokio::sync::oneshot::channel();
    let (u, shown) = (url.to_owned(), home.describe());
    std::thread::Builder::new()
        .name("settle-standby".into())
        .spawn(move || {
            let b = settle_ledger::backend::PostgresBackend::open_standby(&u, |lease| {
                tracing::info!(
                    "standby: {} holds the writer lease of {shown} (epoch {}); taking over when it stops",
                    lease.holder,
                    lease.epoch
                );
            });
            let _ = took.send(b);
        })
        .context("cannot start the standby's thread")?;
    let svc = Service::open_follower(url)?;
    let app = app_of(Arc::clone(&svc), format!("http://{listen}"))?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!("settle standby: serving reads of {} on http://{listen}", home.describe());
        // Bounded: each turn waits half a second; aborted when the standby stops.
        let follower = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK / 2).await;
                let s = Arc::clone(&svc);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.follow()).await {
                    tracing::warn!("standby: cannot catch up with the log: {e:#}");
                }
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(
                axum::serve::ListenerExt::tap_io(listener, crate::doors::http::no_delay),
                doors::http::router(app, listen),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
        );
        let outcome = tokio::select! {
            b = lease => Some(b.context("the standby's thread stopped")?),
            () = shutdown(None) => None,
        };
        let _ = stop.send(());
        let _ = server.await;
        follower.abort();
        match outcome {
            Some(b) => {
                let b: Arc<dyn settle_ledger::backend::Backend> = Arc::new(b?);
                tracing::info!("standby: took the writer lease; taking over");
                Ok(Some(b))
            }
            None => Ok(None),
        }
    })
}

/// Closes a drained store: the engine state saved, the writer stopped.
fn save_and_close(svc: &Service) -> Result<()> {
    svc.save_state()?;
    svc.close()
}

/// Serves the API on `listen` until SIGTERM/SIGINT; then drains, checkpoints, saves.
pub fn serve(
    home: &Home,
    listen: std::net::SocketAddr,
    webhooks: RetryPolicy,
    webhook_ca: Option<&Path>,
) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let extra_roots = webhook_ca.map(crate::webhooks::read_ca).transpose()?.unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The second node of a log on PostgreSQL is its standby until it takes over.
    let Some(svc) = writer_of(home, listen, &rt)? else { return Ok(()) };
    let mut app = app_of(Arc::clone(&svc), format!("http://{listen}"))?;
    rt.block_on(async move {
        let hooks = Webhooks::new(app.svc.clone(), app.keys.current()?, webhooks, extra_roots, app.tokens.clone())?;
        hooks.start()?;
        app.hooks = Some(hooks.clone());
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!("settle serving {} on http://{listen}", home.describe());
        let ticker = tokio::spawn(background(app.svc.clone()));
        // On PostgreSQL a node whose log stopped taking writes (fenced off by a newer
        // writer, or a commit that failed) steps down: it ends, letting go of the lease,
        // so that the standby takes over and its supervisor restarts it as a standby.
        let steps_down = matches!(home, Home::Postgres(_)).then(|| app.svc.clone());
        axum::serve(
            axum::serve::ListenerExt::tap_io(listener, crate::doors::http::no_delay),
            doors::http::router(app, listen),
        )
        .with_graceful_shutdown(shutdown(steps_down))
        .await?;
        ticker.abort();
        hooks.stop();
        Ok::<(), anyhow::Error>(())
    })?;
    drop(rt);
    if matches!(home, Home::Postgres(_)) && svc.ledger().is_poisoned() {
        anyhow::bail!(
            "the log in {} stopped taking writes (another node took the writer lease, or a commit failed): \
             this node stepped down; start it again to serve as a standby",
            home.describe()
        );
    }
    // Drained: a final checkpoint (best effort: the log is durable without it), then the
    // engine state, then close.
    let _ = svc.checkpoint(Utc::now().timestamp());
    save_and_close(&svc)
}

/// `settle mcp --data DIR` (or `--store URL`): serves MCP over stdio until the client closes it, with the
/// token in [`doors::mcp::TOKEN_ENV`].
pub fn mcp_stdio(home: &Home) -> Result<()> {
    let app = open(home, String::from("stdio"))?;
    let svc = app.svc.clone();
    let token = std::env::var(doors::mcp::TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // Checkpoints as in `settle serve`, so receipts of what this session records exist.
        let ticker = tokio::spawn(background(app.svc.clone()));
        let served = doors::mcp::serve_stdio(app, token).await;
        ticker.abort();
        served
    })?;
    drop(rt);
    if svc.ledger().size() > svc.ledger().latest_checkpoint()?.map_or(0, |c| c.checkpoint.size) {
        svc.checkpoint(Utc::now().timestamp())?;
    }
    save_and_close(&svc)
}

async fn shutdown(steps_down: Option<Arc<Service>>) {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    // Bounded: each turn waits a tick; ends when the log stops taking writes.
    let stopped = async {
        let Some(svc) = steps_down else { return std::future::pending().await };
        while !svc.ledger().is_poisoned() {
            tokio::time::sleep(TICK / 4).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = stopped => {
            tracing::error!("the log stopped taking writes: stepping down");
            return;
        }
    }
    tracing::info!("shutting down: draining requests");
}
