//! The MCP server (official Rust SDK, `rmcp`): the same operations as the HTTP API, as
//! tools with JSON Schemas, for a vendor's or a partner's agent.
//!
//! Two transports: `settle mcp --data DIR` over stdio (the token comes from
//! `SETTLE_TOKEN`), and streamable HTTP at `/mcp` in `settle serve` (the token comes from
//! each request's `Authorization: Bearer` header). Listing the tools needs no token;
//! every call is checked against the token's principal and scopes exactly as the HTTP API
//! checks them, and refusals come back as tool errors carrying the RFC 9457 problem. So do
//! arguments that do not fit a tool's input schema (a missing or unknown field, a wrong
//! type: 400, as the HTTP API answers the same body). Every tool declares an output schema
//! (`answers`), which its structured answers follow.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::{ToolCallContext, schema_for_output};
use rmcp::model::{CallToolResult, ClientJsonRpcMessage, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use settle_mandates::receipt::ReceiptDocument;

use super::problem::Problem;
use crate::auth::Principal;
use crate::error::Error;
use crate::ops::App;
use crate::ops::commands::{self, ConversionBody, Fact, HandoffBody, HandoffParams, LeadBody, OutcomeView, RefundBody};
use crate::ops::disputes::{
    self, CommentParams, DisputeBody, DisputeList, DisputeParams, DisputeQuery, DisputeView, ResolveParams, Step as _,
    WithdrawBody, WithdrawParams,
};
use crate::ops::queries::{self, ConversionParams, ConversionView, PartnerParams, ReceiptParams};
use crate::ops::reports::{self, LeadList};

/// The environment variable holding the bearer token of `settle mcp` over stdio.
pub const TOKEN_ENV: &str = "SETTLE_TOKEN";

const INSTRUCTIONS: &str = "settle settles a vendor's partner commissions. Register leads for partners, hand them \
along the referral chain, record won deals (conversions) and refunds; every deal yields one Ed25519-signed payment \
mandate per hop of its chain, and every mandate has a receipt with a Merkle inclusion proof that anyone verifies \
offline against the vendor's JWKS. Amounts are decimal strings, never numbers. Writes are idempotent on their id \
(lead, conversion, refund): retrying the same call is safe; reusing an id with other content is refused. Use \
describe_program to explain how a number was computed. A partner disputes a commission with open_dispute; the vendor \
resolves it with resolve_dispute, which signs adjustment mandates that never exceed the claim.";

/// One MCP session's server: the shared [`App`] and, over stdio, the session's token.
#[derive(Clone)]
pub struct SettleMcp {
    app: App,
    token: Option<Arc<str>>,
}

/// A tool's arguments: a `T`, or the RFC 9457 problem the HTTP API answers for a body
/// that does not deserialise into one (400: a missing or unknown field, a wrong type),
/// which the tool answers as a tool error rather than as a protocol error in plain text.
/// Named after rmcp's own extractor, which the `#[tool]` macro recognises by that name to
/// publish `T`'s JSON Schema as the tool's input schema.
pub struct Parameters<T>(Result<T, Error>);

impl<T: JsonSchema> JsonSchema for Parameters<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<T> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, ErrorData> {
        let args = Value::Object(context.arguments.take().unwrap_or_default());
        Ok(Self(arguments(&args)))
    }
}

