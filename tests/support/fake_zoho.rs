//! An in-process fake of Zoho Accounts, Desk and CRM on `127.0.0.1:0`, following the
//! documented shapes and failure modes closely enough to test the clients over real HTTP.
//!
//! ```ignore
//! let fake = FakeZoho::start().await;
//! fake.add_ticket(json!({"id": "101", "subject": "Refund", "departmentId": "1"}));
//! let clients = fake.clients(&Metrics::new());
//! clients.desk.get_ticket("101").await?;
//! assert!(fake.writes().is_empty());
//! ```
//!
//! What it does like Zoho: form-encoded refresh grants, token throttling as HTTP 200
//! `{"error":"Access Denied"}`, 401 `INVALID_OAUTH` (Desk) and `INVALID_TOKEN` (CRM) for
//! unknown or expired tokens, the `orgId` header, 404 `RESOURCE_NOT_FOUND`, 204 for empty
//! lists and searches, per-record errors inside a 200 CRM write, and 429
//! `TOO_MANY_REQUESTS` without `Retry-After` beyond a concurrency limit.
//!
//! Simplifications: CRM `equals` is a case-insensitive exact match (v8 treats it like
//! "contains"); threads are stored oldest first and listed newest first by default.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use deskhook::config::Secret;
use deskhook::metrics::Metrics;
use deskhook::zoho::{ClientOptions, OAuthCredentials, RetryPolicy, ZohoClients, ZohoEndpoints};
use serde_json::{Value, json};

/// The Desk organization the fake serves; other `orgId`s are refused.
pub const ORG_ID: &str = "20090000001";
pub const CLIENT_ID: &str = "1000.FAKECLIENTID";
pub const CLIENT_SECRET: &str = "fake-client-secret";
pub const REFRESH_TOKEN: &str = "1000.fake-refresh-token";

/// The deal of [`FakeZoho::seed_reference_portal`].
pub const REFERENCE_DEAL: &str = "4150868000001234567";
/// The contact of [`FakeZoho::seed_reference_portal`].
pub const REFERENCE_CONTACT: &str = "4150868000000000001";

/// Largest page Desk serves for threads and departments, and CRM for searches.
const MAX_PAGE: usize = 200;

/// A failure to answer with instead of the real thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 `TOO_MANY_REQUESTS` without `Retry-After`, as for Zoho's concurrency limit.
    TooManyRequests,
    /// 429 `THRESHOLD_EXCEEDED` with `Retry-After: <seconds>`, as when daily credits are gone.
    RetryAfter(u64),
    /// 500, after which nothing is known of the call's effect.
    ServerError,
    /// The call takes effect, then 500: the client cannot tell it from a call that did
    /// nothing, as when an answer is lost to a timeout or to the caller's death.
    ServerErrorAfterEffect,
}

/// How the token endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAnswer {
    /// A fresh access token.
    Issue,
    /// HTTP 200 `{"error":"Access Denied"}`: the refresh token is throttled.
    AccessDenied,
    /// HTTP 200 `{"error":"invalid_code"}`: the refresh token was revoked.
    InvalidCode,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// The operation (`get_ticket`, `send_reply`, `refresh_token`, …), `unknown` otherwise.
    pub op: &'static str,
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub org_id: Option<String>,
    pub source_id: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The body when it was JSON.
    pub body: Option<Value>,
    /// The body's fields when it was a form.
    pub form: Vec<(String, String)>,
    /// The status answered (0 while the call is still running).
    pub status: u16,
}

impl RecordedCall {
    pub fn query_value(&self, key: &str) -> Option<&str> {
        pairs_value(&self.query, key)
    }

    pub fn form_value(&self, key: &str) -> Option<&str> {
        pairs_value(&self.form, key)
    }
}

