//! The rollout metrics, registered once per process whichever source the settings come from,
//! so the alert on rollbacks always finds its series.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

/// The rollout metrics: the share each pod applies, the writer's rollbacks and the shadow
/// agreement.
#[derive(Clone, Debug)]
pub struct RolloutMetrics {
    pub percent: IntGaugeVec,
    pub aborts: IntCounterVec,
    pub agreement: GaugeVec,
}

impl RolloutMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let registry = metrics.registry();
        let percent = IntGaugeVec::new(
            Opts::new(
                "rollout_percent",
                "Share of tickets, in percent, each writing action reaches on this pod.",
            ),
            &["action"],
        )
        .expect("valid metric");
        let aborts = IntCounterVec::new(
            Opts::new(
                "rollout_aborts_total",
                "Rollouts pulled back to 0 % by the status writer, by action and breached \
                 measure (failure_ratio, override_ratio).",
            ),
            &["action", "reason"],
        )
        .expect("valid metric");
        let agreement = GaugeVec::new(
            Opts::new(
                "shadow_agreement_ratio",
                "Share of tickets outside an action's rollout on which what deskhook would \
                 have done matched what a person did next (dispatch, updateTicket), as the \
                 status last published it.",
            ),
            &["action"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(agreement.clone()));
        // Registration fails only if this runs twice for one registry; the metrics then still
        // count, they are just not exported twice.
        let _ = registry.register(Box::new(percent.clone()));
        let _ = registry.register(Box::new(aborts.clone()));
        for action in super::ACTIONS {
            for reason in ["failure_ratio", "override_ratio"] {
                aborts.with_label_values(&[action, reason]);
            }
        }
        Self {
            percent,
            aborts,
            agreement,
        }
    }
}
