//! Zoho access tokens: one shared, single-flight cache per process.
//!
//! Zoho lets a refresh token mint at most 10 access tokens per 10 minutes and then blocks it
//! for the rest of the window, answering HTTP 200 with `{"error":"Access Denied"}`. So tokens
//! are never refreshed per request: every Desk and CRM call asks [`TokenSource`], which keeps
//! one token until 5 minutes before it expires. The cache sits behind one async mutex that is
//! held across the refresh itself, so any number of concurrent callers cause exactly one
//! refresh. After an API 401 a caller calls [`TokenSource::invalidate`] with the token it
//! used; only the first of many such callers clears the cache, because the others hold an
//! older generation.
//!
//! Budget: a sliding window refuses an 11th refresh within 10 minutes, and a failed refresh
//! pauses further attempts for 30 seconds; while a refresh is not allowed, a token that has
//! not yet expired is still handed out.
//!
//! Sharing tokens between replicas: with a [`SharedTokenStore`] (Redis), a process first
//! adopts a token another pod published; only when there is none does it take the
//! deployment-wide refresh lock, look once more, refresh, and publish the fresh token, all
//! while holding its own lock, so the single-flight and budget logic stay as they are. The
//! store also keeps a deployment-wide refresh budget, since Zoho's limit is per refresh
//! token, not per pod. When the store cannot be reached, the process refreshes on its own.

mod redis;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::endpoints::OAuthCredentials;
use super::error::{Api, Call, ErrorBody, ZohoError, sanitize_code};
use super::metrics::{RefreshResult, ZohoMetrics};
use crate::config::Secret;
use crate::outbound::{ReadError, read_capped};

pub use self::redis::RedisTokenStore;

/// Refreshes allowed per [`REFRESH_PERIOD`], Zoho's own limit per refresh token.
pub const REFRESH_LIMIT: usize = 10;
/// The sliding window of [`REFRESH_LIMIT`].
pub const REFRESH_PERIOD: Duration = Duration::from_secs(600);
/// A token is replaced this long before it expires, so no call starts with a dying token.
pub const EARLY_REFRESH: Duration = Duration::from_secs(300);
/// After a failed refresh, no new attempt for this long.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// A cached token is still handed out while refreshing is not allowed, until this long
/// before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the answer has none (Zoho's tokens live an hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest lifetime believed, whatever the answer or the shared store says: Zoho's tokens
/// live an hour, and an unbounded `expires_in` added to "now" would overflow the clock.
const MAX_LIFETIME: Duration = DEFAULT_LIFETIME;

const CALL: Call = Call::read(Api::Accounts, "refresh_token");
/// Largest token answer read: a real one is a few hundred bytes.
const MAX_TOKEN_ANSWER_BYTES: usize = 16 * 1024;

/// Where "now" comes from; tests move it forward.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Longest wait for another process's refresh before giving up for this call.
const SHARED_WAIT: Duration = Duration::from_secs(10);
/// How long the deployment-wide refresh lock is held at most (a refresh times out sooner).
const SHARED_LOCK_TTL: Duration = Duration::from_secs(30);

/// A token published for every process of a deployment.
#[derive(Clone)]
pub struct SharedToken {
    pub secret: Secret,
    pub api_domain: Option<String>,
    /// Time left until it should be replaced, and until it expires.
    pub refresh_in: Duration,
    pub expires_in: Duration,
}

/// The shared store could not be used; the caller falls back to refreshing on its own.
#[derive(Debug, thiserror::Error)]
#[error("failed to use the shared token store: {0}")]
pub struct SharedStoreError(pub String);

/// Access tokens shared between the processes using one refresh token.
#[async_trait::async_trait]
pub trait SharedTokenStore: Send + Sync {
    /// The published token, while it does not need replacing yet.
    async fn load(&self) -> Result<Option<SharedToken>, SharedStoreError>;
    /// Takes the refresh lock for at most `ttl`; `None` while another process holds it.
    async fn lock(&self, ttl: Duration) -> Result<Option<String>, SharedStoreError>;
    /// Releases the lock taken as `owner`.
    async fn unlock(&self, owner: &str);
    /// Publishes a fresh token.
    async fn publish(&self, token: &SharedToken);
    /// Forgets the published token if it is still `secret` (Zoho refused it).
    async fn discard(&self, secret: &Secret);
    /// Takes a place in the deployment-wide budget of `limit` refreshes per `period`, or
    /// says how long until one frees up.
    async fn try_acquire_refresh(
        &self,
        limit: usize,
        period: Duration,
    ) -> Result<Result<(), Duration>, SharedStoreError>;
}

