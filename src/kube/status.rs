//! The status writer: what the resource says about the pods, written by one pod at a time.
//!
//! [`desired_status`] is a pure function of the resource, the previous status and the pods'
//! reports; [`StatusWriter::sync`] carries it out: flag events first, then the status that
//! records the new flags. In that order a writer that dies in between leaves the old flags in
//! the status, so its successor computes the same changes and the same event names, and the
//! API server refuses the duplicates.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use super::events::{self, Record, flag_changes};
use super::impact::{self, DecisionSlot};
use super::lease::{self, LeaderElector, MemberReport};
use super::resource::{Observed, automation_api};
use super::rollout::{abort_record, desired_rollout, rolled_back_condition};
use super::watch::KubeMetrics;
use super::{KubeOptions, MANAGER, Timings};
use crate::config::Settings;
use crate::config::security::{security_changes, security_settings};
use crate::crd::{ConditionStatus, LastChange, WebhookAutomationStatus};
use crate::rollout::{Breach, RolloutMetrics};

/// The status the resource should carry now.
pub fn desired_status(
    observed: &Observed,
    members: &[MemberReport],
    now: Timestamp,
) -> WebhookAutomationStatus {
    desired_status_and_breaches(observed, members, now).0
}

/// [`desired_status`], with the rollout guards this evaluation found breached.
pub fn desired_status_and_breaches(
    observed: &Observed,
    members: &[MemberReport],
    now: Timestamp,
) -> (WebhookAutomationStatus, Vec<Breach>) {
    let previous = &observed.status;
    let generation = observed.generation;
    let (in_force, flags, security) = match &observed.settings {
        Ok(settings) => (
            Some(generation),
            Some(*settings.flags()),
            Some(security_settings(&settings.spec)),
        ),
        Err(_) => (
            previous.generation_in_force,
            previous.flags,
            previous.security.clone(),
        ),
    };
    let pods = members.len();
    let updated = members
        .iter()
        .filter(|m| Some(m.generation) == in_force)
        .count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);

    let valid = match &observed.settings {
        Ok(_) => (
            ConditionStatus::True,
            "Valid",
            format!("generation {generation} is valid"),
        ),
        Err(message) => (ConditionStatus::False, "InvalidSpec", message.clone()),
    };
    let ready = match (&observed.settings, in_force) {
        (Err(_), Some(good)) => (
            ConditionStatus::False,
            "InvalidSpec",
            format!("generation {generation} is invalid; pods keep generation {good}"),
        ),
        (Err(_), None) => (
            ConditionStatus::False,
            "InvalidSpec",
            format!("generation {generation} is invalid and no valid generation was seen"),
        ),
        (Ok(_), _) if pods == 0 => (
            ConditionStatus::False,
            "NoPods",
            "no pod has reported yet".to_owned(),
        ),
        (Ok(_), _) if updated < pods => (
            ConditionStatus::False,
            "RollingOut",
            format!("{updated} of {pods} pods run generation {generation}"),
        ),
        (Ok(_), _) => (
            ConditionStatus::True,
            "AllPodsUpdated",
            format!("all {pods} pods run generation {generation}"),
        ),
    };
    let unhealthy: Vec<String> = members
        .iter()
        .filter_map(|m| m.degraded.as_ref().map(|why| format!("{}: {why}", m.pod)))
        .collect();
    let degraded = if unhealthy.is_empty() {
        (
            ConditionStatus::False,
            "Healthy",
            "no pod reports signature failures or workflow errors above its threshold".to_owned(),
        )
    } else {
        (
            ConditionStatus::True,
            "DataPlaneUnhealthy",
            unhealthy.join("; "),
        )
    };

    let condition = |kind: &str, (status, reason, message): (ConditionStatus, &str, String)| {
        let status = status.as_str().to_owned();
        // The transition time moves only when the status does, as the API conventions ask.
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: kind.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: Some(generation),
            last_transition_time: since,
        }
    };
    // An invalid edit keeps the rollout where it stands, as it keeps the settings in force.
    let (rollout, breaches) = match &observed.settings {
        Ok(settings) => desired_rollout(settings, &previous.rollout, members, now),
        Err(_) => (previous.rollout.clone(), Vec::new()),
    };
    let mut conditions = vec![
        condition("Ready", ready),
        condition("Valid", valid),
        condition("Degraded", degraded),
    ];
    if !rollout.is_empty() || !previous.rollout.is_empty() {
        conditions.push(condition("RolledBack", rolled_back_condition(&rollout)));
    }
    let status = WebhookAutomationStatus {
        observed_generation: Some(generation),
        generation_in_force: in_force,
        flags,
        security,
        pods: count(pods),
        updated_pods: count(updated),
        conditions,
        last_change: previous.last_change.clone(),
        rollout_summary: crate::rollout::summary(&rollout),
        rollout,
    };
    (status, breaches)
}

