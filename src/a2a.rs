//! A2A v1.0: the signed agent card at `/.well-known/agent-card.json`, and the JSON-RPC
//! binding at `/a2a` with `SendMessage`, so a partner's or vendor's agent registers leads
//! and deals agent to agent.
//!
//! A message carries one data part naming its intent — `{"lead": {...}}`,
//! `{"handoff": {...}}`, `{"conversion": {...}}`, `{"refund": {...}}`, `{"balance":
//! {...}}` or `{"receipt": {...}}`, each with the fields of the matching HTTP request.
//! The answer is a completed task whose artifact holds what the HTTP API answers for the
//! same input (for a conversion, the signed mandates). The `messageId` is the idempotency
//! key: a retried message gets the same task back, nothing is recorded twice.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{self, App, ConversionBody, HandoffBody, LeadBody, Principal, Problem, RefundBody, outcome_json};

/// JWS `typ` of the signed agent card.
pub const TYP_AGENT_CARD: &str = "settle-agent-card+jws";

/// The A2A v1.0 agent card: what settle does for agents, where, and how to authenticate.
/// `signatures` holds a JWS (flattened: protected header and signature, detached
/// payload) over the RFC 8785 form of the card without `signatures`, by the vendor key.
fn card(keys: &crate::keystore::KeyFile, base: &str) -> Result<Value, Problem> {
    let skill = |id: &str, name: &str, description: &str, tags: &[&str], examples: &[&str]| json!({"id": id, "name": name, "description": description, "tags": tags, "examples": examples, "inputModes": ["application/json"], "outputModes": ["application/json"]});
    let mut card = json!({
        "name": format!("settle ({})", keys.vendor),
        "description": "Commission settlement for the vendor's partner program: register leads, record won deals and refunds, and receive one Ed25519-signed AP2-style payment mandate per hop of the referral chain, with receipts and Merkle proofs verifiable offline against the vendor's JWKS. Send a message with one data part naming the intent (lead, handoff, conversion, refund, balance, receipt) and the fields of the matching REST request; the REST API is described at documentationUrl and MCP is served at /mcp.",
        "supportedInterfaces": [{"url": format!("{base}/a2a"), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "version": env!("CARGO_PKG_VERSION"),
        "provider": {"organization": keys.vendor, "url": base},
        "documentationUrl": format!("{base}/openapi.json"),
        "capabilities": {"streaming": false, "pushNotifications": false},
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer", "description": "API token from `settle keys token`, bound to a principal and scopes"}}},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
        "skills": [
            skill("register-lead", "Register a lead", "Register a customer for a partner; the first valid registration in the attribution window owns it. Data part: {\"lead\": {\"lead\", \"program\", \"customer\", \"partner\"}}.", &["leads", "attribution"], &["{\"lead\": {\"lead\": \"lead-7\", \"program\": \"growth\", \"customer\": \"acme.example\", \"partner\": \"p01\"}}"]),
            skill("hand-off-lead", "Hand off a lead", "Add a hop to a lead's referral chain. Data part: {\"handoff\": {\"lead\", \"from\", \"to\"}}.", &["leads", "referral chain"], &["{\"handoff\": {\"lead\": \"lead-7\", \"from\": \"p01\", \"to\": \"p02\"}}"]),
            skill("record-conversion", "Record a won deal", "Record a conversion; the task's artifact holds the signed payment mandate of every hop, after it is durable. Data part: {\"conversion\": {\"conversion\", \"lead\", \"revenue\", \"currency\"}}.", &["settlement", "mandates", "AP2"], &["{\"conversion\": {\"conversion\": \"deal-42\", \"lead\": \"lead-7\", \"revenue\": \"12345.67\", \"currency\": \"USD\"}}"]),
            skill("record-refund", "Record a refund", "Record a full or partial refund; every hop's commission is clawed back in proportion. Data part: {\"refund\": {\"refund\", \"conversion\", \"full\"}} or with \"amount\" and \"currency\".", &["refunds", "clawbacks"], &["{\"refund\": {\"refund\": \"rf-1\", \"conversion\": \"deal-42\", \"amount\": \"2000.00\", \"currency\": \"USD\"}}"]),
            skill("partner-balance", "Partner balance", "Earned, on hold, payable, in payout, paid and clawed back for one partner. Data part: {\"balance\": {\"partner\"}}.", &["balances"], &["{\"balance\": {\"partner\": \"p01\"}}"]),
            skill("receipt-with-proof", "Receipt with proof", "A mandate's receipt with its RFC 9162 inclusion proof and signed checkpoint. Data part: {\"receipt\": {\"partner\", \"mandate_id\"}}.", &["receipts", "verification", "merkle"], &["{\"receipt\": {\"partner\": \"p02\", \"mandate_id\": \"md_120_1\"}}"])
        ]
    });
    let key = keys.current().map_err(api::internal)?;
    let payload = settle_mandates::jcs::to_vec(&card).map_err(api::internal)?;
    let token = settle_mandates::jws::sign(TYP_AGENT_CARD, &payload, &key);
    let mut parts = token.split('.');
    let (protected, _, signature) = (parts.next().unwrap_or_default(), parts.next(), parts.next().unwrap_or_default());
    card["signatures"] = json!([{"protected": protected, "signature": signature}]);
    Ok(card)
}

/// The card names the address settle was started on, never the request's Host header
/// (a signed card must not echo what a caller sends).
pub async fn agent_card(State(app): State<App>) -> Result<Response, Problem> {
    let base = app.base.clone();
    Ok(Json(card(&app.keys, &base)?).into_response())
}

/// What a message asks for: exactly one intent, with the fields of the REST request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Intent {
    Lead(LeadBody),
    Handoff(crate::mcp::HandoffParams),
    Conversion(ConversionBody),
    Refund(RefundBody),
    Balance(crate::mcp::PartnerParams),
    Receipt(crate::mcp::ReceiptParams),
}

// JSON-RPC 2.0 and A2A error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const CONTENT_TYPE_NOT_SUPPORTED: i64 = -32005;

fn rpc_error(id: &Value, code: i64, message: impl Into<String>) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})).into_response()
}

