//! A running deskhook process: listeners, workers, settings watchers and an orderly shutdown.
//!
//! Shutdown order: readiness goes false at once; after `shutdown_delay` (time for the load
//! balancer to notice) the queue stops accepting (503) and the webhook listener closes; workers
//! drain the queue within `shutdown_grace`; anything left is logged by ticket id. The admin
//! listener stays up to the end so `/metrics` and `/ready` remain observable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::archive::DecisionArchive;
use crate::config::{
    self, InvalidSettings, Secret, Settings, SettingsHandle, SettingsSource, WatchedSecrets,
};
use crate::crd::QueueBackend;
use crate::decisions::DecisionLog;
use crate::decisions::RedisDecisions;
use crate::http::{self, AppState, Shared};
use crate::kube::{KubeError, KubeOptions};
use crate::metrics::Metrics;
use crate::outbound::ClientError;
pub use crate::outbound::http_client;
use crate::queue::redis::MAX_READ_BATCH;
use crate::queue::{MemoryQueue, Queue, RedisQueue, RedisQueueOptions};
use crate::reconcile::Reconciler;
use crate::rollout::Rollouts;
use crate::store::{Redis, RedisSetupError, Topology};
use crate::verify::Verifier;
use crate::worker::{WorkerContext, spawn_workers};
pub use crate::workflow::connection::ZohoAccess;
use crate::workflow::connection::ZohoConnector;
use crate::workflow::ledger::RedisLedger;
use crate::workflow::ledger::{MemoryLedger, StepLedger};
use crate::workflow::reply::ReplyRewriter;
use crate::workflow::{AutomationWorkflow, Workflow};
use crate::zoho::ZohoSetupError;

/// What `deskhook serve` was asked to do.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// The `WebhookAutomation` YAML file; `None` reads the seed's environment variables.
    pub config: Option<PathBuf>,
    /// Watch a `WebhookAutomation` resource in Kubernetes for the settings instead.
    pub kube: Option<KubeOptions>,
    pub hmac_secrets: WatchedSecrets,
    /// Standard Webhooks secrets (`whsec_…`, `DESKHOOK_STANDARD_WEBHOOKS_SECRET`); empty turns
    /// that scheme off.
    pub standard_webhooks_secrets: WatchedSecrets,
    pub admin_tokens: WatchedSecrets,
    /// Zoho API access; `None` runs the workflow offline.
    pub zoho: Option<ZohoAccess>,
    /// Key of the optional reply-rewriting language model (`DESKHOOK_LLM_API_KEY`, or
    /// `DESKHOOK_LLM_API_KEY_FILE`, re-read when it changes).
    pub llm_api_key: WatchedSecrets,
    /// The language model's endpoint (`DESKHOOK_LLM_URL`), checked by
    /// [`crate::outbound::destination`]; without it replies are never rewritten.
    pub llm_url: Option<reqwest::Url>,
    /// Where Zoho's JWT signing keys are fetched instead of the region's Desk host
    /// (`DESKHOOK_JWKS_URL`).
    pub jwks_url: Option<reqwest::Url>,
    /// `--console-open`: serve the console without a token; refused unless `metrics_listen`
    /// is a loopback address.
    pub console_open: bool,
    /// `Host` names the console answers to besides loopback ones
    /// (`DESKHOOK_ADMIN_ALLOWED_HOSTS`).
    pub admin_allowed_hosts: Vec<String>,
    /// Bytes of request bodies the public listener holds at once
    /// (`DESKHOOK_MAX_BUFFERED_BODY_BYTES`).
    pub max_buffered_body_bytes: usize,
    pub insecure_no_verification: bool,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// Decision reports kept for `/webhook/decisions` and the review console.
    pub decisions_retained: usize,
    /// Redis (`DESKHOOK_REDIS_URL`, `POD_NAME`), used when `spec.queue.backend` is `redis`.
    pub redis: Option<RedisAccess>,
}

impl Default for ServeOptions {
    /// Loopback listeners on ports the system picks, nothing configured: what a test starts
    /// from.
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: loopback,
            metrics_listen: loopback,
            config: None,
            kube: None,
            hmac_secrets: WatchedSecrets::default(),
            standard_webhooks_secrets: WatchedSecrets::default(),
            admin_tokens: WatchedSecrets::default(),
            zoho: None,
            llm_api_key: WatchedSecrets::default(),
            llm_url: None,
            jwks_url: None,
            console_open: false,
            admin_allowed_hosts: Vec::new(),
            max_buffered_body_bytes: http::DEFAULT_BODY_BUDGET_BYTES,
            insecure_no_verification: false,
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(25),
            decisions_retained: crate::decisions::DEFAULT_RETAINED,
            redis: None,
        }
    }
}

