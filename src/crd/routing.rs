//! Routing rules, reply templates and deal linking: the business part of the resource.
//!
//! Rules are declarative on purpose: customer text can only make a rule's keywords match, it
//! never names a department, a status or a field by itself.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One routing rule. Rules run in `priority` order (lower first, then list order); the first
/// rule whose every condition holds decides. No match keeps the ticket where it is.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingRule {
    /// A unique name, shown in decision reports and notes.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Lower runs first; rules with equal priority keep their list order.
    #[serde(default)]
    pub priority: i32,
    /// Conditions; all must hold. An empty `when` always matches (a catch-all).
    #[serde(default)]
    pub when: RuleConditions,
    /// What a match decides.
    #[serde(default)]
    pub then: RuleOutcome,
}

/// The conditions of a rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConditions {
    /// Whether a CRM deal must (true) or must not (false) have been found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_found: Option<bool>,
    /// Conditions on fields of the linked deal; all must hold (a rule with deal conditions
    /// never matches a ticket without a deal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub deal: Vec<FieldCondition>,
    /// Conditions on the subject and the latest customer message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextCondition>,
    /// The ticket's current department must be one of these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub department: Vec<String>,
    /// The event type must be one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_type: Vec<String>,
}

/// A condition on one deal field. Exactly one operator is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.equals), has(self.oneOf), has(self.noneOf), has(self.greaterThan), has(self.lessThan), has(self.present)].filter(x, x).size() == 1",
    "message": "a deal condition needs exactly one operator: equals, oneOf, noneOf, greaterThan, lessThan or present"
}]))]
pub struct FieldCondition {
    /// CRM field API name, e.g. `Stage`, `Amount`, `Evalbox`.
    pub field: String,
    /// The field equals this value (numbers compare numerically, text case- and
    /// accent-insensitively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::any_value")]
    pub equals: Option<serde_json::Value>,
    /// The field equals one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::any_values")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The field equals none of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::any_values")]
    pub none_of: Option<Vec<serde_json::Value>>,
    /// The field is a number greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greater_than: Option<f64>,
    /// The field is a number less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub less_than: Option<f64>,
    /// The field is present and not empty (true), or absent or empty (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Keyword conditions on the subject and the latest customer message.
///
/// Keywords match whole words, ignoring case and accents ("formation" does not match
/// "information"); a keyword ending in `*` matches words starting with it; several words
/// match as a phrase. Quoted replies and forwarded history are ignored.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextCondition {
    /// At least one of these must appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<String>,
    /// Every one of these must appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<String>,
    /// None of these may appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub none: Vec<String>,
    /// The customer message must (true) or must not (false) be a question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_question: Option<bool>,
}

/// What a matching rule decides.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleOutcome {
    /// Department name to move the ticket to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Name of a template in `replies.templates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_template: Option<String>,
    /// Ticket status to set (a status of the target department's layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// CRM deal fields to write, by API name. Only these fields are ever written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::schema::any_value_map")]
    pub deal_updates: BTreeMap<String, serde_json::Value>,
    /// Extra text for the deal note (a template, like replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Reply templates and where replies are sent from.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepliesSpec {
    /// Sender address by department name, with `default` for the others. Each must be a
    /// from-address configured in the Zoho Desk portal.
    #[serde(default)]
    pub from: BTreeMap<String, String>,
    /// Templates by name (MiniJinja syntax). Variables: `ticket`, `contact`, `deal`, `rule`.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// An optional language model that rewrites the rendered reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSpec>,
    /// Words a reply must never contain (checked on every reply, rewritten or not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_terms: Vec<String>,
}

/// An OpenAI-compatible chat completion API that rewrites rendered replies. Its endpoint and
/// key belong to whoever installs deskhook (`DESKHOOK_LLM_URL`, `DESKHOOK_LLM_API_KEY`): the
/// resource only says how to use it, never where reply text and the key are sent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.url)",
    "message": "replies.llm.url is not accepted: the endpoint that receives the key and reply text is set where deskhook is installed (DESKHOOK_LLM_URL, chart value llm.url)",
    "fieldPath": ".url",
    "reason": "FieldValueForbidden"
}]))]
pub struct LlmSpec {
    /// Not accepted (refused when set): the model's endpoint comes from `DESKHOOK_LLM_URL`.
    /// Kept in the schema so a resource that still names one is refused with that message
    /// instead of the field being silently dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// Model name.
    pub model: String,
    /// Instructions given to the model before the reply to rewrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Shortest acceptable rewrite, in characters.
    #[serde(default = "default_min_chars")]
    pub min_chars: u32,
    /// Longest acceptable rewrite, in characters.
    #[serde(default = "default_max_chars")]
    pub max_chars: u32,
    /// Send a rewritten reply to the customer when `respond` is on. Off (the default), a reply
    /// the model rewrote is created as a draft for an agent to read first: the model reads
    /// customer text, and text a customer wrote must never be able to speak to customers
    /// unreviewed.
    #[serde(default)]
    pub send_rewritten: bool,
}

/// How the CRM deal behind a ticket is found.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkingSpec {
    /// Ticket custom field (in `cf`) that holds the deal link; read first, written by `link`.
    #[serde(default = "default_link_field")]
    pub ticket_field: String,
    /// Email domains of staff: their messages are never taken as the customer's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staff_domains: Vec<String>,
    /// Deal preference tiers, best first: among several deals the first tier with a match
    /// wins, ties going to the latest closing (then creation) date. Deals matching no tier
    /// are not linked.
    #[serde(default = "default_preferences")]
    pub preferences: Vec<DealPreference>,
}

impl Default for LinkingSpec {
    fn default() -> Self {
        Self {
            ticket_field: default_link_field(),
            staff_domains: Vec::new(),
            preferences: default_preferences(),
        }
    }
}

/// One preference tier: a deal matches when every given field matches.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DealPreference {
    /// Accepted stages (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// Required amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
}

fn default_min_chars() -> u32 {
    20
}

fn default_max_chars() -> u32 {
    4000
}

fn default_link_field() -> String {
    "cf_opportunite".to_owned()
}

/// Any deal at all: without configured tiers the most recent deal is linked.
fn default_preferences() -> Vec<DealPreference> {
    vec![DealPreference::default()]
}
