//! Backtest: what a settings edit would change on recently decided tickets.
//!
//! Every decision report keeps the facts it was planned from. A backtest replays those facts
//! through the pure [`plan`](crate::workflow::plan::plan) under the new settings and sets the
//! result beside the baseline: the same facts planned under the old settings, or, without
//! old settings, the intent recorded when the decision was made. Nothing is read from Zoho and
//! no model is asked: a reply the model would rewrite shows as such, with the template's text.
//!
//! The comparison is a pure function of its inputs and its output is ordered, so the same
//! recorded decisions and settings always give byte-identical JSON.

pub mod render;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Settings, SettingsFileError, load_settings_file};
use crate::workflow::DecisionReport;
use crate::workflow::plan::{self, Intent, ReplyIntent};
use crate::workflow::report::rfc3339;

/// What a backtest compares, over which decisions, and how it answers.
pub struct Backtest {
    pub source: source::Source,
    /// The edited `WebhookAutomation` file.
    pub settings: PathBuf,
    /// What the edit is compared with.
    pub baseline: Baseline,
    /// Only decisions made within this long.
    pub since: Option<Duration>,
    /// Only the newest this many decisions.
    pub limit: Option<usize>,
    pub format: render::Format,
    pub max_changed: Option<MaxChanged>,
}

/// The settings an edit is compared with.
pub enum Baseline {
    /// What each decision intended under the settings of its time, as recorded.
    Recorded,
    /// A `WebhookAutomation` file.
    File(PathBuf),
    /// The settings of the live resource in Kubernetes, read by the caller
    /// (`kube::live_settings`): the backtest itself reads no cluster.
    Live(Box<Settings>),
}

/// What a backtest found.
pub struct Finding {
    pub comparison: Comparison,
    /// The comparison in the asked format.
    pub output: String,
    /// More decisions would change than `max_changed` accepts.
    pub too_many_changed: bool,
}

/// A backtest that could not be run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Settings(#[from] SettingsFileError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
}

impl Backtest {
    /// Loads both settings and the recorded decisions, and compares.
    pub async fn run(&self) -> Result<Finding, BacktestError> {
        let new = load_settings_file(&self.settings, 0)?;
        let file_baseline;
        let baseline = match &self.baseline {
            Baseline::Recorded => None,
            Baseline::File(path) => {
                file_baseline = load_settings_file(path, 0)?;
                Some(&file_baseline)
            }
            Baseline::Live(settings) => Some(settings.as_ref()),
        };
        let recorded = self.source.load().await?;
        let decisions = source::select(recorded, SystemTime::now(), self.since, self.limit);
        let comparison = compare(&decisions, &new, baseline);
        let output = render::render(&comparison, self.format);
        let too_many_changed = self
            .max_changed
            .is_some_and(|max| max.exceeded(comparison.changed, comparison.compared));
        Ok(Finding {
            comparison,
            output,
            too_many_changed,
        })
    }
}

/// Settings pasted as text that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PastedSettingsError {
    #[error("failed to read the settings: {0}")]
    Parse(String),
    #[error("the document is a {0}, not a WebhookAutomation")]
    WrongKind(String),
    #[error("the settings are invalid: {0}")]
    Invalid(#[from] crate::config::InvalidSettings),
}

/// Settings from YAML text: a whole `WebhookAutomation` document, or only its `spec`.
pub fn settings_from_yaml(text: &str) -> Result<Settings, PastedSettingsError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| PastedSettingsError::Parse(e.to_string()))?;
    let spec = if value.get("spec").is_some() || value.get("kind").is_some() {
        let document: crate::crd::WebhookAutomationDocument =
            serde_yaml::from_value(value).map_err(|e| PastedSettingsError::Parse(e.to_string()))?;
        if document.kind != crate::crd::KIND {
            return Err(PastedSettingsError::WrongKind(document.kind));
        }
        document.spec
    } else {
        serde_yaml::from_value(value).map_err(|e| PastedSettingsError::Parse(e.to_string()))?
    };
    Ok(Settings::from_spec(
        spec,
        crate::config::SettingsSource::Environment,
        0,
    )?)
}

/// What can change for a ticket, in the order a person reads a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The ticket is left alone on one side only.
    Skipped,
    Rule,
    Department,
    Deal,
    Reply,
    Status,
    DealUpdates,
    Note,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Rule => "rule",
            Self::Department => "department",
            Self::Deal => "deal",
            Self::Reply => "reply",
            Self::Status => "status",
            Self::DealUpdates => "deal_updates",
            Self::Note => "note",
        }
    }
}

/// One difference for one ticket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub kind: Kind,
    pub before: Option<String>,
    pub after: Option<String>,
    /// For a reply whose text changes: the unified diff of the two texts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// A decision that would come out differently.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TicketDiff {
    pub ticket_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the recorded decision was made.
    pub decided_at: String,
    /// The settings generation the decision was made under.
    pub settings_generation: i64,
    /// The recorded facts were cut to their bounds: the replay may differ from the run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated_facts: bool,
    pub changes: Vec<Change>,
}

