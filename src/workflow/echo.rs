//! Recognising the echo of deskhook's own writes.
//!
//! Zoho fires `Ticket_Update` for changes deskhook makes itself (when `ignoreSourceId` is not
//! honoured). Such an event, for a ticket deskhook wrote to, accepted during that run or
//! within the echo window after it, is not run again. Customer messages (inbound threads)
//! and new tickets are never taken for echoes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::event::TicketEvent;

/// Tickets remembered at most.
const MAX_TICKETS: usize = 50_000;

#[derive(Clone, Copy)]
struct WriteSpan {
    first: Instant,
    last: Instant,
}

/// Recent writes per ticket.
#[derive(Default)]
pub struct EchoGuard {
    writes: Mutex<HashMap<String, WriteSpan>>,
}

impl EchoGuard {
    /// Records a write to `ticket` that started at `started` and has just ended.
    pub fn record_write(&self, ticket: &str, started: Instant) {
        let now = Instant::now();
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if writes.len() >= MAX_TICKETS && !writes.contains_key(ticket) {
            writes.retain(|_, span| now.duration_since(span.last) < Duration::from_secs(600));
        }
        let span = writes.entry(ticket.to_owned()).or_insert(WriteSpan {
            first: started,
            last: now,
        });
        if now.duration_since(span.last) > Duration::from_secs(600) {
            span.first = started;
        }
        span.last = now;
    }

    /// Whether `event`, accepted at `accepted_at`, is the echo of one of our writes.
    pub fn is_echo(&self, event: &TicketEvent, accepted_at: Instant, window: Duration) -> bool {
        if !could_be_echo(event) {
            return false;
        }
        let writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes.get(&event.ticket_id).is_some_and(|span| {
            accepted_at >= span.first && accepted_at.saturating_duration_since(span.last) <= window
        })
    }
}

/// Only updates and outgoing threads or comments can be caused by our writes.
fn could_be_echo(event: &TicketEvent) -> bool {
    match event.event_type.as_str() {
        "Ticket_Update" | "Ticket_Comment_Add" | "Ticket_Comment_Update" => true,
        "Ticket_Thread_Add" => event.is_outgoing(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, payload: serde_json::Value) -> TicketEvent {
        TicketEvent::new("7".into(), kind.into(), None, None, payload)
    }

    #[test]
    fn an_update_right_after_our_write_is_an_echo() {
        let guard = EchoGuard::default();
        let started = Instant::now();
        guard.record_write("7", started);
        let update = event("Ticket_Update", json!({"id": "7"}));
        assert!(guard.is_echo(&update, Instant::now(), Duration::from_secs(60)));
        assert!(!guard.is_echo(
            &update,
            Instant::now() + Duration::from_secs(120),
            Duration::from_secs(60)
        ));
    }

    #[test]
    fn customer_messages_and_other_tickets_are_never_echoes() {
        let guard = EchoGuard::default();
        guard.record_write("7", Instant::now());
        let inbound = event(
            "Ticket_Thread_Add",
            json!({"ticketId": "7", "direction": "in"}),
        );
        assert!(!guard.is_echo(&inbound, Instant::now(), Duration::from_secs(60)));
        let other = TicketEvent::new("8".into(), "Ticket_Update".into(), None, None, json!({}));
        assert!(!guard.is_echo(&other, Instant::now(), Duration::from_secs(60)));
    }
}
