//! The plan: what a run would do, decided from its facts and the settings alone.
//!
//! [`plan`] does no I/O at all: no Zoho call, no model, no ledger, no clock. The workflow
//! carries a plan out step by step; a backtest replays recorded facts through it under other
//! settings. Both therefore see exactly the same decisions. What depends on effects stays with
//! the workflow: whether a flag lets a write through, whether an earlier attempt already did
//! it, the model's rewrite of a reply, and the note's list of what was done.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::facts::{CrmDeal, Facts};
use super::linking::{self, LinkStrategy};
use super::reply::{self, ReplyError, ReplyRules};
use super::rules::{self, RoutingDecision, RoutingInput};
use crate::config::Settings;
use crate::crd::RuleOutcome;
use crate::region;

/// Longest template reply accepted (Zoho's own limit is far higher).
pub const MAX_REPLY_CHARS: usize = 10_000;

/// Why a write is needed (`Ok(what it does)`), or why not (`Err(why)`).
pub type Need = Result<String, String>;

/// Everything a run intends, before any flag, ledger or model has a say.
#[derive(Debug)]
pub struct Plan {
    /// Why the ticket is left alone, when it is.
    pub skipped: Option<String>,
    /// The deal chosen among the candidates.
    pub deal: Option<CrmDeal>,
    pub link_strategy: LinkStrategy,
    /// How the deal was chosen, or why none was.
    pub deal_detail: String,
    /// The matching rule and every rule's verdict.
    pub routing: RoutingDecision,
    /// What the matching rule asks for (nothing when no rule matched).
    pub outcome: RuleOutcome,
    pub dispatch: Need,
    pub link: Need,
    /// The value the link field receives.
    pub link_value: String,
    pub reply: ReplyPlan,
    pub update_ticket: Need,
    pub update_deal: Need,
    /// The deal fields written, as the rule sets them.
    pub deal_updates: Map<String, Value>,
    /// The rule's own note text, rendered (a failed template reads as such).
    pub note: Option<String>,
}

/// The reply a run intends.
#[derive(Debug, PartialEq)]
pub enum ReplyPlan {
    /// The rule names no template.
    NoTemplate,
    /// The template gives no usable reply: the reply step fails; status, deal and note still
    /// run.
    Invalid(ReplyError),
    Ready(PlannedReply),
}

/// A rendered, validated reply and where it would go.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedReply {
    pub template: String,
    /// The template's text; a model may still rewrite it when it is carried out.
    pub text: String,
    /// `spec.replies.llm` is set and a reply is to be written: the text would be offered to
    /// the model for a rewrite (and a rewrite becomes a draft unless `sendRewritten`).
    pub rewrite: bool,
    /// `sent`, `draft` or `suggestion`, by the flags.
    pub mode: &'static str,
    pub from: Option<String>,
    pub need: Need,
}

