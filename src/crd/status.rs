//! What deskhook reports back on the resource, and the CRD document itself.
//!
//! The status is written by one pod at a time (the holder of the status-writer Lease), so
//! `kubectl get webhookautomation` answers "did my edit reach every pod?" without reading logs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AutomationFlags, WebhookAutomation};

/// The state of the resource as deskhook's pods see it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAutomationStatus {
    /// The `metadata.generation` deskhook last read, valid or not. When it equals the
    /// resource's generation, the conditions below are about the latest edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The generation whose settings are in force: the latest valid one. An invalid edit
    /// leaves this unchanged because pods keep the last good settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_in_force: Option<i64>,
    /// The automation flags in force, those of `generationInForce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<AutomationFlags>,
    /// The security-relevant settings in force (verification, trusted proxies, budgets,
    /// replay refusal, deduplication), by path, as compact JSON: what the next edit is
    /// compared with, so each change to them is recorded as an Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<std::collections::BTreeMap<String, String>>,
    /// Pods of this deployment that reported in the last lease period.
    #[serde(default)]
    pub pods: i32,
    /// Reporting pods that run `generationInForce`.
    #[serde(default)]
    pub updated_pods: i32,
    /// `Valid`: whether the latest generation passed validation (the message says why not).
    /// `Ready`: valid, and every reporting pod runs it. `Degraded`: some pod sees signature
    /// failures or workflow errors above its threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the latest edit of routing, replies or linking would have changed on recent
    /// tickets, replayed from their recorded facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<LastChange>,
    /// Where each action's rollout stands, by its `spec.rollout` name: the share every pod
    /// applies, the step, the counts it is judged on and its state.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rollout: std::collections::BTreeMap<String, ActionRolloutStatus>,
    /// One line for `kubectl get`: each rolled-out action's state and share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_summary: Option<String>,
}

/// Where one action's rollout stands.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionRolloutStatus {
    /// The share of tickets the action reaches now, 0 to 100, on every pod.
    pub percent: u32,
    /// Index of the current entry of `spec.rollout.<action>.steps` (0 for a fixed percent).
    #[serde(default)]
    pub step: u32,
    /// When the current step (or the rollback) started, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The earliest time the next step may start, RFC 3339; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_at: Option<String>,
    /// Decisions in which the action was due, made at the current step by every pod.
    #[serde(default)]
    pub decisions: u64,
    /// Of those, the writes that failed.
    #[serde(default)]
    pub failures: u64,
    /// Of those, the writes a person undid within the override window.
    #[serde(default)]
    pub overrides: u64,
    /// Share of tickets outside the rollout on which what deskhook would have done matched
    /// what a person did next, 0 to 1; absent before any such ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// `Progressing`, `Paused` (waiting for agreement), `Complete` or `RolledBack`.
    pub state: RolloutState,
    /// Why the rollout is in this state, for example the breached guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Digest of the spec entry this progress belongs to: a changed entry (new steps, a
    /// bumped `restartedAt`) starts the rollout again.
    #[serde(default)]
    pub spec_digest: String,
}

/// The state of one action's rollout.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RolloutState {
    /// On its steps, or at its fixed percent.
    #[default]
    Progressing,
    /// Held before the first step until the shadow agreement reaches `guard.minAgreement`.
    Paused,
    /// At its last step.
    Complete,
    /// A guard was breached: 0 % until the spec entry changes.
    RolledBack,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Complete => "Complete",
            Self::RolledBack => "RolledBack",
        }
    }
}

/// A backtest of an edit on the recent decisions: how many would come out differently.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastChange {
    /// The generation that made the edit.
    pub generation: i64,
    /// Recent decisions, made under earlier generations, replayed under this one.
    pub compared: i32,
    /// Of those, the decisions that would come out differently.
    pub changed: i32,
    /// Decisions with at least one change of each kind (`department`, `rule`, `reply`,
    /// `status`, `deal`, `deal_updates`, `note`, `skipped`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub by_kind: std::collections::BTreeMap<String, i32>,
    /// Digest of the settings that decide (departments, linking, routing, replies), so an
    /// edit of anything else (flags, limits) is not mistaken for one of these.
    pub settings_digest: String,
}

