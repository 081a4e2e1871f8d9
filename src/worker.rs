//! Workers: claim a job, run the workflow under one settings snapshot, ack or retry.
//!
//! A panic must not take a ticket down with it: a run that panics ends as a failed,
//! retryable step, so its job is retried or dead-lettered like any failure and its ticket is
//! released (the memory queue) or acknowledged (Redis, whose lease would otherwise be renewed
//! forever). A worker that panics outside a run is replaced.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::config::{Settings, SettingsHandle};
use crate::decisions::DecisionLog;
use crate::metrics::Metrics;
use crate::queue::{Job, Queue};
use crate::workflow::{DecisionReport, Run, StepReport, StepStatus, Workflow};

/// What a worker needs.
#[derive(Clone)]
pub struct WorkerContext {
    pub queue: Arc<dyn Queue>,
    pub workflow: Arc<dyn Workflow>,
    pub settings: SettingsHandle,
    pub metrics: Arc<Metrics>,
    pub decisions: Arc<DecisionLog>,
}

/// Starts `count` supervised workers; each ends when the queue is closed and drained.
pub fn spawn_workers(context: &WorkerContext, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count.max(1))
        .map(|index| {
            let context = context.clone();
            tokio::spawn(async move { context.supervise(index).await })
        })
        .collect()
}

/// The step a panicking run is reported as failing.
pub const PANIC_STEP: &str = "panic";

/// Runs the workflow for `job`; a panic becomes a failed, retryable step instead of
/// unwinding into the caller, which still has a ticket to release. The job is lent to the run
/// and handed back with its report, for the caller to settle with the queue.
pub async fn run_caught(
    workflow: &dyn Workflow,
    job: Job,
    settings: &Settings,
) -> (Job, DecisionReport) {
    let run = Run::from(job);
    let report = report_of(workflow, &run, settings).await;
    (Job::from(run), report)
}

async fn report_of(workflow: &dyn Workflow, run: &Run, settings: &Settings) -> DecisionReport {
    match AssertUnwindSafe(workflow.run(run, settings))
        .catch_unwind()
        .await
    {
        Ok(report) => report,
        Err(_) => {
            // The panic hook already printed the message; it may quote customer data, so the
            // report and the structured log say only where it happened.
            tracing::error!(
                ticket_id = %run.event.ticket_id,
                attempt = run.attempt,
                "the workflow panicked; the job is retried or dead-lettered like a failed one"
            );
            let mut report = DecisionReport::start(run, settings);
            let mut step = StepReport::new(
                PANIC_STEP,
                StepStatus::Failed,
                "the run panicked (see the process log)",
            );
            step.retryable = true;
            report.record(step);
            report.finish()
        }
    }
}

/// Delay before attempt `attempt + 1`: exponential from 1 s, with jitter so retries of a
/// burst do not all land at once.
pub fn retry_delay(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher, RandomState};
    let base = Duration::from_secs(1u64 << attempt.clamp(1, 6).saturating_sub(1));
    // Randomly keyed per call: failures of many jobs on many pods spread out, not in step.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let spread = (base.as_millis() as u64 / 2).clamp(250, 999);
    base + Duration::from_millis(hasher.finish() % spread)
}

impl WorkerContext {
    /// Runs a worker, and a new one in its place whenever one panics, until the queue is
    /// closed and drained.
    async fn supervise(self, index: usize) {
        loop {
            match tokio::spawn(self.clone().work(index)).await {
                Err(error) if error.is_panic() => {
                    self.metrics
                        .workflow_errors
                        .with_label_values(&[PANIC_STEP])
                        .inc();
                    tracing::error!(worker = index, "a worker panicked; starting another");
                }
                _ => return,
            }
        }
    }

    async fn work(self, index: usize) {
        while let Some(job) = self.queue.claim().await {
            self.metrics.queue_depth.set(self.queue.depth() as i64);
            let settings = self.settings.current();
            let (job, report) = run_caught(self.workflow.as_ref(), job, &settings).await;
            self.settle(job, report).await;
        }
        tracing::debug!(worker = index, "worker stopped: queue closed and drained");
    }

