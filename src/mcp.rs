//! The MCP server (official Rust SDK, `rmcp`): the same operations as the HTTP API, as
//! tools with JSON Schemas, for a vendor's or a partner's agent.
//!
//! Two transports: `settle mcp --data DIR` over stdio (the token comes from
//! `SETTLE_TOKEN`), and streamable HTTP at `/mcp` in `settle serve` (the token comes from
//! each request's `Authorization: Bearer` header). Listing the tools needs no token;
//! every call is checked against the token's principal and scopes exactly as the HTTP API
//! checks them, and refusals come back as tool errors carrying the RFC 9457 problem.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::http::header;
use axum::http::request::Parts;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use settle_mandates::receipt::ReceiptDocument;

use crate::api::{self, App, ConversionBody, HandoffBody, LeadBody, Principal, Problem, RefundBody, outcome_json};

/// The environment variable holding the bearer token of `settle mcp` over stdio.
pub const TOKEN_ENV: &str = "SETTLE_TOKEN";

const INSTRUCTIONS: &str = "settle settles a vendor's partner commissions. Register leads for partners, hand them \
along the referral chain, record won deals (conversions) and refunds; every deal yields one Ed25519-signed payment \
mandate per hop of its chain, and every mandate has a receipt with a Merkle inclusion proof that anyone verifies \
offline against the vendor's JWKS. Amounts are decimal strings, never numbers. Writes are idempotent on their id \
(lead, conversion, refund): retrying the same call is safe; reusing an id with other content is refused. Use \
describe_program to explain how a number was computed.";

/// One MCP session's server: the shared [`App`] and, over stdio, the session's token.
#[derive(Clone)]
pub struct SettleMcp {
    app: App,
    token: Option<Arc<str>>,
}

/// A lead hand-off.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffParams {
    /// The lead.
    pub lead: String,
    /// The partner holding the lead now (its last hop).
    pub from: String,
    /// The partner it is handed to.
    pub to: String,
}

/// A partner.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerParams {
    /// Partner id.
    pub partner: String,
}

/// A page of a partner's mandates.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MandatesParams {
    /// Partner id.
    pub partner: String,
    /// Only mandates recorded after this log position (the `seq` of the last mandate of
    /// the previous page).
    #[serde(default)]
    pub after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A partner's mandate.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptParams {
    /// Partner id.
    pub partner: String,
    /// Mandate id: `md_<seq>_<hop>` (payment) or `cb_<seq>_<hop>` (clawback).
    pub mandate_id: String,
}

/// A receipt document to verify.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// The receipt document exactly as get_receipt returned it (fields receipt, mandate,
    /// leaf, inclusion, checkpoint).
    pub receipt: Value,
}

/// A checkpoint request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointParams {
    /// The size of the last checkpoint you trusted: with it, the answer adds an RFC 9162
    /// consistency proof from that size to the latest checkpoint.
    #[serde(default)]
    pub since_size: Option<u64>,
}

/// A program.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgramParams {
    /// Program id.
    pub program: String,
}

/// A tool's answer: the JSON on success, the problem (as a tool error the agent sees) on
/// failure.
fn answer(r: Result<Value, Problem>) -> CallToolResult {
    match r {
        Ok(v) => CallToolResult::structured(v),
        Err(p) => CallToolResult::structured_error(p.body()),
    }
}

#[tool_router]
impl SettleMcp {
    /// A server for `app`; `token` authenticates every call of a stdio session.
    #[must_use]
    pub fn new(app: App, token: Option<String>) -> Self {
        Self { app, token: token.map(Into::into) }
    }

    /// The caller: the HTTP request's bearer token, else the session's token.
    fn who(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, Problem> {
        if let Some(parts) = ctx.extensions.get::<Parts>() {
            return Principal::from_authorization(&self.app, parts.headers.get(header::AUTHORIZATION));
        }
        match &self.token {
            Some(t) => Principal::from_token(&self.app, t),
            None => Err(Problem::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "Unauthorized",
                format!("no token: start `settle mcp` with {TOKEN_ENV} set to a token from `settle keys token`"),
            )),
        }
    }

