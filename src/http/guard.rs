//! The middleware in front of every public route except the probes: who the client is, the
//! source allowlist, the per-client budgets, and a body read with a size limit and a deadline.
//! It is also where every refusal is counted and logged (redacted), whoever decided it.
//!
//! Order: allowlist, failure budget, request budget, then the body. Nothing is read from a
//! client that is turned away, and a slow body cannot hold a handler.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::reply;
use crate::config::limits::body_read_timeout;
use crate::limits::{self, Denial};
use crate::rejections::Rejection;
use crate::verify::{Reason, Scheme};

/// Largest body accepted on any public route: Zoho's deliveries are a few kilobytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The route whose refusals also count in `deskhook_webhook_requests_total`.
const WEBHOOK_ROUTE: &str = "/webhook/zoho-desk";

/// Put on a response by a handler that refused the request, so this middleware counts and
/// logs it with everything it knows about the request. The handler fills in what only it
/// knows (the reason, the scheme, the headers it read); the middleware adds the rest.
#[derive(Clone, Debug)]
pub struct Refused(Rejection);

/// `response` marked as a refusal for `reason`, of the request that carried `headers`.
pub fn refused(
    mut response: Response,
    reason: Reason,
    scheme: Option<Scheme>,
    headers: &HeaderMap,
) -> Response {
    let mut entry = Rejection::new(reason.as_str()).with_headers(headers);
    entry.scheme = scheme.map(Scheme::as_str);
    response.extensions_mut().insert(Refused(entry));
    response
}

/// What is known about a request before it is read, for its rejection entry. Cheap to take
/// for every request: the method and the route are shared, not copied.
struct Seen {
    client: Option<IpAddr>,
    method: Method,
    route: Option<MatchedPath>,
}

impl Seen {
    fn is_webhook(&self) -> bool {
        self.route
            .as_ref()
            .is_some_and(|r| r.as_str() == WEBHOOK_ROUTE)
    }

    /// `entry` completed with the request's side of the story.
    fn complete(&self, mut entry: Rejection, status: StatusCode, body: Option<usize>) -> Rejection {
        entry.status = Some(status.as_u16());
        entry.client = self.client.map(|c| c.to_string());
        entry.method = Some(self.method.as_str().chars().take(16).collect());
        entry.route = self.route.as_ref().map(|r| r.as_str().to_owned());
        entry.body_bytes = body;
        entry
    }
}

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let settings = state.settings.current();
    // Without a socket (a router driven in a test) there is no client to limit.
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| {
            limits::client_addr(
                peer.ip(),
                request.headers().get_all("x-forwarded-for").iter(),
                &settings.networks,
            )
        });
    let seen = Seen {
        client,
        method: request.method().clone(),
        route: request.extensions().get::<MatchedPath>().cloned(),
    };
    let deny = |response: Response, reason: Reason, outcome: &str, headers: &HeaderMap| {
        if seen.is_webhook() {
            state
                .metrics
                .webhook_requests
                .with_label_values(&[outcome])
                .inc();
        }
        let entry = Rejection::new(reason.as_str()).with_headers(headers);
        record(&state, seen.complete(entry, response.status(), None));
        response
    };

    if let Some(client) = client
        && let Err(denial) = state.guard.admit(client, &settings)
    {
        let (response, reason) = match denial {
            Denial::SourceNotAllowed => (
                reply::error(StatusCode::FORBIDDEN, "Forbidden"),
                Reason::SourceNotAllowed,
            ),
            Denial::RateLimited(wait) => (too_many(wait), Reason::RateLimited),
            Denial::TooManyFailures(wait) => (too_many(wait), Reason::TooManyFailures),
        };
        let outcome = match reason {
            Reason::SourceNotAllowed => "forbidden",
            _ => "rate_limited",
        };
        return deny(response, reason, outcome, request.headers());
    }

    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, body_read_timeout(settings.limits())).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            let response = reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
            return deny(response, Reason::TooLarge, "too_large", &parts.headers);
        }
        Err(BodyError::TooSlow) => {
            let mut response = reply::error(StatusCode::REQUEST_TIMEOUT, "Request timeout");
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return deny(response, Reason::BodyTimeout, "timeout", &parts.headers);
        }
    };
    let body_bytes = body.len();
    let mut response = next.run(Request::from_parts(parts, Body::from(body))).await;

    if let Some(Refused(entry)) = response.extensions_mut().remove::<Refused>() {
        record(
            &state,
            seen.complete(entry, response.status(), Some(body_bytes)),
        );
    }
    // Every 401 is a failed verification (signature, token, replay or admin token).
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(client) = client
    {
        state.guard.record_failure(client, &settings);
    }
    response
}

/// Counts and keeps a rejection entry.
pub fn record(state: &AppState, entry: Rejection) {
    state
        .metrics
        .rejections
        .with_label_values(&[entry.reason])
        .inc();
    tracing::warn!(
        reason = entry.reason,
        scheme = entry.scheme,
        status = entry.status,
        client = entry.client.as_deref(),
        route = entry.route.as_deref(),
        "request refused"
    );
    state.rejections.push(entry);
}

fn too_many(wait: Duration) -> Response {
    let mut response = reply::error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(limits::retry_after_seconds(wait)),
    );
    response
}

enum BodyError {
    TooLarge,
    TooSlow,
}

/// Reads the body up to [`MAX_BODY_BYTES`] within `deadline`; a declared length over the
/// limit is refused before anything is read.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    deadline: Duration,
) -> Result<axum::body::Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Err(_) => Err(BodyError::TooSlow),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}
