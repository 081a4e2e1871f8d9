//! The console's backtest page: paste an edited `WebhookAutomation` (or only its spec) and
//! read, ticket by ticket, what it would decide differently from the live settings on the
//! retained decisions, before anyone applies it.
//!
//! The POST carries a form token bound to the session ([`session::form_token`]), so another
//! site cannot make a signed-in browser submit it. Nothing is written anywhere: the pasted
//! settings only live for the request.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{AppState, access_label, check, render, ser, session, to_login};
use crate::backtest::{self, Comparison};

/// Largest pasted YAML accepted.
pub const MAX_YAML_BYTES: usize = 256 * 1024;

#[derive(Deserialize)]
pub struct BacktestForm {
    #[serde(default)]
    yaml: String,
    #[serde(default)]
    token: String,
}

/// One line of a reply diff, with its role for the stylesheet.
#[derive(Serialize)]
struct DiffLine {
    class: &'static str,
    text: String,
}

#[derive(Serialize)]
struct ChangeView {
    kind: &'static str,
    before: Option<String>,
    after: Option<String>,
    diff: Vec<DiffLine>,
}

#[derive(Serialize)]
struct TicketView {
    ticket_id: String,
    ticket_number: Option<String>,
    subject: Option<String>,
    decided_at: String,
    changes: Vec<ChangeView>,
}

fn tickets(comparison: &Comparison) -> Vec<TicketView> {
    comparison
        .tickets
        .iter()
        .map(|ticket| TicketView {
            ticket_id: ticket.ticket_id.clone(),
            ticket_number: ticket.ticket_number.clone(),
            subject: ticket.subject.clone(),
            decided_at: ticket.decided_at.clone(),
            changes: ticket
                .changes
                .iter()
                .map(|change| ChangeView {
                    kind: change.kind.as_str(),
                    before: change.before.clone(),
                    after: change.after.clone(),
                    diff: change
                        .diff
                        .as_deref()
                        .unwrap_or("")
                        .lines()
                        .map(|line| DiffLine {
                            class: match line.chars().next() {
                                Some('@') => "hunk",
                                Some('+') if !line.starts_with("+++") => "add",
                                Some('-') if !line.starts_with("---") => "del",
                                _ => "ctx",
                            },
                            text: line.to_owned(),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

/// `GET /console/backtest`: the form, filled with the live settings' spec.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(access) = check(&state, &headers) else {
        return to_login();
    };
    let settings = state.settings.current();
    let yaml = serde_yaml::to_string(&settings.spec).unwrap_or_default();
    render(
        StatusCode::OK,
        "backtest.html",
        context! {
            access => access_label(access),
            version => env!("CARGO_PKG_VERSION"),
            token => session::form_token(&headers),
            generation => settings.generation,
            retained => state.decisions.capacity(),
            yaml,
        },
    )
}

/// `POST /console/backtest`: the pasted settings against the live ones.
pub async fn run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<BacktestForm>,
) -> Response {
    let Some(access) = check(&state, &headers) else {
        return to_login();
    };
    let live = state.settings.current();
    let page = |status: StatusCode, error: Option<String>, result: Option<minijinja::Value>| {
        render(
            status,
            "backtest.html",
            context! {
                access => access_label(access),
                version => env!("CARGO_PKG_VERSION"),
                token => session::form_token(&headers),
                generation => live.generation,
                retained => state.decisions.capacity(),
                yaml => form.yaml.clone(),
                error,
                result,
            },
        )
    };
    if !session::form_token_valid(&headers, &form.token) {
        tracing::warn!("console backtest refused: the form token is missing or stale");
        return page(
            StatusCode::FORBIDDEN,
            Some("This form is stale: reload the page and submit it again.".to_owned()),
            None,
        );
    }
    let edited = match backtest::settings_from_yaml(&form.yaml) {
        Ok(settings) => settings,
        Err(error) => return page(StatusCode::BAD_REQUEST, Some(error.to_string()), None),
    };
    let decisions = state.decisions.list().await;
    let baseline = (*live).clone();
    // Templates are rendered for every retained decision: kept off the async workers.
    let comparison = tokio::task::spawn_blocking(move || {
        backtest::compare(
            decisions.iter().map(|d| d.report.as_ref()),
            &edited,
            Some(&baseline),
        )
    })
    .await
    .unwrap_or_default();
    let by_kind: Vec<(&'static str, usize)> = comparison
        .by_kind
        .iter()
        .map(|(kind, n)| (kind.as_str(), *n))
        .collect();
    let result = context! {
        compared => comparison.compared,
        changed => comparison.changed,
        not_comparable => comparison.not_comparable,
        by_kind => ser(by_kind),
        tickets => ser(tickets(&comparison)),
    };
    page(StatusCode::OK, None, Some(result))
}