/// What looking at the shared store before a refresh gave.
enum SharedLock {
    /// Another process's token, adopted.
    Adopted(AccessToken),
    /// The lock, taken as this owner: refresh and publish.
    Held(String),
    /// Another process is refreshing and did not publish in time.
    Busy,
    /// The store is unreachable: refresh alone.
    Unavailable,
}

/// An access token as handed to one call.
#[derive(Clone)]
pub struct AccessToken {
    secret: Secret,
    api_domain: Option<String>,
    generation: u64,
}

impl AccessToken {
    /// The token, for the `Authorization: Zoho-oauthtoken` header only.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The CRM host of the account's data centre, from the token answer.
    pub fn api_domain(&self) -> Option<&str> {
        self.api_domain.as_deref()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &self.secret)
            .field("api_domain", &self.api_domain)
            .field("generation", &self.generation)
            .finish()
    }
}

/// The process's source of Zoho access tokens. Clones share one cache.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    token_url: String,
    credentials: OAuthCredentials,
    timeout: Duration,
    metrics: ZohoMetrics,
    clock: Clock,
    /// Tokens shared with the deployment's other processes, if configured.
    shared: Option<Arc<dyn SharedTokenStore>>,
    /// Held across a refresh: that is what makes the refresh single-flight.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    window: RefreshWindow,
    paused_until: Option<Instant>,
    generation: u64,
    /// The credentials the last refresh read from their files, to log a rotation once.
    credentials: Option<OAuthCredentials>,
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
    expires_at: Instant,
}

