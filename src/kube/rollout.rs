//! The rollout's side of the resource: the writer's evaluation into `status.rollout`, and
//! every pod following the shares published there.
//!
//! Progress lives only in the status, so deskhook never writes `spec`. Counts come from every
//! pod's report Lease (each pod counts at the step it last saw published); the writer sums the
//! counts that belong to the current spec entry and step and hands them to
//! [`crate::rollout::evaluate`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use super::events::Record;
use super::lease::MemberReport;
use super::resource::Observed;
use crate::config::Settings;
use crate::crd::{ActionRolloutStatus, ConditionStatus, RolloutState};
use crate::rollout::{self, Breach, RolloutMetrics, Rollouts, StepCounts};

/// `status.rollout` after one evaluation, with the breaches it found.
pub fn desired_rollout(
    settings: &Settings,
    previous: &BTreeMap<String, ActionRolloutStatus>,
    members: &[MemberReport],
    now: Timestamp,
) -> (BTreeMap<String, ActionRolloutStatus>, Vec<Breach>) {
    let mut rollout = BTreeMap::new();
    let mut breaches = Vec::new();
    for (action, spec) in settings.spec.rollout.named() {
        let Some(spec) = spec else { continue };
        let before = previous.get(action);
        let mut counts = StepCounts::default();
        if let Some(before) = before {
            for member in members {
                if let Some(tallied) = member.rollout.get(action)
                    && tallied.spec_digest == before.spec_digest
                    && tallied.step == before.step
                {
                    counts.add(&tallied.counts);
                }
            }
        }
        let evaluation = rollout::evaluate(action, spec, before, counts, now);
        breaches.extend(evaluation.breach);
        rollout.insert(action.to_owned(), evaluation.status);
    }
    (rollout, breaches)
}

/// The `RolledBack` condition: true while any action is rolled back, naming each.
pub fn rolled_back_condition(
    rollout: &BTreeMap<String, ActionRolloutStatus>,
) -> (ConditionStatus, &'static str, String) {
    let back: Vec<String> = rollout
        .iter()
        .filter(|(_, s)| s.state == RolloutState::RolledBack)
        .map(|(action, s)| {
            s.message
                .clone()
                .unwrap_or_else(|| format!("{action} rolled back"))
        })
        .collect();
    if back.is_empty() {
        (
            ConditionStatus::False,
            "GuardsHold",
            "no rollout is rolled back".to_owned(),
        )
    } else {
        (ConditionStatus::True, "GuardBreached", back.join("; "))
    }
}

/// The Warning Event of a rollback. Its name holds the action and the spec entry's digest, and
/// an entry is rolled back at most once, so two writers racing record it once.
pub fn abort_record(breach: &Breach, status: &ActionRolloutStatus) -> Record {
    Record {
        subject: format!(
            "rollout-{}-{}",
            breach.action.to_ascii_lowercase(),
            status.spec_digest
        ),
        reason: "RolloutAborted",
        warning: true,
        note: format!(
            "{breach}; the share is 0 % until spec.rollout.{} changes (new steps or restartedAt)",
            breach.action
        ),
    }
}

/// Keeps `rollouts` on the shares the status publishes and the percent gauge on what this pod
/// applies, for as long as the task lives.
pub async fn follow(
    rollouts: Rollouts,
    metrics: RolloutMetrics,
    mut observed: watch::Receiver<Option<Arc<Observed>>>,
    mut settings: watch::Receiver<Arc<Settings>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Some(current) = observed.borrow_and_update().clone() {
            rollouts.publish(&current.status.rollout);
            for (action, status) in &current.status.rollout {
                if let Some(agreement) = status.agreement {
                    metrics
                        .agreement
                        .with_label_values(&[action.as_str()])
                        .set(agreement);
                }
            }
        }
        let settings_now = settings.borrow_and_update().clone();
        for action in rollout::ACTIONS {
            let percent = rollouts.percent(&settings_now, action);
            metrics
                .percent
                .with_label_values(&[action])
                .set(i64::from(percent));
        }
        tokio::select! {
            changed = observed.changed() => if changed.is_err() { break },
            changed = settings.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
}