fn pairs_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A running fake; the server stops when it is dropped.
pub struct FakeZoho {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeZoho {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Shared {
    state: Mutex<FakeState>,
    /// Calls in progress, per product: Zoho limits Desk and CRM concurrency separately.
    in_flight: [AtomicUsize; 2],
    max_in_flight: AtomicUsize,
}

struct FakeState {
    base_url: String,
    tickets: HashMap<String, Value>,
    threads: HashMap<String, Vec<Value>>,
    comments: HashMap<String, Vec<Value>>,
    departments: Vec<Value>,
    deals: Vec<Value>,
    contacts: Vec<Value>,
    notes: HashMap<String, Vec<Value>>,
    valid_tokens: HashSet<String>,
    issued: usize,
    next_id: u64,
    token_answer: TokenAnswer,
    token_lifetime: u64,
    faults: HashMap<String, VecDeque<Fault>>,
    latency: Duration,
    token_latency: Duration,
    concurrency_limit: Option<usize>,
    deal_update_errors: HashMap<String, String>,
    calls: Vec<RecordedCall>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FakeZoho {
    /// Starts the fake on an ephemeral port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState {
                base_url: url.clone(),
                tickets: HashMap::new(),
                threads: HashMap::new(),
                comments: HashMap::new(),
                departments: Vec::new(),
                deals: Vec::new(),
                contacts: Vec::new(),
                notes: HashMap::new(),
                valid_tokens: HashSet::new(),
                issued: 0,
                next_id: 1_892_000_000_100_000,
                token_answer: TokenAnswer::Issue,
                token_lifetime: 3600,
                faults: HashMap::new(),
                latency: Duration::ZERO,
                token_latency: Duration::ZERO,
                concurrency_limit: None,
                deal_update_errors: HashMap::new(),
                calls: Vec::new(),
            }),
            in_flight: [AtomicUsize::new(0), AtomicUsize::new(0)],
            max_in_flight: AtomicUsize::new(0),
        });
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            shared,
            server,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Accounts, Desk and CRM all at the fake; the CRM base comes from the token answer.
    pub fn endpoints(&self) -> ZohoEndpoints {
        ZohoEndpoints::all_at(&self.url)
    }

    /// The credentials the fake accepts.
    pub fn credentials() -> OAuthCredentials {
        OAuthCredentials::new(
            CLIENT_ID,
            Secret::new(CLIENT_SECRET),
            Secret::new(REFRESH_TOKEN),
        )
    }

    /// Options with short retry delays, so tests that go through retries stay fast.
    pub fn fast_options() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
                max_retry_after: Duration::from_secs(2),
            },
            ..ClientOptions::default()
        }
    }

    /// Clients talking to the fake with [`FakeZoho::fast_options`].
    pub fn clients(&self, metrics: &Metrics) -> ZohoClients {
        self.clients_with(Self::fast_options(), metrics)
    }

    pub fn clients_with(&self, options: ClientOptions, metrics: &Metrics) -> ZohoClients {
        let http = deskhook::server::http_client().expect("an HTTP client");
        ZohoClients::new(
            http,
            self.endpoints(),
            Self::credentials(),
            ORG_ID,
            options,
            metrics,
        )
        .expect("Zoho clients")
    }

    // Seed data.

    /// The reference portal: departments Contact (1), DOC (2), FACTURATION (3) and Refus CMA
    /// (4), and a candidate of the 20 € offer whose documents the CMA refused: the contact
    /// `zoe.martin@example.fr` and her deal [`REFERENCE_DEAL`] (GAGNÉ, 20, Evalbox "Refusé CMA").
    pub fn seed_reference_portal(&self) {
        for (id, name) in [
            ("1", "Contact"),
            ("2", "DOC"),
            ("3", "FACTURATION"),
            ("4", "Refus CMA"),
        ] {
            self.add_department(id, name);
        }
        self.add_contact(
            json!({"id": REFERENCE_CONTACT, "Email": "zoe.martin@example.fr", "First_Name": "Zoé"}),
        );
        self.add_deal(json!({
            "id": REFERENCE_DEAL,
            "Deal_Name": "Zoé Martin - Uber 20€",
            "Stage": "GAGNÉ",
            "Amount": 20,
            "Evalbox": "Refusé CMA",
            "Closing_Date": "2026-10-01",
            "Contact_Name": {"id": REFERENCE_CONTACT, "name": "Zoé Martin"}
        }));
    }

    /// Adds a Desk ticket; `json` needs an `id` (string or number).
    pub fn add_ticket(&self, ticket: Value) {
        let id = id_of(&ticket).expect("a ticket needs an id");
        self.shared.lock().tickets.insert(id, ticket);
    }

    /// Adds a thread to a ticket; threads are kept oldest first.
    pub fn add_thread(&self, ticket_id: &str, thread: Value) {
        self.shared
            .lock()
            .threads
            .entry(ticket_id.to_owned())
            .or_default()
            .push(thread);
    }

    pub fn add_department(&self, id: &str, name: &str) {
        self.shared
            .lock()
            .departments
            .push(json!({"id": id, "name": name, "isEnabled": true}));
    }

    /// Adds a raw department record (ids as numbers, disabled departments).
    pub fn add_department_json(&self, department: Value) {
        self.shared.lock().departments.push(department);
    }

    /// Adds a CRM deal; `json` needs an `id`.
    pub fn add_deal(&self, deal: Value) {
        id_of(&deal).expect("a deal needs an id");
        self.shared.lock().deals.push(deal);
    }

    /// Adds a CRM contact; `json` needs an `id`.
    pub fn add_contact(&self, contact: Value) {
        id_of(&contact).expect("a contact needs an id");
        self.shared.lock().contacts.push(contact);
    }

    // Faults.

    /// The next `times` calls of `op` answer with `fault` instead.
    pub fn fail_next(&self, op: &str, times: usize, fault: Fault) {
        self.shared
            .lock()
            .faults
            .entry(op.to_owned())
            .or_default()
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Every Desk and CRM call waits this long before it is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Every token request waits this long before it is answered.
    pub fn set_token_latency(&self, latency: Duration) {
        self.shared.lock().token_latency = latency;
    }

    /// Desk calls beyond `limit` at once, or CRM calls beyond `limit` at once, answer 429
    /// `TOO_MANY_REQUESTS`: each product has its own concurrency limit.
    pub fn limit_concurrency(&self, limit: usize) {
        self.shared.lock().concurrency_limit = Some(limit);
    }

    /// Forgets every issued access token: the next API call answers 401.
    pub fn expire_tokens(&self) {
        self.shared.lock().valid_tokens.clear();
    }

    pub fn answer_token_requests_with(&self, answer: TokenAnswer) {
        self.shared.lock().token_answer = answer;
    }

    /// `expires_in` of the tokens issued from now on.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.shared.lock().token_lifetime = seconds;
    }

    /// `PUT /Deals/{deal_id}` answers HTTP 200 with a per-record `code` error.
    pub fn reject_deal_update(&self, deal_id: &str, code: &str) {
        self.shared
            .lock()
            .deal_update_errors
            .insert(deal_id.to_owned(), code.to_owned());
    }

    // What happened.

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.lock().calls.clone()
    }

    /// Every call of one operation.
    pub fn calls_to(&self, op: &str) -> Vec<RecordedCall> {
        self.calls().into_iter().filter(|c| c.op == op).collect()
    }

    /// Every call that could change data: not a GET and not a token request.
    pub fn writes(&self) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method != Method::GET && c.op != "refresh_token")
            .collect()
    }

    /// Requests to the token endpoint, whatever their answer.
    pub fn token_refreshes(&self) -> usize {
        self.calls_to("refresh_token").len()
    }

    /// The most calls to one product (Desk or CRM) in progress at the same time.
    pub fn max_concurrency_seen(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn forget_calls(&self) {
        self.shared.lock().calls.clear();
    }

    pub fn ticket(&self, id: &str) -> Option<Value> {
        self.shared.lock().tickets.get(id).cloned()
    }

    pub fn threads(&self, ticket_id: &str) -> Vec<Value> {
        self.shared
            .lock()
            .threads
            .get(ticket_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn comments(&self, ticket_id: &str) -> Vec<Value> {
        self.shared
            .lock()
            .comments
            .get(ticket_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn deal(&self, id: &str) -> Option<Value> {
        let state = self.shared.lock();
        state
            .deals
            .iter()
            .find(|d| id_of(d).as_deref() == Some(id))
            .cloned()
    }

    pub fn notes(&self, deal_id: &str) -> Vec<Value> {
        self.shared
            .lock()
            .notes
            .get(deal_id)
            .cloned()
            .unwrap_or_default()
    }
}

fn id_of(record: &Value) -> Option<String> {
    match record.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/v2/token", post(token))
        .route("/api/v1/tickets", get(list_tickets))
        .route("/api/v1/tickets/{id}", get(get_ticket).patch(update_ticket))
        .route("/api/v1/tickets/{id}/threads", get(list_threads))
        .route("/api/v1/tickets/{id}/move", post(move_ticket))
        .route("/api/v1/tickets/{id}/sendReply", post(send_reply))
        .route("/api/v1/tickets/{id}/draftReply", post(create_draft))
        .route("/api/v1/tickets/{id}/comments", post(add_comment))
        .route("/api/v1/departments", get(list_departments))
        .route("/crm/v8/Deals/search", get(search_deals))
        .route("/crm/v8/Contacts/search", get(search_contacts))
        .route("/crm/v8/Deals/{id}", get(get_deal).put(update_deal))
        .route("/crm/v8/Deals/{id}/Notes", post(add_note))
        .fallback(|| async {
            desk_error(
                StatusCode::NOT_FOUND,
                "URL_NOT_FOUND",
                "The URL you have requested is not found.",
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ApiKind {
    Accounts,
    Desk,
    Crm,
    Other,
}

fn api_of(path: &str) -> ApiKind {
    if path.starts_with("/oauth/") {
        ApiKind::Accounts
    } else if path.starts_with("/api/v1/") {
        ApiKind::Desk
    } else if path.starts_with("/crm/v8/") {
        ApiKind::Crm
    } else {
        ApiKind::Other
    }
}

/// The operation a request is, named like the clients' operations.
fn operation(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["oauth", "v2", "token"]) => "refresh_token",
        ("GET", ["api", "v1", "tickets"]) => "list_tickets",
        ("GET", ["api", "v1", "tickets", _]) => "get_ticket",
        ("PATCH", ["api", "v1", "tickets", _]) => "update_ticket",
        ("GET", ["api", "v1", "tickets", _, "threads"]) => "list_threads",
        ("POST", ["api", "v1", "tickets", _, "move"]) => "move_ticket",
        ("POST", ["api", "v1", "tickets", _, "sendReply"]) => "send_reply",
        ("POST", ["api", "v1", "tickets", _, "draftReply"]) => "create_draft",
        ("POST", ["api", "v1", "tickets", _, "comments"]) => "add_comment",
        ("GET", ["api", "v1", "departments"]) => "list_departments",
        ("GET", ["crm", "v8", "Deals", "search"]) => "search_deals",
        ("GET", ["crm", "v8", "Contacts", "search"]) => "search_contacts",
        ("GET", ["crm", "v8", "Deals", _]) => "get_deal",
        ("PUT", ["crm", "v8", "Deals", _]) => "update_deal",
        ("POST", ["crm", "v8", "Deals", _, "Notes"]) => "add_note",
        _ => "unknown",
    }
}

/// Counts a call in progress to one product until dropped.
struct InFlight(Arc<Shared>, usize);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight[self.1].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Records every call, then applies the concurrency limit, latency, injected faults and
/// authentication before the handler runs.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let api = api_of(&path);
    let op = operation(&parts.method, &path);
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let form = if content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    {
        parse_pairs(&String::from_utf8_lossy(&bytes))
    } else {
        Vec::new()
    };
    let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let index = {
        let mut state = shared.lock();
        state.calls.push(RecordedCall {
            op,
            method: parts.method.clone(),
            path: path.clone(),
            query,
            org_id: header("orgId"),
            source_id: header("sourceId"),
            authorization: header("authorization"),
            content_type,
            body: serde_json::from_slice(&bytes).ok(),
            form,
            status: 0,
        });
        state.calls.len() - 1
    };

    let product = match api {
        ApiKind::Desk => Some(0),
        ApiKind::Crm => Some(1),
        _ => None,
    };
    let in_flight = product.map(|product| {
        let now = shared.in_flight[product].fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        (now, InFlight(shared.clone(), product))
    });
    let (limit, latency, fault) = {
        let mut state = shared.lock();
        let latency = if api == ApiKind::Accounts {
            state.token_latency
        } else {
            state.latency
        };
        let fault = state.faults.get_mut(op).and_then(VecDeque::pop_front);
        (state.concurrency_limit, latency, fault)
    };
    let over_limit = in_flight
        .as_ref()
        .is_some_and(|(now, _)| limit.is_some_and(|limit| *now > limit));
    let response = if over_limit {
        fault_response(api, Fault::TooManyRequests)
    } else {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Some(Fault::ServerErrorAfterEffect) => {
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
                fault_response(api, Fault::ServerError)
            }
            Some(fault) => fault_response(api, fault),
            None => match refusal(&shared, api, &parts.headers) {
                Some(refusal) => refusal,
                None => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
            },
        }
    };
    if let Some(call) = shared.lock().calls.get_mut(index) {
        call.status = response.status().as_u16();
    }
    response
}

fn parse_pairs(text: &str) -> Vec<(String, String)> {
    Uri::try_from(format!("/?{text}"))
        .ok()
        .and_then(|uri| Query::<Vec<(String, String)>>::try_from_uri(&uri).ok())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Why a call is refused before its handler runs, if it is: Desk needs a known token and
/// the right `orgId`, CRM a known token.
fn refusal(shared: &Shared, api: ApiKind, headers: &HeaderMap) -> Option<Response> {
    if !matches!(api, ApiKind::Desk | ApiKind::Crm) {
        return None;
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Zoho-oauthtoken "));
    let known = token.is_some_and(|t| shared.lock().valid_tokens.contains(t));
    if !known {
        return Some(match api {
            ApiKind::Crm => crm_error(
                StatusCode::UNAUTHORIZED,
                "INVALID_TOKEN",
                "invalid oauth token",
            ),
            _ => desk_error(
                StatusCode::UNAUTHORIZED,
                "INVALID_OAUTH",
                "The OAuth Token you provided is invalid.",
            ),
        });
    }
    if api == ApiKind::Desk {
        let org_id = headers.get("orgId").and_then(|v| v.to_str().ok());
        if org_id != Some(ORG_ID) {
            return Some(desk_error(
                StatusCode::UNAUTHORIZED,
                "OAUTH_ORG_MISMATCH",
                "The OAuth token does not belong to this organization.",
            ));
        }
    }
    None
}

fn fault_response(api: ApiKind, fault: Fault) -> Response {
    let crm = api == ApiKind::Crm;
    match fault {
        Fault::TooManyRequests if crm => crm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "too many requests",
        ),
        Fault::TooManyRequests => desk_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "You have exceeded the concurrency limit.",
        ),
        Fault::RetryAfter(seconds) => {
            let mut response = desk_error(
                StatusCode::TOO_MANY_REQUESTS,
                "THRESHOLD_EXCEEDED",
                "API credits exhausted.",
            );
            response.headers_mut().insert(
                "retry-after",
                seconds
                    .to_string()
                    .parse()
                    .expect("a number is a header value"),
            );
            response
        }
        Fault::ServerError | Fault::ServerErrorAfterEffect if crm => crm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error",
        ),
        Fault::ServerError | Fault::ServerErrorAfterEffect => desk_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "An internal server error occurred.",
        ),
    }
}

fn desk_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errorCode": code, "message": message})),
    )
        .into_response()
}

