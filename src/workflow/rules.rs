//! Routing: a pure function from what is known about a ticket to the first matching rule.
//!
//! Every rule's verdict is kept with its reason, so a reviewer sees why a rule did or did not
//! match before switching `dispatch` on.

use std::cell::OnceCell;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::text::{self, Words, first_match};
use crate::crd::{FieldCondition, RoutingRule, RuleOutcome, TextCondition};

/// What routing reads about a ticket.
#[derive(Clone, Copy, Debug)]
pub struct RoutingInput<'a> {
    /// The linked deal's fields, if a deal was found.
    pub deal: Option<&'a Map<String, Value>>,
    pub subject: &'a str,
    /// The latest customer message, quoted history already removed.
    pub message: &'a str,
    /// The ticket's current department name, when known.
    pub department: Option<&'a str>,
    pub event_type: &'a str,
}

/// One rule's verdict.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleTrace {
    pub rule: String,
    pub matched: bool,
    pub reason: String,
}

/// The routing decision: the matching rule (if any) and every verdict up to it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoutingDecision {
    pub rule: Option<String>,
    #[serde(skip)]
    pub outcome: Option<RuleOutcome>,
    pub trace: Vec<RuleTrace>,
}

/// Evaluates `rules` in priority order; the first match wins.
pub fn route(rules: &[RoutingRule], input: &RoutingInput<'_>) -> RoutingDecision {
    let mut ordered: Vec<&RoutingRule> = rules.iter().collect();
    ordered.sort_by_key(|rule| rule.priority);
    // Folded once, and only if some rule has a text condition.
    let haystack = OnceCell::new();
    let mut trace = Vec::new();
    for rule in ordered {
        match check(rule, input, &haystack) {
            Ok(reason) => {
                trace.push(RuleTrace {
                    rule: rule.name.clone(),
                    matched: true,
                    reason,
                });
                return RoutingDecision {
                    rule: Some(rule.name.clone()),
                    outcome: Some(rule.then.clone()),
                    trace,
                };
            }
            Err(reason) => trace.push(RuleTrace {
                rule: rule.name.clone(),
                matched: false,
                reason,
            }),
        }
    }
    RoutingDecision {
        rule: None,
        outcome: None,
        trace,
    }
}

/// `Ok(why it matched)` or `Err(the first condition that failed)`.
fn check(
    rule: &RoutingRule,
    input: &RoutingInput<'_>,
    haystack: &OnceCell<Words>,
) -> Result<String, String> {
    let when = &rule.when;
    let mut why = Vec::new();
    if !when.event_type.is_empty() {
        if !when.event_type.iter().any(|t| t == input.event_type) {
            return Err(format!(
                "event {} is not one of {:?}",
                input.event_type, when.event_type
            ));
        }
        why.push(format!("event {}", input.event_type));
    }
    if !when.department.is_empty() {
        let current = input.department.unwrap_or("");
        if !when
            .department
            .iter()
            .any(|d| crate::names::same_name(d, current))
        {
            return Err(format!(
                "department {current:?} is not one of {:?}",
                when.department
            ));
        }
        why.push(format!("department {current}"));
    }
    if let Some(wanted) = when.deal_found {
        if input.deal.is_some() != wanted {
            return Err(if wanted {
                "no deal found"
            } else {
                "a deal was found"
            }
            .to_owned());
        }
        why.push(if wanted { "deal found" } else { "no deal" }.to_owned());
    }
    if !when.deal.is_empty() {
        let Some(deal) = input.deal else {
            return Err("deal conditions but no deal found".to_owned());
        };
        for condition in &when.deal {
            why.push(check_field(condition, deal)?);
        }
    }
    if let Some(condition) = &when.text {
        let haystack =
            haystack.get_or_init(|| Words::new(&format!("{}\n{}", input.subject, input.message)));
        why.extend(check_text(condition, input.message, haystack)?);
    }
    if why.is_empty() {
        why.push("no conditions".to_owned());
    }
    Ok(why.join(", "))
}

