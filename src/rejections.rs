//! The most recent refused requests, redacted, for `GET /webhook/rejections`.
//!
//! An operator debugging a misconfigured portal needs to see *why* deliveries fail (which
//! reason, which headers arrived, from where) but must never be handed a signature, a token or
//! a body: an entry holds header *names* only, the matched route rather than the raw path, and
//! sizes rather than contents.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::HeaderMap;
use serde::Serialize;

use crate::workflow::report::rfc3339;

/// Entries kept.
pub const RETAINED: usize = 200;
/// Header names listed per entry at most.
const MAX_HEADER_NAMES: usize = 32;
/// Longest header name or user agent kept, in bytes.
const MAX_TEXT: usize = 128;

/// One refused request.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Rejection {
    /// When, RFC 3339 UTC.
    pub at: String,
    /// The bounded reason, as in `deskhook_webhook_rejections_total{reason}`.
    pub reason: &'static str,
    /// The verification scheme that refused it, when one did.
    pub scheme: Option<&'static str>,
    /// The status answered; `null` when the connection was closed without an answer.
    pub status: Option<u16>,
    /// The client address (after trusted proxies), when known.
    pub client: Option<String>,
    pub method: Option<String>,
    /// The route matched (`/webhook/zoho-desk`), never the raw path or query.
    pub route: Option<String>,
    /// Names of the request's headers, lower case; never their values.
    pub headers: Vec<String>,
    pub user_agent: Option<String>,
    /// Bytes of body read before the refusal, when a body was read.
    pub body_bytes: Option<usize>,
}

impl Rejection {
    /// An entry for `reason` now, every other field empty.
    pub fn new(reason: &'static str) -> Self {
        Self {
            at: rfc3339::format(SystemTime::now()),
            reason,
            scheme: None,
            status: None,
            client: None,
            method: None,
            route: None,
            headers: Vec::new(),
            user_agent: None,
            body_bytes: None,
        }
    }

    /// Fills the header names and user agent from `headers`.
    pub fn with_headers(mut self, headers: &HeaderMap) -> Self {
        let mut names: Vec<String> = headers.keys().map(|name| bounded(name.as_str())).collect();
        names.dedup();
        names.truncate(MAX_HEADER_NAMES);
        self.headers = names;
        self.user_agent = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(bounded);
        self
    }
}

/// `text` cut to [`MAX_TEXT`] bytes of printable ASCII.
fn bounded(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_TEXT)
        .collect()
}

/// A bounded log of recent rejections, newest first.
#[derive(Debug)]
pub struct RejectionLog {
    capacity: usize,
    entries: Mutex<VecDeque<Rejection>>,
}

impl Default for RejectionLog {
    fn default() -> Self {
        Self::new(RETAINED)
    }
}

impl RejectionLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::default(),
        }
    }

    pub fn push(&self, rejection: Rejection) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.pop_back();
        }
        entries.push_front(rejection);
    }

    /// Up to `limit` entries, newest first, optionally only those with `reason`.
    pub fn recent(&self, reason: Option<&str>, limit: usize) -> Vec<Rejection> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .filter(|r| reason.is_none_or(|wanted| r.reason == wanted))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn entries_keep_header_names_but_never_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-zoho-signature", HeaderValue::from_static("deadbeef"));
        headers.insert("user-agent", HeaderValue::from_static("Zoho Desk\t"));
        let entry = Rejection::new("mismatch").with_headers(&headers);
        let text = serde_json::to_string(&entry).unwrap();
        assert!(text.contains("x-zoho-signature"));
        assert!(!text.contains("deadbeef"));
        assert_eq!(entry.user_agent.as_deref(), Some("Zoho Desk"));
    }

    #[test]
    fn the_log_is_bounded_and_newest_first() {
        let log = RejectionLog::new(2);
        for reason in ["mismatch", "expired", "replayed"] {
            log.push(Rejection::new(reason));
        }
        let reasons: Vec<_> = log.recent(None, 10).iter().map(|r| r.reason).collect();
        assert_eq!(reasons, ["replayed", "expired"]);
        assert_eq!(log.recent(Some("expired"), 10).len(), 1);
    }
}
