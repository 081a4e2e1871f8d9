//! Live settings: one validated, immutable [`Settings`] value at a time.
//!
//! Sources (a YAML file, the environment, and the Kubernetes resource) only *produce* new
//! values; [`SettingsHandle`] swaps them in atomically and counts a generation. A request or a
//! job takes one snapshot ([`SettingsHandle::current`]) at its start and keeps it to the end, so
//! a flag flipped mid-run never half-applies. A value that fails validation never replaces the
//! one in force.

mod env;
mod file;
pub mod limits;
pub mod rollout;
mod secrets;
pub mod security;

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::crd::{
    AutomationFlags, QueueBackend, QueueSpec, VerificationSpec, WebhookAutomationSpec, ZohoSpec,
};
use crate::metrics::Metrics;

pub use env::{InvalidFlagVariable, seed_flags_in_env, spec_from_env};
pub use file::{SettingsFileError, load_settings_file, load_spec_file, watch_spec_file};
pub use secrets::{Secret, SecretFileError, SecretList, WatchedSecrets};

/// Zoho data centres deskhook knows the hosts of.
pub const REGIONS: [&str; 11] = [
    "com", "eu", "in", "com.au", "jp", "ca", "sa", "uk", "com.cn", "sg", "ae",
];

/// Where the settings in force came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingsSource {
    /// The seed's environment variables.
    Environment,
    /// A `WebhookAutomation` YAML file.
    File(String),
    /// A `WebhookAutomation` resource in Kubernetes (`namespace/name`).
    Kubernetes(String),
    /// Nothing could be loaded: every writing flag is off.
    ReadOnly(String),
}

impl std::fmt::Display for SettingsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Environment => f.write_str("environment"),
            Self::File(path) => write!(f, "file:{path}"),
            Self::Kubernetes(name) => write!(f, "kubernetes:{name}"),
            Self::ReadOnly(why) => write!(f, "read-only:{why}"),
        }
    }
}

/// A settings value that failed validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSettings {
    #[error("queue.capacity must be at least 1")]
    ZeroCapacity,
    #[error("queue.workers must be between 1 and 256, got {0}")]
    Workers(u32),
    #[error("department names must be non-empty and unique, {0:?} is not")]
    Department(String),
    #[error("events must be non-empty event type names, {0:?} is not")]
    Event(String),
    #[error("zoho.region {0:?} is not one of {REGIONS:?}")]
    Region(String),
    #[error("verification.zohoJwt needs an orgId and at least one webhook id")]
    JwtIncomplete,
    #[error("verification.hmac.header {0:?} is not a valid HTTP header name")]
    HmacHeader(String),
    #[error("routing rule names must be non-empty and unique, {0:?} is not")]
    RuleName(String),
    #[error(
        "routing rule {rule:?} names reply template {template:?}, which replies.templates does not define"
    )]
    MissingTemplate { rule: String, template: String },
    #[error("routing rule {rule:?}: the condition on {field:?} needs exactly one operator")]
    FieldOperator { rule: String, field: String },
    #[error("reply template {name:?} does not parse: {message}")]
    Template { name: String, message: String },
    #[error("replies.llm: minChars must not exceed maxChars")]
    LlmBounds,
    #[error("limits.{field}: {value:?} is not a network in CIDR notation")]
    Network { field: &'static str, value: String },
    #[error("limits.{0}: requestsPerSecond must be a positive number and burst at least 1")]
    RateLimit(&'static str),
    #[error("limits: {0}")]
    Limit(&'static str),
    #[error("{field} is not accepted in the resource: {why}")]
    NotInResource {
        field: &'static str,
        why: &'static str,
    },
    #[error("{field} must be {min} to {max}, got {value}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error(
        "limits.trustedProxies: {0:?} is wider than a /8 (IPv4) or /32 (IPv6), which would let any client choose its address"
    )]
    TrustedProxyTooWide(String),
    #[error(transparent)]
    Rollout(#[from] rollout::InvalidRollout),
}

/// The validated settings every part of deskhook reads.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The spec as accepted, for the parts that read rules and templates.
    pub spec: WebhookAutomationSpec,
    /// A counter that grows with every accepted change: the resource's
    /// `metadata.generation` in Kubernetes, a load counter for a file.
    pub generation: i64,
    /// Where this value came from.
    pub source: SettingsSource,
    /// When this value was put in force.
    pub applied_at: SystemTime,
    /// `spec.limits`' networks, parsed once.
    pub networks: limits::Networks,
    /// `spec.verification.hmac.header`, parsed once: every delivery looks it up.
    pub hmac_header: axum::http::HeaderName,
}