fn desk_invalid(field: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({
            "errorCode": "INVALID_DATA",
            "message": "An invalid value has been passed in one of the fields.",
            "errors": [{"fieldName": field, "errorMessage": "invalid value"}]
        })),
    )
        .into_response()
}

fn crm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "details": {}, "message": message, "status": "error"})),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn ticket_not_found() -> Response {
    desk_error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "The requested resource does not exist.",
    )
}

// Accounts.

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form {
        parse_pairs(&String::from_utf8_lossy(&body))
    } else {
        Vec::new()
    };
    let field = |key: &str| pairs_value(&form, key);
    if field("grant_type") != Some("refresh_token")
        || field("client_id") != Some(CLIENT_ID)
        || field("client_secret") != Some(CLIENT_SECRET)
    {
        return ok(json!({"error": "invalid_client"}));
    }
    if field("refresh_token") != Some(REFRESH_TOKEN) {
        return ok(json!({"error": "invalid_code"}));
    }
    let mut state = shared.lock();
    match state.token_answer {
        TokenAnswer::AccessDenied => ok(json!({
            "error_description": "You have made too many requests continuously. Please try again after some time.",
            "error": "Access Denied",
            "status": "failure"
        })),
        TokenAnswer::InvalidCode => ok(json!({"error": "invalid_code"})),
        TokenAnswer::Issue => {
            state.issued += 1;
            let token = format!("1000.fake-access-{}", state.issued);
            state.valid_tokens.insert(token.clone());
            ok(json!({
                "access_token": token,
                "scope": "Desk.tickets.ALL,ZohoCRM.modules.ALL",
                "api_domain": state.base_url,
                "token_type": "Bearer",
                "expires_in": state.token_lifetime
            }))
        }
    }
}

