//! The resource a delivery carried, kept as the JSON text it arrived as.
//!
//! Intake reads four fields of it (ids, department, direction) and never builds a tree: a
//! queued event then costs about its own size in memory, where a parsed tree costs several
//! times that, and a burst of deliveries costs parsing only what routing a job needs.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::id_string;
use super::members::for_each_member;

/// A payload as delivered: valid JSON, stored verbatim.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// `null`: an event without a resource (a manual run).
    pub fn null() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    /// A payload copied from already-validated JSON text.
    pub fn from_raw(raw: &RawValue) -> Self {
        Self(raw.to_owned())
    }

    /// A payload serialised from a tree (legacy shapes, tests).
    pub fn from_value(value: &Value) -> Self {
        // A `Value` always serialises: its keys are strings.
        serde_json::value::to_raw_value(value).map_or_else(|_| Self::null(), Self)
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The payload as a tree, for the workflow. Text too deeply nested to parse reads as
    /// `null`: the payload is only a hint.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.json()).unwrap_or(Value::Null)
    }

    /// The payload with only its top-level members named in `fields`, in their order (a
    /// repeated one stays repeated, so the last still wins): what a queued job needs of it,
    /// without the rest of a long message. Anything but an object is kept whole.
    pub fn keeping(&self, fields: &[&str]) -> Self {
        let json = self.json();
        let mut kept = String::with_capacity(json.len().min(512));
        kept.push('{');
        let walked = for_each_member(json, |key, value| {
            if fields.contains(&key) {
                if kept.len() > 1 {
                    kept.push(',');
                }
                kept.push('"');
                kept.push_str(key);
                kept.push_str("\":");
                kept.push_str(value);
            }
        });
        match walked {
            Some(()) => {
                kept.push('}');
                RawValue::from_string(kept).map_or_else(|_| self.clone(), Self)
            }
            // An escaped key: read the object the slow way, which decodes it.
            None if json.starts_with('{') => match self.to_value() {
                Value::Object(members) => Self::from_value(&Value::Object(
                    members
                        .into_iter()
                        .filter(|(key, _)| fields.contains(&key.as_str()))
                        .collect(),
                )),
                _ => self.clone(),
            },
            None => self.clone(),
        }
    }

    /// The fields intake and the echo guard read, without parsing the rest.
    pub fn hints(&self) -> Hints {
        // Only an object has fields; anything else would also take the slow path below.
        if !self.json().starts_with('{') {
            return Hints::default();
        }
        let mut fields = HintFields::default();
        match for_each_member(self.json(), |key, value| fields.set(key, value)) {
            Some(()) => fields.into_hints(),
            // An escaped key: read it the slow way, which decodes it.
            None => Hints::from_value(&self.to_value()),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.json().len())
    }
}

/// What a payload says about the ticket without being parsed whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// `id`: the ticket's id for ticket events, the thread's or comment's for the others.
    pub id: Option<String>,
    /// `ticketId`: the ticket of a thread, comment, attachment or approval.
    pub ticket_id: Option<String>,
    pub department_id: Option<String>,
    /// `departmentName`, `department.name` or a `department` string.
    pub department_name: Option<String>,
    /// A thread's direction: `out` for messages sent by agents (or by deskhook).
    pub direction: Option<String>,
}

impl Hints {
    pub fn from_value(payload: &Value) -> Self {
        Self::from_fields(|key| payload.get(key).map(Cow::Borrowed))
    }

    /// The one set of rules, over a reader of the payload's top-level fields.
    fn from_fields<'v>(field: impl Fn(&str) -> Option<Cow<'v, Value>>) -> Self {
        let id = |key: &str| field(key).as_deref().and_then(id_string);
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        Self {
            id: id("id"),
            ticket_id: id("ticketId"),
            department_id: id("departmentId"),
            department_name: text(field("departmentName").as_deref()).or_else(|| {
                let department = field("department")?;
                text(department.get("name").or(Some(&department)))
            }),
            direction: text(field("direction").as_deref()),
        }
    }

    /// Whether the payload is a message written by an agent, not by the customer.
    pub fn is_outgoing(&self) -> bool {
        self.direction
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case("out"))
    }
}

/// A small raw field as a tree, so it is read by the tree reader's exact rules.
pub(super) fn small_value(raw: Option<&RawValue>) -> Option<Value> {
    raw.and_then(|raw| parse_small(raw.get()))
}

