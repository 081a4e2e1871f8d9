//! The Zoho Desk and CRM clients against the fake Zoho over real HTTP: tokens and their
//! budget, retries and what is never retried, Zoho's 204 and in-body errors, escaping,
//! caching and exact ids.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deskhook::metrics::Metrics;
use deskhook::zoho::{
    ClientOptions, Clock, ContentType, Criteria, OAuthCredentials, Reply, TokenSource, ZohoClients,
    ZohoError, ZohoMetrics,
};
use serde_json::{Map, Value, json};
use support::fake_zoho::{
    CLIENT_ID, CLIENT_SECRET, FakeZoho, Fault, ORG_ID, REFRESH_TOKEN, TokenAnswer,
};

/// Longest any single step of a test may take.
const WAIT: Duration = Duration::from_secs(15);

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("the step finished in time")
}

const TICKET: &str = "1892000000042034";

async fn fake_with_a_ticket() -> (FakeZoho, Metrics, ZohoClients) {
    let fake = FakeZoho::start().await;
    fake.add_ticket(json!({
        "id": TICKET,
        "ticketNumber": "101",
        "subject": "Refund please",
        "status": "Open",
        "statusType": "Open",
        "departmentId": "1892000000006907",
        "contactId": "1892000000042001",
        "email": "customer@example.org",
        "cf": {"cf_deal_id": null},
        "modifiedTime": "2025-01-01T10:00:00.000Z",
        "channel": "Email"
    }));
    fake.add_department("1892000000006907", "Support");
    fake.add_department("1892000000006911", "Billing");
    let metrics = Metrics::new();
    let clients = fake.clients(&metrics);
    (fake, metrics, clients)
}

fn statuses(calls: &[support::fake_zoho::RecordedCall]) -> Vec<u16> {
    calls.iter().map(|c| c.status).collect()
}

fn reply() -> Reply {
    Reply {
        from_email_address: "support@example.com".into(),
        to: "customer@example.org".into(),
        content: "We have refunded your order.".into(),
        content_type: ContentType::PlainText,
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<Mutex<Instant>>);

impl TestClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    fn clock(&self) -> Clock {
        let now = self.0.clone();
        Arc::new(move || *now.lock().unwrap())
    }
}

#[tokio::test]
async fn a_search_without_matches_is_answered_204_and_gives_no_deals() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;

    let deals = within(clients.crm.search_deals_by_email("nobody@example.org"))
        .await
        .unwrap();

    assert!(deals.is_empty());
    assert_eq!(statuses(&fake.calls_to("search_deals")), [204]);
}

#[tokio::test]
async fn token_throttling_with_status_200_is_an_error_and_is_counted() {
    let (fake, metrics, clients) = fake_with_a_ticket().await;
    fake.answer_token_requests_with(TokenAnswer::AccessDenied);

    let error = within(clients.desk.get_ticket(TICKET)).await.unwrap_err();

    assert_eq!(error.kind(), "token_throttled");
    assert!(error.retryable());
    assert_eq!(fake.token_refreshes(), 1);
    assert!(
        fake.calls_to("get_ticket").is_empty(),
        "no call without a token"
    );
    assert!(
        metrics
            .render()
            .contains(r#"deskhook_zoho_token_refreshes_total{result="throttled"} 1"#)
    );
}

#[tokio::test]
async fn a_revoked_refresh_token_is_rejected_and_not_retryable() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.answer_token_requests_with(TokenAnswer::InvalidCode);

    let error = within(clients.desk.get_ticket(TICKET)).await.unwrap_err();

    assert_eq!(error.kind(), "token_rejected");
    assert_eq!(error.code(), Some("invalid_code"));
    assert!(!error.retryable());
}

#[tokio::test]
async fn a_failed_refresh_pauses_further_attempts() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.answer_token_requests_with(TokenAnswer::AccessDenied);
    within(clients.desk.get_ticket(TICKET)).await.unwrap_err();
    fake.answer_token_requests_with(TokenAnswer::Issue);

    let error = within(clients.desk.get_ticket(TICKET)).await.unwrap_err();

    assert_eq!(error.kind(), "token_refresh_limited");
    assert_eq!(
        fake.token_refreshes(),
        1,
        "the pause kept deskhook from asking"
    );
}

