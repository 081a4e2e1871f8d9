//! Deal linking decisions: whose message this is, which phone, which of several deals.
//!
//! Pure functions; the workflow feeds them what the Zoho APIs returned.

use serde_json::{Map, Value};

use super::rules::{as_number, same};
use super::text;
use crate::crd::DealPreference;

/// How the deal was found, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStrategy {
    /// The ticket's link field already named a deal.
    TicketField,
    /// The customer's email led to a CRM contact and its deals.
    Email,
    /// The customer's phone led to a CRM contact and its deals.
    Phone,
    /// Nothing led to a deal.
    None,
    /// No Zoho credentials: linking was not attempted.
    Offline,
}

/// The address inside `Name <address>`, lower-cased, or the text itself if it is an address.
pub fn email_address(raw: &str) -> Option<String> {
    let candidate = match (raw.rfind('<'), raw.rfind('>')) {
        (Some(start), Some(end)) if start < end => &raw[start + 1..end],
        _ => raw,
    };
    let candidate = candidate
        .trim()
        .trim_matches(|c: char| c == '"' || c == '\'' || c == ',');
    let (local, domain) = candidate.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !candidate.contains(char::is_whitespace)
        && candidate.len() <= 254;
    valid.then(|| candidate.to_ascii_lowercase())
}

/// Whether the address belongs to staff (one of `staff_domains`).
pub fn is_staff(address: &str, staff_domains: &[String]) -> bool {
    let domain = address.rsplit('@').next().unwrap_or("");
    staff_domains
        .iter()
        .any(|d| domain.eq_ignore_ascii_case(d.trim().trim_start_matches('@')))
}

/// The original sender of a forwarded message: the first address on a `From:`/`De :` line
/// of the forwarded header that is not staff.
pub fn forwarded_sender(body: &str, staff_domains: &[String]) -> Option<String> {
    body.lines().find_map(|line| {
        let folded = text::fold(line.trim());
        let is_header =
            folded.starts_with("from:") || folded.starts_with("de :") || folded.starts_with("de:");
        if !is_header {
            return None;
        }
        line.split_whitespace()
            .filter_map(email_address)
            .find(|address| !is_staff(address, staff_domains))
    })
}

/// One inbound message as the linking step sees it.
#[derive(Clone, Debug, Default)]
pub struct Message<'a> {
    pub from: Option<&'a str>,
    pub body: &'a str,
    pub is_forward: bool,
}

/// The customer's email: the sender of the latest inbound message (the original sender when
/// staff forwarded it), else the ticket's email; staff addresses never count.
pub fn customer_email(
    latest_inbound: Option<&Message<'_>>,
    ticket_email: Option<&str>,
    staff_domains: &[String],
) -> Option<String> {
    if let Some(message) = latest_inbound {
        let sender = message.from.and_then(email_address);
        let sender_is_staff = sender
            .as_deref()
            .is_some_and(|s| is_staff(s, staff_domains));
        if (message.is_forward || sender_is_staff)
            && let Some(original) = forwarded_sender(message.body, staff_domains)
        {
            return Some(original);
        }
        if let Some(sender) = sender.filter(|s| !is_staff(s, staff_domains)) {
            return Some(sender);
        }
    }
    ticket_email
        .and_then(email_address)
        .filter(|address| !is_staff(address, staff_domains))
}

/// A French phone number as ten digits (`0612345678`): `+33 6 12 34 56 78`, `0033…` and a
/// bare nine-digit mobile all normalise to the same value. Other numbers keep their digits.
pub fn normalise_phone(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let national = if let Some(rest) = digits.strip_prefix("0033") {
        format!("0{rest}")
    } else if let Some(rest) = digits.strip_prefix("33").filter(|r| r.len() == 9) {
        format!("0{rest}")
    } else if digits.len() == 9 && (digits.starts_with('6') || digits.starts_with('7')) {
        format!("0{digits}")
    } else {
        digits
    };
    (national.len() >= 8 && national.len() <= 15).then_some(national)
}

/// The deal id in a link field value (`Deal name - https://…/Potentials/4150868000001234567`
/// or a bare id): the last run of at least ten digits.
pub fn deal_id_in_link(value: &str) -> Option<String> {
    value
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|run| run.len() >= 10 && run.len() <= 25)
        .map(str::to_owned)
}

/// The value written to the ticket's link field.
pub fn link_value(deal_id: &str, deal_name: Option<&str>, crm_web: &str) -> String {
    let url = format!("{crm_web}/crm/tab/Potentials/{deal_id}");
    match deal_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => format!("{name} - {url}"),
        None => url,
    }
}

