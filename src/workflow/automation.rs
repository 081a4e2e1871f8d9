//! The automation workflow: fetch, link, route, then the writing steps, each behind its flag.
//!
//! Deciding is pure (`linking`, `rules`, `reply`); this module only gathers the facts and
//! carries the decision out. Every write passes through [`AutomationWorkflow::write`], which
//! checks, in order: is it needed, are we online, is its flag on in this job's settings
//! snapshot, did an earlier attempt of this job already do it. With every flag off no write is
//! ever attempted.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::connection::{ZohoConnection, ZohoConnector};
use super::echo::EchoGuard;
use super::ledger::{LedgerError, StepLedger};
use super::linking::{self, LinkStrategy, Message};
use super::offline;
use super::reply::{self, ReplyError, ReplyRewriter, ReplyRules};
use super::rules::{self, RoutingInput};
use super::text;
use super::{DealSummary, DecisionReport, ReplySummary, StepReport, StepStatus, Workflow};
use crate::config::Settings;
use crate::event::DedupeKey;
use crate::queue::Job;
use crate::region;
use crate::zoho::{Api, Call, ContentType, Reply, Thread, Ticket, ZohoClients, ZohoError};

/// Contacts whose deals are read at most when several share the customer's email.
const MAX_CONTACTS: usize = 3;
/// Longest template reply accepted (Zoho's own limit is far higher).
const MAX_REPLY_CHARS: usize = 10_000;
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
        }
    }
}

/// What the workflow knows about a ticket once fetched.
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub subject: String,
    /// The latest customer message, quoted history removed.
    pub message: String,
    pub department_id: Option<String>,
    pub department: Option<String>,
    pub status: Option<String>,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub phone: Option<String>,
    /// The current value of the ticket's link field.
    pub link_field: Option<String>,
    pub ticket_number: Option<String>,
    pub web_url: Option<String>,
}

/// The deal found for a ticket.
struct FoundDeal {
    id: String,
    fields: Map<String, Value>,
}

/// Whether the run goes on after a step.
enum Flow {
    Continue,
    Stop,
}

/// Why a write is needed, or why not.
type Need = Result<String, String>;

