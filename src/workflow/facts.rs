//! Facts: everything a run read before deciding, and the reads themselves.
//!
//! A decision is a pure function of its facts and the settings (see [`super::plan`]), so the
//! facts are kept with each decision report: replaying them under other settings shows what
//! an edit would change without asking Zoho again. What is kept is bounded
//! ([`Facts::bounded`]); the run itself decides on the full text.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::linking::{self, LinkStrategy, Message};
use super::text;
use crate::config::Settings;
use crate::zoho::{Thread, Ticket, ZohoClients, ZohoError};

/// Contacts whose deals are read at most when several share the customer's email.
const MAX_CONTACTS: usize = 3;
/// Characters of the customer's message kept with a report.
pub const KEPT_MESSAGE_CHARS: usize = 8_000;
/// Characters of the subject kept with a report.
pub const KEPT_SUBJECT_CHARS: usize = 1_000;
/// Deal candidates kept with a report.
pub const KEPT_CANDIDATES: usize = 10;
/// Serialized size of one kept deal's fields; a larger deal keeps only its short fields, as
/// many as fit.
pub const KEPT_DEAL_BYTES: usize = 4 * 1024;
/// Longest single deal field value kept when a deal is over [`KEPT_DEAL_BYTES`].
const KEPT_FIELD_BYTES: usize = 512;

/// What a run knows about a ticket once read: its fields, the customer's latest message and
/// the CRM deals that could be its own.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    pub ticket_id: String,
    pub event_type: String,
    pub subject: String,
    /// The latest customer message, quoted history removed.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The current value of the ticket's link field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    /// This job moved the ticket in an earlier attempt, so its current department, even one
    /// outside `spec.departments`, is the job's own doing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moved_by_this_job: bool,
    /// The deals looked up; `None` when the run stopped before looking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deals: Option<DealLookup>,
    /// True when the kept copy was cut to its bounds: a replay may then differ from the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The deals that could belong to the ticket, and how they were found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DealLookup {
    pub strategy: LinkStrategy,
    /// With [`LinkStrategy::TicketField`], the one deal the ticket names; otherwise every
    /// candidate, of which the settings' preferences choose one.
    pub candidates: Vec<CrmDeal>,
}

/// A CRM deal as read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CrmDeal {
    pub id: String,
    pub fields: Map<String, Value>,
}

impl Facts {
    /// A copy within the bounds kept with a report.
    pub fn bounded(&self) -> Facts {
        let mut kept = self.clone();
        let mut cut = false;
        cut |= truncate(&mut kept.subject, KEPT_SUBJECT_CHARS);
        cut |= truncate(&mut kept.message, KEPT_MESSAGE_CHARS);
        if let Some(deals) = &mut kept.deals {
            if deals.candidates.len() > KEPT_CANDIDATES {
                deals.candidates.truncate(KEPT_CANDIDATES);
                cut = true;
            }
            for deal in &mut deals.candidates {
                cut |= shrink(&mut deal.fields);
            }
        }
        kept.truncated |= cut;
        kept
    }
}

fn truncate(text: &mut String, max_chars: usize) -> bool {
    // A text of no more bytes than the limit has no more characters either: most texts, kept
    // without walking them.
    if text.len() <= max_chars {
        return false;
    }
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => {
            text.truncate(end);
            true
        }
        None => false,
    }
}

/// Cuts a deal too large to keep whole down to its short fields, as many as fit: conditions
/// read short fields (stages, amounts, statuses), so they are the ones worth keeping.
fn shrink(fields: &mut Map<String, Value>) -> bool {
    let size = |value: &Value| serde_json::to_vec(value).map_or(0, |bytes| bytes.len());
    let total: usize = fields.iter().map(|(k, v)| k.len() + size(v) + 4).sum();
    if total <= KEPT_DEAL_BYTES {
        return false;
    }
    let mut budget = KEPT_DEAL_BYTES;
    fields.retain(|key, value| {
        let cost = key.len() + size(value) + 4;
        let keep = size(value) <= KEPT_FIELD_BYTES && cost <= budget;
        if keep {
            budget -= cost;
        }
        keep
    });
    true
}

