//! Guarded rollout: which tickets an action reaches, and how its share moves.
//!
//! Everything here is a pure function, so every pod, the status writer and a test compute the
//! same answers from the same inputs:
//! - [`bucket`]: a ticket's place, 0 to 9,999, for one action. It depends on nothing but the
//!   action and the ticket id, so it is the same on every pod and after a restart, and a wider
//!   share (`bucket < percent × 100`) keeps every ticket a narrower one had.
//! - [`effective_percent`]: the share a pod applies, from the flag, `spec.rollout` and the
//!   status the elected writer published.
//! - [`evaluate`]: the writer's step: advance on schedule, pause for agreement, or roll back
//!   when a guard is breached.

mod evaluate;
mod live;
mod metrics;

pub use evaluate::{Breach, Evaluation, StepCounts, evaluate, spec_digest, summary};
pub use live::{Rollouts, TalliedStep, Tally};
pub use metrics::RolloutMetrics;
// Checking `spec.rollout` belongs to the settings, which every other module reads.
pub use crate::config::rollout::{InvalidRollout, validate};

use crate::crd::{ActionRollout, ActionRolloutStatus};

/// Buckets a ticket can fall in; a percent is `percent × 100` of them.
pub const BUCKETS: u32 = 10_000;

/// The writing actions a rollout can cover, as `spec.rollout` names them.
pub const ACTIONS: [&str; 7] = [
    "dispatch",
    "link",
    "respond",
    "draftReplies",
    "updateTicket",
    "updateDeal",
    "addNote",
];

/// The bucket of `ticket_id` for `action`, 0 to [`BUCKETS`] − 1.
///
/// The action is part of the hash so that the first 1 % of dispatch is not also the first 1 %
/// of every other action: each action's early tickets are an independent sample.
pub fn bucket(action: &str, ticket_id: &str) -> u32 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(action.as_bytes());
    // A separator no action name contains keeps ("ab", "c") and ("a", "bc") apart.
    hasher.update(&[0]);
    hasher.update(ticket_id.as_bytes());
    (hasher.digest() % u64::from(BUCKETS)) as u32
}

/// A ticket outside an action's share: why the write was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outside {
    pub bucket: u32,
    /// The first bucket outside the share (`percent × 100`).
    pub threshold: u32,
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "outside rollout (bucket {} ≥ {})",
            self.bucket, self.threshold
        )
    }
}

/// Whether a ticket of `bucket` is inside a share of `percent`.
pub fn admit(bucket: u32, percent: u32) -> Result<(), Outside> {
    let threshold = percent.min(100) * (BUCKETS / 100);
    if bucket < threshold {
        Ok(())
    } else {
        Err(Outside { bucket, threshold })
    }
}

/// The share a pod applies to an action, in percent.
///
/// The flag is the master switch: off is 0. On without a rollout is 100 (every ticket, as
/// before rollouts existed). With a rollout, the writer's status is followed once it belongs
/// to the current spec entry; until then (no status yet, or one about an earlier entry, or no
/// Kubernetes at all) the entry's starting share applies, which for a rollout that waits for
/// agreement is 0.
pub fn effective_percent(
    flag: bool,
    spec: Option<&ActionRollout>,
    status: Option<&ActionRolloutStatus>,
) -> u32 {
    let Some(spec) = spec else {
        return if flag { 100 } else { 0 };
    };
    if !flag {
        return 0;
    }
    match status {
        Some(status) if status.spec_digest == spec_digest(spec) => status.percent.min(100),
        _ => starting_percent(spec),
    }
}

