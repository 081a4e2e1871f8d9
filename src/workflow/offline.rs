//! Offline (no Zoho credentials): the facts come from the event's own payload, a ticket or,
//! for thread events, a thread.
//!
//! The payload is read into the few fields used, skipping the rest without building a tree.
//! A field of an unexpected type reads as absent, as it would through a JSON tree.

use serde::Deserialize;
use serde_json::Value;

use super::facts::Facts;
use super::linking::{self, Message};
use super::text;
use crate::config::Settings;
use crate::event::TicketEvent;

/// What the offline workflow reads from a payload; each field as sent, whatever its type.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PayloadFacts {
    subject: Option<Value>,
    content: Option<Value>,
    summary: Option<Value>,
    description: Option<Value>,
    from_email_address: Option<Value>,
    email: Option<Value>,
    status: Option<Value>,
    phone: Option<Value>,
    web_url: Option<Value>,
    is_forward: Option<Value>,
    cf: Option<Value>,
    ticket_number: Option<Value>,
    contact: Option<Value>,
    author: Option<Value>,
}

/// Every top-level payload member the offline workflow reads, the hints' included: a job
/// stored in Redis keeps these and drops the rest.
pub(super) const PAYLOAD_FIELDS: [&str; 20] = [
    "subject",
    "content",
    "summary",
    "description",
    "fromEmailAddress",
    "email",
    "status",
    "phone",
    "webUrl",
    "isForward",
    "cf",
    "ticketNumber",
    "contact",
    "author",
    // The hints (`crate::event::HINT_KEYS`).
    "id",
    "ticketId",
    "departmentId",
    "departmentName",
    "department",
    "direction",
];

impl PayloadFacts {
    fn read(event: &TicketEvent) -> Self {
        serde_json::from_str(event.payload.json())
            // A repeated key: the tree keeps the last value, as Zoho's own readers do.
            .or_else(|_| serde_json::from_value(event.payload.to_value()))
            .unwrap_or_default()
    }
}

/// The field's text, if it is a string.
fn text_of(value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(text)) => Some(text),
        _ => None,
    }
}

/// The text of `object.key`, if `object` is an object and that field a string.
fn text_in(object: &Option<Value>, key: &str) -> Option<String> {
    object
        .as_ref()
        .and_then(|o| o.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// What the event itself says about the ticket.
pub(super) fn facts_from_event(event: &TicketEvent, settings: &Settings) -> Facts {
    let payload = PayloadFacts::read(event);
    let body = [&payload.content, &payload.summary, &payload.description]
        .into_iter()
        .find_map(|field| field.as_ref().and_then(Value::as_str))
        .map(text::html_to_text)
        .unwrap_or_default();
    let from = text_of(payload.from_email_address);
    let message = Message {
        from: from.as_deref(),
        body: &body,
        is_forward: payload.is_forward == Some(Value::Bool(true)),
    };
    let email = text_of(payload.email);
    let staff = &settings.spec.linking.staff_domains;
    Facts {
        ticket_id: event.ticket_id.clone(),
        event_type: event.event_type.clone(),
        customer_email: linking::customer_email(Some(&message), email.as_deref(), staff),
        message: text::strip_quoted(&body),
        subject: text_of(payload.subject).unwrap_or_default(),
        department_id: event.department_id().map(str::to_owned),
        department: event.department_name().map(str::to_owned),
        status: text_of(payload.status),
        customer_name: text_in(&payload.contact, "firstName")
            .or_else(|| text_in(&payload.author, "name")),
        phone: text_of(payload.phone),
        link_field: text_in(&payload.cf, &settings.spec.linking.ticket_field),
        ticket_number: payload.ticket_number.and_then(|number| match number {
            Value::String(text) => Some(text),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }),
        web_url: text_of(payload.web_url),
        ..Facts::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::SettingsSource;

    fn settings() -> Settings {
        Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap()
    }

    fn facts(payload: Value) -> Facts {
        let event = TicketEvent::new("1".into(), "Ticket_Add".into(), None, None, payload);
        facts_from_event(&event, &settings())
    }

    #[test]
    fn a_ticket_payload_gives_its_facts() {
        let facts = facts(json!({
            "subject": "Facture",
            "description": "<div>Bonjour,<br>ma facture ?</div>",
            "email": "Client@Example.com",
            "status": "Open",
            "phone": "+33 1 23",
            "ticketNumber": 10457,
            "webUrl": "https://desk.example/1",
            "departmentName": "DOC",
            "cf": {"cf_deal_id": "42"},
            "contact": {"firstName": "Zoé"},
            "unused": {"deep": [1, 2, {"x": null}]},
        }));
        assert_eq!(facts.subject, "Facture");
        assert_eq!(facts.message, "\nBonjour,\nma facture ?");
        assert_eq!(facts.customer_email.as_deref(), Some("client@example.com"));
        assert_eq!(facts.status.as_deref(), Some("Open"));
        assert_eq!(facts.ticket_number.as_deref(), Some("10457"));
        assert_eq!(facts.department.as_deref(), Some("DOC"));
        assert_eq!(facts.customer_name.as_deref(), Some("Zoé"));
        assert_eq!(facts.web_url.as_deref(), Some("https://desk.example/1"));
    }

    #[test]
    fn a_payload_cut_to_the_fields_read_gives_the_same_facts() {
        let full = json!({
            "subject": "Facture",
            "description": "<div>Bonjour,<br>ma facture ?</div>",
            "fromEmailAddress": "client@example.com",
            "email": "Client@Example.com",
            "status": "Open",
            "phone": "+33 1 23",
            "ticketNumber": 10457,
            "webUrl": "https://desk.example/1",
            "isForward": true,
            "departmentName": "DOC",
            "cf": {"cf_deal_id": "42"},
            "contact": {"firstName": "Zoé", "email": "zoe@example.com"},
            "author": {"email": "zoe@example.com"},
            "customFields": {"x": 1},
            "threadCount": "3",
        });
        let event = TicketEvent::new("1".into(), "Ticket_Add".into(), None, None, full);
        let mut cut = event.clone();
        cut.payload = event.payload.keeping(&PAYLOAD_FIELDS);
        assert!(cut.payload.json().len() < event.payload.json().len());
        assert_eq!(
            facts_from_event(&cut, &settings()),
            facts_from_event(&event, &settings())
        );
        for hint in crate::event::HINT_KEYS {
            assert!(PAYLOAD_FIELDS.contains(&hint), "{hint}");
        }
    }

    #[test]
    fn fields_of_unexpected_types_read_as_absent() {
        let facts = facts(json!({
            "subject": 12,
            "content": ["<p>x</p>"],
            "summary": "résumé",
            "status": {"name": "Open"},
            "isForward": "yes",
            "cf": "none",
            "ticketNumber": null,
        }));
        assert_eq!(facts.subject, "");
        assert_eq!(facts.message, "résumé");
        assert_eq!(facts.status, None);
        assert_eq!(facts.ticket_number, None);
        assert_eq!(facts.link_field, None);
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let raw =
            r#"[{"eventType":"Ticket_Add","payload":{"id":"1","subject":"a","subject":"b"}}]"#;
        let delivery = crate::event::parse_delivery(raw.as_bytes()).unwrap();
        let facts = facts_from_event(&delivery.events[0], &settings());
        assert_eq!(facts.subject, "b");
    }
}
