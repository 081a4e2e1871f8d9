//! Zoho CRM records. Each keeps the whole record as sent, because layouts differ between
//! accounts, with typed accessors for the fields the automation relies on.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::zoho::de::value_text;

/// Reads a record's fields and its id, which every CRM record has.
fn record<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<(String, Map<String, Value>), D::Error> {
    let fields = Map::<String, Value>::deserialize(deserializer)?;
    let id = fields
        .get("id")
        .and_then(value_text)
        .ok_or_else(|| D::Error::custom("a CRM record without an id"))?;
    Ok((id, fields))
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

/// A CRM deal.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Deal {
    #[serde(skip)]
    id: String,
    fields: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Deal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (id, fields) = record(deserializer)?;
        Ok(Self { id, fields })
    }
}

impl Deal {
    /// The record id, digits as sent.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn deal_name(&self) -> Option<&str> {
        text(&self.fields, "Deal_Name")
    }

    pub fn stage(&self) -> Option<&str> {
        text(&self.fields, "Stage")
    }

    /// `Amount`, whether sent as a number or as a numeric string.
    pub fn amount(&self) -> Option<f64> {
        match self.fields.get("Amount")? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// `Closing_Date`, `YYYY-MM-DD`.
    pub fn closing_date(&self) -> Option<&str> {
        text(&self.fields, "Closing_Date")
    }

    /// `Created_Time`, ISO-8601 with offset.
    pub fn created_time(&self) -> Option<&str> {
        text(&self.fields, "Created_Time")
    }

    /// The id of the contact in the `Contact_Name` lookup.
    pub fn contact_id(&self) -> Option<String> {
        self.fields
            .get("Contact_Name")
            .and_then(|c| c.get("id"))
            .and_then(value_text)
    }

    /// Any field by API name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// The whole record.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

/// A CRM contact.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Contact {
    #[serde(skip)]
    id: String,
    fields: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Contact {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (id, fields) = record(deserializer)?;
        Ok(Self { id, fields })
    }
}

impl Contact {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn email(&self) -> Option<&str> {
        text(&self.fields, "Email")
    }

    pub fn full_name(&self) -> Option<&str> {
        text(&self.fields, "Full_Name")
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

/// One page of a search or list: `{"data": [...], "info": {"more_records": bool}}`.
#[derive(Deserialize)]
pub(crate) struct SearchPage<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    #[serde(default)]
    pub info: Option<PageInfo>,
}

#[derive(Deserialize)]
pub(crate) struct PageInfo {
    #[serde(default)]
    pub more_records: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn deals_keep_every_field_and_read_amounts_both_ways() {
        let deal: Deal = serde_json::from_value(json!({
            "id": 4150868000001234567_u64,
            "Deal_Name": "Renewal",
            "Stage": "Qualification",
            "Amount": "1200.50",
            "Closing_Date": "2025-03-01",
            "Contact_Name": {"id": "4150868000000000001", "name": "A. Customer"},
            "Custom_Field": [1, 2]
        }))
        .unwrap();
        assert_eq!(deal.id(), "4150868000001234567");
        assert_eq!(deal.amount(), Some(1200.5));
        assert_eq!(deal.contact_id().as_deref(), Some("4150868000000000001"));
        assert_eq!(deal.field("Custom_Field"), Some(&json!([1, 2])));
        let numeric: Deal = serde_json::from_value(json!({"id": "1", "Amount": 99})).unwrap();
        assert_eq!(numeric.amount(), Some(99.0));
        assert_eq!(
            serde_json::to_value(&numeric).unwrap(),
            json!({"id": "1", "Amount": 99})
        );
    }

    #[test]
    fn records_without_an_id_are_refused() {
        assert!(serde_json::from_value::<Deal>(json!({"Deal_Name": "x"})).is_err());
    }
}
