//! What the console shows, computed from stored decisions: filters, the outcome of a run in
//! plain words, page rows and the rollout summary. Pure functions over data, so they are tested
//! without HTTP; the templates only lay the values out.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{Settings, SettingsSource};
use crate::decisions::StoredDecision;
use crate::workflow::report::rfc3339;
use crate::workflow::{DecisionReport, StepStatus};

/// Rows on one page of the decisions list.
pub const PAGE_SIZE: usize = 25;
/// Longest filter value kept; longer input is cut, never an error.
const MAX_FILTER_CHARS: usize = 120;
/// The rule filter's value for "no rule matched".
pub const NO_RULE: &str = "(none)";

/// The writing steps, the flags that allow each, and how support staff call them.
pub const WRITING_STEPS: [(&str, &str, &[&str]); 6] = [
    ("dispatch", "Move to the department", &["dispatch"]),
    ("link", "Link the CRM deal", &["link"]),
    (
        "reply",
        "Reply to the customer",
        &["respond", "draftReplies"],
    ),
    ("update_ticket", "Set the ticket status", &["updateTicket"]),
    ("update_deal", "Update the CRM deal", &["updateDeal"]),
    ("add_note", "Add a note to the deal", &["addNote"]),
];

/// The result of one run, as the list's outcome filter knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Failed,
    Skipped,
    Acted,
    WouldAct,
    Nothing,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Self::Failed,
        Self::Acted,
        Self::WouldAct,
        Self::Nothing,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Acted => "acted",
            Self::WouldAct => "would_act",
            Self::Nothing => "nothing",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Failed => "Failed",
            Self::Skipped => "Left alone",
            Self::Acted => "Acted",
            Self::WouldAct => "Would act (flag off)",
            Self::Nothing => "Nothing to do",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == value)
    }

    /// A failure wins over everything; then a run skipped as a whole; then any write done;
    /// then any write held back by a flag or by offline mode.
    pub fn of(report: &DecisionReport) -> Self {
        let writing = || {
            report
                .steps
                .iter()
                .filter(|s| WRITING_STEPS.iter().any(|(name, _, _)| *name == s.step))
        };
        if report.steps.iter().any(|s| s.status == StepStatus::Failed) {
            Self::Failed
        } else if report.skipped.is_some() {
            Self::Skipped
        } else if writing().any(|s| s.status == StepStatus::Done) {
            Self::Acted
        } else if writing()
            .any(|s| matches!(s.status, StepStatus::SkippedFlagOff | StepStatus::Suggested))
        {
            Self::WouldAct
        } else {
            Self::Nothing
        }
    }
}

/// The list's filters, as given in the query string. Unknown or empty values mean "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub department: Option<String>,
    pub rule: Option<String>,
    pub outcome: Option<Outcome>,
    pub ticket: Option<String>,
    pub page: usize,
}

impl Filters {
    pub fn from_query(query: &HashMap<String, String>) -> Self {
        let text = |key: &str| {
            query
                .get(key)
                .map(|v| v.trim().chars().take(MAX_FILTER_CHARS).collect::<String>())
                .filter(|v| !v.is_empty())
        };
        Self {
            department: text("department"),
            rule: text("rule"),
            outcome: text("outcome").as_deref().and_then(Outcome::parse),
            ticket: text("ticket").map(|t| t.trim_start_matches('#').trim().to_owned()),
            page: query
                .get("page")
                .and_then(|p| p.trim().parse::<usize>().ok())
                .unwrap_or(1)
                .clamp(1, 100_000),
        }
    }

    pub fn matches(&self, report: &DecisionReport) -> bool {
        let department = self.department.as_deref().is_none_or(|wanted| {
            [&report.department, &report.target_department]
                .into_iter()
                .flatten()
                .any(|d| crate::names::same_name(d, wanted))
        });
        let rule = self.rule.as_deref().is_none_or(|wanted| {
            match report.routing.as_ref().and_then(|r| r.rule.as_deref()) {
                Some(rule) => rule == wanted,
                None => wanted == NO_RULE,
            }
        });
        let outcome = self.outcome.is_none_or(|o| Outcome::of(report) == o);
        let ticket = self.ticket.as_deref().is_none_or(|wanted| {
            report.ticket_number.as_deref() == Some(wanted) || report.ticket_id == wanted
        });
        department && rule && outcome && ticket
    }

