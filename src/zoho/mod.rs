//! Clients of the Zoho Desk and Zoho CRM REST APIs, typed and rate-limit aware, with no
//! business logic: the workflow decides, these carry a decision out.
//!
//! ```text
//! workflow ──▶ DeskClient ─┐                        ┌──▶ Zoho Desk   {desk}/api/v1
//!          └─▶ CrmClient ──┴─▶ http::Core ──────────┤
//!                              (auth, orgId, retries,└──▶ Zoho CRM    {api_domain}/crm/v8
//!                               concurrency, metrics)
//!                                   │
//!                                   ▼
//!                              TokenSource ──────────────▶ Zoho Accounts /oauth/v2/token
//!                              (one per process, single-flight, ≤10 refreshes / 10 min)
//! ```
//!
//! Build one [`ZohoClients`] per process and clone it: clones share the token cache, the
//! concurrency limits, the department cache and the connection pool. Nothing here logs a
//! token, a secret, a request or answer body or a customer's address.

pub mod crm;
mod de;
pub mod desk;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod metrics;
pub mod slots;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use crm::{Condition, Contact, Criteria, CrmClient, Deal, Operator};
pub use desk::{Author, Comment, ContentType, Department, DeskClient, Reply, Thread, Ticket};
pub use endpoints::{OAuthCredentials, ZohoEndpoints};
pub use error::{Api, Call, ZohoError, ZohoSetupError};
pub use http::RetryPolicy;
pub use metrics::ZohoMetrics;
pub use slots::SharedSlots;
pub use token::{AccessToken, Clock, SharedStoreError, SharedToken, SharedTokenStore, TokenSource};

use crate::metrics::Metrics;

/// Simultaneous calls per API by default: below 10, the smallest paid Desk edition's limit,
/// leaving room for the portal's other integrations.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Longest wait for one answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the clients behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Simultaneous calls per API (Desk, CRM) from this process.
    pub max_concurrency: usize,
    /// Sent as the `sourceId` header on Desk writes, so that webhooks subscribed with this
    /// `ignoreSourceId` are not fired by deskhook's own changes.
    pub source_id: Option<String>,
    /// Longest wait for one answer, body included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            source_id: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }
}

/// The Desk and CRM clients and the token source they share.
#[derive(Clone, Debug)]
pub struct ZohoClients {
    pub desk: DeskClient,
    pub crm: CrmClient,
    pub tokens: TokenSource,
}

impl ZohoClients {
    /// Clients for the portal `org_id`, registering their metrics in `metrics`. Fails when
    /// the metrics are already registered: build the clients once per process.
    pub fn new(
        http: reqwest::Client,
        endpoints: ZohoEndpoints,
        credentials: OAuthCredentials,
        org_id: impl Into<String>,
        options: ClientOptions,
        metrics: &Metrics,
    ) -> Result<Self, ZohoSetupError> {
        let metrics = ZohoMetrics::register(metrics).map_err(ZohoSetupError::Metrics)?;
        let tokens = TokenSource::new(
            http.clone(),
            &endpoints.accounts,
            credentials,
            options.timeout,
            metrics.clone(),
        );
        Ok(Self::with_tokens(
            http, endpoints, tokens, org_id, options, metrics,
        ))
    }

    /// Clients around an existing token source (one built with a test clock, or one shared
    /// with other clients of the same refresh token).
    pub fn with_tokens(
        http: reqwest::Client,
        endpoints: ZohoEndpoints,
        tokens: TokenSource,
        org_id: impl Into<String>,
        options: ClientOptions,
        metrics: ZohoMetrics,
    ) -> Self {
        Self::with_shared_slots(http, endpoints, tokens, org_id, options, metrics, None)
    }

    /// [`ZohoClients::with_tokens`] whose concurrency limit also counts the calls of the
    /// deployment's other processes through `shared`.
    pub fn with_shared_slots(
        http: reqwest::Client,
        endpoints: ZohoEndpoints,
        tokens: TokenSource,
        org_id: impl Into<String>,
        options: ClientOptions,
        metrics: ZohoMetrics,
        shared: Option<Arc<dyn SharedSlots>>,
    ) -> Self {
        let slots = options.max_concurrency.max(1);
        let core = Arc::new(http::Core {
            http,
            endpoints,
            tokens: tokens.clone(),
            org_id: org_id.into(),
            source_id: options.source_id.filter(|s| !s.trim().is_empty()),
            desk_slots: Semaphore::new(slots),
            crm_slots: Semaphore::new(slots),
            shared_slots: shared,
            max_concurrency: slots,
            timeout: options.timeout,
            retry: options.retry,
            metrics,
        });
        Self {
            desk: DeskClient::new(core.clone()),
            crm: CrmClient::new(core),
            tokens,
        }
    }
}
