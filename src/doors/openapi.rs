//! The OpenAPI 3.1 document of the HTTP API, built from the code it describes: its paths,
//! methods and `operationId`s from the catalogue ([`catalogue::OPERATIONS`]), its request
//! and response schemas from the Rust types the doors read and answer (`schemars`), so
//! that the document cannot drift from the server. Served at `GET /openapi.json`;
//! `docs/openapi.json` is a golden copy, checked by a test and rewritten with
//! `SETTLE_BLESS=1`.
//!
//! The server validates exactly what the document states: a request the document
//! forbids is answered 400 (413, 414 or 415 for its size, target or media type); one it
//! allows but the rules refuse (an unknown program, a split over 100 %, ...) 422.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::transform::{RecursiveTransform, Transform};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};
use settle_engine::model::{ID_PATTERN, ProgramSpec};
use settle_mandates::keys::Jwks;
use settle_mandates::receipt::ReceiptDocument;

use super::http::{BatchAnswer, MAX_BODY_BYTES, MAX_URI_BYTES, REQUEST_TIMEOUT};
use crate::catalogue::{self, Callers, Method, Op};
use crate::ops::admin::{TokenBody, TokenList, TokenView};
use crate::ops::audits::AuditView;
use crate::ops::commands::{
    AdvanceBody, AgentBody, AmendBody, BatchBody, ConversionBody, HandoffBody, LeadBody, OutcomeView, PartnerBody,
    PayoutBody, ReasonBody, RefundBody, SettlementBody,
};
use crate::ops::disputes::{CommentBody, DisputeBody, DisputeList, DisputeView, ResolutionBody, WithdrawBody};
use crate::ops::queries::{BalanceView, CheckpointView, ConsistencyView, ConversionView, MandatePage, ProgramView};
use crate::ops::reports::{AgentList, LeadList, PayoutList, StatementView};
use crate::webhooks::{DeadLetterList, ReplayBody, ReplayView, SubscribeBody, SubscriptionList, SubscriptionView};

/// A payment, clawback or adjustment mandate id.
const RECEIPT_MANDATE_PATTERN: &str = r"^(md|cb|aj)_[0-9]+_[0-9]+$";
/// A webhook subscription id.
const WEBHOOK_ID_PATTERN: &str = r"^whsub_[0-9a-f]{24}$";
/// An API token id.
const TOKEN_ID_PATTERN: &str = r"^tok_[0-9a-f]{12}$";
/// An idempotency key: 1..=200 visible ASCII characters.
const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!-~]{1,200}$";

/// The document as served: pretty JSON and a newline, exactly as `docs/openapi.json`.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = build();
        format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_else(|e| unreachable!("JSON: {e}")))
    })
}

/// Integer schemas state the bounds of their Rust type (`format` `uint32`, `int64`, ...)
/// where nothing narrower is stated: a larger number is refused, so the document says so.
fn integer_bounds(s: &mut Schema) {
    let Some(format) = s.get("format").and_then(Value::as_str) else { return };
    let (min, max): (Value, Value) = match format {
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "uint32" => (0.into(), u32::MAX.into()),
        "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
        "uint64" | "uint" => (0.into(), u64::MAX.into()),
        _ => return,
    };
    if s.get("minimum").is_none() {
        s.insert("minimum".into(), min);
    }
    if s.get("maximum").is_none() {
        s.insert("maximum".into(), max);
    }
}

/// The schemas of both directions: requests as they are read, answers as they are
/// written (an optional field that is always written is required in an answer).
struct Schemas {
    request: SchemaGenerator,
    response: SchemaGenerator,
}

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .with_transform(RecursiveTransform(integer_bounds))
}

impl Schemas {
    fn new() -> Self {
        Self {
            request: settings().for_deserialize().into_generator(),
            response: settings().for_serialize().into_generator(),
        }
    }

    fn request<T: JsonSchema>(&mut self) -> Value {
        bounded(self.request.subschema_for::<T>())
    }

    fn response<T: JsonSchema>(&mut self) -> Value {
        bounded(self.response.subschema_for::<T>())
    }

    /// Every named schema: a type read in requests and written in answers is named once
    /// (its two schemas must be the same: building the document, which the tests do,
    /// asserts it).
    fn components(mut self) -> Map<String, Value> {
        let mut out = self.request.take_definitions(true);
        for (name, schema) in self.response.take_definitions(true) {
            if let Some(seen) = out.get(&name) {
                assert!(*seen == schema, "schema {name} differs between requests and answers:\n{seen}\nvs\n{schema}");
            }
            out.insert(name, schema);
        }
        out
    }
}

fn bounded(mut s: Schema) -> Value {
    RecursiveTransform(integer_bounds).transform(&mut s);
    s.to_value()
}

