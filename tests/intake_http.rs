//! The webhook intake over real sockets: payload shapes, HMAC verification, statuses, limits,
//! deduplication, per-ticket serialisation, back-pressure, the admin endpoints and shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::intake::{
    ADMIN_TOKEN, CapturedLogs, GatedWorkflow, Intake, PanicsOnce, Run, SECRET, SIGNATURE_HEADER,
    Server, eventually, hmac_hex, hmac_raw, post,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

fn queued(ticket: &str, event_type: &str) -> (Option<String>, String, String) {
    (
        Some(ticket.to_owned()),
        event_type.to_owned(),
        "queued".to_owned(),
    )
}

fn ignored(ticket: Option<&str>, event_type: &str) -> (Option<String>, String, String) {
    (
        ticket.map(str::to_owned),
        event_type.to_owned(),
        "ignored".to_owned(),
    )
}

/// One native Zoho event about `ticket` at `time`.
fn native_event(ticket: &str, time: u64) -> Vec<u8> {
    json!([{
        "eventType": "Ticket_Update",
        "eventTime": time.to_string(),
        "orgId": "700000001",
        "payload": {"id": ticket, "subject": "Facture"},
        "prevState": {"status": "Open"},
    }])
    .to_string()
    .into_bytes()
}

fn tickets(runs: &[Run]) -> Vec<String> {
    let mut ids: Vec<String> = runs.iter().map(|r| r.ticket_id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn validation_get_answers_200() {
    let server = Intake::new().start().await;
    let reply = server.get("/webhook/zoho-desk").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["success"], true);
}

#[tokio::test]
async fn a_post_without_signature_or_event_is_answered_without_processing() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new().workflow(workflow.clone()).start().await;
    for body in [&b"{}"[..], b"[]", b""] {
        let reply = server.deliver_with(body, &[]).await;
        assert_eq!(reply.status, 200, "{:?}: {}", body, reply.text);
        assert_eq!(reply.json["events"], json!([]));
    }
    let counters = server.stats().await["counters"].clone();
    assert_eq!(counters["requests_validation"], 3);
    assert_eq!(counters["events_queued"], 0);
    assert_eq!(counters["signature_failures"], 0);
    workflow.assert_started(&server, 0).await;
}

#[tokio::test]
async fn an_unsigned_post_naming_a_ticket_is_rejected_and_counted() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new().workflow(workflow.clone()).start().await;
    let reply = server
        .deliver_with(br#"{"ticket_id":"1892000000042001"}"#, &[])
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"success": false, "error": "Invalid signature"})
    );
    assert_eq!(
        server
            .metric(r#"deskhook_webhook_rejections_total{reason="missing_header"}"#)
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric(r#"deskhook_signature_failures_total{scheme="none"}"#)
            .await,
        1.0
    );
    workflow.assert_started(&server, 0).await;
}

#[tokio::test]
async fn a_native_array_with_no_events_is_accepted() {
    let server = Intake::new().start().await;
    let reply = server.deliver(b"[]").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json, json!({"success": true, "events": []}));
    assert_eq!(server.stats().await["counters"]["requests_accepted"], 1);
}

#[tokio::test]
async fn native_array_events_name_their_ticket_in_id_or_ticket_id() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new()
        .spec(|spec| spec.events.push("Ticket_Comment_Add".into()))
        .workflow(workflow.clone())
        .start()
        .await;
    let body = json!([
        {"eventType": "Ticket_Add", "eventTime": "1714560000000", "orgId": "700000001",
         "payload": {"id": "1892000000042001", "subject": "Facture"}, "prevState": null},
        {"eventType": "Ticket_Thread_Add", "eventTime": "1714560001000", "orgId": "700000001",
         "payload": {"id": "1892000000099001", "ticketId": "1892000000042002"}},
        {"eventType": "Ticket_Comment_Add", "eventTime": 1714560002000_u64, "orgId": 700000001,
         "payload": {"id": "1892000000099002", "ticketId": 1892000000042003_u64}},
    ]);
    let reply = server.deliver(body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.events(),
        [
            queued("1892000000042001", "Ticket_Add"),
            queued("1892000000042002", "Ticket_Thread_Add"),
            queued("1892000000042003", "Ticket_Comment_Add"),
        ]
    );
    let mut runs: Vec<(String, String)> = workflow
        .finished(3)
        .await
        .into_iter()
        .map(|r| (r.ticket_id, r.event_type))
        .collect();
    runs.sort();
    assert_eq!(
        runs,
        [
            ("1892000000042001".into(), "Ticket_Add".into()),
            ("1892000000042002".into(), "Ticket_Thread_Add".into()),
            ("1892000000042003".into(), "Ticket_Comment_Add".into()),
        ]
    );
}

