//! The Zoho CRM client (`{api_domain}/crm/v8`): deal and contact searches, deal updates and
//! notes.
//!
//! CRM answers "nothing found" with HTTP 204 and an empty body, and reports refused records
//! of a write inside a 200 or 202 answer (`data[i].status`), so both are handled here rather
//! than by the status code.

mod criteria;
mod model;

use std::sync::Arc;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

pub use criteria::{
    Condition, Criteria, MAX_CONDITIONS, Operator, escape as escape_criteria_value,
};
use model::SearchPage;
pub use model::{Contact, Deal};

use super::de::value_text;
use super::error::{Api, Call, ErrorBody, ZohoError};
use super::http::{self, Core, Request};

/// Records per search page: CRM's maximum.
const PER_PAGE: usize = 200;
/// Pages read at most from one search: a bound on credits spent by a single run.
const MAX_PAGES: usize = 5;

const SEARCH_DEALS: Call = Call::read(Api::Crm, "search_deals");
const SEARCH_CONTACTS: Call = Call::read(Api::Crm, "search_contacts");
const GET_DEAL: Call = Call::read(Api::Crm, "get_deal");
const UPDATE_DEAL: Call = Call::write(Api::Crm, "update_deal");
const ADD_NOTE: Call = Call::write(Api::Crm, "add_note");

/// The Zoho CRM API of the account the refresh token belongs to.
#[derive(Clone)]
pub struct CrmClient {
    core: Arc<Core>,
}

impl std::fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("base", &self.core.endpoints.crm_override)
            .finish_non_exhaustive()
    }
}

impl CrmClient {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Deals matching `criteria`; empty when none match.
    pub async fn search_deals(&self, criteria: &Criteria) -> Result<Vec<Deal>, ZohoError> {
        let criteria = criteria
            .render()
            .map_err(|reason| ZohoError::invalid_input(SEARCH_DEALS, reason))?;
        self.search(SEARCH_DEALS, "Deals", ("criteria", criteria))
            .await
    }

    /// Deals with `email` in any of their email fields.
    pub async fn search_deals_by_email(&self, email: &str) -> Result<Vec<Deal>, ZohoError> {
        let email = non_empty(SEARCH_DEALS, email)?;
        self.search(SEARCH_DEALS, "Deals", ("email", email)).await
    }

    /// Deals with `phone` in any of their phone fields.
    pub async fn search_deals_by_phone(&self, phone: &str) -> Result<Vec<Deal>, ZohoError> {
        let phone = non_empty(SEARCH_DEALS, phone)?;
        self.search(SEARCH_DEALS, "Deals", ("phone", phone)).await
    }

    /// Contacts with `email` in any of their email fields.
    pub async fn search_contacts_by_email(&self, email: &str) -> Result<Vec<Contact>, ZohoError> {
        let email = non_empty(SEARCH_CONTACTS, email)?;
        self.search(SEARCH_CONTACTS, "Contacts", ("email", email))
            .await
    }

    /// Deals whose `Contact_Name` lookup is the contact `contact_id`.
    pub async fn deals_of_contact(&self, contact_id: &str) -> Result<Vec<Deal>, ZohoError> {
        let contact_id = http::id(SEARCH_DEALS, contact_id)?;
        self.search_deals(&Criteria::equals("Contact_Name", contact_id))
            .await
    }

    /// The deal `deal_id`, or `None` when CRM answers 204 (no such record).
    pub async fn get_deal(&self, deal_id: &str) -> Result<Option<Deal>, ZohoError> {
        let path = format!("/Deals/{}", http::id(GET_DEAL, deal_id)?);
        let answer = self
            .core
            .send(Request::new(GET_DEAL, Method::GET, path))
            .await?;
        let page: Option<SearchPage<Deal>> = answer.parse(GET_DEAL)?;
        Ok(page.and_then(|p| p.data.into_iter().next()))
    }

    /// Sets fields of a deal (`PUT /Deals/{id}`). A record refused inside a 2xx answer is an
    /// error.
    pub async fn update_deal(
        &self,
        deal_id: &str,
        fields: Map<String, Value>,
    ) -> Result<(), ZohoError> {
        let path = format!("/Deals/{}", http::id(UPDATE_DEAL, deal_id)?);
        let request =
            Request::new(UPDATE_DEAL, Method::PUT, path).json(json!({ "data": [fields] }));
        let answer = self.core.send(request).await?;
        record_results(UPDATE_DEAL, answer.body)?;
        Ok(())
    }