/// Decides what a run does with `facts` under `settings`.
pub fn plan(facts: &Facts, settings: &Settings) -> Plan {
    let skipped = left_alone(facts, settings);
    let (link_strategy, deal, deal_detail) = choose(facts, settings);
    let routing = rules::route(
        &settings.spec.routing,
        &RoutingInput {
            deal: deal.as_ref().map(|d| &d.fields),
            subject: &facts.subject,
            message: &facts.message,
            department: facts.department.as_deref(),
            event_type: &facts.event_type,
        },
    );
    let outcome = routing.outcome.clone().unwrap_or_default();
    let context = context(facts, deal.as_ref(), routing.rule.as_deref());

    let dispatch = match &outcome.department {
        None => Err("no rule chose a department".to_owned()),
        Some(target) if same_name(facts.department.as_deref(), target) => {
            Err(format!("already in {target}"))
        }
        Some(target) => Ok(format!("move to {target}")),
    };

    let field = &settings.spec.linking.ticket_field;
    let link = match &deal {
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
    let link_value = deal
        .as_ref()
        .map(|d| {
            linking::link_value(
                &d.id,
                d.fields.get("Deal_Name").and_then(Value::as_str),
                &crm_web(&settings.zoho().region),
            )
        })
        .unwrap_or_default();

    let reply = plan_reply(facts, settings, &outcome, &context);

    let update_ticket = match &outcome.status {
        None => Err("the rule sets no status".to_owned()),
        Some(status) if same_name(facts.status.as_deref(), status) => {
            Err(format!("status is already {status}"))
        }
        Some(status) => Ok(format!("set status {status}")),
    };

    let update_deal = match (&deal, outcome.deal_updates.is_empty()) {
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
    let deal_updates = outcome.deal_updates.clone().into_iter().collect();

    let note =
        outcome.note.as_ref().map(
            |source| match reply::render_source("note", source, &context) {
                Ok(text) => text,
                Err(ReplyError::Render { message, .. }) => {
                    format!("(note template failed: {message})")
                }
                Err(other) => format!("(note template failed: {other})"),
            },
        );

    Plan {
        skipped,
        deal,
        link_strategy,
        deal_detail,
        routing,
        outcome,
        dispatch,
        link,
        link_value,
        reply,
        update_ticket,
        update_deal,
        deal_updates,
        note,
    }
}

/// Why a ticket is left alone: its department is not handled (unless this very job moved it
/// there in an earlier attempt).
pub fn left_alone(facts: &Facts, settings: &Settings) -> Option<String> {
    let department = facts.department.as_ref()?;
    (!settings.handles_department(department) && !facts.moved_by_this_job)
        .then(|| format!("department {department} is not in spec.departments"))
}

/// The deal the ticket is about: the one its link field names, else the best candidate by
/// the settings' preferences.
fn choose(facts: &Facts, settings: &Settings) -> (LinkStrategy, Option<CrmDeal>, String) {
    let Some(lookup) = &facts.deals else {
        return (
            LinkStrategy::None,
            None,
            "deals were not looked up".to_owned(),
        );
    };
    let candidates = &lookup.candidates;
    match lookup.strategy {
        LinkStrategy::Offline => {
            return (
                LinkStrategy::Offline,
                None,
                "offline: no Zoho credentials".to_owned(),
            );
        }
        LinkStrategy::TicketField if !candidates.is_empty() => {
            let deal = candidates[0].clone();
            let detail = format!("deal {} from the ticket's link field", deal.id);
            return (LinkStrategy::TicketField, Some(deal), detail);
        }
        _ => {}
    }
    let fields: Vec<Map<String, Value>> = candidates.iter().map(|d| d.fields.clone()).collect();
    let chosen = linking::choose_deal(&fields, &settings.spec.linking.preferences)
        .map(|(index, tier)| (candidates[index].id.clone(), &fields[index], tier));
    match chosen {
        Some((id, fields, tier)) => {
            let strategy = lookup.strategy;
            let detail = format!(
                "deal {id} by {strategy:?} (preference {}, {} candidate(s))",
                tier + 1,
                candidates.len()
            );
            let deal = CrmDeal {
                id,
                fields: fields.clone(),
            };
            (strategy, Some(deal), detail.to_lowercase())
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
    }
}

fn plan_reply(
    facts: &Facts,
    settings: &Settings,
    outcome: &RuleOutcome,
    context: &Value,
) -> ReplyPlan {
    let Some(template) = &outcome.reply_template else {
        return ReplyPlan::NoTemplate;
    };
    let replies = &settings.spec.replies;
    let rendered = reply::render(&replies.templates, template, context).and_then(|text| {
        let rules = ReplyRules {
            min_chars: 1,
            max_chars: MAX_REPLY_CHARS,
            forbidden_terms: &replies.forbidden_terms,
        };
        reply::validate(&text, &rules).map(|()| text)
    });
    let text = match rendered {
        Ok(text) => text,
        Err(error) => return ReplyPlan::Invalid(error),
    };
    let flags = settings.flags();
    let mode = if flags.respond {
        "sent"
    } else if flags.draft_replies {
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
    let need = match (&facts.customer_email, &from) {
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
    ReplyPlan::Ready(PlannedReply {
        template: template.clone(),
        text,
        // The model reads the rendered reply, customer text included: it is asked only when a
        // reply is to be written, never for a suggestion nobody sends.
        rewrite: replies.llm.is_some() && mode != "suggestion",
        mode,
        from,
        need,
    })
}

/// The variables templates see.
fn context(facts: &Facts, deal: Option<&CrmDeal>, rule: Option<&str>) -> Value {
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
            "id": facts.ticket_id,
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

/// Department and status names compare without case, accents or surrounding space.
pub fn same_name(current: Option<&str>, wanted: &str) -> bool {
    current.is_some_and(|c| crate::names::same_name(c, wanted))
}

/// The CRM web host of a region, for links people click.
fn crm_web(region: &str) -> String {
    let desk = region::hosts(region).map_or("desk.zoho.com", |r| r.desk);
    format!("https://{}", desk.replacen("desk.", "crm.", 1))
}

/// What a plan intends, in the few terms a person compares: kept with each decision report,
/// and what a backtest sets side by side.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    /// Why the ticket is left alone; nothing else is intended then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub rule: Option<String>,
    /// Where the rule wants the ticket.
    pub department: Option<String>,
    /// The chosen deal's id.
    pub deal: Option<String>,
    pub reply: Option<ReplyIntent>,
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deal_updates: BTreeMap<String, Value>,
    pub note: Option<String>,
}

/// The reply a plan intends: its text, or why the template gives none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplyIntent {
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The text would be offered to the language model for a rewrite.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rewrite: bool,
}

impl Plan {
    /// Each writing step in the order it is carried out, with what it would do or why it is
    /// not needed. The note is left out: whether it is due depends on what the others did.
    pub fn writes(&self) -> Vec<(&'static str, Need)> {
        let reply = match &self.reply {
            ReplyPlan::NoTemplate => Err("the rule names no reply template".to_owned()),
            ReplyPlan::Invalid(error) => Err(error.to_string()),
            ReplyPlan::Ready(planned) => planned.need.clone(),
        };
        vec![
            ("dispatch", self.dispatch.clone()),
            ("link", self.link.clone()),
            ("reply", reply),
            ("update_ticket", self.update_ticket.clone()),
            ("update_deal", self.update_deal.clone()),
        ]
    }

    /// The plan in the terms a person compares.
    pub fn intent(&self) -> Intent {
        if let Some(why) = &self.skipped {
            return Intent {
                skipped: Some(why.clone()),
                ..Intent::default()
            };
        }
        let reply = match &self.reply {
            ReplyPlan::NoTemplate => None,
            ReplyPlan::Invalid(error) => Some(ReplyIntent {
                template: self.outcome.reply_template.clone().unwrap_or_default(),
                error: Some(error.to_string()),
                ..ReplyIntent::default()
            }),
            ReplyPlan::Ready(planned) => Some(ReplyIntent {
                template: planned.template.clone(),
                text: Some(planned.text.clone()),
                error: None,
                rewrite: planned.rewrite,
            }),
        };
        Intent {
            skipped: None,
            rule: self.routing.rule.clone(),
            department: self.outcome.department.clone(),
            deal: self.deal.as_ref().map(|d| d.id.clone()),
            reply,
            status: self.outcome.status.clone(),
            deal_updates: self.outcome.deal_updates.clone(),
            note: self.note.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingsSource;
    use crate::crd::WebhookAutomationSpec;
    use crate::workflow::facts::DealLookup;

    const SPEC: &str = r#"
departments: [DOC, Contact, FACTURATION]
linking:
  ticketField: cf_opportunite
  preferences:
    - {stages: [GAGNÉ], amount: 20}
    - {stages: [EN ATTENTE]}
routing:
  - name: facturation
    priority: 0
    when: {text: {any: [facture*, paiement]}}
    then: {department: FACTURATION, replyTemplate: accuse}
  - name: refus-cma
    priority: 10
    when:
      deal: [{field: Amount, equals: 20}, {field: Evalbox, oneOf: [Refusé CMA]}]
    then:
      department: Refus CMA
      status: En attente
      dealUpdates: {Evalbox: Relance documents}
      note: "Relance de {{ contact.first_name }}."
  - name: question-formation
    priority: 20
    when: {text: {any: [formation], isQuestion: true}}
    then: {department: Contact, replyTemplate: trou}
replies:
  from: {default: contact@example.fr}
  templates:
    accuse: "Bonjour {{ contact.first_name }}, votre demande « {{ ticket.subject }} » est reçue."
    trou: "Bonjour {{ contact.inconnu }}"
"#;

    fn settings(spec: &str) -> Settings {
        let spec: WebhookAutomationSpec = serde_yaml::from_str(spec).unwrap();
        Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap()
    }

    fn facts(subject: &str, message: &str) -> Facts {
        Facts {
            ticket_id: "7".into(),
            event_type: "Ticket_Add".into(),
            subject: subject.into(),
            message: message.into(),
            department: Some("DOC".into()),
            customer_email: Some("zoe@example.fr".into()),
            customer_name: Some("Zoé Martin".into()),
            deals: Some(DealLookup {
                strategy: LinkStrategy::None,
                candidates: Vec::new(),
            }),
            ..Facts::default()
        }
    }

    fn with_deal(mut facts: Facts, fields: Value) -> Facts {
        facts.deals = Some(DealLookup {
            strategy: LinkStrategy::Email,
            candidates: vec![CrmDeal {
                id: "4150868000001234567".into(),
                fields: fields.as_object().unwrap().clone(),
            }],
        });
        facts
    }

    #[test]
    fn the_first_rule_by_priority_wins_and_every_verdict_is_kept() {
        let settings = settings(SPEC);
        let facts = with_deal(
            facts("Mes FACTURES", "bonjour"),
            json!({"Stage": "GAGNÉ", "Amount": 20, "Evalbox": "Refusé CMA"}),
        );
        let plan = plan(&facts, &settings);
        assert_eq!(plan.routing.rule.as_deref(), Some("facturation"));
        assert_eq!(
            plan.routing.trace.len(),
            1,
            "rules after the match are not tried"
        );
        assert_eq!(plan.dispatch, Ok("move to FACTURATION".to_owned()));
        assert_eq!(
            plan.link,
            Ok("store deal 4150868000001234567 in cf_opportunite".to_owned())
        );
        let ReplyPlan::Ready(reply) = &plan.reply else {
            panic!("a reply is planned: {:?}", plan.reply);
        };
        assert_eq!(
            reply.text,
            "Bonjour Zoé, votre demande « Mes FACTURES » est reçue."
        );
        assert_eq!(reply.mode, "suggestion");
        assert_eq!(reply.need, Ok("draft reply to zoe@example.fr".to_owned()));
        assert!(!reply.rewrite);
        let needed: Vec<&str> = plan
            .writes()
            .into_iter()
            .filter(|(_, need)| need.is_ok())
            .map(|(step, _)| step)
            .collect();
        assert_eq!(needed, ["dispatch", "link", "reply"]);
    }

    #[test]
    fn deal_conditions_choose_the_rule_and_its_writes() {
        let settings = settings(SPEC);
        let refused = with_deal(
            facts("Dossier", "bonjour"),
            json!({"Stage": "GAGNÉ", "Amount": "20.00", "Evalbox": "refusé cma"}),
        );
        let planned = plan(&refused, &settings);
        assert_eq!(planned.routing.rule.as_deref(), Some("refus-cma"));
        assert_eq!(
            planned.update_ticket,
            Ok("set status En attente".to_owned())
        );
        assert_eq!(
            planned.update_deal,
            Ok("set Evalbox on deal 4150868000001234567".to_owned())
        );
        assert_eq!(planned.note.as_deref(), Some("Relance de Zoé."));
        assert_eq!(planned.reply, ReplyPlan::NoTemplate);

        let pending = with_deal(
            facts("Dossier", "bonjour"),
            json!({"Stage": "EN ATTENTE", "Amount": 1500, "Evalbox": "Refusé CMA"}),
        );
        let plan = plan(&pending, &settings);
        assert_eq!(plan.routing.rule, None);
        assert!(
            plan.routing.trace[1]
                .reason
                .contains("Amount = 1500, not 20")
        );
        assert_eq!(
            plan.update_deal,
            Err("the rule sets no deal field".to_owned())
        );
    }

    #[test]
    fn a_deal_outside_every_preference_is_not_chosen() {
        let settings = settings(SPEC);
        let lost = with_deal(facts("Dossier", "bonjour"), json!({"Stage": "PERDU"}));
        let plan = plan(&lost, &settings);
        assert!(plan.deal.is_none());
        assert_eq!(
            plan.deal_detail,
            "1 deal(s) found, none matches a preference"
        );
        assert_eq!(plan.link, Err("no deal found".to_owned()));
    }

    #[test]
    fn the_question_guard_needs_a_question() {
        let settings = settings(SPEC);
        let told = plan(
            &facts("Formation", "Je commence la formation lundi."),
            &settings,
        );
        assert_eq!(told.routing.rule, None);
        assert_eq!(told.dispatch, Err("no rule chose a department".to_owned()));
        let asked = plan(
            &facts("Formation", "Quand commence la formation ?"),
            &settings,
        );
        assert_eq!(asked.routing.rule.as_deref(), Some("question-formation"));
    }

    #[test]
    fn a_template_with_a_hole_is_an_invalid_reply() {
        let settings = settings(SPEC);
        let plan = plan(
            &facts("Formation", "Quand commence la formation ?"),
            &settings,
        );
        let ReplyPlan::Invalid(ReplyError::Render { name, .. }) = &plan.reply else {
            panic!("the template cannot render: {:?}", plan.reply);
        };
        assert_eq!(name, "trou");
        let intent = plan.intent();
        let reply = intent.reply.unwrap();
        assert_eq!(reply.text, None);
        assert!(
            reply
                .error
                .unwrap()
                .contains("failed to render reply template")
        );
    }

    #[test]
    fn a_forbidden_term_gives_no_reply() {
        let spec = SPEC.replace("templates:", "forbiddenTerms: [reçue]\n  templates:");
        let forbidden = plan(&facts("Facture", "bonjour"), &settings(&spec));
        assert_eq!(
            forbidden.reply,
            ReplyPlan::Invalid(ReplyError::Forbidden("reçue".into()))
        );
    }

    #[test]
    fn a_ticket_outside_the_departments_is_left_alone_unless_this_job_moved_it() {
        let settings = settings(SPEC);
        let mut elsewhere = facts("Facture", "bonjour");
        elsewhere.department = Some("Ventes".into());
        let plan = plan(&elsewhere, &settings);
        assert_eq!(
            plan.intent(),
            Intent {
                skipped: Some("department Ventes is not in spec.departments".into()),
                ..Intent::default()
            }
        );
        elsewhere.moved_by_this_job = true;
        assert_eq!(super::plan(&elsewhere, &settings).skipped, None);
    }

    #[test]
    fn the_same_facts_and_settings_give_the_same_plan() {
        let settings = settings(SPEC);
        let facts = with_deal(facts("Facture", "paiement ?"), json!({"Stage": "GAGNÉ"}));
        assert_eq!(
            plan(&facts, &settings).intent(),
            plan(&facts, &settings).intent()
        );
    }
}
