//! The HTTP surface: the public webhook router and the admin (metrics) router.
//!
//! Routers are pure functions of [`AppState`] so tests can drive them without a socket; the
//! server binds them to two listeners, so `/metrics` is never reachable from the ingress.

mod admin;
pub mod admin_access;
mod console;
pub mod guard;
mod listener;
mod reply;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::config::{SettingsHandle, WatchedSecrets};
use crate::decisions::DecisionLog;
use crate::limits::Guard;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::rejections::RejectionLog;
use crate::verify::Verifier;
use crate::workflow::Workflow;

pub use guard::{BodyBudget, DEFAULT_BODY_BUDGET_BYTES, MAX_BODY_BYTES};
pub use listener::serve_public;

/// Everything a handler may read. Cloned per request (twice: the guard and the handler), so
/// it is one shared allocation and a clone is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The handles behind an [`AppState`].
pub struct Shared {
    pub settings: SettingsHandle,
    pub verifier: Arc<Verifier>,
    pub queue: Arc<dyn Queue>,
    pub workflow: Arc<dyn Workflow>,
    pub metrics: Arc<Metrics>,
    pub decisions: Arc<DecisionLog>,
    /// Bearer tokens for the admin endpoints; empty means those endpoints are off.
    pub admin_tokens: WatchedSecrets,
    pub draining: Arc<AtomicBool>,
    pub started: Instant,
    /// Per-client budgets of the public listener.
    pub guard: Arc<Guard>,
    /// Bytes of request bodies held at once across the public listener's connections.
    pub body_budget: guard::BodyBudget,
    /// Who may use the console.
    pub admin: admin_access::AdminAccess,
    /// Recent refused requests, redacted, for `/webhook/rejections`.
    pub rejections: Arc<RejectionLog>,
    /// The shares of the guarded rollouts this pod applies, for the console.
    pub rollouts: crate::rollout::Rollouts,
}

impl AppState {
    /// Ready when settings are loaded, the queue accepts and no shutdown is under way.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.queue.is_accepting()
    }
}

/// The public router: what the ingress exposes.
///
/// Every route but the probes sits behind [`guard::guard`] (allowlist, per-client budgets,
/// bounded body read, rejection log); kubelet probes are never limited.
pub fn webhook_router(state: AppState) -> Router {
    let guarded = Router::new()
        .route(
            "/webhook/zoho-desk",
            post(webhook::receive).get(webhook::validation_get),
        )
        .route("/webhook/test", post(admin::test_run))
        .route("/webhook/stats", get(admin::stats))
        .route("/webhook/decisions", get(admin::decisions))
        .route("/webhook/rejections", get(admin::rejections))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::guard));
    Router::new()
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .merge(guarded)
        .fallback(reply::not_found)
        .with_state(state)
}

/// The admin router on the metrics listener: metrics, probes and the review console, never
/// the webhook. The console shows customer data, so it lives here and nowhere else.
///
/// The console answers only when reached by one of the listener's own names
/// ([`admin_access::check_host`]); metrics and probes are reached by address, by Prometheus
/// and the kubelet, and carry no customer data.
pub fn admin_router(state: AppState) -> Router {
    let console = console::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        admin_access::check_host,
    ));
    Router::new()
        .route("/metrics", get(admin::metrics))
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .merge(console)
        .fallback(reply::not_found)
        .with_state(state)
}