/// Where Redis is and who this pod is among its consumers.
#[derive(Clone, Debug)]
pub struct RedisAccess {
    /// May carry a password: a secret.
    pub url: Secret,
    /// This pod's consumer name (the pod name): unique among live pods.
    pub consumer: String,
    /// Prefix of every key of this deployment (`DESKHOOK_REDIS_KEY_PREFIX`): the installer's
    /// choice, since it decides whose queue the pod reads.
    pub key_prefix: String,
    /// Dead letters kept at most; older ones are trimmed and counted.
    pub dead_letter_max: usize,
    /// A Redis Cluster (`DESKHOOK_REDIS_CLUSTER`, or a `redis+cluster://` URL).
    pub topology: Topology,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    SettingsFile(#[from] config::SettingsFileError),
    #[error("failed to read settings from the environment: {0}")]
    Environment(#[from] config::InvalidFlagVariable),
    #[error("settings from the environment are invalid: {0}")]
    InvalidSettings(#[from] InvalidSettings),
    #[error(
        "no delivery verification is configured: set ZOHO_WEBHOOK_SECRET or --hmac-secret-file, \
         or spec.verification.zohoJwt, or pass --insecure-no-verification for local testing"
    )]
    NoVerification,
    #[error("failed to bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    HttpClient(#[from] ClientError),
    #[error(transparent)]
    Zoho(#[from] ZohoSetupError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error("failed to set up the Redis queue: {0}")]
    Redis(#[from] RedisSetupError),
    #[error(
        "--console-open serves customer data without a token, so it is accepted only on a \
         loopback admin listener; {0} is not (use --metrics-listen 127.0.0.1:9090, or set an \
         admin token instead)"
    )]
    OpenConsoleNotLoopback(SocketAddr),
    #[error(
        "an admin token has {0} characters; at least {min} are required (for example: \
         openssl rand -hex 24)",
        min = http::admin_access::MIN_TOKEN_CHARS
    )]
    AdminTokenTooShort(usize),
}

/// Reads the settings to start with: the file when given, else the environment.
pub fn initial_settings(
    config_file: Option<&std::path::Path>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ServeError> {
    match config_file {
        Some(path) => {
            let ignored = config::seed_flags_in_env(&lookup);
            if !ignored.is_empty() {
                tracing::warn!(
                    variables = ?ignored,
                    "automation flags come from the settings file; these environment variables are ignored"
                );
            }
            Ok(config::load_settings_file(path, 1)?)
        }
        None => {
            let spec = config::spec_from_env(lookup)?;
            Ok(Settings::from_spec(spec, SettingsSource::Environment, 1)?)
        }
    }
}

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    finished: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Starts the shutdown sequence and waits for it to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.finished.await;
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] or a signal).
    pub async fn wait(self) {
        let _ = self.finished.await;
    }

    /// A handle that starts the shutdown sequence when sent `true`.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Starts listeners, workers and watchers with `settings` in force, running the automation
/// workflow against Zoho when credentials are given, offline otherwise.
pub async fn start(options: ServeOptions, settings: Settings) -> Result<RunningServer, ServeError> {
    launch(options, settings, None, Arc::new(Metrics::new()), None).await
}

/// [`start`], also appending each decision with its facts to `archive`.
pub async fn start_archived(
    options: ServeOptions,
    settings: Settings,
    archive: DecisionArchive,
) -> Result<RunningServer, ServeError> {
    launch(
        options,
        settings,
        None,
        Arc::new(Metrics::new()),
        Some(archive),
    )
    .await
}

/// [`start`] with a given workflow.
pub async fn start_with(
    options: ServeOptions,
    settings: Settings,
    workflow: Arc<dyn Workflow>,
) -> Result<RunningServer, ServeError> {
    launch(
        options,
        settings,
        Some(workflow),
        Arc::new(Metrics::new()),
        None,
    )
    .await
}

/// The automation workflow, with Zoho clients when credentials are configured; with Redis,
/// its ledger, Zoho token and concurrency limit are shared by every pod. Also returns a
/// connector of its own for the reconciler.
fn automation_workflow(
    options: &ServeOptions,
    http: reqwest::Client,
    metrics: &Metrics,
    redis: Option<&Redis>,
    rollouts: &Rollouts,
) -> Result<(Arc<dyn Workflow>, Option<ZohoConnector>), ServeError> {
    let ledger: Arc<dyn StepLedger> = match redis {
        Some(redis) => Arc::new(RedisLedger::new(redis.clone())),
        None => Arc::new(MemoryLedger::default()),
    };
    let rewriter = options
        .llm_url
        .clone()
        .map(|url| ReplyRewriter::new(http.clone(), url, options.llm_api_key.clone()));
    let (workflow, spare) = match &options.zoho {
        None => {
            tracing::warn!(
                "no Zoho credentials: the workflow runs offline and only suggests actions"
            );
            (AutomationWorkflow::new(None, ledger, rewriter), None)
        }
        Some(access) => {
            let mut connector = ZohoConnector::new(http, access.clone(), metrics)?;
            if let Some(redis) = redis {
                connector = connector.with_redis(redis.clone());
            }
            let spare = connector.sibling();
            (
                AutomationWorkflow::connected(connector, ledger, rewriter),
                Some(spare),
            )
        }
    };
    Ok((Arc::new(workflow.with_rollouts(rollouts.clone())), spare))
}

