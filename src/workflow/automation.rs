//! The automation workflow carries a plan out: read the facts, plan, then the writing steps,
//! each behind its flag.
//!
//! Deciding is [`super::plan`]'s, a pure function of the facts read here and the settings;
//! this module only reads the facts and carries the plan out. Every write passes through
//! [`AutomationWorkflow::write`], which checks, in order: is it needed, are we online, is its
//! flag on in this job's settings snapshot, did an earlier attempt of this job already do it.
//! With every flag off no write is ever attempted.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::Instrument;

use super::connection::{ZohoConnection, ZohoConnector};
use super::echo::EchoGuard;
use super::facts::{self, CrmDeal, DealLookup, Facts};
use super::ledger::{LedgerError, StepLedger};
use super::linking::LinkStrategy;
use super::offline;
use super::overrides::{Field, Observation, OverrideWatch};
use super::plan::{self, Need, Plan, ReplyPlan, same_name};
use super::reply::{self, ReplyRewriter, ReplyRules};
use super::rules;
use super::{DealSummary, DecisionReport, ReplySummary, Run, StepReport, StepStatus, Workflow};
use crate::config::Settings;
use crate::event::DedupeKey;
use crate::rollout::{Outside, Rollouts};
use crate::zoho::{Api, Call, ContentType, Reply, ZohoClients, ZohoError};

/// The ledger entry written just before a move is sent, naming its target department: a move
/// can reach Zoho while its answer is lost (a timeout, a killed pod), and the job that sent
/// it must still know the move for its own.
const DISPATCH_SENT: &str = "dispatch_sent";

/// The automation workflow.
pub struct AutomationWorkflow {
    zoho: ZohoConnection,
    ledger: Arc<dyn StepLedger>,
    echo: EchoGuard,
    rewriter: Option<ReplyRewriter>,
    rollouts: Rollouts,
    overrides: OverrideWatch,
}

impl AutomationWorkflow {
    /// A workflow against the Zoho APIs, or offline (every action a suggestion) when `zoho` is
    /// `None`. `rewriter` is used only when `spec.replies.llm` is set.
    pub fn new(
        zoho: Option<ZohoClients>,
        ledger: Arc<dyn StepLedger>,
        rewriter: Option<ReplyRewriter>,
    ) -> Self {
        let zoho = zoho.map_or(ZohoConnection::Offline, ZohoConnection::Fixed);
        Self::with_connection(zoho, ledger, rewriter)
    }

    /// A workflow whose clients follow each job's settings (`spec.zoho`).
    pub fn connected(
        connector: ZohoConnector,
        ledger: Arc<dyn StepLedger>,
        rewriter: Option<ReplyRewriter>,
    ) -> Self {
        Self::with_connection(
            ZohoConnection::PerSettings(Box::new(connector)),
            ledger,
            rewriter,
        )
    }

    fn with_connection(
        zoho: ZohoConnection,
        ledger: Arc<dyn StepLedger>,
        rewriter: Option<ReplyRewriter>,
    ) -> Self {
        Self {
            zoho,
            ledger,
            echo: EchoGuard::default(),
            rewriter,
            rollouts: Rollouts::default(),
            overrides: OverrideWatch::default(),
        }
    }

    /// Follows the shares `rollouts` publishes and counts this pod's writes in it.
    pub fn with_rollouts(mut self, rollouts: Rollouts) -> Self {
        self.rollouts = rollouts;
        self
    }
}

/// The verdict of [`AutomationWorkflow::permits`] for one write, which also counts the write's
/// outcome towards its action's rollout.
struct Gate<'a> {
    rollouts: &'a Rollouts,
    settings: &'a Settings,
    action: &'static str,
    /// `None`: permitted; `Some(None)`: the flag is off; `Some(Some(_))`: outside the share.
    refused: Option<Option<Outside>>,
}

impl Gate<'_> {
    /// An attempted write's outcome, for the guard.
    fn settled(&self, failed: bool) {
        self.rollouts.count(self.settings, self.action, failed);
    }
}

