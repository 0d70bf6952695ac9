//! A2A v1.0: the signed agent card at `/.well-known/agent-card.json`, and the JSON-RPC
//! binding at `/a2a` with `SendMessage` and `GetTask`, so a partner's or vendor's agent
//! registers leads and deals agent to agent.
//!
//! A message carries one data part naming its intent — `{"lead": {...}}`,
//! `{"handoff": {...}}`, `{"conversion": {...}}`, `{"refund": {...}}`, `{"balance":
//! {...}}`, `{"receipt": {...}}`, `{"dispute": {...}}`, `{"disputes": {...}}` or
//! `{"resolution": {...}}`, each with the fields of the matching HTTP request.
//! The answer is a completed task whose artifact holds what the HTTP API answers for the
//! same input (for a conversion, the signed mandates). The `messageId` is the idempotency
//! key: a retried message gets the same task back, nothing is recorded twice.
//!
//! Every request names the protocol version in the `A2A-Version` header; no header means
//! 0.3 (A2A v1.0, section 3.6.2), and any version but 1.0 is refused with
//! `VersionNotSupportedError`. Tasks are complete when answered; each is kept in the
//! ledger's `aux` keyspace (operational state beside the log, never exported) under the
//! principal that sent the message, so `GetTask` answers it to that principal alone.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::problem::Problem;
use crate::auth::Principal;
use crate::catalogue::{Op, scope_name};
use crate::error::Error;
use crate::ops::App;
use crate::ops::commands::{self, ConversionBody, Fact, HandoffBody, HandoffParams, LeadBody, OutcomeView, RefundBody};
use crate::ops::disputes::{self, DisputeBody, DisputeQuery, ResolveParams, Step as _};
use crate::ops::queries::{self, PartnerParams, ReceiptParams};

/// JWS `typ` of the signed agent card.
pub const TYP_AGENT_CARD: &str = "settle-agent-card+jws";