    /// The filters as a query string (without `page`), for links and exports.
    pub fn query(&self) -> String {
        let pairs = [
            ("department", self.department.as_deref()),
            ("rule", self.rule.as_deref()),
            ("outcome", self.outcome.map(Outcome::as_str)),
            ("ticket", self.ticket.as_deref()),
        ];
        pairs
            .iter()
            .filter_map(|(key, value)| value.map(|v| format!("{key}={}", encode(v))))
            .collect::<Vec<_>>()
            .join("&")
    }

    pub fn is_empty(&self) -> bool {
        self.department.is_none()
            && self.rule.is_none()
            && self.outcome.is_none()
            && self.ticket.is_none()
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `2026-11-20 10:00:05 UTC`: readable, and unambiguous across time zones.
pub fn display_time(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A Zoho Desk link only when it is a plain web address: a hostile `javascript:` URL in a
/// payload must never become a clickable link, and escaping alone would not prevent that.
pub fn safe_web_url(url: Option<&str>) -> Option<String> {
    let url = url?.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let clean = !rest.is_empty()
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    clean.then(|| url.to_owned())
}

fn step_name(step: &str) -> &str {
    match step {
        "fetch" => "Read the ticket",
        "find_deal" => "Find the deal",
        "route" => "Route",
        "dispatch" => "Move",
        "link" => "Link deal",
        "reply" => "Reply",
        "update_ticket" => "Status",
        "update_deal" => "Update deal",
        "add_note" => "Note",
        other => other,
    }
}

fn status_label(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Done => "done",
        StepStatus::SkippedFlagOff => "skipped (flag off)",
        StepStatus::NotNeeded => "not needed",
        StepStatus::Suggested => "suggested",
        StepStatus::Failed => "failed",
    }
}

fn link_label(strategy: &str) -> &'static str {
    match strategy {
        "ticket_field" => "already linked on the ticket",
        "email" => "found by the customer's email",
        "phone" => "found by the customer's phone",
        "none" => "no deal found",
        "offline" => "not looked up (offline)",
        _ => "",
    }
}

#[derive(Serialize)]
pub struct StepView {
    /// Whether the list shows it: the writes always, reading steps only when they failed.
    pub listed: bool,
    pub step: String,
    pub name: String,
    pub status: &'static str,
    pub label: &'static str,
    pub detail: String,
    pub duration_ms: u64,
    pub retryable: bool,
}

#[derive(Serialize)]
pub struct DealView {
    pub id: String,
    pub name: Option<String>,
    pub stage: Option<String>,
    pub amount: Option<String>,
}

#[derive(Serialize)]
pub struct ReplyView {
    pub template: String,
    pub text: String,
    pub mode: String,
    pub rewritten: bool,
}

#[derive(Serialize)]
pub struct TraceView {
    pub rule: String,
    pub matched: bool,
    pub reason: String,
}

/// One decision, flattened for a template or an export.
#[derive(Serialize)]
pub struct DecisionView {
    pub id: String,
    pub time: String,
    pub started_at: String,
    pub ticket_id: String,
    pub ticket_number: Option<String>,
    pub subject: Option<String>,
    pub event_type: String,
    pub attempt: u32,
    pub department: Option<String>,
    pub target_department: Option<String>,
    pub rule: Option<String>,
    pub trace: Vec<TraceView>,
    pub deal: Option<DealView>,
    pub link_strategy: Option<String>,
    pub link_label: &'static str,
    pub reply: Option<ReplyView>,
    pub steps: Vec<StepView>,
    pub outcome: &'static str,
    pub outcome_label: &'static str,
    pub skipped: Option<String>,
    pub offline: bool,
    pub web_url: Option<String>,
    pub flags: Vec<(&'static str, bool)>,
    pub settings_generation: i64,
    pub duration_ms: u64,
}

impl DecisionView {
    pub fn new(decision: &StoredDecision) -> Self {
        let report = &decision.report;
        let outcome = Outcome::of(report);
        let link_strategy = report.link_strategy.and_then(|s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        });
        Self {
            id: decision.id.clone(),
            time: display_time(report.started_at),
            started_at: rfc3339::format(report.started_at),
            ticket_id: report.ticket_id.clone(),
            ticket_number: report.ticket_number.clone(),
            subject: report.subject.clone(),
            event_type: report.event_type.clone(),
            attempt: report.attempt,
            department: report.department.clone(),
            target_department: report.target_department.clone(),
            rule: report.routing.as_ref().and_then(|r| r.rule.clone()),
            trace: report
                .routing
                .iter()
                .flat_map(|r| &r.trace)
                .map(|t| TraceView {
                    rule: t.rule.clone(),
                    matched: t.matched,
                    reason: t.reason.clone(),
                })
                .collect(),
            deal: report.deal.as_ref().map(|d| DealView {
                id: d.id.clone(),
                name: d.name.clone(),
                stage: d.stage.clone(),
                amount: d.amount.map(|a| format!("{a}")),
            }),
            link_label: link_strategy.as_deref().map_or("", link_label),
            link_strategy,
            reply: report.reply.as_ref().map(|r| ReplyView {
                template: r.template.clone(),
                text: r.text.clone(),
                mode: r.mode.clone(),
                rewritten: r.rewritten,
            }),
            steps: report
                .steps
                .iter()
                .map(|s| StepView {
                    listed: s.status == StepStatus::Failed
                        || WRITING_STEPS.iter().any(|(name, _, _)| *name == s.step),
                    step: s.step.clone(),
                    name: step_name(&s.step).to_owned(),
                    status: s.status.label(),
                    label: status_label(s.status),
                    detail: s.detail.clone(),
                    duration_ms: s.duration_ms,
                    retryable: s.retryable,
                })
                .collect(),
            outcome: outcome.as_str(),
            outcome_label: outcome.label(),
            skipped: report.skipped.clone(),
            offline: report.offline,
            web_url: safe_web_url(report.web_url.as_deref()),
            flags: flag_list(&report.flags),
            settings_generation: report.settings_generation,
            duration_ms: report.duration_ms,
        }
    }