/// Whether the run goes on after a step.
enum Flow {
    Continue,
    Stop,
}

#[async_trait::async_trait]
impl Workflow for AutomationWorkflow {
    async fn run(&self, job: &Run, settings: &Settings) -> DecisionReport {
        let mut report = DecisionReport::start(job, settings);
        let span = tracing::info_span!(
            "workflow",
            ticket_id = %job.event.ticket_id,
            event_type = %job.event.event_type,
            attempt = job.attempt
        );
        self.run_steps(job, settings, &mut report)
            .instrument(span)
            .await;
        report.finish()
    }
}

impl AutomationWorkflow {
    /// Whether this job moved the ticket to `department` in an earlier attempt: the move
    /// succeeded, or it was sent there and its answer never came.
    async fn moved_by(&self, job_key: &str, department: &str) -> Result<bool, LedgerError> {
        if self.ledger.completed(job_key, "dispatch").await?.is_some() {
            return Ok(true);
        }
        let sent = self.ledger.completed(job_key, DISPATCH_SENT).await?;
        Ok(sent.is_some_and(|target| same_name(Some(department), &target)))
    }

    /// Whether `step` may write on this job's ticket: its flag is on in this job's settings
    /// and, when the action has a rollout, the ticket's bucket is inside the share this pod
    /// applies now. `reply` is `respond` when the reply is sent and `draftReplies` when it is
    /// drafted.
    fn permits<'a>(&'a self, settings: &'a Settings, step: &str, ticket_id: &str) -> Gate<'a> {
        let action = match step {
            "dispatch" => "dispatch",
            "link" => "link",
            "reply" => "respond",
            "draft" => "draftReplies",
            "update_ticket" => "updateTicket",
            "update_deal" => "updateDeal",
            "add_note" => "addNote",
            _ => "",
        };
        let refused = self.rollouts.gate(settings, action, ticket_id).err();
        Gate {
            rollouts: &self.rollouts,
            settings,
            action,
            refused,
        }
    }

    /// Counts what a later update shows of people's changes against deskhook's (overrides)
    /// and against what deskhook would have done (agreement).
    fn count_people(&self, settings: &Settings, facts: &Facts) {
        let seen = self.overrides.observe(
            &facts.ticket_id,
            facts.department.as_deref(),
            facts.status.as_deref(),
        );
        for observation in seen {
            match observation {
                Observation::Override(field) => {
                    self.rollouts.count_override(settings, field.action())
                }
                Observation::Compared { field, agreed } => {
                    self.rollouts.count_shadow(settings, field.action(), agreed)
                }
            }
        }
    }

    /// Remembers the value a dispatch or status step just set, or would have set, for as long
    /// as its rollout's `overrideWindow`. Only actions with a rollout are watched.
    fn remember(
        &self,
        report: &DecisionReport,
        settings: &Settings,
        field: Field,
        value: &str,
        before: Option<&str>,
    ) {
        let step = match field {
            Field::Department => "dispatch",
            Field::Status => "update_ticket",
        };
        let Some(rollout) = settings.spec.rollout.get(field.action()) else {
            return;
        };
        let Ok(window) = humantime::parse_duration(&rollout.guard.override_window) else {
            return;
        };
        let ticket = &report.ticket_id;
        match report.steps.iter().rev().find(|s| s.step == step) {
            Some(s) if s.status == StepStatus::Done => {
                self.overrides.wrote(ticket, field, value, window)
            }
            Some(s) if s.status == StepStatus::SkippedFlagOff => self
                .overrides
                .would_have(ticket, field, value, before, window),
            _ => {}
        }
    }

