//! Who is calling, and with what authority: principals resolved from bearer tokens (API
//! tokens from `keys.json`, or an agent's own signed token), their scopes, and the one
//! check of a partner's agent grant recorded in the log. What a principal may then do is
//! the catalogue's to decide (`catalogue::authorize`, a layer above this one).

pub mod sessions;
pub mod tokens;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use settle_engine::model::AgentScope;
use settle_engine::state::Agent;

use crate::error::Error;
use crate::keystore::StoredToken;
pub use crate::keystore::{PrincipalKind, Scope};
use crate::service::Service;
use tokens::Tokens;

/// `typ` of a token an agent signs itself ([`Authenticator::agent_jwt`]).
pub const AGENT_JWT_TYP: &str = "settle-agent+jwt";
/// Longest life of a self-signed agent token, seconds.
pub const AGENT_JWT_MAX_SECS: i64 = 300;
/// How far ahead of the server's clock an agent token's `iat` may be, seconds.
pub const AGENT_JWT_SKEW_SECS: i64 = 60;

/// Prefix of the token id (the scope of idempotency keys and webhook subscriptions) of an
/// agent that signs its own tokens.
pub const AGENT_KEY_TOKEN_ID: &str = "agent-key:";

/// Longest idempotency key a caller may send, bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Who is calling: a token resolved against the key file and, for a partner's agent,
/// against the grant its partner recorded in the log (checked on every request).
#[derive(Debug, Clone)]
pub struct Principal {
    /// What it is.
    pub kind: PrincipalKind,
    /// Vendor user, partner or agent id.
    pub subject: String,
    /// The partner it acts for (partners and partner agents).
    pub partner: Option<String>,
    /// Scopes in force now.
    pub scopes: Vec<Scope>,
    /// The token's id: idempotency keys are per token.
    pub token_id: String,
}

impl Principal {
    /// The id of the stored API token this principal presented; `None` for an agent that
    /// signs its own tokens (it holds none).
    #[must_use]
    pub fn stored_token(&self) -> Option<&str> {
        (!self.token_id.starts_with(AGENT_KEY_TOKEN_ID)).then_some(self.token_id.as_str())
    }

    /// The `by` recorded in every event this principal causes.
    #[must_use]
    pub fn by(&self) -> String {
        match self.kind {
            PrincipalKind::VendorAdmin => format!("vendor:{}", self.subject),
            PrincipalKind::VendorAgent => format!("vendor_agent:{}", self.subject),
            PrincipalKind::Partner => format!("partner:{}", self.subject),
            PrincipalKind::PartnerAgent => format!("agent:{}", self.subject),
        }
    }

    /// The vendor or one of its agents.
    #[must_use]
    pub fn is_vendor(&self) -> bool {
        matches!(self.kind, PrincipalKind::VendorAdmin | PrincipalKind::VendorAgent)
    }

    /// The idempotency key of this principal for the caller's `key` (keys are per token).
    pub fn idempotency_key(&self, key: &str) -> Result<String, Error> {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::malformed(format!(
                "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces)"
            )));
        }
        Ok(format!("{}/{key}", self.token_id))
    }
}

/// What resolves a bearer token: the live API tokens, the log's agent grants, and the
/// log's origin (the audience of an agent's own token).
#[derive(Clone, Copy)]
pub struct Authenticator<'a> {
    /// The service, for the agent grants in the log.
    pub svc: &'a Service,
    /// API tokens, live.
    pub tokens: &'a Tokens,
    /// The log's origin line.
    pub origin: &'a str,
}