impl Settings {
    /// Records the flags and generation of these settings, now in force, in the gauges that
    /// show which settings a pod runs.
    pub fn record_metrics(&self, metrics: &Metrics) {
        for (name, on) in self.flags().named() {
            let flag = name.trim_start_matches("auto_");
            metrics
                .automation_enabled
                .with_label_values(&[flag])
                .set(i64::from(on));
        }
        metrics.config_generation.set(self.generation);
        metrics.queue_capacity.set(i64::from(self.queue_capacity()));
    }

    /// Events the configured backend holds at most: Redis has a bound of its own, sized for
    /// bulk updates, where the memory queue's is sized for one pod's memory.
    pub fn queue_capacity(&self) -> u32 {
        match self.queue().backend {
            QueueBackend::Memory => self.queue().capacity,
            QueueBackend::Redis => self.queue().redis.capacity,
        }
    }

    /// Validates a spec into settings.
    pub fn from_spec(
        spec: WebhookAutomationSpec,
        source: SettingsSource,
        generation: i64,
    ) -> Result<Self, InvalidSettings> {
        validate(&spec)?;
        let networks = limits::validate(&spec.limits)?;
        Ok(Self {
            networks,
            hmac_header: hmac_header(&spec),
            spec,
            generation,
            source,
            applied_at: SystemTime::now(),
        })
    }

    /// Settings with every writing flag off, used while no valid resource exists.
    pub fn read_only(mut spec: WebhookAutomationSpec, why: &str, generation: i64) -> Self {
        spec.automation = AutomationFlags::READ_ONLY;
        // Limits stay in force while read-only; networks that do not parse are left out.
        let networks = limits::validate(&spec.limits).unwrap_or_default();
        Self {
            networks,
            hmac_header: hmac_header(&spec),
            spec,
            generation,
            source: SettingsSource::ReadOnly(why.to_owned()),
            applied_at: SystemTime::now(),
        }
    }

    pub fn flags(&self) -> &AutomationFlags {
        &self.spec.automation
    }

    pub fn queue(&self) -> &QueueSpec {
        &self.spec.queue
    }

    pub fn verification(&self) -> &VerificationSpec {
        &self.spec.verification
    }

    pub fn zoho(&self) -> &ZohoSpec {
        &self.spec.zoho
    }

    pub fn limits(&self) -> &crate::crd::LimitsSpec {
        &self.spec.limits
    }

    /// Whether events for this department are acted on (names compare as [`names`] says:
    /// without case, accents or surrounding spaces).
    ///
    /// [`names`]: crate::names
    pub fn handles_department(&self, name: &str) -> bool {
        self.spec.departments.is_empty() || {
            let name = crate::names::name_key(name);
            self.spec
                .departments
                .iter()
                .any(|d| crate::names::name_key(d) == name)
        }
    }

    /// Whether this event type is acted on.
    pub fn handles_event(&self, event_type: &str) -> bool {
        event_type == "Manual" || self.spec.events.iter().any(|e| e == event_type)
    }
}

