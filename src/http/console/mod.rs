//! The review console: a small server-rendered site on the admin listener for the support
//! staff who watch a rollout. It shows the rollout flags and what each write did lately, the
//! recent decisions (filterable, paged, exportable), each decision in full, and a backtest of
//! an edited settings document on the recent decisions.
//!
//! Why it looks like this:
//! - It is mounted only on the admin router, never on the public webhook router, so customer
//!   data never leaves the admin listener.
//! - Pages are rendered by minijinja from templates whose names end in `.html`, which turns
//!   HTML auto-escaping on: a hostile subject or message is shown as text, never as markup.
//!   Links built from Zoho data (`webUrl`) are further limited to `http(s)` addresses.
//! - There is no script and no external asset; the stylesheet is served from the same
//!   listener, so a strict `Content-Security-Policy` holds and the console works offline.
//! - Access follows the admin token (see [`session`]).

mod backtest;
mod export;
mod session;
mod view;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{Environment, Value, context};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::verify::Reason;
use crate::workflow::report::rfc3339;
use session::Access;
use view::{DecisionView, Filters, Outcome, PAGE_SIZE};

/// Sent with every console answer: nothing may load from elsewhere, run a script, frame the
/// page or submit a form to another origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Longest login form accepted.
const MAX_LOGIN_BYTES: usize = 4096;

/// The console's routes, to be merged into the admin router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/decisions/{id}", get(decision))
        .route("/console/export.csv", get(export_csv))
        .route("/console/export.json", get(export_json))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/style.css", get(stylesheet))
        .route(
            "/console/backtest",
            get(backtest::page)
                .post(backtest::run)
                .layer(axum::extract::DefaultBodyLimit::max(
                    backtest::MAX_YAML_BYTES,
                )),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_LOGIN_BYTES))
        .layer(middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Customer data must not linger in caches.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn templates() -> &'static Environment<'static> {
    static TEMPLATES: OnceLock<Environment<'static>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("steps.html", include_str!("templates/steps.html")),
            ("index.html", include_str!("templates/index.html")),
            ("decision.html", include_str!("templates/decision.html")),
            ("login.html", include_str!("templates/login.html")),
            ("not_found.html", include_str!("templates/not_found.html")),
            ("backtest.html", include_str!("templates/backtest.html")),
        ] {
            // A template that does not parse is reported when it is rendered.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(template = name, %error, "console template does not parse");
            }
        }
        env
    })
}

/// Renders `name` as an HTML answer; a rendering error is logged and answered with a 500
/// that reveals nothing.
fn render(status: StatusCode, name: &str, ctx: Value) -> Response {
    let rendered = templates()
        .get_template(name)
        .and_then(|template| template.render(ctx));
    match rendered {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(template = name, %error, "console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "The page could not be rendered.",
            )
                .into_response()
        }
    }
}

/// A template value from any serializable view.
fn ser<T: Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

fn access_label(access: Access) -> &'static str {
    match access {
        Access::Open => "open",
        Access::SignedIn => "signed_in",
        Access::Denied => "denied",
    }
}

/// The request's access; `None` when it has none and must sign in first.
fn check(state: &AppState, headers: &HeaderMap) -> Option<Access> {
    let access = session::access(
        &state.admin_tokens.current(),
        headers,
        state.admin.console_open,
    );
    access.allowed().then_some(access)
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// The filters as the templates see them.
#[derive(Serialize)]
struct FilterView<'a> {
    department: Option<&'a str>,
    rule: Option<&'a str>,
    outcome: Option<&'static str>,
    ticket: Option<&'a str>,
}

/// `GET /console`: the rollout panel and one page of decisions.
async fn index(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(access) = check(&state, &headers) else {
        return to_login();
    };
    let settings = state.settings.current();
    let decisions = state.decisions.list().await;
    let filters = Filters::from_query(&query);
    let matching = view::filter(&decisions, &filters);
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = filters.page.min(pages);
    let rows: Vec<DecisionView> = matching
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|d| DecisionView::new(d))
        .collect();
    let ctx = context! {
        access => access_label(access),
        version => env!("CARGO_PKG_VERSION"),
        rollout => ser(view::rollout(&settings, &decisions)),
        guarded => ser(view::guarded(&settings, &state.rollouts)),
        choices => ser(view::choices(&decisions, &settings)),
        no_rule => view::NO_RULE,
        filters => ser(FilterView {
            department: filters.department.as_deref(),
            rule: filters.rule.as_deref(),
            outcome: filters.outcome.map(Outcome::as_str),
            ticket: filters.ticket.as_deref(),
        }),
        filtered => !filters.is_empty(),
        query => filters.query(),
        rows => ser(rows),
        total => total,
        page => page,
        pages => pages,
    };
    render(StatusCode::OK, "index.html", ctx)
}

