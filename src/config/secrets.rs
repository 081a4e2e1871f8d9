//! Secrets: values that redact themselves, and secret lists re-read when their file changes.
//!
//! Secrets only ever come from the environment or from mounted files (a Kubernetes Secret),
//! never from the `WebhookAutomation` resource, which many people can read.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often a secret file is read for changes (a rotated Kubernetes Secret appears within
/// the kubelet's sync period anyway).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A secret value. `Debug` and `Display` print `[redacted]`, so it cannot leak through a log
/// line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the few places that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An ordered list of secrets: the first signs, all verify (so keys can be rotated).
pub type SecretList = Arc<Vec<Secret>>;

/// Splits a list of secrets separated by commas or new lines.
pub fn split_secrets(text: &str) -> Vec<Secret> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

/// Secrets from an environment variable plus an optional file that is re-read on change.
#[derive(Clone, Debug)]
pub struct WatchedSecrets {
    from_env: Vec<Secret>,
    file: Option<PathBuf>,
    current: Arc<RwLock<SecretList>>,
    /// Keys shorter than this (in characters) are refused when the file changes.
    min_chars: usize,
}

/// A secret file that cannot be read at start-up.
#[derive(Debug, thiserror::Error)]
#[error("failed to read secret file {path}")]
pub struct SecretFileError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl Default for WatchedSecrets {
    /// No secret at all.
    fn default() -> Self {
        Self {
            from_env: Vec::new(),
            file: None,
            current: Arc::default(),
            min_chars: 0,
        }
    }
}

impl WatchedSecrets {
    /// Secrets from `env_value` (comma-separated) and `file` (comma- or line-separated).
    pub fn load(env_value: Option<&str>, file: Option<PathBuf>) -> Result<Self, SecretFileError> {
        let from_env = env_value.map(split_secrets).unwrap_or_default();
        let mut all = from_env.clone();
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| SecretFileError {
                path: path.display().to_string(),
                source,
            })?;
            all.extend(split_secrets(&text));
        }
        Ok(Self {
            from_env,
            file,
            current: Arc::new(RwLock::new(Arc::new(all))),
            min_chars: 0,
        })
    }

    /// The secrets in force now.
    pub fn current(&self) -> SecretList {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// Refuses, when the file changes, keys shorter than `min_chars` characters: a rotation
    /// cannot weaken what the start-up check required.
    pub fn with_min_chars(mut self, min_chars: usize) -> Self {
        self.min_chars = min_chars;
        self
    }

    /// Re-reads the file when it changes; a file that cannot be read keeps the last secrets.
    pub fn spawn_watch(&self, what: &'static str) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.file.clone()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            // Compared with the keys in force, not with the file's previous text: a change made
            // between loading and the first look is still seen.
            loop {
                tokio::time::sleep(POLL_INTERVAL).await;
                let Ok(text) = tokio::fs::read_to_string(&path).await else {
                    continue;
                };
                let mut all = this.from_env.clone();
                all.extend(split_secrets(&text));
                if *this.current() == all {
                    continue;
                }
                if let Some(short) = shortest_below(&all, this.min_chars) {
                    tracing::error!(
                        what,
                        chars = short,
                        required = this.min_chars,
                        "secret file holds a key too short to use; the keys in force stay"
                    );
                    continue;
                }
                tracing::info!(what, keys = all.len(), "secret file changed; keys reloaded");
                *this
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(all);
            }
        }))
    }
}

/// The length, in characters, of the shortest key under `min_chars`, if any.
fn shortest_below(keys: &[Secret], min_chars: usize) -> Option<usize> {
    keys.iter()
        .map(|key| key.expose().chars().count())
        .filter(|chars| *chars < min_chars)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_shorter_than_required_is_found() {
        let keys = [Secret::new("x".repeat(40)), Secret::new("short")];
        assert_eq!(shortest_below(&keys, 32), Some(5));
        assert_eq!(shortest_below(&keys[..1], 32), None);
        assert_eq!(shortest_below(&keys, 0), None);
    }

    #[test]
    fn secrets_never_print_their_value() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
    }

    #[test]
    fn lists_split_on_commas_and_lines() {
        let keys = split_secrets(" a ,b\n\nc\n");
        let values: Vec<_> = keys.iter().map(Secret::expose).collect();
        assert_eq!(values, ["a", "b", "c"]);
    }
}