// Desk.

async fn get_ticket(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.lock().tickets.get(&id) {
        Some(ticket) => ok(ticket.clone()),
        None => ticket_not_found(),
    }
}

async fn update_ticket(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return desk_invalid("body");
    };
    let mut state = shared.lock();
    let Some(Value::Object(ticket)) = state.tickets.get_mut(&id) else {
        return ticket_not_found();
    };
    for (key, value) in patch {
        ticket.insert(key, value);
    }
    ok(Value::Object(ticket.clone()))
}

/// `from` and `limit` of a Desk list, or the name of the bad one (Desk answers 422).
fn desk_window(query: &[(String, String)]) -> Result<(usize, usize), &'static str> {
    let number = |key: &'static str, default: usize| match pairs_value(query, key) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| key),
    };
    let from = number("from", 0)?;
    let limit = number("limit", 50)?;
    if limit == 0 || limit > MAX_PAGE {
        return Err("limit");
    }
    Ok((from, limit))
}

fn desk_page(items: Vec<Value>, from: usize, limit: usize) -> Response {
    let page: Vec<Value> = items.into_iter().skip(from).take(limit).collect();
    if page.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ok(json!({ "data": page }))
    }
}

async fn list_threads(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let (from, limit) = match desk_window(&query) {
        Ok(window) => window,
        Err(field) => return desk_invalid(field),
    };
    let state = shared.lock();
    if !state.tickets.contains_key(&id) {
        return ticket_not_found();
    }
    let mut threads = state.threads.get(&id).cloned().unwrap_or_default();
    if pairs_value(&query, "sortBy") != Some("sendDateTime") {
        threads.reverse();
    }
    desk_page(threads, from, limit)
}