/// `args` as a `T`, read exactly as the HTTP API reads a JSON body (so the problem, 400
/// and its detail, is the one HTTP answers).
fn arguments<T: DeserializeOwned>(args: &Value) -> Result<T, Error> {
    let bytes = serde_json::to_vec(args).map_err(Error::internal)?;
    axum::Json::<T>::from_bytes(&bytes).map(|axum::Json(t)| t).map_err(|e| Error::malformed(e.body_text()))
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
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
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

/// The output schemas of the tools: what each answers on success, as `structuredContent`
/// (a refusal is a tool error carrying an RFC 9457 problem instead). Schemas only: the
/// answers are built by `crate::ops`, and `tests/agents.rs` has the official MCP client check
/// every tool's answers against these.
mod answers {
    #![allow(dead_code)]

    use schemars::JsonSchema;
    use serde::Serialize;
    use serde_json::{Map, Value};

    /// An amount of money in integer minor units.
    #[derive(Serialize, JsonSchema)]
    pub struct Amount {
        /// Minor units of the currency (cents of USD), never a float.
        pub amount: i64,
        /// ISO 4217 code.
        pub currency: String,
    }

    /// What a write recorded.
    #[derive(Serialize, JsonSchema)]
    pub struct Written {
        /// The log position of the fact.
        pub seq: u64,
        /// True when this call repeated an earlier one (same id, same content): nothing new
        /// was recorded, and this is the original answer.
        pub replayed: bool,
        /// The outcome of a lead registration or hand-off, or of a conversion; null for a
        /// write that has none (a refund).
        pub outcome: Option<Outcome>,
        /// The signed mandates the write issued: one payment mandate per hop of a
        /// conversion's chain, one clawback mandate per hop of a refund.
        pub mandates: Vec<Mandate>,
        /// The log records appended: the fact and what it caused, as event envelopes.
        pub events: Vec<Value>,
    }

    /// The outcome of a write.
    #[derive(Serialize, JsonSchema)]
    #[serde(untagged)]
    pub enum Outcome {
        /// Of a conversion.
        Conversion {
            /// `settled`, `held` or `no_commission`.
            outcome: String,
            /// The commission pool.
            pool: Amount,
            /// Why it was held or earned no commission (null when settled).
            reason: Option<String>,
            /// The rule version that priced it.
            rule_version: Option<u32>,
        },
        /// Of a lead registration or hand-off.
        Lead {
            /// The referral chain, originator first.
            chain: Vec<String>,
            /// `owner`, `duplicate` or `handed_off`.
            outcome: String,
            /// Of a duplicate, the lead that owns the customer; null otherwise, and always
            /// for a partner, who never learns which lead owns a customer.
            owner: Option<String>,
        },
    }

    /// A signed mandate.
    #[derive(Serialize, JsonSchema)]
    pub struct Mandate {
        /// Its amount.
        pub amount: Amount,
        /// `payment`, `clawback` or `adjustment`.
        pub direction: Direction,
        /// The mandate, a compact JWS signed by the vendor key.
        pub mandate: String,
        /// `md_<seq>_<hop>` (payment), `cb_<seq>_<hop>` (clawback) or `aj_<seq>_<n>`
        /// (adjustment).
        pub mandate_id: String,
        /// Of a clawback: the part of it taken from money already paid, offset against
        /// what the partner is paid next.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub offset: Option<Amount>,
        /// The partner it pays or claws back from.
        pub partner: String,
        /// Of a clawback: the payment mandate it reverses.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub reverses: Option<String>,
    }

    /// A mandate's direction.
    #[derive(Serialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum Direction {
        /// To the partner.
        Payment,
        /// Back from the partner.
        Clawback,
        /// A dispute's correction: positive to the partner, negative back from it.
        Adjustment,
    }

    /// A partner's balance, as decimal strings in the program currency.
    #[derive(Serialize, JsonSchema)]
    pub struct Balance {
        /// The partner.
        pub partner: String,
        /// Its program.
        pub program: String,
        /// The program currency (ISO 4217).
        pub currency: Option<String>,
        /// Commission earned.
        pub earned: Option<String>,
        /// Inside the refund window.
        pub on_hold: Option<String>,
        /// Due to be paid.
        pub payable: Option<String>,
        /// In open payout batches.
        pub in_payout: Option<String>,
        /// Paid.
        pub paid: Option<String>,
        /// Clawed back by refunds.
        pub clawed_back: Option<String>,
        /// Net of the adjustment mandates of accepted disputes.
        pub adjusted: Option<String>,
    }

    /// A page of a partner's payment mandates.
    #[derive(Serialize, JsonSchema)]
    pub struct Mandates {
        /// The partner.
        pub partner: String,
        /// In log order; pass the last one's `seq` as `after` for the next page.
        pub mandates: Vec<ListedMandate>,
    }

    /// A payment mandate in a list.
    #[derive(Serialize, JsonSchema)]
    pub struct ListedMandate {
        /// The log position of its record.
        pub seq: u64,
        /// `md_<seq>_<hop>`.
        pub mandate_id: String,
        /// The conversion it pays.
        pub conversion: String,
        /// Its amount.
        pub amount: Amount,
        /// The mandate, a compact JWS signed by the vendor key.
        pub mandate: String,
    }

    /// A mandate's receipt, verifiable offline with the vendor's JWKS.
    #[derive(Serialize, JsonSchema)]
    pub struct Receipt {
        /// The signed receipt (compact JWS).
        pub receipt: String,
        /// The signed mandate it answers (compact JWS).
        pub mandate: String,
        /// The log leaf's exact bytes, base64url.
        pub leaf: String,
        /// The RFC 9162 inclusion proof, leaf side first, base64 hashes.
        pub inclusion: Vec<String>,
        /// The signed checkpoint (C2SP signed note) the proof leads to.
        pub checkpoint: String,
    }

    /// A receipt's verification: valid, with what it proves, or not, with why.
    #[derive(Serialize, JsonSchema)]
    pub struct Verdict {
        /// Whether every check passed.
        pub valid: bool,
        /// The mandate the receipt proves (valid only).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub mandate_id: Option<String>,
        /// Its leaf's index in the log (valid only).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub leaf_index: Option<u64>,
        /// The checkpoint the proof leads to (valid only).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub checkpoint: Option<VerifiedCheckpoint>,
        /// The first check that failed (not valid only).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    /// A checkpoint a receipt was verified against.
    #[derive(Serialize, JsonSchema)]
    pub struct VerifiedCheckpoint {
        /// The log's identity.
        pub origin: String,
        /// Its number of leaves.
        pub size: u64,
        /// Its root hash, base64.
        pub root: String,
    }

    /// The latest signed checkpoint.
    #[derive(Serialize, JsonSchema)]
    pub struct Checkpoint {
        /// The log's identity.
        pub origin: String,
        /// Its number of leaves.
        pub size: u64,
        /// Its root hash, base64.
        pub root: String,
        /// When it was signed, Unix seconds.
        pub time: i64,
        /// The C2SP signed note.
        pub note: String,
        /// With `since_size`: the consistency proof from that size.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub consistency: Option<Consistency>,
    }

    /// An RFC 9162 consistency proof.
    #[derive(Serialize, JsonSchema)]
    pub struct Consistency {
        /// The earlier size.
        pub from: u64,
        /// The later size.
        pub to: u64,
        /// The proof's hashes, base64.
        pub proof: Vec<String>,
    }

    /// A program's rules.
    #[derive(Serialize, JsonSchema)]
    pub struct Program {
        /// The program.
        pub program: String,
        /// The id of its current open mandate (what it authorises paying).
        pub open_mandate: String,
        /// Every rule version, oldest first.
        pub versions: Vec<RuleVersion>,
    }

    /// One version of a program's rules.
    #[derive(Serialize, JsonSchema)]
    pub struct RuleVersion {
        /// 1, 2, ...
        pub version: u32,
        /// Applies to conversions from this time on (RFC 3339).
        pub effective_from: String,
        /// The rules as published.
        pub spec: Map<String, Value>,
        /// The rules in plain language, one sentence a line.
        pub explanation: Vec<String>,
    }
}

/// A tool's answer: the JSON on success, the problem (as a tool error the agent sees) on
/// failure.
fn answer<T: serde::Serialize>(r: Result<T, Error>) -> CallToolResult {
    match r.and_then(|v| serde_json::to_value(v).map_err(Error::internal)) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => CallToolResult::structured_error(Problem::from(e).body()),
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
    fn who(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, Error> {
        if let Some(parts) = ctx.extensions.get::<Parts>() {
            return self.app.principal(parts.headers.get(header::AUTHORIZATION).map(axum::http::HeaderValue::as_bytes));
        }
        match &self.token {
            Some(t) => self.app.authenticator().token(t),
            None => Err(Error::unauthenticated(format!(
                "no token: start `settle mcp` with {TOKEN_ENV} set to a token from `settle keys token`"
            ))),
        }
    }

    /// The caller and the tool's arguments, checked in the HTTP API's order: the token
    /// first (401), then the arguments (400).
    fn caller<T>(&self, ctx: &RequestContext<RoleServer>, args: Result<T, Error>) -> Result<(Principal, T), Error> {
        let p = self.who(ctx)?;
        Ok((p, args?))
    }

    /// Records the fact `make` turns the arguments into, keyed by the natural id it names
    /// (`mcp/<event type>/<id>`, per token).
    async fn record<T>(
        &self,
        ctx: &RequestContext<RoleServer>,
        args: Result<T, Error>,
        make: impl FnOnce(&Principal, T) -> Result<(String, Fact), Error>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = async {
            let (p, args) = self.caller(ctx, args)?;
            let (id, fact) = make(&p, args)?;
            let key = p.idempotency_key(&format!("mcp/{}/{id}", fact.event.kind()))?;
            let o = commands::record(&self.app, &p, key, fact).await?;
            serde_json::to_value(OutcomeView::of(&o, &p)).map_err(Error::internal)
        };
        Ok(answer(r.await))
    }

    #[tool(
        description = "Register a lead (a customer) for a partner in a program. The first valid registration of a customer within the attribution window owns it; later ones are recorded as rejected with the reason. Needs the leads_write scope; a partner or its agent registers only in its own name. Safe to retry with the same lead id.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn register_lead(
        &self,
        Parameters(b): Parameters<LeadBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, b, |p, b: LeadBody| Ok((b.lead.clone(), b.fact(p)?))).await
    }

    #[tool(
        description = "Hand a lead off from the partner holding it to the next partner, adding a hop to its referral chain (each hop is paid a share of the deal's commission pool). Needs the leads_write scope; a partner hands off only leads it holds.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn hand_off_lead(
        &self,
        Parameters(h): Parameters<HandoffParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, h, |p, h: HandoffParams| {
            let id = format!("{}/{}", h.lead, h.to);
            Ok((id, HandoffBody { from: h.from, to: h.to }.fact(&self.app, p, h.lead)?))
        })
        .await
    }

    #[tool(
        description = "Record a won deal (conversion) on a lead. Answers once it is durable, with the outcome (pool, rule version) and one Ed25519-signed payment mandate (compact JWS) per hop of the lead's referral chain owed something; the hop amounts sum exactly to the pool. A deal on a lead no partner registered is recorded with the outcome no_commission. Revenue is a decimal string with an ISO 4217 currency. Vendor only (conversions_write scope). Safe to retry with the same conversion id.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn record_conversion(
        &self,
        Parameters(b): Parameters<ConversionBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, b, |p, b: ConversionBody| Ok((b.conversion.clone(), b.fact(p, chrono::Utc::now())?))).await
    }

    #[tool(
        description = "Record a full (\"full\": true) or partial (amount + currency, or a fraction of the revenue such as \"0.25\") refund of a conversion. Every hop's commission is clawed back in proportion, each with a signed clawback mandate. Vendor only (refunds_write scope). Safe to retry with the same refund id.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn record_refund(
        &self,
        Parameters(b): Parameters<RefundBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, b, |p, b: RefundBody| Ok((b.refund.clone(), b.fact(p)?))).await
    }

    #[tool(
        description = "A partner's balance in the program currency: earned, on hold (inside the refund window), payable, in payout (in open payout batches), paid and clawed back, as decimal strings. Needs the read scope; a partner sees only itself.",
        output_schema = schema_for_output::<answers::Balance>()
    )]
    async fn get_balance(
        &self,
        Parameters(q): Parameters<PartnerParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.caller(&ctx, q).and_then(|(p, q)| queries::balance(&self.app, &p, &q.partner))))
    }

    #[tool(
        description = "List a partner's payment mandates in log order (mandate id, amount, signed mandate JWS), a page at a time: pass the last item's seq as `after` for the next page; `limit` is 1..=1000 (default 100). Needs the read scope; a partner sees only itself.",
        output_schema = schema_for_output::<answers::Mandates>()
    )]
    async fn list_mandates(
        &self,
        Parameters(q): Parameters<MandatesParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = match self.caller(&ctx, q) {
            Ok((p, q)) => queries::mandates(&self.app, &p, q.partner, q.after, q.limit).await,
            Err(e) => Err(e),
        };
        Ok(answer(r))
    }

    #[tool(
        description = "The leads a partner is on the chain of, newest first (at most 1,000), each with its chain, customer key, attribution window's end and status: attributable, expired, or duplicate (another lead owns the customer). Needs the read scope; a partner sees only its own.",
        output_schema = schema_for_output::<LeadList>()
    )]
    async fn list_leads(
        &self,
        Parameters(q): Parameters<PartnerParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(
            self.caller(&ctx, q).and_then(|(p, q)| reports::leads(&self.app, &p, &q.partner, chrono::Utc::now())),
        ))
    }

    #[tool(
        description = "A conversion's referral chain: each hop's partner and role, originator first; for the vendor every hop's amount, clawbacks, status and payment mandate, and the revenue; for a partner, only a conversion it is on and the money of its own hops. Needs the read scope.",
        output_schema = schema_for_output::<ConversionView>()
    )]
    async fn get_conversion(
        &self,
        Parameters(q): Parameters<ConversionParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.caller(&ctx, q).and_then(|(p, q)| queries::conversion(&self.app, &p, &q.conversion))))
    }

    #[tool(
        description = "Get the settlement receipt of a mandate: the signed receipt, the signed mandate, the log leaf, its RFC 9162 inclusion proof and the signed checkpoint it leads to. Verifiable offline with the vendor's JWKS (see verify_receipt). Needs the read scope; a partner sees only its own mandates.",
        output_schema = schema_for_output::<answers::Receipt>()
    )]
    async fn get_receipt(
        &self,
        Parameters(q): Parameters<ReceiptParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.caller(&ctx, q).and_then(|(p, q)| queries::receipt(&self.app, &p, &q.partner, &q.mandate_id))))
    }

    #[tool(
        description = "Verify a receipt document against the vendor's published keys: both signatures, the reference to the mandate, the leaf, the inclusion proof to the checkpoint root and the checkpoint signature. Answers {valid: true, ...} or {valid: false, reason}. Needs no token: it uses public keys only.",
        output_schema = schema_for_output::<answers::Verdict>()
    )]
    async fn verify_receipt(&self, Parameters(q): Parameters<VerifyParams>) -> Result<CallToolResult, ErrorData> {
        let r = q.and_then(|q| {
            serde_json::from_value::<ReceiptDocument>(q.receipt)
                .map_err(|e| Error::rejected(format!("not a receipt document: {e}")))
                .and_then(|doc| queries::verify(&self.app, &doc))
        });
        Ok(answer(r))
    }

    #[tool(
        description = "The latest signed checkpoint of the log (C2SP signed note: origin, size, root hash). With since_size, also an RFC 9162 consistency proof that the log of that earlier checkpoint is a prefix of this one, so nothing you saw was rewritten. Needs no token.",
        output_schema = schema_for_output::<answers::Checkpoint>()
    )]
    async fn get_checkpoint(&self, Parameters(q): Parameters<CheckpointParams>) -> Result<CallToolResult, ErrorData> {
        let r = q.and_then(|q| {
            let latest = queries::latest_checkpoint(&self.app)?;
            let to = latest.size;
            let mut v = serde_json::to_value(latest).map_err(Error::internal)?;
            if let Some(from) = q.since_size {
                v["consistency"] =
                    serde_json::to_value(queries::consistency(&self.app, from, to)?).map_err(Error::internal)?;
            }
            Ok(v)
        });
        Ok(answer(r))
    }

    #[tool(
        description = "Open a dispute of a partner's commission: a conversion, a payment mandate (md_…), a clawback (cb_…), or a deal missing on a lead (subject.kind conversion | mandate | clawback | missing_conversion). Give the claim in words (statement), the amount claimed as a decimal string if any (it bounds any adjustment), and evidence (receipt ids, references). Allowed within the program's dispute window (describe_program says how long). Needs the disputes_write scope; a partner or its agent disputes in its own name, only what it is a party to. Safe to retry with the same dispute id.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn open_dispute(
        &self,
        Parameters(b): Parameters<DisputeBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, b, |p, b: DisputeBody| Ok((b.dispute.clone(), b.fact(&self.app, p)?))).await
    }

    #[tool(
        description = "List disputes: a partner's own (or every one, for the vendor), optionally only those of a partner, in a status (open, accepted, rejected, withdrawn) or overdue. Each with its claim, evidence, comments, due date, resolution and adjustment mandates. Needs the read scope.",
        output_schema = schema_for_output::<DisputeList>()
    )]
    async fn list_disputes(
        &self,
        Parameters(q): Parameters<DisputeQuery>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.caller(&ctx, q).and_then(|(p, q)| disputes::disputes(&self.app, &p, &q))))
    }

    #[tool(
        description = "Get one dispute: its subject, claim, evidence, comments, when the vendor's answer is due and whether it is overdue, how it was resolved, and its adjustment mandates (aj_…; get_receipt proves each). Needs the read scope; a partner sees only its own.",
        output_schema = schema_for_output::<DisputeView>()
    )]
    async fn get_dispute(
        &self,
        Parameters(q): Parameters<DisputeParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.caller(&ctx, q).and_then(|(p, q)| disputes::dispute(&self.app, &p, &q.dispute))))
    }

    #[tool(
        description = "Comment on an open dispute (either side). Needs the disputes_write scope; a partner comments only on its own disputes.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn comment_on_dispute(
        &self,
        Parameters(c): Parameters<CommentParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, c, |p, c: CommentParams| c.fact(&self.app, p)).await
    }

    #[tool(
        description = "Resolve an open dispute (vendor only, settlements_write scope): rejected with a reason, or accepted. Accepted, the engine signs one adjustment mandate per partner line (resolution.adjustments: partner and a signed decimal amount; positive lines are payable at once, negative lines are owed back), never more than the claimed amount up or down; with no lines, the claimed amount goes to the disputing partner. Safe to retry with the same dispute id.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn resolve_dispute(
        &self,
        Parameters(r): Parameters<ResolveParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, r, |p, r: ResolveParams| Ok((r.dispute.clone(), r.resolution.fact(&self.app, p, r.dispute)?)))
            .await
    }

    #[tool(
        description = "Withdraw an open dispute, with an optional reason. Needs the disputes_write scope; a partner withdraws only its own disputes.",
        output_schema = schema_for_output::<answers::Written>()
    )]
    async fn withdraw_dispute(
        &self,
        Parameters(w): Parameters<WithdrawParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record(&ctx, w, |p, w: WithdrawParams| {
            Ok((w.dispute.clone(), WithdrawBody { reason: w.reason }.fact(&self.app, p, w.dispute)?))
        })
        .await
    }

    #[tool(
        description = "Describe a program's commission rules, every version with the date it took effect, as the published JSON and in plain language (pool, tiers, caps, split by position or level, rounding, holding period), so you can explain how any amount was computed. Needs the read scope.",
        output_schema = schema_for_output::<answers::Program>()
    )]
    async fn describe_program(
        &self,
        Parameters(q): Parameters<ProgramParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.caller(&ctx, q).and_then(|(p, q)| queries::program(&self.app, &p, &q.program))))
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
pub fn http_service(app: App, listen: std::net::SocketAddr) -> McpHttp {
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
    McpHttp { inner: StreamableHttpService::new(move || Ok(SettleMcp::new(app.clone(), None)), Arc::default(), config) }
}