    /// The status of one step by its report name, `""` when the run did not reach it.
    pub fn step_status(&self, step: &str) -> &'static str {
        self.steps
            .iter()
            .find(|s| s.step == step)
            .map_or("", |s| s.status)
    }
}

fn flag_list(flags: &crate::crd::AutomationFlags) -> Vec<(&'static str, bool)> {
    vec![
        ("dispatch", flags.dispatch),
        ("link", flags.link),
        ("respond", flags.respond),
        ("updateTicket", flags.update_ticket),
        ("updateDeal", flags.update_deal),
        ("addNote", flags.add_note),
        ("draftReplies", flags.draft_replies),
    ]
}

/// The decisions that pass `filters`, newest first.
pub fn filter<'a>(decisions: &'a [StoredDecision], filters: &Filters) -> Vec<&'a StoredDecision> {
    decisions
        .iter()
        .filter(|d| filters.matches(&d.report))
        .collect()
}

/// Values the filter lists offer: departments and rules seen in the retained decisions.
#[derive(Serialize)]
pub struct Choices {
    pub departments: Vec<String>,
    pub rules: Vec<String>,
    pub outcomes: Vec<(&'static str, &'static str)>,
}

pub fn choices(decisions: &[StoredDecision], settings: &Settings) -> Choices {
    let mut departments: BTreeSet<String> = settings.spec.departments.iter().cloned().collect();
    let mut rules: BTreeSet<String> = BTreeSet::new();
    for d in decisions {
        let report = &d.report;
        departments.extend(report.department.iter().cloned());
        departments.extend(report.target_department.iter().cloned());
        rules.extend(report.routing.iter().filter_map(|r| r.rule.clone()));
    }
    // Rules in the settings' priority order first, then any older ones seen in decisions.
    let mut ordered: Vec<&crate::crd::RoutingRule> = settings.spec.routing.iter().collect();
    ordered.sort_by_key(|r| r.priority);
    let mut rule_list: Vec<String> = ordered.iter().map(|r| r.name.clone()).collect();
    for rule in rules {
        if !rule_list.contains(&rule) {
            rule_list.push(rule);
        }
    }
    rule_list.push(NO_RULE.to_owned());
    Choices {
        departments: departments.into_iter().collect(),
        rules: rule_list,
        outcomes: Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), o.label()))
            .collect(),
    }
}