async fn list_departments(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let (from, limit) = match desk_window(&query) {
        Ok(window) => window,
        Err(field) => return desk_invalid(field),
    };
    let departments = shared.lock().departments.clone();
    desk_page(departments, from, limit)
}

/// `GET /api/v1/tickets?departmentId=…&sortBy=-modifiedTime`: a department's tickets, most
/// recently modified first (`modifiedTime` compared as text: ISO-8601 in one format sorts).
async fn list_tickets(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let (from, limit) = match desk_window(&query) {
        Ok(window) => window,
        Err(field) => return desk_invalid(field),
    };
    let department = pairs_value(&query, "departmentId").map(str::to_owned);
    let mut tickets: Vec<Value> = shared
        .lock()
        .tickets
        .values()
        .filter(|t| {
            let of = match t.get("departmentId") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            department.is_none() || of == department
        })
        .cloned()
        .collect();
    let modified = |t: &Value| t["modifiedTime"].as_str().unwrap_or_default().to_owned();
    tickets.sort_by_key(|t| std::cmp::Reverse(modified(t)));
    desk_page(tickets, from, limit)
}

async fn move_ticket(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Some(department_id) = pairs_value(&query, "departmentId").map(str::to_owned) else {
        return desk_invalid("departmentId");
    };
    let mut state = shared.lock();
    let known = state
        .departments
        .iter()
        .any(|d| id_of(d).as_deref() == Some(department_id.as_str()));
    if !known {
        return desk_invalid("departmentId");
    }
    match state.tickets.get_mut(&id) {
        Some(Value::Object(ticket)) => {
            ticket.insert("departmentId".into(), Value::String(department_id));
            StatusCode::OK.into_response()
        }
        _ => ticket_not_found(),
    }
}

