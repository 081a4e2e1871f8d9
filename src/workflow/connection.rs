//! Which Zoho clients a run uses.
//!
//! The portal (`spec.zoho.orgId`, `region`, `maxConcurrency`, `ignoreSourceId`) is part of
//! the live settings, which in Kubernetes arrive only after the resource is first read and may
//! change later. Clients are therefore built from each job's settings snapshot and reused
//! while those settings stay the same; the token cache is kept as long as the accounts server
//! does not change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::Redis;
use crate::zoho::endpoints::{ACCOUNTS_URL_VAR, CRM_URL_VAR, DESK_URL_VAR};
use crate::zoho::slots::RedisSlots;
use crate::zoho::token::RedisTokenStore;
use crate::zoho::{
    ClientOptions, OAuthCredentials, SharedSlots, TokenSource, ZohoClients, ZohoEndpoints,
    ZohoMetrics, ZohoSetupError,
};

/// Credentials and base-URL overrides, read once from the environment.
#[derive(Clone, Debug)]
pub struct ZohoAccess {
    pub credentials: OAuthCredentials,
    /// `DESKHOOK_ZOHO_*_URL` values that were set.
    pub url_overrides: BTreeMap<String, String>,
}

impl ZohoAccess {
    /// `None` when no Zoho credential is configured (the workflow then runs offline).
    pub fn from_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ZohoSetupError> {
        let Some(credentials) = OAuthCredentials::from_env(&lookup)? else {
            return Ok(None);
        };
        let url_overrides = [ACCOUNTS_URL_VAR, DESK_URL_VAR, CRM_URL_VAR]
            .into_iter()
            .filter_map(|name| lookup(name).map(|value| (name.to_owned(), value)))
            .collect();
        Ok(Some(Self {
            credentials,
            url_overrides,
        }))
    }
}

/// What identifies a set of clients.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Portal {
    region: String,
    org_id: String,
    max_concurrency: usize,
    source_id: Option<String>,
}

/// Why the settings in force give no Zoho clients: a run reports it as its failed fetch.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("spec.zoho.orgId is not set: Desk calls need the organization id")]
    MissingOrgId,
    #[error(transparent)]
    Endpoints(#[from] ZohoSetupError),
}

/// Builds clients for the settings in force, once per portal configuration.
pub struct ZohoConnector {
    http: reqwest::Client,
    access: ZohoAccess,
    metrics: ZohoMetrics,
    /// With the Redis backend: the token and the concurrency limit are shared by every pod.
    shared: Option<Arc<Redis>>,
    current: Mutex<Option<(Portal, ZohoClients)>>,
}

impl ZohoConnector {
    /// Registers the Zoho metrics once in `metrics`.
    pub fn new(
        http: reqwest::Client,
        access: ZohoAccess,
        metrics: &Metrics,
    ) -> Result<Self, ZohoSetupError> {
        Ok(Self {
            http,
            access,
            metrics: ZohoMetrics::register(metrics).map_err(ZohoSetupError::Metrics)?,
            shared: None,
            current: Mutex::new(None),
        })
    }

    /// Shares the Zoho token and concurrency limit through `redis` with the other pods.
    pub fn with_redis(mut self, redis: Redis) -> Self {
        self.shared = Some(Arc::new(redis));
        self
    }

    /// A connector for another user in this process (the reconciler), with the same
    /// credentials and metrics; with Redis, its token is the deployment's shared token.
    pub fn sibling(&self) -> Self {
        Self {
            http: self.http.clone(),
            access: self.access.clone(),
            metrics: self.metrics.clone(),
            shared: self.shared.clone(),
            current: Mutex::new(None),
        }
    }

    /// Clients for the portal `settings` describe.
    pub fn clients(&self, settings: &Settings) -> Result<ZohoClients, ConnectError> {
        let zoho = settings.zoho();
        let portal = Portal {
            region: zoho.region.clone(),
            org_id: zoho
                .org_id
                .clone()
                .filter(|id| !id.trim().is_empty())
                .ok_or(ConnectError::MissingOrgId)?,
            max_concurrency: zoho.max_concurrency.max(1) as usize,
            source_id: zoho.ignore_source_id.clone(),
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, clients)) = current.as_ref()
            && *known == portal
        {
            return Ok(clients.clone());
        }
        let overrides = &self.access.url_overrides;
        let endpoints =
            ZohoEndpoints::from_region(&portal.region, |name| overrides.get(name).cloned())?;
        let options = ClientOptions {
            max_concurrency: portal.max_concurrency,
            source_id: portal.source_id.clone(),
            ..ClientOptions::default()
        };
        // The token cache survives a settings change that keeps the accounts server.
        let tokens = match current.as_ref() {
            Some((known, clients)) if known.region == portal.region => clients.tokens.clone(),
            _ => match &self.shared {
                None => TokenSource::new(
                    self.http.clone(),
                    &endpoints.accounts,
                    self.access.credentials.clone(),
                    options.timeout,
                    self.metrics.clone(),
                ),
                Some(redis) => TokenSource::shared(
                    self.http.clone(),
                    &endpoints.accounts,
                    self.access.credentials.clone(),
                    options.timeout,
                    self.metrics.clone(),
                    Arc::new(RedisTokenStore::new(
                        Redis::clone(redis),
                        &self.access.credentials,
                    )),
                ),
            },
        };
        let slots = self.shared.as_ref().map(|redis| {
            Arc::new(RedisSlots::new(Redis::clone(redis), &portal.org_id)) as Arc<dyn SharedSlots>
        });
        let clients = ZohoClients::with_shared_slots(
            self.http.clone(),
            endpoints,
            tokens,
            portal.org_id.clone(),
            options,
            self.metrics.clone(),
            slots,
        );
        tracing::info!(region = %portal.region, "Zoho clients ready for the settings in force");
        *current = Some((portal, clients.clone()));
        Ok(clients)
    }
}

/// Where a workflow's Zoho clients come from.
pub enum ZohoConnection {
    /// No credentials: every action is a suggestion.
    Offline,
    /// Clients built once (tests, tools).
    Fixed(ZohoClients),
    /// Clients built from each job's settings.
    PerSettings(Box<ZohoConnector>),
}

impl ZohoConnection {
    /// The clients for a run, `None` offline, or why they cannot be had.
    pub fn clients(&self, settings: &Settings) -> Result<Option<ZohoClients>, ConnectError> {
        match self {
            Self::Offline => Ok(None),
            Self::Fixed(clients) => Ok(Some(clients.clone())),
            Self::PerSettings(connector) => connector.clients(settings).map(Some),
        }
    }
}