/// One writing step in the rollout panel.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct StepRollout {
    pub step: &'static str,
    pub label: &'static str,
    pub flags: Vec<(&'static str, bool)>,
    pub on: bool,
    /// Runs where the step wrote.
    pub done: usize,
    /// Runs where it would have written but its flag was off (or no credentials).
    pub held_back: usize,
    pub failed: usize,
}

/// The rollout panel: flags in force, where they come from, and what each write did lately.
#[derive(Serialize)]
pub struct Rollout {
    pub flags: Vec<(&'static str, bool)>,
    pub level: &'static str,
    pub source_kind: &'static str,
    pub source_name: String,
    pub generation: i64,
    pub applied_at: String,
    pub steps: Vec<StepRollout>,
    pub decisions: usize,
    pub oldest: Option<String>,
}

/// Which documented rollout level the flags match (`draftReplies` is a way of replying, not a
/// level of its own).
pub fn level(f: &crate::crd::AutomationFlags) -> &'static str {
    let first = f.dispatch && f.link;
    let second = f.respond && f.update_ticket;
    let third = f.update_deal && f.add_note;
    let none_second = !f.respond && !f.update_ticket;
    let none_third = !f.update_deal && !f.add_note;
    if !f.dispatch && !f.link && none_second && none_third {
        "Read-only: nothing is written to Zoho"
    } else if first && none_second && none_third {
        "Level 1: dispatch and link"
    } else if first && second && none_third {
        "Level 2: dispatch, link, replies and ticket status"
    } else if first && second && third {
        "Level 3: every write is on"
    } else {
        "A custom combination of flags"
    }
}

