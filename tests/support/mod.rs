//! Shared helpers for the integration tests: running the `settle` binary, a server guard
//! that always stops the server, and a tiny HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Servers listen on 127.0.0.1 only; the client only ever connects there.

#![allow(dead_code, missing_docs)]

pub mod python;
pub mod venv;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_settle")
}

/// Runs `settle` with `args`; returns its output whatever the exit status.
pub fn settle<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin()).args(args).stdin(Stdio::null()).output().expect("cannot run the settle binary")
}

/// Runs `settle` and asserts success; returns stdout.
pub fn settle_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = settle(&args);
    assert!(
        out.status.success(),
        "settle {:?} failed ({}):\nstdout: {}\nstderr: {}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `settle keys create --data DIR`.
pub fn keys_create(data: &Path) {
    settle_ok([std::ffi::OsStr::new("keys"), "create".as_ref(), "--data".as_ref(), data.as_os_str()]);
}

/// `settle keys token ...`; returns the token printed on stdout.
pub fn token(data: &Path, kind: &str, subject: &str, partner: Option<&str>, scopes: &str) -> String {
    token_on(&["--data".as_ref(), data.as_os_str()], kind, subject, partner, scopes)
}

/// [`token`] on the store `place` names (`--data DIR` or `--store URL`).
pub fn token_on(place: &[&std::ffi::OsStr], kind: &str, subject: &str, partner: Option<&str>, scopes: &str) -> String {
    let mut args: Vec<std::ffi::OsString> = vec!["keys".into(), "token".into()];
    args.extend(place.iter().map(|a| a.to_os_string()));
    args.extend::<[std::ffi::OsString; 6]>([
        "--kind".into(),
        kind.into(),
        "--subject".into(),
        subject.into(),
        "--scope".into(),
        scopes.into(),
    ]);
    if let Some(p) = partner {
        args.push("--partner".into());
        args.push(p.into());
    }
    let out = settle_ok(&args);
    let t = out.trim().to_owned();
    assert!(t.starts_with("stl_") && t.len() == 68, "unexpected token output {out:?}");
    t
}

/// All scopes of a vendor administrator.
pub const ADMIN_SCOPES: &str =
    "programs-write,leads-write,conversions-write,refunds-write,settlements-write,read,webhooks-write";

/// A free port on 127.0.0.1 (bound then released; the caller retries on a race).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

/// A running `settle serve`; killed on drop if the test did not stop it.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    /// Starts `settle serve --data DATA` on a free 127.0.0.1 port and waits until it answers.
    /// Logs go to `LOGDIR/serve-PORT.log`.
    pub fn start(data: &Path, logdir: &Path) -> Server {
        Self::start_with(data, logdir, &[])
    }

    /// [`Server::start`] with more `settle serve` options.
    pub fn start_with(data: &Path, logdir: &Path, extra: &[&str]) -> Server {
        Self::start_on(&["--data".as_ref(), data.as_os_str()], logdir, extra)
    }

    /// `settle serve` on the store `place` names (`--data DIR` or `--store URL`), with
    /// more options.
    pub fn start_on(place: &[&std::ffi::OsStr], logdir: &Path, extra: &[&str]) -> Server {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut s = Self::spawn_on(place, logdir, port, extra);
            let addr = s.addr;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                // Ready when this child says it listens (not some other process on a
                // reused port) and answers.
                if s.log_text().contains("settle serving")
                    && let Ok(r) = http(addr, "GET", "/openapi.json", &[], None)
                    && r.status == 200
                {
                    return s;
                }
                if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    last = format!("settle serve exited with {st}: {}", s.log_text());
                    s.child = None;
                    break;
                }
                if Instant::now() > deadline {
                    panic!("settle serve did not answer within 60 s: {}", s.log_text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("settle serve did not start: {last}");
    }

    /// `settle serve` on the store `place` names, on 127.0.0.1:`port`, not waited for (on
    /// PostgreSQL it may be a standby: see [`Server::wait_for`]). Logs go to
    /// `LOGDIR/serve-PORT.log`.
    pub fn spawn_on(place: &[&std::ffi::OsStr], logdir: &Path, port: u16, extra: &[&str]) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap_or_else(|e| panic!("{e}"));
        let log = logdir.join(format!("serve-{port}.log"));
        let f = std::fs::File::create(&log).expect("cannot create the server log");
        let child = Command::new(bin())
            .arg("serve")
            .args(place)
            .args(["--listen", &addr.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn,settle::app=info")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log handle"))
            .stderr(f)
            .spawn()
            .expect("cannot start settle serve");
        Server { child: Some(child), addr, log }
    }

    /// Waits until its log says `what` (at most 60 s).
    pub fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log_text().contains(what) {
            assert!(Instant::now() < deadline, "settle serve never said {what:?}: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit status, if it ended (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("wait on settle serve"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("server already stopped")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 60 s) for a graceful exit; returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let st = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("cannot run kill");
        assert!(st.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().expect("wait on settle serve") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("settle serve did not stop within 60 s of SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (`kill -9`): no draining, no final checkpoint, no saved state.
    pub fn kill9(mut self) {
        self.kill9_in_place();
    }

    /// [`Server::kill9`], keeping the (dead) server's place, to start another in it.
    pub fn kill9_in_place(&mut self) {
        let mut child = self.child.take().expect("server already stopped");
        child.kill().expect("cannot kill settle serve");
        child.wait().expect("wait on settle serve");
    }

    pub fn api(&self, token: Option<&str>) -> Api {
        Api { addr: self.addr, token: token.map(str::to_owned) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response {} is not JSON ({e}): {}", self.status, self.text()))
    }

    /// Asserts an RFC 9457 problem with `status`; returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "expected {status}, got {}: {}", self.status, self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "a {status} must be application/problem+json: {}",
            self.text()
        );
        let v = self.json();
        assert_eq!(v["status"], json!(status), "problem status field: {v}");
        assert!(v["type"].as_str().is_some_and(|t| t.starts_with("https://")), "problem type: {v}");
        assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()), "problem title: {v}");
        assert!(v["detail"].as_str().is_some_and(|t| !t.is_empty()), "problem detail: {v}");
        v
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunked body");
    let mut out = Vec::new();
    loop {
        let i = find(b, b"\r\n").ok_or_else(bad)?;
        let size_s = std::str::from_utf8(&b[..i]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16).map_err(|_| bad())?;
        b = &b[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), to 127.0.0.1 only.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    assert!(addr.ip().is_loopback(), "tests talk to 127.0.0.1 only");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    if body.len() > 64 * 1024 {
        // A large body: write it from another thread while reading, as the server may
        // answer (413) and close before it has read everything.
        let mut w = s.try_clone()?;
        let owned = body.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&owned);
        });
        let r = s.read_to_end(&mut raw);
        let _ = writer.join();
        if let Err(e) = r
            && raw.is_empty()
        {
            return Err(e);
        }
    } else {
        s.write_all(body)?;
        s.read_to_end(&mut raw)?;
    }
    let end = find(&raw, b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response head"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status {status_line}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(n) = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()) {
        body.truncate(n);
    }
    Ok(Resp { status, headers, body })
}

