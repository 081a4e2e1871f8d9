//! The audit trail: one Kubernetes Event per flag change, per security-relevant change, and
//! per refused edit.
//!
//! Events are created directly rather than through kube-rs's `Recorder`: the recorder merges
//! events with the same reason into one series keeping the first message, which would turn
//! `respond false → true` then `respond true → false` into a single event with a count of two.
//! Here each event's name is derived from the resource's uid, the generation and the subject,
//! so creating it twice is refused by the API server (`409`) and the change is recorded once.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::MANAGER;
use super::resource::Observed;
use crate::config::security::SecurityChange;
use crate::crd::{AutomationFlags, GROUP, KIND, VERSION};

/// The reason of the Event that records a security-relevant change.
pub const SECURITY_REASON: &str = "SecuritySettingChanged";

/// One flag whose value changed between two generations in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagChange {
    /// The flag's name in the resource (`respond`, `updateTicket`, …).
    pub flag: &'static str,
    pub from: bool,
    pub to: bool,
}

impl FlagChange {
    /// The event's message, e.g. `respond false → true`.
    pub fn note(&self) -> String {
        format!("{} {} → {}", self.flag, self.from, self.to)
    }
}

/// The flags in the resource's own spelling, in a stable order.
fn spec_named(flags: &AutomationFlags) -> [(&'static str, bool); 7] {
    [
        ("dispatch", flags.dispatch),
        ("link", flags.link),
        ("respond", flags.respond),
        ("updateTicket", flags.update_ticket),
        ("updateDeal", flags.update_deal),
        ("addNote", flags.add_note),
        ("draftReplies", flags.draft_replies),
    ]
}

/// The flags that differ between `before` and `after`.
pub fn flag_changes(before: &AutomationFlags, after: &AutomationFlags) -> Vec<FlagChange> {
    spec_named(before)
        .into_iter()
        .zip(spec_named(after))
        .filter(|((_, from), (_, to))| from != to)
        .map(|((flag, from), (_, to))| FlagChange { flag, from, to })
        .collect()
}

/// What an event says.
pub struct Record {
    /// Last part of the event's name: the flag, or `invalid`.
    pub subject: String,
    pub reason: &'static str,
    pub warning: bool,
    pub note: String,
}

impl Record {
    pub fn flag(change: &FlagChange) -> Self {
        Self {
            subject: change.flag.to_ascii_lowercase(),
            reason: "FlagChanged",
            warning: false,
            note: change.note(),
        }
    }

    /// A security-relevant setting changed: a Warning, so switching a protection off stands
    /// out in `kubectl get events`.
    pub fn security(change: &SecurityChange) -> Self {
        Self {
            subject: change
                .field
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect::<String>()
                .to_ascii_lowercase(),
            reason: SECURITY_REASON,
            warning: true,
            note: change.note(),
        }
    }

    pub fn invalid(message: &str) -> Self {
        Self {
            subject: "invalid".to_owned(),
            reason: "InvalidSpec",
            warning: true,
            note: format!("edit refused, the last good settings stay in force: {message}"),
        }
    }
}

/// The event's name: the same for the same resource, generation and subject, whichever pod
/// computes it.
pub fn event_name(observed: &Observed, subject: &str) -> String {
    let uid: String = observed
        .uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{}.{uid}.g{}.{subject}", observed.name, observed.generation)
}

/// The event object for `record` about `observed`.
pub fn event(observed: &Observed, record: &Record, instance: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(observed, &record.subject)),
            namespace: Some(observed.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        action: Some("ApplySettings".to_owned()),
        reason: Some(record.reason.to_owned()),
        note: Some(record.note.clone()),
        type_: Some(if record.warning { "Warning" } else { "Normal" }.to_owned()),
        reporting_controller: Some(format!("{GROUP}/{MANAGER}")),
        reporting_instance: Some(instance.to_owned()),
        regarding: Some(ObjectReference {
            api_version: Some(format!("{GROUP}/{VERSION}")),
            kind: Some(KIND.to_owned()),
            name: Some(observed.name.clone()),
            namespace: Some(observed.namespace.clone()),
            uid: Some(observed.uid.clone()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// Creates the event; `Ok(true)` when this call recorded it, `Ok(false)` when it already was.
pub async fn publish(
    api: &Api<Event>,
    observed: &Observed,
    record: &Record,
    instance: &str,
) -> Result<bool, kube::Error> {
    let event = event(observed, record, instance);
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_already_exists() || status.code == 409 => {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_flags_that_changed_are_reported_in_spec_spelling() {
        let before = AutomationFlags::default();
        let after = AutomationFlags {
            respond: true,
            update_ticket: true,
            ..before
        };
        let changes = flag_changes(&before, &after);
        let notes: Vec<String> = changes.iter().map(FlagChange::note).collect();
        assert_eq!(notes, ["respond false → true", "updateTicket false → true"]);
        assert!(flag_changes(&after, &after).is_empty());
    }
}