#[tokio::test]
async fn rate_limited_reads_without_retry_after_are_retried_until_they_succeed() {
    let (fake, metrics, clients) = fake_with_a_ticket().await;
    fake.fail_next("get_ticket", 2, Fault::TooManyRequests);

    let ticket = within(clients.desk.get_ticket(TICKET)).await.unwrap();

    assert_eq!(ticket.id, TICKET);
    assert_eq!(statuses(&fake.calls_to("get_ticket")), [429, 429, 200]);
    assert!(
        metrics
            .render()
            .contains(r#"deskhook_zoho_requests_total{api="desk",op="get_ticket",status="429"} 2"#)
    );
}

#[tokio::test]
async fn a_long_retry_after_fails_the_call_at_once() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.fail_next("get_ticket", 1, Fault::RetryAfter(3600));

    let error = within(clients.desk.get_ticket(TICKET)).await.unwrap_err();

    assert!(matches!(
        error,
        ZohoError::RateLimited { retry_after: Some(wait), .. } if wait == Duration::from_secs(3600)
    ));
    assert_eq!(fake.calls_to("get_ticket").len(), 1);
}

#[tokio::test]
async fn a_post_answered_with_500_is_not_sent_again() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.fail_next("add_comment", 1, Fault::ServerError);

    let error = within(clients.desk.add_comment(TICKET, "Moved to Billing", false))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "server_error");
    assert!(error.may_have_written());
    assert_eq!(fake.calls_to("add_comment").len(), 1);
    assert_eq!(fake.writes().len(), 1);
}

#[tokio::test]
async fn a_post_refused_with_429_is_sent_again_because_it_was_not_processed() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.fail_next("send_reply", 1, Fault::TooManyRequests);

    let thread = within(clients.desk.send_reply(TICKET, &reply()))
        .await
        .unwrap();

    assert_eq!(thread.direction.as_deref(), Some("out"));
    assert_eq!(statuses(&fake.calls_to("send_reply")), [429, 200]);
    assert_eq!(fake.threads(TICKET).len(), 1, "exactly one reply went out");
}

#[tokio::test]
async fn a_put_answered_with_500_is_retried() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.add_deal(json!({"id": "4150868000001234567", "Stage": "Qualification"}));
    fake.fail_next("update_deal", 1, Fault::ServerError);

    let mut fields = Map::new();
    fields.insert("Stage".into(), json!("Closed Won"));
    within(clients.crm.update_deal("4150868000001234567", fields))
        .await
        .unwrap();

    assert_eq!(statuses(&fake.calls_to("update_deal")), [500, 200]);
    assert_eq!(
        fake.deal("4150868000001234567").unwrap()["Stage"],
        "Closed Won"
    );
}

#[tokio::test]
async fn an_expired_token_causes_one_refresh_and_one_retry() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    within(clients.desk.get_ticket(TICKET)).await.unwrap();
    fake.expire_tokens();

    within(clients.desk.get_ticket(TICKET)).await.unwrap();

    assert_eq!(fake.token_refreshes(), 2);
    assert_eq!(statuses(&fake.calls_to("get_ticket")), [200, 401, 200]);
}

#[tokio::test]
async fn an_expired_token_on_crm_is_refreshed_the_same_way() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.add_deal(json!({"id": "4150868000001234567", "Deal_Name": "Renewal"}));
    within(clients.crm.get_deal("4150868000001234567"))
        .await
        .unwrap();
    fake.expire_tokens();

    let deal = within(clients.crm.get_deal("4150868000001234567"))
        .await
        .unwrap();

    assert_eq!(deal.unwrap().deal_name(), Some("Renewal"));
    assert_eq!(statuses(&fake.calls_to("get_deal")), [200, 401, 200]);
    assert_eq!(fake.token_refreshes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_cause_exactly_one_token_refresh() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.set_token_latency(Duration::from_millis(100));

    let run_fifty = || {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let desk = clients.desk.clone();
            calls.spawn(async move { desk.get_ticket(TICKET).await });
        }
        calls.join_all()
    };
    for result in within(run_fifty()).await {
        result.unwrap();
    }
    assert_eq!(fake.token_refreshes(), 1);

    fake.expire_tokens();
    for result in within(run_fifty()).await {
        result.unwrap();
    }
    assert_eq!(
        fake.token_refreshes(),
        2,
        "fifty 401s for the same token cause one refresh"
    );
}

