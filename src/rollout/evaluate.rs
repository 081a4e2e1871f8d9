//! The status writer's step for one action: where its rollout goes next.
//!
//! The writer calls [`evaluate`] on every sync with the counts every pod contributed at the
//! current step. A breach is judged before a step is taken, so a rollout that is failing
//! never widens on the same evaluation that should pull it back.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::crd::{ActionRollout, ActionRolloutStatus, RolloutState};

/// What pods counted for one action at one step.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct StepCounts {
    /// Writes of the action attempted inside the share.
    #[serde(default)]
    pub decisions: u64,
    /// Of those, writes that failed.
    #[serde(default)]
    pub failures: u64,
    /// Of those, writes a person undid within the override window.
    #[serde(default)]
    pub overrides: u64,
    /// Tickets outside the share on which a person's next change could be compared with what
    /// deskhook would have done.
    #[serde(default)]
    pub compared: u64,
    /// Of those, the ones where both agreed.
    #[serde(default)]
    pub agreed: u64,
}

impl StepCounts {
    pub fn add(&mut self, other: &StepCounts) {
        self.decisions += other.decisions;
        self.failures += other.failures;
        self.overrides += other.overrides;
        self.compared += other.compared;
        self.agreed += other.agreed;
    }

    /// The shadow agreement ratio, once anything was compared.
    pub fn agreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }
}

/// A guard that was breached: the rollout goes back to 0 %.
#[derive(Clone, Debug, PartialEq)]
pub struct Breach {
    pub action: String,
    /// `failure_ratio` or `override_ratio`: the metric's `reason` label.
    pub measure: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub decisions: u64,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rolled back: {} {:.3} exceeds {:.3} after {} decisions",
            self.action,
            self.measure.replace('_', " "),
            self.value,
            self.threshold,
            self.decisions
        )
    }
}

/// The status of one action after an evaluation, and the breach that caused a rollback in
/// this very evaluation (a rollout already rolled back reports none).
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub status: ActionRolloutStatus,
    pub breach: Option<Breach>,
}

