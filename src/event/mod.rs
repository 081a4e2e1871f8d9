//! Zoho Desk payloads → [`TicketEvent`]s.
//!
//! Zoho's native delivery is a JSON array of `{eventType, eventTime, orgId, payload, prevState}`
//! objects (zero or more). The original guide and the Python server used object shapes
//! (`ticket.id`, `id`, `entityId`, nested `data`, and `ticket_id`/`ticketId` from Deluge
//! functions); all are accepted. Parsing is pure, never panics, and keeps ids as exact strings:
//! a 19-digit id sent as a JSON number must not pass through a float.
//!
//! The native array, Zoho's only shape and the hot path, is read by [`native`] without a tree;
//! every other body by the general reader here.

mod members;
mod native;
mod payload;

use serde_json::{Map, Value};
use xxhash_rust::xxh3::Xxh3;

pub use payload::{HINT_KEYS, Hints, Payload};

/// Identity of a delivery for deduplication: XXH3-128 over org, type, ticket, time and the
/// payload's text.
///
/// Not a cryptographic hash, and it need not be: only deliveries that passed verification are
/// keyed, so no one without the signing key can choose what is hashed. The body is already
/// hashed once with SHA-256 for its signature; a second SHA-256 pass over the payload cost
/// about 4 % of the intake's CPU at 4 KB.
pub type DedupeKey = [u8; 16];

/// Deepest `data` nesting searched in the legacy object shapes.
const MAX_DATA_DEPTH: usize = 8;
/// Largest id accepted, in digits: Zoho ids are 16 to 19 digits, room is left for growth.
const MAX_ID_LEN: usize = 32;

/// One ticket event, ready to be queued.
#[derive(Clone, Debug, PartialEq)]
pub struct TicketEvent {
    /// The ticket id, as an exact decimal string.
    pub ticket_id: String,
    /// The event type, normalised to Zoho's names (`ticket.created` becomes `Ticket_Add`).
    pub event_type: String,
    /// Zoho Desk organization id, when the payload carries one.
    pub org_id: Option<String>,
    /// Event time in epoch milliseconds, when the payload carries one.
    pub event_time_ms: Option<i64>,
    /// The resource as delivered (the ticket, or the thread for thread events): a hint only,
    /// since the body proves nothing about the ticket's current state.
    pub payload: Payload,
    /// The payload's ids, department and direction, read once at intake.
    pub hints: Hints,
    /// Identity of this delivery for deduplication.
    pub dedupe_key: DedupeKey,
}

impl TicketEvent {
    /// Department id carried by the payload, if any.
    pub fn department_id(&self) -> Option<&str> {
        self.hints.department_id.as_deref()
    }

    /// Department name carried by the payload, if any (`departmentName` or `department.name`).
    pub fn department_name(&self) -> Option<&str> {
        self.hints.department_name.as_deref()
    }

    /// A thread written by an agent (or by deskhook), not by the customer.
    pub fn is_outgoing(&self) -> bool {
        self.hints.is_outgoing()
    }
}

/// What a delivery contained.
#[derive(Debug, Default, PartialEq)]
pub struct Delivery {
    /// Events carrying a ticket id.
    pub events: Vec<TicketEvent>,
    /// Events that belong to tickets but carry no usable ticket id, by event type.
    pub missing_ticket_id: Vec<String>,
    /// Events of other modules (contacts, agents, …), by event type.
    pub not_ticket_events: Vec<String>,
}

impl Delivery {
    /// True when the body described no event at all (an empty array, `{}`, a validation ping).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.missing_ticket_id.is_empty()
            && self.not_ticket_events.is_empty()
    }
}

/// Why a body could not be read as a delivery.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The body is not JSON (or nests deeper than the parser allows).
    #[error("invalid JSON payload: {0}")]
    InvalidJson(String),
    /// The body is JSON but neither an array of events nor an object.
    #[error("payload is neither an array of events nor an object")]
    UnexpectedShape,
}

