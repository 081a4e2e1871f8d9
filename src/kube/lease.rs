//! `coordination.k8s.io` Leases: one elects the status writer, one per pod carries its report.
//!
//! Leader election follows client-go's rules: the holder renews every retry period; another
//! pod takes the Lease only after it has seen the same record unchanged for a whole lease
//! duration (measured on its own clock, so clock skew between nodes does not matter); every
//! write carries the `resourceVersion` it read, so of two pods racing for the Lease exactly one
//! wins and the other gets `409 Conflict`. On shutdown the holder clears the holder identity so
//! another pod takes over at its next retry instead of waiting for the Lease to expire.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::health::DataPlaneHealth;
use super::{KubeOptions, MANAGER, Timings};
use crate::config::{Settings, SettingsHandle};
use crate::metrics::Metrics;
use crate::rollout::{Rollouts, TalliedStep};

/// Label on every Lease deskhook writes: the resource it belongs to.
pub const AUTOMATION_LABEL: &str = "deskhook.dev/automation";
/// Label telling a pod's report Lease from the status-writer Lease.
pub const ROLE_LABEL: &str = "deskhook.dev/role";
/// Annotation of a report: the settings generation the pod runs.
pub const GENERATION_ANNOTATION: &str = "deskhook.dev/applied-generation";
/// Annotation of a report: `ok`, or why the pod's data plane is degraded.
pub const HEALTH_ANNOTATION: &str = "deskhook.dev/health";
/// Annotation of a report: the pod's rollout counts per action at its step, as JSON.
pub const ROLLOUT_ANNOTATION: &str = "deskhook.dev/rollout";

/// Leases of a namespace.
pub fn leases_api(client: Client, namespace: &str) -> Api<Lease> {
    Api::namespaced(client, namespace)
}

/// Name of the status-writer Lease of a resource.
pub fn leader_lease_name(resource: &str) -> String {
    format!("deskhook-{resource}-status-writer")
}

/// Name of a pod's report Lease.
pub fn member_lease_name(resource: &str, pod: &str) -> String {
    format!("deskhook-{resource}-pod-{pod}")
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn seconds(duration: std::time::Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// One pod's side of the status-writer election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    /// The record last read, and when (on this pod's clock) it was first seen that way.
    observed: Option<(Option<String>, Instant)>,
    /// When this pod last renewed successfully while holding the Lease.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: String, identity: String, timings: Timings) -> Self {
        Self {
            api,
            name,
            identity,
            timings,
            observed: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Tries to take or keep the Lease; `true` while this pod is the writer.
    ///
    /// A failed renewal keeps the role until the renew deadline (two thirds of the lease) has
    /// passed, as in client-go: one lost request must not make the writer flap.
    pub async fn try_acquire_or_renew(&mut self) -> bool {
        match self.attempt().await {
            Ok(leading) => {
                self.renewed_at = leading.then(Instant::now);
                leading
            }
            Err(error) => {
                let deadline = self.timings.leader_lease * 2 / 3;
                let still = self.renewed_at.is_some_and(|at| at.elapsed() < deadline);
                tracing::warn!(
                    lease = %self.name,
                    error = %error,
                    still_leading = still,
                    "status-writer Lease could not be read or written"
                );
                if !still {
                    self.renewed_at = None;
                }
                still
            }
        }
    }

    async fn attempt(&mut self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return self.create().await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.identity.as_str()) {
            return self.write(lease, false).await;
        }
        // Track how long the record has stayed as it is; its resourceVersion changes with
        // every renewal, so an unchanged version means the holder stopped renewing.
        let version = lease.metadata.resource_version.clone();
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((version, at));
                at
            }
        };
        let duration = spec
            .lease_duration_seconds
            .map(|s| std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(self.timings.leader_lease);
        if holder.is_some() && first_seen.elapsed() < duration {
            return Ok(false);
        }
        self.write(lease, true).await
    }

    async fn create(&mut self) -> Result<bool, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    ROLE_LABEL.to_owned(),
                    "status-writer".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds(self.timings.leader_lease)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                tracing::info!(lease = %self.name, "this pod is now the status writer");
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Renews (or, with `take`, takes over) the Lease read as `lease`.
    async fn write(&mut self, mut lease: Lease, take: bool) -> Result<bool, kube::Error> {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(seconds(self.timings.leader_lease));
        if take {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if take {
                    tracing::info!(lease = %self.name, "this pod is now the status writer");
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up if this pod holds it, so another pod takes over at once.
    pub async fn release(&mut self) {
        if self.renewed_at.take().is_none() {
            return;
        }
        let lease = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => lease,
            _ => return,
        };
        let mut lease = lease;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "status-writer Lease handed over"),
            Err(error) => tracing::warn!(
                lease = %self.name,
                error = %error,
                "status-writer Lease could not be released; it expires on its own"
            ),
        }
    }
}