/// `POST /a2a`: the A2A JSON-RPC binding. Authentication is HTTP's (401 problem+json);
/// everything after it answers in JSON-RPC.
pub async fn rpc(State(app): State<App>, h: HeaderMap, body: Bytes) -> Response {
    let p = match Principal::from_authorization(&app, h.get(header::AUTHORIZATION)) {
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
    match req.get("method").and_then(Value::as_str) {
        Some("SendMessage") => {}
        Some("message/send") => {
            return rpc_error(&id, METHOD_NOT_FOUND, "this agent speaks A2A 1.0: use the method SendMessage");
        }
        Some(m) => {
            return rpc_error(&id, METHOD_NOT_FOUND, format!("unknown method '{m}'; this agent offers SendMessage"));
        }
        None => return rpc_error(&id, INVALID_REQUEST, "missing method"),
    }
    let message = req.pointer("/params/message").cloned().unwrap_or(Value::Null);
    let Some(message_id) = message.get("messageId").and_then(Value::as_str).filter(|m| !m.is_empty()) else {
        return rpc_error(&id, INVALID_PARAMS, "params.message.messageId is required (it is the idempotency key)");
    };
    let datas: Vec<&Value> = message
        .get("parts")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("data")).collect())
        .unwrap_or_default();
    let [data] = datas.as_slice() else {
        return rpc_error(
            &id,
            CONTENT_TYPE_NOT_SUPPORTED,
            "send exactly one data part naming the intent: lead, handoff, conversion, refund, balance or receipt",
        );
    };
    let intent: Intent = match serde_json::from_value((*data).clone()) {
        Ok(i) => i,
        Err(e) => return rpc_error(&id, INVALID_PARAMS, format!("data part: {e}")),
    };
    let key = match p.idempotency_key(&format!("a2a/{message_id}")) {
        Ok(k) => k,
        Err(e) => return rpc_error(&id, INVALID_PARAMS, e.detail),
    };
    let result = perform(&app, &p, key, intent).await;
    let context = message.get("contextId").and_then(Value::as_str).map(str::to_owned);
    Json(json!({"jsonrpc": "2.0", "id": id, "result": {"task": task(message_id, context, &message, result)}}))
        .into_response()
}

async fn perform(app: &App, p: &Principal, key: String, intent: Intent) -> Result<(String, Value), Problem> {
    let write = |event, request| async move {
        let o = api::write(app, p, key, event, request).await?;
        Ok((format!("task_{}", o.seq), outcome_json(&o)))
    };
    match intent {
        Intent::Lead(b) => write(b.event(p)?, None).await,
        Intent::Handoff(h) => write(HandoffBody { from: h.from, to: h.to }.event(p, h.lead)?, None).await,
        Intent::Conversion(b) => {
            let request = serde_json::to_value(&b).ok();
            write(b.event(p, Utc::now())?, request).await
        }
        Intent::Refund(b) => write(b.event(p)?, None).await,
        Intent::Balance(q) => Ok((String::new(), api::balance(app, p, &q.partner)?)),
        Intent::Receipt(q) => {
            let doc = api::receipt(app, p, &q.partner, &q.mandate_id)?;
            Ok((String::new(), serde_json::to_value(doc).map_err(api::internal)?))
        }
    }
}

/// The task answering `message`: completed with the result as an artifact, or rejected
/// (the request was refused, 4xx) / failed (5xx) with the problem in its status message.
fn task(message_id: &str, context: Option<String>, message: &Value, result: Result<(String, Value), Problem>) -> Value {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let reply =
        |parts: Value| json!({"messageId": format!("{message_id}/reply"), "role": "ROLE_AGENT", "parts": parts});
    let (id, status, artifacts) = match result {
        Ok((id, v)) => {
            let id = if id.is_empty() { format!("task_{message_id}") } else { id };
            let artifact = json!({"artifactId": format!("{id}/result"), "name": "result", "parts": [{"data": v, "mediaType": "application/json"}]});
            (id, json!({"state": "TASK_STATE_COMPLETED", "timestamp": now}), json!([artifact]))
        }
        Err(pr) => {
            let state = if pr.status.is_server_error() || pr.status == StatusCode::TOO_MANY_REQUESTS {
                "TASK_STATE_FAILED"
            } else {
                "TASK_STATE_REJECTED"
            };
            let msg =
                reply(json!([{"text": pr.to_string()}, {"data": pr.body(), "mediaType": "application/problem+json"}]));
            (format!("task_{message_id}"), json!({"state": state, "message": msg, "timestamp": now}), json!([]))
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
                "about": "The A2A agent card settle serves for vendor ven_acme (key seed 0x11 x 32) listening on 127.0.0.1:8417. signatures[0] is a flattened JWS (detached payload) over the RFC 8785 form of the card without `signatures`.",
                "jwks": keys.jwks().expect("jwks"),
                "card": card,
            }),
        );
    }
}
