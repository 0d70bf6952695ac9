//! The vendor's and the partners' administration: API tokens (issued once per
//! idempotency key, listed, revoked) and webhook subscriptions (through the running
//! deliverer, `crate::webhooks`).

use std::sync::Arc;

use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::App;
use crate::auth::tokens::{IssueError, Issued, MAX_TOKEN_LIFE_SECS, TokenRequest};
use crate::auth::{Principal, PrincipalKind, Scope};
use crate::catalogue::{Op, Target, allow};
use crate::error::Error;
use crate::keystore::StoredToken;
use crate::webhooks::Webhooks;

/// An API token to issue: `POST /v1/tokens`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TokenRequest")]
pub struct TokenBody {
    /// The kind of principal it authenticates.
    pub kind: PrincipalKind,
    /// Partner id (partner tokens), agent id (agent tokens), or a name.
    pub subject: String,
    /// For a partner agent: the partner it acts for (required then).
    #[serde(default)]
    pub partner: Option<String>,
    /// Its scopes: at least one, at most the issuing token's.
    #[schemars(length(min = 1))]
    pub scopes: Vec<Scope>,
    /// Life in seconds, at most ten years; absent or `null`: until revoked.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_TOKEN_LIFE_SECS))]
    pub expires_in: Option<i64>,
}

/// A token as listed: never its hash; its secret only in the answer that issued it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Token")]
pub struct TokenView {
    /// When it was issued (Unix seconds); `null` for tokens issued before lifecycles.
    created_at: Option<i64>,
    /// When it stops working (Unix seconds, exclusive); `null`: until revoked.
    expires_at: Option<i64>,
    /// `tok_` and 12 hex digits.
    id: String,
    /// The kind of principal.
    kind: PrincipalKind,
    /// For a partner agent: its partner.
    partner: Option<String>,
    /// When it was revoked (Unix seconds).
    revoked_at: Option<i64>,
    /// Its scopes.
    scopes: Vec<Scope>,
    /// Partner id, agent id or a name.
    subject: String,
    /// The secret (`stl_` and 64 hex digits): in the answer that issued it only.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl TokenView {
    fn of(t: &StoredToken, secret: Option<String>) -> Self {
        Self {
            created_at: t.created_at,
            expires_at: t.expires_at,
            id: t.id.clone(),
            kind: t.kind,
            partner: t.partner.clone(),
            revoked_at: t.revoked_at,
            scopes: t.scopes.clone(),
            subject: t.subject.clone(),
            token: secret,
        }
    }
}

/// `GET /v1/tokens`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "TokenList")]
pub struct TokenList {
    /// Every token, revoked and expired ones too.
    tokens: Vec<TokenView>,
}

/// Issues a token once per idempotency key `key`: the new token with its secret (`true`),
/// or, for the same key and request again, the same token without it (`false`).
pub async fn issue_token(app: &App, p: &Principal, key: String, b: TokenBody) -> Result<(TokenView, bool), Error> {
    allow(p, Op::IssueToken, &[Target::Scopes(&b.scopes)])?;
    // Never a longer life than the issuer's own: a token that expires cannot outlive
    // itself through the tokens it issues.
    let now = Utc::now().timestamp();
    let issuer_expires = app.tokens.by_id(&p.token_id).and_then(|t| t.expires_at);
    if let Some(limit) = issuer_expires
        && b.expires_in.is_none_or(|s| now.saturating_add(s) > limit)
    {
        return Err(Error::forbidden(format!(
            "this token expires at {limit} (Unix s): a token it issues needs an expires_in that ends by then"
        )));
    }
    // Idempotent on the key: the same key and body answer the same token id, never the
    // secret again (it is shown once).
    let request = serde_json::to_value(&b).map_err(Error::internal)?;
    let req = TokenRequest {
        kind: b.kind,
        subject: b.subject,
        partner: b.partner,
        scopes: b.scopes,
        expires_in: b.expires_in,
    };
    let tokens = app.tokens.clone();
    let out = tokio::task::spawn_blocking(move || tokens.issue_once(&key, &request, req, now))
        .await
        .map_err(Error::internal)?;
    match out {
        Ok(Issued::New(secret, t)) => Ok((TokenView::of(&t, Some(secret)), true)),
        Ok(Issued::Again(t)) => Ok((TokenView::of(&t, None), false)),
        Err(IssueError::KeyReused) => Err(Error::key_reused("this Idempotency-Key issued a token for another request")),
        Err(IssueError::Refused(e)) => Err(Error::rejected(format!("{e:#}"))),
    }
}

/// Every token, revoked and expired ones too (vendor administrators).
pub fn list_tokens(app: &App, p: &Principal) -> Result<TokenList, Error> {
    allow(p, Op::ListTokens, &[])?;
    Ok(TokenList { tokens: app.tokens.list().iter().map(|t| TokenView::of(t, None)).collect() })
}

/// Revokes token `id`: it stops working at once.
pub async fn revoke_token(app: &App, p: &Principal, id: String) -> Result<(), Error> {
    allow(p, Op::RevokeToken, &[])?;
    if app.tokens.by_id(&id).is_none() {
        return Err(Error::not_found(format!("token '{id}' not found")));
    }
    let tokens = app.tokens.clone();
    let now = Utc::now().timestamp();
    tokio::task::spawn_blocking(move || tokens.revoke(&id, now))
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::rejected(format!("{e:#}")))?;
    Ok(())
}

/// The webhook deliverer, where one runs (`settle serve`).
pub fn hooks(app: &App) -> Result<Arc<Webhooks>, Error> {
    app.hooks.clone().ok_or_else(|| Error::not_found("webhooks are delivered by `settle serve`"))
}