    async fn settle(&self, job: Job, report: DecisionReport) {
        for step in &report.steps {
            self.metrics
                .workflow_steps
                .with_label_values(&[step.step.as_str(), step.status.label()])
                .inc();
        }
        let failure = report.failure().cloned();
        match failure {
            None => {
                self.metrics
                    .workflow_runs
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(
                    ticket_id = %report.ticket_id,
                    event_type = %report.event_type,
                    attempt = job.attempt,
                    duration_ms = report.duration_ms,
                    steps = %StepSummary(&report),
                    "workflow finished"
                );
                self.decisions.push(report);
                self.queue.ack(&job).await;
            }
            Some(step) => {
                self.metrics
                    .workflow_errors
                    .with_label_values(&[step.step.as_str()])
                    .inc();
                tracing::error!(
                    ticket_id = %report.ticket_id,
                    event_type = %report.event_type,
                    attempt = job.attempt,
                    step = %step.step,
                    error = %step.detail,
                    "Error processing webhook"
                );
                self.decisions.push(report);
                if step.retryable && job.attempt < self.queue.max_attempts() {
                    self.metrics
                        .workflow_runs
                        .with_label_values(&["retried"])
                        .inc();
                    let queue = self.queue.clone();
                    let delay = retry_delay(job.attempt);
                    tokio::spawn(async move { queue.retry(job, delay).await });
                } else {
                    self.metrics
                        .workflow_runs
                        .with_label_values(&["failed"])
                        .inc();
                    let error = format!("{}: {}", step.step, step.detail);
                    self.queue.dead_letter(&job, &error).await;
                }
            }
        }
        self.metrics.queue_depth.set(self.queue.depth() as i64);
    }
}

// The queue's job and the workflow's run carry the same facts: each side keeps its own type
// and the worker, which knows both, moves one into the other.
impl From<Job> for Run {
    fn from(job: Job) -> Self {
        let Job {
            id,
            event,
            attempt,
            enqueued_at,
        } = job;
        Run {
            id,
            event,
            attempt,
            enqueued_at,
        }
    }
}

impl From<Run> for Job {
    fn from(run: Run) -> Self {
        let Run {
            id,
            event,
            attempt,
            enqueued_at,
        } = run;
        Job {
            id,
            event,
            attempt,
            enqueued_at,
        }
    }
}

/// `dispatch=done link=skipped: flag off …`, for one log line per run; written straight
/// into the line.
struct StepSummary<'a>(&'a DecisionReport);

impl std::fmt::Display for StepSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, step) in self.0.steps.iter().enumerate() {
            let separator = if index == 0 { "" } else { " " };
            write!(f, "{separator}{}={}", step.step, step.status.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_summary_lists_each_step_and_its_status() {
        use crate::config::{Settings, SettingsSource};
        use crate::event::TicketEvent;
        use crate::workflow::{StepReport, StepStatus};
        let settings =
            Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap();
        let job = Run {
            id: 0,
            event: TicketEvent::manual("7".to_owned()),
            attempt: 1,
            enqueued_at: std::time::Instant::now(),
        };
        let mut report = DecisionReport::start(&job, &settings);
        assert_eq!(StepSummary(&report).to_string(), "");
        report.record(StepReport::new("dispatch", StepStatus::Done, "moved"));
        report.record(StepReport::new("reply", StepStatus::SkippedFlagOff, ""));
        assert_eq!(
            StepSummary(&report).to_string(),
            "dispatch=done reply=skipped: flag off"
        );
    }

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        assert!(retry_delay(1) < Duration::from_secs(2));
        assert!(retry_delay(3) >= Duration::from_secs(4));
        assert!(retry_delay(30) < Duration::from_secs(33));
    }
}
