//! Offline (no Zoho credentials): the facts come from the event's own payload, a ticket or,
//! for thread events, a thread.
//!
//! The payload is read into the few fields used, skipping the rest without building a tree.
//! A field of an unexpected type reads as absent, as it would through a JSON tree.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::automation::Facts;
use super::linking::{self, Message};
use super::text;
use crate::config::Settings;
use crate::event::TicketEvent;

/// What the offline workflow reads from a payload.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PayloadFacts {
    #[serde(deserialize_with = "lenient_text")]
    subject: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    content: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    summary: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    description: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    from_email_address: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    email: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    status: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    phone: Option<String>,
    #[serde(deserialize_with = "lenient_text")]
    web_url: Option<String>,
    #[serde(deserialize_with = "lenient_flag")]
    is_forward: bool,
    #[serde(deserialize_with = "lenient_object")]
    cf: Option<Map<String, Value>>,
    ticket_number: Option<Value>,
    #[serde(deserialize_with = "lenient_object")]
    contact: Option<Map<String, Value>>,
    #[serde(deserialize_with = "lenient_object")]
    author: Option<Map<String, Value>>,
}

impl PayloadFacts {
    fn read(event: &TicketEvent) -> Self {
        serde_json::from_str(event.payload.json())
            // A repeated key: the tree keeps the last value, as Zoho's own readers do.
            .or_else(|_| serde_json::from_value(event.payload.to_value()))
            .unwrap_or_default()
    }
}

/// What the event itself says about the ticket.
pub(super) fn facts_from_event(event: &TicketEvent, settings: &Settings) -> Facts {
    let payload = PayloadFacts::read(event);
    let body = payload
        .content
        .as_deref()
        .or(payload.summary.as_deref())
        .or(payload.description.as_deref())
        .map(text::html_to_text)
        .unwrap_or_default();
    let message = Message {
        from: payload.from_email_address.as_deref(),
        body: &body,
        is_forward: payload.is_forward,
    };
    let staff = &settings.spec.linking.staff_domains;
    let name = |object: &Option<Map<String, Value>>, key: &str| {
        object
            .as_ref()
            .and_then(|o| o.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Facts {
        customer_email: linking::customer_email(Some(&message), payload.email.as_deref(), staff),
        message: text::strip_quoted(&body),
        subject: payload.subject.unwrap_or_default(),
        department_id: event.department_id().map(str::to_owned),
        department: event.department_name().map(str::to_owned),
        status: payload.status,
        customer_name: name(&payload.contact, "firstName")
            .or_else(|| name(&payload.author, "name")),
        phone: payload.phone,
        link_field: name(&payload.cf, &settings.spec.linking.ticket_field),
        ticket_number: payload.ticket_number.and_then(|number| match number {
            Value::String(text) => Some(text),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }),
        web_url: payload.web_url,
    }
}

/// A string, or nothing for any other JSON value (which is skipped unread).
fn lenient_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_any(Lenient(|value: Scalar<'_>| match value {
        Scalar::Text(text) => Some(text.to_owned()),
        _ => None,
    }))
}

/// A boolean, or false for any other JSON value.
fn lenient_flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    deserializer
        .deserialize_any(Lenient(|value: Scalar<'_>| {
            matches!(value, Scalar::Flag(true)).then_some(())
        }))
        .map(|flag| flag.is_some())
}

/// An object, or nothing for any other JSON value.
fn lenient_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Object(object) => Ok(Some(object)),
        _ => Ok(None),
    }
}

/// The scalar a [`Lenient`] visitor saw; containers and numbers are skipped.
enum Scalar<'a> {
    Text(&'a str),
    Flag(bool),
    Other,
}

/// Visits any JSON value and keeps what its function picks from it.
struct Lenient<F>(F);

impl<'de, T, F: FnOnce(Scalar<'_>) -> Option<T>> Visitor<'de> for Lenient<F> {
    type Value = Option<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok((self.0)(Scalar::Text(text)))
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Self::Value, E> {
        Ok((self.0)(Scalar::Flag(flag)))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok((self.0)(Scalar::Other))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok((self.0)(Scalar::Other))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok((self.0)(Scalar::Other))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((self.0)(Scalar::Other))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((self.0)(Scalar::Other))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((self.0)(Scalar::Other))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok((self.0)(Scalar::Other))
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