/// Parses a raw body into a [`Delivery`].
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, ParseError> {
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(Delivery::default());
    };
    if *first == b'['
        && let Some(delivery) = native::parse(body)
    {
        return Ok(delivery);
    }
    // serde_json limits nesting to 128 levels, so hostile depth is an error, not a stack overflow.
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::InvalidJson(e.classify_name()))?;
    let mut delivery = Delivery::default();
    match value {
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(object) => collect_native(object, &mut delivery),
                    _ => delivery.missing_ticket_id.push("unknown".to_owned()),
                }
            }
        }
        Value::Object(object) if is_native_event(&object) => collect_native(object, &mut delivery),
        Value::Object(object) => collect_legacy(object, &mut delivery),
        _ => return Err(ParseError::UnexpectedShape),
    }
    Ok(delivery)
}

trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    /// A short, input-free description: error bodies and logs must never echo the payload.
    fn classify_name(&self) -> String {
        let kind = match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "data error",
            serde_json::error::Category::Eof => "unexpected end of input",
        };
        format!("{kind} at line {} column {}", self.line(), self.column())
    }
}

fn is_native_event(object: &Map<String, Value>) -> bool {
    object.contains_key("payload") && object.get("eventType").is_some_and(Value::is_string)
}

/// One element of Zoho's native array.
fn collect_native(object: Map<String, Value>, delivery: &mut Delivery) {
    let event_type = object
        .get("eventType")
        .and_then(Value::as_str)
        .map(normalise_event_type)
        .unwrap_or_else(|| "unknown".to_owned());
    let payload = object.get("payload").cloned().unwrap_or(Value::Null);
    let hints = Hints::from_value(&payload);
    file_native(
        delivery,
        event_type,
        Payload::from_value(&payload),
        hints,
        object.get("orgId").and_then(id_string),
        object.get("eventTime").and_then(epoch_millis),
    );
}

/// Files one native event, read by either reader: as an event when it names a ticket, else
/// by why it does not.
fn file_native(
    delivery: &mut Delivery,
    event_type: String,
    payload: Payload,
    hints: Hints,
    org_id: Option<String>,
    event_time_ms: Option<i64>,
) {
    match native_ticket_id(&event_type, &hints) {
        Some(ticket_id) => delivery.events.push(TicketEvent::with_hints(
            ticket_id,
            event_type,
            org_id,
            event_time_ms,
            payload,
            hints,
        )),
        None if is_other_module(&event_type) => delivery.not_ticket_events.push(event_type),
        None => delivery.missing_ticket_id.push(event_type),
    }
}

/// Thread, comment, attachment and approval events name their ticket in `ticketId`; ticket
/// events are the ticket itself. Events of other modules have no ticket.
fn native_ticket_id(event_type: &str, payload: &Hints) -> Option<String> {
    if let Some(id) = &payload.ticket_id {
        return Some(id.clone());
    }
    if is_other_module(event_type) {
        return None;
    }
    let is_ticket_itself = matches!(event_type, "Ticket_Add" | "Ticket_Update" | "Ticket_Delete")
        || !event_type.starts_with("Ticket_");
    if is_ticket_itself {
        payload.id.clone()
    } else {
        None
    }
}

/// Known Zoho modules whose events are not about a ticket.
fn is_other_module(event_type: &str) -> bool {
    const OTHER: [&str; 14] = [
        "Contact_",
        "Account_",
        "Agent_",
        "Department_",
        "Task_",
        "Call_",
        "Event_",
        "TimeEntry_",
        "Article_",
        "KBRootCategory_",
        "KBSection_",
        "IM_",
        "Product_",
        "Contract_",
    ];
    OTHER.iter().any(|prefix| event_type.starts_with(prefix))
}