/// The A2A v1.0 agent card: what settle does for agents, where, and how to authenticate.
/// `signatures` holds a JWS (flattened: protected header and signature, detached
/// payload) over the RFC 8785 form of the card without `signatures`, by the vendor key.
/// The card holds no empty string, list or object, so that form is also what A2A's
/// canonicalisation (and the A2A SDK's verifier) computes from it.
fn card(keys: &crate::keystore::KeyFile, base: &str) -> Result<Value, Error> {
    // Each skill needs its operation's scope; the card needs a token with one of them.
    // A requirement always names its scope: an empty list would be a default value that
    // A2A canonicalisation omits (and the A2A SDK drops every empty value before it
    // verifies), so the signed form would differ from the card served.
    let mut scopes: Vec<String> = Vec::new();
    let mut skill = |op: Op, id: &str, name: &str, description: &str, tags: &[&str], examples: &[&str]| {
        let scope = crate::catalogue::entry(op).scope.map(scope_name).unwrap_or_default();
        if !scopes.contains(&scope) {
            scopes.push(scope.clone());
        }
        json!({"id": id, "name": name, "description": description, "tags": tags, "examples": examples, "inputModes": ["application/json"], "outputModes": ["application/json"], "securityRequirements": [bearer(&scope)]})
    };
    let skills = json!([
        skill(
            Op::RegisterLead,
            "register-lead",
            "Register a lead",
            "Register a customer for a partner; the first valid registration in the attribution window owns it. Data part: {\"lead\": {\"lead\", \"program\", \"customer\", \"partner\"}}.",
            &["leads", "attribution"],
            &[
                "{\"lead\": {\"lead\": \"lead-7\", \"program\": \"growth\", \"customer\": \"acme.example\", \"partner\": \"p01\"}}"
            ]
        ),
        skill(
            Op::HandOffLead,
            "hand-off-lead",
            "Hand off a lead",
            "Add a hop to a lead's referral chain. Data part: {\"handoff\": {\"lead\", \"from\", \"to\"}}.",
            &["leads", "referral chain"],
            &["{\"handoff\": {\"lead\": \"lead-7\", \"from\": \"p01\", \"to\": \"p02\"}}"]
        ),
        skill(
            Op::RecordConversion,
            "record-conversion",
            "Record a won deal",
            "Record a conversion; the task's artifact holds the signed payment mandate of every hop, after it is durable. Data part: {\"conversion\": {\"conversion\", \"lead\", \"revenue\", \"currency\"}}.",
            &["settlement", "mandates", "AP2"],
            &[
                "{\"conversion\": {\"conversion\": \"deal-42\", \"lead\": \"lead-7\", \"revenue\": \"12345.67\", \"currency\": \"USD\"}}"
            ]
        ),
        skill(
            Op::RecordRefund,
            "record-refund",
            "Record a refund",
            "Record a full or partial refund; every hop's commission is clawed back in proportion. Data part: {\"refund\": {\"refund\", \"conversion\", \"full\"}} or with \"amount\" and \"currency\".",
            &["refunds", "clawbacks"],
            &[
                "{\"refund\": {\"refund\": \"rf-1\", \"conversion\": \"deal-42\", \"amount\": \"2000.00\", \"currency\": \"USD\"}}"
            ]
        ),
        skill(
            Op::GetBalance,
            "partner-balance",
            "Partner balance",
            "Earned, on hold, payable, in payout, paid and clawed back for one partner. Data part: {\"balance\": {\"partner\"}}.",
            &["balances"],
            &["{\"balance\": {\"partner\": \"p01\"}}"]
        ),
        skill(
            Op::GetReceipt,
            "receipt-with-proof",
            "Receipt with proof",
            "A mandate's receipt with its RFC 9162 inclusion proof and signed checkpoint. Data part: {\"receipt\": {\"partner\", \"mandate_id\"}}.",
            &["receipts", "verification", "merkle"],
            &["{\"receipt\": {\"partner\": \"p02\", \"mandate_id\": \"md_120_1\"}}"]
        ),
        skill(
            Op::OpenDispute,
            "open-dispute",
            "Dispute a commission",
            "Dispute a conversion, a payment mandate, a clawback or a deal missing on a lead, with the amount claimed and evidence, within the program's dispute window. Data part: {\"dispute\": {\"dispute\", \"partner\", \"subject\", \"statement\", \"claimed\", \"evidence\"}}.",
            &["disputes", "evidence"],
            &[
                "{\"dispute\": {\"dispute\": \"dsp-1\", \"partner\": \"p02\", \"subject\": {\"kind\": \"mandate\", \"mandate\": \"md_120_1\"}, \"claimed\": \"25.00\", \"statement\": \"the closer share should be 40%\", \"evidence\": [\"contract clause 4.2\"]}}"
            ]
        ),
        skill(
            Op::ListDisputes,
            "list-disputes",
            "List disputes",
            "A partner's disputes (every one for the vendor), with claims, comments, resolutions and adjustment mandates. Data part: {\"disputes\": {\"partner\", \"status\", \"overdue\"}} (each optional).",
            &["disputes"],
            &["{\"disputes\": {\"status\": \"open\"}}"]
        ),
        skill(
            Op::ResolveDispute,
            "resolve-dispute",
            "Resolve a dispute",
            "The vendor rejects a dispute with a reason, or accepts it: one signed adjustment mandate per partner line, never more than the claim. Data part: {\"resolution\": {\"dispute\", \"resolution\": {\"outcome\", \"reason\", \"adjustments\"}}}.",
            &["disputes", "adjustments", "mandates"],
            &[
                "{\"resolution\": {\"dispute\": \"dsp-1\", \"resolution\": {\"outcome\": \"accepted\", \"reason\": \"agreed\"}}}"
            ]
        )
    ]);
    scopes.sort_unstable();
    let requirements: Vec<Value> = scopes.iter().map(|s| bearer(s)).collect();
    let mut card = json!({
        "name": format!("settle ({})", keys.vendor),
        "description": "Commission settlement for the vendor's partner program: register leads, record won deals and refunds, and receive one Ed25519-signed AP2-style payment mandate per hop of the referral chain, with receipts and Merkle proofs verifiable offline against the vendor's JWKS. Disputes are opened, listed and resolved with signed adjustment mandates. Send a message with one data part naming the intent (lead, handoff, conversion, refund, balance, receipt, dispute, disputes, resolution) and the fields of the matching REST request; the REST API is described at documentationUrl and MCP is served at /mcp.",
        "supportedInterfaces": [{"url": format!("{base}/a2a"), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "version": env!("CARGO_PKG_VERSION"),
        "provider": {"organization": keys.vendor, "url": base},
        "documentationUrl": format!("{base}/openapi.json"),
        "capabilities": {"streaming": false, "pushNotifications": false},
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer", "description": "API token from `settle keys token`, bound to a principal and scopes"}}},
        "securityRequirements": requirements,
        "skills": skills,
    });
    let key = keys.current().map_err(Error::internal)?;
    let payload = settle_mandates::jcs::to_vec(&card).map_err(Error::internal)?;
    let token = settle_mandates::jws::sign(TYP_AGENT_CARD, &payload, &key);
    let mut parts = token.split('.');
    let (protected, _, signature) = (parts.next().unwrap_or_default(), parts.next(), parts.next().unwrap_or_default());
    card["signatures"] = json!([{"protected": protected, "signature": signature}]);
    Ok(card)
}

/// A security requirement: a bearer token holding `scope`.
fn bearer(scope: &str) -> Value {
    json!({"schemes": {"bearer": {"list": [scope]}}})
}

/// The card names the address settle was started on, never the request's Host header
/// (a signed card must not echo what a caller sends).
pub async fn agent_card(State(app): State<App>) -> Result<Response, Error> {
    let base = app.base.clone();
    Ok(Json(card(&app.keys, &base)?).into_response())
}

/// What a message asks for: exactly one intent, with the fields of the REST request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Intent {
    Lead(LeadBody),
    Handoff(HandoffParams),
    Conversion(ConversionBody),
    Refund(RefundBody),
    Balance(PartnerParams),
    Receipt(ReceiptParams),
    Dispute(DisputeBody),
    Disputes(DisputeQuery),
    Resolution(ResolveParams),
}

// JSON-RPC 2.0 and A2A error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const TASK_NOT_FOUND: i64 = -32001;
const CONTENT_TYPE_NOT_SUPPORTED: i64 = -32005;
const VERSION_NOT_SUPPORTED: i64 = -32009;

/// The A2A protocol version this agent speaks (`Major.Minor`).
pub const PROTOCOL_VERSION: &str = "1.0";
/// The header naming the version a request speaks.
pub const VERSION_HEADER: &str = "a2a-version";
/// Longest task id `GetTask` looks up.
const MAX_TASK_ID: usize = 256;

/// A JSON-RPC error. Its `data` carries a `google.rpc.ErrorInfo` naming the A2A reason
/// (A2A v1.0, section 9.5) with `metadata`, except for a body that is not JSON.
fn rpc_error_with(id: &Value, code: i64, message: impl Into<String>, metadata: Value) -> Response {
    let reason = match code {
        INVALID_REQUEST => "INVALID_REQUEST",
        METHOD_NOT_FOUND => "METHOD_NOT_FOUND",
        INVALID_PARAMS => "INVALID_PARAMS",
        TASK_NOT_FOUND => "TASK_NOT_FOUND",
        CONTENT_TYPE_NOT_SUPPORTED => "CONTENT_TYPE_NOT_SUPPORTED",
        VERSION_NOT_SUPPORTED => "VERSION_NOT_SUPPORTED",
        _ => "",
    };
    let mut error = json!({"code": code, "message": message.into()});
    if !reason.is_empty() {
        error["data"] = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "a2a-protocol.org", "metadata": metadata}]);
    }
    Json(json!({"jsonrpc": "2.0", "id": id, "error": error})).into_response()
}

