//! What can go wrong when talking to Zoho, as one error type with bounded labels.
//!
//! Errors name the call (`desk move_ticket`) and Zoho's error code, never a URL, a body, a
//! token or a customer's address: a search URL carries the customer's email, and Zoho's
//! messages sometimes quote the data they refused.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// Which Zoho API a call went to; a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Desk,
    Crm,
    Accounts,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Desk => "desk",
            Api::Crm => "crm",
            Api::Accounts => "accounts",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operation of a client: which API, a fixed name, and whether it changes data in Zoho.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub api: Api,
    pub op: &'static str,
    pub write: bool,
}

impl Call {
    pub(crate) const fn read(api: Api, op: &'static str) -> Self {
        Self {
            api,
            op,
            write: false,
        }
    }

    pub(crate) const fn write(api: Api, op: &'static str) -> Self {
        Self {
            api,
            op,
            write: true,
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api, self.op)
    }
}

/// A failed Zoho call.
#[derive(Debug, thiserror::Error)]
pub enum ZohoError {
    /// Zoho Accounts answered `Access Denied`: more than 10 tokens were minted from this
    /// refresh token in 10 minutes (possibly by another process sharing it).
    #[error("failed to refresh Zoho token: Zoho Accounts is throttling this refresh token")]
    TokenThrottled,
    /// Zoho Accounts refused the refresh token or the client (`invalid_code`,
    /// `invalid_client`): someone has to authorise again.
    #[error("failed to refresh Zoho token: Zoho Accounts answered {code}")]
    TokenRejected { code: String },
    /// deskhook itself refused to refresh, to stay within Zoho's 10 tokens per 10 minutes or
    /// to pause after a failed refresh.
    #[error("failed to refresh Zoho token: refresh budget used up, next attempt in {}s", .retry_after.as_secs())]
    RefreshLimited { retry_after: Duration },
    /// Zoho answered 429, and waiting within this call was not possible or did not help.
    #[error("failed to call Zoho {call}: rate limited")]
    RateLimited {
        call: Call,
        retry_after: Option<Duration>,
    },
    /// Zoho answered with an error status.
    #[error("failed to call Zoho {call}: HTTP {} {code}{}", .status.as_u16(), fields_suffix(.fields))]
    Api {
        call: Call,
        status: StatusCode,
        /// Zoho's error code (`errorCode` on Desk, `code` on CRM), or empty.
        code: String,
        /// Field names Zoho complained about. Zoho's message is not kept: it may quote
        /// customer data.
        fields: Vec<String>,
    },
    /// Zoho answered 2xx but refused one record of a CRM write (`data[i].status` is not
    /// `success`).
    #[error("failed to call Zoho {call}: record {index} refused with {code}{}", fields_suffix(.fields))]
    Record {
        call: Call,
        index: usize,
        code: String,
        fields: Vec<String>,
    },
    /// No answer within the per-call timeout.
    #[error("failed to call Zoho {call}: no answer in time")]
    Timeout { call: Call },
    /// The connection failed; `sent` says whether the request may have reached Zoho.
    #[error("failed to reach Zoho {call}")]
    Transport {
        call: Call,
        sent: bool,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the JSON the client expects.
    #[error("failed to read the answer of Zoho {call}: {detail}")]
    Decode { call: Call, detail: String },
    /// An argument cannot be sent as is (an id that is not a Zoho id, too many criteria).
    #[error("failed to call Zoho {call}: {reason}")]
    InvalidInput { call: Call, reason: String },
}

fn fields_suffix(fields: &[String]) -> String {
    if fields.is_empty() {
        String::new()
    } else {
        format!(" (fields: {})", fields.join(", "))
    }
}

impl ZohoError {
    /// Whether trying the same call later may succeed. A write whose outcome is unknown is
    /// retryable too; check [`ZohoError::may_have_written`] before sending it again.
    pub fn retryable(&self) -> bool {
        match self {
            ZohoError::TokenThrottled
            | ZohoError::RefreshLimited { .. }
            | ZohoError::RateLimited { .. }
            | ZohoError::Timeout { .. }
            | ZohoError::Transport { .. } => true,
            ZohoError::Api { status, .. } => status.is_server_error(),
            ZohoError::TokenRejected { .. }
            | ZohoError::Record { .. }
            | ZohoError::Decode { .. }
            | ZohoError::InvalidInput { .. } => false,
        }
    }