    /// Reads the facts, plans, and carries the plan out.
    async fn run_steps(&self, job: &Run, settings: &Settings, report: &mut DecisionReport) {
        let event = &job.event;
        let window = Duration::from_secs(settings.zoho().echo_window_seconds);
        if self.echo.is_echo(event, job.enqueued_at, window) {
            report.skipped = Some("echo of deskhook's own write".to_owned());
            return;
        }
        if event.is_outgoing() {
            report.skipped =
                Some("outgoing message: only customer messages are acted on".to_owned());
            return;
        }

        // 1. Fetch: the webhook body is unsigned by Zoho's JWT, so it is only a hint.
        let started = Instant::now();
        let zoho = match self.zoho.clients(settings) {
            Ok(zoho) => zoho,
            Err(error) => {
                let mut step = StepReport::new("fetch", StepStatus::Failed, error.to_string());
                step.retryable = false;
                report.record(step);
                return;
            }
        };
        let facts = match &zoho {
            None => {
                report.offline = true;
                Ok(offline::facts_from_event(event, settings))
            }
            Some(zoho) => {
                facts::read_ticket(zoho, &event.ticket_id, &event.event_type, settings).await
            }
        };
        let mut facts = match facts {
            Ok(facts) => facts,
            Err(error) => {
                report.record(failed("fetch", &error, started, false));
                return;
            }
        };
        let source = if zoho.is_some() {
            "read from Zoho Desk"
        } else {
            "read from the event (offline)"
        };
        report.record(timed(
            StepReport::new("fetch", StepStatus::Done, format!("ticket {source}")),
            started,
        ));
        if event.event_type == "Ticket_Update" {
            self.count_people(settings, &facts);
        }
        report.subject = Some(facts.subject.clone());
        report.ticket_number = facts.ticket_number.clone();
        report.web_url = facts.web_url.clone();
        report.department = facts.department.clone().or(facts.department_id.clone());
        let job_key = format!("{}-{}", hex_key(&event.dedupe_key), job.id);
        // A retried job whose earlier attempt moved the ticket finds it in the target
        // department; that move was ours, so the job carries on. The ledger is only asked
        // about a ticket found outside `spec.departments`.
        if let Some(why) = plan::left_alone(&facts, settings) {
            let department = facts.department.clone().unwrap_or_default();
            match self.moved_by(&job_key, &department).await {
                Ok(true) => facts.moved_by_this_job = true,
                Ok(false) => {
                    report.skipped = Some(why);
                    report.facts = Some(facts.bounded());
                    report.intent = Some(plan::plan(&facts, settings).intent());
                    return;
                }
                Err(error) => {
                    report.record(ledger_failed("dispatch", &error));
                    return;
                }
            }
        }

        // 2. Link (read the candidates; choosing is the plan's).
        let started = Instant::now();
        facts.deals = match &zoho {
            None => Some(DealLookup {
                strategy: LinkStrategy::Offline,
                candidates: Vec::new(),
            }),
            Some(zoho) => match facts::look_up_deals(zoho, &facts).await {
                Ok(deals) => Some(deals),
                Err(error) => {
                    report.record(failed("find_deal", &error, started, false));
                    report.facts = Some(facts.bounded());
                    return;
                }
            },
        };

        // 3. Plan: everything below only carries it out.
        let plan = plan::plan(&facts, settings);
        report.facts = Some(facts.bounded());
        report.intent = Some(plan.intent());
        report.link_strategy = Some(plan.link_strategy);
        report.record(match &zoho {
            None => StepReport::new("find_deal", StepStatus::NotNeeded, &plan.deal_detail),
            Some(_) => timed(
                StepReport::new("find_deal", StepStatus::Done, &plan.deal_detail),
                started,
            ),
        });
        report.deal = plan.deal.as_ref().map(summary);
        let outcome = &plan.outcome;
        report.target_department = outcome.department.clone();
        report.record(StepReport::new(
            "route",
            StepStatus::Done,
            match &plan.routing.rule {
                Some(rule) => format!("rule {rule} matched"),
                None => "no rule matched: the ticket stays where it is".to_owned(),
            },
        ));
        report.routing = Some(plan.routing.clone());

        let zoho = zoho.as_ref();
        let ticket_id = event.ticket_id.clone();

        // 4. Dispatch.
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "dispatch",
                self.permits(settings, "dispatch", &ticket_id),
                plan.dispatch.clone(),
                true,
                || async {
                    let zoho = zoho.expect("writes run online only");
                    let target = outcome.department.as_deref().unwrap_or_default();
                    let id = zoho
                        .desk
                        .department_id_by_name(target)
                        .await?
                        .ok_or_else(|| unknown_department(target))?;
                    self.ledger.record(&job_key, DISPATCH_SENT, target).await;
                    zoho.desk.move_ticket(&ticket_id, &id).await?;
                    Ok(format!("moved to {target}"))
                },
            )
            .await;
        if let Some(target) = &outcome.department {
            let before = facts.department.as_deref();
            self.remember(report, settings, Field::Department, target, before);
        }
        if let Flow::Stop = flow {
            return;
        }