fn rpc_error(id: &Value, code: i64, message: impl Into<String>) -> Response {
    rpc_error_with(id, code, message, json!({}))
}

/// The error refusing a request that does not speak the version this agent speaks, if it
/// does not. No header (or an empty one) is 0.3 (A2A v1.0, section 3.6.2); the patch part
/// of a version is not considered.
fn refuse_version(h: &HeaderMap, id: &Value) -> Option<Response> {
    let given = h.get(VERSION_HEADER).map(|v| v.to_str().map(str::trim));
    let version = match given {
        None | Some(Ok("")) => "0.3",
        Some(Ok(v)) if v.len() <= 32 => v,
        Some(Ok(_)) => "(longer than 32 characters)",
        Some(Err(_)) => "(not visible ASCII)",
    };
    let mut parts = version.split('.');
    let (major, minor, patch, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
    let number = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let supported = major == Some("1") && minor == Some("0") && (patch.is_none() || number(patch)) && rest.is_none();
    if supported {
        return None;
    }
    let said = if matches!(given, None | Some(Ok(""))) {
        "no A2A-Version header, which A2A reads as version 0.3".to_owned()
    } else {
        format!("A2A-Version '{version}'")
    };
    Some(rpc_error_with(
        id,
        VERSION_NOT_SUPPORTED,
        format!(
            "{said}: this agent speaks A2A {PROTOCOL_VERSION} only; send the header A2A-Version: {PROTOCOL_VERSION}"
        ),
        json!({"requestedVersion": version, "supportedVersions": PROTOCOL_VERSION}),
    ))
}

/// `POST /a2a`: the A2A JSON-RPC binding. Authentication is HTTP's (401 problem+json);
/// everything after it answers in JSON-RPC.
pub async fn rpc(State(app): State<App>, h: HeaderMap, body: Bytes) -> Response {
    let p = match app.principal(h.get(header::AUTHORIZATION).map(axum::http::HeaderValue::as_bytes)) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(&Value::Null, PARSE_ERROR, "the body is not JSON");
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if req.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !matches!(id, Value::String(_) | Value::Number(_)) {
        return rpc_error(&id, INVALID_REQUEST, "a JSON-RPC 2.0 request with a string or number id is expected");
    }
    if let Some(refused) = refuse_version(&h, &id) {
        return refused;
    }
    match req.get("method").and_then(Value::as_str) {
        Some("SendMessage") => send_message(&app, &p, &id, &req).await,
        Some("GetTask") => get_task(&app, &p, &id, &req),
        Some("message/send") => {
            rpc_error(&id, METHOD_NOT_FOUND, "this agent speaks A2A 1.0: use the method SendMessage")
        }
        Some(m) => {
            rpc_error(&id, METHOD_NOT_FOUND, format!("unknown method '{m}'; this agent offers SendMessage and GetTask"))
        }
        None => rpc_error(&id, INVALID_REQUEST, "missing method"),
    }
}

/// `SendMessage`: performs the message's intent and answers the task, which is kept for
/// `GetTask`.
async fn send_message(app: &App, p: &Principal, id: &Value, req: &Value) -> Response {
    let message = req.pointer("/params/message").cloned().unwrap_or(Value::Null);
    let Some(message_id) = message.get("messageId").and_then(Value::as_str).filter(|m| !m.is_empty()) else {
        return rpc_error(id, INVALID_PARAMS, "params.message.messageId is required (it is the idempotency key)");
    };
    let datas: Vec<&Value> = message
        .get("parts")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("data")).collect())
        .unwrap_or_default();
    let [data] = datas.as_slice() else {
        return rpc_error(
            id,
            CONTENT_TYPE_NOT_SUPPORTED,
            "send exactly one data part naming the intent: lead, handoff, conversion, refund, balance, receipt, dispute, disputes or resolution",
        );
    };
    let intent: Intent = match serde_json::from_value((*data).clone()) {
        Ok(i) => i,
        Err(e) => return rpc_error(id, INVALID_PARAMS, format!("data part: {e}")),
    };
    let key = match p.idempotency_key(&format!("a2a/{message_id}")) {
        Ok(k) => k,
        Err(e) => return rpc_error(id, INVALID_PARAMS, e.detail),
    };
    let result = perform(app, p, key, intent).await;
    let context = message.get("contextId").and_then(Value::as_str).map(str::to_owned);
    let task = task(message_id, context, &message, result);
    keep(app, p, &task);
    Json(json!({"jsonrpc": "2.0", "id": id, "result": {"task": task}})).into_response()
}