    /// Adds a note to a deal and returns the note's id.
    pub async fn add_note(
        &self,
        deal_id: &str,
        title: &str,
        content: &str,
    ) -> Result<String, ZohoError> {
        let path = format!("/Deals/{}/Notes", http::id(ADD_NOTE, deal_id)?);
        let body = json!({ "data": [{ "Note_Title": title, "Note_Content": content }] });
        let request = Request::new(ADD_NOTE, Method::POST, path).json(body);
        let answer = self.core.send(request).await?;
        let ids = record_results(ADD_NOTE, answer.body)?;
        ids.into_iter()
            .next()
            .flatten()
            .ok_or_else(|| ZohoError::Decode {
                call: ADD_NOTE,
                detail: "the answer has no note id".into(),
            })
    }

    /// All pages of a search, up to [`MAX_PAGES`]; HTTP 204 means no match.
    async fn search<T: DeserializeOwned>(
        &self,
        call: Call,
        module: &str,
        (key, value): (&'static str, String),
    ) -> Result<Vec<T>, ZohoError> {
        let path = format!("/{module}/search");
        let mut records = Vec::new();
        for page in 1..=MAX_PAGES {
            let request = Request::new(call, Method::GET, path.clone())
                .query(key, value.clone())
                .query("page", page.to_string())
                .query("per_page", PER_PAGE.to_string());
            let answer = self.core.send(request).await?;
            let Some(batch) = answer.parse::<SearchPage<T>>(call)? else {
                break;
            };
            let more = batch.info.is_some_and(|i| i.more_records) && !batch.data.is_empty();
            records.extend(batch.data);
            if !more {
                return Ok(records);
            }
        }
        Ok(records)
    }
}

fn non_empty(call: Call, value: &str) -> Result<String, ZohoError> {
    let value = value.trim();
    if value.is_empty() {
        Err(ZohoError::invalid_input(call, "the search value is empty"))
    } else {
        Ok(value.to_owned())
    }
}

/// Checks every `data[i].status` of a write answer and returns each record's
/// `details.id`.
fn record_results(call: Call, body: Option<Value>) -> Result<Vec<Option<String>>, ZohoError> {
    let records = body
        .as_ref()
        .and_then(|b| b.get("data"))
        .and_then(Value::as_array)
        .filter(|records| !records.is_empty())
        .ok_or_else(|| ZohoError::Decode {
            call,
            detail: "the answer has no data records".into(),
        })?;
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            if record.get("status").and_then(Value::as_str) == Some("success") {
                Ok(record
                    .get("details")
                    .and_then(|d| d.get("id"))
                    .and_then(value_text))
            } else {
                let parsed = ErrorBody::parse(record.to_string().as_bytes());
                Err(ZohoError::Record {
                    call,
                    index,
                    code: parsed.code,
                    fields: parsed.fields,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_record_in_a_success_answer_is_an_error() {
        let body = json!({"data": [
            {"code": "SUCCESS", "details": {"id": "1"}, "status": "success"},
            {"code": "INVALID_DATA", "details": {"api_name": "Stage"}, "message": "invalid", "status": "error"}
        ]});
        let error = record_results(UPDATE_DEAL, Some(body)).unwrap_err();
        assert!(
            matches!(&error, ZohoError::Record { index: 1, code, fields, .. } if code == "INVALID_DATA" && fields == &["Stage"])
        );
        assert_eq!(error.kind(), "record_rejected");
    }

    #[test]
    fn successful_records_give_their_ids() {
        let body = json!({"data": [{"code": "SUCCESS", "details": {"id": 4150868000001234567_u64}, "status": "success"}]});
        assert_eq!(
            record_results(ADD_NOTE, Some(body)).unwrap(),
            [Some("4150868000001234567".to_owned())]
        );
        assert!(record_results(ADD_NOTE, None).is_err());
        assert!(record_results(ADD_NOTE, Some(json!({"data": []}))).is_err());
    }
}