fn new_id(state: &mut FakeState) -> String {
    state.next_id += 1;
    state.next_id.to_string()
}

async fn send_reply(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    reply(&shared, &id, &body, "SUCCESS")
}

async fn create_draft(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    reply(&shared, &id, &body, "DRAFT")
}

fn reply(shared: &Shared, ticket_id: &str, body: &[u8], status: &str) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return desk_invalid("body");
    };
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    if text("channel").as_deref() != Some("EMAIL") {
        return desk_invalid("channel");
    }
    for required in ["fromEmailAddress", "to", "content"] {
        if text(required).is_none_or(|v| v.is_empty()) {
            return desk_invalid(required);
        }
    }
    let mut state = shared.lock();
    if !state.tickets.contains_key(ticket_id) {
        return ticket_not_found();
    }
    let content = text("content").unwrap_or_default();
    let thread = json!({
        "id": new_id(&mut state),
        "direction": "out",
        "channel": "EMAIL",
        "status": status,
        "fromEmailAddress": text("fromEmailAddress"),
        "to": text("to"),
        "summary": content.chars().take(100).collect::<String>(),
        "content": content,
        "contentType": if text("contentType").as_deref() == Some("html") { "text/html" } else { "text/plain" },
        "createdTime": "2025-01-01T00:00:00.000Z",
        "author": {"name": "deskhook", "type": "AGENT"}
    });
    state
        .threads
        .entry(ticket_id.to_owned())
        .or_default()
        .push(thread.clone());
    ok(thread)
}