/// The `aux` key of task `task` of principal `p`: tasks are kept per principal (its kind
/// and subject), so no other principal can name them.
fn task_key(p: &Principal, task: &str) -> Vec<u8> {
    let kind = serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    format!("a2a/task/{}/{task}", hex::encode(format!("{kind}:{}", p.subject))).into_bytes()
}

/// Keeps `task` for `GetTask`. Written without a sync of its own: it survives the process
/// being killed, and a lost one is written again by retrying the message (its messageId is
/// the idempotency key, so nothing is recorded twice). A failure to keep it is logged; the
/// answer stands.
fn keep(app: &App, p: &Principal, task: &Value) {
    let Some(id) = task.get("id").and_then(Value::as_str) else { return };
    let kept = serde_json::to_vec(task)
        .map_err(|e| e.to_string())
        .and_then(|v| app.svc.ledger().aux_put(&task_key(p, id), &v, false).map_err(|e| e.to_string()));
    if let Err(e) = kept {
        tracing::warn!("A2A task {id} answered but not kept for GetTask: {e}");
    }
}

/// `GetTask`: the task this principal was answered under `params.id`, with at most
/// `params.historyLength` messages of its history (0: none). Another principal's task,
/// like one that never existed, is `TaskNotFoundError`.
fn get_task(app: &App, p: &Principal, id: &Value, req: &Value) -> Response {
    if let Err(e) = crate::catalogue::allow(p, Op::GetTask, &[]) {
        return e.into_response();
    }
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    let Some(task_id) = params.get("id").and_then(Value::as_str).filter(|t| !t.is_empty() && t.len() <= MAX_TASK_ID)
    else {
        return rpc_error(id, INVALID_PARAMS, format!("params.id must be a task id (1..={MAX_TASK_ID} characters)"));
    };
    let history = match params.get("historyLength") {
        None | Some(Value::Null) => None,
        Some(n) => match n.as_u64() {
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => return rpc_error(id, INVALID_PARAMS, "params.historyLength must be a whole number, 0 or more"),
        },
    };
    let stored = match app.svc.ledger().aux_get(&task_key(p, task_id)) {
        Ok(v) => v,
        Err(e) => return rpc_error(id, -32603, format!("tasks cannot be read now: {e}")),
    };
    let Some(mut task) = stored.and_then(|v| serde_json::from_slice::<Value>(&v).ok()) else {
        return rpc_error_with(id, TASK_NOT_FOUND, format!("task '{task_id}' not found"), json!({"taskId": task_id}));
    };
    if let Some(n) = history
        && let Some(o) = task.as_object_mut()
    {
        if n == 0 {
            o.remove("history");
        } else if let Some(Value::Array(h)) = o.get_mut("history") {
            let skip = h.len().saturating_sub(n);
            h.drain(..skip);
        }
    }
    Json(json!({"jsonrpc": "2.0", "id": id, "result": task})).into_response()
}

