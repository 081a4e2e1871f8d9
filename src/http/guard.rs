//! The middleware in front of every public route except the probes: who the client is, the
//! source allowlist, the per-client budgets, and a body read with a size limit, a deadline and
//! a share of the pod's body budget. It is also where every refusal is counted and logged
//! (redacted), whoever decided it.
//!
//! Order: allowlist, request budget, failure reservation, then the body. Nothing is read from a
//! client that is turned away, and a slow body cannot hold a handler. A webhook POST without a
//! signature header can only be Zoho's URL validation, so at most [`UNSIGNED_MAX_BYTES`] of it
//! is read; bodies that may be verified share [`BodyBudget`], so many large forged bodies at
//! once cost a fixed amount of memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use super::reply;
use crate::config::limits::body_read_timeout;
use crate::limits::{self, Denial, FailureBudget};
use crate::rejections::Rejection;
use crate::verify::{Reason, Scheme};

/// Largest body accepted on any public route: Zoho's deliveries are a few kilobytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest unsigned webhook body read: Zoho's URL validation carries no event, so anything
/// larger without a signature is refused unread.
pub const UNSIGNED_MAX_BYTES: usize = 1024;
/// Default of the pod's body budget (`DESKHOOK_MAX_BUFFERED_BODY_BYTES`).
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// The route whose refusals also count in `deskhook_webhook_requests_total`.
const WEBHOOK_ROUTE: &str = "/webhook/zoho-desk";

/// Bytes of request bodies the pod holds at once, across every connection. A body is charged as
/// it arrives and released when its request is answered; a request that would pass the budget
/// gets 503 and `Retry-After` instead of more memory.
#[derive(Clone, Debug)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }

    fn charge(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        self.0.clone().try_acquire_many_owned(bytes).ok()
    }
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_BUDGET_BYTES)
    }
}

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

    let budget = match client.map(|c| state.guard.admit(c, &settings)) {
        None => FailureBudget::Unlimited,
        Some(Ok(budget)) => budget,
        Some(Err(denial)) => {
            let (response, reason, outcome) = match denial {
                Denial::SourceNotAllowed => (
                    reply::error(StatusCode::FORBIDDEN, "Forbidden"),
                    Reason::SourceNotAllowed,
                    "forbidden",
                ),
                Denial::RateLimited(wait) => (too_many(wait), Reason::RateLimited, "rate_limited"),
            };
            return deny(response, reason, outcome, request.headers());
        }
    };
    let settle = |failed: bool| {
        if let Some(client) = client {
            state.guard.settle(client, &settings, budget, failed);
        }
    };

    let (mut parts, body) = request.into_parts();
    let unsigned = seen.is_webhook()
        && parts.method == Method::POST
        && !state.verifier.insecure()
        && !state
            .verifier
            .has_signature_header(&settings, &parts.headers);
    let limit = if unsigned {
        UNSIGNED_MAX_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let deadline = body_read_timeout(settings.limits());
    let mut stream = body.into_data_stream();
    let read = read_body(
        &parts.headers,
        &mut stream,
        limit,
        deadline,
        &state.body_budget,
    )
    .await;
    let (body, _charge) = match read {
        Ok(read) => read,
        Err(BodyError::TooLarge) if unsigned => {
            // Too large to be a validation request and not signed: a failed verification.
            // The rest is read and dropped (never held), so the sender gets its answer
            // instead of a reset connection.
            discard(&mut stream, MAX_BODY_BYTES, deadline).await;
            settle(true);
            let response = reply::error(StatusCode::UNAUTHORIZED, "Invalid signature");
            state
                .metrics
                .signature_failures
                .with_label_values(&["none"])
                .inc();
            return deny(
                response,
                Reason::MissingHeader,
                "unauthorized",
                &parts.headers,
            );
        }
        Err(error) => {
            settle(false);
            let (response, reason, outcome) = match error {
                BodyError::TooLarge => (
                    reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
                    Reason::TooLarge,
                    "too_large",
                ),
                BodyError::TooSlow => {
                    let mut response = reply::error(StatusCode::REQUEST_TIMEOUT, "Request timeout");
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    (response, Reason::BodyTimeout, "timeout")
                }
                BodyError::OverBudget => (
                    reply::unavailable("Server busy", 1),
                    Reason::BodyBudget,
                    "unavailable",
                ),
            };
            return deny(response, reason, outcome, &parts.headers);
        }
    };
    let body_bytes = body.len();
    parts.extensions.insert(budget);
    let mut response = next.run(Request::from_parts(parts, Body::from(body))).await;

    let mut refusal = response.extensions_mut().remove::<Refused>();
    // Every 401 is a failed verification (signature, token, replay or admin token), except
    // when the keys could not be had: that is not the sender's doing.
    let failed = response.status() == StatusCode::UNAUTHORIZED
        && refusal
            .as_ref()
            .is_none_or(|Refused(entry)| entry.reason != Reason::KeysUnavailable.as_str());
    settle(failed);
    if let (true, FailureBudget::Spent(wait)) = (failed, budget) {
        // Over budget, the request was checked only with what costs little; it failed, so the
        // answer is the budget's, not the check's.
        response = too_many(wait);
        let entry = refusal.take().map_or_else(
            || Rejection::new(Reason::TooManyFailures.as_str()),
            |Refused(mut entry)| {
                entry.reason = Reason::TooManyFailures.as_str();
                entry
            },
        );
        refusal = Some(Refused(entry));
    }
    if let Some(Refused(entry)) = refusal {
        record(
            &state,
            seen.complete(entry, response.status(), Some(body_bytes)),
        );
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
    OverBudget,
}

/// Reads the body up to `limit` bytes within `deadline`, charging each chunk to `budget` as it
/// arrives; a declared length over the limit is refused before anything is read, and a
/// declared length is charged at once. The permit returned holds the charge until dropped.
async fn read_body(
    headers: &HeaderMap,
    stream: &mut BodyDataStream,
    limit: usize,
    deadline: Duration,
    budget: &BodyBudget,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut charged = match declared {
        Some(0) | None => None,
        Some(len) => Some(budget.charge(len as usize).ok_or(BodyError::OverBudget)?),
    };
    let read = async {
        // Most bodies arrive in one chunk, which is then handed on without a copy.
        let mut chunks: Vec<Bytes> = Vec::with_capacity(1);
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::TooLarge)?;
            total += chunk.len();
            if total > limit {
                return Err(BodyError::TooLarge);
            }
            let held = charged.as_ref().map_or(0, |p| p.num_permits());
            if total > held {
                let more = budget.charge(total - held).ok_or(BodyError::OverBudget)?;
                match charged.as_mut() {
                    Some(permit) => permit.merge(more),
                    None => charged = Some(more),
                }
            }
            chunks.push(chunk);
        }
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        })
    };
    match tokio::time::timeout(deadline, read).await {
        Err(_) => Err(BodyError::TooSlow),
        Ok(Err(error)) => Err(error),
        Ok(Ok(bytes)) => Ok((bytes, charged)),
    }
}

/// Reads and drops what is left of a body, up to `limit` bytes in all and within `deadline`:
/// it costs a read per chunk and no memory.
async fn discard(stream: &mut BodyDataStream, limit: usize, deadline: Duration) {
    let drain = async {
        let mut seen = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(deadline, drain).await;
}
