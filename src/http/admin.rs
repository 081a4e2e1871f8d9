//! Probes, statistics, metrics, and the token-protected manual run.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::guard::refused;
use super::reply;
use crate::config::Settings;
use crate::event::TicketEvent;
use crate::rejections::RETAINED as MAX_REJECTIONS;
use crate::verify::Reason;
use crate::workflow::report::rfc3339;

/// Largest manual-run body.
const MAX_TEST_BODY: usize = 16 * 1024;
/// Reports returned by `/webhook/decisions` at most.
const MAX_DECISIONS: usize = 200;

fn now() -> String {
    rfc3339::format(SystemTime::now())
}

pub async fn health() -> Response {
    Json(json!({"status": "healthy", "service": "deskhook", "timestamp": now()})).into_response()
}

pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "draining": state.draining.load(Ordering::Acquire),
        "queue_accepting": state.queue.is_accepting(),
        "settings_generation": state.settings.current().generation,
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.queue_depth.set(state.queue.depth() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn stats(State(state): State<AppState>) -> Response {
    let settings = state.settings.current();
    let metrics = &state.metrics;
    let mut configuration = serde_json::Map::new();
    for (name, on) in settings.flags().named() {
        configuration.insert(name.to_owned(), Value::Bool(on));
    }
    let schemes: Vec<&str> = state
        .verifier
        .schemes(&settings)
        .iter()
        .map(|s| s.as_str())
        .collect();
    let verifying = !schemes.is_empty() && !state.verifier.insecure();
    configuration.insert("signature_verification".into(), Value::Bool(verifying));
    configuration.insert("verification_schemes".into(), json!(schemes));
    configuration.insert("departments".into(), json!(settings.spec.departments));
    configuration.insert("events".into(), json!(settings.spec.events));
    configuration.insert("generation".into(), json!(settings.generation));
    configuration.insert("source".into(), json!(settings.source.to_string()));
    configuration.insert(
        "applied_at".into(),
        json!(rfc3339::format(settings.applied_at)),
    );

    let requests = |outcome: &str| metrics.webhook_requests.with_label_values(&[outcome]).get();
    let events = |status: &str| metrics.events.with_label_values(&[status]).get();
    let runs = |result: &str| metrics.workflow_runs.with_label_values(&[result]).get();
    let signature_failures = crate::metrics::total(&metrics.signature_failures);
    let body = json!({
        "service": "deskhook",
        "version": env!("CARGO_PKG_VERSION"),
        "status": if state.is_ready() { "running" } else { "draining" },
        "insecure_no_verification": state.verifier.insecure(),
        "configuration": configuration,
        "counters": {
            "requests_accepted": requests("accepted"),
            "requests_validation": requests("validation"),
            "requests_unauthorized": requests("unauthorized"),
            "requests_bad_request": requests("bad_request"),
            "requests_too_large": requests("too_large"),
            "requests_unavailable": requests("unavailable"),
            "signature_failures": signature_failures,
            "payload_parse_errors": metrics.payload_parse_errors.get(),
            "missing_ticket_id": metrics.missing_ticket_id.get(),
            "events_queued": events("queued"),
            "events_duplicate": events("duplicate"),
            "events_ignored": events("ignored"),
            "workflow_success": runs("success"),
            "workflow_failed": runs("failed"),
            "workflow_retried": runs("retried"),
            "config_reload_errors": metrics.config_reload_errors.get(),
        },
        "queue_depth": state.queue.depth(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "timestamp": now(),
    });
    Json(body).into_response()
}

/// Checks `Authorization: Bearer <token>` against the admin tokens; `None` when allowed.
fn authorize(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let tokens = state.admin_tokens.current();
    if tokens.is_empty() {
        return Some(reply::error(StatusCode::NOT_FOUND, "Not found"));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Digests are compared, not the tokens, so the comparison time says nothing about them.
    let matches = presented.is_some_and(|presented| {
        let digest = Sha256::digest(presented.as_bytes());
        tokens.iter().fold(false, |ok, t| {
            ok | (Sha256::digest(t.expose().as_bytes()) == digest)
        })
    });
    if matches {
        None
    } else {
        Some(refused(
            reply::error(StatusCode::UNAUTHORIZED, "Unauthorized"),
            Reason::AdminUnauthorized,
            None,
            headers,
        ))
    }
}

/// `POST /webhook/test`: runs the workflow for one ticket now, with flags that can only be
/// turned off relative to the settings in force.
pub async fn test_run(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = authorize(&state, &headers) {
        return denied;
    }
    if body.len() > MAX_TEST_BODY {
        return reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return reply::error(StatusCode::BAD_REQUEST, "Invalid JSON payload");
    };
    let ticket_id = ["ticket_id", "ticketId"]
        .iter()
        .find_map(|key| request.get(*key))
        .and_then(|v| match v {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) if n.is_u64() => Some(n.to_string()),
            _ => None,
        })
        .filter(|id| !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()));
    let Some(ticket_id) = ticket_id else {
        return reply::error(StatusCode::BAD_REQUEST, "No ticket ID found in payload");
    };

    let live = state.settings.current();
    let mut overrides = HashMap::new();
    for (name, _) in live.flags().named() {
        match request.get(name) {
            None => {}
            Some(Value::Bool(value)) => {
                overrides.insert(name, *value);
            }
            Some(_) => return reply::error(StatusCode::BAD_REQUEST, "Overrides must be booleans"),
        }
    }
    let settings = match with_overrides(&live, &overrides) {
        Ok(settings) => settings,
        Err(flag) => {
            tracing::warn!(
                flag,
                "manual run refused: an override may only turn a flag off"
            );
            return (
                StatusCode::FORBIDDEN,
                Json(json!({
                    "success": false,
                    "error": "Overrides may only turn flags off",
                    "flag": flag,
                })),
            )
                .into_response();
        }
    };

    // The queue gives the run a job of its own (its own id, so its own ledger key) and holds
    // the ticket's events back while it runs: one run per ticket, manual or not.
    let job = match state
        .queue
        .take_ticket(TicketEvent::manual(ticket_id))
        .await
    {
        Ok(Some(job)) => job,
        Ok(None) => {
            return reply::error(
                StatusCode::CONFLICT,
                "A run of this ticket is in progress or waiting; try again once it is done",
            );
        }
        Err(error) => {
            tracing::warn!(error = %error, "manual run refused: the queue cannot hold it");
            return reply::error(StatusCode::SERVICE_UNAVAILABLE, "Queue unavailable");
        }
    };
    let (job, report) = crate::worker::run_caught(state.workflow.as_ref(), job, &settings).await;
    state.queue.ack(&job).await;
    let success = report.succeeded();
    tracing::info!(ticket_id = %report.ticket_id, success, "manual run finished");
    state.decisions.push(report.clone());
    Json(json!({"success": success, "ticket_id": report.ticket_id, "report": report}))
        .into_response()
}

/// The live settings with `overrides` applied; `Err(flag)` when one would turn a flag on.
fn with_overrides(
    live: &Settings,
    overrides: &HashMap<&str, bool>,
) -> Result<Settings, &'static str> {
    let mut settings = live.clone();
    let flags = &mut settings.spec.automation;
    let slots: [(&'static str, &mut bool); 7] = [
        ("auto_dispatch", &mut flags.dispatch),
        ("auto_link", &mut flags.link),
        ("auto_respond", &mut flags.respond),
        ("auto_update_ticket", &mut flags.update_ticket),
        ("auto_update_deal", &mut flags.update_deal),
        ("auto_add_note", &mut flags.add_note),
        ("draft_replies", &mut flags.draft_replies),
    ];
    for (name, slot) in slots {
        if let Some(&wanted) = overrides.get(name) {
            if wanted && !*slot {
                return Err(name);
            }
            *slot = wanted;
        }
    }
    Ok(settings)
}

/// The `limit` query parameter: 50 when absent or not a number, `max` at most.
fn limit(query: &HashMap<String, String>, max: usize) -> usize {
    query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(50)
        .min(max)
}

/// `GET /webhook/decisions?ticket_id=&limit=`: recent reports, newest first.
pub async fn decisions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(denied) = authorize(&state, &headers) {
        return denied;
    }
    let limit = limit(&query, MAX_DECISIONS);
    let ticket_id = query.get("ticket_id");
    // The same store the console reads: with Redis, every pod's decisions.
    let stored = state.decisions.list().await;
    let reports: Vec<&crate::workflow::DecisionReport> = stored
        .iter()
        .filter(|d| ticket_id.is_none_or(|id| &d.report.ticket_id == id))
        .take(limit)
        .map(|d| d.report.as_ref())
        .collect();
    Json(json!({"decisions": reports})).into_response()
}

/// `GET /webhook/rejections?reason=&limit=`: recent refused requests, newest first, redacted
/// (header names, sizes and reasons; never a body, a signature or a token).
pub async fn rejections(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(denied) = authorize(&state, &headers) {
        return denied;
    }
    let limit = limit(&query, MAX_REJECTIONS);
    let entries = state
        .rejections
        .recent(query.get("reason").map(String::as_str), limit);
    Json(json!({"rejections": entries})).into_response()
}
