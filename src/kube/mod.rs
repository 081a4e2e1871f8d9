//! The `WebhookAutomation` resource as the live source of settings, and the status it carries.
//!
//! Every pod runs three tasks:
//!
//! - **watch** ([`watch`]): a kube-rs watcher on the one named resource. Each valid generation
//!   becomes the live settings through the same [`SettingsHandle::replace`] the file source
//!   uses; an invalid one is logged and counted and the last good settings stay; a missing or
//!   deleted resource switches the pod to read-only. Relists, `410 Gone`, API-server restarts
//!   and network cuts are the watcher's job: it relists and backs off on its own.
//! - **report** ([`lease::MemberReporter`]): the pod keeps a Lease of its own renewed, with the
//!   settings generation it runs and whether its data plane is healthy in two annotations.
//! - **status** ([`status::StatusWriter`]): pods elect one status writer through a
//!   `coordination.k8s.io` Lease ([`lease::LeaderElector`]). The writer lists the pods' Leases,
//!   writes the resource's status, and records every flag change as one Kubernetes Event. An
//!   edit of what decides (routing, replies, linking) is backtested on the retained decisions
//!   ([`impact`]) into `status.lastChange` and a `RoutingChanged` Event.
//!
//! Why Leases for the pods' reports: a Lease is the object Kubernetes itself uses for
//! heartbeats (node leases), it carries a renew time so a dead pod ages out without anyone
//! cleaning up, and writing it needs no access to the resource itself, so a pod can never edit
//! the spec or the status it does not own.
//!
//! Why events are exactly-once: an event's name is derived from the resource's uid, the
//! generation and the flag, and only the status writer creates events. A writer that crashes
//! between the event and the status, or two writers during a hand-over, both try the same name;
//! the API server keeps the first and answers `409` to the other, which then stays silent.

mod events;
mod health;
mod impact;
mod lease;
mod resource;
mod rollout;
mod status;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

use crate::config::{Settings, SettingsHandle};
use crate::crd::WebhookAutomationSpec;
use crate::decisions::DecisionLog;
use crate::metrics::Metrics;

pub use events::{FlagChange, flag_changes};
pub use health::{DataPlaneHealth, Thresholds};
pub use lease::{LeaderElector, MemberReport, MemberReporter};
pub use resource::{Observed, automation_api};
pub use rollout::{abort_record, desired_rollout};
pub use status::{StatusWriter, desired_status};
pub use watch::SettingsWatcher;

/// The Kubernetes API calls deskhook makes, as `(apiGroup, resource, verb)`. The Role in
/// `manifests/rbac.yaml` grants exactly these; a test holds the two together.
pub const ACCESS: &[(&str, &str, &str)] = &[
    // Start-up check that tells "missing" from "forbidden" in plain words.
    ("deskhook.dev", "webhookautomations", "get"),
    // The watcher.
    ("deskhook.dev", "webhookautomations", "list"),
    ("deskhook.dev", "webhookautomations", "watch"),
    // The status writer.
    ("deskhook.dev", "webhookautomations/status", "patch"),
    // Leader election (get, create, update with a resourceVersion precondition), pod reports
    // (server-side apply, delete on shutdown), and the writer reading and pruning reports.
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "list"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
    ("coordination.k8s.io", "leases", "patch"),
    ("coordination.k8s.io", "leases", "delete"),
    // The audit trail.
    ("events.k8s.io", "events", "create"),
];

/// Field manager and reporting controller name in the API.
pub const MANAGER: &str = "deskhook";

/// How `deskhook serve --kube` finds its resource and paces its API calls.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Name of the `WebhookAutomation` resource.
    pub resource: String,
    /// Namespace of the resource; `None` uses the kubeconfig's (or the service account's).
    pub namespace: Option<String>,
    /// This pod's name: its identity in leader election, reports and events.
    pub pod_name: String,
    pub timings: Timings,
    pub thresholds: Thresholds,
    /// This pod's rollout state: the shares the status publishes are put here for the
    /// workflow, and the pod's counts are read from here for its report.
    pub rollouts: crate::rollout::Rollouts,
}

impl KubeOptions {
    pub fn new(resource: impl Into<String>, pod_name: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            namespace: None,
            pod_name: pod_name.into(),
            timings: Timings::default(),
            thresholds: Thresholds::default(),
            rollouts: crate::rollout::Rollouts::default(),
        }
    }
}

/// Timings of the Kubernetes side.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How long the status-writer Lease is valid without renewal.
    pub leader_lease: Duration,
    /// How often the writer renews (and candidates retry), and how often the status is
    /// recomputed from the pods' reports.
    pub leader_retry: Duration,
    /// How long a pod's report Lease counts without renewal.
    pub member_lease: Duration,
    /// How often a pod renews its report (it also reports at once when its settings change).
    pub member_renew: Duration,
    /// How long start-up waits for the first list of the resource.
    pub first_list: Duration,
}

impl Default for Timings {
    /// The durations client-go's leader election uses (15 s lease, 2 s retry).
    fn default() -> Self {
        Self {
            leader_lease: Duration::from_secs(15),
            leader_retry: Duration::from_secs(2),
            member_lease: Duration::from_secs(30),
            member_renew: Duration::from_secs(10),
            first_list: Duration::from_secs(30),
        }
    }
}

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("failed to configure the Kubernetes client (in-cluster or kubeconfig)")]
    Client(#[source] kube::Error),
    #[error(
        "failed to read WebhookAutomation {key}; the service account needs the Role in \
         manifests/rbac.yaml"
    )]
    Preflight {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to list WebhookAutomation {key} within {seconds} s of start-up")]
    FirstList { key: String, seconds: u64 },
    #[error("WebhookAutomation {key} does not exist")]
    Missing { key: String },
    #[error("WebhookAutomation {key} holds invalid settings: {message}")]
    Invalid { key: String, message: String },
}