impl Cached {
    /// The token while it has not (nearly) expired.
    fn usable(&self, now: Instant) -> Option<AccessToken> {
        (now + EXPIRY_MARGIN < self.expires_at).then(|| self.token.clone())
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.inner.token_url)
            .field("client_id", &self.inner.credentials.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Tokens from `{accounts_url}/oauth/v2/token`.
    pub fn new(
        http: reqwest::Client,
        accounts_url: &str,
        credentials: OAuthCredentials,
        timeout: Duration,
        metrics: ZohoMetrics,
    ) -> Self {
        Self::with_clock(
            http,
            accounts_url,
            credentials,
            timeout,
            metrics,
            Arc::new(Instant::now),
        )
    }

    /// [`TokenSource::new`] with a given clock, so tests can move through the refresh window.
    pub fn with_clock(
        http: reqwest::Client,
        accounts_url: &str,
        credentials: OAuthCredentials,
        timeout: Duration,
        metrics: ZohoMetrics,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                token_url: format!("{}/oauth/v2/token", accounts_url.trim_end_matches('/')),
                credentials,
                timeout,
                metrics,
                clock,
                shared: None,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// [`TokenSource::new`] sharing its tokens through `store` with the deployment's other
    /// processes.
    pub fn shared(
        http: reqwest::Client,
        accounts_url: &str,
        credentials: OAuthCredentials,
        timeout: Duration,
        metrics: ZohoMetrics,
        store: Arc<dyn SharedTokenStore>,
    ) -> Self {
        let mut source = Self::new(http, accounts_url, credentials, timeout, metrics);
        if let Some(inner) = Arc::get_mut(&mut source.inner) {
            inner.shared = Some(store);
        }
        source
    }

    /// Makes `shared` the token this process uses.
    fn adopt(state: &mut State, shared: SharedToken, now: Instant) -> AccessToken {
        state.generation += 1;
        let token = AccessToken {
            secret: shared.secret,
            api_domain: shared.api_domain,
            generation: state.generation,
        };
        // The store is another process's word: bounded like an answer from Zoho.
        let expires_in = shared.expires_in.min(MAX_LIFETIME);
        state.cached = Some(Cached {
            token: token.clone(),
            refresh_at: now + shared.refresh_in.min(expires_in),
            expires_at: now + expires_in,
        });
        token
    }

    /// Adopts a published token, or takes the refresh lock, waiting a bounded time for a
    /// process that is refreshing right now.
    async fn shared_lock(
        &self,
        store: &dyn SharedTokenStore,
        state: &mut State,
        now: Instant,
    ) -> SharedLock {
        let started = Instant::now();
        loop {
            match store.load().await {
                Ok(Some(token)) => return SharedLock::Adopted(Self::adopt(state, token, now)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "refreshing the Zoho token without the shared store");
                    return SharedLock::Unavailable;
                }
            }
            match store.lock(SHARED_LOCK_TTL).await {
                // Looked at once more under the lock: a process may have published between
                // the load and the lock.
                Ok(Some(owner)) => match store.load().await {
                    Ok(Some(token)) => {
                        store.unlock(&owner).await;
                        return SharedLock::Adopted(Self::adopt(state, token, now));
                    }
                    _ => return SharedLock::Held(owner),
                },
                Ok(None) if started.elapsed() < SHARED_WAIT => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(None) => return SharedLock::Busy,
                Err(error) => {
                    tracing::warn!(error = %error, "refreshing the Zoho token without the shared store");
                    return SharedLock::Unavailable;
                }
            }
        }
    }

    /// A valid access token, refreshing it first when it is missing or about to expire.
    pub async fn access_token(&self) -> Result<AccessToken, ZohoError> {
        let mut state = self.inner.state.lock().await;
        let now = (self.inner.clock)();
        if let Some(cached) = &state.cached
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let usable = state.cached.as_ref().and_then(|c| c.usable(now));
        let store = self.inner.shared.clone();
        if let Some(until) = state.paused_until
            && now < until
        {
            // Paused after a failure here; another process may have succeeded since.
            if let Some(store) = &store
                && let Ok(Some(token)) = store.load().await
            {
                return Ok(Self::adopt(&mut state, token, now));
            }
            return self.refused(usable, until - now);
        }
        let owner = match &store {
            None => None,
            Some(store) => match self.shared_lock(store.as_ref(), &mut state, now).await {
                SharedLock::Adopted(token) => return Ok(token),
                SharedLock::Held(owner) => Some(owner),
                SharedLock::Busy => return self.refused(usable, Duration::from_secs(1)),
                SharedLock::Unavailable => None,
            },
        };
        let outcome = self
            .refresh_locked(&mut state, now, usable, store.as_deref(), owner.is_some())
            .await;
        if let (Some(store), Some(owner)) = (&store, &owner) {
            store.unlock(owner).await;
        }
        outcome
    }

    /// Refreshes within the budgets (this process's, and the deployment's when `shared` is
    /// set), publishing the fresh token to `store` when `publish`.
    async fn refresh_locked(
        &self,
        state: &mut State,
        now: Instant,
        usable: Option<AccessToken>,
        store: Option<&dyn SharedTokenStore>,
        publish: bool,
    ) -> Result<AccessToken, ZohoError> {
        if let Err(wait) = state.window.try_acquire(now) {
            tracing::warn!("Zoho token refresh budget used up; not asking Zoho Accounts");
            return self.refused(usable, wait);
        }
        if let Some(store) = store.filter(|_| publish)
            && let Ok(Err(wait)) = store
                .try_acquire_refresh(REFRESH_LIMIT, REFRESH_PERIOD)
                .await
        {
            tracing::warn!(
                "the deployment's Zoho token refresh budget is used up; not asking Zoho Accounts"
            );
            return self.refused(usable, wait);
        }
        match self.refresh(state).await {
            Ok(fresh) => {
                state.generation += 1;
                state.paused_until = None;
                let token = AccessToken {
                    secret: fresh.secret,
                    api_domain: fresh.api_domain,
                    generation: state.generation,
                };
                let early = EARLY_REFRESH.min(fresh.lifetime / 2);
                state.cached = Some(Cached {
                    token: token.clone(),
                    refresh_at: now + fresh.lifetime - early,
                    expires_at: now + fresh.lifetime,
                });
                if let Some(store) = store.filter(|_| publish) {
                    store
                        .publish(&SharedToken {
                            secret: token.secret.clone(),
                            api_domain: token.api_domain.clone(),
                            refresh_in: fresh.lifetime - early,
                            expires_in: fresh.lifetime,
                        })
                        .await;
                }
                tracing::info!(
                    expires_in = fresh.lifetime.as_secs(),
                    "refreshed the Zoho access token"
                );
                Ok(token)
            }
            Err(error) => {
                state.paused_until = Some(now + PAUSE_AFTER_FAILURE);
                tracing::warn!(error = %error, kind = error.kind(), "failed to refresh the Zoho access token");
                match usable {
                    Some(token) => Ok(token),
                    None => Err(error),
                }
            }
        }
    }

    /// Forgets `token` after Zoho refused it with a 401, unless a newer token already
    /// replaced it: of many callers that saw the same 401, only the first causes a refresh.
    pub async fn invalidate(&self, token: &AccessToken) {
        let mut state = self.inner.state.lock().await;
        if state
            .cached
            .as_ref()
            .is_some_and(|c| c.token.generation == token.generation)
        {
            state.cached = None;
            if let Some(store) = &self.inner.shared {
                store.discard(&token.secret).await;
            }
        }
    }

    fn refused(
        &self,
        usable: Option<AccessToken>,
        retry_after: Duration,
    ) -> Result<AccessToken, ZohoError> {
        match usable {
            Some(token) => Ok(token),
            None => {
                self.inner.metrics.refresh(RefreshResult::Limited);
                Err(ZohoError::RefreshLimited { retry_after })
            }
        }
    }

    /// One POST to the token endpoint. The credentials travel in a form body, never in the
    /// URL, so no proxy or access log records them. Not retried: each attempt may count
    /// against the budget, and the caller's job retries later anyway.
    async fn refresh(&self, state: &mut State) -> Result<FreshToken, ZohoError> {
        let inner = &self.inner;
        // Read from their files now: rotating the Secret needs no restart.
        let credentials = inner.credentials.reread();
        let before = state.credentials.as_ref().unwrap_or(&inner.credentials);
        if credentials.differs_from(before) {
            tracing::info!("Zoho credential files changed; refreshing with the new credentials");
        }
        state.credentials = Some(credentials.clone());
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", credentials.client_id.as_str()),
            ("client_secret", credentials.client_secret.expose()),
            ("refresh_token", credentials.refresh_token.expose()),
        ];
        let started = Instant::now();
        let answer = async {
            let response = inner
                .http
                .post(&inner.token_url)
                .form(&form)
                .timeout(inner.timeout)
                .send()
                .await?;
            let status = response.status();
            // A token answer is a few hundred bytes; a larger one is not read.
            let body = match read_capped(response, MAX_TOKEN_ANSWER_BYTES).await {
                Ok(body) => body,
                Err(ReadError::TooLarge { .. }) => Vec::new(),
                Err(ReadError::Transport(error)) => return Err(error),
            };
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let (result, outcome) = match answer {
            Ok((status, body)) => {
                inner.metrics.observe(CALL, Some(status.as_u16()), seconds);
                match parse_token_answer(status, &body) {
                    Ok(fresh) => (RefreshResult::Success, Ok(fresh)),
                    Err((result, error)) => (result, Err(error)),
                }
            }
            Err(error) => {
                inner.metrics.observe(CALL, None, seconds);
                let error = if error.is_timeout() {
                    ZohoError::Timeout { call: CALL }
                } else {
                    ZohoError::Transport {
                        call: CALL,
                        sent: !error.is_connect(),
                        source: error.without_url(),
                    }
                };
                (RefreshResult::Error, Err(error))
            }
        };
        inner.metrics.refresh(result);
        outcome
    }
}

/// What a successful token answer gives.
struct FreshToken {
    secret: Secret,
    api_domain: Option<String>,
    lifetime: Duration,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<Value>,
    api_domain: Option<String>,
    error: Option<String>,
}

/// Reads the token endpoint's answer. Any `error` key is an error whatever the status:
/// Zoho throttles with HTTP 200 `{"error":"Access Denied"}`.
fn parse_token_answer(
    status: reqwest::StatusCode,
    body: &[u8],
) -> Result<FreshToken, (RefreshResult, ZohoError)> {
    let answer: TokenAnswer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(error) if status.is_success() => {
            return Err((RefreshResult::Error, ZohoError::decode(CALL, &error)));
        }
        Err(_) => return Err((RefreshResult::Error, status_error(status, body))),
    };
    if let Some(code) = answer.error {
        return Err(if code.to_ascii_lowercase().contains("access denied") {
            (RefreshResult::Throttled, ZohoError::TokenThrottled)
        } else {
            (
                RefreshResult::Rejected,
                ZohoError::TokenRejected {
                    code: sanitize_code(&code),
                },
            )
        });
    }
    if !status.is_success() {
        return Err((RefreshResult::Error, status_error(status, body)));
    }
    let Some(access_token) = answer.access_token.filter(|t| !t.is_empty()) else {
        return Err((
            RefreshResult::Error,
            ZohoError::Decode {
                call: CALL,
                detail: "the answer has no access_token".into(),
            },
        ));
    };
    let lifetime = answer
        .expires_in
        .as_ref()
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_LIFETIME)
        .min(MAX_LIFETIME);
    let api_domain = answer
        .api_domain
        .as_deref()
        .and_then(crate::region::trusted_api_domain);
    Ok(FreshToken {
        secret: Secret::new(access_token),
        api_domain,
        lifetime,
    })
}