#[tokio::test]
async fn a_rotated_credential_file_is_used_without_a_restart() {
    let fake = FakeZoho::start().await;
    let dir = std::env::temp_dir().join(format!("deskhook-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, value: &str| std::fs::write(dir.join(name), value).unwrap();
    write("zoho-client-id", CLIENT_ID);
    write("zoho-client-secret", CLIENT_SECRET);
    write("zoho-refresh-token", "1000.revoked-refresh-token");
    let path = |name: &str| Some(dir.join(name).display().to_string());
    let credentials = OAuthCredentials::from_env(|variable| match variable {
        "ZOHO_CLIENT_ID_FILE" => path("zoho-client-id"),
        "ZOHO_CLIENT_SECRET_FILE" => path("zoho-client-secret"),
        "ZOHO_REFRESH_TOKEN_FILE" => path("zoho-refresh-token"),
        _ => None,
    })
    .unwrap()
    .unwrap();
    let clock = TestClock::new();
    let tokens = TokenSource::with_clock(
        deskhook::server::http_client().unwrap(),
        fake.url(),
        credentials,
        Duration::from_secs(5),
        ZohoMetrics::unregistered(),
        clock.clock(),
    );

    let refused = within(tokens.access_token()).await.unwrap_err();
    assert_eq!(refused.kind(), "token_rejected");

    // The Secret is rotated: the kubelet rewrites the mounted file; the process keeps running.
    write("zoho-refresh-token", REFRESH_TOKEN);
    // Past the pause after a failed refresh.
    clock.advance(Duration::from_secs(60));
    let token = within(tokens.access_token()).await.unwrap();

    assert!(!token.secret().expose().is_empty());
    assert_eq!(fake.token_refreshes(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn no_more_than_ten_refreshes_happen_in_ten_minutes() {
    let fake = FakeZoho::start().await;
    let clock = TestClock::new();
    let tokens = TokenSource::with_clock(
        deskhook::server::http_client().unwrap(),
        fake.url(),
        FakeZoho::credentials(),
        Duration::from_secs(5),
        ZohoMetrics::unregistered(),
        clock.clock(),
    );

    for _ in 0..10 {
        let token = within(tokens.access_token()).await.unwrap();
        within(tokens.invalidate(&token)).await;
    }
    let error = within(tokens.access_token()).await.unwrap_err();
    assert_eq!(error.kind(), "token_refresh_limited");
    assert_eq!(fake.token_refreshes(), 10);

    clock.advance(Duration::from_secs(5 * 60));
    assert!(within(tokens.access_token()).await.is_err());
    assert_eq!(fake.token_refreshes(), 10);

    clock.advance(Duration::from_secs(5 * 60));
    within(tokens.access_token()).await.unwrap();
    assert_eq!(fake.token_refreshes(), 11);
}

#[tokio::test]
async fn a_token_is_reused_until_five_minutes_before_it_expires() {
    let fake = FakeZoho::start().await;
    let clock = TestClock::new();
    let tokens = TokenSource::with_clock(
        deskhook::server::http_client().unwrap(),
        fake.url(),
        FakeZoho::credentials(),
        Duration::from_secs(5),
        ZohoMetrics::unregistered(),
        clock.clock(),
    );

    within(tokens.access_token()).await.unwrap();
    clock.advance(Duration::from_secs(54 * 60));
    within(tokens.access_token()).await.unwrap();
    assert_eq!(fake.token_refreshes(), 1);

    clock.advance(Duration::from_secs(2 * 60));
    within(tokens.access_token()).await.unwrap();
    assert_eq!(fake.token_refreshes(), 2);
}

#[tokio::test]
async fn tokens_are_requested_with_a_form_body_never_in_the_url() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;

    within(clients.desk.get_ticket(TICKET)).await.unwrap();

    let refresh = &fake.calls_to("refresh_token")[0];
    assert!(refresh.query.is_empty());
    assert_eq!(refresh.form_value("grant_type"), Some("refresh_token"));
    assert_eq!(refresh.form_value("client_secret"), Some(CLIENT_SECRET));
    assert_eq!(refresh.form_value("refresh_token"), Some(REFRESH_TOKEN));
    assert!(
        refresh
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    );
}

#[tokio::test]
async fn a_refused_record_in_a_successful_deal_update_is_an_error() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.add_deal(json!({"id": "4150868000001234567", "Stage": "Qualification"}));
    fake.reject_deal_update("4150868000001234567", "INVALID_DATA");

    let mut fields = Map::new();
    fields.insert("Stage".into(), json!("No Such Stage"));
    let error = within(clients.crm.update_deal("4150868000001234567", fields))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "record_rejected");
    assert_eq!(error.code(), Some("INVALID_DATA"));
    assert_eq!(statuses(&fake.calls_to("update_deal")), [200]);
    assert_eq!(
        fake.deal("4150868000001234567").unwrap()["Stage"],
        "Qualification"
    );
}

#[tokio::test]
async fn deal_updates_and_notes_reach_crm() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.add_deal(json!({"id": "4150868000001234567", "Stage": "Qualification"}));

    let mut fields = Map::new();
    fields.insert("Stage".into(), json!("Closed Won"));
    within(clients.crm.update_deal("4150868000001234567", fields))
        .await
        .unwrap();
    let note_id = within(clients.crm.add_note(
        "4150868000001234567",
        "Ticket moved",
        "Desk ticket #101 moved to Billing",
    ))
    .await
    .unwrap();

    assert!(!note_id.is_empty());
    assert_eq!(
        fake.calls_to("update_deal")[0].body,
        Some(json!({"data": [{"Stage": "Closed Won"}]}))
    );
    assert_eq!(
        fake.notes("4150868000001234567")[0]["Note_Title"],
        "Ticket moved"
    );
}

#[tokio::test]
async fn criteria_values_with_parentheses_and_commas_are_escaped() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.add_deal(json!({"id": "1", "Deal_Name": "Smith (UK), Ltd"}));
    fake.add_deal(json!({"id": "2", "Deal_Name": "Smith"}));

    let deals = within(
        clients
            .crm
            .search_deals(&Criteria::equals("Deal_Name", "Smith (UK), Ltd")),
    )
    .await
    .unwrap();

    assert_eq!(deals.iter().map(|d| d.id()).collect::<Vec<_>>(), ["1"]);
    assert_eq!(
        fake.calls_to("search_deals")[0].query_value("criteria"),
        Some(r"(Deal_Name:equals:Smith \(UK\)\, Ltd)")
    );
}

