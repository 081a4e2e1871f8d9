//! The decision report: the explainable record of one run.

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::Run;
use super::facts::Facts;
use super::linking::LinkStrategy;
use super::plan::Intent;
use super::rules::RoutingDecision;
use crate::config::Settings;
use crate::crd::AutomationFlags;

/// What a step did.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Done,
    SkippedFlagOff,
    NotNeeded,
    Suggested,
    Failed,
}

impl StepStatus {
    /// The metric label: `done`, `skipped_flag_off`, `not_needed`, `suggested`, `failed`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::SkippedFlagOff => "skipped_flag_off",
            Self::NotNeeded => "not_needed",
            Self::Suggested => "suggested",
            Self::Failed => "failed",
        }
    }

    /// The human form used in logs: `done`, `skipped: flag off`, `not needed`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::SkippedFlagOff => "skipped: flag off",
            Self::NotNeeded => "not needed",
            Self::Suggested => "suggested",
            Self::Failed => "failed",
        }
    }
}

/// One step of a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    pub step: String,
    pub status: StepStatus,
    pub detail: String,
    pub duration_ms: u64,
    /// For a failed step: whether running the job again may succeed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

impl StepReport {
    pub fn new(step: &str, status: StepStatus, detail: impl Into<String>) -> Self {
        Self {
            step: step.to_owned(),
            status,
            detail: detail.into(),
            duration_ms: 0,
            retryable: false,
        }
    }
}

/// The record of one run of the workflow for one ticket event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionReport {
    pub job_id: u64,
    pub ticket_id: String,
    pub event_type: String,
    pub attempt: u32,
    /// The ticket's department when the run started (from Zoho, else from the event).
    pub department: Option<String>,
    /// Where the matching rule wants the ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Link to the ticket in Zoho Desk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    /// The matching rule and every rule's verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingDecision>,
    /// The deal found, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deal: Option<DealSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_strategy: Option<LinkStrategy>,
    /// The reply exactly as it would be (or was) sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplySummary>,
    /// What was read before deciding, bounded: a backtest replays it under other settings.
    /// Customer data, like the subject and the reply: shown only where reports are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    /// What the plan intended under this run's settings, before flags and effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// Why the whole run was skipped (other department, echo of our own write, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// True when no Zoho credentials were configured: every action is a suggestion.
    pub offline: bool,
    /// The flags in force for this run.
    pub flags: AutomationFlags,
    pub settings_generation: i64,
    pub steps: Vec<StepReport>,
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    pub duration_ms: u64,
    #[serde(skip)]
    started: Option<Instant>,
}

impl DecisionReport {
    pub fn start(job: &Run, settings: &Settings) -> Self {
        let department = job
            .event
            .department_name()
            .or_else(|| job.event.department_id())
            .map(str::to_owned);
        Self {
            job_id: job.id,
            ticket_id: job.event.ticket_id.clone(),
            event_type: job.event.event_type.clone(),
            attempt: job.attempt,
            department,
            target_department: None,
            ticket_number: None,
            subject: None,
            web_url: None,
            routing: None,
            deal: None,
            link_strategy: None,
            reply: None,
            facts: None,
            intent: None,
            skipped: None,
            offline: false,
            flags: *settings.flags(),
            settings_generation: settings.generation,
            steps: Vec::new(),
            started_at: SystemTime::now(),
            duration_ms: 0,
            started: Some(Instant::now()),
        }
    }

    pub fn record(&mut self, step: StepReport) {
        self.steps.push(step);
    }

    pub fn finish(mut self) -> Self {
        if let Some(started) = self.started.take() {
            self.duration_ms = started.elapsed().as_millis() as u64;
        }
        self
    }

    /// The first failed step, if any.
    pub fn failure(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.status == StepStatus::Failed)
    }

    pub fn succeeded(&self) -> bool {
        self.failure().is_none()
    }
}

/// The deal a run linked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DealSummary {
    pub id: String,
    pub name: Option<String>,
    pub stage: Option<String>,
    pub amount: Option<f64>,
}

/// The reply of a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplySummary {
    pub template: String,
    pub text: String,
    /// True when the language model's rewrite was used.
    pub rewritten: bool,
    /// `sent`, `draft` or `suggestion`.
    pub mode: String,
}

/// RFC 3339 timestamps for reports and JSON answers.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::Serializer;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn format(at: SystemTime) -> String {
        OffsetDateTime::from(at)
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
    }

    pub fn serialize<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*at))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map(SystemTime::from)
            .map_err(serde::de::Error::custom)
    }
}