pub fn rollout(settings: &Settings, decisions: &[StoredDecision]) -> Rollout {
    let flags = settings.flags();
    let named = flag_list(flags);
    let on = |name: &str| named.iter().any(|(n, v)| *n == name && *v);
    let steps = WRITING_STEPS
        .iter()
        .map(|(step, label, flag_names)| {
            let mut row = StepRollout {
                step,
                label,
                flags: flag_names.iter().map(|n| (*n, on(n))).collect(),
                on: flag_names.iter().any(|n| on(n)),
                done: 0,
                held_back: 0,
                failed: 0,
            };
            for d in decisions {
                match d
                    .report
                    .steps
                    .iter()
                    .find(|s| s.step == *step)
                    .map(|s| s.status)
                {
                    Some(StepStatus::Done) => row.done += 1,
                    Some(StepStatus::SkippedFlagOff | StepStatus::Suggested) => row.held_back += 1,
                    Some(StepStatus::Failed) => row.failed += 1,
                    Some(StepStatus::NotNeeded) | None => {}
                }
            }
            row
        })
        .collect();
    let (source_kind, source_name) = match &settings.source {
        SettingsSource::Environment => ("environment variables", String::new()),
        SettingsSource::File(path) => ("settings file", path.clone()),
        SettingsSource::Kubernetes(name) => ("WebhookAutomation resource", name.clone()),
        SettingsSource::ReadOnly(why) => ("read-only fallback", why.clone()),
    };
    Rollout {
        flags: named,
        level: level(flags),
        source_kind,
        source_name,
        generation: settings.generation,
        applied_at: display_time(settings.applied_at),
        steps,
        decisions: decisions.len(),
        oldest: decisions.last().map(|d| display_time(d.report.started_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AutomationFlags;

    #[test]
    fn filter_values_are_trimmed_bounded_and_unknown_outcomes_ignored() {
        let query: HashMap<String, String> = [
            ("department", " DOC "),
            ("outcome", "exploded"),
            ("ticket", "#101"),
            ("page", "0"),
            ("rule", &"x".repeat(500)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let filters = Filters::from_query(&query);
        assert_eq!(filters.department.as_deref(), Some("DOC"));
        assert_eq!(filters.outcome, None);
        assert_eq!(filters.ticket.as_deref(), Some("101"));
        assert_eq!(filters.page, 1);
        assert_eq!(filters.rule.map(|r| r.len()), Some(MAX_FILTER_CHARS));
    }

    #[test]
    fn filter_links_encode_their_values() {
        let filters = Filters {
            department: Some("Refus CMA".into()),
            rule: Some("a&b=<c>".into()),
            ..Filters::default()
        };
        assert_eq!(
            filters.query(),
            "department=Refus%20CMA&rule=a%26b%3D%3Cc%3E"
        );
    }

    #[test]
    fn only_web_addresses_become_links() {
        assert_eq!(
            safe_web_url(Some("https://desk.zoho.eu/x#Cases/dv/1")).as_deref(),
            Some("https://desk.zoho.eu/x#Cases/dv/1")
        );
        for bad in [
            "javascript:alert(1)",
            "data:text/html,x",
            "https://a b",
            "//evil",
            "",
        ] {
            assert_eq!(safe_web_url(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn levels_follow_the_documented_rollout() {
        let mut flags = AutomationFlags::READ_ONLY;
        assert!(level(&flags).starts_with("Read-only"));
        flags.dispatch = true;
        flags.link = true;
        assert!(level(&flags).starts_with("Level 1"));
        flags.respond = true;
        flags.update_ticket = true;
        assert!(level(&flags).starts_with("Level 2"));
        flags.update_deal = true;
        flags.add_note = true;
        assert!(level(&flags).starts_with("Level 3"));
        flags.dispatch = false;
        assert!(level(&flags).starts_with("A custom"));
    }

    #[test]
    fn the_rollout_panel_shows_each_guarded_action_as_the_status_publishes_it() {
        use crate::crd::{ActionRolloutStatus, RolloutState};
        let spec: crate::crd::WebhookAutomationSpec = serde_yaml::from_str(
            "automation: {dispatch: true, respond: true}\n\
             rollout: {respond: {percent: 30}, dispatch: {steps: [5, 50]}}",
        )
        .unwrap();
        let settings = Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap();
        let rollouts = crate::rollout::Rollouts::default();
        let rows = guarded(&settings, &rollouts);
        let shown: Vec<_> = rows.iter().map(|r| (r.action, r.share, r.state)).collect();
        assert_eq!(
            shown,
            [("dispatch", 5, "Starting"), ("respond", 30, "Starting")]
        );

        let dispatch = settings.spec.rollout.dispatch.as_ref().unwrap();
        rollouts.publish(&std::collections::BTreeMap::from([(
            "dispatch".to_owned(),
            ActionRolloutStatus {
                percent: 0,
                state: RolloutState::RolledBack,
                decisions: 40,
                failures: 9,
                agreement: Some(0.75),
                spec_digest: crate::rollout::spec_digest(dispatch),
                ..Default::default()
            },
        )]));
        let row = &guarded(&settings, &rollouts)[0];
        assert_eq!((row.share, row.state, row.failures), (0, "RolledBack", 9));
        assert_eq!(row.agreement.as_deref(), Some("75.0 %"));
    }
}

/// One action's guarded rollout, as the console's rollout panel shows it.
#[derive(Serialize, Debug, PartialEq)]
pub struct GuardedRollout {
    pub action: &'static str,
    /// The share this pod applies now, in percent.
    pub share: u32,
    /// The state the status writer published, or `Starting` before it published any.
    pub state: &'static str,
    pub next_step_at: Option<String>,
    pub decisions: u64,
    pub failures: u64,
    pub overrides: u64,
    /// The shadow agreement as a percentage with one decimal, when anything was compared.
    pub agreement: Option<String>,
    pub message: Option<String>,
}

/// The actions with a `spec.rollout` entry, in the resource's order.
pub fn guarded(settings: &Settings, rollouts: &crate::rollout::Rollouts) -> Vec<GuardedRollout> {
    let published = rollouts.published();
    settings
        .spec
        .rollout
        .named()
        .into_iter()
        .filter_map(|(action, spec)| {
            let spec = spec?;
            let status = published
                .get(action)
                .filter(|s| s.spec_digest == crate::rollout::spec_digest(spec));
            Some(GuardedRollout {
                action,
                share: rollouts.percent(settings, action),
                state: status.map_or("Starting", |s| s.state.as_str()),
                next_step_at: status.and_then(|s| s.next_step_at.clone()),
                decisions: status.map_or(0, |s| s.decisions),
                failures: status.map_or(0, |s| s.failures),
                overrides: status.map_or(0, |s| s.overrides),
                agreement: status
                    .and_then(|s| s.agreement)
                    .map(|a| format!("{:.1} %", a * 100.0)),
                message: status.and_then(|s| s.message.clone()),
            })
        })
        .collect()
}