    /// Whether a write may have been carried out although it failed (a timeout, a 5xx, a
    /// dropped connection after sending, or an unreadable 2xx answer). Sending it again
    /// blindly could reply to a customer twice.
    pub fn may_have_written(&self) -> bool {
        match self {
            ZohoError::Timeout { call } | ZohoError::Decode { call, .. } => call.write,
            ZohoError::Transport { call, sent, .. } => call.write && *sent,
            ZohoError::Api { call, status, .. } => call.write && status.is_server_error(),
            _ => false,
        }
    }

    /// A label of bounded cardinality for metrics and decision reports.
    pub fn kind(&self) -> &'static str {
        match self {
            ZohoError::TokenThrottled => "token_throttled",
            ZohoError::TokenRejected { .. } => "token_rejected",
            ZohoError::RefreshLimited { .. } => "token_refresh_limited",
            ZohoError::RateLimited { .. } => "rate_limited",
            ZohoError::Api { status, .. } => match status.as_u16() {
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                500..=599 => "server_error",
                _ => "rejected",
            },
            ZohoError::Record { .. } => "record_rejected",
            ZohoError::Timeout { .. } => "timeout",
            ZohoError::Transport { .. } => "transport",
            ZohoError::Decode { .. } => "decode",
            ZohoError::InvalidInput { .. } => "invalid_input",
        }
    }

    /// The call that failed, when the error is about one call rather than the token.
    pub fn call(&self) -> Option<Call> {
        match self {
            ZohoError::RateLimited { call, .. }
            | ZohoError::Api { call, .. }
            | ZohoError::Record { call, .. }
            | ZohoError::Timeout { call }
            | ZohoError::Transport { call, .. }
            | ZohoError::Decode { call, .. }
            | ZohoError::InvalidInput { call, .. } => Some(*call),
            ZohoError::TokenThrottled
            | ZohoError::TokenRejected { .. }
            | ZohoError::RefreshLimited { .. } => None,
        }
    }

    /// Zoho's error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ZohoError::Api { code, .. } | ZohoError::Record { code, .. } if !code.is_empty() => {
                Some(code)
            }
            ZohoError::TokenRejected { code } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn decode(call: Call, error: &serde_json::Error) -> Self {
        // serde_json's message can quote the offending value; keep only where and what kind.
        ZohoError::Decode {
            call,
            detail: format!(
                "{:?} error at line {} column {}",
                error.classify(),
                error.line(),
                error.column()
            ),
        }
    }

    pub(crate) fn invalid_input(call: Call, reason: impl Into<String>) -> Self {
        ZohoError::InvalidInput {
            call,
            reason: reason.into(),
        }
    }
}