#[tokio::test]
async fn deals_of_a_contact_are_found_through_the_contact_lookup() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.add_contact(
        json!({"id": "77", "Email": "customer@example.org", "Full_Name": "A. Customer"}),
    );
    fake.add_deal(json!({"id": "1", "Contact_Name": {"id": "77", "name": "A. Customer"}}));
    fake.add_deal(json!({"id": "2", "Contact_Name": {"id": "78", "name": "Someone Else"}}));

    let contacts = within(clients.crm.search_contacts_by_email("Customer@Example.org"))
        .await
        .unwrap();
    let deals = within(clients.crm.deals_of_contact(contacts[0].id()))
        .await
        .unwrap();

    assert_eq!(contacts[0].full_name(), Some("A. Customer"));
    assert_eq!(deals.iter().map(|d| d.id()).collect::<Vec<_>>(), ["1"]);
}

#[tokio::test]
async fn a_second_department_lookup_is_served_from_the_cache() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;

    let first = within(clients.desk.department_id_by_name("billing"))
        .await
        .unwrap();
    let second = within(clients.desk.department_id_by_name(" BILLING "))
        .await
        .unwrap();
    let missing = within(clients.desk.department_id_by_name("Sales"))
        .await
        .unwrap();

    assert_eq!(first.as_deref(), Some("1892000000006911"));
    assert_eq!(second, first);
    assert_eq!(missing, None);
    assert_eq!(fake.calls_to("list_departments").len(), 1);
}