async fn perform(app: &App, p: &Principal, key: String, intent: Intent) -> Result<(String, Value), Error> {
    let write = |fact: Fact| async move {
        let o = commands::record(app, p, key, fact).await?;
        let v = serde_json::to_value(OutcomeView::of(&o, p)).map_err(Error::internal)?;
        Ok((format!("task_{}", o.seq), v))
    };
    let read = |v: Result<Value, serde_json::Error>| Ok((String::new(), v.map_err(Error::internal)?));
    match intent {
        Intent::Lead(b) => write(b.fact(p)?).await,
        Intent::Handoff(h) => write(HandoffBody { from: h.from, to: h.to }.fact(app, p, h.lead)?).await,
        Intent::Conversion(b) => write(b.fact(p, Utc::now())?).await,
        Intent::Refund(b) => write(b.fact(p)?).await,
        Intent::Balance(q) => read(serde_json::to_value(queries::balance(app, p, &q.partner)?)),
        Intent::Receipt(q) => read(serde_json::to_value(queries::receipt(app, p, &q.partner, &q.mandate_id)?)),
        Intent::Dispute(b) => write(b.fact(app, p)?).await,
        Intent::Disputes(q) => read(serde_json::to_value(disputes::disputes(app, p, &q)?)),
        Intent::Resolution(r) => write(r.resolution.fact(app, p, r.dispute)?).await,
    }
}

