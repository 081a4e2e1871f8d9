//! Noticing a person undoing deskhook, and comparing deskhook with a person.
//!
//! After deskhook moves a ticket (`dispatch`) or sets its status (`updateTicket`), the value it
//! set is remembered for the rollout's `overrideWindow`. A later update of that ticket, read
//! back from Zoho, that shows another value means someone changed it: an **override**. Echoes
//! of deskhook's own writes never get here (the echo guard stops them before anything is
//! read), and a ticket still showing deskhook's value is no override.
//!
//! While a ticket is outside an action's share (or its flag is off), what deskhook *would*
//! have set is remembered with the value the ticket had then. When a later update shows a
//! person changed that value, the two are **compared**: agreement is the share of such
//! changes that match what deskhook would have done.
//!
//! The memory is per pod and bounded: a later update handled by another pod, or after a
//! restart, is simply not compared.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tickets remembered at most.
const MAX_TICKETS: usize = 50_000;

/// Which field an action sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `dispatch`: the department.
    Department,
    /// `updateTicket`: the status.
    Status,
}

impl Field {
    pub fn action(self) -> &'static str {
        match self {
            Self::Department => "dispatch",
            Self::Status => "updateTicket",
        }
    }
}

/// What is remembered of one field of one ticket.
#[derive(Clone, Debug)]
enum Memory {
    /// deskhook set the field to this value.
    Set(String),
    /// deskhook would have set the field to `would`; it held `before` then.
    Shadow {
        would: String,
        before: Option<String>,
    },
}

#[derive(Clone, Debug)]
struct Remembered {
    field: Field,
    memory: Memory,
    until: Instant,
}

/// What a later update of a remembered ticket showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A person changed a value deskhook set.
    Override(Field),
    /// A person changed a value deskhook left alone; `agreed` when it is what deskhook would
    /// have set.
    Compared { field: Field, agreed: bool },
}

/// The per-pod memory of recent writes and would-be writes.
#[derive(Default)]
pub struct OverrideWatch {
    tickets: Mutex<HashMap<String, Vec<Remembered>>>,
}

impl OverrideWatch {
    /// deskhook set `field` of `ticket` to `value`.
    pub fn wrote(&self, ticket: &str, field: Field, value: &str, window: Duration) {
        self.remember(ticket, field, Memory::Set(value.to_owned()), window);
    }

    /// deskhook would have set `field` of `ticket` to `would`; it holds `before`.
    pub fn would_have(
        &self,
        ticket: &str,
        field: Field,
        would: &str,
        before: Option<&str>,
        window: Duration,
    ) {
        let memory = Memory::Shadow {
            would: would.to_owned(),
            before: before.map(str::to_owned),
        };
        self.remember(ticket, field, memory, window);
    }

    fn remember(&self, ticket: &str, field: Field, memory: Memory, window: Duration) {
        let now = Instant::now();
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        if tickets.len() >= MAX_TICKETS && !tickets.contains_key(ticket) {
            tickets.retain(|_, entries| {
                entries.retain(|e| e.until > now);
                !entries.is_empty()
            });
            if tickets.len() >= MAX_TICKETS {
                return;
            }
        }
        let entries = tickets.entry(ticket.to_owned()).or_default();
        entries.retain(|e| e.field != field);
        entries.push(Remembered {
            field,
            memory,
            until: now + window,
        });
    }

    /// What the current `department` and `status` of `ticket`, read from Zoho for a later
    /// update, show about what was remembered. Each remembered value is judged once.
    pub fn observe(
        &self,
        ticket: &str,
        department: Option<&str>,
        status: Option<&str>,
    ) -> Vec<Observation> {
        let now = Instant::now();
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entries) = tickets.get_mut(ticket) else {
            return Vec::new();
        };
        let mut seen = Vec::new();
        entries.retain(|entry| {
            if entry.until <= now {
                return false;
            }
            let current = match entry.field {
                Field::Department => department,
                Field::Status => status,
            };
            let same = |value: &str| current.is_some_and(|c| crate::names::same_name(c, value));
            match &entry.memory {
                Memory::Set(value) if same(value) => true,
                Memory::Set(_) => {
                    seen.push(Observation::Override(entry.field));
                    false
                }
                Memory::Shadow { would, before } => {
                    let unchanged = match before {
                        Some(before) => same(before),
                        None => current.is_none(),
                    };
                    if unchanged {
                        return true;
                    }
                    seen.push(Observation::Compared {
                        field: entry.field,
                        agreed: same(would),
                    });
                    false
                }
            }
        });
        if entries.is_empty() {
            tickets.remove(ticket);
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_person_moving_a_ticket_deskhook_moved_is_one_override() {
        let watch = OverrideWatch::default();
        watch.wrote("7", Field::Department, "DOC", HOUR);
        assert_eq!(watch.observe("7", Some("doc"), Some("Open")), []);
        assert_eq!(
            watch.observe("7", Some("Contact"), Some("Open")),
            [Observation::Override(Field::Department)]
        );
        assert_eq!(
            watch.observe("7", Some("DOC"), Some("Open")),
            [],
            "judged once"
        );
    }

    #[test]
    fn after_the_window_nothing_counts() {
        let watch = OverrideWatch::default();
        watch.wrote("7", Field::Status, "Closed", Duration::ZERO);
        assert_eq!(watch.observe("7", None, Some("Open")), []);
    }

    #[test]
    fn a_person_changing_what_deskhook_left_alone_is_compared() {
        let watch = OverrideWatch::default();
        watch.would_have("1", Field::Department, "DOC", Some("Accueil"), HOUR);
        watch.would_have("2", Field::Department, "DOC", Some("Accueil"), HOUR);
        watch.would_have("3", Field::Status, "Closed", Some("Open"), HOUR);
        assert_eq!(
            watch.observe("1", Some("Accueil"), None),
            [],
            "not changed yet"
        );
        assert_eq!(
            watch.observe("1", Some("DOC"), None),
            [Observation::Compared {
                field: Field::Department,
                agreed: true
            }]
        );
        assert_eq!(
            watch.observe("2", Some("Contact"), None),
            [Observation::Compared {
                field: Field::Department,
                agreed: false
            }]
        );
        assert_eq!(
            watch.observe("3", None, Some("On Hold")),
            [Observation::Compared {
                field: Field::Status,
                agreed: false
            }]
        );
    }
}