/// The seed's and the Python server's object shapes.
fn collect_legacy(object: Map<String, Value>, delivery: &mut Delivery) {
    let event_type = ["event_type", "eventType", "event"]
        .iter()
        .find_map(|key| object.get(*key).and_then(Value::as_str))
        .map(normalise_event_type)
        // A Deluge function posting `{ticket_id}` asks for the ticket to be looked at again.
        .unwrap_or_else(|| "Ticket_Update".to_owned());
    let Some(ticket_id) = legacy_ticket_id(&object, 0) else {
        delivery.missing_ticket_id.push(event_type);
        return;
    };
    let org_id = object.get("orgId").and_then(id_string);
    let event_time_ms = ["eventTime", "timestamp"]
        .iter()
        .find_map(|key| object.get(*key).and_then(epoch_millis));
    let payload = match object.get("ticket") {
        Some(ticket @ Value::Object(_)) => ticket.clone(),
        _ => Value::Object(object),
    };
    delivery.events.push(TicketEvent::new(
        ticket_id,
        event_type,
        org_id,
        event_time_ms,
        payload,
    ));
}

/// `ticket.id`, then `ticket_id`/`ticketId`, then `id`, then `entityId`, then the same inside
/// `data`, recursively.
fn legacy_ticket_id(object: &Map<String, Value>, depth: usize) -> Option<String> {
    let direct = object
        .get("ticket")
        .and_then(|ticket| ticket.get("id"))
        .and_then(id_string)
        .or_else(|| {
            ["ticket_id", "ticketId", "id", "entityId"]
                .iter()
                .find_map(|key| object.get(*key).and_then(id_string))
        });
    if direct.is_some() || depth >= MAX_DATA_DEPTH {
        return direct;
    }
    match object.get("data") {
        Some(Value::Object(inner)) => legacy_ticket_id(inner, depth + 1),
        _ => None,
    }
}

/// Maps the names used by the original guide to Zoho's event names; others are kept as sent.
pub fn normalise_event_type(raw: &str) -> String {
    let mapped = match raw.to_ascii_lowercase().as_str() {
        "ticket.created" | "ticket_created" | "ticket.add" => "Ticket_Add",
        "ticket.updated" | "ticket.status_changed" | "ticket.assigned" | "ticket_updated" => {
            "Ticket_Update"
        }
        "ticket.comment_added" | "ticket.comment.added" => "Ticket_Comment_Add",
        "ticket.thread_added" | "ticket.reply_added" => "Ticket_Thread_Add",
        _ => return raw.chars().take(64).collect(),
    };
    mapped.to_owned()
}

/// An id as an exact decimal string: a string of digits, or a JSON integer.
fn id_string(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    let valid =
        !text.is_empty() && text.len() <= MAX_ID_LEN && text.bytes().all(|b| b.is_ascii_digit());
    valid.then_some(text)
}

/// `eventTime` as epoch milliseconds, from a string or a number; values below 10¹¹ are taken
/// as seconds.
fn epoch_millis(value: &Value) -> Option<i64> {
    let raw = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    Some(if raw.unsigned_abs() < 100_000_000_000 {
        raw.saturating_mul(1000)
    } else {
        raw
    })
}

impl TicketEvent {
    /// Builds an event from a payload tree (legacy shapes, manual runs, tests).
    pub fn new(
        ticket_id: String,
        event_type: String,
        org_id: Option<String>,
        event_time_ms: Option<i64>,
        payload: Value,
    ) -> Self {
        let hints = Hints::from_value(&payload);
        Self::with_hints(
            ticket_id,
            event_type,
            org_id,
            event_time_ms,
            Payload::from_value(&payload),
            hints,
        )
    }

    /// Builds an event and its deduplication key from a payload already read.
    pub fn with_hints(
        ticket_id: String,
        event_type: String,
        org_id: Option<String>,
        event_time_ms: Option<i64>,
        payload: Payload,
        hints: Hints,
    ) -> Self {
        let mut hasher = Xxh3::new();
        for part in [org_id.as_deref().unwrap_or(""), &event_type, &ticket_id] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        hasher.update(&event_time_ms.unwrap_or(0).to_be_bytes());
        hasher.update(payload.json().as_bytes());
        Self {
            ticket_id,
            event_type,
            org_id,
            event_time_ms,
            payload,
            hints,
            dedupe_key: hasher.digest128().to_be_bytes(),
        }
    }