    async fn record(
        &self,
        ctx: &RequestContext<RoleServer>,
        id: &str,
        make: impl FnOnce(&Principal) -> Result<(settle_engine::model::Event, Option<Value>), Problem>,
    ) -> Result<Value, Problem> {
        let p = self.who(ctx)?;
        let (event, request) = make(&p)?;
        let key = p.idempotency_key(&format!("mcp/{}/{id}", event.kind()))?;
        Ok(outcome_json(&api::write(&self.app, &p, key, event, request).await?))
    }

    #[tool(
        description = "Register a lead (a customer) for a partner in a program. The first valid registration of a customer within the attribution window owns it; later ones are recorded as rejected with the reason. Needs the leads_write scope; a partner or its agent registers only in its own name. Safe to retry with the same lead id."
    )]
    async fn register_lead(
        &self,
        Parameters(b): Parameters<LeadBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = b.lead.clone();
        Ok(answer(self.record(&ctx, &id, |p| Ok((b.event(p)?, None))).await))
    }

    #[tool(
        description = "Hand a lead off from the partner holding it to the next partner, adding a hop to its referral chain (each hop is paid a share of the deal's commission pool). Needs the leads_write scope; a partner hands off only leads it holds."
    )]
    async fn hand_off_lead(
        &self,
        Parameters(h): Parameters<HandoffParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = format!("{}/{}", h.lead, h.to);
        let r = self.record(&ctx, &id, |p| Ok((HandoffBody { from: h.from, to: h.to }.event(p, h.lead)?, None))).await;
        Ok(answer(r))
    }

    #[tool(
        description = "Record a won deal (conversion) on a lead. Answers once it is durable, with the outcome (pool, rule version) and one Ed25519-signed payment mandate (compact JWS) per hop of the lead's referral chain; the hop amounts sum exactly to the pool. A deal on a lead no partner registered is recorded with the outcome no_commission. Revenue is a decimal string with an ISO 4217 currency. Vendor only (conversions_write scope). Safe to retry with the same conversion id."
    )]
    async fn record_conversion(
        &self,
        Parameters(b): Parameters<ConversionBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = b.conversion.clone();
        let r = self
            .record(&ctx, &id, |p| {
                let request = serde_json::to_value(&b).ok();
                Ok((b.event(p, chrono::Utc::now())?, request))
            })
            .await;
        Ok(answer(r))
    }

    #[tool(
        description = "Record a full (\"full\": true) or partial (amount + currency, or a fraction of the revenue such as \"0.25\") refund of a conversion. Every hop's commission is clawed back in proportion, each with a signed clawback mandate. Vendor only (refunds_write scope). Safe to retry with the same refund id."
    )]
    async fn record_refund(
        &self,
        Parameters(b): Parameters<RefundBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = b.refund.clone();
        Ok(answer(self.record(&ctx, &id, |p| Ok((b.event(p)?, None))).await))
    }

    #[tool(
        description = "A partner's balance in the program currency: earned, on hold (inside the refund window), payable, in payout (in open payout batches), paid and clawed back, as decimal strings. Needs the read scope; a partner sees only itself."
    )]
    async fn get_balance(
        &self,
        Parameters(q): Parameters<PartnerParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.who(&ctx).and_then(|p| api::balance(&self.app, &p, &q.partner))))
    }

    #[tool(
        description = "List a partner's payment mandates in log order (mandate id, amount, signed mandate JWS), a page at a time: pass the last item's seq as `after` for the next page. Needs the read scope; a partner sees only itself."
    )]
    async fn list_mandates(
        &self,
        Parameters(q): Parameters<MandatesParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = match self.who(&ctx) {
            Ok(p) => api::mandates(&self.app, &p, q.partner, q.after, q.limit).await,
            Err(e) => Err(e),
        };
        Ok(answer(r))
    }

    #[tool(
        description = "Get the settlement receipt of a mandate: the signed receipt, the signed mandate, the log leaf, its RFC 9162 inclusion proof and the signed checkpoint it leads to. Verifiable offline with the vendor's JWKS (see verify_receipt). Needs the read scope; a partner sees only its own mandates."
    )]
    async fn get_receipt(
        &self,
        Parameters(q): Parameters<ReceiptParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = self
            .who(&ctx)
            .and_then(|p| api::receipt(&self.app, &p, &q.partner, &q.mandate_id))
            .and_then(|d| serde_json::to_value(d).map_err(api::internal));
        Ok(answer(r))
    }

    #[tool(
        description = "Verify a receipt document against the vendor's published keys: both signatures, the reference to the mandate, the leaf, the inclusion proof to the checkpoint root and the checkpoint signature. Answers {valid: true, ...} or {valid: false, reason}. Needs no token: it uses public keys only."
    )]
    async fn verify_receipt(&self, Parameters(q): Parameters<VerifyParams>) -> Result<CallToolResult, ErrorData> {
        let r = serde_json::from_value::<ReceiptDocument>(q.receipt)
            .map_err(|e| api::unprocessable(format!("not a receipt document: {e}")))
            .and_then(|doc| api::verify(&self.app, &doc));
        Ok(answer(r))
    }

    #[tool(
        description = "The latest signed checkpoint of the log (C2SP signed note: origin, size, root hash). With since_size, also an RFC 9162 consistency proof that the log of that earlier checkpoint is a prefix of this one, so nothing you saw was rewritten. Needs no token."
    )]
    async fn get_checkpoint(&self, Parameters(q): Parameters<CheckpointParams>) -> Result<CallToolResult, ErrorData> {
        let r = api::latest_checkpoint(&self.app).and_then(|mut latest| {
            if let Some(from) = q.since_size {
                let to = latest["size"].as_u64().unwrap_or(0);
                latest["consistency"] = api::consistency(&self.app, from, to)?;
            }
            Ok(latest)
        });
        Ok(answer(r))
    }

    #[tool(
        description = "Describe a program's commission rules, every version with the date it took effect, as the published JSON and in plain language (pool, tiers, caps, split by position or level, rounding, holding period), so you can explain how any amount was computed. Needs the read scope."
    )]
    async fn describe_program(
        &self,
        Parameters(q): Parameters<ProgramParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.who(&ctx).and_then(|p| api::program(&self.app, &p, &q.program))))
    }
}