#[tokio::test]
async fn an_18_digit_id_sent_as_a_json_number_keeps_every_digit() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new().workflow(workflow.clone()).start().await;
    // Written by hand: these numbers must reach the server exactly as typed.
    let native = br#"[{"eventType":"Ticket_Update","eventTime":1714560000000,"orgId":700000001,
        "payload":{"id":198709000438366101,"subject":"x"}}]"#;
    let legacy = br#"{"ticket_id":198709000438366102,"event_type":"ticket.updated"}"#;
    let first = server.deliver(native).await;
    let second = server.deliver(legacy).await;
    assert_eq!(
        first.events(),
        [queued("198709000438366101", "Ticket_Update")]
    );
    assert_eq!(
        second.events(),
        [queued("198709000438366102", "Ticket_Update")]
    );
    assert_eq!(
        tickets(&workflow.finished(2).await),
        ["198709000438366101", "198709000438366102"]
    );
}

#[tokio::test]
async fn the_seed_and_python_object_shapes_are_accepted() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new().workflow(workflow.clone()).start().await;
    let cases = [
        (
            json!({"ticket": {"id": "198709000438366103", "subject": "x"}, "event_type": "ticket.created"}),
            "198709000438366103",
            "Ticket_Add",
        ),
        (
            json!({"id": "198709000438366104", "eventType": "ticket.updated"}),
            "198709000438366104",
            "Ticket_Update",
        ),
        (
            json!({"entityId": 198709000438366105_u64}),
            "198709000438366105",
            "Ticket_Update",
        ),
        (
            json!({"data": {"ticket": {"id": "198709000438366106"}}, "event_type": "ticket.thread_added"}),
            "198709000438366106",
            "Ticket_Thread_Add",
        ),
        (
            json!({"data": {"data": {"entityId": "198709000438366107"}}}),
            "198709000438366107",
            "Ticket_Update",
        ),
        (
            json!({"ticket_id": "198709000438366108"}),
            "198709000438366108",
            "Ticket_Update",
        ),
        (
            json!({"ticketId": "198709000438366109", "eventType": "Ticket_Add"}),
            "198709000438366109",
            "Ticket_Add",
        ),
    ];
    for (body, ticket, event_type) in &cases {
        let reply = server.deliver(body.to_string().as_bytes()).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text);
        assert_eq!(reply.events(), [queued(ticket, event_type)], "{body}");
    }
    let mut runs: Vec<(String, String)> = workflow
        .finished(cases.len())
        .await
        .into_iter()
        .map(|r| (r.ticket_id, r.event_type))
        .collect();
    runs.sort();
    let expected: Vec<(String, String)> = cases
        .iter()
        .map(|(_, t, e)| (t.to_string(), e.to_string()))
        .collect();
    assert_eq!(runs, expected);
}

#[tokio::test]
async fn events_outside_the_settings_are_acknowledged_and_ignored() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new()
        .spec(|spec| spec.departments = vec!["DOC".into()])
        .workflow(workflow.clone())
        .start()
        .await;
    let body = json!([
        {"eventType": "Ticket_Delete", "payload": {"id": "11"}},
        {"eventType": "Ticket_Add", "payload": {"id": "12", "departmentName": "Sales"}},
        {"eventType": "Contact_Add", "payload": {"id": "13"}},
        {"eventType": "Ticket_Add", "payload": {"id": "14", "departmentName": "doc"}},
    ]);
    let reply = server.deliver(body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.events(),
        [
            ignored(Some("11"), "Ticket_Delete"),
            ignored(Some("12"), "Ticket_Add"),
            queued("14", "Ticket_Add"),
            ignored(None, "Contact_Add"),
        ]
    );
    assert_eq!(tickets(&workflow.finished(1).await), ["14"]);
    workflow.assert_started(&server, 1).await;
    assert_eq!(server.stats().await["counters"]["events_ignored"], 2);
}