/// The share a rollout starts at before any evaluation.
pub fn starting_percent(spec: &ActionRollout) -> u32 {
    if let Some(percent) = spec.percent {
        return percent.min(100);
    }
    if spec.guard.min_agreement.is_some() {
        return 0;
    }
    spec.steps.first().copied().unwrap_or(100).min(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl Iterator<Item = String> {
        (0..10_000u64).map(|n| format!("{}", 1_892_000_000_000_000_000 + n * 7919))
    }

    fn share(action: &str, percent: u32) -> std::collections::BTreeSet<String> {
        ids()
            .filter(|id| admit(bucket(action, id), percent).is_ok())
            .collect()
    }

    #[test]
    fn ten_percent_of_ten_thousand_tickets_is_a_thousand_give_or_take_a_hundred() {
        let inside = share("dispatch", 10).len();
        assert!((900..=1100).contains(&inside), "{inside} tickets in 10 %");
    }

    #[test]
    fn widening_from_ten_to_fifty_percent_keeps_every_ticket_already_in() {
        let ten = share("dispatch", 10);
        let fifty = share("dispatch", 50);
        assert!(ten.is_subset(&fifty));
        assert!((4_700..=5_300).contains(&fifty.len()), "{}", fifty.len());
    }

    #[test]
    fn a_bucket_depends_only_on_the_action_and_the_ticket() {
        // Pinned values: a change of hash would move tickets between shares across an upgrade.
        assert_eq!(bucket("dispatch", "1892000000000000001"), 8_254);
        assert_eq!(bucket("respond", "1892000000000000001"), 3_497);
    }

    #[test]
    fn each_action_samples_its_own_tickets() {
        let dispatch = share("dispatch", 10);
        let respond = share("respond", 10);
        let both = dispatch.intersection(&respond).count();
        // Independent 10 % samples overlap on about 1 % of tickets, not 10 %.
        assert!(both < 250, "{both} tickets in both first shares");
    }

    #[test]
    fn outside_the_share_reads_like_the_issue_says() {
        assert_eq!(
            admit(7_321, 10).unwrap_err().to_string(),
            "outside rollout (bucket 7321 ≥ 1000)"
        );
        assert!(admit(0, 0).is_err());
        assert!(admit(9_999, 100).is_ok());
    }

    #[test]
    fn the_flag_is_the_master_switch() {
        let rollout = ActionRollout {
            percent: Some(30),
            ..Default::default()
        };
        assert_eq!(effective_percent(false, None, None), 0);
        assert_eq!(effective_percent(true, None, None), 100);
        assert_eq!(effective_percent(false, Some(&rollout), None), 0);
        assert_eq!(effective_percent(true, Some(&rollout), None), 30);
    }

    #[test]
    fn status_is_followed_only_when_it_belongs_to_the_current_entry() {
        let rollout: ActionRollout = serde_yaml::from_str("steps: [1, 10, 50]").unwrap();
        let mut status = ActionRolloutStatus {
            percent: 50,
            step: 2,
            spec_digest: spec_digest(&rollout),
            ..Default::default()
        };
        assert_eq!(effective_percent(true, Some(&rollout), Some(&status)), 50);
        status.spec_digest = "an earlier entry".into();
        assert_eq!(effective_percent(true, Some(&rollout), Some(&status)), 1);
        let waiting: ActionRollout =
            serde_yaml::from_str("steps: [5, 50]\nguard: {minAgreement: 0.8}").unwrap();
        assert_eq!(effective_percent(true, Some(&waiting), None), 0);
    }

    #[test]
    fn validation_refuses_what_the_crd_refuses() {
        let refused = |yaml: &str| {
            let spec: crate::crd::RolloutSpec = serde_yaml::from_str(yaml).unwrap();
            validate(&spec).unwrap_err().to_string()
        };
        assert!(refused("dispatch: {percent: 101}").contains("0 to 100"));
        assert!(refused("dispatch: {steps: [10, 5]}").contains("strictly increase"));
        assert!(refused("dispatch: {steps: [10, 10]}").contains("strictly increase"));
        assert!(refused("link: {steps: [0, 5]}").contains("1 to 100"));
        assert!(refused("link: {percent: 5, steps: [5]}").contains("not both"));
        assert!(refused("respond: {stepInterval: soon}").contains("not a duration"));
        assert!(refused("addNote: {guard: {maxFailureRatio: 2}}").contains("0 to 1"));
        let fine: crate::crd::RolloutSpec = serde_yaml::from_str(
            "dispatch: {steps: [1, 10, 50, 100], stepInterval: 30m, guard: {overrideWindow: 2h}}",
        )
        .unwrap();
        validate(&fine).unwrap();
    }
}