#[tokio::test]
async fn ids_sent_as_json_numbers_keep_every_digit() {
    let fake = FakeZoho::start().await;
    fake.add_ticket(json!({"id": 1892000000042034567_u64, "departmentId": 1892000000006907_u64}));
    fake.add_thread(
        "1892000000042034567",
        json!({"id": 1892000000042099999_u64, "direction": "in", "createdTime": 1466504175000_u64}),
    );
    fake.add_department_json(json!({"id": 1892000000006907_u64, "name": "Support"}));
    fake.add_deal(json!({"id": 4150868000001234567_u64, "Deal_Name": "Renewal"}));
    let metrics = Metrics::new();
    let clients = fake.clients(&metrics);

    let ticket = within(clients.desk.get_ticket("1892000000042034567"))
        .await
        .unwrap();
    let threads = within(clients.desk.list_threads("1892000000042034567"))
        .await
        .unwrap();
    let departments = within(clients.desk.departments()).await.unwrap();
    let deal = within(clients.crm.get_deal("4150868000001234567"))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(ticket.id, "1892000000042034567");
    assert_eq!(ticket.department_id.as_deref(), Some("1892000000006907"));
    assert_eq!(threads[0].id, "1892000000042099999");
    assert_eq!(threads[0].created_time.as_deref(), Some("1466504175000"));
    assert_eq!(departments[0].id, "1892000000006907");
    assert_eq!(deal.id(), "4150868000001234567");
}

#[tokio::test]
async fn threads_are_read_in_pages_of_200_without_per_thread_calls() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    for n in 0..250 {
        fake.add_thread(
            TICKET,
            json!({"id": (1000 + n).to_string(), "direction": "in"}),
        );
    }

    let threads = within(clients.desk.list_threads(TICKET)).await.unwrap();

    assert_eq!(threads.len(), 250);
    assert_eq!(threads[0].id, "1249", "newest first");
    let pages = fake.calls_to("list_threads");
    let windows: Vec<_> = pages
        .iter()
        .map(|c| (c.query_value("from"), c.query_value("limit")))
        .collect();
    assert_eq!(
        windows,
        [(Some("0"), Some("200")), (Some("200"), Some("200"))]
    );
    assert_eq!(fake.calls().iter().filter(|c| c.op == "unknown").count(), 0);
}

#[tokio::test]
async fn the_latest_thread_takes_one_call_and_an_empty_list_is_204() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;

    assert_eq!(
        within(clients.desk.latest_thread(TICKET)).await.unwrap(),
        None
    );
    fake.add_thread(
        TICKET,
        json!({"id": "1", "direction": "in", "summary": "first"}),
    );
    fake.add_thread(
        TICKET,
        json!({"id": "2", "direction": "out", "summary": "second"}),
    );
    let latest = within(clients.desk.latest_thread(TICKET))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(latest.id, "2");
    assert_eq!(statuses(&fake.calls_to("list_threads")), [204, 200]);
}

