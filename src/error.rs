//! The one error every operation answers, whichever door it came through: what went
//! wrong (a [`Kind`]) and what to do about it (the detail). It names no protocol: the
//! HTTP door maps a kind to its status and RFC 9457 problem+json
//! (`doors::problem`), the MCP door to a tool error carrying that problem, the A2A
//! door to a rejected or failed task.

use settle_engine::Rejection;

use crate::service::SubmitError;

/// What kind of refusal or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is not what the operation takes (a body, argument or header).
    Malformed,
    /// No credential, or one that is unknown, expired or revoked.
    Unauthenticated,
    /// The caller may not do this.
    Forbidden,
    /// No such thing, or none the caller may see.
    NotFound,
    /// The request conflicts with what the log holds.
    Conflict,
    /// An idempotency key used before with another request.
    KeyReused,
    /// What was asked is recorded but no signed checkpoint covers it yet.
    NotYetCheckpointed,
    /// The request is larger than the operation reads.
    TooLarge,
    /// The request's target (path and query) is longer than is read.
    TargetTooLong,
    /// The request is not sent as JSON.
    WrongMediaType,
    /// Well formed, but the rules refuse it.
    Rejected,
    /// The write queue is full: retry shortly.
    Busy,
    /// A fault of settle's own.
    Internal,
    /// The store cannot take writes now (after a storage error).
    Unavailable,
}

impl Kind {
    /// A short, stable title.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::Malformed => "Bad request",
            Self::Unauthenticated => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
            Self::Conflict => "Conflict",
            Self::KeyReused => "Idempotency key reused",
            Self::NotYetCheckpointed => "Not yet checkpointed",
            Self::TooLarge => "Payload too large",
            Self::TargetTooLong => "URI too long",
            Self::WrongMediaType => "Unsupported media type",
            Self::Rejected => "Rejected",
            Self::Busy => "Too many requests",
            Self::Internal => "Internal error",
            Self::Unavailable => "Unavailable",
        }
    }

    /// The caller's to mend (the request, its credential or its timing), not settle's.
    #[must_use]
    pub fn is_refusal(self) -> bool {
        !matches!(self, Self::Busy | Self::Internal | Self::Unavailable)
    }
}

/// An operation's error: its kind and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind.
    pub kind: Kind,
    /// What went wrong and what to do about it.
    pub detail: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }

    /// The request is malformed.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(Kind::Malformed, detail)
    }

    /// No valid credential.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(Kind::Unauthenticated, detail)
    }

    /// Not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, detail)
    }

    /// Not found (or not the caller's to see).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, detail)
    }

    /// An idempotency key reused with another request.
    pub fn key_reused(detail: impl Into<String>) -> Self {
        Self::new(Kind::KeyReused, detail)
    }

    /// Refused by the rules.
    pub fn rejected(detail: impl Into<String>) -> Self {
        Self::new(Kind::Rejected, detail)
    }

    /// A fault of settle's own.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(Kind::Internal, detail.to_string())
    }

    /// The same error, its detail prefixed with `what` (an item of a batch, say).
    #[must_use]
    pub fn at(mut self, what: &str) -> Self {
        self.detail = format!("{what}: {}", self.detail);
        self
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.detail)
    }
}

impl std::error::Error for Error {}

impl From<SubmitError> for Error {
    fn from(e: SubmitError) -> Self {
        let kind = match &e {
            SubmitError::Rejected(Rejection::NotFound(_)) => Kind::NotFound,
            SubmitError::Rejected(Rejection::Conflict(_)) => Kind::Conflict,
            SubmitError::Rejected(_) => Kind::Rejected,
            SubmitError::KeyConflict(_) => Kind::KeyReused,
            SubmitError::Busy => Kind::Busy,
            SubmitError::Storage(_) => Kind::Unavailable,
        };
        Self::new(kind, e.to_string())
    }
}
