//! The catalogue of operations: every operation a door offers (HTTP, MCP, A2A), who may
//! call it, the scope it needs, whether it writes, and where each door serves it; and
//! [`authorize`], the one function of (principal, operation, target) that decides
//! whether a call may proceed. No door decides authority on its own: the HTTP routes
//! are built from this table, the MCP tools and A2A intents name their entry, and
//! `tests/authz.rs` checks every operation against every kind of principal at every
//! door.
//!
//! Door-neutral: no HTTP types. A refusal is a [`Denied`], which each door frames.

use crate::auth::{Principal, PrincipalKind, Scope};
use crate::error::Error;

/// Every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // each is described in its catalogue entry
pub enum Op {
    OpenApi,
    Jwks,
    AgentCard,
    LatestCheckpoint,
    Consistency,
    VerifyReceipt,
    PublishProgram,
    DescribeProgram,
    AmendProgram,
    EnrollPartner,
    SuspendPartner,
    GetBalance,
    ListMandates,
    GetConversion,
    GetReceipt,
    GetStatement,
    ListLeads,
    ListAgents,
    AuthoriseAgent,
    RevokeAgent,
    RegisterLead,
    HandOffLead,
    RecordConversion,
    RecordConversions,
    ReleaseConversion,
    RecordRefund,
    CreatePayout,
    RecordSettlement,
    AdvanceHolds,
    RegisterInstrument,
    GetInstrument,
    EraseInstrument,
    PaymentFile,
    ReconcilePayouts,
    ListPayouts,
    OpenDispute,
    ListDisputes,
    GetDispute,
    CommentDispute,
    ResolveDispute,
    WithdrawDispute,
    Subscribe,
    ListSubscriptions,
    GetSubscription,
    Unsubscribe,
    DeadLetters,
    ReplayDeliveries,
    IssueToken,
    ListTokens,
    RevokeToken,
    StartAudit,
    GetAudit,
    GetTask,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// Anyone, with or without a token (public keys, checkpoints, proofs).
    Anyone,
    /// The vendor and its agents.
    Vendor,
    /// A vendor administrator only (not the vendor's agents): API tokens.
    VendorAdmin,
    /// The vendor and its agents; a partner and its agents for the partner itself.
    VendorOrPartner,
    /// The vendor and its agents; a partner itself (not its agents) for itself: the
    /// management of a partner's agents.
    VendorOrPartnerItself,
    /// A vendor administrator (not the vendor's agents); a partner itself (not its
    /// agents) for itself: where a partner's money goes.
    VendorAdminOrPartnerItself,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    /// Its name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// One operation, as every door sees it.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// Which.
    pub op: Op,
    /// Its name (the OpenAPI `operationId`).
    pub name: &'static str,
    /// Who may call it.
    pub callers: Callers,
    /// The scope the caller's token must hold (`None`: no scope; a partner managing its
    /// own agents needs none, but a grant never exceeds its token's scopes).
    pub scope: Option<Scope>,
    /// The scope a partner itself needs where it differs from `scope`.
    pub partner_scope: Option<Scope>,
    /// A second scope every caller needs too (a subscription, a write, also reads what it
    /// delivers).
    pub also: Option<Scope>,
    /// Whether it records something (over HTTP a POST then takes an `Idempotency-Key`; a
    /// DELETE is idempotent by its path).
    pub writes: bool,
    /// HTTP method and path (axum syntax).
    pub http: Option<(Method, &'static str)>,
    /// MCP tool.
    pub mcp: Option<&'static str>,
    /// A2A intent (the data part's one key).
    pub a2a: Option<&'static str>,
}

const fn op(op: Op, name: &'static str, callers: Callers, scope: Option<Scope>, writes: bool) -> Operation {
    Operation { op, name, callers, scope, partner_scope: scope, also: None, writes, http: None, mcp: None, a2a: None }
}

impl Operation {
    const fn http(mut self, m: Method, path: &'static str) -> Self {
        self.http = Some((m, path));
        self
    }
    const fn mcp(mut self, tool: &'static str) -> Self {
        self.mcp = Some(tool);
        self
    }
    const fn a2a(mut self, intent: &'static str) -> Self {
        self.a2a = Some(intent);
        self
    }
    const fn also(mut self, s: Scope) -> Self {
        self.also = Some(s);
        self
    }
    const fn partner_scope(mut self, s: Option<Scope>) -> Self {
        self.partner_scope = s;
        self
    }
}

use Callers::{Anyone, Vendor, VendorAdmin, VendorAdminOrPartnerItself, VendorOrPartner, VendorOrPartnerItself};
use Method::{Delete, Get, Post};

/// The catalogue.
pub const OPERATIONS: &[Operation] = &[
    op(Op::OpenApi, "getOpenApi", Anyone, None, false).http(Get, "/openapi.json"),
    op(Op::Jwks, "getJwks", Anyone, None, false).http(Get, "/.well-known/jwks.json"),
    op(Op::AgentCard, "getAgentCard", Anyone, None, false).http(Get, "/.well-known/agent-card.json"),
    op(Op::LatestCheckpoint, "getLatestCheckpoint", Anyone, None, false)
        .http(Get, "/v1/checkpoints/latest")
        .mcp("get_checkpoint"),
    op(Op::Consistency, "getConsistencyProof", Anyone, None, false).http(Get, "/v1/checkpoints/consistency"),
    op(Op::VerifyReceipt, "verifyReceipt", Anyone, None, false).mcp("verify_receipt"),
    op(Op::PublishProgram, "publishProgram", Vendor, Some(Scope::ProgramsWrite), true).http(Post, "/v1/programs"),
    op(Op::DescribeProgram, "getProgram", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/programs/{id}")
        .mcp("describe_program"),
    op(Op::AmendProgram, "amendProgram", Vendor, Some(Scope::ProgramsWrite), true)
        .http(Post, "/v1/programs/{id}/amendments"),
    op(Op::EnrollPartner, "enrollPartner", Vendor, Some(Scope::ProgramsWrite), true).http(Post, "/v1/partners"),
    op(Op::SuspendPartner, "suspendPartner", Vendor, Some(Scope::ProgramsWrite), true)
        .http(Post, "/v1/partners/{id}/suspend"),
    op(Op::GetBalance, "getBalance", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/partners/{id}/balance")
        .mcp("get_balance")
        .a2a("balance"),
    op(Op::ListMandates, "listMandates", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/partners/{id}/mandates")
        .mcp("list_mandates"),
    op(Op::GetConversion, "getConversion", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/conversions/{id}")
        .mcp("get_conversion"),
    op(Op::GetReceipt, "getReceipt", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/partners/{id}/receipts/{mandate}")
        .mcp("get_receipt")
        .a2a("receipt"),
    op(Op::GetStatement, "getStatement", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/partners/{id}/statement"),
    op(Op::ListLeads, "listLeads", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/partners/{id}/leads")
        .mcp("list_leads"),
    op(Op::ListAgents, "listAgents", VendorOrPartner, Some(Scope::Read), false).http(Get, "/v1/partners/{id}/agents"),
    op(Op::AuthoriseAgent, "authoriseAgent", VendorOrPartnerItself, Some(Scope::ProgramsWrite), true)
        .partner_scope(None)
        .http(Post, "/v1/agents"),
    op(Op::RevokeAgent, "revokeAgent", VendorOrPartnerItself, Some(Scope::ProgramsWrite), true)
        .partner_scope(None)
        .http(Post, "/v1/agents/{id}/revoke"),
    op(Op::RegisterLead, "registerLead", VendorOrPartner, Some(Scope::LeadsWrite), true)
        .http(Post, "/v1/leads")
        .mcp("register_lead")
        .a2a("lead"),
    op(Op::HandOffLead, "handOffLead", VendorOrPartner, Some(Scope::LeadsWrite), true)
        .http(Post, "/v1/leads/{id}/handoffs")
        .mcp("hand_off_lead")
        .a2a("handoff"),
    op(Op::RecordConversion, "recordConversion", Vendor, Some(Scope::ConversionsWrite), true)
        .http(Post, "/v1/conversions")
        .mcp("record_conversion")
        .a2a("conversion"),
    op(Op::RecordConversions, "recordConversions", Vendor, Some(Scope::ConversionsWrite), true)
        .http(Post, "/v1/conversions/batch"),
    op(Op::ReleaseConversion, "releaseConversion", Vendor, Some(Scope::SettlementsWrite), true)
        .http(Post, "/v1/conversions/{id}/release"),
    op(Op::RecordRefund, "recordRefund", Vendor, Some(Scope::RefundsWrite), true)
        .http(Post, "/v1/refunds")
        .mcp("record_refund")
        .a2a("refund"),
    op(Op::CreatePayout, "createPayout", Vendor, Some(Scope::SettlementsWrite), true).http(Post, "/v1/payouts"),
    op(Op::RecordSettlement, "recordSettlement", Vendor, Some(Scope::SettlementsWrite), true)
        .http(Post, "/v1/settlements"),
    op(Op::AdvanceHolds, "advanceHolds", Vendor, Some(Scope::SettlementsWrite), true).http(Post, "/v1/holds/advance"),
    // Bank details decide where money goes: a vendor administrator or the partner's own
    // token (no agent of either) with `settlements_write` changes them.
    op(
        Op::RegisterInstrument,
        "registerPayoutInstrument",
        VendorAdminOrPartnerItself,
        Some(Scope::SettlementsWrite),
        true,
    )
    .http(Post, "/v1/partners/{id}/payout-instrument"),
    op(Op::GetInstrument, "getPayoutInstrument", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/partners/{id}/payout-instrument"),
    op(Op::EraseInstrument, "erasePayoutInstrument", VendorAdminOrPartnerItself, Some(Scope::SettlementsWrite), true)
        .http(Delete, "/v1/partners/{id}/payout-instrument"),
    op(Op::PaymentFile, "getPaymentFile", Vendor, Some(Scope::SettlementsWrite), false)
        .http(Get, "/v1/payouts/{id}/pain.001"),
    op(Op::ReconcilePayouts, "reconcilePayouts", Vendor, Some(Scope::SettlementsWrite), true)
        .http(Post, "/v1/payouts/reconcile"),
    op(Op::ListPayouts, "listPayouts", VendorOrPartner, Some(Scope::Read), false).http(Get, "/v1/payouts"),
    // Disputes: a partner (or its agent with `disputes_write`) opens, comments on and
    // withdraws its own; the vendor may do so on its behalf. Resolving moves money: the
    // vendor with `settlements_write`.
    op(Op::OpenDispute, "openDispute", VendorOrPartner, Some(Scope::DisputesWrite), true)
        .http(Post, "/v1/disputes")
        .mcp("open_dispute")
        .a2a("dispute"),
    op(Op::ListDisputes, "listDisputes", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/disputes")
        .mcp("list_disputes")
        .a2a("disputes"),
    op(Op::GetDispute, "getDispute", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/disputes/{id}")
        .mcp("get_dispute"),
    op(Op::CommentDispute, "commentOnDispute", VendorOrPartner, Some(Scope::DisputesWrite), true)
        .http(Post, "/v1/disputes/{id}/comments")
        .mcp("comment_on_dispute"),
    op(Op::ResolveDispute, "resolveDispute", Vendor, Some(Scope::SettlementsWrite), true)
        .http(Post, "/v1/disputes/{id}/resolution")
        .mcp("resolve_dispute")
        .a2a("resolution"),
    op(Op::WithdrawDispute, "withdrawDispute", VendorOrPartner, Some(Scope::DisputesWrite), true)
        .http(Post, "/v1/disputes/{id}/withdraw")
        .mcp("withdraw_dispute"),
    op(Op::Subscribe, "subscribeWebhook", VendorOrPartner, Some(Scope::WebhooksWrite), true)
        .also(Scope::Read)
        .http(Post, "/v1/webhooks"),
    op(Op::ListSubscriptions, "listWebhooks", VendorOrPartner, Some(Scope::Read), false).http(Get, "/v1/webhooks"),
    op(Op::GetSubscription, "getWebhook", VendorOrPartner, Some(Scope::Read), false).http(Get, "/v1/webhooks/{id}"),
    op(Op::Unsubscribe, "deleteWebhook", VendorOrPartner, Some(Scope::WebhooksWrite), true)
        .http(Delete, "/v1/webhooks/{id}"),
    op(Op::DeadLetters, "listDeadLetters", VendorOrPartner, Some(Scope::Read), false)
        .http(Get, "/v1/webhooks/{id}/dead-letters"),
    op(Op::ReplayDeliveries, "replayWebhook", Vendor, Some(Scope::WebhooksWrite), true)
        .http(Post, "/v1/webhooks/{id}/replay"),
    // A2A `GetTask` (a JSON-RPC method of the `/a2a` door, not an intent): a task this
    // principal was answered, which may hold what `read` shows.
    op(Op::GetTask, "getTask", VendorOrPartner, Some(Scope::Read), false),
    op(Op::IssueToken, "issueToken", VendorAdmin, Some(Scope::TokensWrite), true).http(Post, "/v1/tokens"),
    op(Op::ListTokens, "listTokens", VendorAdmin, Some(Scope::TokensWrite), false).http(Get, "/v1/tokens"),
    op(Op::RevokeToken, "revokeToken", VendorAdmin, Some(Scope::TokensWrite), true).http(Delete, "/v1/tokens/{id}"),
    // An audit of the live log, in the background: it records nothing.
    op(Op::StartAudit, "startAudit", Vendor, Some(Scope::Read), false).http(Post, "/v1/audits"),
    op(Op::GetAudit, "getAudit", Vendor, Some(Scope::Read), false).http(Get, "/v1/audits/{id}"),
];

/// The catalogue entry of `op`.
#[must_use]
pub fn entry(op: Op) -> &'static Operation {
    OPERATIONS.iter().find(|o| o.op == op).unwrap_or_else(|| unreachable!("every Op has an entry (tested)"))
}

/// What a call is about, where it matters who the caller is.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Partner `id`'s data: another partner's is not found.
    DataOf(&'a str),
    /// A write in partner `id`'s name: a partner writes in its own name only.
    NameOf(&'a str),
    /// Program `id`, of which a partner sees only its own (`own`).
    Program {
        /// The program.
        id: &'a str,
        /// Whether the caller is a partner of it.
        own: bool,
    },
    /// Lead `id`, held (last hop) by `holder` (`None`: no such lead): a lead another
    /// partner holds is not found, as if it did not exist.
    Lead {
        /// The lead.
        id: &'a str,
        /// Its last hop.
        holder: Option<&'a str>,
    },
    /// Agent `id`, authorised by partner `owner` (`None`: no such agent).
    Agent {
        /// The agent.
        id: &'a str,
        /// Its partner.
        owner: Option<&'a str>,
    },
    /// Scopes given to another (an agent's grant, a new token): never more than the
    /// giving token holds.
    Scopes(&'a [Scope]),
    /// Conversion `id`, whose chain is `parties` (`None`: no such conversion): a partner
    /// not on it finds none.
    Conversion {
        /// The conversion.
        id: &'a str,
        /// The partners of its chain.
        parties: Option<&'a [String]>,
    },
    /// Dispute `id`, of partner `owner` (`None`: no such dispute): another partner's is not
    /// found, as if it did not exist.
    Dispute {
        /// The dispute.
        id: &'a str,
        /// Its partner.
        owner: Option<&'a str>,
    },
}

/// Why a call may not proceed. Each door frames it (401, 403, 404; tool errors; tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No principal, where one is needed.
    Unauthenticated(String),
    /// The principal may not do this.
    Forbidden(String),
    /// What it names does not exist, as far as this principal may know.
    NotFound(String),
}

impl From<Denied> for Error {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => Self::unauthenticated(m),
            Denied::Forbidden(m) => Self::forbidden(m),
            Denied::NotFound(m) => Self::not_found(m),
        }
    }
}

/// Lets `p` call `op` on `targets`, or answers the refusal as an [`Error`]: [`authorize`]
/// for a caller known to be authenticated.
pub fn allow(p: &Principal, op: Op, targets: &[Target<'_>]) -> Result<(), Error> {
    authorize(Some(p), op, targets).map_err(Error::from)
}

/// A scope's name as tokens and documents spell it (`conversions_write`).
#[must_use]
pub fn scope_name(s: Scope) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The one authorisation rule. In order: a principal where one is needed (else
/// unauthenticated); the caller's kind (else forbidden); the operation's scope, held by
/// the token (else forbidden: a token never does more than its scopes, whatever its
/// kind); then each target: a partner reads only its own data (another's is not found),
/// writes only in its own name (forbidden), holds only its own leads and agents (not
/// found), and sees only its own disputes (not found); and a token gives another (an agent, a new token) at most its own scopes
/// (forbidden).
pub fn authorize(p: Option<&Principal>, op: Op, targets: &[Target<'_>]) -> Result<(), Denied> {
    let e = entry(op);
    if e.callers == Callers::Anyone {
        return Ok(());
    }
    let p = p.ok_or_else(|| Denied::Unauthenticated("send Authorization: Bearer <token>".into()))?;
    let vendor = p.is_vendor();
    match e.callers {
        Callers::Vendor if !vendor => return Err(Denied::Forbidden("only the vendor may do this".into())),
        Callers::VendorAdmin if p.kind != PrincipalKind::VendorAdmin => {
            return Err(Denied::Forbidden("only a vendor administrator may do this".into()));
        }
        Callers::VendorOrPartnerItself if p.kind == PrincipalKind::PartnerAgent => {
            return Err(Denied::Forbidden("a partner's agents are managed by the partner itself".into()));
        }
        Callers::VendorAdminOrPartnerItself
            if matches!(p.kind, PrincipalKind::PartnerAgent | PrincipalKind::VendorAgent) =>
        {
            return Err(Denied::Forbidden(
                "where a partner is paid is set by a vendor administrator or the partner itself, not an agent".into(),
            ));
        }
        _ => {}
    }
    let scope = if vendor { e.scope } else { e.partner_scope };
    for s in [scope, e.also].into_iter().flatten() {
        if !p.scopes.contains(&s) {
            return Err(Denied::Forbidden(format!("this token lacks the '{}' scope", scope_name(s))));
        }
    }
    for t in targets {
        check_target(p, vendor, *t)?;
    }
    Ok(())
}

fn check_target(p: &Principal, vendor: bool, t: Target<'_>) -> Result<(), Denied> {
    let own = |id: &str| vendor || p.partner.as_deref() == Some(id);
    match t {
        Target::DataOf(id) if !own(id) => Err(Denied::NotFound(format!("partner '{id}' not found"))),
        Target::NameOf(id) if !own(id) => Err(Denied::Forbidden("a partner acts in its own name only".into())),
        Target::Program { id, own: mine } if !vendor && !mine => {
            Err(Denied::NotFound(format!("program '{id}' not found")))
        }
        Target::Lead { id, holder } if !vendor && (holder.is_none() || !holder.is_some_and(own)) => {
            Err(Denied::NotFound(format!("lead '{id}' not found")))
        }
        Target::Agent { id, owner } if !vendor && !owner.is_some_and(own) => {
            Err(Denied::NotFound(format!("agent '{id}' not found")))
        }
        Target::Conversion { id, parties } if !vendor && !parties.is_some_and(|ps| ps.iter().any(|x| own(x))) => {
            Err(Denied::NotFound(format!("conversion '{id}' not found")))
        }
        Target::Dispute { id, owner } if !vendor && !owner.is_some_and(own) => {
            Err(Denied::NotFound(format!("dispute '{id}' not found")))
        }
        Target::Scopes(scopes) => match scopes.iter().find(|s| !p.scopes.contains(s)) {
            Some(s) => Err(Denied::Forbidden(format!(
                "a token gives at most its own scopes: this one lacks '{}'",
                scope_name(*s)
            ))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_one_entry_and_every_door_name_is_unique() {
        let mut ops: Vec<Op> = OPERATIONS.iter().map(|o| o.op).collect();
        ops.sort();
        let n = ops.len();
        ops.dedup();
        assert_eq!(ops.len(), n, "an op listed twice");
        let unique = |v: Vec<String>| {
            let n = v.len();
            let mut s = v;
            s.sort();
            s.dedup();
            s.len() == n
        };
        assert!(unique(OPERATIONS.iter().map(|o| o.name.to_owned()).collect()));
        assert!(unique(OPERATIONS.iter().filter_map(|o| o.http.map(|(m, p)| format!("{} {p}", m.as_str()))).collect()));
        assert!(unique(OPERATIONS.iter().filter_map(|o| o.mcp.map(str::to_owned)).collect()));
        assert!(unique(OPERATIONS.iter().filter_map(|o| o.a2a.map(str::to_owned)).collect()));
        // Every write is served over HTTP, and takes an idempotency key there.
        assert!(OPERATIONS.iter().filter(|o| o.writes).all(|o| o.http.is_some_and(|(m, _)| m != Method::Get)));
    }
}
