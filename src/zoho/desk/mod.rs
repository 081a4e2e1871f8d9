//! The Zoho Desk client (`{desk}/api/v1`): tickets, threads, departments, replies, comments.
//!
//! Reads are cheap to repeat; writes go out once (see [`crate::zoho::http`] for the retry
//! rules). Lists are read in pages of Zoho's maximum size and never followed by per-item
//! GETs, because every call costs API credits shared with the whole portal.

mod model;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use model::Page;
pub use model::{Author, Comment, ContentType, Department, Reply, Thread, Ticket};

use super::error::{Api, Call, ZohoError};
use super::http::{self, Core, Request};

/// How long the department list is trusted; departments change rarely.
pub const DEPARTMENT_CACHE_TTL: Duration = Duration::from_secs(600);
/// Zoho's largest page of threads.
const THREAD_PAGE: usize = 200;
/// Zoho's largest page of departments.
const DEPARTMENT_PAGE: usize = 200;
/// Pages read at most from one list: a bound on credits spent by a single run.
const MAX_PAGES: usize = 10;

const GET_TICKET: Call = Call::read(Api::Desk, "get_ticket");
const LIST_THREADS: Call = Call::read(Api::Desk, "list_threads");
const LATEST_THREAD: Call = Call::read(Api::Desk, "latest_thread");
const LIST_DEPARTMENTS: Call = Call::read(Api::Desk, "list_departments");
const LIST_TICKETS: Call = Call::read(Api::Desk, "list_tickets");
/// Zoho's largest page of tickets.
const TICKET_PAGE: usize = 100;
const MOVE_TICKET: Call = Call::write(Api::Desk, "move_ticket");
const UPDATE_TICKET: Call = Call::write(Api::Desk, "update_ticket");
const SEND_REPLY: Call = Call::write(Api::Desk, "send_reply");
const CREATE_DRAFT: Call = Call::write(Api::Desk, "create_draft");
const ADD_COMMENT: Call = Call::write(Api::Desk, "add_comment");

/// The Zoho Desk API of one portal. Clones share the connection pool, the token, the
/// concurrency limit and the department cache.
#[derive(Clone)]
pub struct DeskClient {
    core: Arc<Core>,
    /// Held across the fetch, so concurrent lookups on a cold cache cause one list call.
    departments: Arc<Mutex<Option<CachedDepartments>>>,
}

struct CachedDepartments {
    fetched: Instant,
    list: Vec<Department>,
}

impl std::fmt::Debug for DeskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeskClient")
            .field("base", &self.core.endpoints.desk)
            .field("org_id", &self.core.org_id)
            .finish_non_exhaustive()
    }
}

