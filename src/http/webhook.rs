//! `POST /webhook/zoho-desk`: verify, parse, enqueue, answer within Zoho's 5 seconds.
//!
//! Order matters: the raw bytes are verified before anything trusts them; a 200 is sent only
//! once every event is stored in the queue (or is a duplicate, or is deliberately ignored).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::guard::{MAX_BODY_BYTES, UNSIGNED_MAX_BYTES, refused};
use super::reply;
use crate::config::Settings;
use crate::event::{Delivery, TicketEvent, parse_delivery};
use crate::limits::FailureBudget;
use crate::queue::{AcceptPolicy, Accepted, QueueError};
use crate::verify::Reason;

/// What a full queue asks the sender to wait, in seconds.
const RETRY_AFTER_SECONDS: u32 = 5;

/// One event in the answer.
#[derive(Serialize)]
struct EventStatus {
    ticket_id: Option<String>,
    event_type: String,
    status: &'static str,
}

/// The answer to a delivery: what became of each event.
#[derive(Serialize)]
struct Answer {
    success: bool,
    events: Vec<EventStatus>,
}

/// Zoho validates a webhook URL with a GET when the webhook is saved.
pub async fn validation_get() -> Response {
    Json(json!({"success": true, "service": "deskhook"})).into_response()
}

pub async fn receive(
    State(state): State<AppState>,
    budget: Option<Extension<FailureBudget>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timer = state.metrics.request_duration.start_timer();
    let budget = budget.map_or(FailureBudget::Unlimited, |Extension(b)| b);
    let response = handle(&state, &headers, body, budget).await;
    timer.observe_duration();
    response
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    budget: FailureBudget,
) -> Response {
    let metrics = &state.metrics;
    let outcome = |name: &str| metrics.webhook_requests.with_label_values(&[name]).inc();
    let settings = state.settings.current();

    let body = match read_body(headers, body).await {
        Ok(body) => body,
        Err(response) => {
            outcome("too_large");
            return refused(response, Reason::TooLarge, None, headers);
        }
    };
    tracing::debug!(bytes = body.len(), "Received webhook");

    // Zoho's URL validation may POST without a signature and without an event: answer 200 and
    // do nothing. Only a small body is parsed to tell (the guard reads no more of an unsigned
    // one); a body that names a ticket is never processed unsigned.
    if !state.verifier.has_signature_header(&settings, headers) && is_validation(&body) {
        outcome("validation");
        tracing::info!("validation request answered; nothing processed");
        return Json(json!({"success": true, "events": []})).into_response();
    }

    let verified = match state
        .verifier
        .verify(&settings, headers, &body, budget.may_fetch_keys())
        .await
    {
        Ok(verified) => verified,
        Err(rejection) => {
            let scheme = rejection.scheme.map_or("none", |s| s.as_str());
            outcome("unauthorized");
            metrics
                .signature_failures
                .with_label_values(&[scheme])
                .inc();
            tracing::warn!(
                scheme,
                reason = rejection.reason.as_str(),
                "Webhook signature verification failed"
            );
            return refused(
                reply::error(StatusCode::UNAUTHORIZED, "Invalid signature"),
                rejection.reason,
                rejection.scheme,
                headers,
            );
        }
    };
    metrics
        .signature_verified
        .with_label_values(&[verified.scheme.as_str(), verified.key.as_str()])
        .inc();

    let delivery = match parse_delivery(&body) {
        Ok(delivery) => delivery,
        Err(error) => {
            outcome("bad_request");
            metrics.payload_parse_errors.inc();
            tracing::error!(error = %error, "Failed to parse JSON payload");
            return reply::error(StatusCode::BAD_REQUEST, "Invalid JSON payload");
        }
    };
    if !delivery.missing_ticket_id.is_empty() {
        metrics
            .missing_ticket_id
            .inc_by(delivery.missing_ticket_id.len() as u64);
        tracing::warn!(
            events = delivery.missing_ticket_id.len(),
            event_types = ?delivery.missing_ticket_id,
            "No ticket ID found in payload"
        );
        if delivery.events.is_empty() && delivery.not_ticket_events.is_empty() {
            outcome("bad_request");
            return reply::error(StatusCode::BAD_REQUEST, "No ticket ID found in payload");
        }
    }

    match enqueue(state, &settings, delivery).await {
        Ok(events) => {
            outcome("accepted");
            Json(Answer {
                success: true,
                events,
            })
            .into_response()
        }
        Err(error) => {
            outcome("unavailable");
            // The sender may retry a delivery answered 503 with the same token.
            state.verifier.release(&verified);
            tracing::error!(error = %error, "Error processing webhook: event not stored");
            match error {
                QueueError::Closed => {
                    reply::unavailable("Service is shutting down", RETRY_AFTER_SECONDS)
                }
                QueueError::Full => reply::unavailable("Queue is full", RETRY_AFTER_SECONDS),
                QueueError::Unavailable => {
                    reply::unavailable("Queue is unavailable", RETRY_AFTER_SECONDS)
                }
            }
        }
    }
}

/// Reads the body up to [`MAX_BODY_BYTES`]; a larger one is a 413 before it is read whole.
/// (The guard middleware has already read it within the limits; this keeps the handler safe
/// on its own.)
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())
}

/// Whether an unsigned body is Zoho's URL validation: small, and naming no event.
fn is_validation(body: &[u8]) -> bool {
    if body.len() > UNSIGNED_MAX_BYTES {
        return false;
    }
    match parse_delivery(body) {
        Ok(delivery) => delivery.events.is_empty(),
        Err(_) => false,
    }
}

async fn enqueue(
    state: &AppState,
    settings: &Settings,
    delivery: Delivery,
) -> Result<Vec<EventStatus>, QueueError> {
    let policy = AcceptPolicy {
        capacity: settings.queue_capacity() as usize,
        dedupe_window: Duration::from_secs(settings.queue().dedupe_window_seconds),
    };
    let mut statuses = Vec::with_capacity(delivery.events.len());
    for event in delivery.events {
        let ticket_id = event.ticket_id.clone();
        let event_type = event.event_type.clone();
        let status = if let Some(why) = ignore_reason(settings, &event) {
            tracing::debug!(%ticket_id, %event_type, why, "event ignored");
            "ignored"
        } else {
            let accepted = state.queue.accept(event, policy).await?;
            tracing::debug!(%ticket_id, %event_type, outcome = ?accepted, "event queued");
            match accepted {
                Accepted::Queued | Accepted::Coalesced => "queued",
                Accepted::Duplicate => "duplicate",
            }
        };
        state.metrics.events.with_label_values(&[status]).inc();
        statuses.push(EventStatus {
            ticket_id: Some(ticket_id),
            event_type,
            status,
        });
    }
    state.metrics.queue_depth.set(state.queue.depth() as i64);
    let skipped = delivery
        .not_ticket_events
        .into_iter()
        .chain(delivery.missing_ticket_id)
        .map(|event_type| EventStatus {
            ticket_id: None,
            event_type,
            status: "ignored",
        });
    statuses.extend(skipped);
    Ok(statuses)
}

/// Why an event is acknowledged without running, if it is.
fn ignore_reason(settings: &Settings, event: &TicketEvent) -> Option<&'static str> {
    if !settings.handles_event(&event.event_type) {
        return Some("event type not in spec.events");
    }
    match event.department_name() {
        Some(name) if !settings.handles_department(name) => {
            Some("department not in spec.departments")
        }
        _ => None,
    }
}