/// The outcome of a backtest.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Decisions replayed under both sides.
    pub compared: usize,
    /// Of those, decisions with at least one change.
    pub changed: usize,
    /// Decisions without recorded facts (an echo, a failed read) or, without old settings,
    /// without a recorded intent: left out.
    pub not_comparable: usize,
    /// Decisions with at least one change of each kind.
    pub by_kind: BTreeMap<Kind, usize>,
    /// The changed decisions, in the order given.
    pub tickets: Vec<TicketDiff>,
}

/// Replays each decision's facts under `new` and compares with `baseline`, or with the intent
/// recorded with the decision when there is no baseline.
pub fn compare<'a>(
    decisions: impl IntoIterator<Item = &'a DecisionReport>,
    new: &Settings,
    baseline: Option<&Settings>,
) -> Comparison {
    let mut comparison = Comparison::default();
    for decision in decisions {
        let Some(facts) = &decision.facts else {
            comparison.not_comparable += 1;
            continue;
        };
        let before = match baseline {
            Some(old) => plan::plan(facts, old).intent(),
            None => match &decision.intent {
                Some(recorded) => recorded.clone(),
                None => {
                    comparison.not_comparable += 1;
                    continue;
                }
            },
        };
        let after = plan::plan(facts, new).intent();
        comparison.compared += 1;
        let changes = changes(&before, &after);
        if changes.is_empty() {
            continue;
        }
        comparison.changed += 1;
        let mut kinds: Vec<Kind> = changes.iter().map(|c| c.kind).collect();
        kinds.dedup();
        for kind in kinds {
            *comparison.by_kind.entry(kind).or_default() += 1;
        }
        comparison.tickets.push(TicketDiff {
            ticket_id: decision.ticket_id.clone(),
            ticket_number: decision.ticket_number.clone(),
            subject: decision.subject.clone(),
            decided_at: rfc3339::format(decision.started_at),
            settings_generation: decision.settings_generation,
            truncated_facts: facts.truncated,
            changes,
        });
    }
    comparison
}

/// A digest of the settings that decide (departments, linking, routing, replies): two
/// settings with the same digest plan every ticket alike.
pub fn decision_digest(settings: &Settings) -> String {
    let spec = &settings.spec;
    let deciding = serde_json::json!([spec.departments, spec.linking, spec.routing, spec.replies]);
    let bytes = serde_json::to_vec(&deciding).unwrap_or_default();
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// Every difference between two intents, by kind.
pub fn changes(before: &Intent, after: &Intent) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut differ = |kind: Kind, before: Option<String>, after: Option<String>| {
        if before != after {
            changes.push(Change {
                kind,
                before,
                after,
                diff: None,
            });
        }
    };
    differ(Kind::Skipped, before.skipped.clone(), after.skipped.clone());
    differ(Kind::Rule, before.rule.clone(), after.rule.clone());
    differ(
        Kind::Department,
        before.department.clone(),
        after.department.clone(),
    );
    differ(Kind::Deal, before.deal.clone(), after.deal.clone());
    differ(
        Kind::Reply,
        before.reply.as_ref().map(shown_reply),
        after.reply.as_ref().map(shown_reply),
    );
    differ(Kind::Status, before.status.clone(), after.status.clone());
    differ(
        Kind::DealUpdates,
        shown_updates(&before.deal_updates),
        shown_updates(&after.deal_updates),
    );
    differ(Kind::Note, before.note.clone(), after.note.clone());
    if let Some(change) = changes.iter_mut().find(|c| c.kind == Kind::Reply) {
        let old = before.reply.as_ref().and_then(|r| r.text.as_deref());
        let new = after.reply.as_ref().and_then(|r| r.text.as_deref());
        if old != new {
            change.diff = Some(unified_diff(old.unwrap_or(""), new.unwrap_or("")));
        }
    }
    changes
}

/// A reply as a person reads it: its template and text, or why there is none.
fn shown_reply(reply: &ReplyIntent) -> String {
    let body = match (&reply.text, &reply.error) {
        (Some(text), _) => text.clone(),
        (None, Some(error)) => format!("no reply: {error}"),
        (None, None) => String::new(),
    };
    let rewrite = if reply.rewrite {
        "; would be rewritten by the model"
    } else {
        ""
    };
    format!("[{}{rewrite}] {body}", reply.template)
}

/// Deal updates as compact JSON with sorted keys; nothing when the rule sets none.
fn shown_updates(updates: &BTreeMap<String, serde_json::Value>) -> Option<String> {
    (!updates.is_empty()).then(|| serde_json::to_string(updates).unwrap_or_default())
}

fn unified_diff(old: &str, new: &str) -> String {
    let (old, new) = (with_newline(old), with_newline(new));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(2)
        .header("before", "after")
        .to_string()
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// The most changes a backtest accepts: a count, or a share of the compared decisions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxChanged {
    Count(usize),
    Percent(f64),
}

