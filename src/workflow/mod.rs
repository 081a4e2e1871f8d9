//! The automation workflow behind the queue.
//!
//! Workers hand each job and the settings snapshot of its start to a [`Workflow`], which
//! returns a [`DecisionReport`]: what it decided, and what each step did or why it did not.

pub mod automation;
pub mod connection;
pub mod echo;
pub mod ledger;
pub mod linking;
pub mod reply;
pub mod report;
pub mod rules;
pub mod text;

use async_trait::async_trait;

use crate::config::Settings;
use crate::queue::Job;

pub use automation::AutomationWorkflow;
pub use report::{DealSummary, DecisionReport, ReplySummary, StepReport, StepStatus};

/// Runs the automation for one job.
#[async_trait]
pub trait Workflow: Send + Sync {
    /// Runs the job under `settings` and reports every step, failed ones included.
    async fn run(&self, job: &Job, settings: &Settings) -> DecisionReport;
}

/// The first workflow: it decides nothing and writes nothing, it records what the event asks
/// for (which ticket, which department, which flags were on) so the intake can be watched
/// end to end before the Zoho clients are configured.
#[derive(Debug, Default)]
pub struct RecordingWorkflow;

#[async_trait]
impl Workflow for RecordingWorkflow {
    async fn run(&self, job: &Job, settings: &Settings) -> DecisionReport {
        let mut report = DecisionReport::start(job, settings);
        let flags = settings.flags();
        for (step, flag, on) in [
            ("dispatch", "auto_dispatch", flags.dispatch),
            ("link", "auto_link", flags.link),
            (
                "reply",
                "auto_respond",
                flags.respond || flags.draft_replies,
            ),
            ("update_ticket", "auto_update_ticket", flags.update_ticket),
            ("update_deal", "auto_update_deal", flags.update_deal),
            ("add_note", "auto_add_note", flags.add_note),
        ] {
            let status = if on {
                StepStatus::NotNeeded
            } else {
                StepStatus::SkippedFlagOff
            };
            let detail = if on {
                format!("{flag} is on; no Zoho client is configured")
            } else {
                format!("{flag} is off")
            };
            report.record(StepReport::new(step, status, detail));
        }
        report.finish()
    }
}