async fn add_comment(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return desk_invalid("body");
    };
    let Some(content) = body
        .get("content")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return desk_invalid("content");
    };
    let mut state = shared.lock();
    if !state.tickets.contains_key(&id) {
        return ticket_not_found();
    }
    let comment = json!({
        "id": new_id(&mut state),
        "isPublic": body.get("isPublic").and_then(Value::as_bool).unwrap_or(false),
        "contentType": body.get("contentType").cloned().unwrap_or(json!("plainText")),
        "content": content,
        "commentedTime": "2025-01-01T00:00:00.000Z"
    });
    state.comments.entry(id).or_default().push(comment.clone());
    ok(comment)
}

// CRM.

async fn search_deals(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let deals = shared.lock().deals.clone();
    search(deals, &query)
}

async fn search_contacts(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let contacts = shared.lock().contacts.clone();
    search(contacts, &query)
}

/// A CRM search: exactly one of `criteria`, `email`, `phone`; 204 when nothing matches.
fn search(records: Vec<Value>, query: &[(String, String)]) -> Response {
    let given: Vec<&str> = ["criteria", "email", "phone", "word"]
        .into_iter()
        .filter(|key| pairs_value(query, key).is_some())
        .collect();
    if given.len() != 1 {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "one of criteria, email, phone or word is required",
        );
    }
    let value = pairs_value(query, given[0]).unwrap_or_default();
    let matches: Box<dyn Fn(&Value) -> bool> = match given[0] {
        "criteria" => match parse_criteria(value) {
            Some(criteria) => Box::new(move |record| criteria.matches(record)),
            None => {
                return crm_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_QUERY",
                    "invalid query formed",
                );
            }
        },
        "email" => {
            let wanted = value.to_lowercase();
            Box::new(move |record| {
                fields_like(record, &["mail"]).any(|v| v.to_lowercase() == wanted)
            })
        }
        "phone" => {
            let wanted = digits(value);
            Box::new(move |record| {
                !wanted.is_empty()
                    && fields_like(record, &["phone", "mobile"]).any(|v| digits(&v) == wanted)
            })
        }
        _ => {
            let wanted = value.to_lowercase();
            Box::new(move |record| record.to_string().to_lowercase().contains(&wanted))
        }
    };
    let number = |key: &str, default: usize| {
        pairs_value(query, key).map_or(Some(default), |v| v.parse::<usize>().ok())
    };
    let (Some(page), Some(per_page)) = (number("page", 1), number("per_page", MAX_PAGE)) else {
        return crm_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data");
    };
    if page == 0 || per_page == 0 || per_page > MAX_PAGE {
        return crm_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data");
    }
    let found: Vec<Value> = records.into_iter().filter(|r| matches(r)).collect();
    let total = found.len();
    let data: Vec<Value> = found
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    if data.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let count = data.len();
    ok(json!({
        "data": data,
        "info": {
            "page": page,
            "per_page": per_page,
            "count": count,
            "more_records": page * per_page < total
        }
    }))
}

fn fields_like<'a>(record: &'a Value, parts: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    record
        .as_object()
        .into_iter()
        .flat_map(|fields| fields.iter())
        .filter(move |(key, _)| {
            let key = key.to_lowercase();
            parts.iter().any(|p| key.contains(p))
        })
        .filter_map(|(_, value)| field_text(value))
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// A field as text; a lookup (`{"id", "name"}`) is its id.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(lookup) => lookup.get("id").and_then(field_text),
        _ => None,
    }
}

/// A parsed `criteria` parameter.
struct ParsedCriteria {
    any: bool,
    conditions: Vec<(String, String, Vec<String>)>,
}

impl ParsedCriteria {
    fn matches(&self, record: &Value) -> bool {
        let check = |(field, operator, values): &(String, String, Vec<String>)| {
            let Some(actual) = record.get(field).and_then(field_text) else {
                return false;
            };
            let actual = actual.to_lowercase();
            let first = values.first().map(|v| v.to_lowercase()).unwrap_or_default();
            match operator.as_str() {
                "equals" => actual == first,
                "not_equal" => actual != first,
                "starts_with" => actual.starts_with(&first),
                "in" => values.iter().any(|v| v.to_lowercase() == actual),
                _ => false,
            }
        };
        if self.any {
            self.conditions.iter().any(check)
        } else {
            self.conditions.iter().all(check)
        }
    }
}

