//! The seed's environment variables, so a user of the Python server can keep their `.env`.

use crate::crd::{AutomationFlags, WebhookAutomationSpec};

/// The seed's flag variables with the flag each sets.
const FLAG_VARIABLES: [&str; 7] = [
    "WEBHOOK_AUTO_DISPATCH",
    "WEBHOOK_AUTO_LINK",
    "WEBHOOK_AUTO_RESPOND",
    "WEBHOOK_AUTO_UPDATE_TICKET",
    "WEBHOOK_AUTO_UPDATE_DEAL",
    "WEBHOOK_AUTO_ADD_NOTE",
    "WEBHOOK_DRAFT_REPLIES",
];

/// A variable that holds something other than a boolean.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name} must be true or false, got {value:?}")]
pub struct InvalidFlagVariable {
    pub name: &'static str,
    pub value: String,
}

/// Builds a spec from the seed's variables, read through `lookup` (the process environment in
/// production, a map in tests). Unset flags keep the seed's defaults.
pub fn spec_from_env(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<WebhookAutomationSpec, InvalidFlagVariable> {
    let defaults = AutomationFlags::default();
    let flag = |name: &'static str, default: bool| -> Result<bool, InvalidFlagVariable> {
        match lookup(name) {
            None => Ok(default),
            Some(value) => parse_bool(&value).ok_or(InvalidFlagVariable { name, value }),
        }
    };
    let automation = AutomationFlags {
        dispatch: flag(FLAG_VARIABLES[0], defaults.dispatch)?,
        link: flag(FLAG_VARIABLES[1], defaults.link)?,
        respond: flag(FLAG_VARIABLES[2], defaults.respond)?,
        update_ticket: flag(FLAG_VARIABLES[3], defaults.update_ticket)?,
        update_deal: flag(FLAG_VARIABLES[4], defaults.update_deal)?,
        add_note: flag(FLAG_VARIABLES[5], defaults.add_note)?,
        draft_replies: flag(FLAG_VARIABLES[6], defaults.draft_replies)?,
    };
    let departments = lookup("WEBHOOK_DEPARTMENTS")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    // Everything else takes the defaults a settings file with an empty spec gets.
    Ok(WebhookAutomationSpec {
        automation,
        departments,
        ..WebhookAutomationSpec::default()
    })
}

/// The seed's flag variables that are set, to warn that a settings file overrides them.
pub fn seed_flags_in_env(lookup: impl Fn(&str) -> Option<String>) -> Vec<&'static str> {
    FLAG_VARIABLES
        .into_iter()
        .filter(|name| lookup(name).is_some())
        .collect()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn unset_variables_give_the_seed_defaults() {
        let spec = spec_from_env(lookup(&[])).unwrap();
        assert_eq!(spec.automation, AutomationFlags::default());
        assert!(spec.departments.is_empty());
        assert_eq!(
            spec.events,
            ["Ticket_Add", "Ticket_Update", "Ticket_Thread_Add"]
        );
    }

    #[test]
    fn seed_variables_set_the_flags() {
        let spec = spec_from_env(lookup(&[
            ("WEBHOOK_AUTO_DISPATCH", "false"),
            ("WEBHOOK_AUTO_RESPOND", "TRUE"),
            ("WEBHOOK_DEPARTMENTS", "DOC, Contact"),
        ]))
        .unwrap();
        assert!(!spec.automation.dispatch && spec.automation.respond && spec.automation.link);
        assert_eq!(spec.departments, ["DOC", "Contact"]);
    }

    #[test]
    fn a_non_boolean_flag_is_an_error_naming_the_variable() {
        let err = spec_from_env(lookup(&[("WEBHOOK_AUTO_LINK", "maybe")])).unwrap_err();
        assert_eq!(err.name, "WEBHOOK_AUTO_LINK");
    }
}
