//! Reading one `WebhookAutomation` object into settings, leniently.
//!
//! The resource is watched as a dynamic object and its spec parsed here rather than by the
//! watcher: a spec that does not parse then becomes an invalid generation (reported on the
//! status, last good settings kept) instead of a deserialisation error that would stall the
//! watcher on every relist.

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};

use crate::config::{Settings, SettingsSource};
use crate::crd::{WebhookAutomation, WebhookAutomationSpec, WebhookAutomationStatus};

/// The `WebhookAutomation` API of a namespace, as dynamic objects.
pub fn automation_api(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        namespace,
        &ApiResource::erase::<WebhookAutomation>(&()),
    )
}

/// One version of the resource as read from the API.
#[derive(Clone, Debug)]
pub struct Observed {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `metadata.resourceVersion`: changes with every write, status included.
    pub resource_version: String,
    /// `metadata.generation`: grows with every spec edit, not with status writes.
    pub generation: i64,
    /// The validated settings, or why this generation is invalid.
    pub settings: Result<Settings, String>,
    /// The status as stored (empty when absent or unreadable).
    pub status: WebhookAutomationStatus,
}

impl Observed {
    /// Reads an object; `source` names it in the settings (`namespace/name`).
    pub fn read(object: &DynamicObject, source: &str) -> Self {
        let generation = object.metadata.generation.unwrap_or(0);
        let spec = object.data.get("spec").cloned().unwrap_or_default();
        let settings = serde_json::from_value::<WebhookAutomationSpec>(spec)
            .map_err(|e| format!("spec does not parse: {e}"))
            .and_then(|spec| {
                Settings::from_spec(
                    spec,
                    SettingsSource::Kubernetes(source.to_owned()),
                    generation,
                )
                .map_err(|e| e.to_string())
            });
        let status = object
            .data
            .get("status")
            .cloned()
            .and_then(|status| serde_json::from_value(status).ok())
            .unwrap_or_default();
        Self {
            name: object.metadata.name.clone().unwrap_or_default(),
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            uid: object.metadata.uid.clone().unwrap_or_default(),
            resource_version: object.metadata.resource_version.clone().unwrap_or_default(),
            generation,
            settings,
            status,
        }
    }

    /// Whether the spec of this generation passed validation.
    pub fn is_valid(&self) -> bool {
        self.settings.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "deskhook.dev/v1alpha1",
            "kind": "WebhookAutomation",
            "metadata": {"name": "support", "namespace": "desk", "uid": "u-1", "generation": 4},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_valid_spec_becomes_settings_with_the_resource_generation() {
        let observed = Observed::read(&object(json!({"automation": {"respond": true}})), "desk/x");
        let settings = observed.settings.unwrap();
        assert_eq!(settings.generation, 4);
        assert!(settings.flags().respond);
        assert_eq!(settings.source, SettingsSource::Kubernetes("desk/x".into()));
    }

    #[test]
    fn a_spec_that_does_not_parse_is_an_invalid_generation_not_an_error() {
        let observed = Observed::read(&object(json!({"automation": {"respond": "yes"}})), "x");
        let message = observed.settings.unwrap_err();
        assert!(message.contains("spec does not parse"), "{message}");
    }

    #[test]
    fn a_spec_failing_validation_says_why() {
        let observed = Observed::read(&object(json!({"queue": {"workers": 0}})), "x");
        assert_eq!(
            observed.settings.unwrap_err(),
            "queue.workers must be between 1 and 256, got 0"
        );
    }
}
