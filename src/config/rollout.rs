//! `spec.rollout` checked: the CRD's rules again, for a settings file or a cluster whose CRD is
//! older.

/// A rollout entry the settings refuse: the CRD's rules, checked again for a settings file or
/// a cluster whose CRD is older.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rollout.{action}: {why}")]
pub struct InvalidRollout {
    pub action: &'static str,
    pub why: String,
}

/// Checks every entry of `spec.rollout`.
pub fn validate(spec: &crate::crd::RolloutSpec) -> Result<(), InvalidRollout> {
    for (action, rollout) in spec.named() {
        let Some(rollout) = rollout else { continue };
        let refuse = |why: String| Err(InvalidRollout { action, why });
        if rollout.percent.is_some() && !rollout.steps.is_empty() {
            return refuse("a rollout has either a fixed percent or steps, not both".into());
        }
        if let Some(percent) = rollout.percent
            && percent > 100
        {
            return refuse(format!("a rollout percent must be 0 to 100, got {percent}"));
        }
        if rollout.steps.len() > crate::crd::MAX_STEPS {
            return refuse(format!(
                "at most {} steps, got {}",
                crate::crd::MAX_STEPS,
                rollout.steps.len()
            ));
        }
        if let Some(bad) = rollout.steps.iter().find(|p| !(1..=100).contains(*p)) {
            return refuse(format!("rollout steps must be 1 to 100 percent, got {bad}"));
        }
        if rollout.steps.windows(2).any(|pair| pair[0] >= pair[1]) {
            return refuse(format!(
                "rollout steps must strictly increase, got {:?}",
                rollout.steps
            ));
        }
        for (field, text) in [
            ("stepInterval", &rollout.step_interval),
            ("guard.overrideWindow", &rollout.guard.override_window),
        ] {
            if let Err(error) = humantime::parse_duration(text) {
                return refuse(format!("{field} {text:?} is not a duration: {error}"));
            }
        }
        let guard = &rollout.guard;
        for (field, ratio) in [
            ("guard.maxFailureRatio", Some(guard.max_failure_ratio)),
            ("guard.maxOverrideRatio", Some(guard.max_override_ratio)),
            ("guard.minAgreement", guard.min_agreement),
        ] {
            if let Some(ratio) = ratio
                && !(0.0..=1.0).contains(&ratio)
            {
                return refuse(format!("{field} must be 0 to 1, got {ratio}"));
            }
        }
        if guard.min_samples == 0 {
            return refuse("guard.minSamples must be at least 1".into());
        }
    }
    Ok(())
}