/// `GET /console/decisions/{id}`: one decision in full.
async fn decision(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(access) = check(&state, &headers) else {
        return to_login();
    };
    let found = if crate::decisions::is_decision_id(&id) {
        state.decisions.get(&id).await
    } else {
        None
    };
    let version = env!("CARGO_PKG_VERSION");
    match found {
        Some(decision) => render(
            StatusCode::OK,
            "decision.html",
            context! { access => access_label(access), version, d => ser(DecisionView::new(&decision)) },
        ),
        None => render(
            StatusCode::NOT_FOUND,
            "not_found.html",
            context! { access => access_label(access), version },
        ),
    }
}

/// A download: `disposition` names the file the browser saves.
fn attachment(content_type: &'static str, disposition: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// `GET /console/export.csv`: every decision that passes the filters (all pages).
async fn export_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if check(&state, &headers).is_none() {
        return to_login();
    }
    let decisions = state.decisions.list().await;
    let filters = Filters::from_query(&query);
    let body = export::csv(&view::filter(&decisions, &filters));
    attachment(
        "text/csv; charset=utf-8",
        "attachment; filename=\"deskhook-decisions.csv\"",
        body,
    )
}

/// `GET /console/export.json`: the same as JSON, with each full report.
async fn export_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if check(&state, &headers).is_none() {
        return to_login();
    }
    let decisions = state.decisions.list().await;
    let filters = Filters::from_query(&query);
    let document = export::json(
        &view::filter(&decisions, &filters),
        &filters.query(),
        &rfc3339::format(SystemTime::now()),
    );
    let body = serde_json::to_string_pretty(&document).unwrap_or_else(|_| "{}".to_owned());
    attachment(
        "application/json; charset=utf-8",
        "attachment; filename=\"deskhook-decisions.json\"",
        body,
    )
}

async fn login_page(State(state): State<AppState>) -> Response {
    let tokens = state.admin_tokens.current();
    if tokens.is_empty() && state.admin.console_open {
        return Redirect::to("/console").into_response();
    }
    login_form(StatusCode::OK, tokens.is_empty(), false, false)
}

fn login_form(status: StatusCode, disabled: bool, failed: bool, limited: bool) -> Response {
    render(
        status,
        "login.html",
        context! {
            access => "denied",
            version => env!("CARGO_PKG_VERSION"),
            disabled,
            failed,
            limited,
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/login`: exchanges the admin token for a session cookie. Attempts are limited
/// ([`LoginLimiter`]): once the minute's allowance of wrong tokens is spent, an attempt is
/// refused without being checked.
async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let tokens = state.admin_tokens.current();
    if tokens.is_empty() {
        return if state.admin.console_open {
            Redirect::to("/console").into_response()
        } else {
            login_form(StatusCode::FORBIDDEN, true, false, false)
        };
    }
    let Some(attempt) = state.admin.logins.attempt() else {
        tracing::warn!("console sign-in refused unchecked: too many attempts this minute");
        state
            .metrics
            .rejections
            .with_label_values(&[Reason::LoginLimited.as_str()])
            .inc();
        let mut response = login_form(StatusCode::TOO_MANY_REQUESTS, false, false, true);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return response;
    };
    match session::matching_token(&tokens, &form.token) {
        Some(token) => {
            attempt.succeeded();
            let cookie = session::set_cookie(&session::session_value(&token, SystemTime::now()));
            let mut response = Redirect::to("/console").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => {
            tracing::warn!("console sign-in refused: wrong admin token");
            state
                .metrics
                .rejections
                .with_label_values(&[Reason::AdminUnauthorized.as_str()])
                .inc();
            login_form(StatusCode::UNAUTHORIZED, false, true, false)
        }
    }
}

/// `POST /console/logout`: ends the session.
async fn logout() -> Response {
    let mut response = Redirect::to("/console/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("templates/style.css"),
    )
        .into_response()
}