#[tokio::test]
async fn desk_calls_carry_the_org_id_and_writes_carry_the_source_id() {
    let fake = FakeZoho::start().await;
    fake.add_ticket(json!({"id": TICKET}));
    fake.add_department("1892000000006911", "Billing");
    let metrics = Metrics::new();
    let options = ClientOptions {
        source_id: Some("5f0e4a8e-3c1b-4d6f-9a55-0c7d2b1e9f10".into()),
        ..FakeZoho::fast_options()
    };
    let clients = fake.clients_with(options, &metrics);

    within(clients.desk.get_ticket(TICKET)).await.unwrap();
    within(clients.desk.move_ticket(TICKET, "1892000000006911"))
        .await
        .unwrap();

    let read = &fake.calls_to("get_ticket")[0];
    let moved = &fake.calls_to("move_ticket")[0];
    assert_eq!(read.org_id.as_deref(), Some(ORG_ID));
    assert_eq!(read.source_id, None);
    assert_eq!(moved.org_id.as_deref(), Some(ORG_ID));
    assert_eq!(
        moved.source_id.as_deref(),
        Some("5f0e4a8e-3c1b-4d6f-9a55-0c7d2b1e9f10")
    );
    assert_eq!(moved.query_value("departmentId"), Some("1892000000006911"));
    assert_eq!(
        fake.ticket(TICKET).unwrap()["departmentId"],
        "1892000000006911"
    );
}

#[tokio::test]
async fn moving_to_an_unknown_department_is_refused_with_422() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;

    let error = within(clients.desk.move_ticket(TICKET, "999"))
        .await
        .unwrap_err();

    assert!(matches!(
        &error,
        ZohoError::Api { status, code, fields, .. }
            if status.as_u16() == 422 && code == "INVALID_DATA" && fields == &["departmentId"]
    ));
    assert_eq!(error.kind(), "rejected");
    assert!(!error.retryable());
    assert_eq!(fake.calls_to("move_ticket").len(), 1);
}

#[tokio::test]
async fn unknown_tickets_are_not_found() {
    let (_fake, _metrics, clients) = fake_with_a_ticket().await;

    let error = within(clients.desk.get_ticket("404")).await.unwrap_err();

    assert_eq!(error.kind(), "not_found");
    assert_eq!(error.code(), Some("RESOURCE_NOT_FOUND"));
}

#[tokio::test]
async fn replies_drafts_updates_and_comments_send_the_documented_bodies() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;

    within(clients.desk.create_draft(TICKET, &reply()))
        .await
        .unwrap();
    let ticket = within(
        clients
            .desk
            .update_ticket(TICKET, &json!({"status": "Closed"})),
    )
    .await
    .unwrap();
    let comment = within(
        clients
            .desk
            .add_comment(TICKET, "Closed by deskhook", false),
    )
    .await
    .unwrap();

    assert_eq!(ticket.status.as_deref(), Some("Closed"));
    assert_eq!(comment.is_public, Some(false));
    let writes: Vec<(&str, Option<Value>)> =
        fake.writes().into_iter().map(|c| (c.op, c.body)).collect();
    assert_eq!(
        writes,
        [
            (
                "create_draft",
                Some(json!({
                    "channel": "EMAIL",
                    "fromEmailAddress": "support@example.com",
                    "to": "customer@example.org",
                    "content": "We have refunded your order.",
                    "contentType": "plainText"
                }))
            ),
            ("update_ticket", Some(json!({"status": "Closed"}))),
            (
                "add_comment",
                Some(
                    json!({"isPublic": false, "contentType": "plainText", "content": "Closed by deskhook"})
                )
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_stay_below_the_portal_limit() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    fake.limit_concurrency(10);
    fake.set_latency(Duration::from_millis(30));

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let desk = clients.desk.clone();
        calls.spawn(async move { desk.get_ticket(TICKET).await });
    }
    for result in within(calls.join_all()).await {
        result.unwrap();
    }

    assert!(
        fake.max_concurrency_seen() <= 8,
        "{}",
        fake.max_concurrency_seen()
    );
    assert!(fake.calls_to("get_ticket").iter().all(|c| c.status == 200));
}

#[tokio::test]
async fn the_fake_refuses_calls_beyond_its_concurrency_limit() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    within(clients.desk.get_ticket(TICKET)).await.unwrap();
    fake.limit_concurrency(2);
    fake.set_latency(Duration::from_millis(100));
    let unlimited = ClientOptions {
        max_concurrency: 6,
        retry: deskhook::zoho::RetryPolicy {
            max_attempts: 1,
            ..FakeZoho::fast_options().retry
        },
        ..FakeZoho::fast_options()
    };
    let other = ZohoClients::with_tokens(
        deskhook::server::http_client().unwrap(),
        fake.endpoints(),
        clients.tokens.clone(),
        ORG_ID,
        unlimited,
        ZohoMetrics::unregistered(),
    );

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let desk = other.desk.clone();
        calls.spawn(async move { desk.get_ticket(TICKET).await });
    }
    let results = within(calls.join_all()).await;

    let limited = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.kind() == "rate_limited"))
        .count();
    assert!(limited >= 1, "some calls met the limit");
    assert!(fake.max_concurrency_seen() >= 3);
}