impl DeskClient {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            departments: Arc::new(Mutex::new(None)),
        }
    }

    /// The ticket `ticket_id`.
    pub async fn get_ticket(&self, ticket_id: &str) -> Result<Ticket, ZohoError> {
        let path = format!("/tickets/{}", http::id(GET_TICKET, ticket_id)?);
        let answer = self
            .core
            .send(Request::new(GET_TICKET, Method::GET, path))
            .await?;
        required(GET_TICKET, answer.parse(GET_TICKET)?)
    }

    /// Every thread of a ticket, newest first, from the list endpoint alone (list answers
    /// may carry only a `summary`, not the full `content`).
    pub async fn list_threads(&self, ticket_id: &str) -> Result<Vec<Thread>, ZohoError> {
        let path = format!("/tickets/{}/threads", http::id(LIST_THREADS, ticket_id)?);
        let mut threads: Vec<Thread> = Vec::new();
        for page in 0..MAX_PAGES {
            let request = Request::new(LIST_THREADS, Method::GET, path.clone())
                .query("from", (page * THREAD_PAGE).to_string())
                .query("limit", THREAD_PAGE.to_string())
                .query("sortBy", "-sendDateTime");
            let batch: Vec<Thread> = self.page(LIST_THREADS, request).await?;
            let full = batch.len() == THREAD_PAGE;
            // A thread added while paging shifts the list by one: skip what was seen.
            for thread in batch {
                if !threads.iter().any(|t| t.id == thread.id) {
                    threads.push(thread);
                }
            }
            if !full {
                return Ok(threads);
            }
        }
        tracing::warn!(
            threads = threads.len(),
            "ticket has more threads than deskhook reads; using the newest"
        );
        Ok(threads)
    }

    /// The tickets of a department, most recently modified first, at most `limit` (one page
    /// per 100): what reconciliation compares with the events it has seen.
    pub async fn list_recent_tickets(
        &self,
        department_id: &str,
        limit: usize,
    ) -> Result<Vec<Ticket>, ZohoError> {
        let department_id = http::id(LIST_TICKETS, department_id)?;
        let mut tickets: Vec<Ticket> = Vec::new();
        for page in 0..limit.div_ceil(TICKET_PAGE).clamp(1, MAX_PAGES) {
            let request = Request::new(LIST_TICKETS, Method::GET, "/tickets".to_owned())
                .query("departmentId", department_id)
                .query("sortBy", "-modifiedTime")
                .query("from", (page * TICKET_PAGE).to_string())
                .query("limit", TICKET_PAGE.to_string());
            let batch: Vec<Ticket> = self.page(LIST_TICKETS, request).await?;
            let full = batch.len() == TICKET_PAGE;
            tickets.extend(batch);
            if !full || tickets.len() >= limit {
                break;
            }
        }
        tickets.truncate(limit);
        Ok(tickets)
    }

    /// The newest thread of a ticket, in one call.
    pub async fn latest_thread(&self, ticket_id: &str) -> Result<Option<Thread>, ZohoError> {
        let path = format!("/tickets/{}/threads", http::id(LATEST_THREAD, ticket_id)?);
        let request = Request::new(LATEST_THREAD, Method::GET, path)
            .query("from", "0")
            .query("limit", "1")
            .query("sortBy", "-sendDateTime");
        Ok(self.page(LATEST_THREAD, request).await?.into_iter().next())
    }

    /// Every department, from a cache refreshed every [`DEPARTMENT_CACHE_TTL`].
    pub async fn departments(&self) -> Result<Vec<Department>, ZohoError> {
        let mut cache = self.departments.lock().await;
        if let Some(cached) = cache.as_ref()
            && cached.fetched.elapsed() < DEPARTMENT_CACHE_TTL
        {
            return Ok(cached.list.clone());
        }
        let list = self.fetch_departments().await?;
        *cache = Some(CachedDepartments {
            fetched: Instant::now(),
            list: list.clone(),
        });
        Ok(list)
    }

    /// The id of the department called `name` (compared as [`crate::names`] says),
    /// preferring an enabled one.
    pub async fn department_id_by_name(&self, name: &str) -> Result<Option<String>, ZohoError> {
        let wanted = crate::names::name_key(name);
        let departments = self.departments().await?;
        let mut matching = departments
            .iter()
            .filter(|d| crate::names::name_key(&d.name) == wanted);
        let first = matching.next();
        let enabled = first
            .into_iter()
            .chain(matching)
            .find(|d| d.is_enabled)
            .or(first);
        Ok(enabled.map(|d| d.id.clone()))
    }

    /// Drops the cached departments, e.g. after Zoho refused a department id.
    pub async fn forget_departments(&self) {
        *self.departments.lock().await = None;
    }

    /// Moves a ticket to another department (`POST /tickets/{id}/move?departmentId=`).
    pub async fn move_ticket(&self, ticket_id: &str, department_id: &str) -> Result<(), ZohoError> {
        let path = format!("/tickets/{}/move", http::id(MOVE_TICKET, ticket_id)?);
        let department_id = http::id(MOVE_TICKET, department_id)?;
        let request =
            Request::new(MOVE_TICKET, Method::POST, path).query("departmentId", department_id);
        self.core.send(request).await?;
        Ok(())
    }

    /// Changes some fields of a ticket (`PATCH /tickets/{id}`), e.g. `{"status": "Closed"}`.
    pub async fn update_ticket(&self, ticket_id: &str, patch: &Value) -> Result<Ticket, ZohoError> {
        if !patch.is_object() {
            return Err(ZohoError::invalid_input(
                UPDATE_TICKET,
                "the patch must be a JSON object",
            ));
        }
        let path = format!("/tickets/{}", http::id(UPDATE_TICKET, ticket_id)?);
        let request = Request::new(UPDATE_TICKET, Method::PATCH, path).json(patch.clone());
        let answer = self.core.send(request).await?;
        required(UPDATE_TICKET, answer.parse(UPDATE_TICKET)?)
    }

    /// Sends an email reply to the customer. Never retried after a timeout or 5xx.
    pub async fn send_reply(&self, ticket_id: &str, reply: &Reply) -> Result<Thread, ZohoError> {
        self.reply(SEND_REPLY, "sendReply", ticket_id, reply).await
    }

    /// Saves a reply as a draft for an agent to review and send.
    pub async fn create_draft(&self, ticket_id: &str, reply: &Reply) -> Result<Thread, ZohoError> {
        self.reply(CREATE_DRAFT, "draftReply", ticket_id, reply)
            .await
    }

    /// Adds a plain-text comment; `is_public: false` makes it an internal note.
    pub async fn add_comment(
        &self,
        ticket_id: &str,
        content: &str,
        is_public: bool,
    ) -> Result<Comment, ZohoError> {
        let path = format!("/tickets/{}/comments", http::id(ADD_COMMENT, ticket_id)?);
        let body = json!({
            "isPublic": is_public,
            "contentType": ContentType::PlainText,
            "content": content,
        });
        let request = Request::new(ADD_COMMENT, Method::POST, path).json(body);
        let answer = self.core.send(request).await?;
        required(ADD_COMMENT, answer.parse(ADD_COMMENT)?)
    }

    async fn reply(
        &self,
        call: Call,
        action: &str,
        ticket_id: &str,
        reply: &Reply,
    ) -> Result<Thread, ZohoError> {
        let path = format!("/tickets/{}/{action}", http::id(call, ticket_id)?);
        let request = Request::new(call, Method::POST, path).json(reply.body());
        let answer = self.core.send(request).await?;
        required(call, answer.parse(call)?)
    }

    async fn fetch_departments(&self) -> Result<Vec<Department>, ZohoError> {
        let mut departments = Vec::new();
        for page in 0..MAX_PAGES {
            let request = Request::new(LIST_DEPARTMENTS, Method::GET, "/departments".into())
                .query("from", (page * DEPARTMENT_PAGE).to_string())
                .query("limit", DEPARTMENT_PAGE.to_string());
            let batch = self.page(LIST_DEPARTMENTS, request).await?;
            let full = batch.len() == DEPARTMENT_PAGE;
            departments.extend(batch);
            if !full {
                break;
            }
        }
        Ok(departments)
    }

    /// One page of a list; HTTP 204 is an empty page.
    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        call: Call,
        request: Request,
    ) -> Result<Vec<T>, ZohoError> {
        let answer = self.core.send(request).await?;
        Ok(answer
            .parse::<Page<T>>(call)?
            .map(|page| page.data)
            .unwrap_or_default())
    }
}

/// The record of an answer that must have one.
fn required<T>(call: Call, record: Option<T>) -> Result<T, ZohoError> {
    record.ok_or_else(|| ZohoError::Decode {
        call,
        detail: "the answer is empty".into(),
    })
}