#[tokio::test]
async fn a_payload_without_a_ticket_id_is_a_bad_request_and_counted() {
    let server = Intake::new().start().await;
    let reply = server
        .deliver(br#"[{"eventType":"Ticket_Thread_Add","payload":{"id":"1892000000099001"}}]"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json["error"], "No ticket ID found in payload");
    let reply = server.deliver(br#"{"subject":"no id here"}"#).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let counters = server.stats().await["counters"].clone();
    assert_eq!(counters["missing_ticket_id"], 2);
    assert_eq!(counters["requests_bad_request"], 2);
}

#[tokio::test]
async fn an_event_without_a_ticket_id_beside_good_ones_is_ignored() {
    let server = Intake::new().start().await;
    let body = json!([
        {"eventType": "Ticket_Thread_Add", "payload": {"id": "1892000000099001"}},
        {"eventType": "Ticket_Add", "payload": {"id": "21"}},
    ]);
    let reply = server.deliver(body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.events(),
        [
            queued("21", "Ticket_Add"),
            ignored(None, "Ticket_Thread_Add")
        ]
    );
}

#[tokio::test]
async fn invalid_json_is_a_bad_request_and_counted() {
    let server = Intake::new().start().await;
    for body in [&b"{not json"[..], b"42", b"\"text\""] {
        let reply = server.deliver(body).await;
        assert_eq!(reply.status, 400, "{:?}: {}", body, reply.text);
        assert_eq!(reply.json["error"], "Invalid JSON payload");
        assert!(
            !reply.text.contains("not json"),
            "the error echoes the body: {}",
            reply.text
        );
    }
    assert_eq!(
        server.metric("deskhook_payload_parse_errors_total").await,
        3.0
    );
}

#[tokio::test]
async fn good_hex_signatures_are_accepted_in_every_written_form() {
    let server = Intake::new().start().await;
    for (n, form) in ["plain", "upper", "prefixed"].into_iter().enumerate() {
        let body = native_event("31", n as u64);
        let hex = hmac_hex(SECRET, &body);
        let signature = match form {
            "plain" => hex,
            "upper" => hex.to_uppercase(),
            _ => format!("sha256={hex}"),
        };
        let reply = server
            .deliver_with(&body, &[(SIGNATURE_HEADER, &signature)])
            .await;
        assert_eq!(reply.status, 200, "{form}: {}", reply.text);
    }
    assert_eq!(
        server
            .metric(r#"deskhook_signature_verified_total{key="0",scheme="hmac"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn base64_signatures_are_accepted_when_configured() {
    use base64::Engine;
    let server = Intake::new()
        .spec(|spec| {
            spec.verification.hmac.encoding = deskhook::crd::SignatureEncoding::Base64;
            spec.verification.hmac.header = "X-Hook-Signature".into();
        })
        .start()
        .await;
    let body = native_event("32", 1);
    let signature = base64::engine::general_purpose::STANDARD.encode(hmac_raw(SECRET, &body));
    let reply = server
        .deliver_with(&body, &[("X-Hook-Signature", &signature)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let hex = hmac_hex(SECRET, &body);
    let reply = server
        .deliver_with(&body, &[("X-Hook-Signature", &hex)])
        .await;
    assert_eq!(reply.status, 401, "a hex signature passed as base64");
}

#[tokio::test]
async fn bad_signature_is_rejected_and_counted() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new().workflow(workflow.clone()).start().await;
    let body = native_event("33", 1);
    let signature = hmac_hex("some-other-key", &body);
    let reply = server
        .deliver_with(&body, &[(SIGNATURE_HEADER, &signature)])
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"success": false, "error": "Invalid signature"})
    );
    assert_eq!(
        server
            .metric(r#"deskhook_signature_failures_total{scheme="hmac"}"#)
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric(r#"deskhook_webhook_rejections_total{reason="mismatch"}"#)
            .await,
        1.0
    );
    let counters = server.stats().await["counters"].clone();
    assert_eq!(counters["requests_unauthorized"], 1);
    assert_eq!(counters["events_queued"], 0);
    workflow.assert_started(&server, 0).await;
}

#[tokio::test]
async fn a_body_changed_after_signing_is_rejected() {
    let server = Intake::new().start().await;
    let signed = native_event("34", 1);
    let signature = hmac_hex(SECRET, &signed);
    let changed = native_event("35", 1);
    let reply = server
        .deliver_with(&changed, &[(SIGNATURE_HEADER, &signature)])
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
}

#[tokio::test]
async fn a_malformed_signature_is_rejected_as_bad_encoding() {
    let server = Intake::new().start().await;
    let body = native_event("36", 1);
    for signature in ["zz", "", &"a".repeat(64 * 5)] {
        let reply = server
            .deliver_with(&body, &[(SIGNATURE_HEADER, signature)])
            .await;
        assert_eq!(reply.status, 401, "{signature:?}: {}", reply.text);
    }
    assert_eq!(
        server
            .metric(r#"deskhook_webhook_rejections_total{reason="bad_encoding"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn rotated_hmac_keys_both_verify_and_the_matching_key_is_counted() {
    let server = Intake::new()
        .hmac_keys(Some("new-key-2024, old-key-2023"))
        .start()
        .await;
    for (n, key) in ["old-key-2023", "new-key-2024", "old-key-2023"]
        .into_iter()
        .enumerate()
    {
        let body = native_event("37", n as u64);
        let signature = hmac_hex(key, &body);
        let reply = server
            .deliver_with(&body, &[(SIGNATURE_HEADER, &signature)])
            .await;
        assert_eq!(reply.status, 200, "{key}: {}", reply.text);
    }
    let body = native_event("37", 9);
    let signature = hmac_hex("retired-key-2022", &body);
    let reply = server
        .deliver_with(&body, &[(SIGNATURE_HEADER, &signature)])
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(
        server
            .metric(r#"deskhook_signature_verified_total{key="0",scheme="hmac"}"#)
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric(r#"deskhook_signature_verified_total{key="1",scheme="hmac"}"#)
            .await,
        2.0
    );
}

/// A signed native delivery of exactly `size` bytes, padded inside the payload.
fn delivery_of_size(size: usize) -> Vec<u8> {
    let empty = native_event_with_padding("");
    let padding = "x".repeat(size - empty.len());
    let body = native_event_with_padding(&padding);
    assert_eq!(body.len(), size);
    body
}

fn native_event_with_padding(padding: &str) -> Vec<u8> {
    json!([{"eventType": "Ticket_Add", "payload": {"id": "41", "description": padding}}])
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn a_body_of_exactly_one_mebibyte_is_read() {
    let server = Intake::new().start().await;
    let reply = server.deliver(&delivery_of_size(MIB)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.events(), [queued("41", "Ticket_Add")]);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let server = Intake::new().start().await;
    let reply = server.deliver(&delivery_of_size(MIB + 1)).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.json["error"], "Payload too large");
    assert_eq!(server.stats().await["counters"]["requests_too_large"], 1);
}

#[tokio::test]
async fn a_chunked_body_over_one_mebibyte_is_refused_with_413() {
    let server = Intake::new().start().await;
    let body = delivery_of_size(MIB + 1);
    let signature = hmac_hex(SECRET, &body);
    let mut stream = tokio::net::TcpStream::connect(server.running.addr)
        .await
        .expect("the webhook listener accepts");
    let head = format!(
        "POST /webhook/zoho-desk HTTP/1.1\r\nhost: deskhook\r\ncontent-type: application/json\r\n\
         {SIGNATURE_HEADER}: {signature}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    // No length is declared: the limit must hold while the body streams in.
    for chunk in body.chunks(64 * 1024) {
        let framed = [
            format!("{:x}\r\n", chunk.len()).as_bytes(),
            chunk,
            b"\r\n".as_slice(),
        ]
        .concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0; 64];
    let read = tokio::time::timeout(support::intake::WAIT, stream.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("the answer is readable");
    let status_line = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "answer: {status_line}"
    );
}

#[tokio::test]
async fn a_duplicate_delivery_is_acknowledged_as_duplicate() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new().workflow(workflow.clone()).start().await;
    let body = native_event("51", 1714560000000);
    let first = server.deliver(&body).await;
    let again = server.deliver(&body).await;
    assert_eq!(first.events(), [queued("51", "Ticket_Update")]);
    assert_eq!(
        again.events(),
        [(
            Some("51".to_owned()),
            "Ticket_Update".to_owned(),
            "duplicate".to_owned()
        )]
    );
    let later = server.deliver(&native_event("51", 1714560009000)).await;
    assert_eq!(later.events(), [queued("51", "Ticket_Update")]);
    assert_eq!(workflow.finished(2).await.len(), 2);
    workflow.assert_started(&server, 2).await;
    assert_eq!(server.stats().await["counters"]["events_duplicate"], 1);
}

#[tokio::test]
async fn events_for_one_ticket_never_run_concurrently() {
    let workflow = GatedWorkflow::closed();
    let server = Intake::new()
        .spec(|spec| spec.queue.workers = 4)
        .workflow(workflow.clone())
        .start()
        .await;
    assert_eq!(server.deliver(&native_event("61", 1)).await.status, 200);
    assert_eq!(workflow.next_start().await.ticket_id, "61");
    // Two more events for the running ticket, then one for another ticket.
    for time in [2, 3] {
        let reply = server.deliver(&native_event("61", time)).await;
        assert_eq!(reply.events(), [queued("61", "Ticket_Update")]);
    }
    assert_eq!(server.deliver(&native_event("62", 1)).await.status, 200);
    // Free workers take the other ticket, not the running one.
    assert_eq!(workflow.next_start().await.ticket_id, "62");
    workflow.assert_started(&server, 2).await;

    workflow.release(1);
    let rerun = workflow.next_start().await;
    assert_eq!(rerun.ticket_id, "61");
    assert_eq!(
        rerun.event_time_ms,
        Some(3_000),
        "the waiting events coalesce into one run of the latest"
    );
    workflow.release(2);
    let runs = workflow.finished(3).await;
    assert_eq!(tickets(&runs), ["61", "61", "62"]);
    assert_eq!(workflow.most_concurrent_runs_of_one_ticket(), 1);
    assert_eq!(workflow.most_concurrent_runs(), 2);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let workflow = GatedWorkflow::closed();
    let server = Intake::new()
        .spec(|spec| {
            spec.queue.workers = 1;
            spec.queue.capacity = 1;
        })
        .workflow(workflow.clone())
        .start()
        .await;
    assert_eq!(server.deliver(&native_event("71", 1)).await.status, 200);
    assert_eq!(workflow.next_start().await.ticket_id, "71");
    assert_eq!(server.deliver(&native_event("72", 1)).await.status, 200);

    let refused = server.deliver(&native_event("73", 1)).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    assert_eq!(refused.json["error"], "Queue is full");
    // A newer event for a ticket already waiting takes no new room.
    let coalesced = server.deliver(&native_event("72", 2)).await;
    assert_eq!(coalesced.status, 200, "{}", coalesced.text);
    assert_eq!(server.stats().await["counters"]["requests_unavailable"], 1);

    workflow.release(2);
    assert_eq!(tickets(&workflow.finished(2).await), ["71", "72"]);
    let retried = server.deliver(&native_event("73", 1)).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
}

async fn manual_run(server: &Server, body: Value, token: Option<&str>) -> support::intake::Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    post(
        &server.client,
        &server.url("/webhook/test"),
        body.to_string(),
        &headers,
    )
    .await
}

#[tokio::test]
async fn admin_endpoints_are_off_without_an_admin_token() {
    let server = Intake::new().start().await;
    let reply = manual_run(&server, json!({"ticket_id": "81"}), Some("anything")).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = server.get("/webhook/decisions").await;
    assert_eq!(reply.status, 404, "{}", reply.text);
}

#[tokio::test]
async fn the_manual_run_requires_the_bearer_token() {
    let server = Intake::new().admin_token(ADMIN_TOKEN).start().await;
    let missing = manual_run(&server, json!({"ticket_id": "82"}), None).await;
    assert_eq!(missing.status, 401, "{}", missing.text);
    let wrong = manual_run(&server, json!({"ticket_id": "82"}), Some("guess")).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let raw = post(
        &server.client,
        &server.url("/webhook/test"),
        json!({"ticket_id": "82"}).to_string(),
        &[("authorization", ADMIN_TOKEN)],
    )
    .await;
    assert_eq!(raw.status, 401, "a token without `Bearer` passed");

    let allowed = manual_run(&server, json!({"ticket_id": "82"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    assert_eq!(allowed.json["success"], true);
    assert_eq!(allowed.json["ticket_id"], "82");

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let decisions = support::intake::get(
        &server.client,
        &server.url("/webhook/decisions?ticket_id=82"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(decisions.status, 200, "{}", decisions.text);
    assert_eq!(decisions.json["decisions"][0]["ticket_id"], "82");
}

#[tokio::test]
async fn each_manual_run_is_a_job_of_its_own() {
    let workflow = GatedWorkflow::open();
    let server = Intake::new()
        .admin_token(ADMIN_TOKEN)
        .workflow(workflow.clone())
        .start()
        .await;
    for _ in 0..2 {
        let reply = manual_run(&server, json!({"ticket_id": "84"}), Some(ADMIN_TOKEN)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let jobs = workflow.started_jobs();
    assert_eq!(jobs.len(), 2);
    assert_ne!(
        jobs[0].0, jobs[1].0,
        "both manual runs had job id {}",
        jobs[0].0
    );
    assert_ne!(jobs[0].1, jobs[1].1, "both manual runs had one key");
}

#[tokio::test]
async fn a_manual_run_never_overtakes_a_running_job_of_its_ticket() {
    let workflow = GatedWorkflow::closed();
    let server = Intake::new()
        .admin_token(ADMIN_TOKEN)
        .workflow(workflow.clone())
        .start()
        .await;
    assert_eq!(server.deliver(&native_event("85", 1)).await.status, 200);
    assert_eq!(workflow.next_start().await.ticket_id, "85");

    let manual = manual_run(&server, json!({"ticket_id": "85"}), Some(ADMIN_TOKEN));
    tokio::select! {
        reply = manual => {
            assert_eq!(reply.status, 409, "{}", reply.text);
        }
        run = workflow.next_start() => {
            panic!("a manual run of ticket {} started beside its running job", run.ticket_id);
        }
    }
    workflow.release(1);
    workflow.finished(1).await;
    // Once the ticket is free, a manual run goes ahead.
    workflow.release(1);
    let reply = manual_run(&server, json!({"ticket_id": "85"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(workflow.most_concurrent_runs_of_one_ticket(), 1);
}

#[tokio::test]
async fn a_run_that_panics_is_retried_and_its_worker_lives_on() {
    let workflow = Arc::new(PanicsOnce::default());
    let server = Intake::new()
        .spec(|spec| spec.queue.workers = 1)
        .workflow(workflow.clone())
        .start()
        .await;
    assert_eq!(server.deliver(&native_event("92", 1)).await.status, 200);
    eventually("the panicked job's retry", || async {
        (workflow.runs_of("92") == 2).then_some(())
    })
    .await;
    // The only worker survived: another ticket's event runs (and is retried) too.
    assert_eq!(server.deliver(&native_event("93", 1)).await.status, 200);
    eventually("the second ticket's successful run", || async {
        let counters = server.stats().await["counters"].clone();
        (counters["workflow_success"] == 2).then_some(())
    })
    .await;
    let counters = server.stats().await["counters"].clone();
    assert_eq!(counters["workflow_retried"], 2, "{counters}");
    assert_eq!(
        server
            .metric(r#"deskhook_workflow_errors_total{step="panic"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_manual_run_that_panics_fails_and_frees_its_ticket() {
    let workflow = Arc::new(PanicsOnce::default());
    let server = Intake::new()
        .admin_token(ADMIN_TOKEN)
        .workflow(workflow.clone())
        .start()
        .await;
    let failed = manual_run(&server, json!({"ticket_id": "94"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(failed.status, 200, "{}", failed.text);
    assert_eq!(failed.json["success"], false);
    assert_eq!(failed.json["report"]["steps"][0]["step"], "panic");
    let again = manual_run(&server, json!({"ticket_id": "94"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(again.status, 200, "the ticket stayed taken: {}", again.text);
    assert_eq!(again.json["success"], true);
}

#[tokio::test]
async fn a_manual_run_override_may_turn_a_flag_off_but_not_on() {
    let server = Intake::new().admin_token(ADMIN_TOKEN).start().await;
    let on = manual_run(
        &server,
        json!({"ticket_id": "83", "auto_respond": true}),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(on.status, 403, "{}", on.text);
    assert_eq!(on.json["flag"], "auto_respond");

    let off = manual_run(
        &server,
        json!({"ticket_id": "83", "auto_dispatch": false}),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(off.status, 200, "{}", off.text);
    assert_eq!(off.json["report"]["flags"]["dispatch"], false);
    assert_eq!(off.json["report"]["flags"]["link"], true);
    assert_eq!(
        server.stats().await["configuration"]["auto_dispatch"],
        true,
        "an override changed the live settings"
    );
}

#[tokio::test]
async fn metrics_are_served_on_the_metrics_listener_only() {
    let server = Intake::new().start().await;
    let metrics = server.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("deskhook_queue_capacity 10000"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains(r#"deskhook_automation_enabled{flag="dispatch"} 1"#)
    );
    assert_eq!(server.get("/metrics").await.status, 404);
    assert_eq!(server.admin_get("/webhook/stats").await.status, 404);
    let webhook_on_admin = post(
        &server.client,
        &server.admin_url("/webhook/zoho-desk"),
        "[]",
        &[],
    )
    .await;
    assert_eq!(webhook_on_admin.status, 404);
}

#[tokio::test]
async fn the_server_refuses_to_start_without_verification() {
    let refused = Intake::new().hmac_keys(None).try_start().await;
    assert!(
        matches!(refused, Err(deskhook::server::ServeError::NoVerification)),
        "started without any verification"
    );
    let insecure = Intake::new().hmac_keys(None).insecure().start().await;
    let reply = insecure.deliver_with(&native_event("91", 1), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(insecure.stats().await["insecure_no_verification"], true);
    assert_eq!(insecure.metric("deskhook_verification_disabled").await, 1.0);
}

#[tokio::test]
async fn shutdown_turns_readiness_off_and_lets_running_work_finish() {
    let logs = CapturedLogs::default();
    let _capture = logs.install();
    let workflow = GatedWorkflow::closed();
    let server = Intake::new().workflow(workflow.clone()).start().await;
    assert_eq!(server.admin_get("/ready").await.status, 200);
    assert_eq!(server.deliver(&native_event("95", 1)).await.status, 200);
    assert_eq!(workflow.next_start().await.ticket_id, "95");

    server.begin_shutdown();
    let ready = support::intake::eventually("readiness to turn false", || async {
        let reply = server.admin_get("/ready").await;
        (reply.status == 503).then_some(reply.json)
    })
    .await;
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["draining"], true);
    support::intake::eventually("the queue to close", || async {
        let reply = server.admin_get("/ready").await;
        (reply.json["queue_accepting"] == false).then_some(())
    })
    .await;
    // New deliveries are refused (503) or find the listener closed; never accepted.
    support::intake::eventually("the webhook to stop accepting", || async {
        let body = native_event("96", 1);
        let signature = hmac_hex(SECRET, &body);
        let sent = server
            .client
            .post(server.url("/webhook/zoho-desk"))
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(reply) if reply.status() == 200 => panic!("accepted during shutdown"),
            Ok(reply) if reply.status() == 503 => Some(()),
            Ok(_) => None,
            Err(_) => Some(()),
        }
    })
    .await;

    workflow.release(1);
    server.wait_stopped().await;
    assert_eq!(tickets(&workflow.finished(1).await), ["95"]);
    assert!(
        logs.find("shutdown complete: every queued event was processed")
            .is_some(),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn shutdown_logs_unfinished_tickets_by_id_when_the_grace_period_ends() {
    let logs = CapturedLogs::default();
    let _capture = logs.install();
    let workflow = GatedWorkflow::closed();
    let server = Intake::new()
        .spec(|spec| spec.queue.workers = 1)
        .shutdown_grace(Duration::from_millis(200))
        .workflow(workflow.clone())
        .start()
        .await;
    assert_eq!(
        server
            .deliver(&native_event("1892000000042097", 1))
            .await
            .status,
        200
    );
    assert_eq!(workflow.next_start().await.ticket_id, "1892000000042097");
    assert_eq!(
        server
            .deliver(&native_event("1892000000042098", 1))
            .await
            .status,
        200
    );

    server.begin_shutdown();
    server.wait_stopped().await;
    let line = logs
        .find("shutdown grace period ended with unfinished work")
        .unwrap_or_else(|| panic!("no unfinished-work line in:\n{}", logs.text()));
    let unfinished = line["unfinished_ticket_ids"].to_string();
    assert!(
        unfinished.contains("1892000000042097") && unfinished.contains("1892000000042098"),
        "{line}"
    );
    assert_eq!(line["level"], "ERROR");
}