/// How one operation is documented.
struct Doc {
    tag: &'static str,
    summary: &'static str,
    description: Option<&'static str>,
    /// Path parameters: name, description, pattern.
    path: Vec<(&'static str, &'static str, &'static str)>,
    /// Query parameters, as OpenAPI parameter objects.
    query: Vec<Value>,
    /// The JSON request body's schema.
    body: Option<Value>,
    /// Success answers: status, description, JSON schema (none: no content).
    ok: Vec<(u16, &'static str, Option<Value>)>,
    /// Whether it records a fact through the sequencer (then 404, 409, 422, 429, 503).
    fact: bool,
    /// Error answers of its own, beside the ones every operation of its kind has.
    errors: &'static [u16],
    /// The media type of its request body and of its success answers (JSON, unless
    /// it reads or writes an ISO 20022 file).
    body_media: &'static str,
    ok_media: &'static str,
}

impl Doc {
    fn new(tag: &'static str, summary: &'static str) -> Self {
        Self {
            tag,
            summary,
            description: None,
            path: Vec::new(),
            query: Vec::new(),
            body: None,
            ok: Vec::new(),
            fact: false,
            errors: &[],
            body_media: JSON,
            ok_media: JSON,
        }
    }
    /// A request body of ISO 20022 XML.
    fn xml_body(mut self, description: &'static str) -> Self {
        self.body = Some(json!({"type": "string", "description": description}));
        self.body_media = XML;
        self
    }
    /// A success answer of ISO 20022 XML.
    fn xml_ok(mut self, status: u16, description: &'static str) -> Self {
        self.ok.push((status, description, Some(json!({"type": "string"}))));
        self.ok_media = XML;
        self
    }
    fn describe(mut self, d: &'static str) -> Self {
        self.description = Some(d);
        self
    }
    fn path(mut self, name: &'static str, description: &'static str, pattern: &'static str) -> Self {
        self.path.push((name, description, pattern));
        self
    }
    fn query(mut self, name: &'static str, required: bool, description: &'static str, schema: Value) -> Self {
        self.query.push(
            json!({"name": name, "in": "query", "required": required, "description": description, "schema": schema}),
        );
        self
    }
    fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }
    fn ok(mut self, status: u16, description: &'static str, schema: Value) -> Self {
        self.ok.push((status, description, Some(schema)));
        self
    }
    fn empty(mut self, status: u16, description: &'static str) -> Self {
        self.ok.push((status, description, None));
        self
    }
    /// A fact recorded through the sequencer: 201 with the outcome, 200 for a replay.
    fn fact(mut self, s: &mut Schemas) -> Self {
        let outcome = s.response::<OutcomeView<'static>>();
        self.fact = true;
        self.ok(201, "Recorded (durable)", outcome.clone()).ok(
            200,
            "Replay of the original outcome (same key, same body)",
            outcome,
        )
    }
    fn errors(mut self, e: &'static [u16]) -> Self {
        self.errors = e;
        self
    }
}

/// The documentation of `op` (exhaustive: a new operation must be documented here).
fn doc(op: Op, s: &mut Schemas) -> Doc {
    match op {
        Op::OpenApi => Doc::new("meta", "This document (OpenAPI 3.1)").ok(200, "OK", json!({"type": "object"})),
        Op::Jwks => Doc::new("public", "Vendor public keys (JWKS, with validity periods)").ok(
            200,
            "OK",
            s.response::<Jwks>(),
        ),
        Op::AgentCard => Doc::new(
            "public",
            "A2A v1.0 agent card, signed by the vendor key (JWS over its RFC 8785 form)",
        )
        .ok(200, "OK", agent_card_schema()),
        Op::LatestCheckpoint => Doc::new("public", "Latest signed checkpoint (C2SP signed note)")
            .ok(200, "OK", s.response::<CheckpointView>())
            .errors(&[404]),
        Op::Consistency => Doc::new("public", "RFC 9162 consistency proof between two checkpoint sizes")
            .query("from", true, "The earlier tree size.", s.request::<u64>())
            .query("to", true, "The later tree size: a signed checkpoint's.", s.request::<u64>())
            .ok(200, "OK", s.response::<ConsistencyView>())
            .errors(&[404, 422]),
        Op::VerifyReceipt | Op::GetTask => unreachable!("{} has no HTTP door", catalogue::entry(op).name),
        Op::PublishProgram => {
            Doc::new("vendor", "Publish a program (rules as data)").body(s.request::<ProgramSpec>()).fact(s)
        }
        Op::DescribeProgram => Doc::new("vendor", "Describe a program's rule versions")
            .describe("Every rule version of the program, as published and in plain language. A partner sees its own program only.")
            .path("id", "Program id.", ID_PATTERN)
            .ok(200, "OK", s.response::<ProgramView>()),
        Op::AmendProgram => Doc::new("vendor", "Amend a program from a stated time")
            .path("id", "Program id.", ID_PATTERN)
            .body(s.request::<AmendBody>())
            .fact(s),
        Op::EnrollPartner => Doc::new("vendor", "Enroll a partner").body(s.request::<PartnerBody>()).fact(s),
        Op::SuspendPartner => Doc::new("vendor", "Suspend a partner")
            .path("id", "Partner id.", ID_PATTERN)
            .body(s.request::<ReasonBody>())
            .fact(s),
        Op::GetBalance => Doc::new(
            "partner",
            "A partner's balances: earned, on hold, payable, in payout, paid, clawed back",
        )
        .path("id", "Partner id.", ID_PATTERN)
        .ok(200, "OK", s.response::<BalanceView>()),
        Op::ListMandates => Doc::new("partner", "A partner's payment mandates (own data only), a page at a time")
            .path("id", "Partner id.", ID_PATTERN)
            .query(
                "after",
                false,
                "Only mandates recorded after this log position: the `seq` of the last mandate of the previous page.",
                s.request::<u64>(),
            )
            .query(
                "limit",
                false,
                "Page size.",
                json!({"type": "integer", "minimum": 1, "maximum": crate::ops::queries::MAX_PAGE, "default": 100}),
            )
            .ok(200, "OK", s.response::<MandatePage>())
            .errors(&[422]),
        Op::GetConversion => Doc::new("partner", "A conversion's referral chain: each hop's partner and role, and its money")
            .describe("The vendor sees every hop's amount, clawbacks, status and mandate, and the revenue; a partner sees only a conversion it is on (any other is 404, as one that does not exist), and the money of its own hops only. A conversion that earned no commission has no chain: 404.")
            .path("id", "Conversion id.", ID_PATTERN)
            .ok(200, "OK", s.response::<ConversionView>()),
        Op::GetReceipt => Doc::new(
            "partner",
            "Receipt of a payment (md_…), clawback (cb_…) or adjustment (aj_…) mandate with its inclusion proof and checkpoint",
        )
        .describe("409 while no signed checkpoint covers the mandate yet (one is signed every second while the log grows).")
        .path("id", "Partner id.", ID_PATTERN)
        .path("mandate", "Mandate id.", RECEIPT_MANDATE_PATTERN)
        .ok(200, "OK", s.response::<ReceiptDocument>())
        .errors(&[409]),
        Op::GetStatement => Doc::new("partner", "A partner's statement for a period: every line names the fact, conversion, rule version, hop and mandate behind it")
            .describe("Opening balances before the period, each entry in it (earned, clawback, hold released, payout batched, paid, returned, adjustment, ...) with the balances after it, closing balances after it; the log replayed by an engine of its own, as `settle statement` does. A period of more than 100,000 lines is 422: ask for a shorter one. The workspace offers it as CSV.")
            .path("id", "Partner id.", ID_PATTERN)
            .query("from", false, "From (inclusive), RFC 3339.", json!({"type": "string", "format": "date-time"}))
            .query("to", false, "To (exclusive), RFC 3339.", json!({"type": "string", "format": "date-time"}))
            .ok(200, "OK", s.response::<StatementView>())
            .errors(&[422]),
        Op::ListLeads => Doc::new("partner", "The leads a partner is on the chain of, and their status")
            .describe("Newest first, at most 1,000. `attributable` while its attribution window is open, `expired` after, `duplicate` when another lead owns the customer (which lead is shown to the vendor only).")
            .path("id", "Partner id.", ID_PATTERN)
            .ok(200, "OK", s.response::<LeadList>()),
        Op::ListAgents => Doc::new("partner", "A partner's agents: their scopes, validity and whether they are in force")
            .path("id", "Partner id.", ID_PATTERN)
            .ok(200, "OK", s.response::<AgentList>()),
        Op::AuthoriseAgent => Doc::new("partner", "Authorise an agent for a partner (scopes, validity)")
            .describe("The vendor, or the partner itself (not its agents), for that partner; the grant never holds more than the granting token.")
            .body(s.request::<AgentBody>())
            .fact(s),
        Op::RevokeAgent => Doc::new("partner", "Revoke an agent (effective on its next request)")
            .path("id", "Agent id.", ID_PATTERN)
            .fact(s),
        Op::RegisterLead => Doc::new("partner", "Register a lead (first valid registration owns the customer)")
            .body(s.request::<LeadBody>())
            .fact(s),
        Op::HandOffLead => Doc::new("partner", "Hand a lead to another partner (adds a hop)")
            .path("id", "Lead id.", ID_PATTERN)
            .body(s.request::<HandoffBody>())
            .fact(s),
        Op::RecordConversion => Doc::new(
            "vendor",
            "Record a won deal; the response carries the signed mandate of every hop",
        )
        .body(s.request::<ConversionBody>())
        .fact(s),
        Op::RecordConversions => Doc::new("vendor", "Record up to 1000 conversions in one durable group")
            .describe("Each item is recorded or refused on its own (under the key `<Idempotency-Key>#<index>`); the answer lists, in order, each item's outcome or the problem that refused it.")
            .body(s.request::<BatchBody>())
            .ok(200, "The items' results", s.response::<BatchAnswer<'static>>())
            .errors(&[409, 422, 429, 503]),
        Op::ReleaseConversion => Doc::new("vendor", "Release a held conversion")
            .describe("Decides a held conversion again against the program's current standing authorisation (after an amendment raised the budget, widened the payment range or the validity window). A conversion held because a partner of its chain is suspended stays held: a suspension is not lifted. If it now allows the payment, one mandate per hop is issued, as the deal was computed when recorded (its rule version, pool and split); the holding period of the rules it was computed under starts now. Otherwise 422 with the reason it stays held. A conversion with refunds recorded cannot be released. Needs a vendor token with `settlements_write`.")
            .path("id", "Conversion id.", ID_PATTERN)
            .fact(s),
        Op::RecordRefund => Doc::new("vendor", "Record a refund; clawbacks on every hop")
            .describe("Give exactly one of: `\"full\": true`; `amount` and `currency`; or `fraction` (0 < f ≤ 1). Another combination is refused (422).")
            .body(s.request::<RefundBody>())
            .fact(s),
        Op::CreatePayout => Doc::new("vendor", "Put a partner's payable mandates into a payout batch for a rail")
            .describe("The mandates move from payable to in payout (`payout_batch_created`: the amount the rail is to pay, less any negative payable left by clawbacks of paid money, as `offset`). The rail's answer comes through `POST /v1/settlements` with `batch`. Needs a vendor token with `settlements_write`.")
            .body(s.request::<PayoutBody>())
            .fact(s),
        Op::RecordSettlement => Doc::new(
            "vendor",
            "Confirm (or fail) a payout on a rail: named payable mandates, or a whole payout batch",
        )
        .describe("With `batch`, the rail's answer for a payout batch made by `POST /v1/payouts`: `mandate_ids` must list the batch's mandates in its order; confirmed, they are paid; failed, they are payable again. Without `batch`, the named payable mandates are paid (or the failure is recorded). Give `confirmation_id` or `error`, not both (422).")
        .body(s.request::<SettlementBody>())
        .fact(s),
        Op::AdvanceHolds => Doc::new("vendor", "Advance log time: release holds that are due")
            .body(s.request::<AdvanceBody>())
            .fact(s),
        Op::RegisterInstrument => Doc::new("payouts", "Register where a partner is paid on the bank rail")
            .describe("The account (holder, IBAN checked for its country's format and its mod-97 check digits, optional BIC) is kept beside the log, never in it and never in an audit bundle: the log records `payout_instrument_registered` with a salted SHA-256 of the details (`pi_…`), which replaces any earlier instrument for payouts from now on. The currency is the partner's program's. A retry with its `Idempotency-Key` and the same body is answered with the first registration (200); with another body, 409. Needs a vendor administrator's token, or the partner's own, with `settlements_write`: no agent changes where money goes. See docs/payouts.md.")
            .path("id", "Partner id.", ID_PATTERN)
            .body(s.request::<crate::bank::Registration>())
            .fact(s),
        Op::GetInstrument => Doc::new("payouts", "A partner's payout instrument, its IBAN masked")
            .path("id", "Partner id.", ID_PATTERN)
            .ok(200, "OK", s.response::<crate::bank::instruments::View>()),
        Op::EraseInstrument => Doc::new("payouts", "Erase a partner's bank details")
            .describe("Records `payout_instrument_removed` for its current instrument (no payout goes to the bank rail for it until another is registered), then forgets the details of every account it registered: the log keeps only their salted hashes and still verifies. Idempotent: 204 again. Needs a vendor administrator's token, or the partner's own, with `settlements_write`.")
            .path("id", "Partner id.", ID_PATTERN)
            .empty(204, "Erased (or nothing was kept)")
            .errors(&[409, 429, 503]),
        Op::PaymentFile => Doc::new("payouts", "The ISO 20022 pain.001.001.09 payment file of a payout batch on the bank rail")
            .describe("One credit transfer per batch, its end-to-end id the batch id (or `S` and 34 hex digits of its SHA-256 when the id is longer than 35 characters or holds `_`), its mandates in the structured remittance information; the vendor's account (`settle payouts debtor`) as the debtor. The same batch gives the same bytes, message id included. 422 when no debtor account is configured, the batch is on another rail, failed or was returned (its mandates are payable again), or its partner's details were erased. Needs a vendor token with `settlements_write`. See docs/payouts.md.")
            .path("id", "Payout batch id.", ID_PATTERN)
            .query("execution_date", false, "Requested execution date (default: the day the batch was made).", json!({"type": "string", "format": "date"}))
            .xml_ok(200, "The pain.001.001.09 document")
            .errors(&[422]),
        Op::ReconcilePayouts => Doc::new("payouts", "Apply a bank's camt.054 notification to the bank rail's payout batches")
            .describe("A camt.054.001.02 or .001.08 notification: each booked debit matched by end-to-end id pays its batch (`settlement_confirmed`, the bank's reference as confirmation id); each return, with its ISO reason code, fails it, or returns it if it was paid (`payout_returned`); entries pending, matching nothing or disagreeing with their batch are reported and change nothing. Applied once per message id: the same notification again changes nothing and answers its first report with `already_applied`; another document under that message id is 409. The `Idempotency-Key` is required as for every write; the message id is what makes a notification apply once. Needs a vendor token with `settlements_write`.")
            .xml_body("A camt.054.001.02 or camt.054.001.08 document.")
            .ok(200, "What each reported transaction did", s.response::<crate::bank::reconcile::Report>())
            .errors(&[409, 422, 429, 503]),
        Op::ListPayouts => Doc::new("payouts", "Payout batches and their mandates: a partner's own, or every one for the vendor")
            .query("partner", false, "Only this partner's.", json!({"type": "string", "pattern": ID_PATTERN}))
            .query("status", false, "Only those in this state.", json!({"type": "string", "enum": ["open", "paid", "failed", "returned"]}))
            .ok(200, "OK (at most 1,000, newest first)", s.response::<PayoutList>())
            .errors(&[404]),
        Op::OpenDispute => Doc::new("disputes", "Dispute a commission: a conversion, a mandate, a clawback, or a deal missing on a lead")
            .describe("Within the program's dispute window (`disputes.window_days`, default 90, after the conversion's mandates were issued (for one still held, the deal's `occurred_at`), the clawback made, or the lead's attribution window ended). A partner, or its agent with `disputes_write`, disputes in its own name and only what it is a party to (anything else is 404); the vendor with `disputes_write` on a partner's behalf. `claimed` bounds any adjustment an acceptance may make; a claim in words alone can be accepted only without money. See docs/commission-rules.md.")
            .body(s.request::<DisputeBody>())
            .fact(s),
        Op::ListDisputes => Doc::new("disputes", "Disputes: a partner's own, or every one for the vendor")
            .query("partner", false, "Only this partner's.", json!({"type": "string", "pattern": ID_PATTERN}))
            .query("status", false, "Only those in this state.", json!({"type": "string", "enum": ["open", "accepted", "rejected", "withdrawn"]}))
            .query("overdue", false, "Only those flagged overdue (or not).", json!({"type": "boolean"}))
            .ok(200, "OK (at most 1,000, by id)", s.response::<DisputeList>())
            .errors(&[404]),
        Op::GetDispute => Doc::new("disputes", "A dispute: its claim, evidence, comments, resolution and adjustment mandates")
            .path("id", "Dispute id.", ID_PATTERN)
            .ok(200, "OK", s.response::<DisputeView>()),
        Op::CommentDispute => Doc::new("disputes", "Comment on an open dispute (either side)")
            .path("id", "Dispute id.", ID_PATTERN)
            .body(s.request::<CommentBody>())
            .fact(s),
        Op::ResolveDispute => Doc::new("disputes", "Resolve a dispute: rejected with a reason, or accepted with signed adjustment mandates")
            .describe("Accepted: one adjustment mandate (`settle.mandate.adjustment.1`) per partner line, signed like every mandate; positive lines are payable at once (pay them in a payout batch by their `aj_…` id), negative lines are owed back out of what is payable. The positive lines together, and the negative lines together, are at most the claimed amount; a negative line at most what the partner holds of the conversion. No lines: the claimed amount to the disputing partner. Needs a vendor token with `settlements_write`.")
            .path("id", "Dispute id.", ID_PATTERN)
            .body(s.request::<ResolutionBody>())
            .fact(s),
        Op::WithdrawDispute => Doc::new("disputes", "Withdraw an open dispute")
            .describe("By the side that opened it: the partner or its agents for a dispute they opened, the vendor for one it opened on the partner's behalf (the other side: 422).")
            .path("id", "Dispute id.", ID_PATTERN)
            .body(s.request::<WithdrawBody>())
            .fact(s),
        Op::Subscribe => Doc::new(
            "webhooks",
            "Subscribe to signed webhooks (Standard Webhooks; see docs/webhooks.md)",
        )
        .describe("Partners hear of their own money only; the URL must be a public address unless the server allows private ones. A principal holds at most 20 subscriptions.")
        .body(s.request::<SubscribeBody>())
        .ok(201, "Subscribed: the answer carries the secret, once", s.response::<SubscriptionView>())
        .ok(200, "Replay of the original answer (same key, same body), secret included", s.response::<SubscriptionView>())
        .errors(&[404, 409, 422]),
        Op::ListSubscriptions => Doc::new("webhooks", "The caller's subscriptions (every one for the vendor)")
            .ok(200, "OK", s.response::<SubscriptionList>())
            .errors(&[404]),
        Op::GetSubscription => Doc::new("webhooks", "A subscription and its delivery state")
            .path("id", "Subscription id.", WEBHOOK_ID_PATTERN)
            .ok(200, "OK", s.response::<SubscriptionView>()),
        Op::Unsubscribe => Doc::new(
            "webhooks",
            "Unsubscribe: deliveries stop, the subscription and its dead letters are forgotten",
        )
        .path("id", "Subscription id.", WEBHOOK_ID_PATTERN)
        .empty(204, "Deleted"),
        Op::DeadLetters => Doc::new("webhooks", "Events given up on after the last retry")
            .path("id", "Subscription id.", WEBHOOK_ID_PATTERN)
            .ok(200, "OK", s.response::<DeadLetterList>()),
        Op::ReplayDeliveries => Doc::new(
            "webhooks",
            "Vendor only: redeliver the dead letters, or every event from a log position (receivers deduplicate by webhook-id)",
        )
        .describe("`from_seq` rewinds the subscription's cursor; otherwise its dead letters are queued again. Not both (422).")
        .path("id", "Subscription id.", WEBHOOK_ID_PATTERN)
        .body(s.request::<ReplayBody>())
        .ok(202, "Queued", s.response::<ReplayView>())
        .ok(200, "Replay of the original answer (same key, same body)", s.response::<ReplayView>())
        .errors(&[409, 422]),
        Op::IssueToken => Doc::new(
            "tokens",
            "Issue an API token (vendor administrator, tokens_write): the secret is in this answer only, stored hashed; a running server honours it at once",
        )
        .body(s.request::<TokenBody>())
        .ok(201, "Issued", s.response::<TokenView>())
        .ok(200, "The same key and request again: the token, without its secret", s.response::<TokenView>())
        .errors(&[409, 422]),
        Op::ListTokens => Doc::new(
            "tokens",
            "List API tokens (vendor administrator, tokens_write): ids, kinds, scopes and lives; never secrets",
        )
        .ok(200, "Tokens", s.response::<TokenList>()),
        Op::RevokeToken => Doc::new(
            "tokens",
            "Revoke an API token (vendor administrator, tokens_write): refused at once, by every door",
        )
        .path("id", "Token id.", TOKEN_ID_PATTERN)
        .empty(204, "Revoked (or revoked already)")
        .errors(&[422]),
        Op::StartAudit => Doc::new("audit", "Audit the live log in the background (vendor)")
            .describe("The audit `settle audit` runs (chain, hashes, tree, every checkpoint's signature, every split and mandate derived again, money conserved) over the server's own log while it goes on taking writes. 202 with the run, and its place in `Location`; while one runs, 200 with that one. Runs are kept in memory (the last 20).")
            .ok(202, "Started", s.response::<AuditView>())
            .ok(200, "An audit is running already: that one", s.response::<AuditView>()),
        Op::GetAudit => Doc::new("audit", "An audit run: records verified so far, then its result and the checkpoint it covered")
            .path("id", "Audit id.", r"^au_[0-9]+$")
            .ok(200, "OK", s.response::<AuditView>()),
    }
}

/// The agent card's shape (its content is the A2A door's, `src/a2a.rs`).
fn agent_card_schema() -> Value {
    json!({
        "type": "object",
        "description": "An A2A v1.0 agent card: what the agent does (its skills, one per intent), where it is served and how to authenticate; `signatures` holds a JWS by the vendor's key over the card's RFC 8785 form without `signatures`.",
        "required": ["name", "description", "version", "supportedInterfaces", "capabilities", "skills", "signatures"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "version": {"type": "string"},
            "documentationUrl": {"type": "string"},
            "provider": {"type": "object"},
            "supportedInterfaces": {"type": "array", "items": {"type": "object", "required": ["url", "protocolBinding", "protocolVersion"]}},
            "capabilities": {"type": "object"},
            "securitySchemes": {"type": "object"},
            "securityRequirements": {"type": "array"},
            "defaultInputModes": {"type": "array", "items": {"type": "string"}},
            "defaultOutputModes": {"type": "array", "items": {"type": "string"}},
            "skills": {"type": "array", "items": {"type": "object", "required": ["id", "name", "description"]}},
            "signatures": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["protected", "signature"]}},
        },
    })
}