/// Why the Zoho clients cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ZohoSetupError {
    #[error("failed to find the Zoho hosts of region {0:?}")]
    UnknownRegion(String),
    #[error("failed to read {variable}: not an http(s) URL")]
    InvalidUrl { variable: &'static str },
    #[error("failed to load Zoho OAuth credentials: {variable} is not set")]
    MissingCredential { variable: &'static str },
    #[error("failed to read Zoho credential file {path}")]
    CredentialFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to register the Zoho client metrics")]
    Metrics(#[source] prometheus::Error),
}

/// Longest error code kept; Zoho's are short upper-case words.
const MAX_CODE: usize = 64;
/// Most field names kept from one error body.
const MAX_FIELDS: usize = 10;

/// The useful part of a Zoho error body, in any of its shapes: Desk
/// `{"errorCode","message","errors":[{"fieldName"}]}`, CRM `{"code","details","message"}`
/// or `{"data":[{"code",...}]}`, Accounts `{"error"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub code: String,
    pub fields: Vec<String>,
}

impl ErrorBody {
    pub fn parse(bytes: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return Self::default();
        };
        let first_record = value.get("data").and_then(|d| d.get(0));
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let code = text(value.get("errorCode"))
            .or_else(|| text(value.get("code")))
            .or_else(|| text(value.get("error")))
            .or_else(|| text(first_record.and_then(|r| r.get("code"))))
            .map(|c| sanitize_code(&c))
            .unwrap_or_default();
        let mut fields = Vec::new();
        if let Some(errors) = value.get("errors").and_then(Value::as_array) {
            fields.extend(
                errors
                    .iter()
                    .filter_map(|e| e.get("fieldName").and_then(Value::as_str)),
            );
        }
        for details in [
            value.get("details"),
            first_record.and_then(|r| r.get("details")),
        ]
        .into_iter()
        .flatten()
        {
            fields.extend(details.get("api_name").and_then(Value::as_str));
        }
        let fields = fields
            .into_iter()
            .take(MAX_FIELDS)
            .map(sanitize_code)
            .collect();
        Self { code, fields }
    }

    /// Whether a 401 says the access token expired or was revoked, so a fresh token can help
    /// (unlike a scope or organisation mismatch, where refreshing only burns the budget).
    pub fn is_stale_token(&self) -> bool {
        matches!(
            self.code.as_str(),
            "" | "INVALID_OAUTH"
                | "INVALID_TOKEN"
                | "INVALID_OAUTHTOKEN"
                | "AUTHENTICATION_FAILURE"
        )
    }
}

/// Keeps an identifier-like string: letters, digits, `_`, `-`, `.`, space; bounded length.
pub(crate) fn sanitize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        .take(MAX_CODE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desk_error_bodies_give_code_and_fields() {
        let body = ErrorBody::parse(
            br#"{"errorCode":"INVALID_DATA","message":"bad","errors":[{"fieldName":"status","errorMessage":"x"}]}"#,
        );
        assert_eq!(body.code, "INVALID_DATA");
        assert_eq!(body.fields, ["status"]);
    }

    #[test]
    fn crm_error_bodies_give_code_and_field() {
        let top = ErrorBody::parse(
            br#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#,
        );
        assert_eq!(top.code, "INVALID_TOKEN");
        assert!(top.is_stale_token());
        let record = ErrorBody::parse(
            br#"{"data":[{"code":"INVALID_DATA","details":{"api_name":"Stage"},"message":"invalid data","status":"error"}]}"#,
        );
        assert_eq!(record.code, "INVALID_DATA");
        assert_eq!(record.fields, ["Stage"]);
    }

    #[test]
    fn scope_mismatch_is_not_a_stale_token() {
        let body = ErrorBody::parse(br#"{"code":"OAUTH_SCOPE_MISMATCH","status":"error"}"#);
        assert!(!body.is_stale_token());
    }

    #[test]
    fn odd_bodies_give_nothing_and_codes_are_bounded() {
        assert_eq!(ErrorBody::parse(b"<html>oops</html>"), ErrorBody::default());
        let long = format!(r#"{{"errorCode":"{}<script>"}}"#, "A".repeat(500));
        let body = ErrorBody::parse(long.as_bytes());
        assert_eq!(body.code.len(), MAX_CODE);
        assert!(!body.code.contains('<'));
    }

    #[test]
    fn writes_that_timed_out_may_have_happened_reads_never() {
        let write = Call::write(Api::Desk, "send_reply");
        let read = Call::read(Api::Desk, "get_ticket");
        assert!(ZohoError::Timeout { call: write }.may_have_written());
        assert!(!ZohoError::Timeout { call: read }.may_have_written());
        let refused = ZohoError::Api {
            call: write,
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "INVALID_DATA".into(),
            fields: vec![],
        };
        assert!(!refused.may_have_written());
        assert!(!refused.retryable());
        assert_eq!(refused.kind(), "rejected");
    }
}
