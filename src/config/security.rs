//! The settings that decide who gets in and what a forger can cost: which deliveries verify,
//! which addresses are trusted, the per-client budgets, replay refusal, deduplication. Any
//! change to them is recorded like a flag change (a log line here, a Kubernetes Event from the
//! status writer), so switching a protection off is never silent.

use std::collections::BTreeMap;

use crate::crd::{RateLimitSpec, WebhookAutomationSpec};

/// The security-relevant values of a spec, by their path in the resource, each as compact
/// JSON. Stored as `status.security` so the next edit can be compared with it.
pub fn security_settings(spec: &WebhookAutomationSpec) -> BTreeMap<String, String> {
    let json = |value: serde_json::Value| value.to_string();
    let bucket = |b: &RateLimitSpec| {
        json(serde_json::json!({
            "enabled": b.enabled,
            "requestsPerSecond": b.requests_per_second,
            "burst": b.burst,
        }))
    };
    let limits = &spec.limits;
    let jwt = spec.verification.zoho_jwt.as_ref();
    [
        (
            "verification.zohoJwt.orgId",
            json(jwt.map(|j| j.org_id.clone()).into()),
        ),
        (
            "verification.zohoJwt.webhookIds",
            json(jwt.map(|j| j.webhook_ids.clone()).into()),
        ),
        (
            "verification.hmac.header",
            json(spec.verification.hmac.header.clone().into()),
        ),
        ("limits.rateLimit", bucket(&limits.rate_limit)),
        (
            "limits.failedVerificationLimit",
            bucket(&limits.failed_verification_limit),
        ),
        (
            "limits.trustedProxies",
            json(limits.trusted_proxies.clone().into()),
        ),
        (
            "limits.allowedSourceRanges",
            json(limits.allowed_source_ranges.clone().into()),
        ),
        (
            "limits.rejectReplayedTokens",
            json(limits.reject_replayed_tokens.into()),
        ),
        ("limits.maxConnections", json(limits.max_connections.into())),
        (
            "limits.maxConnectionsPerClient",
            json(limits.max_connections_per_client.into()),
        ),
        (
            "queue.dedupeWindowSeconds",
            json(spec.queue.dedupe_window_seconds.into()),
        ),
        (
            "zoho.ignoreSourceId",
            json(spec.zoho.ignore_source_id.clone().into()),
        ),
    ]
    .into_iter()
    .map(|(path, value)| (path.to_owned(), value))
    .collect()
}

/// One security-relevant value that differs between two settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityChange {
    pub field: String,
    pub from: String,
    pub to: String,
}

impl SecurityChange {
    /// E.g. `limits.rejectReplayedTokens true → false`.
    pub fn note(&self) -> String {
        format!("{} {} → {}", self.field, self.from, self.to)
    }
}

/// The values that differ between `before` and `after` (a field absent on one side reads as
/// `null`, so an older status without it still compares).
pub fn security_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<SecurityChange> {
    let absent = "null".to_owned();
    after
        .iter()
        .filter_map(|(field, to)| {
            let from = before.get(field).unwrap_or(&absent);
            (from != to).then(|| SecurityChange {
                field: field.clone(),
                from: from.clone(),
                to: to.clone(),
            })
        })
        .collect()
}

/// Logs each security-relevant difference between two specs put in force one after the other.
pub fn log_security_changes(before: &WebhookAutomationSpec, after: &WebhookAutomationSpec) {
    for change in security_changes(&security_settings(before), &security_settings(after)) {
        tracing::warn!(
            setting = %change.field,
            from = %change.from,
            to = %change.to,
            "security-relevant setting changed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> WebhookAutomationSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn switching_a_protection_off_is_a_change_named_by_its_path() {
        let before = security_settings(&spec("{}"));
        let after = security_settings(&spec(
            "limits: {rejectReplayedTokens: false, trustedProxies: [10.0.0.0/8]}",
        ));
        let notes: Vec<String> = security_changes(&before, &after)
            .iter()
            .map(SecurityChange::note)
            .collect();
        assert_eq!(
            notes,
            [
                "limits.rejectReplayedTokens true → false",
                r#"limits.trustedProxies [] → ["10.0.0.0/8"]"#,
            ]
        );
    }

    #[test]
    fn flags_and_routing_are_not_security_settings() {
        let before = security_settings(&spec("{}"));
        let after = security_settings(&spec("automation: {respond: true}\ndepartments: [DOC]"));
        assert!(security_changes(&before, &after).is_empty());
    }
}