/// Digest of a spec entry: progress recorded under another digest belongs to an earlier entry,
/// so a new steps list or a bumped `restartedAt` starts the rollout again.
pub fn spec_digest(spec: &ActionRollout) -> String {
    // Serialising plain data into JSON cannot fail.
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// One evaluation of `action`'s rollout. `counts` are every pod's counts at the step
/// `previous` names (zero when there is none).
pub fn evaluate(
    action: &str,
    spec: &ActionRollout,
    previous: Option<&ActionRolloutStatus>,
    counts: StepCounts,
    now: Timestamp,
) -> Evaluation {
    let digest = spec_digest(spec);
    let interval = humantime::parse_duration(&spec.step_interval).unwrap_or(Duration::MAX);
    let current = previous.filter(|p| p.spec_digest == digest);
    let Some(current) = current else {
        return Evaluation {
            status: start(spec, digest, counts, now, interval),
            breach: None,
        };
    };
    let mut status = ActionRolloutStatus {
        decisions: counts.decisions.max(current.decisions),
        failures: counts.failures.max(current.failures),
        overrides: counts.overrides.max(current.overrides),
        agreement: counts.agreement().or(current.agreement),
        ..current.clone()
    };
    match status.state {
        RolloutState::RolledBack => Evaluation {
            status,
            breach: None,
        },
        RolloutState::Paused => {
            let needed = spec.guard.min_agreement.unwrap_or(0.0);
            if status.agreement.is_some_and(|a| a >= needed) {
                status = at_step(spec, &digest, 0, now, interval);
                status.agreement = counts.agreement();
            } else {
                status.message = Some(waiting_message(needed, status.agreement));
            }
            Evaluation {
                status,
                breach: None,
            }
        }
        RolloutState::Progressing | RolloutState::Complete => {
            if let Some(breach) = breached(action, spec, &status) {
                status.percent = 0;
                status.state = RolloutState::RolledBack;
                status.since = Some(now.to_string());
                status.next_step_at = None;
                status.message = Some(breach.to_string());
                return Evaluation {
                    status,
                    breach: Some(breach),
                };
            }
            let step = status.step as usize;
            let due = status
                .next_step_at
                .as_deref()
                .and_then(|at| at.parse::<Timestamp>().ok())
                .is_some_and(|at| at <= now);
            let enough = status.decisions >= u64::from(spec.min_decisions_per_step);
            if step + 1 < spec.steps.len() && due && enough {
                status = at_step(spec, &digest, step + 1, now, interval);
            }
            Evaluation {
                status,
                breach: None,
            }
        }
    }
}

fn start(
    spec: &ActionRollout,
    digest: String,
    counts: StepCounts,
    now: Timestamp,
    interval: Duration,
) -> ActionRolloutStatus {
    if let Some(percent) = spec.percent {
        return ActionRolloutStatus {
            percent: percent.min(100),
            since: Some(now.to_string()),
            state: RolloutState::Complete,
            spec_digest: digest,
            ..Default::default()
        };
    }
    if let Some(needed) = spec.guard.min_agreement {
        let agreement = counts.agreement();
        if !agreement.is_some_and(|a| a >= needed) {
            return ActionRolloutStatus {
                percent: 0,
                since: Some(now.to_string()),
                agreement,
                state: RolloutState::Paused,
                message: Some(waiting_message(needed, agreement)),
                spec_digest: digest,
                ..Default::default()
            };
        }
    }
    at_step(spec, &digest, 0, now, interval)
}

fn at_step(
    spec: &ActionRollout,
    digest: &str,
    step: usize,
    now: Timestamp,
    interval: Duration,
) -> ActionRolloutStatus {
    let last = step + 1 >= spec.steps.len();
    let next = SignedDuration::try_from(interval)
        .ok()
        .and_then(|d| now.checked_add(d).ok());
    ActionRolloutStatus {
        percent: spec.steps.get(step).copied().unwrap_or(100).min(100),
        step: step as u32,
        since: Some(now.to_string()),
        next_step_at: if last {
            None
        } else {
            next.map(|at| at.to_string())
        },
        state: if last {
            RolloutState::Complete
        } else {
            RolloutState::Progressing
        },
        spec_digest: digest.to_owned(),
        ..Default::default()
    }
}

fn waiting_message(needed: f64, agreement: Option<f64>) -> String {
    match agreement {
        Some(a) => format!("waiting for agreement {a:.3} to reach {needed:.3}"),
        None => format!("waiting for agreement to reach {needed:.3}: nothing compared yet"),
    }
}

fn breached(action: &str, spec: &ActionRollout, status: &ActionRolloutStatus) -> Option<Breach> {
    let decisions = status.decisions;
    if decisions == 0 || decisions < u64::from(spec.guard.min_samples) {
        return None;
    }
    let ratio = |n: u64| n as f64 / decisions as f64;
    [
        (
            "failure_ratio",
            ratio(status.failures),
            spec.guard.max_failure_ratio,
        ),
        (
            "override_ratio",
            ratio(status.overrides),
            spec.guard.max_override_ratio,
        ),
    ]
    .into_iter()
    .find(|(_, value, threshold)| value > threshold)
    .map(|(measure, value, threshold)| Breach {
        action: action.to_owned(),
        measure,
        value,
        threshold,
        decisions,
    })
}

/// The `kubectl get` line: each action's state and share, in `spec.rollout`'s order.
pub fn summary(
    rollout: &std::collections::BTreeMap<String, ActionRolloutStatus>,
) -> Option<String> {
    let parts: Vec<String> = super::ACTIONS
        .iter()
        .filter_map(|action| {
            rollout
                .get(*action)
                .map(|s| format!("{action}={} {}%", s.state.as_str(), s.percent))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ActionRollout {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn counts(decisions: u64, failures: u64, overrides: u64) -> StepCounts {
        StepCounts {
            decisions,
            failures,
            overrides,
            ..Default::default()
        }
    }

    #[test]
    fn steps_advance_on_schedule_once_enough_decisions_were_made() {
        let spec = spec("steps: [1, 10, 50, 100]\nstepInterval: 10m\nminDecisionsPerStep: 5");
        let first = evaluate("dispatch", &spec, None, StepCounts::default(), at(0)).status;
        assert_eq!((first.percent, first.step), (1, 0));
        assert_eq!(first.state, RolloutState::Progressing);
        assert_eq!(
            first.next_step_at.as_deref(),
            Some(at(600).to_string().as_str())
        );

        let early = evaluate("dispatch", &spec, Some(&first), counts(9, 0, 0), at(599)).status;
        assert_eq!(early.percent, 1, "not before stepInterval");
        let few = evaluate("dispatch", &spec, Some(&first), counts(4, 0, 0), at(600)).status;
        assert_eq!(few.percent, 1, "not before minDecisionsPerStep");
        let second = evaluate("dispatch", &spec, Some(&first), counts(5, 0, 0), at(600)).status;
        assert_eq!((second.percent, second.step, second.decisions), (10, 1, 0));

        let third = evaluate("dispatch", &spec, Some(&second), counts(5, 0, 0), at(1200)).status;
        let last = evaluate("dispatch", &spec, Some(&third), counts(5, 0, 0), at(1800)).status;
        assert_eq!((last.percent, last.state), (100, RolloutState::Complete));
        assert_eq!(last.next_step_at, None);
    }

    #[test]
    fn a_breached_guard_rolls_back_only_after_min_samples_and_stays_back() {
        let spec = spec(
            "steps: [10, 50]\nstepInterval: 1s\nminDecisionsPerStep: 1\n\
             guard: {maxFailureRatio: 0.2, minSamples: 10}",
        );
        let first = evaluate("respond", &spec, None, StepCounts::default(), at(0)).status;
        let too_few = evaluate("respond", &spec, Some(&first), counts(9, 9, 0), at(0));
        assert_eq!(too_few.breach, None, "not judged before minSamples");

        let rolled = evaluate("respond", &spec, Some(&first), counts(10, 3, 0), at(5));
        let breach = rolled.breach.expect("3 of 10 failed, above 0.2");
        assert_eq!((breach.measure, breach.threshold), ("failure_ratio", 0.2));
        assert!((breach.value - 0.3).abs() < 1e-9);
        assert_eq!(rolled.status.percent, 0);
        assert_eq!(rolled.status.state, RolloutState::RolledBack);
        assert!(
            rolled
                .status
                .message
                .as_deref()
                .unwrap()
                .contains("failure ratio 0.300")
        );

        let later = evaluate(
            "respond",
            &spec,
            Some(&rolled.status),
            counts(10, 0, 0),
            at(99),
        );
        assert_eq!((later.status.percent, later.breach), (0, None));
    }

    #[test]
    fn overrides_past_their_ratio_roll_back_too() {
        let spec = spec("percent: 50\nguard: {maxOverrideRatio: 0.1, minSamples: 20}");
        let first = evaluate("dispatch", &spec, None, StepCounts::default(), at(0)).status;
        assert_eq!((first.percent, first.state), (50, RolloutState::Complete));
        let rolled = evaluate("dispatch", &spec, Some(&first), counts(20, 0, 3), at(1));
        assert_eq!(rolled.breach.unwrap().measure, "override_ratio");
    }

    #[test]
    fn a_spec_change_resumes_a_rolled_back_rollout() {
        let before = spec("steps: [10, 50]\nguard: {minSamples: 1}");
        let first = evaluate("dispatch", &before, None, StepCounts::default(), at(0)).status;
        let rolled = evaluate("dispatch", &before, Some(&first), counts(1, 1, 0), at(1)).status;
        assert_eq!(rolled.state, RolloutState::RolledBack);
        let bumped =
            spec("steps: [10, 50]\nguard: {minSamples: 1}\nrestartedAt: '2026-12-04T21:00:00Z'");
        let resumed = evaluate(
            "dispatch",
            &bumped,
            Some(&rolled),
            StepCounts::default(),
            at(2),
        );
        assert_eq!(resumed.status.state, RolloutState::Progressing);
        assert_eq!(resumed.status.percent, 10);
    }

    #[test]
    fn min_agreement_holds_the_first_step_until_it_is_reached() {
        let spec = spec("steps: [5, 50]\nguard: {minAgreement: 0.8}");
        let shadow = |compared, agreed| StepCounts {
            compared,
            agreed,
            ..Default::default()
        };
        let paused = evaluate("dispatch", &spec, None, shadow(0, 0), at(0)).status;
        assert_eq!((paused.percent, paused.state), (0, RolloutState::Paused));
        let still = evaluate("dispatch", &spec, Some(&paused), shadow(10, 7), at(1)).status;
        assert_eq!((still.percent, still.state), (0, RolloutState::Paused));
        assert_eq!(still.agreement, Some(0.7));
        let started = evaluate("dispatch", &spec, Some(&still), shadow(10, 8), at(2)).status;
        assert_eq!(
            (started.percent, started.state),
            (5, RolloutState::Progressing)
        );
    }

    #[test]
    fn the_summary_names_each_action_in_spec_order() {
        let mut rollout = std::collections::BTreeMap::new();
        let status = |percent, state| ActionRolloutStatus {
            percent,
            state,
            ..Default::default()
        };
        rollout.insert("respond".into(), status(0, RolloutState::RolledBack));
        rollout.insert("dispatch".into(), status(10, RolloutState::Progressing));
        assert_eq!(
            summary(&rollout).unwrap(),
            "dispatch=Progressing 10%, respond=RolledBack 0%"
        );
    }
}
