//! The automation workflow behind the queue.
//!
//! Workers hand each job and the settings snapshot of its start to a [`Workflow`], which
//! returns a [`DecisionReport`]: what it decided, and what each step did or why it did not.

pub mod automation;
pub mod connection;
pub mod echo;
pub mod ledger;
pub mod linking;
mod offline;
pub mod reply;
pub mod report;
pub mod rules;
pub mod text;

use async_trait::async_trait;

use crate::config::Settings;
use crate::queue::Job;

pub use automation::AutomationWorkflow;
pub use report::{DealSummary, DecisionReport, ReplySummary, StepReport, StepStatus};

/// The name of the span around each writing step: exported as a trace, kept out of log lines.
pub const STEP_SPAN: &str = "step";

/// Runs the automation for one job.
#[async_trait]
pub trait Workflow: Send + Sync {
    /// Runs the job under `settings` and reports every step, failed ones included.
    async fn run(&self, job: &Job, settings: &Settings) -> DecisionReport;
}