/// The error answer of `status`: its component's name and the component.
fn error_response(status: u16) -> (&'static str, Value) {
    let none = json!({});
    let (name, description, headers) = match status {
        400 => (
            "BadRequest",
            "The request does not match this document: malformed JSON, a value of the wrong type or outside its pattern or bounds, an unknown field, a malformed query or path, or no or a malformed `Idempotency-Key`.".to_owned(),
            none,
        ),
        401 => (
            "Unauthorized",
            "No token, or an unknown, expired or revoked one, or an agent whose grant is not in force.".to_owned(),
            json!({"WWW-Authenticate": {"required": true, "description": "`Bearer`", "schema": {"type": "string"}}}),
        ),
        403 => ("Forbidden", "The caller may not do this: its kind, its token's scopes, or a write in another partner's name.".to_owned(), none),
        404 => ("NotFound", "What the request names does not exist, as far as the caller may know (another partner's data is not found).".to_owned(), none),
        405 => (
            "MethodNotAllowed",
            "The path does not take this method.".to_owned(),
            json!({"Allow": {"required": true, "description": "The methods the path takes.", "schema": {"type": "string"}}}),
        ),
        406 => ("NotAcceptable", "The request's `Accept` does not admit what the endpoint answers.".to_owned(), none),
        408 => ("RequestTimeout", format!("The request took longer than {} s.", REQUEST_TIMEOUT.as_secs()), none),
        409 => ("Conflict", "The idempotency key was used with another request, or the request conflicts with the log (an id taken, a mandate already paid, a receipt not yet checkpointed).".to_owned(), none),
        413 => ("PayloadTooLarge", format!("The body is larger than {MAX_BODY_BYTES} bytes."), none),
        414 => (
            "UriTooLong",
            format!("The request target (path and query) is longer than {MAX_URI_BYTES} bytes. (A request line past 65,534 bytes is refused by the HTTP layer itself, with 414 and no body.)"),
            none,
        ),
        415 => ("UnsupportedMediaType", "The body is not sent in the media type the operation takes: `application/json` (`application/xml` for a bank notification).".to_owned(), none),
        422 => ("Rejected", "The request matches this document, but the rules refuse it (an unknown program, a split over 100 %, a lead outside its window, more decimals than the currency has, ...).".to_owned(), none),
        429 => (
            "TooManyRequests",
            "The write queue is full; retry after the time given.".to_owned(),
            json!({"Retry-After": {"required": true, "description": "Seconds to wait.", "schema": {"type": "string"}}}),
        ),
        500 => ("InternalError", "An unexpected failure of the server.".to_owned(), none),
        503 => ("Unavailable", "The store refused a write (it refuses every write until the server restarts).".to_owned(), none),
        other => unreachable!("no error response {other}"),
    };
    let mut r = json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    });
    if headers.as_object().is_some_and(|h| !h.is_empty()) {
        r["headers"] = headers;
    }
    (name, r)
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri", "description": "`https://settle.dev/problems/<title, kebab-case>`."},
            "title": {"type": "string", "description": "Short and stable."},
            "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status."},
            "detail": {"type": "string", "description": "What went wrong and what to do about it."},
        },
        "additionalProperties": false,
    })
}