/// The best deal among `deals`: the first preference tier with a match, then the latest
/// `Closing_Date` (then `Created_Time`). Returns the deal's index in `deals`, so the caller
/// finds its own record of it (id included) without searching, and the tier's index.
pub fn choose_deal(
    deals: &[Map<String, Value>],
    preferences: &[DealPreference],
) -> Option<(usize, usize)> {
    preferences
        .iter()
        .enumerate()
        .find_map(|(tier, preference)| {
            deals
                .iter()
                .enumerate()
                .filter(|(_, deal)| matches_preference(deal, preference))
                .max_by(|(_, a), (_, b)| recency(a).cmp(&recency(b)))
                .map(|(index, _)| (index, tier))
        })
}

fn matches_preference(deal: &Map<String, Value>, preference: &DealPreference) -> bool {
    let stage_ok = preference.stages.is_empty()
        || deal.get("Stage").is_some_and(|stage| {
            preference
                .stages
                .iter()
                .any(|s| same(stage, &Value::from(s.as_str())))
        });
    let amount_ok = preference.amount.is_none_or(|wanted| {
        deal.get("Amount")
            .and_then(as_number)
            .is_some_and(|amount| (amount - wanted).abs() < 1e-9)
    });
    stage_ok && amount_ok
}

/// ISO dates compare as text, which orders them.
fn recency(deal: &Map<String, Value>) -> (String, String) {
    let text = |key: &str| {
        deal.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (text("Closing_Date"), text("Created_Time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn staff() -> Vec<String> {
        vec!["cab-formations.fr".into()]
    }

    #[test]
    fn addresses_are_read_from_display_forms() {
        assert_eq!(
            email_address("Zoé Martin <Zoe.Martin@Example.fr>").as_deref(),
            Some("zoe.martin@example.fr")
        );
        assert_eq!(email_address("not an address"), None);
    }

    #[test]
    fn a_forward_by_staff_yields_the_original_sender() {
        let message = Message {
            from: Some("Agent <agent@cab-formations.fr>"),
            body: "---------- Forwarded message ---------\nDe : Zoé <zoe@example.fr>\nObjet : dossier",
            is_forward: true,
        };
        assert_eq!(
            customer_email(Some(&message), None, &staff()).as_deref(),
            Some("zoe@example.fr")
        );
    }

    #[test]
    fn staff_addresses_never_count_as_the_customer() {
        let message = Message {
            from: Some("agent@cab-formations.fr"),
            body: "merci",
            is_forward: false,
        };
        assert_eq!(
            customer_email(Some(&message), Some("agent@cab-formations.fr"), &staff()),
            None
        );
        assert_eq!(
            customer_email(Some(&message), Some("client@example.fr"), &staff()).as_deref(),
            Some("client@example.fr")
        );
    }

    #[test]
    fn french_phones_normalise_to_ten_digits() {
        for raw in [
            "+33 6 12 34 56 78",
            "0033612345678",
            "06.12.34.56.78",
            "612345678",
        ] {
            assert_eq!(normalise_phone(raw).as_deref(), Some("0612345678"), "{raw}");
        }
        assert_eq!(normalise_phone("12"), None);
    }

    #[test]
    fn link_values_round_trip_their_deal_id() {
        let value = link_value(
            "4150868000001234567",
            Some("Zoé - Uber 20€"),
            "https://crm.zoho.eu",
        );
        assert_eq!(
            deal_id_in_link(&value).as_deref(),
            Some("4150868000001234567")
        );
        assert_eq!(deal_id_in_link("rien"), None);
    }

    #[test]
    fn preference_tiers_then_recency_choose_the_deal() {
        let deals: Vec<Map<String, Value>> = [
            json!({"id": "1", "Stage": "EN ATTENTE", "Amount": 20, "Closing_Date": "2026-03-01"}),
            json!({"id": "2", "Stage": "GAGNÉ", "Amount": 20, "Closing_Date": "2025-01-01"}),
            json!({"id": "3", "Stage": "GAGNÉ", "Amount": 20, "Closing_Date": "2026-01-01"}),
            json!({"id": "4", "Stage": "GAGNÉ", "Amount": 1500, "Closing_Date": "2026-06-01"}),
        ]
        .into_iter()
        .map(|d| d.as_object().unwrap().clone())
        .collect();
        let preferences: Vec<DealPreference> = serde_yaml::from_str(
            "[{stages: [GAGNÉ], amount: 20}, {stages: [EN ATTENTE], amount: 20}, {stages: [GAGNÉ, EN ATTENTE]}]",
        )
        .unwrap();
        assert_eq!(choose_deal(&deals, &preferences), Some((2, 0)));
        // The index is the chosen deal's own, wherever it sits among the candidates.
        let twins = [deals[3].clone(), deals[2].clone(), deals[0].clone()];
        assert_eq!(choose_deal(&twins, &preferences), Some((1, 0)));
        let lost: Vec<Map<String, Value>> =
            vec![json!({"Stage": "PERDU"}).as_object().unwrap().clone()];
        assert!(choose_deal(&lost, &preferences).is_none());
    }
}