impl MaxChanged {
    /// Whether `changed` of `compared` decisions is more than allowed.
    pub fn exceeded(self, changed: usize, compared: usize) -> bool {
        match self {
            Self::Count(max) => changed > max,
            Self::Percent(max) => {
                compared > 0 && (changed as f64) * 100.0 > max * compared as f64 + 1e-9
            }
        }
    }
}

/// A `--max-changed` value that is neither a count nor a percentage.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("failed to read {0:?} as a count (12) or a percentage from 0 to 100 (5%)")]
pub struct InvalidMaxChanged(String);

impl FromStr for MaxChanged {
    type Err = InvalidMaxChanged;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidMaxChanged(raw.to_owned());
        let raw_trimmed = raw.trim();
        match raw_trimmed.strip_suffix('%') {
            Some(percent) => {
                let value: f64 = percent.trim().parse().map_err(|_| invalid())?;
                if (0.0..=100.0).contains(&value) {
                    Ok(Self::Percent(value))
                } else {
                    Err(invalid())
                }
            }
            None => raw_trimmed.parse().map(Self::Count).map_err(|_| invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(rule: &str, department: &str, reply: Option<&str>) -> Intent {
        Intent {
            rule: Some(rule.into()),
            department: Some(department.into()),
            reply: reply.map(|text| ReplyIntent {
                template: "accuse".into(),
                text: Some(text.into()),
                ..ReplyIntent::default()
            }),
            ..Intent::default()
        }
    }

    #[test]
    fn pasted_settings_are_a_document_or_a_spec() {
        let spec = "departments: [DOC]\nrouting: [{name: a, then: {department: DOC}}]\n";
        let alone = settings_from_yaml(spec).unwrap();
        assert_eq!(alone.spec.routing[0].name, "a");
        let document = "apiVersion: deskhook.dev/v1alpha1\nkind: WebhookAutomation\nspec:\n  departments: [DOC]\n";
        assert_eq!(
            settings_from_yaml(document).unwrap().spec.departments,
            ["DOC"]
        );
        let other = "apiVersion: v1\nkind: ConfigMap\nspec: {}\n";
        assert!(matches!(
            settings_from_yaml(other),
            Err(PastedSettingsError::WrongKind(kind)) if kind == "ConfigMap"
        ));
        assert!(matches!(
            settings_from_yaml("routing: [{nom: x}]"),
            Err(PastedSettingsError::Parse(_))
        ));
    }

    #[test]
    fn identical_intents_have_no_change() {
        let same = intent("a", "DOC", Some("Bonjour"));
        assert!(changes(&same, &same.clone()).is_empty());
    }

    #[test]
    fn each_kind_of_change_is_named_and_a_reply_gets_a_unified_diff() {
        let before = intent("a", "DOC", Some("Bonjour,\nvotre dossier est reçu.\nMerci"));
        let mut after = intent(
            "b",
            "Contact",
            Some("Bonjour,\nvotre facture est reçue.\nMerci"),
        );
        after
            .deal_updates
            .insert("Evalbox".into(), "Relance".into());
        let found = changes(&before, &after);
        let kinds: Vec<Kind> = found.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Rule, Kind::Department, Kind::Reply, Kind::DealUpdates]
        );
        assert_eq!(found[3].after.as_deref(), Some(r#"{"Evalbox":"Relance"}"#));
        let diff = found[2].diff.as_deref().unwrap();
        assert!(diff.starts_with("--- before\n+++ after\n@@"), "{diff}");
        assert!(diff.contains("\n-votre dossier est reçu.\n+votre facture est reçue.\n"));
    }

    #[test]
    fn a_rewrite_shows_as_would_be_rewritten() {
        let before = intent("a", "DOC", Some("Bonjour"));
        let mut after = before.clone();
        after.reply.as_mut().unwrap().rewrite = true;
        let found = changes(&before, &after);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].after.as_deref(),
            Some("[accuse; would be rewritten by the model] Bonjour")
        );
        assert_eq!(found[0].diff, None, "the template's text is the same");
    }

    #[test]
    fn max_changed_reads_counts_and_percentages() {
        assert_eq!("3".parse(), Ok(MaxChanged::Count(3)));
        assert_eq!(" 5% ".parse(), Ok(MaxChanged::Percent(5.0)));
        assert!("101%".parse::<MaxChanged>().is_err());
        assert!("-1".parse::<MaxChanged>().is_err());
        assert!("a lot".parse::<MaxChanged>().is_err());
        assert!(!MaxChanged::Count(3).exceeded(3, 200));
        assert!(MaxChanged::Count(3).exceeded(4, 200));
        assert!(!MaxChanged::Percent(10.0).exceeded(20, 200));
        assert!(MaxChanged::Percent(10.0).exceeded(21, 200));
        assert!(!MaxChanged::Percent(0.0).exceeded(0, 0));
    }
}