/// `/mcp`: rmcp's streamable HTTP service, except that a JSON body which is not JSON, or
/// not a JSON-RPC message, is answered as JSON-RPC says (-32700 parse error, -32600
/// invalid request, `id` null) rather than with rmcp's 415. The answer is HTTP 200, as
/// for every other JSON-RPC error here and at `/a2a`.
#[derive(Clone)]
pub struct McpHttp {
    inner: StreamableHttpService<SettleMcp, NeverSessionManager>,
}

impl tower_service::Service<Request> for McpHttp {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            if req.method() != Method::POST || !json {
                return Ok(inner.call(req).await.map_or_else(|e| match e {}, IntoResponse::into_response));
            }
            let (parts, body) = req.into_parts();
            // The router's body limit ends a longer body: that is the one way reading fails
            // that a client still waits to hear about.
            let Ok(bytes) = axum::body::to_bytes(body, super::http::MAX_BODY_BYTES).await else {
                return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response());
            };
            if let Some(error) = malformed(&bytes) {
                return Ok(error);
            }
            let req = Request::from_parts(parts, axum::body::Body::from(bytes));
            Ok(inner.call(req).await.map_or_else(|e| match e {}, IntoResponse::into_response))
        })
    }
}

/// The JSON-RPC error answering a body that is not JSON (-32700) or not a JSON-RPC
/// message (-32600), if it is either.
fn malformed(body: &[u8]) -> Option<Response> {
    let error = |code: i64, message: String| {
        Some(
            axum::Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}))
                .into_response(),
        )
    };
    match serde_json::from_slice::<Value>(body) {
        Err(e) => error(-32700, format!("Parse error: the body is not JSON ({e})")),
        Ok(v) => match serde_json::from_value::<ClientJsonRpcMessage>(v) {
            Err(e) => {
                error(-32600, format!("Invalid Request: not a JSON-RPC 2.0 request, notification or response ({e})"))
            }
            Ok(_) => None,
        },
    }
}

/// Serves MCP over stdio for `app` until the client closes it; `token`: the session's
/// bearer token (`SETTLE_TOKEN`).
pub async fn serve_stdio(app: App, token: Option<String>) -> Result<()> {
    let server = SettleMcp::new(app, token).serve(rmcp::transport::stdio()).await.context("MCP handshake failed")?;
    server.waiting().await.context("MCP session failed")?;
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