/// A client bound to one server and (optionally) one bearer token.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Api {
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api { addr: self.addr, token: token.map(str::to_owned) }
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// GET; panics on a transport error.
    pub fn get(&self, path: &str) -> Resp {
        self.try_get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn try_get(&self, path: &str) -> std::io::Result<Resp> {
        let a = self.auth();
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &a {
            h.push(("Authorization", a));
        }
        http(self.addr, "GET", path, &h, None)
    }

    /// POST JSON with an Idempotency-Key; panics on a transport error.
    pub fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.try_post(path, key, body).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub fn try_post(&self, path: &str, key: &str, body: &Value) -> std::io::Result<Resp> {
        let b = serde_json::to_vec(body).expect("JSON");
        self.try_post_raw(path, Some(key), Some("application/json"), &b)
    }

    /// POST raw bytes; `key` and `content_type` are sent when given.
    pub fn post_raw(&self, path: &str, key: Option<&str>, content_type: Option<&str>, body: &[u8]) -> Resp {
        self.try_post_raw(path, key, content_type, body).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub fn try_post_raw(
        &self,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let a = self.auth();
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &a {
            h.push(("Authorization", a));
        }
        if let Some(k) = key {
            h.push(("Idempotency-Key", k));
        }
        if let Some(c) = content_type {
            h.push(("Content-Type", c));
        }
        http(self.addr, "POST", path, &h, Some(body))
    }

    /// POST and assert the status; returns the JSON body.
    #[track_caller]
    pub fn post_expect(&self, path: &str, key: &str, body: &Value, status: u16) -> Value {
        let r = self.post(path, key, body);
        assert_eq!(r.status, status, "POST {path} {body}: {}", r.text());
        r.json()
    }
}

/// The test program: 10 % pool, shares 30/20/40 with the rest to the closer, no hold.
pub fn program_spec(id: &str) -> Value {
    json!({
        "program": id,
        "name": "Growth partners",
        "currency": "USD",
        "holding_days": 0,
        "attribution_window_days": 120,
        "pool_rounding": "half_even",
        "pool": {"percent": "10"},
        "split": {"kind": "shares", "originator": "30", "intermediaries": "20", "closer": "40", "remaining": "closer"},
        "valid_from": "2025-01-01T00:00:00Z"
    })
}

pub fn enroll_body(partner: &str, program: &str) -> Value {
    json!({"partner": partner, "program": program, "name": format!("Partner {partner}"), "role": "partner"})
}

pub fn lead_body(lead: &str, program: &str, partner: &str) -> Value {
    json!({"lead": lead, "program": program, "customer": format!("{lead}.example"), "partner": partner})
}

/// Through `a` (a vendor's API): program `growth`, partners p1 and p2, lead l1 of p1
/// handed to p2, and conversion d1 of `revenue` USD on it (p1 the originator, p2 the
/// closer of a 10% pool, 30/70). The payment mandates of p1 and p2.
pub fn two_hop_deal(a: &Api, revenue: &str) -> (String, String) {
    a.post_expect("/v1/programs", "prg", &program_spec("growth"), 201);
    for p in ["p1", "p2"] {
        a.post_expect("/v1/partners", p, &enroll_body(p, "growth"), 201);
    }
    a.post_expect("/v1/leads", "l1", &lead_body("l1", "growth", "p1"), 201);
    a.post_expect("/v1/leads/l1/handoffs", "h1", &json!({"from": "p1", "to": "p2"}), 201);
    let conv = json!({"conversion": "d1", "lead": "l1", "revenue": revenue, "currency": "USD"});
    let c = a.post_expect("/v1/conversions", "d1", &conv, 201);
    let md = |i: usize| c["mandates"][i]["mandate_id"].as_str().expect("mandate id").to_owned();
    (md(0), md(1))
}

/// Number of log records a POST added: its fact and every derived event.
pub fn records_of(resp: &Value) -> u64 {
    resp["events"].as_array().map_or(0, |a| a.len() as u64)
}

/// The next sequence number after a write response.
pub fn next_seq(resp: &Value) -> u64 {
    resp["seq"].as_u64().expect("seq") + records_of(resp)
}

/// The JSON payload of a compact JWS (checked to have three non-empty base64url parts).
pub fn jws_payload(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    assert!(parts.iter().all(|p| !p.is_empty()), "empty JWS part: {token}");
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).expect("JWS header is base64url")).expect("JSON");
    assert_eq!(header["alg"], "EdDSA", "JWS alg: {header}");
    assert_eq!(B64.decode(parts[2]).expect("JWS signature is base64url").len(), 64, "Ed25519 signature size");
    serde_json::from_slice(&B64.decode(parts[1]).expect("JWS payload is base64url")).expect("JWS payload is JSON")
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs` seconds.
#[track_caller]
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("dir entry");
        let p = e.path();
        let q = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &q);
        } else {
            std::fs::copy(&p, &q).expect("copy");
        }
    }
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).expect("prefix").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The TypeScript partner kit's folder, with its stock dependencies installed (`jose`
/// from the npm registry, as its lock file pins it); fails loudly if they cannot be.
pub fn typescript_kit() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join("typescript");
    let st = Command::new("npm")
        .args(["ci", "--silent", "--no-audit", "--no-fund"])
        .current_dir(&kit)
        .status()
        .expect("npm is needed to run the TypeScript kit");
    assert!(st.success(), "npm ci failed: the TypeScript kit cannot run");
    kit
}
