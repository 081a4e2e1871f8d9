//! The automation workflow behind the queue.
//!
//! Workers hand each job and the settings snapshot of its start to a [`Workflow`], which
//! returns a [`DecisionReport`]: what it decided, and what each step did or why it did not.
//!
//! A run has three parts, so that a decision can be replayed without any I/O:
//! - **facts** ([`facts`], or the event alone without Zoho credentials): what was read, the
//!   ticket's fields, the latest customer message without its quoted history, the candidate
//!   deals, the event;
//! - **plan** ([`plan::plan`]): a pure function of the facts and the settings giving the
//!   matching rule with every rule's verdict, the target department, the rendered reply, the
//!   status, the deal updates, the note and whether each write is needed;
//! - **execute** ([`automation`]): flags, the step ledger and the Zoho calls, in a fixed order,
//!   plus the language model's rewrite of a reply, which is I/O.
//!
//! The facts and the plan's [`plan::Intent`] are kept with each report; `deskhook backtest`
//! replays the facts under other settings.

pub mod automation;
pub mod connection;
pub mod echo;
pub mod facts;
pub mod ledger;
pub mod linking;
mod offline;
pub mod overrides;
pub mod plan;
pub mod reply;
pub mod report;
pub mod rules;
pub mod text;

use std::time::Instant;

use async_trait::async_trait;

use crate::config::Settings;
use crate::event::TicketEvent;

pub use automation::AutomationWorkflow;
pub use report::{DealSummary, DecisionReport, ReplySummary, StepReport, StepStatus};

/// The name of the span around each writing step: exported as a trace, kept out of log lines.
pub const STEP_SPAN: &str = "step";

/// What one run is given: the event and where its job stands. The workflow's own input, so
/// that it reads nothing of the queue that holds the job (leases, places in line).
#[derive(Clone, Debug)]
pub struct Run {
    /// The job's id: with the event's dedupe key it names the run's steps in the ledger.
    pub id: u64,
    pub event: TicketEvent,
    /// 1 on the first run.
    pub attempt: u32,
    /// When the event was accepted, which tells an echo of deskhook's own write.
    pub enqueued_at: Instant,
}

/// The payload members a run reads, so that a queue storing jobs (Redis) keeps only these:
/// connected to Zoho a run reads the ticket itself and needs only the hints; offline its
/// facts are the payload's.
pub fn payload_fields(connected: bool) -> &'static [&'static str] {
    if connected {
        &crate::event::HINT_KEYS
    } else {
        &offline::PAYLOAD_FIELDS
    }
}

/// Runs the automation for one job.
#[async_trait]
pub trait Workflow: Send + Sync {
    /// Runs the job under `settings` and reports every step, failed ones included.
    async fn run(&self, run: &Run, settings: &Settings) -> DecisionReport;
}