/// Fields that name where a secret or customer data goes, or whose data a pod reads: the
/// installer's to set, never the resource's (the CRD refuses them too).
fn refuse_installer_fields(spec: &WebhookAutomationSpec) -> Result<(), InvalidSettings> {
    let refuse = |field, why| Err(InvalidSettings::NotInResource { field, why });
    if spec
        .replies
        .llm
        .as_ref()
        .is_some_and(|llm| llm.url.is_some())
    {
        return refuse(
            "replies.llm.url",
            "the model's endpoint receives the key and reply text, so it is set where deskhook is installed (DESKHOOK_LLM_URL)",
        );
    }
    if spec
        .verification
        .zoho_jwt
        .as_ref()
        .is_some_and(|jwt| jwt.jwks_url.is_some())
    {
        return refuse(
            "verification.zohoJwt.jwksUrl",
            "whoever chooses the signing keys can forge deliveries; they come from the region's Desk host or DESKHOOK_JWKS_URL",
        );
    }
    if spec.queue.redis.key_prefix.is_some() {
        return refuse(
            "queue.redis.keyPrefix",
            "the prefix decides whose queue a pod reads and writes; set DESKHOOK_REDIS_KEY_PREFIX",
        );
    }
    Ok(())
}

/// `value` within `min..=max`, else an error naming `field`.
fn bounded(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), InvalidSettings> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(InvalidSettings::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// Upper bounds of the resource's numbers (the CRD says the same): a value past them would
/// break something else, such as Redis refusing a `SET … EX` of a huge window.
pub const MAX_DEDUPE_WINDOW_SECONDS: u64 = 7 * 86_400;
pub const MAX_CAPACITY: u64 = 10_000_000;
pub const MAX_REDIS_CAPACITY: u64 = 50_000_000;

/// The HMAC signature header's name; the default one when the spec's does not parse (only
/// read-only settings can hold such a spec).
fn hmac_header(spec: &WebhookAutomationSpec) -> axum::http::HeaderName {
    axum::http::HeaderName::from_bytes(spec.verification.hmac.header.as_bytes())
        .unwrap_or_else(|_| axum::http::HeaderName::from_static("x-zoho-signature"))
}

fn validate(spec: &WebhookAutomationSpec) -> Result<(), InvalidSettings> {
    refuse_installer_fields(spec)?;
    if spec.queue.capacity == 0 {
        return Err(InvalidSettings::ZeroCapacity);
    }
    bounded(
        "queue.capacity",
        spec.queue.capacity.into(),
        1,
        MAX_CAPACITY,
    )?;
    bounded(
        "queue.redis.capacity",
        spec.queue.redis.capacity.into(),
        1,
        MAX_REDIS_CAPACITY,
    )?;
    bounded(
        "queue.dedupeWindowSeconds",
        spec.queue.dedupe_window_seconds,
        0,
        MAX_DEDUPE_WINDOW_SECONDS,
    )?;
    bounded(
        "zoho.maxConcurrency",
        spec.zoho.max_concurrency.into(),
        1,
        100,
    )?;
    bounded(
        "zoho.echoWindowSeconds",
        spec.zoho.echo_window_seconds,
        0,
        3600,
    )?;
    if !(1..=256).contains(&spec.queue.workers) {
        return Err(InvalidSettings::Workers(spec.queue.workers));
    }
    for (i, name) in spec.departments.iter().enumerate() {
        let duplicate = spec.departments[..i]
            .iter()
            .any(|other| crate::names::same_name(other, name));
        if name.trim().is_empty() || duplicate {
            return Err(InvalidSettings::Department(name.clone()));
        }
    }
    if let Some(bad) = spec
        .events
        .iter()
        .find(|e| e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(InvalidSettings::Event(bad.clone()));
    }
    if !REGIONS.contains(&spec.zoho.region.as_str()) {
        return Err(InvalidSettings::Region(spec.zoho.region.clone()));
    }
    if let Some(jwt) = &spec.verification.zoho_jwt {
        let no_ids = jwt.webhook_ids.iter().all(|id| id.trim().is_empty());
        if jwt.org_id.trim().is_empty() || no_ids {
            return Err(InvalidSettings::JwtIncomplete);
        }
    }
    validate_routing(spec)?;
    rollout::validate(&spec.rollout)?;
    let header = &spec.verification.hmac.header;
    if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(InvalidSettings::HmacHeader(header.clone()));
    }
    Ok(())
}