/// Reads the ticket, its department and its latest customer message.
pub(super) async fn read_ticket(
    zoho: &ZohoClients,
    ticket_id: &str,
    event_type: &str,
    settings: &Settings,
) -> Result<Facts, ZohoError> {
    let ticket: Ticket = zoho.desk.get_ticket(ticket_id).await?;
    let threads = zoho.desk.list_threads(ticket_id).await?;
    let department = match &ticket.department_id {
        Some(id) => zoho
            .desk
            .departments()
            .await?
            .into_iter()
            .find(|d| &d.id == id)
            .map(|d| d.name),
        None => None,
    };
    let latest = latest_inbound(&threads);
    let body = latest
        .map(|t| t.content.as_deref().or(t.summary.as_deref()).unwrap_or(""))
        .map(text::html_to_text)
        .unwrap_or_else(|| {
            ticket
                .description
                .as_deref()
                .map(text::html_to_text)
                .unwrap_or_default()
        });
    let staff = &settings.spec.linking.staff_domains;
    let message = latest.map(|t| Message {
        from: t
            .from_email_address
            .as_deref()
            .or(t.author.as_ref().and_then(|a| a.email.as_deref())),
        body: &body,
        is_forward: t.is_forward.unwrap_or(false),
    });
    let customer_email = linking::customer_email(message.as_ref(), ticket.email.as_deref(), staff);
    let customer_name = latest
        .and_then(|t| t.author.as_ref())
        .and_then(|a| a.name.clone());
    Ok(Facts {
        ticket_id: ticket_id.to_owned(),
        event_type: event_type.to_owned(),
        subject: ticket.subject.clone().unwrap_or_default(),
        message: text::strip_quoted(&body),
        department_id: ticket.department_id.clone(),
        department,
        status: ticket.status.clone(),
        customer_email,
        customer_name,
        phone: ticket.phone.clone(),
        link_field: ticket
            .cf
            .get(&settings.spec.linking.ticket_field)
            .and_then(Value::as_str)
            .map(str::to_owned),
        ticket_number: ticket.ticket_number.clone(),
        web_url: ticket.web_url.clone(),
        ..Facts::default()
    })
}

/// The most recent thread the customer wrote (ISO timestamps order as text).
fn latest_inbound(threads: &[Thread]) -> Option<&Thread> {
    threads
        .iter()
        .filter(|t| t.is_incoming() && t.status.as_deref() != Some("DRAFT"))
        .max_by(|a, b| a.created_time.cmp(&b.created_time))
}

/// The deals behind the ticket: the one its link field names, else the deals of the
/// customer's email, else those of the phone. Choosing among them is the plan's.
pub(super) async fn look_up_deals(
    zoho: &ZohoClients,
    facts: &Facts,
) -> Result<DealLookup, ZohoError> {
    if let Some(id) = facts
        .link_field
        .as_deref()
        .and_then(linking::deal_id_in_link)
        && let Some(deal) = zoho.crm.get_deal(&id).await?
    {
        return Ok(DealLookup {
            strategy: LinkStrategy::TicketField,
            candidates: vec![CrmDeal {
                id: deal.id().to_owned(),
                fields: deal.fields().clone(),
            }],
        });
    }
    let mut candidates = Vec::new();
    let mut strategy = LinkStrategy::None;
    if let Some(email) = &facts.customer_email {
        for contact in zoho
            .crm
            .search_contacts_by_email(email)
            .await?
            .iter()
            .take(MAX_CONTACTS)
        {
            candidates.extend(zoho.crm.deals_of_contact(contact.id()).await?);
        }
        if !candidates.is_empty() {
            strategy = LinkStrategy::Email;
        }
    }
    if candidates.is_empty()
        && let Some(phone) = facts.phone.as_deref().and_then(linking::normalise_phone)
    {
        candidates = zoho.crm.search_deals_by_phone(&phone).await?;
        if !candidates.is_empty() {
            strategy = LinkStrategy::Phone;
        }
    }
    Ok(DealLookup {
        strategy,
        candidates: candidates
            .iter()
            .map(|deal| CrmDeal {
                id: deal.id().to_owned(),
                fields: deal.fields().clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_kept_copy_is_bounded_and_says_so() {
        let big_deal = CrmDeal {
            id: "1".into(),
            fields: json!({"Stage": "GAGNÉ", "Description": "x".repeat(KEPT_DEAL_BYTES)})
                .as_object()
                .unwrap()
                .clone(),
        };
        let facts = Facts {
            subject: "é".repeat(KEPT_SUBJECT_CHARS + 5),
            message: "facture ".repeat(KEPT_MESSAGE_CHARS),
            deals: Some(DealLookup {
                strategy: LinkStrategy::Email,
                candidates: vec![big_deal; KEPT_CANDIDATES + 3],
            }),
            ..Facts::default()
        };
        let kept = facts.bounded();
        assert!(kept.truncated);
        assert_eq!(kept.subject.chars().count(), KEPT_SUBJECT_CHARS);
        assert_eq!(kept.message.chars().count(), KEPT_MESSAGE_CHARS);
        let deals = kept.deals.unwrap().candidates;
        assert_eq!(deals.len(), KEPT_CANDIDATES);
        assert_eq!(deals[0].fields.get("Stage"), Some(&json!("GAGNÉ")));
        assert!(!deals[0].fields.contains_key("Description"));
    }

    #[test]
    fn a_deal_of_many_short_fields_is_cut_to_its_bound() {
        let mut fields = Map::new();
        for n in 0..1_000 {
            fields.insert(format!("Field_{n:04}"), json!("short value"));
        }
        assert!(shrink(&mut fields));
        assert!(serde_json::to_vec(&fields).unwrap().len() <= KEPT_DEAL_BYTES);
        assert!(fields.len() > 50, "short fields are kept while they fit");
    }

    #[test]
    fn small_facts_are_kept_whole() {
        let facts = Facts {
            subject: "Ma facture".into(),
            message: "Bonjour".into(),
            ..Facts::default()
        };
        assert_eq!(facts.bounded(), facts);
    }
}
