//! `spec.rollout`: how far each writing action reaches, and when it pulls back.
//!
//! Only what the user asks for lives here; where a rollout stands (its step, counts and
//! state) is in `status.rollout`, written by deskhook, so a rollout never edits `spec` and
//! never fights the resource's owner.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CEL rule that a steps list (at most [`MAX_STEPS`] long) strictly increases. CEL in
/// Kubernetes has no indexed `all`, so each neighbouring pair is compared by index.
const STEPS_INCREASE: &str = "(size(self) < 2 || self[0] < self[1]) \
    && (size(self) < 3 || self[1] < self[2]) \
    && (size(self) < 4 || self[2] < self[3]) \
    && (size(self) < 5 || self[3] < self[4]) \
    && (size(self) < 6 || self[4] < self[5]) \
    && (size(self) < 7 || self[5] < self[6]) \
    && (size(self) < 8 || self[6] < self[7])";

/// Steps a rollout may have at most.
pub const MAX_STEPS: usize = 8;

/// A rollout per writing action. An action without one follows its flag alone: off is no
/// ticket, on is every ticket. With one, the flag stays the master switch: a rollout only ever
/// narrows what the flag allows.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// Moving tickets to the department the rules choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<ActionRollout>,
    /// Storing the CRM deal on the ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<ActionRollout>,
    /// Sending replies to customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<ActionRollout>,
    /// Creating reply drafts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_replies: Option<ActionRollout>,
    /// Setting ticket statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_ticket: Option<ActionRollout>,
    /// Writing CRM deal fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_deal: Option<ActionRollout>,
    /// Adding notes to CRM deals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_note: Option<ActionRollout>,
}

impl RolloutSpec {
    /// Each action's rollout with its name as `spec.rollout` spells it, in a stable order.
    pub fn named(&self) -> [(&'static str, Option<&ActionRollout>); 7] {
        [
            ("dispatch", self.dispatch.as_ref()),
            ("link", self.link.as_ref()),
            ("respond", self.respond.as_ref()),
            ("draftReplies", self.draft_replies.as_ref()),
            ("updateTicket", self.update_ticket.as_ref()),
            ("updateDeal", self.update_deal.as_ref()),
            ("addNote", self.add_note.as_ref()),
        ]
    }

    /// The rollout of one action, by its `spec.rollout` name.
    pub fn get(&self, action: &str) -> Option<&ActionRollout> {
        self.named()
            .into_iter()
            .find(|(name, _)| *name == action)
            .and_then(|(_, rollout)| rollout)
    }
}

/// The share of tickets one action reaches: a fixed `percent`, or `steps` that widen on a
/// schedule while the guard holds.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.percent) && has(self.steps))",
    "message": "a rollout has either a fixed percent or steps, not both"
}]))]
pub struct ActionRollout {
    /// A fixed share of tickets, 0 to 100. The same tickets stay in when it is raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        range(max = 100),
        extend("x-kubernetes-validations" = [{
            "rule": "self <= 100",
            "message": "a rollout percent must be 0 to 100"
        }])
    )]
    pub percent: Option<u32>,
    /// Shares of tickets in percent, strictly increasing, for example `[1, 10, 50, 100]`:
    /// the rollout starts at the first and moves to the next after `stepInterval` once
    /// `minDecisionsPerStep` decisions were made at the current one and the guard holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = 8),
        extend("x-kubernetes-validations" = [
            {
                "rule": "self.all(p, p >= 1 && p <= 100)",
                "message": "rollout steps must be 1 to 100 percent"
            },
            {
                "rule": STEPS_INCREASE,
                "message": "rollout steps must strictly increase"
            }
        ])
    )]
    pub steps: Vec<u32>,
    /// How long each step lasts at least, as a duration such as `30m`, `6h` or `2d`.
    #[serde(default = "default_step_interval")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(s|m|h|d) ?)+$"))]
    pub step_interval: String,
    /// Decisions this action must have made at a step before the next one starts.
    #[serde(default = "default_min_decisions")]
    #[schemars(range(max = 1_000_000))]
    pub min_decisions_per_step: u32,
    /// When the rollout pulls back to 0 %.
    #[serde(default)]
    pub guard: RolloutGuard,
    /// Any new value (for example the time of the edit) restarts a rollout that was rolled
    /// back: `kubectl patch` it after fixing the cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub restarted_at: Option<String>,
}

/// Thresholds of a rollout: past one, once `minSamples` were seen, the action goes back to
/// 0 % on every pod and stays there until the spec changes.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutGuard {
    /// Share of this action's writes that failed, 0 to 1, above which it is rolled back.
    #[serde(default = "default_max_failure_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_failure_ratio: f64,
    /// Share of this action's writes a person undid within `overrideWindow`, 0 to 1, above
    /// which it is rolled back (counted for `dispatch` and `updateTicket`).
    #[serde(default = "default_max_override_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_override_ratio: f64,
    /// Decisions seen at the current step before the ratios are judged.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub min_samples: u32,
    /// How long after deskhook's write a person's change of the same field counts as
    /// undoing it, as a duration such as `1h`.
    #[serde(default = "default_override_window")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(s|m|h|d) ?)+$"))]
    pub override_window: String,
    /// When set (0 to 1), the first step starts only once what deskhook would have done agrees
    /// this often with what people did next on tickets it did not touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_agreement: Option<f64>,
}

impl Default for RolloutGuard {
    fn default() -> Self {
        Self {
            max_failure_ratio: default_max_failure_ratio(),
            max_override_ratio: default_max_override_ratio(),
            min_samples: default_min_samples(),
            override_window: default_override_window(),
            min_agreement: None,
        }
    }
}

fn default_step_interval() -> String {
    "1h".to_owned()
}

fn default_min_decisions() -> u32 {
    20
}

fn default_max_failure_ratio() -> f64 {
    0.1
}

fn default_max_override_ratio() -> f64 {
    0.2
}

fn default_min_samples() -> u32 {
    20
}

fn default_override_window() -> String {
    "1h".to_owned()
}