#[async_trait::async_trait]
impl Workflow for AutomationWorkflow {
    async fn run(&self, job: &Job, settings: &Settings) -> DecisionReport {
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

    async fn run_steps(&self, job: &Job, settings: &Settings, report: &mut DecisionReport) {
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
                let mut step = StepReport::new("fetch", StepStatus::Failed, error);
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
            Some(zoho) => fetch(zoho, &event.ticket_id, settings).await,
        };
        let facts = match facts {
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
        report.subject = Some(facts.subject.clone());
        report.ticket_number = facts.ticket_number.clone();
        report.web_url = facts.web_url.clone();
        report.department = facts.department.clone().or(facts.department_id.clone());
        let job_key = format!("{}-{}", hex_key(&event.dedupe_key), job.id);
        // A retried job whose earlier attempt moved the ticket finds it in the target
        // department; that move was ours, so the job carries on. The ledger is only asked
        // about a ticket found outside `spec.departments`.
        if let Some(department) = &facts.department
            && !settings.handles_department(department)
        {
            match self.moved_by(&job_key, department).await {
                Ok(true) => {}
                Ok(false) => {
                    report.skipped = Some(format!(
                        "department {department} is not in spec.departments"
                    ));
                    return;
                }
                Err(error) => {
                    report.record(ledger_failed("dispatch", &error));
                    return;
                }
            }
        }

        // 2. Link (decide).
        let started = Instant::now();
        let deal = match &zoho {
            None => {
                report.link_strategy = Some(LinkStrategy::Offline);
                report.record(StepReport::new(
                    "find_deal",
                    StepStatus::NotNeeded,
                    "offline: no Zoho credentials",
                ));
                None
            }
            Some(zoho) => match find_deal(zoho, &facts, settings).await {
                Ok((strategy, deal, detail)) => {
                    report.link_strategy = Some(strategy);
                    report.record(timed(
                        StepReport::new("find_deal", StepStatus::Done, detail),
                        started,
                    ));
                    deal
                }
                Err(error) => {
                    report.record(failed("find_deal", &error, started, false));
                    return;
                }
            },
        };
        report.deal = deal.as_ref().map(summary);

        // 3. Route (decide).
        let routing = rules::route(
            &settings.spec.routing,
            &RoutingInput {
                deal: deal.as_ref().map(|d| &d.fields),
                subject: &facts.subject,
                message: &facts.message,
                department: facts.department.as_deref(),
                event_type: &event.event_type,
            },
        );
        let outcome = routing.outcome.clone().unwrap_or_default();
        let rule_name = routing.rule.clone();
        report.target_department = outcome.department.clone();
        report.record(StepReport::new(
            "route",
            StepStatus::Done,
            match &rule_name {
                Some(rule) => format!("rule {rule} matched"),
                None => "no rule matched: the ticket stays where it is".to_owned(),
            },
        ));
        report.routing = Some(routing);

        let zoho = zoho.as_ref();
        let flags = *settings.flags();
        let ticket_id = event.ticket_id.clone();

        // 4. Dispatch.
        let need = match &outcome.department {
            None => Err("no rule chose a department".to_owned()),
            Some(target) if same_name(facts.department.as_deref(), target) => {
                Err(format!("already in {target}"))
            }
            Some(target) => Ok(format!("move to {target}")),
        };
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "dispatch",
                flags.dispatch,
                need,
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
        if let Flow::Stop = flow {
            return;
        }

        // 5. Link (write).
        let crm_web = crm_web(&settings.zoho().region);
        let field = settings.spec.linking.ticket_field.clone();
        let need = match &deal {
            None => Err("no deal found".to_owned()),
            Some(deal)
                if facts
                    .link_field
                    .as_deref()
                    .and_then(linking::deal_id_in_link)
                    .as_deref()
                    == Some(deal.id.as_str()) =>
            {
                Err("the ticket already links this deal".to_owned())
            }
            Some(deal) => Ok(format!("store deal {} in {field}", deal.id)),
        };
        let link = deal
            .as_ref()
            .map(|d| {
                linking::link_value(
                    &d.id,
                    d.fields.get("Deal_Name").and_then(Value::as_str),
                    &crm_web,
                )
            })
            .unwrap_or_default();
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "link",
                flags.link,
                need,
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
            .reply_step(
                report,
                zoho,
                &job_key,
                settings,
                &facts,
                deal.as_ref(),
                &outcome,
                rule_name.as_deref(),
            )
            .await
        {
            return;
        }

        // 7. Update ticket.
        let need = match &outcome.status {
            None => Err("the rule sets no status".to_owned()),
            Some(status) if same_name(facts.status.as_deref(), status) => {
                Err(format!("status is already {status}"))
            }
            Some(status) => Ok(format!("set status {status}")),
        };
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "update_ticket",
                flags.update_ticket,
                need,
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
        if let Flow::Stop = flow {
            return;
        }

        // 8. Update deal, then the note that says what was done.
        let need = match (&deal, outcome.deal_updates.is_empty()) {
            (None, _) => Err("no deal found".to_owned()),
            (Some(_), true) => Err("the rule sets no deal field".to_owned()),
            (Some(deal), false) => Ok(format!(
                "set {} on deal {}",
                outcome
                    .deal_updates
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                deal.id
            )),
        };
        let updates: Map<String, Value> = outcome.deal_updates.clone().into_iter().collect();
        let deal_id = deal.as_ref().map(|d| d.id.clone()).unwrap_or_default();
        let flow = self
            .write(
                report,
                zoho,
                &job_key,
                "update_deal",
                flags.update_deal,
                need,
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
        let need = match &deal {
            None => Err("no deal found".to_owned()),
            Some(_) if !acted && outcome.note.is_none() => {
                Err("nothing was written and the rule asks for no note".to_owned())
            }
            Some(deal) => Ok(format!("note on deal {}", deal.id)),
        };
        // Written only when a note is due (never offline, where no deal is found).
        let note = match &need {
            Ok(_) => note_text(
                report,
                &outcome.note,
                &context(
                    &facts,
                    deal.as_ref(),
                    rule_name.as_deref(),
                    &event.ticket_id,
                ),
            ),
            Err(_) => String::new(),
        };
        self.write(
            report,
            zoho,
            &job_key,
            "add_note",
            flags.add_note,
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

    #[allow(clippy::too_many_arguments)]
    async fn reply_step(
        &self,
        report: &mut DecisionReport,
        zoho: Option<&ZohoClients>,
        job_key: &str,
        settings: &Settings,
        facts: &Facts,
        deal: Option<&FoundDeal>,
        outcome: &crate::crd::RuleOutcome,
        rule: Option<&str>,
    ) -> Flow {
        let Some(template) = &outcome.reply_template else {
            report.record(StepReport::new(
                "reply",
                StepStatus::NotNeeded,
                "the rule names no reply template",
            ));
            return Flow::Continue;
        };
        let replies = &settings.spec.replies;
        let context = context(facts, deal, rule, &report.ticket_id);
        let rendered = reply::render(&replies.templates, template, &context).and_then(|text| {
            let rules = ReplyRules {
                min_chars: 1,
                max_chars: MAX_REPLY_CHARS,
                forbidden_terms: &replies.forbidden_terms,
            };
            reply::validate(&text, &rules).map(|()| text)
        });
        let mut text = match rendered {
            Ok(text) => text,
            Err(error) => {
                // A reply that cannot be used is reported; status, deal and note still run.
                report.record(StepReport {
                    retryable: false,
                    ..StepReport::new("reply", StepStatus::Failed, error.to_string())
                });
                return Flow::Continue;
            }
        };
        let flags = settings.flags();
        let mut rewritten = false;
        // The model reads the rendered reply, customer text included: it is asked only when a
        // reply is to be written, never for a suggestion nobody sends.
        let writes_reply = flags.respond || flags.draft_replies;
        if let (Some(llm), Some(rewriter), true) = (&replies.llm, &self.rewriter, writes_reply) {
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
        let mode = if flags.respond && (!rewritten || send_rewritten) {
            "sent"
        } else if flags.respond || flags.draft_replies {
            "draft"
        } else {
            "suggestion"
        };
        let department = outcome
            .department
            .as_deref()
            .or(facts.department.as_deref());
        let from = department
            .and_then(|d| {
                replies
                    .from
                    .iter()
                    .find(|(name, _)| same_name(Some(name), d))
            })
            .or_else(|| replies.from.get_key_value("default"))
            .map(|(_, address)| address.clone());
        report.reply = Some(ReplySummary {
            template: template.clone(),
            text: text.clone(),
            rewritten,
            mode: mode.to_owned(),
        });

        let need: Need = match (&facts.customer_email, &from) {
            (None, _) => Err("no customer email address is known".to_owned()),
            (Some(_), None) => Err(format!(
                "replies.from has no address for {} and no default",
                department.unwrap_or("this department")
            )),
            (Some(to), Some(_)) => Ok(format!(
                "{} reply to {to}",
                if mode == "sent" { "send" } else { "draft" }
            )),
        };
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
            from_email_address: from.unwrap_or_default(),
            to: facts.customer_email.clone().unwrap_or_default(),
            content: text,
            content_type: ContentType::PlainText,
        };
        self.write(
            report,
            zoho,
            job_key,
            "reply",
            flags.respond || flags.draft_replies,
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
        flag: bool,
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
        if !flag {
            report.record(StepReport::new(
                step,
                StepStatus::SkippedFlagOff,
                format!("would {what}"),
            ));
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

/// Reads the ticket, its department and its latest customer message.
async fn fetch(
    zoho: &ZohoClients,
    ticket_id: &str,
    settings: &Settings,
) -> Result<Facts, ZohoError> {
    let ticket: Ticket = zoho.desk.get_ticket(ticket_id).await?;
    let threads = zoho.desk.list_threads(ticket_id).await?;
    let department = match &ticket.department_id {
        Some(id) => zoho
            .desk
            .departments()
            .await?
            .into_iter()
            .find(|d| &d.id == id)
            .map(|d| d.name),
        None => None,
    };
    let latest = latest_inbound(&threads);
    let body = latest
        .map(|t| t.content.as_deref().or(t.summary.as_deref()).unwrap_or(""))
        .map(text::html_to_text)
        .unwrap_or_else(|| {
            ticket
                .description
                .as_deref()
                .map(text::html_to_text)
                .unwrap_or_default()
        });
    let staff = &settings.spec.linking.staff_domains;
    let message = latest.map(|t| Message {
        from: t
            .from_email_address
            .as_deref()
            .or(t.author.as_ref().and_then(|a| a.email.as_deref())),
        body: &body,
        is_forward: t.is_forward.unwrap_or(false),
    });
    let customer_email = linking::customer_email(message.as_ref(), ticket.email.as_deref(), staff);
    let customer_name = latest
        .and_then(|t| t.author.as_ref())
        .and_then(|a| a.name.clone());
    Ok(Facts {
        subject: ticket.subject.clone().unwrap_or_default(),
        message: text::strip_quoted(&body),
        department_id: ticket.department_id.clone(),
        department,
        status: ticket.status.clone(),
        customer_email,
        customer_name,
        phone: ticket.phone.clone(),
        link_field: ticket
            .cf
            .get(&settings.spec.linking.ticket_field)
            .and_then(Value::as_str)
            .map(str::to_owned),
        ticket_number: ticket.ticket_number.clone(),
        web_url: ticket.web_url.clone(),
    })
}

/// The most recent thread the customer wrote (ISO timestamps order as text).
fn latest_inbound(threads: &[Thread]) -> Option<&Thread> {
    threads
        .iter()
        .filter(|t| t.is_incoming() && t.status.as_deref() != Some("DRAFT"))
        .max_by(|a, b| a.created_time.cmp(&b.created_time))
}

/// The deal behind the ticket: its link field, then the customer's email, then the phone.
async fn find_deal(
    zoho: &ZohoClients,
    facts: &Facts,
    settings: &Settings,
) -> Result<(LinkStrategy, Option<FoundDeal>, String), ZohoError> {
    let preferences = &settings.spec.linking.preferences;
    if let Some(id) = facts
        .link_field
        .as_deref()
        .and_then(linking::deal_id_in_link)
        && let Some(deal) = zoho.crm.get_deal(&id).await?
    {
        let found = FoundDeal {
            id: deal.id().to_owned(),
            fields: deal.fields().clone(),
        };
        return Ok((
            LinkStrategy::TicketField,
            Some(found),
            format!("deal {id} from the ticket's link field"),
        ));
    }
    let mut candidates = Vec::new();
    let mut strategy = LinkStrategy::None;
    if let Some(email) = &facts.customer_email {
        for contact in zoho
            .crm
            .search_contacts_by_email(email)
            .await?
            .iter()
            .take(MAX_CONTACTS)
        {
            candidates.extend(zoho.crm.deals_of_contact(contact.id()).await?);
        }
        if !candidates.is_empty() {
            strategy = LinkStrategy::Email;
        }
    }
    if candidates.is_empty()
        && let Some(phone) = facts.phone.as_deref().and_then(linking::normalise_phone)
    {
        candidates = zoho.crm.search_deals_by_phone(&phone).await?;
        if !candidates.is_empty() {
            strategy = LinkStrategy::Phone;
        }
    }
    let fields: Vec<Map<String, Value>> = candidates.iter().map(|d| d.fields().clone()).collect();
    let chosen = linking::choose_deal(&fields, preferences).map(|(index, tier)| {
        (
            candidates[index].id().to_owned(),
            fields[index].clone(),
            tier,
        )
    });
    Ok(match chosen {
        Some((id, fields, tier)) => {
            let detail = format!(
                "deal {id} by {strategy:?} (preference {}, {} candidate(s))",
                tier + 1,
                candidates.len()
            );
            (
                strategy,
                Some(FoundDeal { id, fields }),
                detail.to_lowercase(),
            )
        }
        None if candidates.is_empty() => (LinkStrategy::None, None, "no deal found".to_owned()),
        None => (
            LinkStrategy::None,
            None,
            format!(
                "{} deal(s) found, none matches a preference",
                candidates.len()
            ),
        ),
    })
}

/// The variables templates see.
fn context(facts: &Facts, deal: Option<&FoundDeal>, rule: Option<&str>, ticket_id: &str) -> Value {
    let mut contact = Map::new();
    if let Some(email) = &facts.customer_email {
        contact.insert("email".into(), json!(email));
    }
    if let Some(name) = facts
        .customer_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
    {
        contact.insert("name".into(), json!(name));
        if let Some(first) = name.split_whitespace().next() {
            contact.insert("first_name".into(), json!(first));
        }
    }
    let mut deal_vars = Map::new();
    if let Some(deal) = deal {
        deal_vars.insert("id".into(), json!(deal.id));
        for (key, field) in [
            ("name", "Deal_Name"),
            ("stage", "Stage"),
            ("amount", "Amount"),
        ] {
            if let Some(value) = deal.fields.get(field).filter(|v| !v.is_null()) {
                deal_vars.insert(key.into(), value.clone());
            }
        }
        deal_vars.insert("fields".into(), Value::Object(deal.fields.clone()));
    }
    json!({
        "ticket": {
            "id": ticket_id,
            "number": facts.ticket_number,
            "subject": facts.subject,
            "status": facts.status,
            "department": facts.department,
        },
        "contact": contact,
        "deal": deal_vars,
        "rule": {"name": rule},
    })
}

/// The deal note: a machine-readable first line, then what happened, then the rule's note.
fn note_text(report: &DecisionReport, extra: &Option<String>, context: &Value) -> String {
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
    if let Some(source) = extra {
        match reply::render_source("note", source, context) {
            Ok(text) => lines.push(text),
            Err(ReplyError::Render { message, .. }) => {
                lines.push(format!("(note template failed: {message})"))
            }
            Err(other) => lines.push(format!("(note template failed: {other})")),
        }
    }
    lines.join("\n")
}

fn is_write(step: &str) -> bool {
    matches!(
        step,
        "dispatch" | "link" | "reply" | "update_ticket" | "update_deal" | "add_note"
    )
}

fn summary(deal: &FoundDeal) -> DealSummary {
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

fn same_name(current: Option<&str>, wanted: &str) -> bool {
    current.is_some_and(|c| crate::names::same_name(c, wanted))
}

fn unknown_department(name: &str) -> ZohoError {
    ZohoError::InvalidInput {
        call: Call::write(Api::Desk, "move_ticket"),
        reason: format!("department {name:?} does not exist in the portal"),
    }
}

/// The CRM web host of a region, for links people click.
fn crm_web(region: &str) -> String {
    let desk = region::hosts(region).map_or("desk.zoho.com", |r| r.desk);
    format!("https://{}", desk.replacen("desk.", "crm.", 1))
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
