//! The `WebhookAutomation` resource read from a YAML file, and watched for edits.
//!
//! The file is polled rather than watched with inotify: polling sees the symlink swap a
//! Kubernetes ConfigMap mount performs, works on every filesystem, and costs one small read
//! every half second.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Settings, SettingsHandle, SettingsSource};
use crate::crd::{self, WebhookAutomationDocument, WebhookAutomationSpec};
use crate::metrics::Metrics;

/// How often the settings file is read for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A settings file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsFileError {
    #[error("failed to read settings file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse settings file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("settings file {path} holds {found}, expected {expected}")]
    WrongKind {
        path: String,
        found: String,
        expected: String,
    },
    #[error("settings file {path} is invalid: {source}")]
    Invalid {
        path: String,
        #[source]
        source: super::InvalidSettings,
    },
}

/// Reads and parses a `WebhookAutomation` YAML document.
pub fn load_spec_file(path: &Path) -> Result<WebhookAutomationSpec, SettingsFileError> {
    let bytes = std::fs::read(path).map_err(|source| SettingsFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_spec(path, &bytes)
}

fn parse_spec(path: &Path, bytes: &[u8]) -> Result<WebhookAutomationSpec, SettingsFileError> {
    let document: WebhookAutomationDocument =
        serde_yaml::from_slice(bytes).map_err(|e| SettingsFileError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    let expected = format!("{}/{} {}", crd::GROUP, crd::VERSION, crd::KIND);
    let found = format!("{} {}", document.api_version, document.kind);
    if found != expected {
        return Err(SettingsFileError::WrongKind {
            path: path.display().to_string(),
            found,
            expected,
        });
    }
    Ok(document.spec)
}

/// Loads the file as validated settings with the given generation.
pub fn load_settings_file(path: &Path, generation: i64) -> Result<Settings, SettingsFileError> {
    let spec = load_spec_file(path)?;
    settings_from(path, spec, generation)
}

fn settings_from(
    path: &Path,
    spec: WebhookAutomationSpec,
    generation: i64,
) -> Result<Settings, SettingsFileError> {
    Settings::from_spec(
        spec,
        SettingsSource::File(path.display().to_string()),
        generation,
    )
    .map_err(|source| SettingsFileError::Invalid {
        path: path.display().to_string(),
        source,
    })
}

/// Watches the file and puts every valid edit in force; an invalid edit is logged and counted
/// and the settings in force stay.
pub fn watch_spec_file(
    path: PathBuf,
    handle: SettingsHandle,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = std::fs::read(&path).map_err(|e| e.kind());
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let current = tokio::fs::read(&path).await.map_err(|e| e.kind());
            if current == last {
                continue;
            }
            last = current.clone();
            let generation = handle.current().generation + 1;
            let outcome = match current {
                Err(kind) => Err(SettingsFileError::Read {
                    path: path.display().to_string(),
                    source: kind.into(),
                }),
                Ok(bytes) => parse_spec(&path, &bytes)
                    .and_then(|spec| settings_from(&path, spec, generation)),
            };
            match outcome {
                Ok(settings) if settings.spec == handle.current().spec => {}
                Ok(settings) => {
                    tracing::info!(
                        generation,
                        source = %settings.source,
                        flags = ?settings.flags(),
                        "settings reloaded"
                    );
                    handle.replace(settings);
                    handle.current().record_metrics(&metrics);
                }
                Err(error) => {
                    metrics.config_reload_errors.inc();
                    tracing::error!(
                        error = %error,
                        generation_in_force = generation - 1,
                        "settings reload failed; the last good settings stay in force"
                    );
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_of_another_kind_is_refused() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nspec: {}\n";
        let err = parse_spec(Path::new("x.yaml"), yaml).unwrap_err();
        assert!(matches!(err, SettingsFileError::WrongKind { .. }), "{err}");
    }

    #[test]
    fn unknown_spec_fields_are_refused() {
        let yaml = b"apiVersion: deskhook.dev/v1alpha1\nkind: WebhookAutomation\nspec:\n  automation: {respnd: true}\n";
        let err = parse_spec(Path::new("x.yaml"), yaml).unwrap_err();
        assert!(err.to_string().contains("respnd"), "{err}");
    }
}