        // 5. Link (write).
        let field = settings.spec.linking.ticket_field.clone();
        let link = plan.link_value.clone();
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "link",
                self.permits(settings, "link", &ticket_id),
                plan.link.clone(),
                true,
                || async {
                    let zoho = zoho.expect("writes run online only");
                    zoho.desk
                        .update_ticket(&ticket_id, &json!({"cf": {field.clone(): link}}))
                        .await?;
                    Ok(format!("deal stored in {field}"))
                },
            )
            .await;
        if let Flow::Stop = flow {
            return;
        }

        // 6. Reply.
        if let Flow::Stop = self
            .reply_step(report, zoho, &job_key, settings, &facts, &plan)
            .await
        {
            return;
        }

        // 7. Update ticket.
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "update_ticket",
                self.permits(settings, "update_ticket", &ticket_id),
                plan.update_ticket.clone(),
                true,
                || async {
                    let zoho = zoho.expect("writes run online only");
                    let status = outcome.status.clone().unwrap_or_default();
                    zoho.desk
                        .update_ticket(&ticket_id, &json!({"status": status}))
                        .await?;
                    Ok(format!("status set to {status}"))
                },
            )
            .await;
        if let Some(status) = &outcome.status {
            let before = facts.status.as_deref();
            self.remember(report, settings, Field::Status, status, before);
        }
        if let Flow::Stop = flow {
            return;
        }

        // 8. Update deal, then the note that says what was done.
        let updates = &plan.deal_updates;
        let deal_id = plan.deal.as_ref().map(|d| d.id.clone()).unwrap_or_default();
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "update_deal",
                self.permits(settings, "update_deal", &ticket_id),
                plan.update_deal.clone(),
                false,
                || async {
                    let zoho = zoho.expect("writes run online only");
                    zoho.crm.update_deal(&deal_id, updates.clone()).await?;
                    Ok(format!("{} field(s) written", updates.len()))
                },
            )
            .await;
        if let Flow::Stop = flow {
            return;
        }

        let acted = report
            .steps
            .iter()
            .any(|s| s.status == StepStatus::Done && is_write(&s.step));
        let need = match &plan.deal {
            None => Err("no deal found".to_owned()),
            Some(_) if !acted && outcome.note.is_none() => {
                Err("nothing was written and the rule asks for no note".to_owned())
            }
            Some(deal) => Ok(format!("note on deal {}", deal.id)),
        };
        // Written only when a note is due (never offline, where no deal is found).
        let note = match &need {
            Ok(_) => note_text(report, plan.note.as_deref()),
            Err(_) => String::new(),
        };
        self.write(
            report,
            zoho,
            &job_key,
            "add_note",
            self.permits(settings, "add_note", &ticket_id),
            need,
            false,
            || async {
                let zoho = zoho.expect("writes run online only");
                let title = format!(
                    "deskhook · ticket {}",
                    facts.ticket_number.as_deref().unwrap_or(&ticket_id)
                );
                zoho.crm.add_note(&deal_id, &title, &note).await?;
                Ok("note added".to_owned())
            },
        )
        .await;
    }

    async fn reply_step(
        &self,
        report: &mut DecisionReport,
        zoho: Option<&ZohoClients>,
        job_key: &str,
        settings: &Settings,
        facts: &Facts,
        plan: &Plan,
    ) -> Flow {
        let planned = match &plan.reply {
            ReplyPlan::NoTemplate => {
                report.record(StepReport::new(
                    "reply",
                    StepStatus::NotNeeded,
                    "the rule names no reply template",
                ));
                return Flow::Continue;
            }
            ReplyPlan::Invalid(error) => {
                report.record(StepReport {
                    retryable: false,
                    ..StepReport::new("reply", StepStatus::Failed, error.to_string())
                });
                return Flow::Continue;
            }
            ReplyPlan::Ready(planned) => planned,
        };
        let replies = &settings.spec.replies;
        let mut text = planned.text.clone();
        let mut rewritten = false;
        if let (Some(llm), Some(rewriter), true) = (&replies.llm, &self.rewriter, planned.rewrite) {
            let rules = ReplyRules {
                min_chars: llm.min_chars as usize,
                max_chars: llm.max_chars as usize,
                forbidden_terms: &replies.forbidden_terms,
            };
            match rewriter
                .rewrite(llm, &text)
                .await
                .and_then(|new| reply::validate(&new, &rules).map(|()| new))
            {
                Ok(new) => {
                    text = new;
                    rewritten = true;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "reply rewrite refused; the template's text is kept")
                }
            }
        }

        // A reply the model rewrote goes out only when the resource says so: otherwise an agent
        // reads it first, as a draft.
        let send_rewritten = replies.llm.as_ref().is_some_and(|llm| llm.send_rewritten);
        let mode = if rewritten && planned.mode == "sent" && !send_rewritten {
            "draft"
        } else {
            planned.mode
        };
        report.reply = Some(ReplySummary {
            template: planned.template.clone(),
            text: text.clone(),
            rewritten,
            mode: mode.to_owned(),
        });
        // A reply the rules send is `respond`'s even when the rewrite makes it a draft.
        let reply_action = if planned.mode == "sent" {
            "reply"
        } else {
            "draft"
        };
        let need = planned.need.clone();
        if need.is_ok() && mode == "suggestion" {
            let detail = "respond and draftReplies are off: the reply is kept as a suggestion";
            let status = if zoho.is_none() {
                StepStatus::Suggested
            } else {
                StepStatus::SkippedFlagOff
            };
            report.record(StepReport::new("reply", status, detail));
            return Flow::Continue;
        }
        let ticket_id = report.ticket_id.clone();
        let message = Reply {
            from_email_address: planned.from.clone().unwrap_or_default(),
            to: facts.customer_email.clone().unwrap_or_default(),
            content: text,
            content_type: ContentType::PlainText,
        };
        self.write(
            report,
            zoho,
            job_key,
            "reply",
            self.permits(settings, reply_action, &ticket_id),
            need,
            true,
            || async {
                let zoho = zoho.expect("writes run online only");
                if mode == "sent" {
                    zoho.desk.send_reply(&ticket_id, &message).await?;
                    Ok("reply sent".to_owned())
                } else {
                    zoho.desk.create_draft(&ticket_id, &message).await?;
                    Ok("draft created".to_owned())
                }
            },
        )
        .await
    }

    /// Runs one writing step under its guards and records it.
    #[allow(clippy::too_many_arguments)]
    async fn write<F, Fut>(
        &self,
        report: &mut DecisionReport,
        zoho: Option<&ZohoClients>,
        job_key: &str,
        step: &str,
        gate: Gate<'_>,
        need: Need,
        writes_ticket: bool,
        action: F,
    ) -> Flow
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, ZohoError>>,
    {
        let what = match need {
            Err(why) => {
                report.record(StepReport::new(step, StepStatus::NotNeeded, why));
                return Flow::Continue;
            }
            Ok(what) => what,
        };
        if zoho.is_none() {
            report.record(StepReport::new(
                step,
                StepStatus::Suggested,
                format!("would {what} (offline: no Zoho credentials)"),
            ));
            return Flow::Continue;
        }
        if let Some(refused) = gate.refused {
            // Outside the share reads like a flag that is off, with the bucket that decided.
            let detail = match refused {
                None => format!("would {what}"),
                Some(outside) => format!("{outside}: would {what}"),
            };
            report.record(StepReport::new(step, StepStatus::SkippedFlagOff, detail));
            return Flow::Continue;
        }
        match self.ledger.completed(job_key, step).await {
            Ok(Some(detail)) => {
                report.record(StepReport::new(
                    step,
                    StepStatus::Done,
                    format!("{detail} (in an earlier attempt)"),
                ));
                return Flow::Continue;
            }
            Ok(None) => {}
            Err(error) => {
                report.record(ledger_failed(step, &error));
                return Flow::Stop;
            }
        }
        let started = Instant::now();
        let outcome = action()
            .instrument(tracing::info_span!(super::STEP_SPAN, step))
            .await;
        if writes_ticket {
            self.echo.record_write(&report.ticket_id, started);
        }
        gate.settled(outcome.is_err());
        match outcome {
            Ok(detail) => {
                self.ledger.record(job_key, step, &detail).await;
                report.record(timed(
                    StepReport::new(step, StepStatus::Done, detail),
                    started,
                ));
                Flow::Continue
            }
            Err(error) => {
                // A reply or note that may have gone through is never sent again blindly.
                let repeatable =
                    !(matches!(step, "reply" | "add_note") && error.may_have_written());
                report.record(failed(step, &error, started, !repeatable));
                // A failed reply does not hold back the ticket's status, deal and note; any
                // other failed write stops the run (the next attempt resumes it).
                if step == "reply" {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
        }
    }
}

/// The deal note: a machine-readable first line, then what happened, then the rule's note.
fn note_text(report: &DecisionReport, extra: Option<&str>) -> String {
    let steps: Vec<String> = report
        .steps
        .iter()
        .filter(|s| is_write(&s.step))
        .map(|s| {
            format!(
                "{}={}",
                s.step,
                s.status.as_str().replace(": ", ":").replace(' ', "_")
            )
        })
        .collect();
    let rule = report
        .routing
        .as_ref()
        .and_then(|r| r.rule.clone())
        .unwrap_or_else(|| "none".to_owned());
    let mut lines = vec![format!(
        "deskhook ticket={} rule={rule} {}",
        report.ticket_id,
        steps.join(" ")
    )];
    for step in report.steps.iter().filter(|s| is_write(&s.step)) {
        lines.push(format!(
            "- {}: {} ({})",
            step.step,
            step.status.as_str(),
            step.detail
        ));
    }
    if let Some(text) = extra {
        lines.push(text.to_owned());
    }
    lines.join("\n")
}

fn is_write(step: &str) -> bool {
    matches!(
        step,
        "dispatch" | "link" | "reply" | "update_ticket" | "update_deal" | "add_note"
    )
}

fn summary(deal: &CrmDeal) -> DealSummary {
    DealSummary {
        id: deal.id.clone(),
        name: deal
            .fields
            .get("Deal_Name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        stage: deal
            .fields
            .get("Stage")
            .and_then(Value::as_str)
            .map(str::to_owned),
        amount: deal.fields.get("Amount").and_then(rules::as_number),
    }
}

fn unknown_department(name: &str) -> ZohoError {
    ZohoError::InvalidInput {
        call: Call::write(Api::Desk, "move_ticket"),
        reason: format!("department {name:?} does not exist in the portal"),
    }
}

fn hex_key(key: &DedupeKey) -> String {
    hex::encode(&key[..12])
}

fn timed(mut step: StepReport, started: Instant) -> StepReport {
    step.duration_ms = started.elapsed().as_millis() as u64;
    step
}

/// A step not attempted because the ledger could not say whether it was already done.
fn ledger_failed(step: &str, error: &LedgerError) -> StepReport {
    let mut report = StepReport::new(step, StepStatus::Failed, error.to_string());
    report.retryable = true;
    report
}

fn failed(step: &str, error: &ZohoError, started: Instant, never_retry: bool) -> StepReport {
    let mut report = timed(
        StepReport::new(step, StepStatus::Failed, error.to_string()),
        started,
    );
    report.retryable = error.retryable() && !never_retry;
    report
}
