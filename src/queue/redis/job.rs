//! A job as Redis keeps it: what the workflow needs of an event, as JSON.
//!
//! A waiting job is most of the Redis memory a bulk update costs, so it keeps only the
//! payload members the workflow reads (the rest of a ticket, its long description first,
//! stays out). It is stored without its id: the job gets one when a worker takes it, kept
//! beside it in `running` (a replayed job carries its own), so that accepting it neither
//! costs a round trip of its own nor makes Redis rewrite it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::{DedupeKey, Payload, TicketEvent};
use crate::queue::Job;
use crate::store::now_ms;

/// A job as stored in Redis.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredJob {
    /// 0 in a waiting job: it is numbered when a worker takes it. A replayed job, and one
    /// queued by an earlier version, carry theirs.
    #[serde(default, skip_serializing_if = "is_unnumbered")]
    pub id: u64,
    pub ticket_id: String,
    pub event_type: String,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    event_time_ms: Option<i64>,
    payload: Payload,
    dedupe_key: String,
    /// Wall-clock time of acceptance, so the echo guard's window survives a takeover.
    enqueued_at_ms: u64,
}

fn is_unnumbered(id: &u64) -> bool {
    *id == 0
}

/// A deduplication key in hexadecimal, written through a table (one per accept, twice).
pub(super) fn key_hex(key: &DedupeKey) -> String {
    let mut text = [0u8; 2 * size_of::<DedupeKey>()];
    // The buffer is exactly twice the key's length, so the encoding cannot fail.
    let _ = hex::encode_to_slice(key, &mut text);
    String::from_utf8_lossy(&text).into_owned()
}

impl StoredJob {
    /// The job of `event`, keeping of its payload only the members in `payload_fields`
    /// (all of it when `None`).
    pub fn new(id: u64, event: &TicketEvent, payload_fields: Option<&[&str]>) -> Self {
        Self {
            id,
            ticket_id: event.ticket_id.clone(),
            event_type: event.event_type.clone(),
            org_id: event.org_id.clone(),
            event_time_ms: event.event_time_ms,
            payload: match payload_fields {
                Some(fields) => event.payload.keeping(fields),
                None => event.payload.clone(),
            },
            dedupe_key: key_hex(&event.dedupe_key),
            enqueued_at_ms: now_ms(),
        }
    }

    /// The JSON text the accept script stores.
    pub fn unnumbered(event: &TicketEvent, payload_fields: Option<&[&str]>) -> String {
        let job = Self::new(0, event, payload_fields);
        // Only strings and numbers: serialising cannot fail.
        serde_json::to_string(&job).unwrap_or_default()
    }

    pub fn into_job(self, attempt: u32) -> Job {
        // Earlier versions stored 32-byte (SHA-256) keys: their first 16 bytes keep such a
        // job's ledger key (made from the first 12), so its finished steps are not redone.
        let dedupe_key = hex::decode(&self.dedupe_key)
            .ok()
            .and_then(|bytes| DedupeKey::try_from(bytes.get(..size_of::<DedupeKey>())?).ok())
            .unwrap_or_default();
        let age = Duration::from_millis(now_ms().saturating_sub(self.enqueued_at_ms));
        let now = Instant::now();
        Job {
            id: self.id,
            event: TicketEvent::restore(
                self.ticket_id,
                self.event_type,
                self.org_id,
                self.event_time_ms,
                self.payload,
                dedupe_key,
            ),
            attempt: attempt.max(1),
            enqueued_at: now.checked_sub(age).unwrap_or(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EVERYTHING: Option<&[&str]> = Some(&["id", "subject"]);

    #[test]
    fn a_stored_job_round_trips_with_its_identity() {
        let event = TicketEvent::new(
            "198709000438366101".into(),
            "Ticket_Update".into(),
            Some("1".into()),
            Some(1_714_560_000_000),
            json!({"id": 198709000438366101u64, "subject": "é"}),
        );
        let text = serde_json::to_string(&StoredJob::new(42, &event, EVERYTHING)).unwrap();
        let job = serde_json::from_str::<StoredJob>(&text)
            .unwrap()
            .into_job(3);
        assert_eq!(job.id, 42);
        assert_eq!(job.attempt, 3);
        assert_eq!(job.event, event);
    }

    #[test]
    fn an_unnumbered_job_reads_back_with_or_without_a_prefixed_id() {
        let event = TicketEvent::new("7".into(), "Ticket_Add".into(), None, None, json!({}));
        let text = StoredJob::unnumbered(&event, EVERYTHING);
        assert!(text.starts_with(r#"{"ticket_id":"7""#), "{text}");
        assert_eq!(serde_json::from_str::<StoredJob>(&text).unwrap().id, 0);
        // What a replay does for a dead letter: `{"id":<n>,` then the text after its `{`.
        let numbered = format!(r#"{{"id":9,{}"#, &text[1..]);
        let job = serde_json::from_str::<StoredJob>(&numbered).unwrap();
        assert_eq!(job.id, 9);
        assert_eq!(job.into_job(1).event, event);
    }

    #[test]
    fn a_stored_job_keeps_only_the_payload_members_it_is_told_to() {
        let description = "x".repeat(3000);
        let event = TicketEvent::new(
            "7".into(),
            "Ticket_Add".into(),
            None,
            None,
            json!({"id": "7", "subject": "Facture", "description": description, "cf": {}}),
        );
        let text = StoredJob::unnumbered(&event, EVERYTHING);
        assert!(text.len() < 300, "{} bytes: {text}", text.len());
        let job = serde_json::from_str::<StoredJob>(&format!(r#"{{"id":1,{}"#, &text[1..]))
            .unwrap()
            .into_job(1);
        assert_eq!(
            job.event.payload.to_value(),
            json!({"id": "7", "subject": "Facture"})
        );
        // Still the delivery it was: deduplication and the ledger go by the original key.
        assert_eq!(job.event.dedupe_key, event.dedupe_key);
        assert_eq!(job.event.hints, event.hints);
    }

    #[test]
    fn a_job_stored_with_a_32_byte_key_keeps_its_first_16_bytes() {
        let event = TicketEvent::new("7".into(), "Ticket_Add".into(), None, None, json!({}));
        let mut stored = StoredJob::new(1, &event, EVERYTHING);
        let legacy: Vec<u8> = (0u8..32).collect();
        stored.dedupe_key = hex::encode(&legacy);
        let job = stored.into_job(1);
        assert_eq!(job.event.dedupe_key[..], legacy[..16]);

        let mut stored = StoredJob::new(1, &event, EVERYTHING);
        stored.dedupe_key = "not hex".to_owned();
        assert_eq!(stored.into_job(1).event.dedupe_key, DedupeKey::default());
    }
}