fn check_field(condition: &FieldCondition, deal: &Map<String, Value>) -> Result<String, String> {
    let name = &condition.field;
    let value = deal.get(name).filter(|v| !is_empty(v));
    if let Some(present) = condition.present {
        return if value.is_some() == present {
            Ok(format!(
                "{name} {}",
                if present { "present" } else { "absent" }
            ))
        } else {
            Err(format!(
                "{name} is {}",
                if present { "absent" } else { "present" }
            ))
        };
    }
    let Some(value) = value else {
        return Err(format!("{name} is absent"));
    };
    let shown = display(value);
    if let Some(expected) = &condition.equals {
        return if same(value, expected) {
            Ok(format!("{name} = {shown}"))
        } else {
            Err(format!("{name} = {shown}, not {}", display(expected)))
        };
    }
    if let Some(options) = &condition.one_of {
        return if options.iter().any(|o| same(value, o)) {
            Ok(format!("{name} = {shown}"))
        } else {
            Err(format!("{name} = {shown}, not one of {}", list(options)))
        };
    }
    if let Some(options) = &condition.none_of {
        return if options.iter().any(|o| same(value, o)) {
            Err(format!("{name} = {shown}, which is excluded"))
        } else {
            Ok(format!("{name} = {shown}"))
        };
    }
    let number = as_number(value);
    if let Some(bound) = condition.greater_than {
        return match number {
            Some(n) if n > bound => Ok(format!("{name} = {shown} > {bound}")),
            _ => Err(format!("{name} = {shown}, not > {bound}")),
        };
    }
    if let Some(bound) = condition.less_than {
        return match number {
            Some(n) if n < bound => Ok(format!("{name} = {shown} < {bound}")),
            _ => Err(format!("{name} = {shown}, not < {bound}")),
        };
    }
    Err(format!("condition on {name} has no operator"))
}

fn check_text(
    condition: &TextCondition,
    message: &str,
    haystack: &Words,
) -> Result<Vec<String>, String> {
    let mut why = Vec::new();
    if !condition.any.is_empty() {
        match first_match(&condition.any, haystack) {
            Some(keyword) => why.push(format!("text mentions {keyword:?}")),
            None => return Err("text mentions none of the keywords".to_owned()),
        }
    }
    for keyword in condition.all.iter().take(text::MAX_KEYWORDS) {
        if first_match(std::slice::from_ref(keyword), haystack).is_none() {
            return Err(format!("text does not mention {keyword:?}"));
        }
    }
    if !condition.all.is_empty() {
        why.push("text mentions every required keyword".to_owned());
    }
    if let Some(keyword) = first_match(&condition.none, haystack) {
        return Err(format!("text mentions excluded {keyword:?}"));
    }
    if let Some(wanted) = condition.is_question {
        if text::is_question(message) != wanted {
            return Err(if wanted {
                "message is not a question"
            } else {
                "message is a question"
            }
            .to_owned());
        }
        why.push(
            if wanted {
                "message is a question"
            } else {
                "message is not a question"
            }
            .to_owned(),
        );
    }
    Ok(why)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Numbers compare numerically (also when one side is a numeric string); text compares
/// without case or accents; a lookup object compares by its `name`; a list by any element.
pub fn same(value: &Value, expected: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| same(item, expected)),
        Value::Object(object) => object.get("name").is_some_and(|name| same(name, expected)),
        _ => match (as_number(value), as_number(expected)) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => match (value_text(value), value_text(expected)) {
                (Some(a), Some(b)) => text::fold(a.trim()) == text::fold(b.trim()),
                _ => value == expected,
            },
        },
    }
}

/// A number from a JSON number or a numeric string.
pub fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', ".").parse().ok(),
        _ => None,
    }
}

fn value_text(value: &Value) -> Option<&str> {
    value.as_str()
}

fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.chars().take(64).collect(),
        Value::Object(o) => o
            .get("name")
            .map(display)
            .unwrap_or_else(|| "{…}".to_owned()),
        other => other.to_string().chars().take(64).collect(),
    }
}

fn list(values: &[Value]) -> String {
    let shown: Vec<String> = values.iter().map(display).collect();
    format!("[{}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<RoutingRule> {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn deal(json: Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    fn input<'a>(
        deal: Option<&'a Map<String, Value>>,
        subject: &'a str,
        message: &'a str,
    ) -> RoutingInput<'a> {
        RoutingInput {
            deal,
            subject,
            message,
            department: Some("Contact"),
            event_type: "Ticket_Add",
        }
    }

    const REFERENCE: &str = r#"
