//! A throw-away PostgreSQL server for tests (feature `test-postgres`): Debian's
//! PostgreSQL binaries, a fresh cluster in a temporary directory, on a free loopback
//! port, run as the `postgres` user when the tests run as root (the server refuses to run
//! as root), stopped and removed when dropped. Where the binaries are missing and the
//! tests run as root, it installs Debian's `postgresql` package first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running throw-away server.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

static STARTED: AtomicU64 = AtomicU64::new(0);

/// The options of a server in a synchronous pair: WAL for streaming, and every commit
/// waiting for one standby (whichever is attached).
const REPLICATION: &str = "-c wal_level=replica -c max_wal_senders=10 -c synchronous_standby_names=* -c hot_standby=on";

/// Runs `cmd` (as the `postgres` user when `as_postgres`); panics with its output when it
/// fails.
fn run(as_postgres: bool, cmd: &Path, args: &[&str]) {
    let out = if as_postgres {
        Command::new("runuser").arg("-u").arg("postgres").arg("--").arg(cmd).args(args).output()
    } else {
        Command::new(cmd).args(args).output()
    }
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        cmd.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory of `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("no free port: {e}"));
    l.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl ThrowawayPostgres {
    /// Starts a fresh server (installing Debian's `postgresql` first where it is missing
    /// and the tests run as root). Panics with what went wrong.
    #[must_use]
    pub fn start() -> Self {
        Self::start_as(free_port(), "", None)
    }

    /// Starts a fresh primary for synchronous streaming replication: every commit waits
    /// until a standby has it ([`ThrowawayPostgres::start_replica`]).
    #[must_use]
    pub fn start_primary() -> Self {
        Self::start_as(free_port(), REPLICATION, None)
    }

    /// Starts a synchronous standby of this server (a base backup of it, streaming from
    /// it), on `port`; it takes over when promoted ([`ThrowawayPostgres::promote`]).
    #[must_use]
    pub fn start_replica(&self, port: u16) -> Self {
        Self::start_as(port, REPLICATION, Some(self.port))
    }

    /// The port it listens on (127.0.0.1).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server's postmaster (`kill -9`), as a crash of its machine would end it.
    pub fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| panic!("no postmaster.pid in {}", self.dir.display()));
        run(false, Path::new("kill"), &["-9", &pid]);
        // Its backends end once they see the postmaster gone; wait for the port.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "the killed server still answers");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Promotes a standby to primary (and waits until it accepts writes).
    pub fn promote(&self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        run(self.as_postgres, &self.bin.join("pg_ctl"), &["-D", &data, "-w", "promote"]);
    }

    fn start_as(port: u16, options: &str, replica_of: Option<u16>) -> Self {
        let root = is_root();
        let bin = bindir().or_else(|| {
            if root {
                let _ = Command::new("apt-get").args(["update", "-qq"]).status();
                let _ = Command::new("apt-get").args(["install", "-y", "-qq", "postgresql"]).status();
            }
            bindir()
        });
        let bin = bin.unwrap_or_else(|| panic!("no PostgreSQL server binaries: apt-get install -y postgresql"));
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("settle-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        if root {
            run(false, Path::new("chown"), &["postgres", dir.to_str().unwrap_or_default()]);
        }
        let data = dir.join("data");
        let (data_s, dir_s) = (data.to_string_lossy().into_owned(), dir.to_string_lossy().into_owned());
        match replica_of {
            None => run(root, &bin.join("initdb"), &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"]),
            Some(primary) => {
                let primary = primary.to_string();
                let args = ["-h", "127.0.0.1", "-p", &primary, "-U", "postgres", "-D", &data_s, "-R", "-X", "stream"];
                run(root, &bin.join("pg_basebackup"), &[&args[..], &["-c", "fast"]].concat());
            }
        }
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={dir_s} -c max_connections=50 {options}"
        );
        let log = dir.join("pg.log").to_string_lossy().into_owned();
        run(root, &bin.join("pg_ctl"), &["-D", &data_s, "-w", "-l", &log, "-o", &options, "start"]);
        Self { bin, dir, port, as_postgres: root }
    }

    /// The URL of database `db` on it (user `postgres`).
    #[must_use]
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name`; returns its URL.
    #[must_use]
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        run(false, &self.bin.join("createdb"), &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name]);
        self.url(name)
    }

    /// Runs `sql` against database `db` with `psql`; returns what it printed.
    #[must_use]
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", db, "-At", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let ctl = self.bin.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser").arg("-u").arg("postgres").arg("--").arg(&ctl).args(args).output()
        } else {
            Command::new(&ctl).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