/// Writes the status, the events and reads the pods' reports.
pub struct StatusWriter {
    client: Client,
    automations: Api<DynamicObject>,
    leases: Api<Lease>,
    events: Api<Event>,
    resource: String,
    pod: String,
    timings: Timings,
    metrics: KubeMetrics,
    /// The last status written, with the `resourceVersion` it was computed from.
    written: Option<(String, WebhookAutomationStatus)>,
    /// The retained decisions an edit is backtested on, once the server has them.
    decisions: DecisionSlot,
    /// The latest backtest, until the watch brings it back in the status.
    last_change: Option<LastChange>,
    rollout_metrics: Option<RolloutMetrics>,
}

impl StatusWriter {
    pub fn new(
        client: Client,
        namespace: &str,
        options: &KubeOptions,
        metrics: KubeMetrics,
    ) -> Self {
        Self {
            automations: automation_api(client.clone(), namespace),
            leases: lease::leases_api(client.clone(), namespace),
            events: Api::namespaced(client.clone(), namespace),
            client,
            resource: options.resource.clone(),
            pod: options.pod_name.clone(),
            timings: options.timings,
            metrics,
            written: None,
            decisions: DecisionSlot::default(),
            last_change: None,
            rollout_metrics: None,
        }
    }

    /// Backtests every edit of what decides on the decisions of `slot`.
    pub fn with_decisions(mut self, slot: DecisionSlot) -> Self {
        self.decisions = slot;
        self
    }