fn validate_routing(spec: &WebhookAutomationSpec) -> Result<(), InvalidSettings> {
    for (i, rule) in spec.routing.iter().enumerate() {
        let duplicate = spec.routing[..i]
            .iter()
            .any(|other| other.name == rule.name);
        if rule.name.trim().is_empty() || duplicate {
            return Err(InvalidSettings::RuleName(rule.name.clone()));
        }
        if let Some(template) = &rule.then.reply_template
            && !spec.replies.templates.contains_key(template)
        {
            return Err(InvalidSettings::MissingTemplate {
                rule: rule.name.clone(),
                template: template.clone(),
            });
        }
        for condition in &rule.when.deal {
            let operators = [
                condition.equals.is_some(),
                condition.one_of.is_some(),
                condition.none_of.is_some(),
                condition.greater_than.is_some(),
                condition.less_than.is_some(),
                condition.present.is_some(),
            ];
            if operators.iter().filter(|set| **set).count() != 1 {
                return Err(InvalidSettings::FieldOperator {
                    rule: rule.name.clone(),
                    field: condition.field.clone(),
                });
            }
        }
    }
    for (name, source) in &spec.replies.templates {
        let mut env = minijinja::Environment::new();
        if let Err(error) = env.add_template("check", source) {
            return Err(InvalidSettings::Template {
                name: name.clone(),
                message: error.to_string(),
            });
        }
    }
    if spec
        .replies
        .llm
        .as_ref()
        .is_some_and(|llm| llm.min_chars > llm.max_chars)
    {
        return Err(InvalidSettings::LlmBounds);
    }
    Ok(())
}

/// The single holder of the settings in force.
///
/// A `watch` channel rather than a lock: readers clone an `Arc` and never hold anything across
/// an `.await`, and watchers (metrics, the status writer) are woken on every swap.
#[derive(Clone)]
pub struct SettingsHandle {
    sender: Arc<watch::Sender<Arc<Settings>>>,
}

impl SettingsHandle {
    pub fn new(initial: Settings) -> Self {
        let (sender, _) = watch::channel(Arc::new(initial));
        Self {
            sender: Arc::new(sender),
        }
    }

    /// The settings in force now: take it once and use it to the end of the request or job.
    pub fn current(&self) -> Arc<Settings> {
        self.sender.borrow().clone()
    }

    /// Puts new settings in force, logging every security-relevant change.
    pub fn replace(&self, settings: Settings) {
        let previous = self.sender.send_replace(Arc::new(settings));
        security::log_security_changes(&previous.spec, &self.current().spec);
    }