/// Values of a condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// The CRD as YAML, exactly as committed under `crds/` and in the chart.
pub fn crd_yaml() -> String {
    let crd = WebhookAutomation::crd();
    // Serialising a CRD built from types cannot fail: every map key is a string.
    let yaml = serde_yaml::to_string(&crd).unwrap_or_default();
    format!(
        "# Generated by `deskhook crd` from the Rust types in src/crd; do not edit.\n---\n{yaml}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn committed(path: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn committed_crds_equal_the_generator_output() {
        let generated = crd_yaml();
        for path in [
            "crds/webhookautomation.yaml",
            "charts/deskhook/crds/webhookautomation.yaml",
        ] {
            assert!(
                committed(path) == generated,
                "{path} differs from `deskhook crd`; regenerate it with \
                 `cargo run -- crd > {path}`"
            );
        }
    }

    #[test]
    fn the_crd_has_the_names_subresources_and_columns_users_rely_on() {
        let crd = serde_json::to_value(WebhookAutomation::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "webhookautomations.deskhook.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "wha");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        for column in ["Dispatch", "Link", "Respond", "Ready", "Updated", "Rollout"] {
            assert!(
                columns.contains(&column),
                "{column} missing from {columns:?}"
            );
        }
    }

    /// Walks a schema and returns the paths of properties without a description.
    fn undocumented(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                let here = format!("{path}.{name}");
                if property["description"].as_str().is_none_or(str::is_empty) {
                    out.push(here.clone());
                }
                undocumented(property, &here, out);
            }
        }
        if schema["items"].is_object() {
            undocumented(&schema["items"], &format!("{path}[]"), out);
        }
        if schema["additionalProperties"].is_object() {
            undocumented(&schema["additionalProperties"], &format!("{path}{{}}"), out);
        }
    }

    #[test]
    fn every_spec_and_status_field_has_a_user_facing_description() {
        let crd = serde_json::to_value(WebhookAutomation::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        undocumented(&schema["properties"]["spec"], "spec", &mut missing);
        undocumented(&schema["properties"]["status"], "status", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    #[test]
    fn the_schema_is_structural_every_field_has_a_type() {
        fn walk(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
            let typed = schema["type"].is_string()
                || schema["x-kubernetes-preserve-unknown-fields"] == true
                || schema["x-kubernetes-int-or-string"] == true;
            if !typed {
                out.push(path.to_owned());
            }
            for key in ["anyOf", "oneOf", "allOf", "$ref"] {
                if !schema[key].is_null() {
                    out.push(format!("{path} uses {key}"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    walk(property, &format!("{path}.{name}"), out);
                }
            }
            if schema["items"].is_object() {
                walk(&schema["items"], &format!("{path}[]"), out);
            }
            if schema["additionalProperties"].is_object() {
                walk(&schema["additionalProperties"], &format!("{path}{{}}"), out);
            }
        }
        let crd = serde_json::to_value(WebhookAutomation::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut problems = Vec::new();
        walk(&schema["properties"]["spec"], "spec", &mut problems);
        walk(&schema["properties"]["status"], "status", &mut problems);
        assert!(problems.is_empty(), "not structural: {problems:?}");
    }

    #[test]
    fn cel_rules_cover_what_the_schema_cannot_say() {
        let yaml = crd_yaml();
        for needle in [
            "department names must be unique",
            "routing rule names must be unique",
            "every replyTemplate named by a routing rule must be defined",
            "a deal condition needs exactly one operator",
            "minChars must not exceed maxChars",
            "replies.llm.url is not accepted",
            "verification.zohoJwt.jwksUrl is not accepted",
            "queue.redis.keyPrefix is not accepted",
            "a network wider than /8",
            "rollout steps must strictly increase",
            "a rollout percent must be 0 to 100",
        ] {
            assert!(yaml.contains(needle), "no CEL rule says {needle:?}");
        }
    }
}