    /// An event read back from a shared queue, with the key it was accepted under.
    pub fn restore(
        ticket_id: String,
        event_type: String,
        org_id: Option<String>,
        event_time_ms: Option<i64>,
        payload: Payload,
        dedupe_key: DedupeKey,
    ) -> Self {
        Self {
            hints: payload.hints(),
            ticket_id,
            event_type,
            org_id,
            event_time_ms,
            payload,
            dedupe_key,
        }
    }

    /// An event built for a manual run (`/webhook/test`). Each has a key of its own: two
    /// manual runs of a ticket are two requests, never one delivery seen twice.
    pub fn manual(ticket_id: String) -> Self {
        use std::hash::{BuildHasher, RandomState};
        let mut event = Self::new(ticket_id, "Manual".to_owned(), None, None, Value::Null);
        // Randomly keyed hashers: 128 bits no other run can share.
        let [high, low] = [(); 2].map(|()| RandomState::new().hash_one(&event.ticket_id));
        event.dedupe_key = (u128::from(high) << 64 | u128::from(low)).to_be_bytes();
        event
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(delivery: &Delivery) -> Vec<&str> {
        delivery
            .events
            .iter()
            .map(|e| e.ticket_id.as_str())
            .collect()
    }

    #[test]
    fn native_array_with_numeric_18_digit_id_keeps_every_digit() {
        let body = br#"[{"eventType":"Ticket_Add","eventTime":1714560000000,"orgId":700000001,
            "payload":{"id":198709000438366101,"subject":"x"}}]"#;
        let delivery = parse_delivery(body).unwrap();
        assert_eq!(ids(&delivery), ["198709000438366101"]);
        assert_eq!(delivery.events[0].org_id.as_deref(), Some("700000001"));
        assert_eq!(delivery.events[0].event_time_ms, Some(1_714_560_000_000));
    }

    #[test]
    fn thread_events_name_their_ticket_in_ticket_id() {
        let body = br#"[{"eventType":"Ticket_Thread_Add","eventTime":"1714560100000","orgId":"1",
            "payload":{"id":"1892000000099001","ticketId":"1892000000042034"},"prevState":null}]"#;
        assert_eq!(ids(&parse_delivery(body).unwrap()), ["1892000000042034"]);
    }

    #[test]
    fn thread_event_without_ticket_id_is_missing_not_the_thread_id() {
        let body = br#"[{"eventType":"Ticket_Comment_Add","payload":{"id":"1892000000099001"}}]"#;
        let delivery = parse_delivery(body).unwrap();
        assert!(delivery.events.is_empty());
        assert_eq!(delivery.missing_ticket_id, ["Ticket_Comment_Add"]);
    }

    #[test]
    fn contact_events_are_not_ticket_events() {
        let body = br#"[{"eventType":"Contact_Add","payload":{"id":"42"}}]"#;
        let delivery = parse_delivery(body).unwrap();
        assert!(delivery.events.is_empty() && delivery.missing_ticket_id.is_empty());
        assert_eq!(delivery.not_ticket_events, ["Contact_Add"]);
    }

    #[test]
    fn empty_array_and_blank_body_are_empty_deliveries() {
        assert!(parse_delivery(b"[]").unwrap().is_empty());
        assert!(parse_delivery(b"  ").unwrap().is_empty());
    }

    #[test]
    fn seed_object_shapes_are_accepted() {
        let cases: [(&[u8], &str, &str); 6] = [
            (
                br#"{"ticket":{"id":"198709000438366101"},"event_type":"ticket.created"}"#,
                "198709000438366101",
                "Ticket_Add",
            ),
            (
                br#"{"id":"123","eventType":"ticket.updated"}"#,
                "123",
                "Ticket_Update",
            ),
            (br#"{"entityId":456}"#, "456", "Ticket_Update"),
            (
                br#"{"data":{"data":{"ticket":{"id":"789"}}}}"#,
                "789",
                "Ticket_Update",
            ),
            (br#"{"ticket_id":"101"}"#, "101", "Ticket_Update"),
            (
                br#"{"ticketId":1234567890123456789,"event_type":"Ticket_Thread_Add"}"#,
                "1234567890123456789",
                "Ticket_Thread_Add",
            ),
        ];
        for (body, id, event_type) in cases {
            let delivery = parse_delivery(body).unwrap();
            assert_eq!(ids(&delivery), [id], "{}", String::from_utf8_lossy(body));
            assert_eq!(delivery.events[0].event_type, event_type);
        }
    }

    #[test]
    fn a_single_native_event_object_is_accepted() {
        let body = br#"{"eventType":"Ticket_Update","payload":{"id":"55"}}"#;
        assert_eq!(ids(&parse_delivery(body).unwrap()), ["55"]);
    }

    #[test]
    fn unknown_event_types_are_kept() {
        let body = br#"[{"eventType":"Ticket_Escalation_Add","payload":{"ticketId":"9"}}]"#;
        assert_eq!(
            parse_delivery(body).unwrap().events[0].event_type,
            "Ticket_Escalation_Add"
        );
    }

    #[test]
    fn float_and_non_digit_ids_are_not_ids() {
        for body in [
            br#"{"id":1.5e18}"#.as_slice(),
            br#"{"id":"12ab"}"#,
            br#"{"id":-5}"#,
        ] {
            assert!(parse_delivery(body).unwrap().events.is_empty());
        }
    }

    #[test]
    fn invalid_json_and_scalars_are_errors() {
        assert!(matches!(
            parse_delivery(b"{nope"),
            Err(ParseError::InvalidJson(_))
        ));
        assert_eq!(parse_delivery(b"42"), Err(ParseError::UnexpectedShape));
    }

    #[test]
    fn event_time_in_seconds_becomes_milliseconds() {
        assert_eq!(
            epoch_millis(&Value::from(1_714_560_000)),
            Some(1_714_560_000_000)
        );
        assert_eq!(
            epoch_millis(&Value::from("1714560000000")),
            Some(1_714_560_000_000)
        );
    }

    #[test]
    fn identical_events_share_a_dedupe_key_and_different_times_or_payloads_do_not() {
        let key = |body: &str| parse_delivery(body.as_bytes()).unwrap().events[0].dedupe_key;
        let body = r#"[{"eventType":"Ticket_Update","eventTime":"1","payload":{"id":"7","b":1}}]"#;
        assert_eq!(key(body), key(body));
        assert_ne!(key(body), key(&body.replace(r#""1""#, r#""2""#)));
        assert_ne!(key(body), key(&body.replace(r#""b":1"#, r#""b":2"#)));
    }

    /// Asserts that the native reader and the tree reader read `body` the same way.
    fn assert_readers_agree(body: &str) {
        let fast = native::parse(body.as_bytes()).expect("a native array");
        let mut general = Delivery::default();
        let Value::Array(items) = serde_json::from_str::<Value>(body).unwrap() else {
            panic!("not an array: {body}");
        };
        for item in items {
            if let Value::Object(object) = item {
                collect_native(object, &mut general);
            }
        }
        assert_eq!(fast.missing_ticket_id, general.missing_ticket_id, "{body}");
        assert_eq!(fast.not_ticket_events, general.not_ticket_events, "{body}");
        assert_eq!(fast.events.len(), general.events.len(), "{body}");
        for (a, b) in fast.events.iter().zip(&general.events) {
            let read = |e: &TicketEvent| {
                (
                    e.ticket_id.clone(),
                    e.event_type.clone(),
                    e.org_id.clone(),
                    e.event_time_ms,
                    e.hints.clone(),
                    e.payload.to_value(),
                )
            };
            assert_eq!(read(a), read(b), "{body}");
        }
    }

    #[test]
    fn the_native_reader_and_the_tree_reader_agree() {
        for body in [
            r#"[{"eventType":"Ticket_Add","eventTime":"1714560000","orgId":7,
                "payload":{"id":198709000438366101,"departmentName":"DOC","subject":"é\u00e9"}}]"#,
            r#"[{"eventType":"ticket.created","payload":{"ticketId":"12","direction":"out"}},
                {"eventType":"Contact_Add","payload":{"id":"1"}},{"payload":{"id":"3"}},
                {"eventType":5,"payload":null}]"#,
            r#"[{"eventType":"Ticket_Thread_Add","payload":{"id":"9","department":{"name":"Contact"}}}]"#,
        ] {
            assert_readers_agree(body);
        }
    }

    /// A JSON value of the kinds Zoho's fields hold, and the wrong kinds.
    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e20..1e20f64).prop_map(Value::from),
            "[0-9]{0,20}".prop_map(Value::from),
            " ?[0-9a-zA-Z_. é]{0,12}".prop_map(Value::from),
            // What a reader that skips strings must not mistake for their end or for structure.
            r#"[\\"{}\[\],:a é]{0,12}"#.prop_map(Value::from),
        ]
    }

    fn payload() -> impl Strategy<Value = Value> {
        let keys = [
            "id",
            "ticketId",
            "departmentId",
            "departmentName",
            "department",
            "direction",
            "subject",
            "content",
        ];
        prop_oneof![
            proptest::collection::btree_map(
                proptest::sample::select(keys.to_vec()).prop_map(str::to_owned),
                prop_oneof![
                    scalar(),
                    scalar().prop_map(|name| serde_json::json!({ "name": name })),
                    (scalar(), scalar()).prop_map(|(a, b)| serde_json::json!([a, {"id": b}, []])),
                ],
                0..6,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
            scalar(),
            Just(serde_json::json!([1, 2])),
        ]
    }

    fn native_event() -> impl Strategy<Value = Value> {
        let types = prop_oneof![
            proptest::sample::select(vec![
                "Ticket_Add",
                "Ticket_Update",
                "Ticket_Thread_Add",
                "Ticket_Comment_Add",
                "Contact_Add",
                "ticket.created",
                "Custom_Event",
            ])
            .prop_map(Value::from),
            scalar(),
        ];
        (
            proptest::option::of(types),
            proptest::option::of(scalar()),
            proptest::option::of(scalar()),
            proptest::option::of(payload()),
        )
            .prop_map(|(event_type, time, org, payload)| {
                let mut event = serde_json::Map::new();
                for (key, value) in [
                    ("eventType", event_type),
                    ("eventTime", time),
                    ("orgId", org),
                    ("payload", payload),
                ] {
                    if let Some(value) = value {
                        event.insert(key.to_owned(), value);
                    }
                }
                Value::Object(event)
            })
    }

    proptest::proptest! {
        #[test]
        fn the_readers_agree_on_any_native_array(
            events in proptest::collection::vec(native_event(), 0..4)
        ) {
            let events = Value::Array(events);
            assert_readers_agree(&events.to_string());
            assert_readers_agree(&serde_json::to_string_pretty(&events).unwrap());
        }
    }

    #[test]
    fn arrays_the_native_reader_refuses_go_to_the_general_reader() {
        // A scalar element, and a repeated key: the tree reader's rules apply.
        let delivery =
            parse_delivery(br#"[1, {"eventType":"Ticket_Add","payload":{"id":"4"}}]"#).unwrap();
        assert_eq!(ids(&delivery), ["4"]);
        assert_eq!(delivery.missing_ticket_id, ["unknown"]);
        let body =
            br#"[{"eventType":"Ticket_Add","eventType":"Ticket_Update","payload":{"id":"4"}}]"#;
        assert!(native::parse(body).is_none());
        assert_eq!(
            parse_delivery(body).unwrap().events[0].event_type,
            "Ticket_Update"
        );
    }
}
