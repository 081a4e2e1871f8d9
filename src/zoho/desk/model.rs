//! Zoho Desk records as deskhook reads and writes them. Only the fields the automation uses
//! are typed; unknown fields are ignored, so new Zoho fields never break a run.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::zoho::de;

/// A ticket (`GET /api/v1/tickets/{id}`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    #[serde(deserialize_with = "de::id")]
    pub id: String,
    #[serde(default, deserialize_with = "de::opt_text")]
    pub ticket_number: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Display name of the status; may be a custom status.
    #[serde(default)]
    pub status: Option<String>,
    /// The stable bucket of the status: `Open`, `On Hold` or `Closed`.
    #[serde(default)]
    pub status_type: Option<String>,
    #[serde(default, deserialize_with = "de::opt_text")]
    pub department_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_text")]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
    /// Custom fields by API name (`cf_deal_id`).
    #[serde(default, deserialize_with = "de::object")]
    pub cf: Map<String, Value>,
    /// ISO-8601, or epoch milliseconds in decimal.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub modified_time: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
}

/// A conversation on a ticket (`GET /api/v1/tickets/{id}/threads`). In lists Zoho often
/// sends only `summary`; `content` is then absent.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Thread {
    #[serde(deserialize_with = "de::id")]
    pub id: String,
    /// `in` (from the customer) or `out` (from an agent or deskhook).
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub from_email_address: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    /// `text/html` or `text/plain`.
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default, deserialize_with = "de::opt_text")]
    pub created_time: Option<String>,
    #[serde(default)]
    pub author: Option<Author>,
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub is_forward: Option<bool>,
}

impl Thread {
    /// Whether the customer wrote it.
    pub fn is_incoming(&self) -> bool {
        self.direction.as_deref() == Some("in")
    }
}

/// Who wrote a thread.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Author {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// `AGENT`, `END_USER`, …
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// A Desk department.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Department {
    #[serde(deserialize_with = "de::id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Absent means enabled.
    #[serde(default = "enabled", deserialize_with = "enabled_flag")]
    pub is_enabled: bool,
}

fn enabled() -> bool {
    true
}

fn enabled_flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(de::opt_bool(deserializer)?.unwrap_or(true))
}

/// An internal note or public comment on a ticket.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    #[serde(deserialize_with = "de::id")]
    pub id: String,
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub is_public: Option<bool>,
    #[serde(default, deserialize_with = "de::opt_text")]
    pub commented_time: Option<String>,
}

/// The format of a reply or comment.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum ContentType {
    #[default]
    #[serde(rename = "plainText")]
    PlainText,
    #[serde(rename = "html")]
    Html,
}

/// An email reply (or draft) on a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Must be a from address configured in the help desk portal.
    pub from_email_address: String,
    pub to: String,
    pub content: String,
    pub content_type: ContentType,
}

impl Reply {
    /// The body of `sendReply` and `draftReply` on the email channel.
    pub(crate) fn body(&self) -> Value {
        serde_json::json!({
            "channel": "EMAIL",
            "fromEmailAddress": self.from_email_address,
            "to": self.to,
            "content": self.content,
            "contentType": self.content_type,
        })
    }
}

/// One page of a Desk list.
#[derive(Deserialize)]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tickets_read_numeric_ids_and_null_custom_fields() {
        let ticket: Ticket = serde_json::from_value(json!({
            "id": 1892000000042034567_u64,
            "ticketNumber": 101,
            "departmentId": "1892000000006907",
            "cf": null,
            "modifiedTime": 1466504175000_u64,
            "unknownField": {"x": 1}
        }))
        .unwrap();
        assert_eq!(ticket.id, "1892000000042034567");
        assert_eq!(ticket.ticket_number.as_deref(), Some("101"));
        assert_eq!(ticket.department_id.as_deref(), Some("1892000000006907"));
        assert!(ticket.cf.is_empty());
        assert_eq!(ticket.modified_time.as_deref(), Some("1466504175000"));
    }

    #[test]
    fn replies_go_out_on_the_email_channel() {
        let reply = Reply {
            from_email_address: "support@example.com".into(),
            to: "customer@example.org".into(),
            content: "Hello".into(),
            content_type: ContentType::PlainText,
        };
        assert_eq!(
            reply.body(),
            json!({
                "channel": "EMAIL",
                "fromEmailAddress": "support@example.com",
                "to": "customer@example.org",
                "content": "Hello",
                "contentType": "plainText"
            })
        );
    }

    #[test]
    fn departments_are_enabled_unless_said_otherwise() {
        let d: Department = serde_json::from_value(json!({"id": 7, "name": "Billing"})).unwrap();
        assert!(d.is_enabled);
        let d: Department =
            serde_json::from_value(json!({"id": "7", "name": "Old", "isEnabled": false})).unwrap();
        assert!(!d.is_enabled);
    }
}
