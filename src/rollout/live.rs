//! The two pieces of rollout state a pod holds: the shares the status writer published, and
//! this pod's counts at each action's current step.
//!
//! Both are behind `std::sync` locks held only for a map lookup or insert, never across an
//! `.await`; a worker reads the published shares once per writing step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::RolloutMetrics;
use super::{Outside, StepCounts, admit, bucket, effective_percent, spec_digest};
use crate::config::Settings;
use crate::crd::ActionRolloutStatus;
use crate::metrics::Metrics;

/// The rollout state of one pod, shared by its workers, its status watch and its report.
#[derive(Clone, Debug, Default)]
pub struct Rollouts {
    published: Arc<RwLock<Arc<BTreeMap<String, ActionRolloutStatus>>>>,
    tally: Arc<Tally>,
    metrics: Arc<OnceLock<RolloutMetrics>>,
}

impl Rollouts {
    /// The rollout metrics in `metrics`' registry, registered on the first call.
    pub fn metrics(&self, metrics: &Metrics) -> RolloutMetrics {
        self.metrics
            .get_or_init(|| RolloutMetrics::register(metrics))
            .clone()
    }

    /// Takes the shares from a new status (every pod calls this when its watch brings one).
    pub fn publish(&self, rollout: &BTreeMap<String, ActionRolloutStatus>) {
        let mut published = self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if **published != *rollout {
            *published = Arc::new(rollout.clone());
        }
    }

    /// The shares last published.
    pub fn published(&self) -> Arc<BTreeMap<String, ActionRolloutStatus>> {
        self.published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The share of `action` this pod applies under `settings`, in percent.
    pub fn percent(&self, settings: &Settings, action: &str) -> u32 {
        let published = self.published();
        effective_percent(
            flag(settings, action),
            settings.spec.rollout.get(action),
            published.get(action),
        )
    }

    /// Whether `action` may write on `ticket_id`: `Err(None)` when its flag is off,
    /// `Err(Some(_))` when the ticket is outside the share this pod applies now.
    pub fn gate(
        &self,
        settings: &Settings,
        action: &str,
        ticket_id: &str,
    ) -> Result<(), Option<Outside>> {
        if !flag(settings, action) {
            return Err(None);
        }
        if settings.spec.rollout.get(action).is_none() {
            return Ok(());
        }
        let percent = self.percent(settings, action);
        admit(bucket(action, ticket_id), percent).map_err(Some)
    }

    /// Counts one attempted write of `action` at its current step.
    pub fn count(&self, settings: &Settings, action: &str, failed: bool) {
        let Some(step) = self.step(settings, action) else {
            return;
        };
        self.tally.add(
            action,
            step,
            StepCounts {
                decisions: 1,
                failures: u64::from(failed),
                ..Default::default()
            },
        );
    }

    /// Counts a person undoing a write of `action` at its current step.
    pub fn count_override(&self, settings: &Settings, action: &str) {
        if let Some(step) = self.step(settings, action) {
            let overrides = StepCounts {
                overrides: 1,
                ..Default::default()
            };
            self.tally.add(action, step, overrides);
        }
    }

    /// Counts a comparison of what `action` would have done with what a person did next.
    pub fn count_shadow(&self, settings: &Settings, action: &str, agreed: bool) {
        if let Some(step) = self.step(settings, action) {
            let shadow = StepCounts {
                compared: 1,
                agreed: u64::from(agreed),
                ..Default::default()
            };
            self.tally.add(action, step, shadow);
        }
    }

    /// This pod's counts, for its report.
    pub fn tally(&self) -> BTreeMap<String, TalliedStep> {
        self.tally.snapshot()
    }

    /// The step counts are kept under: the spec entry's digest and the published step.
    fn step(&self, settings: &Settings, action: &str) -> Option<(String, u32)> {
        let spec = settings.spec.rollout.get(action)?;
        let digest = spec_digest(spec);
        let step = self
            .published()
            .get(action)
            .filter(|s| s.spec_digest == digest)
            .map_or(0, |s| s.step);
        Some((digest, step))
    }
}

/// A flag by its `spec.rollout` name.
fn flag(settings: &Settings, action: &str) -> bool {
    let flags = settings.flags();
    match action {
        "dispatch" => flags.dispatch,
        "link" => flags.link,
        "respond" => flags.respond,
        "draftReplies" => flags.draft_replies,
        "updateTicket" => flags.update_ticket,
        "updateDeal" => flags.update_deal,
        "addNote" => flags.add_note,
        _ => false,
    }
}

/// One pod's counts for an action at one step of one spec entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TalliedStep {
    pub spec_digest: String,
    pub step: u32,
    #[serde(flatten)]
    pub counts: StepCounts,
}

/// This pod's counts per action, at the step it last counted in. A new step (or spec entry)
/// starts from zero: the writer judges each step on its own decisions.
#[derive(Debug, Default)]
pub struct Tally {
    steps: Mutex<BTreeMap<String, TalliedStep>>,
}

impl Tally {
    fn add(&self, action: &str, (spec_digest, step): (String, u32), counts: StepCounts) {
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = steps.entry(action.to_owned()).or_default();
        if entry.spec_digest != spec_digest || entry.step != step {
            *entry = TalliedStep {
                spec_digest,
                step,
                counts: StepCounts::default(),
            };
        }
        entry.counts.add(&counts);
    }

    fn snapshot(&self) -> BTreeMap<String, TalliedStep> {
        self.steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