- name: refus-cma
  when:
    deal: [{field: Amount, equals: 20}, {field: Stage, oneOf: ["GAGNÉ", "EN ATTENTE"]}, {field: Evalbox, oneOf: ["Refusé CMA", "Documents refusés"]}]
  then: {department: Refus CMA}
- name: doc
  when:
    deal: [{field: Amount, equals: 20}, {field: Stage, oneOf: ["GAGNÉ", "EN ATTENTE"]}]
  then: {department: DOC}
- name: facturation
  priority: -1
  when:
    text: {any: [facture, paiement, remboursement*]}
  then: {department: FACTURATION}
- name: formation-question
  when:
    text: {any: [formation], isQuestion: true}
  then: {department: Contact}
"#;

    #[test]
    fn the_first_matching_rule_in_priority_order_wins() {
        let rules = rules(REFERENCE);
        let won =
            deal(serde_json::json!({"Amount": 20, "Stage": "GAGNÉ", "Evalbox": "Refusé CMA"}));
        let decision = route(&rules, &input(Some(&won), "Ma facture", "bonjour"));
        assert_eq!(decision.rule.as_deref(), Some("facturation"));
        let decision = route(&rules, &input(Some(&won), "Dossier", "bonjour"));
        assert_eq!(decision.rule.as_deref(), Some("refus-cma"));
        assert_eq!(
            decision.outcome.unwrap().department.as_deref(),
            Some("Refus CMA")
        );
    }

    #[test]
    fn amounts_compare_numerically_and_stages_without_accents() {
        let rules = rules(REFERENCE);
        let pending = deal(serde_json::json!({"Amount": "20.00", "Stage": "en attente"}));
        let decision = route(&rules, &input(Some(&pending), "Dossier", "merci"));
        assert_eq!(decision.rule.as_deref(), Some("doc"));
    }

    #[test]
    fn information_is_not_formation_and_attestation_is_not_test() {
        let rules = rules(REFERENCE);
        let decision = route(&rules, &input(None, "Demande d'information", "Quand ?"));
        assert_eq!(decision.rule, None);
        let test_rule = rules_with_keyword("test");
        let decision = route(
            &test_rule,
            &input(None, "Attestation", "voici mon attestation"),
        );
        assert_eq!(decision.rule, None);
    }

    fn rules_with_keyword(keyword: &str) -> Vec<RoutingRule> {
        rules(&format!(
            "- name: k\n  when: {{text: {{any: [{keyword}]}}}}\n  then: {{department: X}}"
        ))
    }

    #[test]
    fn the_question_guard_needs_a_question() {
        let rules = rules(REFERENCE);
        let asked = route(
            &rules,
            &input(None, "Formation", "Quand commence la formation ?"),
        );
        assert_eq!(asked.rule.as_deref(), Some("formation-question"));
        let told = route(
            &rules,
            &input(None, "Formation", "Je commence la formation lundi."),
        );
        assert_eq!(told.rule, None);
    }

    #[test]
    fn every_verdict_explains_itself() {
        let rules = rules(REFERENCE);
        let decision = route(&rules, &input(None, "Bonjour", "merci"));
        assert_eq!(decision.trace.len(), 4);
        assert!(
            decision
                .trace
                .iter()
                .all(|t| !t.matched && !t.reason.is_empty())
        );
        assert!(decision.trace.iter().any(|t| t.reason.contains("no deal")));
    }

    #[test]
    fn numeric_and_presence_conditions() {
        let rules = rules(
            "- name: big\n  when: {deal: [{field: Amount, greaterThan: 100}, {field: Closing_Date, present: true}]}\n",
        );
        let big = deal(serde_json::json!({"Amount": 1500, "Closing_Date": "2026-01-01"}));
        let small = deal(serde_json::json!({"Amount": 20, "Closing_Date": "2026-01-01"}));
        assert!(route(&rules, &input(Some(&big), "", "")).rule.is_some());
        assert!(route(&rules, &input(Some(&small), "", "")).rule.is_none());
    }
}