/// What one pod reported through its Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReport {
    pub pod: String,
    /// The settings generation the pod runs (0: read-only, no valid resource).
    pub generation: i64,
    /// `None` when healthy, else why not.
    pub degraded: Option<String>,
    /// The pod's rollout counts, by action (empty when it counted nothing).
    pub rollout: BTreeMap<String, TalliedStep>,
}

impl MemberReport {
    /// Reads a report Lease; `None` when it has expired (the pod is gone or stuck).
    pub fn read(lease: &Lease, now: Timestamp) -> Option<Self> {
        let spec = lease.spec.as_ref()?;
        let renewed = spec.renew_time.as_ref()?.0;
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        if renewed + SignedDuration::from_secs(duration) < now {
            return None;
        }
        let annotations = lease.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        Some(Self {
            pod: spec.holder_identity.clone().unwrap_or_default(),
            generation: annotation(GENERATION_ANNOTATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0),
            degraded: annotation(HEALTH_ANNOTATION).filter(|h| h != "ok"),
            // Counts that do not parse (an older or newer pod) are left out, not fatal.
            rollout: annotation(ROLLOUT_ANNOTATION)
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
        })
    }
}

/// Keeps this pod's report Lease current.
pub struct MemberReporter {
    api: Api<Lease>,
    name: String,
    resource: String,
    pod: String,
    timings: Timings,
    settings: SettingsHandle,
    metrics: Arc<Metrics>,
    health: DataPlaneHealth,
    rollouts: Rollouts,
}

impl MemberReporter {
    pub fn new(
        api: Api<Lease>,
        options: &KubeOptions,
        settings: SettingsHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            api,
            name: member_lease_name(&options.resource, &options.pod_name),
            resource: options.resource.clone(),
            pod: options.pod_name.clone(),
            timings: options.timings,
            settings,
            metrics,
            health: DataPlaneHealth::new(options.thresholds),
            rollouts: options.rollouts.clone(),
        }
    }

    /// The report Lease for the settings in force.
    pub fn lease(&self, settings: &Settings, degraded: Option<&str>) -> Lease {
        let mut annotations = BTreeMap::from([
            (
                GENERATION_ANNOTATION.to_owned(),
                settings.generation.to_string(),
            ),
            (
                HEALTH_ANNOTATION.to_owned(),
                degraded.unwrap_or("ok").to_owned(),
            ),
        ]);
        let tally = self.rollouts.tally();
        if !tally.is_empty() {
            // Plain counts serialise to JSON without fail.
            let json = serde_json::to_string(&tally).unwrap_or_default();
            annotations.insert(ROLLOUT_ANNOTATION.to_owned(), json);
        }
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([
                    (AUTOMATION_LABEL.to_owned(), self.resource.clone()),
                    (ROLE_LABEL.to_owned(), "pod-report".to_owned()),
                ])),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.pod.clone()),
                lease_duration_seconds: Some(seconds(self.timings.member_lease)),
                renew_time: Some(now()),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Writes the report (server-side apply: creates or updates in one call).
    pub async fn report(&mut self) -> Result<(), kube::Error> {
        let degraded = self.health.check(&self.metrics);
        let lease = self.lease(&self.settings.current(), degraded.as_deref());
        let params = PatchParams::apply(MANAGER).force();
        self.api
            .patch(&self.name, &params, &Patch::Apply(&lease))
            .await?;
        Ok(())
    }

    /// Reports now, on every settings change and every renew period, until `stop`; then
    /// withdraws the report so the pod stops counting at once.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut changes = self.settings.subscribe();
        let mut ticker = tokio::time::interval(self.timings.member_renew);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(error) = self.report().await {
                tracing::warn!(lease = %self.name, error = %error, "pod report could not be written");
            }
            tokio::select! {
                _ = ticker.tick() => {}
                changed = changes.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        if let Err(error) = self.api.delete(&self.name, &DeleteParams::default()).await {
            tracing::warn!(lease = %self.name, error = %error, "pod report could not be withdrawn");
        }
    }
}

/// Lists the live reports of a resource's pods, and deletes those long expired (pods killed
/// without a chance to withdraw theirs).
pub async fn member_reports(
    api: &Api<Lease>,
    resource: &str,
    timings: &Timings,
) -> Result<Vec<MemberReport>, kube::Error> {
    let selector = format!("{AUTOMATION_LABEL}={resource},{ROLE_LABEL}=pod-report");
    let leases = api.list(&ListParams::default().labels(&selector)).await?;
    let now = Timestamp::now();
    let forgotten = SignedDuration::try_from(timings.member_lease * 10).unwrap_or_default();
    let mut reports = Vec::new();
    for lease in &leases.items {
        match MemberReport::read(lease, now) {
            Some(report) => reports.push(report),
            None => {
                let renewed = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| t.0);
                if renewed.is_none_or(|r| r + forgotten < now)
                    && let Some(name) = &lease.metadata.name
                {
                    let _ = api.delete(name, &DeleteParams::default()).await;
                }
            }
        }
    }
    reports.sort_by(|a, b| a.pod.cmp(&b.pod));
    Ok(reports)
}