/// Reads `(F:op:v)` or `((F:op:v)and(G:op:w))`, honouring backslash escapes in values.
fn parse_criteria(text: &str) -> Option<ParsedCriteria> {
    let chars: Vec<char> = text.chars().collect();
    let mut conditions = Vec::new();
    let mut joins = Vec::new();
    let mut i = 0;
    let grouped = chars.starts_with(&['(', '(']);
    let end = if grouped {
        if chars.last() != Some(&')') {
            return None;
        }
        i = 1;
        chars.len() - 1
    } else {
        chars.len()
    };
    while i < end {
        if chars[i] != '(' {
            let rest: String = chars[i..end].iter().collect();
            let join = ["and", "or"].into_iter().find(|j| rest.starts_with(j))?;
            joins.push(join);
            i += join.len();
            continue;
        }
        i += 1;
        let mut raw = Vec::new();
        loop {
            let c = *chars.get(i)?;
            i += 1;
            match c {
                '\\' => {
                    raw.push((*chars.get(i)?, true));
                    i += 1;
                }
                ')' => break,
                '(' => return None,
                c => raw.push((c, false)),
            }
        }
        conditions.push(split_condition(&raw)?);
    }
    if conditions.is_empty() || (!grouped && conditions.len() > 1) {
        return None;
    }
    Some(ParsedCriteria {
        any: joins.contains(&"or"),
        conditions,
    })
}

/// `Field:operator:value[,value…]` with escaped characters flagged.
fn split_condition(raw: &[(char, bool)]) -> Option<(String, String, Vec<String>)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut values = Vec::new();
    for &(c, escaped) in raw {
        if !escaped && c == ':' && parts.len() < 2 {
            parts.push(std::mem::take(&mut current));
        } else if !escaped && c == ',' && parts.len() == 2 {
            values.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    values.push(current);
    let [field, operator]: [String; 2] = parts.try_into().ok()?;
    Some((field, operator, values))
}

async fn get_deal(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = shared.lock();
    match state
        .deals
        .iter()
        .find(|d| id_of(d).as_deref() == Some(id.as_str()))
    {
        Some(deal) => ok(json!({ "data": [deal] })),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

fn record_error(code: &str, field: Option<&str>) -> Value {
    let details = field.map_or_else(|| json!({}), |f| json!({"api_name": f}));
    json!({"code": code, "details": details, "message": "invalid data", "status": "error"})
}

async fn update_deal(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let record = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("data")?.get(0).cloned());
    let Some(Value::Object(fields)) = record else {
        return crm_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data");
    };
    let mut state = shared.lock();
    if let Some(code) = state.deal_update_errors.get(&id).cloned() {
        let field = fields.keys().next().cloned();
        return ok(json!({ "data": [record_error(&code, field.as_deref())] }));
    }
    let Some(Value::Object(deal)) = state
        .deals
        .iter_mut()
        .find(|d| id_of(d).as_deref() == Some(id.as_str()))
    else {
        return ok(json!({ "data": [record_error("INVALID_DATA", Some("id"))] }));
    };
    for (key, value) in fields {
        deal.insert(key, value);
    }
    ok(json!({ "data": [{
        "code": "SUCCESS",
        "details": {"Modified_Time": "2025-01-01T00:00:00+00:00", "id": id},
        "message": "record updated",
        "status": "success"
    }] }))
}

async fn add_note(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let note = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("data")?.get(0).cloned());
    let Some(Value::Object(mut note)) = note else {
        return crm_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data");
    };
    if note.get("Note_Content").and_then(Value::as_str).is_none() {
        return ok(json!({ "data": [record_error("MANDATORY_NOT_FOUND", Some("Note_Content"))] }));
    }
    let mut state = shared.lock();
    let known = state
        .deals
        .iter()
        .any(|d| id_of(d).as_deref() == Some(id.as_str()));
    if !known {
        return ok(json!({ "data": [record_error("INVALID_DATA", Some("Parent_Id"))] }));
    }
    let note_id = new_id(&mut state);
    note.insert("id".into(), Value::String(note_id.clone()));
    state.notes.entry(id).or_default().push(Value::Object(note));
    (
        StatusCode::CREATED,
        axum::Json(json!({ "data": [{
            "code": "SUCCESS",
            "details": {"id": note_id, "Created_Time": "2025-01-01T00:00:00+00:00"},
            "message": "record added",
            "status": "success"
        }] })),
    )
        .into_response()
}