    /// Counts each rollback in `metrics`.
    pub fn with_rollout_metrics(mut self, metrics: RolloutMetrics) -> Self {
        self.rollout_metrics = Some(metrics);
        self
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Brings the resource's status and events up to date with `observed`.
    pub async fn sync(&mut self, observed: &Observed) -> Result<(), kube::Error> {
        let members = lease::member_reports(&self.leases, &self.resource, &self.timings).await?;
        // Until the watch brings this pod's last write back, the rollout is evaluated from what
        // was written, so a step or a rollback is never taken twice.
        let own;
        let observed = match &self.written {
            Some((base, written)) if *base == observed.resource_version => {
                own = Observed {
                    status: WebhookAutomationStatus {
                        rollout: written.rollout.clone(),
                        ..observed.status.clone()
                    },
                    ..observed.clone()
                };
                &own
            }
            _ => observed,
        };
        let (mut status, breaches) =
            desired_status_and_breaches(observed, &members, Timestamp::now());
        self.record_events(observed, &status).await?;
        self.record_aborts(observed, &status, &breaches).await?;
        if let Some(change) = self.impact(observed).await? {
            status.last_change = Some(change);
        }

        // Until the watch delivers this pod's own write back, `observed` still shows the status
        // from before it: comparing with that would write the same status again.
        let pending = self.written.as_ref().is_some_and(|(base, written)| {
            *base == observed.resource_version && same_apart_from_times(written, &status)
        });
        if status == observed.status || pending {
            return Ok(());
        }
        let patch = json!({ "status": status });
        let params = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.automations
            .patch_status(&observed.name, &params, &Patch::Merge(&patch))
            .await?;
        tracing::debug!(
            resource = %observed.name,
            generation = observed.generation,
            pods = status.pods,
            updated_pods = status.updated_pods,
            "status written"
        );
        self.written = Some((observed.resource_version.clone(), status));
        Ok(())
    }

    /// The backtest of the generation observed, when it changes what decides and was not
    /// backtested yet; its Event is recorded first, as flag events are.
    async fn impact(&mut self, observed: &Observed) -> Result<Option<LastChange>, kube::Error> {
        let (Ok(settings), Some(log)) = (&observed.settings, self.decisions.get()) else {
            return Ok(None);
        };
        let digest = crate::backtest::decision_digest(settings);
        let known = |change: &Option<LastChange>| {
            change.as_ref().is_some_and(|c| c.settings_digest == digest)
        };
        if known(&observed.status.last_change) {
            return Ok(None);
        }
        if !known(&self.last_change) {
            let change = impact::last_change(log, settings, observed.generation).await;
            if let Some(record) = impact::record(&change)
                && events::publish(&self.events, observed, &record, &self.pod).await?
            {
                tracing::info!(
                    resource = %observed.name,
                    generation = observed.generation,
                    reason = record.reason,
                    compared = change.compared,
                    changed = change.changed,
                    note = %record.note,
                    "settings edit backtested on recent decisions"
                );
            }
            self.last_change = Some(change);
        }
        Ok(self.last_change.clone())
    }

    /// The Warning Event and metric of each rollback, before the status that shows it: a
    /// writer that dies in between computes the same breach again, and the API server keeps
    /// one Event of that name.
    async fn record_aborts(
        &self,
        observed: &Observed,
        status: &WebhookAutomationStatus,
        breaches: &[Breach],
    ) -> Result<(), kube::Error> {
        for breach in breaches {
            let Some(entry) = status.rollout.get(&breach.action) else {
                continue;
            };
            let record = abort_record(breach, entry);
            if events::publish(&self.events, observed, &record, &self.pod).await? {
                if let Some(metrics) = &self.rollout_metrics {
                    metrics
                        .aborts
                        .with_label_values(&[breach.action.as_str(), breach.measure])
                        .inc();
                }
                tracing::warn!(
                    resource = %observed.name,
                    action = %breach.action,
                    measure = breach.measure,
                    value = breach.value,
                    threshold = breach.threshold,
                    "rollout rolled back: its share is 0 % on every pod"
                );
            }
        }
        Ok(())
    }

    async fn record_events(
        &self,
        observed: &Observed,
        status: &WebhookAutomationStatus,
    ) -> Result<(), kube::Error> {
        let mut records = Vec::new();
        match &observed.settings {
            Ok(settings) => {
                if let Some(before) = &observed.status.flags {
                    records.extend(
                        flag_changes(before, settings.flags())
                            .iter()
                            .map(Record::flag),
                    );
                }
                if let Some(before) = &observed.status.security {
                    records.extend(
                        security_changes(before, &security_settings(&settings.spec))
                            .iter()
                            .map(Record::security),
                    );
                }
            }
            Err(message) => {
                if observed.status.observed_generation != Some(observed.generation) {
                    records.push(Record::invalid(message));
                }
            }
        }
        for record in records {
            if events::publish(&self.events, observed, &record, &self.pod).await? {
                log_record(observed, &record, status);
            }
        }
        Ok(())
    }
}

/// The single log line of a recorded change (the event is the other record of it).
fn log_record(observed: &Observed, record: &Record, status: &WebhookAutomationStatus) {
    if record.reason == events::SECURITY_REASON {
        tracing::warn!(
            resource = %observed.name,
            generation = observed.generation,
            reason = record.reason,
            change = %record.note,
            "security-relevant setting changed (recorded as an event)"
        );
    } else if record.warning {
        tracing::warn!(
            resource = %observed.name,
            generation = observed.generation,
            reason = record.reason,
            note = %record.note,
            "WebhookAutomation edit refused (recorded as an event)"
        );
    } else {
        tracing::info!(
            resource = %observed.name,
            generation = observed.generation,
            reason = record.reason,
            change = %record.note,
            flags_in_force = ?status.flags,
            "automation flag changed"
        );
    }
}

fn same_apart_from_times(a: &WebhookAutomationStatus, b: &WebhookAutomationStatus) -> bool {
    let strip = |s: &WebhookAutomationStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// Runs the election and, while this pod holds the Lease, keeps the status current: on every
/// change of the resource, of this pod's settings, and every retry period (for the other pods'
/// reports). Releases the Lease when `stop` turns true.
pub async fn run(
    mut elector: LeaderElector,
    mut writer: StatusWriter,
    mut observed: watch::Receiver<Option<Arc<Observed>>>,
    mut settings: watch::Receiver<Arc<Settings>>,
    timings: Timings,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(timings.leader_retry);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    loop {
        let elect = tokio::select! {
            _ = ticker.tick() => true,
            changed = observed.changed() => { if changed.is_err() { break } false }
            changed = settings.changed() => { if changed.is_err() { break } false }
            _ = stop.wait_for(|stop| *stop) => break,
        };
        if elect {
            let now_leading = elector.try_acquire_or_renew().await;
            if now_leading != leading {
                writer.metrics.status_writer.set(i64::from(now_leading));
                if !now_leading {
                    tracing::info!(pod = %elector.identity(), "this pod is no longer the status writer");
                }
                leading = now_leading;
            }
        }
        if !leading {
            continue;
        }
        let current = observed.borrow_and_update().clone();
        if let Some(current) = current
            && let Err(error) = writer.sync(&current).await
        {
            writer.metrics.status_write_errors.inc();
            tracing::warn!(error = %error, "WebhookAutomation status could not be written");
        }
    }
    elector.release().await;
    writer.metrics.status_writer.set(0);
}
