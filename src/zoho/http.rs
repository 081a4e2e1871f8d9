//! The request machinery shared by the Desk and CRM clients: authentication, headers,
//! timeouts, retries, concurrency and metrics. The clients only build requests and read
//! answers.
//!
//! Retry rules, because a repeated write can reply to a customer twice:
//! - 429 is retried for every method: Zoho refused the call before doing anything. A
//!   `Retry-After` (sent only when the daily credits are gone) is honoured when short, else
//!   the call fails at once and the job is retried later.
//! - 5xx, timeouts and dropped connections are retried for GET, PUT and PATCH only. A POST
//!   may have been carried out, so it is retried only when the connection failed before the
//!   request was sent.
//! - A 401 that says the token expired causes one token refresh and one more try.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::endpoints::ZohoEndpoints;
use super::error::{Api, Call, ErrorBody, ZohoError};
use super::metrics::ZohoMetrics;
use super::token::{AccessToken, TokenSource};
use crate::outbound::{ReadError, read_capped};

/// How a call is retried within itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles for each further one.
    pub base_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
    /// Longest `Retry-After` waited within a call; a longer one fails the call at once.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (from 1), with "equal jitter": half
    /// fixed, half scaled by `jitter` in `[0, 1]`, so many callers hit by the same 429 do
    /// not come back in step.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        let delay = self
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        delay / 2 + (delay / 2).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A number in `[0, 1)` that differs between calls. Randomly keyed hashers are enough for
/// spreading retries; nothing here needs a cryptographic generator.
fn jitter() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One call to make.
#[derive(Debug)]
pub(crate) struct Request {
    pub call: Call,
    pub method: Method,
    /// The path below the API's base (`/tickets/1`), ids already checked.
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Request {
    pub fn new(call: Call, method: Method, path: String) -> Self {
        Self {
            call,
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn idempotent(&self) -> bool {
        self.method != Method::POST
    }
}

/// A successful answer's JSON, `None` when empty (HTTP 204 included).
#[derive(Debug)]
pub(crate) struct Answer {
    pub body: Option<Value>,
}

impl Answer {
    /// The body as `T`, or `None` when there was none.
    pub fn parse<T: DeserializeOwned>(self, call: Call) -> Result<Option<T>, ZohoError> {
        self.body
            .map(|body| serde_json::from_value(body).map_err(|e| ZohoError::decode(call, &e)))
            .transpose()
    }
}

/// What came back from one attempt.
struct Raw {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
    /// The answer passed [`MAX_ANSWER_BYTES`] and was not read whole.
    too_large: bool,
}

/// Largest Zoho answer read: a page of 100 records with every field is well under a megabyte.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The shared machinery behind both clients.
pub(crate) struct Core {
    pub http: reqwest::Client,
    pub endpoints: ZohoEndpoints,
    pub tokens: TokenSource,
    pub org_id: String,
    pub source_id: Option<String>,
    /// Zoho limits simultaneous calls per portal (10 on the smallest paid Desk edition) and
    /// answers 429 beyond; staying below keeps the other integrations of the portal working.
    pub desk_slots: Semaphore,
    pub crm_slots: Semaphore,
    /// The same limit counted across every process, when one is shared.
    pub shared_slots: Option<std::sync::Arc<dyn super::slots::SharedSlots>>,
    pub max_concurrency: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub metrics: ZohoMetrics,
}

impl Core {
    /// Sends `request` with retries, in a span named after the call.
    pub async fn send(&self, request: Request) -> Result<Answer, ZohoError> {
        let span = tracing::info_span!(
            "zoho_call",
            api = request.call.api.as_str(),
            op = request.call.op
        );
        self.send_with_retries(&request).instrument(span).await
    }

    async fn send_with_retries(&self, request: &Request) -> Result<Answer, ZohoError> {
        let call = request.call;
        let mut attempt = 1;
        let mut refreshed = false;
        loop {
            let token = self.tokens.access_token().await?;
            let failure = match self.attempt(request, &token).await {
                Ok(raw) if raw.status.is_success() => return answer(call, raw),
                Ok(raw) => raw,
                Err(error) => {
                    let unsent = error.is_connect();
                    if (unsent || request.idempotent()) && attempt < self.retry.max_attempts {
                        let wait = self.retry.backoff(attempt, jitter());
                        tracing::warn!(
                            attempt,
                            timeout = error.is_timeout(),
                            wait_ms = wait.as_millis() as u64,
                            "Zoho call failed without an answer; retrying"
                        );
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(transport_error(call, error));
                }
            };
            let status = failure.status;
            let body = ErrorBody::parse(&failure.body);
            if status == StatusCode::UNAUTHORIZED && !refreshed && body.is_stale_token() {
                // Zoho refused the token before doing anything: refresh once, try once more.
                tracing::info!("Zoho refused the access token; refreshing it once");
                refreshed = true;
                self.tokens.invalidate(&token).await;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = match failure.retry_after {
                    Some(wait) if wait > self.retry.max_retry_after => None,
                    Some(wait) => Some(wait),
                    None => Some(self.retry.backoff(attempt, jitter())),
                };
                match wait {
                    Some(wait) if attempt < self.retry.max_attempts => {
                        tracing::warn!(
                            attempt,
                            wait_ms = wait.as_millis() as u64,
                            "Zoho rate limited the call; retrying"
                        );
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    _ => {
                        return Err(ZohoError::RateLimited {
                            call,
                            retry_after: failure.retry_after,
                        });
                    }
                }
            }
            if status.is_server_error() && request.idempotent() && attempt < self.retry.max_attempts
            {
                let wait = self.retry.backoff(attempt, jitter());
                tracing::warn!(
                    attempt,
                    status = status.as_u16(),
                    wait_ms = wait.as_millis() as u64,
                    "Zoho answered with a server error; retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            tracing::debug!(status = status.as_u16(), code = %body.code, "Zoho refused the call");
            return Err(ZohoError::Api {
                call,
                status,
                code: body.code,
                fields: body.fields,
            });
        }
    }

    /// One attempt: takes a slot, sends, reads the whole answer, records metrics.
    async fn attempt(&self, request: &Request, token: &AccessToken) -> Result<Raw, reqwest::Error> {
        let call = request.call;
        let slots = match call.api {
            Api::Desk => &self.desk_slots,
            Api::Crm | Api::Accounts => &self.crm_slots,
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = slots.acquire().await.ok();
        // A slot left behind by a process that died frees itself once no answer can come.
        let hold = self.timeout + Duration::from_secs(5);
        let lease = match &self.shared_slots {
            Some(shared) => shared
                .acquire(call.api, self.max_concurrency, hold)
                .await
                .map(|lease| (shared, lease)),
            None => None,
        };
        let url = format!("{}{}", self.base_url(call.api, token), request.path);
        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .timeout(self.timeout);
        if let Some(value) = authorization(token) {
            builder = builder.header(AUTHORIZATION, value);
        }
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        if call.api == Api::Desk {
            builder = builder.header("orgId", &self.org_id);
            if call.write
                && let Some(source_id) = &self.source_id
            {
                // Zoho does not fire webhooks whose ignoreSourceId matches: no self-echo.
                builder = builder.header("sourceId", source_id);
            }
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let started = Instant::now();
        let result = async {
            let response = builder.send().await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let (body, too_large) = match read_capped(response, MAX_ANSWER_BYTES).await {
                Ok(body) => (body, false),
                Err(ReadError::TooLarge { .. }) => (Vec::new(), true),
                Err(ReadError::Transport(error)) => return Err(error),
            };
            Ok(Raw {
                status,
                retry_after,
                body,
                too_large,
            })
        }
        .await;
        if let Some((shared, lease)) = lease {
            shared.release(call.api, &lease).await;
        }
        let status = result.as_ref().ok().map(|raw| raw.status.as_u16());
        self.metrics
            .observe(call, status, started.elapsed().as_secs_f64());
        tracing::debug!(
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Zoho call attempt finished"
        );
        result
    }

    fn base_url(&self, api: Api, token: &AccessToken) -> String {
        match api {
            Api::Desk => format!("{}/api/v1", self.endpoints.desk),
            Api::Crm => {
                let host = self
                    .endpoints
                    .crm_override
                    .as_deref()
                    .or(token.api_domain())
                    .unwrap_or(&self.endpoints.crm_default);
                format!("{host}/crm/v8")
            }
            Api::Accounts => self.endpoints.accounts.clone(),
        }
    }
}

/// The `Authorization` header, marked sensitive so it never shows in a `Debug` output. A
/// token that is not a valid header value is left out, and Zoho's 401 reports it.
fn authorization(token: &AccessToken) -> Option<HeaderValue> {
    let mut value =
        HeaderValue::from_str(&format!("Zoho-oauthtoken {}", token.secret().expose())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn answer(call: Call, raw: Raw) -> Result<Answer, ZohoError> {
    if raw.too_large {
        return Err(ZohoError::Decode {
            call,
            detail: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
        });
    }
    let empty = raw.status == StatusCode::NO_CONTENT || raw.body.trim_ascii().is_empty();
    let body = if empty {
        None
    } else {
        Some(serde_json::from_slice(&raw.body).map_err(|e| ZohoError::decode(call, &e))?)
    };
    Ok(Answer { body })
}

fn transport_error(call: Call, error: reqwest::Error) -> ZohoError {
    if error.is_timeout() {
        ZohoError::Timeout { call }
    } else {
        ZohoError::Transport {
            call,
            sent: !error.is_connect(),
            // The URL can carry a customer's email (CRM search); keep it out of the error.
            source: error.without_url(),
        }
    }
}

/// Checks that an id can go into a path as is: Zoho ids are digits (letters are allowed
/// for safety margins), so nothing can add a path segment or a query.
pub(crate) fn id(call: Call, id: &str) -> Result<&str, ZohoError> {
    let valid = !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(id)
    } else {
        Err(ZohoError::invalid_input(call, "the id is not a Zoho id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(250));
        assert_eq!(policy.backoff(1, 1.0), Duration::from_millis(500));
        assert_eq!(policy.backoff(2, 1.0), Duration::from_millis(1000));
        assert_eq!(policy.backoff(3, 0.5), Duration::from_millis(1500));
        assert_eq!(policy.backoff(30, 1.0), policy.max_delay);
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let values: Vec<f64> = (0..20).map(|_| jitter()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(values.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn ids_cannot_change_the_path() {
        let call = Call::read(Api::Desk, "get_ticket");
        assert_eq!(id(call, "1892000000042034").unwrap(), "1892000000042034");
        for bad in ["", "1/../2", "1?x=2", "1 2", "é"] {
            assert!(id(call, bad).is_err(), "{bad:?}");
        }
    }
}