fn parse_small(json: &str) -> Option<Value> {
    serde_json::from_str(json).ok()
}

/// The top-level fields [`Hints`] are made from, as the payload's JSON text; the last of a
/// repeated key wins, as in a tree.
#[derive(Default)]
struct HintFields<'a>([Option<&'a str>; HINT_KEYS.len()]);

/// The members [`Hints`] are read from: a job that keeps fewer has other hints.
pub const HINT_KEYS: [&str; 6] = [
    "id",
    "ticketId",
    "departmentId",
    "departmentName",
    "department",
    "direction",
];

impl<'a> HintFields<'a> {
    fn set(&mut self, key: &str, value: &'a str) {
        if let Some(slot) = HINT_KEYS.iter().position(|k| *k == key) {
            self.0[slot] = Some(value);
        }
    }

    /// Each field is small, so it is parsed alone and read by [`Hints::from_fields`].
    fn into_hints(self) -> Hints {
        Hints::from_fields(|key| {
            let slot = HINT_KEYS.iter().position(|k| *k == key)?;
            self.0[slot].and_then(parse_small).map(Cow::Owned)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn payload(value: Value) -> Payload {
        Payload::from_value(&value)
    }

    #[test]
    fn hints_read_ids_department_and_direction() {
        let hints = payload(json!({
            "id": 1892000000099001_u64,
            "ticketId": "1892000000042034",
            "departmentId": "7",
            "department": {"name": "DOC"},
            "direction": "OUT",
            "content": "<p>long text</p>",
        }))
        .hints();
        assert_eq!(hints.id.as_deref(), Some("1892000000099001"));
        assert_eq!(hints.ticket_id.as_deref(), Some("1892000000042034"));
        assert_eq!(hints.department_id.as_deref(), Some("7"));
        assert_eq!(hints.department_name.as_deref(), Some("DOC"));
        assert!(hints.is_outgoing());
    }

    #[test]
    fn keeping_members_drops_the_others_and_keeps_the_hints() {
        let full = payload(json!({
            "id": "1892000000099001",
            "subject": "Facture",
            "description": "<p>long text</p>",
            "department": {"name": "DOC"},
            "customFields": {"a": 1},
        }));
        let kept = full.keeping(&HINT_KEYS);
        assert_eq!(
            kept.to_value(),
            json!({"id": "1892000000099001", "department": {"name": "DOC"}})
        );
        assert_eq!(kept.hints(), full.hints());
        assert_eq!(full.keeping(&[]).json(), "{}");
        // An escaped key takes the slow path, with the same result.
        let raw = r#"{"id":"1","sub\u006aect":"x","direction":"out"}"#;
        let escaped = Payload(RawValue::from_string(raw.to_owned()).unwrap());
        assert_eq!(
            escaped.keeping(&["subject", "direction"]).to_value(),
            json!({"subject": "x", "direction": "out"})
        );
        for other in [json!(null), json!([1, 2])] {
            assert_eq!(payload(other.clone()).keeping(&HINT_KEYS).to_value(), other);
        }
    }

    #[test]
    fn a_repeated_key_reads_as_a_tree_reads_it() {
        let raw = r#"{"id":"1","departmentName":"DOC","departmentName":"Contact"}"#;
        let payload = Payload(RawValue::from_string(raw.to_owned()).unwrap());
        let hints = payload.hints();
        assert_eq!(hints.department_name.as_deref(), Some("Contact"));
        assert_eq!(hints, Hints::from_value(&payload.to_value()));
    }

    #[test]
    fn payloads_that_are_not_objects_have_no_hints() {
        for value in [json!(null), json!([1, 2]), json!("text"), json!(5)] {
            assert_eq!(payload(value).hints(), Hints::default());
        }
    }

    #[test]
    fn the_text_is_kept_verbatim() {
        let raw = RawValue::from_string(r#"{"b": 1, "a": [ 2 ]}"#.to_owned()).unwrap();
        let payload = Payload::from_raw(&raw);
        assert_eq!(payload.json(), r#"{"b": 1, "a": [ 2 ]}"#);
        assert_eq!(payload.to_value(), json!({"a": [2], "b": 1}));
        assert_eq!(format!("{payload:?}"), "Payload(20 bytes)");
    }
}