    /// A receiver woken on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Settings>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WebhookAutomationSpec {
        serde_yaml::from_str("departments: [DOC, Contact]").unwrap()
    }

    #[test]
    fn defaults_are_the_seed_level_one() {
        let settings = Settings::from_spec(spec(), SettingsSource::Environment, 1).unwrap();
        let flags = settings.flags();
        assert!(flags.dispatch && flags.link);
        assert!(!flags.respond && !flags.update_ticket && !flags.update_deal && !flags.add_note);
        assert_eq!(settings.queue().capacity, 10_000);
        assert!(settings.handles_event("Ticket_Thread_Add"));
        assert!(!settings.handles_event("Ticket_Delete"));
    }

    #[test]
    fn departments_compare_case_insensitively_and_empty_means_all() {
        let settings = Settings::from_spec(spec(), SettingsSource::Environment, 1).unwrap();
        assert!(settings.handles_department("doc"));
        assert!(!settings.handles_department("FACTURATION"));
        let all = Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap();
        assert!(all.handles_department("anything"));
    }

    #[test]
    fn a_department_typed_with_other_case_and_accents_is_the_same_department() {
        let mut spec = spec();
        spec.departments = vec!["PÉDAGOGIE".into()];
        let settings = Settings::from_spec(spec.clone(), SettingsSource::Environment, 1).unwrap();
        assert!(settings.handles_department("Pédagogie"));
        assert!(settings.handles_department(" pedagogie "));
        spec.departments = vec!["Pédagogie".into(), "PEDAGOGIE".into()];
        assert!(
            Settings::from_spec(spec, SettingsSource::Environment, 1).is_err(),
            "one department named twice"
        );
    }

    #[test]
    fn invalid_specs_are_refused_with_a_reason() {
        let cases = [
            (
                "departments: [DOC, doc]",
                InvalidSettings::Department("doc".into()),
            ),
            ("queue: {capacity: 0}", InvalidSettings::ZeroCapacity),
            ("queue: {workers: 0}", InvalidSettings::Workers(0)),
            (
                "zoho: {region: mars}",
                InvalidSettings::Region("mars".into()),
            ),
            (
                "events: ['Ticket Add']",
                InvalidSettings::Event("Ticket Add".into()),
            ),
            (
                "verification: {zohoJwt: {orgId: '1', webhookIds: []}}",
                InvalidSettings::JwtIncomplete,
            ),
        ];
        for (yaml, expected) in cases {
            let spec: WebhookAutomationSpec = serde_yaml::from_str(yaml).unwrap();
            let err = Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap_err();
            assert_eq!(err, expected, "{yaml}");
        }
    }

    #[test]
    fn the_resource_names_no_destination_and_no_key_prefix() {
        for (yaml, field) in [
            (
                "replies: {llm: {url: 'https://llm.example', model: m}}",
                "replies.llm.url",
            ),
            (
                "verification: {zohoJwt: {orgId: '1', webhookIds: [w], jwksUrl: 'https://keys.example'}}",
                "verification.zohoJwt.jwksUrl",
            ),
            (
                "queue: {redis: {keyPrefix: other}}",
                "queue.redis.keyPrefix",
            ),
        ] {
            let spec: WebhookAutomationSpec = serde_yaml::from_str(yaml).unwrap();
            let err = Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap_err();
            assert!(
                matches!(err, InvalidSettings::NotInResource { field: f, .. } if f == field),
                "{yaml}: {err}"
            );
        }
    }

    #[test]
    fn numbers_past_their_bounds_are_refused() {
        for (yaml, field) in [
            (
                "queue: {dedupeWindowSeconds: 604801}",
                "queue.dedupeWindowSeconds",
            ),
            ("queue: {capacity: 10000001}", "queue.capacity"),
            ("zoho: {maxConcurrency: 0}", "zoho.maxConcurrency"),
            ("zoho: {echoWindowSeconds: 86400}", "zoho.echoWindowSeconds"),
        ] {
            let spec: WebhookAutomationSpec = serde_yaml::from_str(yaml).unwrap();
            let err = Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap_err();
            assert!(
                matches!(err, InvalidSettings::OutOfRange { field: f, .. } if f == field),
                "{yaml}: {err}"
            );
        }
        let spec: WebhookAutomationSpec =
            serde_yaml::from_str("queue: {dedupeWindowSeconds: 604800}").unwrap();
        assert!(Settings::from_spec(spec, SettingsSource::Environment, 1).is_ok());
    }

    #[test]
    fn the_example_configurations_are_valid() {
        for path in ["examples/local.yaml", "examples/webhookautomation.yaml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            load_settings_file(&path, 1).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    #[test]
    fn read_only_turns_every_flag_off() {
        let settings = Settings::read_only(spec(), "resource missing", 0);
        assert_eq!(*settings.flags(), AutomationFlags::READ_ONLY);
    }

    #[test]
    fn the_schema_lists_the_regions_the_settings_accept() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::crd::WebhookAutomation::crd()).unwrap();
        let region = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["zoho"]["properties"]["region"];
        let listed: Vec<&str> = region["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(listed, REGIONS);
    }

    /// The CEL rules evaluated client-side (kube's `cel` feature) on the objects an API server
    /// would see: they must accept the reference configuration and refuse what
    /// `Settings::from_spec` refuses.
    #[test]
    fn cel_rules_accept_the_reference_configuration_and_refuse_bad_edits() {
        use kube::core::cel::validate_cel;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/webhookautomation.yaml");
        let spec = load_spec_file(&path).unwrap();
        validate_cel(&crate::crd::WebhookAutomation::new("support", spec)).unwrap();

        let cases = [
            ("departments: [DOC, doc]", "department names must be unique"),
            (
                "routing: [{name: a}, {name: a}]",
                "routing rule names must be unique",
            ),
            (
                "routing: [{name: a, then: {replyTemplate: missing}}]",
                "every replyTemplate named by a routing rule must be defined",
            ),
            (
                "routing: [{name: a, when: {deal: [{field: Stage, equals: x, present: true}]}}]",
                "a deal condition needs exactly one operator",
            ),
            (
                "replies: {llm: {model: m, minChars: 50, maxChars: 10}}",
                "minChars must not exceed maxChars",
            ),
            (
                "replies: {llm: {url: 'http://127.0.0.1:9/v1', model: m}}",
                "replies.llm.url is not accepted",
            ),
            (
                "verification: {zohoJwt: {orgId: '1', webhookIds: [w], jwksUrl: 'https://keys.evil.example'}}",
                "verification.zohoJwt.jwksUrl is not accepted",
            ),
            (
                "queue: {redis: {keyPrefix: other}}",
                "queue.redis.keyPrefix is not accepted",
            ),
            (
                "limits: {trustedProxies: [0.0.0.0/0]}",
                "a network wider than /8 (IPv4) or /32 (IPv6)",
            ),
            (
                "limits: {trustedProxies: ['10.0.0.0/8', '::/16']}",
                "a network wider than /8 (IPv4) or /32 (IPv6)",
            ),
            (
                "rollout: {dispatch: {percent: 101}}",
                "a rollout percent must be 0 to 100",
            ),
            (
                "rollout: {respond: {steps: [1, 10, 5, 100]}}",
                "rollout steps must strictly increase",
            ),
            (
                "rollout: {link: {steps: [10, 10]}}",
                "rollout steps must strictly increase",
            ),
            (
                "rollout: {addNote: {steps: [0, 50]}}",
                "rollout steps must be 1 to 100 percent",
            ),
            (
                "rollout: {updateTicket: {percent: 10, steps: [10, 50]}}",
                "a rollout has either a fixed percent or steps, not both",
            ),
        ];
        for (yaml, message) in cases {
            let spec: WebhookAutomationSpec = serde_yaml::from_str(yaml).unwrap();
            assert!(
                Settings::from_spec(spec.clone(), SettingsSource::Environment, 1).is_err(),
                "{yaml} is refused by the settings too"
            );
            let refused = validate_cel(&crate::crd::WebhookAutomation::new("support", spec))
                .expect_err(yaml)
                .to_string();
            assert!(refused.contains(message), "{yaml}: {refused}");
        }
        let fine: WebhookAutomationSpec = serde_yaml::from_str(
            "departments: [DOC, Contact]\nrouting: [{name: a, then: {replyTemplate: t}}]\n\
             replies: {templates: {t: hello}}\n\
             limits: {trustedProxies: ['10.0.0.0/8', '10.1.2.3', '2001:db8::/32']}\n\
             rollout: {dispatch: {steps: [1, 10, 50, 100]}}",
        )
        .unwrap();
        validate_cel(&crate::crd::WebhookAutomation::new("support", fine)).unwrap();
    }
}