/// The settings of the `WebhookAutomation` named `name` as it stands now, read once with the
/// in-cluster or kubeconfig credentials (namespace: `namespace`, else the kubeconfig's).
pub async fn live_settings(name: &str, namespace: Option<&str>) -> Result<Settings, KubeError> {
    let client = Client::try_default().await.map_err(KubeError::Client)?;
    let namespace = namespace.map_or_else(|| client.default_namespace().to_owned(), str::to_owned);
    let key = format!("{namespace}/{name}");
    let object = automation_api(client, &namespace)
        .get_opt(name)
        .await
        .map_err(|source| KubeError::Preflight {
            key: key.clone(),
            source,
        })?
        .ok_or_else(|| KubeError::Missing { key: key.clone() })?;
    resource::Observed::read(&object, &key)
        .settings
        .map_err(|message| KubeError::Invalid { key, message })
}

/// Settings before the first list: every writing flag off. The seed's flag variables are
/// ignored (the resource decides); `lookup` reads the environment only to warn about them.
pub fn initial_settings(lookup: impl Fn(&str) -> Option<String>) -> Settings {
    let ignored = crate::config::seed_flags_in_env(lookup);
    if !ignored.is_empty() {
        tracing::warn!(
            variables = ?ignored,
            "automation flags come from the WebhookAutomation resource; these environment \
             variables are ignored"
        );
    }
    Settings::read_only(
        WebhookAutomationSpec::default(),
        "waiting for the first list of the WebhookAutomation resource",
        0,
    )
}

/// The running Kubernetes tasks of this pod.
pub struct KubeRuntime {
    stop: channel::Sender<bool>,
    decisions: impact::DecisionSlot,
    tasks: Vec<JoinHandle<()>>,
    watcher: JoinHandle<()>,
}

impl KubeRuntime {
    /// Hands the decision log to the status writer, which backtests each edit of routing,
    /// replies or linking on it.
    pub fn attach_decisions(&self, log: Arc<DecisionLog>) {
        self.decisions.attach(log);
    }

    /// Hands the status-writer Lease over, withdraws this pod's report and stops watching.
    /// Bounded: a slow API server cannot hold the shutdown up for more than a few seconds.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let finished = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .is_err()
        {
            tracing::warn!("the Kubernetes tasks did not finish within 5 s of shutdown");
        }
        self.watcher.abort();
    }
}

/// Connects with the in-cluster or kubeconfig credentials and starts the tasks.
pub async fn start(
    options: KubeOptions,
    settings: SettingsHandle,
    metrics: Arc<Metrics>,
) -> Result<KubeRuntime, KubeError> {
    let client = Client::try_default().await.map_err(KubeError::Client)?;
    start_with_client(client, options, settings, metrics).await
}

/// [`start`] with a given client; returns once the first list has been applied, so the pod
/// never serves with settings it has not read.
pub async fn start_with_client(
    client: Client,
    options: KubeOptions,
    settings: SettingsHandle,
    metrics: Arc<Metrics>,
) -> Result<KubeRuntime, KubeError> {
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let key = format!("{namespace}/{}", options.resource);
    let api = automation_api(client.clone(), &namespace);
    // A missing resource is not an error here: the watcher reports it and stays read-only.
    if let Err(source) = api.get_opt(&options.resource).await {
        return Err(KubeError::Preflight { key, source });
    }

    let kube_metrics = watch::KubeMetrics::register(&metrics);
    let rollout_metrics = options.rollouts.metrics(&metrics);
    let (observed_tx, observed_rx) = channel::channel(None);
    let (listed_tx, mut listed_rx) = channel::channel(false);
    let watcher = SettingsWatcher::new(
        key.clone(),
        settings.clone(),
        metrics.clone(),
        observed_tx,
        listed_tx,
    );
    let watcher = tokio::spawn(watch::run(
        api.clone(),
        options.resource.clone(),
        watcher,
        kube_metrics.clone(),
    ));

    let waited = tokio::time::timeout(options.timings.first_list, listed_rx.wait_for(|l| *l));
    if !matches!(waited.await, Ok(Ok(_))) {
        watcher.abort();
        return Err(KubeError::FirstList {
            key,
            seconds: options.timings.first_list.as_secs(),
        });
    }

    let (stop, stop_rx) = channel::channel(false);
    let reporter = MemberReporter::new(
        lease::leases_api(client.clone(), &namespace),
        &options,
        settings.clone(),
        metrics.clone(),
    );
    let decisions = impact::DecisionSlot::default();
    let writer = StatusWriter::new(client, &namespace, &options, kube_metrics)
        .with_decisions(decisions.clone())
        .with_rollout_metrics(rollout_metrics.clone());
    let elector = LeaderElector::new(
        lease::leases_api(writer.client(), &namespace),
        lease::leader_lease_name(&options.resource),
        options.pod_name.clone(),
        options.timings,
    );
    let tasks = vec![
        tokio::spawn(rollout::follow(
            options.rollouts.clone(),
            rollout_metrics,
            observed_rx.clone(),
            settings.subscribe(),
            stop_rx.clone(),
        )),
        tokio::spawn(reporter.run(stop_rx.clone())),
        tokio::spawn(status::run(
            elector,
            writer,
            observed_rx,
            settings.subscribe(),
            options.timings,
            stop_rx,
        )),
    ];
    Ok(KubeRuntime {
        stop,
        decisions,
        tasks,
        watcher,
    })
}

#[cfg(test)]
mod tests;