/// The Redis connection when `spec.queue.backend` is `redis`.
fn redis_for(options: &ServeOptions, settings: &Settings) -> Result<Option<Redis>, ServeError> {
    if settings.queue().backend != QueueBackend::Redis {
        return Ok(None);
    }
    let access = options.redis.as_ref().ok_or(RedisSetupError::MissingUrl)?;
    Ok(Some(Redis::connect_to(
        &access.url,
        &access.key_prefix,
        access.topology,
    )?))
}

async fn launch(
    options: ServeOptions,
    settings: Settings,
    workflow: Option<Arc<dyn Workflow>>,
    metrics: Arc<Metrics>,
    archive: Option<DecisionArchive>,
) -> Result<RunningServer, ServeError> {
    let started = Instant::now();
    check_admin_access(&options)?;
    let settings_handle = SettingsHandle::new(settings);
    // The resource's first list is awaited before anything is sized or served from settings.
    let kube = match options.kube.clone() {
        Some(kube_options) => {
            Some(crate::kube::start(kube_options, settings_handle.clone(), metrics.clone()).await?)
        }
        None => None,
    };
    let settings = settings_handle.current();
    // One client (one pool, one set of trust roots loaded) for every outbound call.
    let http = http_client()?;
    let verifier = Arc::new(
        Verifier::new(
            options.hmac_secrets.clone(),
            http.clone(),
            options.insecure_no_verification,
        )
        .with_jwks_url(options.jwks_url.clone())
        .with_standard_webhooks(options.standard_webhooks_secrets.clone()),
    );
    let configured = verifier.schemes(&settings);
    if configured.is_empty() {
        // A resource can be edited to add verification later, so a pod watching one stays up
        // (every delivery is refused meanwhile) instead of crash-looping.
        if kube.is_none() {
            return Err(ServeError::NoVerification);
        }
        tracing::error!("{}", ServeError::NoVerification);
    }
    if options.insecure_no_verification {
        metrics.verification_disabled.set(1);
        tracing::warn!(
            "deliveries are NOT verified (--insecure-no-verification): never expose this server"
        );
    }
    let workers = settings.queue().workers as usize;
    settings.record_metrics(&metrics);
    if let Some(path) = &options.config {
        config::watch_spec_file(path.clone(), settings_handle.clone(), metrics.clone());
    }
    options.hmac_secrets.spawn_watch("hmac secrets");
    options
        .standard_webhooks_secrets
        .spawn_watch("standard webhooks secrets");
    // A rotated token is held to the length the start-up check required.
    options
        .admin_tokens
        .clone()
        .with_min_chars(http::admin_access::MIN_TOKEN_CHARS)
        .spawn_watch("admin tokens");
    options.llm_api_key.spawn_watch("language model key");

    // The backend is read once, from the settings in force at start (after the resource's
    // first read in Kubernetes): moving queued work between backends live is not supported.
    let redis = redis_for(&options, &settings)?;
    // With Kubernetes, the shares the status writer publishes; otherwise each rollout stays
    // at its starting share.
    let rollouts = options
        .kube
        .as_ref()
        .map(|kube| kube.rollouts.clone())
        .unwrap_or_default();
    rollouts.metrics(&metrics);
    // A workflow given by the caller may read any of the payload; ours reads known members.
    let payload_fields = workflow
        .is_none()
        .then(|| crate::workflow::payload_fields(options.zoho.is_some()));
    let (workflow, spare_connector) = match workflow {
        Some(workflow) => (workflow, None),
        None => automation_workflow(&options, http, &metrics, redis.as_ref(), &rollouts)?,
    };
    let queue: Arc<dyn Queue> = match &redis {
        None => Arc::new(MemoryQueue::new()),
        Some(redis) => {
            let access = options.redis.as_ref().ok_or(RedisSetupError::MissingUrl)?;
            let spec = &settings.queue().redis;
            let queue = RedisQueue::start(
                redis,
                RedisQueueOptions {
                    consumer: access.consumer.clone(),
                    claim_idle: Duration::from_secs(spec.claim_idle_seconds.max(1)),
                    max_attempts: spec.max_attempts.max(1),
                    dead_letter_max: access.dead_letter_max,
                    payload_fields,
                    read_batch: (settings.queue().workers as usize).clamp(1, MAX_READ_BATCH),
                },
                &metrics,
            )?;
            tracing::info!(consumer = %access.consumer, "queue backend: Redis");
            queue
        }
    };
    let (stop, stop_signal) = watch::channel(false);
    let reconciler = match (&redis, spare_connector, options.redis.as_ref()) {
        (Some(redis), Some(connector), Some(access)) => Some(
            Reconciler::new(
                redis.clone(),
                queue.clone(),
                settings_handle.clone(),
                connector,
                access.consumer.clone(),
            )
            .spawn(stop_signal.clone()),
        ),
        _ => None,
    };
    let mut decisions = DecisionLog::new(options.decisions_retained);
    if let Some(redis) = &redis {
        decisions = decisions.with_shared(RedisDecisions::new(
            redis.clone(),
            options.decisions_retained,
        ));
    }
    if let Some(archive) = archive {
        decisions = decisions.with_archive(archive);
    }
    let decisions = Arc::new(decisions);
    if let Some(kube) = &kube {
        kube.attach_decisions(decisions.clone());
    }
    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState::new(Shared {
        settings: settings_handle.clone(),
        verifier,
        queue: queue.clone(),
        workflow: workflow.clone(),
        metrics: metrics.clone(),
        decisions: decisions.clone(),
        admin_tokens: options.admin_tokens.clone(),
        draining: draining.clone(),
        started,
        guard: Arc::default(),
        body_budget: http::BodyBudget::new(options.max_buffered_body_bytes),
        admin: http::admin_access::AdminAccess::new(
            options.console_open,
            options.admin_allowed_hosts.clone(),
        ),
        rejections: Arc::default(),
        rollouts,
    });

    let listener = bind(options.listen).await?;
    let admin_listener = bind(options.metrics_listen).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: options.listen,
        source,
    })?;
    let metrics_addr = admin_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: options.metrics_listen,
            source,
        })?;

    let (close_webhook, webhook_closed) = watch::channel(false);
    let (close_admin, admin_closed) = watch::channel(false);
    // The public listener has its own accept loop for the slow-client limits (http::listener).
    let webhook_server = tokio::spawn(http::serve_public(
        listener,
        state.clone(),
        until_true(webhook_closed),
    ));
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, http::admin_router(state.clone()))
            .with_graceful_shutdown(until_true(admin_closed))
            .into_future(),
    );
    let worker_tasks = spawn_workers(
        &WorkerContext {
            queue: queue.clone(),
            workflow,
            settings: settings_handle.clone(),
            metrics: metrics.clone(),
            decisions,
        },
        workers,
    );
    tracing::info!(
        %addr,
        %metrics_addr,
        workers,
        schemes = ?configured.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        source = %settings_handle.current().source,
        startup_ms = started.elapsed().as_millis() as u64,
        "deskhook ready"
    );

    let finished = tokio::spawn(async move {
        until_true(stop_signal).await;
        draining.store(true, Ordering::Release);
        tracing::info!("shutdown requested: readiness is now false");
        if let Some(kube) = kube {
            kube.shutdown().await;
        }
        tokio::time::sleep(options.shutdown_delay).await;
        // The reconciler saw the same signal; it ends after its current Redis call.
        if let Some(reconciler) = reconciler {
            let _ = reconciler.await;
        }
        queue.close();
        let _ = close_webhook.send(true);
        let _ = webhook_server.await;
        let drained = tokio::time::timeout(options.shutdown_grace, async {
            for task in worker_tasks {
                let _ = task.await;
            }
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("shutdown complete: every queued event was processed"),
            Err(_) => tracing::error!(
                unfinished_ticket_ids = ?queue.unfinished(),
                grace_seconds = options.shutdown_grace.as_secs(),
                "shutdown grace period ended with unfinished work"
            ),
        }
        let _ = close_admin.send(true);
        let _ = admin_server.await;
    });

    Ok(RunningServer {
        addr,
        metrics_addr,
        state,
        stop,
        finished,
    })
}

/// The admin listener's rules that hold before anything starts: an open console only on
/// loopback, and no token short enough to guess.
fn check_admin_access(options: &ServeOptions) -> Result<(), ServeError> {
    if options.console_open && !options.metrics_listen.ip().is_loopback() {
        return Err(ServeError::OpenConsoleNotLoopback(options.metrics_listen));
    }
    let min = http::admin_access::MIN_TOKEN_CHARS;
    match options
        .admin_tokens
        .current()
        .iter()
        .map(|token| token.expose().chars().count())
        .find(|chars| *chars < min)
    {
        Some(short) => Err(ServeError::AdminTokenTooShort(short)),
        None => Ok(()),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

async fn until_true(mut signal: watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}