#[tool_handler]
impl ServerHandler for SettleMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("settle", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// The streamable HTTP endpoint for `settle serve`, mounted at `/mcp`: stateless, JSON
/// answers, the bearer token read from each request.
pub fn http_service(app: App, listen: std::net::SocketAddr) -> StreamableHttpService<SettleMcp, NeverSessionManager> {
    let mut config = StreamableHttpServerConfig::default().with_legacy_session_mode(false).with_json_response(true);
    // Host checks guard a token-less local server against DNS rebinding; every call here
    // needs a bearer token, so a server on a routable address accepts any Host.
    config = if listen.ip().is_loopback() {
        let mut hosts = config.allowed_hosts.clone();
        hosts.push(listen.to_string());
        config.with_allowed_hosts(hosts)
    } else {
        config.disable_allowed_hosts()
    };
    StreamableHttpService::new(move || Ok(SettleMcp::new(app.clone(), None)), Arc::default(), config)
}

/// `settle mcp --data DIR`: serves MCP over stdio until the client closes it.
pub fn stdio(data: &Path) -> Result<()> {
    let keys = Arc::new(crate::keystore::KeyFile::load(data)?);
    let svc = crate::service::Service::open(data)?;
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let app = App { svc: svc.clone(), keys, base: String::from("stdio"), hooks: None };
    rt.block_on(async move {
        // Checkpoints as in `settle serve`, so receipts of what this session records exist.
        let ticker = tokio::spawn(crate::server::background(app.svc.clone()));
        let server =
            SettleMcp::new(app, token).serve(rmcp::transport::stdio()).await.context("MCP handshake failed")?;
        server.waiting().await.context("MCP session failed")?;
        ticker.abort();
        Ok::<(), anyhow::Error>(())
    })?;
    drop(rt);
    if svc.ledger().size() > svc.ledger().latest_checkpoint()?.map_or(0, |c| c.checkpoint.size) {
        svc.checkpoint(chrono::Utc::now().timestamp())?;
    }
    svc.save_state()?;
    svc.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tools an agent sees (names, descriptions, input schemas) are a committed golden
    /// vector (`tests/vectors/mcp_tools.json`): a change to a tool's contract shows in review.
    #[test]
    fn mcp_tools_golden_vector() {
        let tools = SettleMcp::tool_router().list_all();
        assert!(tools.len() >= 10);
        crate::golden::check("mcp_tools.json", &serde_json::json!({"tools": tools}));
    }
}