/// The media types of bodies.
const JSON: &str = "application/json";
const XML: &str = "application/xml";

fn json_content(schema: Value) -> Value {
    content(JSON, schema)
}

fn content(media: &str, schema: Value) -> Value {
    json!({ media: {"schema": schema} })
}

/// The error statuses `o` can answer.
fn error_statuses(o: &catalogue::Operation, d: &Doc, takes_key: bool) -> BTreeSet<u16> {
    let path = o.http.map_or("", |(_, p)| p);
    let mut e: BTreeSet<u16> = [405, 408, 413, 414].into();
    if d.body.is_some() || !d.path.is_empty() || !d.query.is_empty() || takes_key {
        e.insert(400);
    }
    if o.callers != Callers::Anyone {
        e.extend([401, 403]);
    }
    if path.contains('{') {
        e.insert(404);
    }
    if d.body.is_some() {
        e.insert(415);
    }
    if d.fact {
        e.extend([404, 409, 422, 429, 503]);
    }
    if o.op != Op::OpenApi {
        e.insert(500);
    }
    e.extend(d.errors);
    e
}

/// Descriptions as prose: doc comments' line breaks joined (paragraphs kept) and their
/// intra-doc links (``[`Foo`]``) written as code.
fn tidy(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "description"
                    && let Value::String(d) = x
                {
                    let paragraphs: Vec<String> =
                        d.split("\n\n").map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" ")).collect();
                    *d = paragraphs.join("\n\n").replace("[`", "`").replace("`]", "`");
                } else {
                    tidy(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// The document.
#[must_use]
pub fn build() -> Value {
    let mut doc = build_raw();
    tidy(&mut doc);
    doc
}

fn build_raw() -> Value {
    let mut s = Schemas::new();
    let mut paths = Map::new();
    let mut used = BTreeSet::new();
    for o in catalogue::OPERATIONS {
        let Some((method, path)) = o.http else { continue };
        let d = doc(o.op, &mut s);
        let takes_key = o.writes && method == Method::Post;
        let mut params = Vec::new();
        for (name, description, pattern) in &d.path {
            params.push(json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "pattern": pattern}}));
        }
        params.extend(d.query.iter().cloned());
        if takes_key {
            params.push(json!({"$ref": "#/components/parameters/IdempotencyKey"}));
        }
        let prefer = d.fact || o.op == Op::RecordConversions;
        if prefer {
            params.push(json!({"$ref": "#/components/parameters/Prefer"}));
        }
        let mut responses = Map::new();
        for (status, description, schema) in &d.ok {
            let mut r = json!({"description": description});
            if let Some(schema) = schema {
                r["content"] = content(d.ok_media, schema.clone());
            }
            if prefer {
                r["headers"] = json!({"Preference-Applied": {
                    "description": "`return=minimal` when the answer is the minimal one the request preferred.",
                    "schema": {"type": "string", "enum": ["return=minimal"]},
                }});
            }
            responses.insert(status.to_string(), r);
        }
        for status in error_statuses(o, &d, takes_key) {
            let (name, _) = error_response(status);
            used.insert(status);
            responses.insert(status.to_string(), json!({"$ref": format!("#/components/responses/{name}")}));
        }
        let mut op = json!({
            "operationId": o.name,
            "tags": [d.tag],
            "summary": d.summary,
            "responses": responses,
        });
        if let Some(description) = d.description {
            op["description"] = json!(description);
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(body) = d.body {
            op["requestBody"] = json!({"required": true, "content": content(d.body_media, body)});
        }
        if o.callers == Callers::Anyone {
            op["security"] = json!([]);
        }
        let item = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        item[method.as_str().to_lowercase()] = op;
    }
    // The two agent transports: their operations are the catalogue's MCP tools and A2A
    // intents, described in docs/agents.md.
    paths.insert("/a2a".into(), json!({"post": {
        "operationId": "a2aSendMessage",
        "tags": ["agents"],
        "summary": "A2A v1.0 JSON-RPC binding: SendMessage, GetTask",
        "description": "JSON-RPC 2.0 with the method SendMessage (or GetTask): `{\"jsonrpc\": \"2.0\", \"id\": <string or number>, \"method\": \"SendMessage\", \"params\": {\"message\": ...}}`. The message carries one data part naming its intent (lead, handoff, conversion, refund, balance, receipt, dispute, disputes, resolution) with the fields of the matching /v1 request; messageId is the idempotency key. Answers a task: TASK_STATE_COMPLETED with the result as an artifact, or TASK_STATE_REJECTED / TASK_STATE_FAILED with the problem. Whatever the body, once the token is accepted the answer is a JSON-RPC response with 200: a body that is not a JSON-RPC request is answered with its error (-32700 not JSON, -32600 not a request, -32601 unknown method, -32602 bad params). See docs/agents.md.",
        "requestBody": {"required": false, "content": {"application/json": {
            "schema": {"description": "A JSON-RPC 2.0 request; anything else is answered with a JSON-RPC error."},
            "example": {"jsonrpc": "2.0", "id": "msg-1", "method": "SendMessage", "params": {"message": {"messageId": "msg-1", "role": "ROLE_USER", "parts": [{"mediaType": "application/json", "data": {"lead": {"lead": "lead-7", "program": "growth", "customer": "acme.example", "partner": "p01"}}}]}}},
        }}},
        "responses": {
            "200": {"description": "A JSON-RPC response: result.task, or error (-32700, -32600, -32601, -32602, -32005)", "content": json_content(json!({"type": "object", "required": ["jsonrpc", "id"]}))},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "405": {"$ref": "#/components/responses/MethodNotAllowed"},
            "408": {"$ref": "#/components/responses/RequestTimeout"},
            "413": {"$ref": "#/components/responses/PayloadTooLarge"},
            "414": {"$ref": "#/components/responses/UriTooLong"},
            "500": {"$ref": "#/components/responses/InternalError"},
        },
    }}));
    paths.insert("/mcp".into(), json!({"post": {
        "operationId": "mcpStreamableHttp",
        "tags": ["agents"],
        "summary": "MCP over streamable HTTP (stateless, JSON answers)",
        "description": "Model Context Protocol JSON-RPC: initialize, tools/list (no token needed), tools/call (acts as the bearer token's principal, with the same scopes as this API). Send `Accept: application/json, text/event-stream` (else 406) and `Content-Type: application/json` (else 415). A body that is not a JSON-RPC message is answered with a JSON-RPC error (-32700, -32600) and 200. Tools and errors: docs/agents.md.",
        "security": [],
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": {"description": "A JSON-RPC 2.0 message; anything else is answered with a JSON-RPC error."},
            "example": {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_balance", "arguments": {"partner": "p01"}}},
        }}},
        "responses": {
            "200": {"description": "A JSON-RPC response; a refused tool call has result.isError true and the RFC 9457 problem as result.structuredContent", "content": json_content(json!({"type": "object"}))},
            "202": {"description": "A notification or a response, accepted"},
            "405": {"$ref": "#/components/responses/MethodNotAllowed"},
            "406": {"$ref": "#/components/responses/NotAcceptable"},
            "408": {"$ref": "#/components/responses/RequestTimeout"},
            "413": {"$ref": "#/components/responses/PayloadTooLarge"},
            "414": {"$ref": "#/components/responses/UriTooLong"},
            "415": {"$ref": "#/components/responses/UnsupportedMediaType"},
            "500": {"$ref": "#/components/responses/InternalError"},
        },
    }}));
    used.extend([401, 405, 406, 408, 413, 414, 415, 500]);
    let mut responses = Map::new();
    for status in used {
        let (name, r) = error_response(status);
        responses.insert(name.to_owned(), r);
    }
    let mut schemas = s.components();
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "settle API",
            "version": "1.0.0",
            "description": "Commission settlement with AP2-style signed mandates and verifiable receipts. Every write takes an Idempotency-Key (same key and body: the original response; same key, other body: 409). Answers to writes are sent once the write is durable. Errors are RFC 9457 problem+json: 400 for a request this document forbids, 422 for one it allows but the rules refuse. Amounts are decimal strings in requests and integer minor units in records, never floats.",
        },
        "servers": [{"url": "http://127.0.0.1:8417"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "meta", "description": "This document."},
            {"name": "public", "description": "Keys, checkpoints and proofs: no token needed."},
            {"name": "vendor", "description": "Programs, partners, deals, refunds and payouts: the vendor's writes."},
            {"name": "partner", "description": "Balances, mandates, receipts, leads and agents: a partner's own data."},
            {"name": "webhooks", "description": "Signed event deliveries (docs/webhooks.md)."},
            {"name": "tokens", "description": "API tokens, for a vendor administrator."},
            {"name": "audit", "description": "Audits of the live log, in the background."},
            {"name": "agents", "description": "The agent transports, A2A and MCP (docs/agents.md)."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "API token from `settle keys token` or `POST /v1/tokens`; bound to a principal (vendor admin, vendor agent, partner, partner agent) and scopes. A partner agent whose grant registers its Ed25519 public key may instead send a compact JWS it signed itself (typ settle-agent+jwt; claims iss, aud, iat, exp; at most 300 s long); see formats.md, Agent-signed tokens.",
            }},
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": true,
                    "description": "1 to 200 visible ASCII characters, per token: the same key and body again answer the original outcome; the same key with another body, 409.",
                    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                },
                "Prefer": {
                    "name": "Prefer",
                    "in": "header",
                    "required": false,
                    "description": "RFC 7240. With `return=minimal` the answer leaves out `events` and each mandate's compact JWS (`mandate`), and carries `Preference-Applied: return=minimal`: a few hundred bytes instead of about 9 KiB for a conversion of three hops. The mandates are read with the partner's mandates or receipts. Other preferences are ignored.",
                    "schema": {"type": "string", "examples": ["return=minimal"]},
                },
            },
            "responses": responses,
            "schemas": schemas,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the document the code builds (rewrite it with
    /// `SETTLE_BLESS=1 cargo test -p settle openapi` after a deliberate change).
    #[test]
    fn docs_openapi_json_is_the_generated_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join("openapi.json");
        if std::env::var("SETTLE_BLESS").as_deref() == Ok("1") {
            std::fs::write(&path, document()).expect("write docs/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).expect("docs/openapi.json");
        assert!(
            committed == document(),
            "docs/openapi.json drifted from the document the code builds; if deliberate, rewrite it with `SETTLE_BLESS=1 cargo test -p settle openapi` and review the diff"
        );
    }

    /// Every `$ref` names a component that exists.
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value, doc: &Value, bad: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let ptr = r.trim_start_matches('#');
                        if doc.pointer(ptr).is_none() {
                            bad.push(r.clone());
                        }
                    }
                    m.values().for_each(|x| walk(x, doc, bad));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, bad)),
                _ => {}
            }
        }
        let doc = build();
        let mut bad = Vec::new();
        walk(&doc, &doc, &mut bad);
        assert!(bad.is_empty(), "dangling references: {bad:?}");
    }
}
