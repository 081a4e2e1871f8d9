//! The watcher: every version of the resource in, at most one settings swap out.
//!
//! [`SettingsWatcher`] is a plain state machine over the watcher's events so that tests can
//! feed it events directly; [`run`] only connects it to a kube-rs watcher stream.

use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::watch as channel;

use super::resource::Observed;
use crate::config::{Settings, SettingsHandle};
use crate::metrics::Metrics;

/// Metrics of the Kubernetes source, registered in the shared registry.
#[derive(Clone)]
pub struct KubeMetrics {
    pub watch_errors: IntCounter,
    pub status_writer: IntGauge,
    pub status_write_errors: IntCounter,
}

impl KubeMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let registry = metrics.registry();
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("valid metric");
            // Registration fails only if this runs twice for one registry; the metric then
            // still counts, it is just not exported twice.
            let _ = registry.register(Box::new(metric.clone()));
            metric
        };
        let status_writer = IntGauge::new(
            "kube_status_writer",
            "1 while this pod holds the status-writer Lease, else 0.",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(status_writer.clone()));
        Self {
            watch_errors: counter(
                "kube_watch_errors_total",
                "Errors of the WebhookAutomation watch; the watcher relists and backs off.",
            ),
            status_writer,
            status_write_errors: counter(
                "kube_status_write_errors_total",
                "Failed writes of the WebhookAutomation status, its events or the pod reports.",
            ),
        }
    }
}

/// Turns watcher events about one resource into settings swaps.
pub struct SettingsWatcher {
    key: String,
    handle: SettingsHandle,
    metrics: Arc<Metrics>,
    observed: channel::Sender<Option<Arc<Observed>>>,
    listed: channel::Sender<bool>,
    /// Whether the resource appeared in the list under way (between `Init` and `InitDone`).
    seen_in_list: bool,
    /// `(uid, generation)` of the last version acted on, valid or not: a relist or a status
    /// write delivers the same generation again and must not log or count anything twice.
    last: Option<(String, i64)>,
    /// Whether the pod is read-only because the resource is missing.
    missing: bool,
}

impl SettingsWatcher {
    pub fn new(
        key: String,
        handle: SettingsHandle,
        metrics: Arc<Metrics>,
        observed: channel::Sender<Option<Arc<Observed>>>,
        listed: channel::Sender<bool>,
    ) -> Self {
        Self {
            key,
            handle,
            metrics,
            observed,
            listed,
            seen_in_list: false,
            last: None,
            missing: false,
        }
    }

    /// Handles one watcher event.
    pub fn handle(&mut self, event: Event<DynamicObject>) {
        match event {
            Event::Init => self.seen_in_list = false,
            Event::InitApply(object) => {
                self.seen_in_list = true;
                self.apply(&object);
            }
            Event::Apply(object) => self.apply(&object),
            Event::InitDone => {
                // A relist that no longer contains the resource is a deletion we missed.
                if !self.seen_in_list {
                    self.go_read_only("does not exist");
                }
                self.listed.send_replace(true);
            }
            Event::Delete(_) => self.go_read_only("was deleted"),
        }
    }

    fn apply(&mut self, object: &DynamicObject) {
        let observed = Observed::read(object, &self.key);
        let version = (observed.uid.clone(), observed.generation);
        let settings = observed.settings.clone();
        let generation = observed.generation;
        // Status writes and relists also land here: the status writer wants to see them.
        self.observed.send_replace(Some(Arc::new(observed)));
        if self.last.as_ref() == Some(&version) && !self.missing {
            return;
        }
        self.last = Some(version);
        self.missing = false;
        match settings {
            Ok(settings) => self.put_in_force(settings),
            Err(message) => {
                self.metrics.config_reload_errors.inc();
                let in_force = self.handle.current();
                tracing::error!(
                    resource = %self.key,
                    generation,
                    error = %message,
                    generation_in_force = in_force.generation,
                    source_in_force = %in_force.source,
                    "WebhookAutomation edit refused; the last good settings stay in force"
                );
            }
        }
    }

    fn put_in_force(&self, settings: Settings) {
        tracing::info!(
            resource = %self.key,
            generation = settings.generation,
            flags = ?settings.flags(),
            "settings applied from the WebhookAutomation resource"
        );
        self.handle.replace(settings);
        self.handle.current().record_metrics(&self.metrics);
    }

    fn go_read_only(&mut self, why: &str) {
        self.observed.send_replace(None);
        if self.missing {
            return;
        }
        self.missing = true;
        self.last = None;
        let reason = format!("WebhookAutomation {} {why}", self.key);
        tracing::error!(
            resource = %self.key,
            "{reason}: every writing flag is now off (read-only) until it exists again"
        );
        let spec = self.handle.current().spec.clone();
        self.handle.replace(Settings::read_only(spec, &reason, 0));
        self.handle.current().record_metrics(&self.metrics);
    }
}

/// Watches the resource named `name` for as long as the task lives.
///
/// Errors do not end the stream: the watcher relists on `410 Gone`, re-watches after a
/// dropped connection, and the default backoff (client-go's: 0.8 s doubling to 30 s) spaces
/// retries while the API server is away.
pub async fn run(
    api: Api<DynamicObject>,
    name: String,
    mut watcher: SettingsWatcher,
    metrics: KubeMetrics,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = pin!(watch_stream(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => watcher.handle(event),
            Err(error) => {
                metrics.watch_errors.inc();
                tracing::warn!(
                    resource = %watcher.key,
                    error = %error,
                    "watch of the WebhookAutomation resource failed; retrying"
                );
            }
        }
    }
}