impl Authenticator<'_> {
    /// Resolves a bearer token.
    pub fn token(&self, token: &str) -> Result<Principal, Error> {
        let token = token.trim();
        if token.bytes().filter(|b| *b == b'.').count() == 2 {
            return self.agent_jwt(token, Utc::now());
        }
        let t: StoredToken = self
            .tokens
            .find(token, Utc::now().timestamp())
            .ok_or_else(|| Error::unauthenticated("unknown, expired or revoked token"))?;
        let mut p = Principal {
            kind: t.kind,
            subject: t.subject.clone(),
            partner: None,
            scopes: t.scopes.clone(),
            token_id: t.id.clone(),
        };
        match t.kind {
            PrincipalKind::Partner => p.partner = Some(t.subject.clone()),
            PrincipalKind::PartnerAgent => {
                // The agent acts only within what its partner granted, now.
                let partner = t.partner.as_deref().unwrap_or_default();
                let a = grant_in_force(self.svc, &t.subject, Some(partner), Utc::now())?;
                let granted = agent_scopes(&a.scopes);
                p.scopes.retain(|s| granted.contains(s));
                p.partner = Some(a.partner);
            }
            PrincipalKind::VendorAdmin | PrincipalKind::VendorAgent => {}
        }
        Ok(p)
    }

    /// A partner's agent that signs its own bearer tokens: the token is a compact JWS
    /// of type [`AGENT_JWT_TYP`] over `{"iss": <agent id>, "aud": <log origin>, "iat",
    /// "exp"}` (Unix seconds; at most [`AGENT_JWT_MAX_SECS`] apart, `iat` no later than
    /// [`AGENT_JWT_SKEW_SECS`] ahead of `now`, `now` before `exp`), signed with the key its
    /// partner registered in the log (`public_key` of `agent_authorised`). The agent then
    /// holds exactly the scopes of that grant, while it is current.
    pub fn agent_jwt(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Claims {
            iss: String,
            aud: String,
            iat: i64,
            exp: i64,
        }
        let bad = |why: &str| Error::unauthenticated(format!("agent token: {why}"));
        let parsed = settle_mandates::jws::parse(token, AGENT_JWT_TYP).map_err(|e| bad(&e.to_string()))?;
        let claims: Claims =
            serde_json::from_slice(&parsed.payload).map_err(|_| bad("claims must be exactly iss, aud, iat and exp"))?;
        // One answer for an unknown agent, one with no key, and a key that is not the
        // one registered: nothing about the agent is told before its signature holds.
        let not_valid = || bad("not signed by the key registered for an agent in force");
        let key = self.svc.with_state(|s| s.agents.get(&claims.iss).and_then(|a| a.public_key.clone()));
        let jwk = key.filter(|k| k.valid_at(now.timestamp())).ok_or_else(not_valid)?;
        let ring = settle_mandates::keys::KeyRing::new(&settle_mandates::keys::Jwks { keys: vec![jwk] })
            .map_err(|_| not_valid())?;
        settle_mandates::jws::verify(token, &ring, AGENT_JWT_TYP).map_err(|_| not_valid())?;
        let a = grant_in_force(self.svc, &claims.iss, None, now)?;
        if claims.aud != self.origin {
            return Err(bad(&format!("aud must be '{}'", self.origin)));
        }
        let t = now.timestamp();
        let life = claims.exp.checked_sub(claims.iat).unwrap_or(i64::MAX);
        if life <= 0 || life > AGENT_JWT_MAX_SECS {
            return Err(bad(&format!("exp must be after iat, by at most {AGENT_JWT_MAX_SECS} s")));
        }
        if claims.iat > t.saturating_add(AGENT_JWT_SKEW_SECS) || t >= claims.exp {
            return Err(bad("expired or not yet valid"));
        }
        Ok(Principal {
            kind: PrincipalKind::PartnerAgent,
            subject: claims.iss.clone(),
            partner: Some(a.partner),
            scopes: agent_scopes(&a.scopes),
            token_id: format!("{AGENT_KEY_TOKEN_ID}{}", claims.iss),
        })
    }

    /// Resolves an `Authorization` value, `Bearer <token>`.
    pub fn bearer(&self, authorization: Option<&[u8]>) -> Result<Principal, Error> {
        let h = authorization.ok_or_else(|| Error::unauthenticated("send Authorization: Bearer <token>"))?;
        // Visible ASCII only, as HTTP header values are read as text.
        let text = h.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t');
        let token = std::str::from_utf8(h)
            .ok()
            .filter(|_| text)
            .and_then(|s| s.strip_prefix("Bearer "))
            .ok_or_else(|| Error::unauthenticated("Authorization must be 'Bearer <token>'"))?;
        self.token(token)
    }
}

/// The grant of agent `id` if it is in force at `now`: recorded by a partner in the log
/// (by `partner`, when given), not revoked, inside its validity. The one check of an
/// agent's authority: every request of an agent and every webhook delivery to one asks it.
pub fn grant_in_force(svc: &Service, id: &str, partner: Option<&str>, now: DateTime<Utc>) -> Result<Agent, Error> {
    let a = svc
        .with_state(|s| s.agents.get(id).cloned())
        .ok_or_else(|| Error::unauthenticated("this agent is not authorised by any partner"))?;
    if !a.is_current(now) || partner.is_some_and(|p| p != a.partner) {
        return Err(Error::unauthenticated("this agent's authority is revoked or expired"));
    }
    Ok(a)
}

/// The API scopes an agent's grant gives.
#[must_use]
pub fn agent_scopes(granted: &[AgentScope]) -> Vec<Scope> {
    granted
        .iter()
        .map(|s| match s {
            AgentScope::Read => Scope::Read,
            AgentScope::LeadsWrite => Scope::LeadsWrite,
            AgentScope::WebhooksWrite => Scope::WebhooksWrite,
            AgentScope::DisputesWrite => Scope::DisputesWrite,
        })
        .collect()
}