/// The task answering `message`: completed with the result as an artifact, or rejected
/// (the request was refused, 4xx) / failed (5xx) with the problem in its status message.
fn task(message_id: &str, context: Option<String>, message: &Value, result: Result<(String, Value), Error>) -> Value {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let reply =
        |parts: Value| json!({"messageId": format!("{message_id}/reply"), "role": "ROLE_AGENT", "parts": parts});
    let (id, status, artifacts) = match result {
        Ok((id, v)) => {
            let id = if id.is_empty() { format!("task_msg_{message_id}") } else { id };
            let artifact = json!({"artifactId": format!("{id}/result"), "name": "result", "parts": [{"data": v, "mediaType": "application/json"}]});
            (id, json!({"state": "TASK_STATE_COMPLETED", "timestamp": now}), json!([artifact]))
        }
        Err(e) => {
            let state = if e.kind.is_refusal() { "TASK_STATE_REJECTED" } else { "TASK_STATE_FAILED" };
            let pr = Problem::from(e);
            let msg =
                reply(json!([{"text": pr.to_string()}, {"data": pr.body(), "mediaType": "application/problem+json"}]));
            (format!("task_msg_{message_id}"), json!({"state": state, "message": msg, "timestamp": now}), json!([]))
        }
    };
    json!({
        "id": id,
        "contextId": context.unwrap_or_else(|| format!("ctx_{message_id}")),
        "status": status,
        "artifacts": artifacts,
        "history": [message],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden;

    /// The signed card for a fixed key and address is a committed golden vector
    /// (`tests/vectors/agent_card.json`): Ed25519 is deterministic, so any drift in the
    /// card or its signing shows here.
    #[test]
    fn agent_card_golden_vector() {
        let keys =
            crate::keystore::KeyFile::new("ven_acme", "settle.example/log", [0x11; 32], [0x22; 32], 1_767_225_600);
        let card = card(&keys, "http://127.0.0.1:8417").expect("card");
        golden::check(
            "agent_card.json",
            &json!({
                "about": "The A2A agent card settle serves for vendor ven_acme (key seed 0x11 x 32) listening on 127.0.0.1:8417. signatures[0] is a flattened JWS (detached payload) over the RFC 8785 form of the card without `signatures`; the card holds no empty value, so that is also the form A2A canonicalisation and the A2A SDK's verifier compute.",
                "jwks": keys.jwks().expect("jwks"),
                "card": card,
            }),
        );
    }

    /// The empty values A2A canonicalisation omits (and the A2A SDK drops before it
    /// verifies): an empty string, list or object, anywhere in `v`.
    fn empties(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.is_empty() => out.push(at.to_owned()),
            Value::Array(a) if a.is_empty() => out.push(at.to_owned()),
            Value::Object(o) if o.is_empty() => out.push(at.to_owned()),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| empties(x, &format!("{at}/{i}"), out)),
            Value::Object(o) => o.iter().for_each(|(k, x)| empties(x, &format!("{at}/{k}"), out)),
            _ => {}
        }
    }

    /// What is signed is what every verifier canonicalises: the card holds no empty
    /// value, so dropping empties (as A2A's canonicalisation and the A2A SDK do) leaves
    /// it as served. Each skill names the scope of its operation.
    #[test]
    fn agent_card_has_no_empty_value_and_names_each_skills_scope() {
        let keys =
            crate::keystore::KeyFile::new("ven_acme", "settle.example/log", [0x11; 32], [0x22; 32], 1_767_225_600);
        let card = card(&keys, "http://127.0.0.1:8417").expect("card");
        let mut found = Vec::new();
        empties(&card, "", &mut found);
        assert!(found.is_empty(), "empty values in the signed card: {found:?}");
        let scope = |skill: &str| {
            card["skills"].as_array().expect("skills").iter().find(|s| s["id"] == skill).expect("skill")
                ["securityRequirements"][0]["schemes"]["bearer"]["list"]
                .clone()
        };
        assert_eq!(scope("record-conversion"), json!(["conversions_write"]));
        assert_eq!(scope("partner-balance"), json!(["read"]));
        assert_eq!(scope("open-dispute"), json!(["disputes_write"]));
        assert_eq!(scope("resolve-dispute"), json!(["settlements_write"]));
        assert_eq!(card["securityRequirements"].as_array().map(Vec::len), Some(6), "{card}");
    }

    fn headers(v: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = v {
            h.insert(VERSION_HEADER, v.parse().expect("header"));
        }
        h
    }

    /// A2A 1.0 (any patch) is served; no header is 0.3, refused like every other version.
    #[test]
    fn only_a2a_1_0_is_served() {
        for ok in ["1.0", "1.0.0", " 1.0 ", "1.0.7"] {
            assert!(refuse_version(&headers(Some(ok)), &json!(1)).is_none(), "{ok}");
        }
        for no in [
            None,
            Some(""),
            Some("0.3"),
            Some("1"),
            Some("1.1"),
            Some("2.0"),
            Some("1.0."),
            Some("1.0.0.0"),
            Some("v1.0"),
        ] {
            assert!(refuse_version(&headers(no), &json!(1)).is_some(), "{no:?}");
        }
    }
}
