//! Signed-in people: a session per sign-in, kept in memory, named by an unguessable id in
//! an HttpOnly, SameSite=Strict cookie (Secure behind TLS), with an expiry and a CSRF
//! token every form that writes must carry. The session holds the API token the person
//! signed in with, so every page resolves its principal again: a token revoked, or an
//! agent's grant ended, stops the session at its next page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// The session cookie's name.
pub const COOKIE: &str = "settle_session";
/// How long a session lasts after sign-in.
pub const LIFE: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once: the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in person.
#[derive(Clone)]
pub struct Session {
    /// The API token signed in with.
    pub token: String,
    /// The token every form that writes carries.
    pub csrf: String,
    expires: Instant,
}

/// The sessions of one server.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex.
pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("the system's random source failed: {e}"));
    hex::encode(b)
}

impl Sessions {
    /// A new session for `token`: its id (the cookie's value).
    pub fn open(&self, token: String) -> String {
        let id = random_hex();
        let s = Session { token, csrf: random_hex(), expires: Instant::now() + LIFE };
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), s);
        id
    }

    /// The live session the request's cookie names, with its id.
    pub fn of(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers)?;
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&id).filter(|s| s.expires > Instant::now()).map(|s| (id, s.clone()))
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }
}

/// The session id the request's `Cookie` header carries.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, v)| *k == COOKIE && v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(_, v)| v.to_owned())
}

/// Whether the request came over TLS (to the server, or to a proxy in front of it that
/// says so): the cookie is then `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of session `id` (empty `id`: the cookie cleared).
pub fn set_cookie(id: &str, headers: &HeaderMap) -> String {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let age = if id.is_empty() { 0 } else { LIFE.as_secs() };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
}

/// Whether `given` is a session's CSRF token `csrf` (compared in constant time).
pub fn csrf_ok(csrf: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    csrf.as_bytes().ct_eq(given.as_bytes()).into()
}