fn status_error(status: reqwest::StatusCode, body: &[u8]) -> ZohoError {
    let body = ErrorBody::parse(body);
    ZohoError::Api {
        call: CALL,
        status,
        code: body.code,
        fields: body.fields,
    }
}

/// At most `limit` refreshes in any `period`.
#[derive(Debug)]
pub(crate) struct RefreshWindow {
    limit: usize,
    period: Duration,
    attempts: VecDeque<Instant>,
}

impl Default for RefreshWindow {
    fn default() -> Self {
        Self::new(REFRESH_LIMIT, REFRESH_PERIOD)
    }
}

impl RefreshWindow {
    pub fn new(limit: usize, period: Duration) -> Self {
        Self {
            limit,
            period,
            attempts: VecDeque::with_capacity(limit),
        }
    }

    /// Takes a place in the window, or says how long until one frees up.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        while self
            .attempts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.period)
        {
            self.attempts.pop_front();
        }
        if self.attempts.len() < self.limit {
            self.attempts.push_back(now);
            return Ok(());
        }
        let oldest = self.attempts.front().copied().unwrap_or(now);
        Err(self
            .period
            .saturating_sub(now.saturating_duration_since(oldest)))
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn the_window_allows_ten_refreshes_per_ten_minutes_sliding() {
        let start = Instant::now();
        let mut window = RefreshWindow::default();
        for i in 0..10 {
            assert!(window.try_acquire(start + Duration::from_secs(i)).is_ok());
        }
        let wait = window
            .try_acquire(start + Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(540));
        assert!(window.try_acquire(start + REFRESH_PERIOD).is_ok());
        assert!(
            window.try_acquire(start + REFRESH_PERIOD).is_err(),
            "only the first attempt has left the window"
        );
    }

    #[test]
    fn access_denied_with_status_200_is_throttling() {
        let Err((result, error)) = parse_token_answer(
            StatusCode::OK,
            br#"{"error":"Access Denied","error_description":"You have made too many requests"}"#,
        ) else {
            panic!("throttling must be an error");
        };
        assert_eq!(result, RefreshResult::Throttled);
        assert!(matches!(error, ZohoError::TokenThrottled));
    }

    #[test]
    fn invalid_code_is_a_rejection() {
        let Err((result, error)) =
            parse_token_answer(StatusCode::OK, br#"{"error":"invalid_code"}"#)
        else {
            panic!("a refused refresh token must be an error");
        };
        assert_eq!(result, RefreshResult::Rejected);
        assert_eq!(error.code(), Some("invalid_code"));
        assert!(!error.retryable());
    }

    #[test]
    fn a_good_answer_keeps_the_api_domain_and_lifetime() {
        let Ok(fresh) = parse_token_answer(
            StatusCode::OK,
            br#"{"access_token":"1000.abc","expires_in":3600,"api_domain":"https://www.zohoapis.eu","token_type":"Bearer"}"#,
        ) else {
            panic!("a good answer must parse");
        };
        assert_eq!(fresh.secret.expose(), "1000.abc");
        assert_eq!(fresh.api_domain.as_deref(), Some("https://www.zohoapis.eu"));
        assert_eq!(fresh.lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn a_huge_lifetime_is_bounded_and_cannot_overflow_the_clock() {
        let body = format!(r#"{{"access_token":"1000.abc","expires_in":{}}}"#, u64::MAX);
        let Ok(fresh) = parse_token_answer(StatusCode::OK, body.as_bytes()) else {
            panic!("the answer must parse");
        };
        assert_eq!(fresh.lifetime, MAX_LIFETIME);

        let mut state = State::default();
        let shared = SharedToken {
            secret: Secret::new("1000.shared"),
            api_domain: None,
            refresh_in: Duration::MAX,
            expires_in: Duration::MAX,
        };
        let now = Instant::now();
        TokenSource::adopt(&mut state, shared, now);
        let cached = state.cached.expect("adopted");
        assert_eq!(cached.expires_at, now + MAX_LIFETIME);
        assert!(cached.refresh_at <= cached.expires_at);
    }

    #[test]
    fn answers_without_a_token_are_errors() {
        assert!(parse_token_answer(StatusCode::OK, b"{}").is_err());
        assert!(parse_token_answer(StatusCode::BAD_GATEWAY, b"<html>").is_err());
    }
}