#[tokio::test]
async fn crm_calls_go_to_the_api_domain_of_the_token_answer() {
    let fake = FakeZoho::start().await;
    fake.add_deal(json!({"id": "1", "Deal_Name": "Renewal"}));
    let mut endpoints = fake.endpoints();
    endpoints.crm_default = "http://127.0.0.1:9".into();
    let clients = ZohoClients::new(
        deskhook::server::http_client().unwrap(),
        endpoints,
        FakeZoho::credentials(),
        ORG_ID,
        FakeZoho::fast_options(),
        &Metrics::new(),
    )
    .unwrap();

    let deal = within(clients.crm.get_deal("1")).await.unwrap();

    assert!(deal.is_some());
}

#[tokio::test]
async fn secrets_and_tokens_stay_out_of_errors_and_debug_output() {
    let (fake, _metrics, clients) = fake_with_a_ticket().await;
    within(clients.desk.get_ticket(TICKET)).await.unwrap();
    let token = within(clients.tokens.access_token()).await.unwrap();
    fake.fail_next("add_comment", 1, Fault::ServerError);
    let error = within(clients.desk.add_comment(TICKET, "x", false))
        .await
        .unwrap_err();

    let printed = format!(
        "{clients:?} {token:?} {error} {error:?} {:?}",
        FakeZoho::credentials()
    );
    for secret in [CLIENT_SECRET, REFRESH_TOKEN, token.secret().expose()] {
        assert!(!printed.contains(secret), "{secret} leaked");
    }
}

#[tokio::test]
async fn a_post_that_timed_out_is_not_sent_again_but_a_get_is() {
    let fake = FakeZoho::start().await;
    fake.add_ticket(json!({"id": TICKET}));
    let metrics = Metrics::new();
    let options = ClientOptions {
        timeout: Duration::from_millis(200),
        ..FakeZoho::fast_options()
    };
    let clients = fake.clients_with(options, &metrics);
    within(clients.tokens.access_token()).await.unwrap();
    fake.set_latency(Duration::from_millis(600));

    let post = within(clients.desk.add_comment(TICKET, "Moved", false))
        .await
        .unwrap_err();
    let get = within(clients.desk.get_ticket(TICKET)).await.unwrap_err();

    assert_eq!(post.kind(), "timeout");
    assert!(post.may_have_written());
    assert_eq!(fake.calls_to("add_comment").len(), 1);
    assert_eq!(get.kind(), "timeout");
    assert!(!get.may_have_written());
    assert_eq!(fake.calls_to("get_ticket").len(), 3);
}

#[tokio::test]
async fn a_wrong_org_id_is_refused_without_spending_a_refresh() {
    let fake = FakeZoho::start().await;
    fake.add_ticket(json!({"id": TICKET}));
    let clients = ZohoClients::new(
        deskhook::server::http_client().unwrap(),
        fake.endpoints(),
        FakeZoho::credentials(),
        "1",
        FakeZoho::fast_options(),
        &Metrics::new(),
    )
    .unwrap();

    let error = within(clients.desk.get_ticket(TICKET)).await.unwrap_err();

    assert_eq!(error.kind(), "unauthorized");
    assert_eq!(error.code(), Some("OAUTH_ORG_MISMATCH"));
    assert_eq!(fake.token_refreshes(), 1);
    assert_eq!(fake.calls_to("get_ticket").len(), 1);
}
