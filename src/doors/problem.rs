//! RFC 9457 problem details: how the HTTP door answers an [`Error`] (a status for its
//! kind, `application/problem+json`), and the same problem the MCP and A2A doors carry
//! in their tool errors and tasks.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{Error, Kind};

/// The HTTP status of an error of `kind`.
#[must_use]
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::Malformed => StatusCode::BAD_REQUEST,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict | Kind::KeyReused | Kind::NotYetCheckpointed => StatusCode::CONFLICT,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::TargetTooLong => StatusCode::URI_TOO_LONG,
        Kind::WrongMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Busy => StatusCode::TOO_MANY_REQUESTS,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A problem: its status, title and detail.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short, stable title.
    pub title: &'static str,
    /// What went wrong and what to do about it.
    pub detail: String,
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        Self { status: status(e.kind), title: e.kind.title(), detail: e.detail }
    }
}

impl Problem {
    /// The problem+json body.
    #[must_use]
    pub fn body(&self) -> Value {
        json!({
            "type": format!("https://settle.dev/problems/{}", self.title.to_lowercase().replace(' ', "-")),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status.as_u16(), self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SubmitError;

    /// A full ledger queue reaches an HTTP client as 429 problem+json with Retry-After,
    /// so it backs off instead of treating the refusal as a failure of its request.
    #[test]
    fn a_full_queue_is_429_with_retry_after() {
        let r = Error::from(SubmitError::Busy).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
