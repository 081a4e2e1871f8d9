//! The decision report: the explainable record of one run.

use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::config::Settings;
use crate::crd::AutomationFlags;
use crate::queue::Job;

/// What a step did.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Done,
    SkippedFlagOff,
    NotNeeded,
    Suggested,
    Failed,
}

impl StepStatus {
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
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepReport {
    pub step: String,
    pub status: StepStatus,
    pub detail: String,
    pub duration_ms: u64,
    /// For a failed step: whether running the job again may succeed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
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
#[derive(Clone, Debug, Serialize)]
pub struct DecisionReport {
    pub job_id: u64,
    pub ticket_id: String,
    pub event_type: String,
    pub attempt: u32,
    /// Department named by the event, when it named one.
    pub department: Option<String>,
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
    pub fn start(job: &Job, settings: &Settings) -> Self {
        let department = job
            .event
            .department_name()
            .map(str::to_owned)
            .or_else(|| job.event.department_id());
        Self {
            job_id: job.id,
            ticket_id: job.event.ticket_id.clone(),
            event_type: job.event.event_type.clone(),
            attempt: job.attempt,
            department,
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
}
