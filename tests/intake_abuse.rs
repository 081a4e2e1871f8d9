//! Abuse resistance over real sockets: per-client rate limits and failure budgets, trusted
//! proxies and the source allowlist, slow and oversized clients, the connection cap, Standard
//! Webhooks with replay protection, the redacted rejection log, and no secret in any answer or
//! log line along the way.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use deskhook::crd::RateLimitSpec;
use serde_json::json;
use support::intake::{
    ADMIN_TOKEN, CapturedLogs, Intake, Reply, SECRET, SIGNATURE_HEADER, Server, WAIT, eventually,
    get, hmac_hex, hmac_raw, post,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A second loopback address: Linux routes all of 127.0.0.0/8 to the loopback interface, so a
/// client bound to it reaches the server as a different client.
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The Standard Webhooks secret of these tests, and its raw key.
const WHSEC_KEY: &[u8] = b"abuse-test-standard-webhooks-key-32b";

fn whsec() -> String {
    format!("whsec_{}", STANDARD.encode(WHSEC_KEY))
}

fn bucket(requests_per_second: f64, burst: u32) -> RateLimitSpec {
    RateLimitSpec {
        enabled: true,
        requests_per_second,
        burst,
    }
}

fn delivery(ticket: &str) -> Vec<u8> {
    json!([{"eventType": "Ticket_Add", "eventTime": "1714560000000", "orgId": "1",
            "payload": {"id": ticket}}])
    .to_string()
    .into_bytes()
}

/// A test client whose connections come from `local`.
fn client_from(local: IpAddr) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .local_address(local)
        .build()
        .expect("the test HTTP client builds")
}

async fn deliver_from(client: &reqwest::Client, server: &Server, ticket: &str) -> Reply {
    let body = delivery(ticket);
    let signature = hmac_hex(SECRET, &body);
    post(
        client,
        &server.url("/webhook/zoho-desk"),
        body,
        &[(SIGNATURE_HEADER, &signature)],
    )
    .await
}

async fn rejections(server: &Server, reason: &str) -> f64 {
    server
        .metric(&format!(
            "deskhook_webhook_rejections_total{{reason=\"{reason}\"}}"
        ))
        .await
}

/// Fails when any secret of these tests shows up in the captured logs or in an answer.
fn assert_no_secret(logs: &CapturedLogs, replies: &[&Reply], extra: &[&str]) {
    let text = logs.text();
    let secrets = [SECRET, ADMIN_TOKEN, &whsec(), &STANDARD.encode(WHSEC_KEY)];
    for secret in secrets.iter().copied().chain(extra.iter().copied()) {
        assert!(!text.contains(secret), "a secret reached the logs");
        for reply in replies {
            assert!(!reply.text.contains(secret), "a secret reached an answer");
        }
    }
}

/// Reads what the server sends until it closes the connection, at most [`WAIT`].
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection in time")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_flood_from_one_address_is_limited_while_another_address_is_served() {
    let logs = CapturedLogs::default();
    let _capture = logs.install();
    let server = Intake::new()
        .spec(|spec| spec.limits.rate_limit = bucket(0.01, 5))
        .start()
        .await;
    let flooder = server.client.clone();
    let mut statuses = Vec::new();
    let mut limited = None;
    for n in 0..8 {
        let reply = deliver_from(&flooder, &server, &format!("10{n}")).await;
        statuses.push(reply.status);
        if reply.status == 429 {
            limited = Some(reply);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let limited = limited.expect("a 429");
    let retry_after: u64 = limited
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert_eq!(limited.json["error"], "Too many requests");

    let other = deliver_from(&client_from(OTHER_CLIENT), &server, "200").await;
    assert_eq!(other.status, 200, "{}", other.text);
    // Probes are never limited.
    for _ in 0..3 {
        assert_eq!(server.get("/health").await.status, 200);
        assert_eq!(server.get("/ready").await.status, 200);
    }
    assert_eq!(rejections(&server, "rate_limited").await, 3.0);
    assert_eq!(
        server
            .metric(r#"deskhook_webhook_requests_total{outcome="rate_limited"}"#)
            .await,
        3.0
    );
    assert_no_secret(&logs, &[&limited, &other], &[]);
}

#[tokio::test]
async fn forged_deliveries_exhaust_only_the_forgers_failure_budget() {
    let logs = CapturedLogs::default();
    let _capture = logs.install();
    let server = Intake::new()
        .spec(|spec| spec.limits.failed_verification_limit = bucket(0.01, 3))
        .start()
        .await;
    let forger = server.client.clone();
    let zoho = client_from(OTHER_CLIENT);
    let body = delivery("300");
    let forged = hmac_hex("guessed-secret", &body);
    let mut statuses = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..5 {
        let reply = post(
            &forger,
            &server.url("/webhook/zoho-desk"),
            body.clone(),
            &[(SIGNATURE_HEADER, &forged)],
        )
        .await;
        statuses.push(reply.status);
        replies.push(reply);
        // Zoho's deliveries interleaved with the flood keep passing.
        let genuine = deliver_from(&zoho, &server, "301").await;
        assert_eq!(genuine.status, 200, "{}", genuine.text);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    assert!(replies[4].retry_after.is_some());
    // A delivery that verifies is never refused by the budget, even from the forger's address
    // (behind an ingress, every sender shares one).
    assert_eq!(deliver_from(&forger, &server, "302").await.status, 200);
    assert_eq!(rejections(&server, "mismatch").await, 3.0);
    assert_eq!(rejections(&server, "too_many_failures").await, 2.0);
    let replies: Vec<&Reply> = replies.iter().collect();
    assert_no_secret(&logs, &replies, &[&forged]);
}

#[tokio::test]
async fn untrusted_x_forwarded_for_is_ignored() {
    let server = Intake::new()
        .spec(|spec| spec.limits.rate_limit = bucket(0.01, 2))
        .start()
        .await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        let spoofed = format!("198.51.100.{n}");
        let reply = get(
            &server.client,
            &server.url("/webhook/zoho-desk"),
            &[("x-forwarded-for", &spoofed)],
        )
        .await;
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "the header picked the client"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let server = Intake::new()
        .admin_token(ADMIN_TOKEN)
        .spec(|spec| {
            spec.limits.rate_limit = bucket(0.01, 2);
            spec.limits.trusted_proxies = vec!["127.0.0.1/32".into()];
            spec.limits.allowed_source_ranges = vec!["198.51.100.0/24".into()];
        })
        .start()
        .await;
    let from = |client: &'static str| {
        let server = &server;
        async move {
            // A client-written entry on the left is never believed.
            let chain = format!("203.0.113.66, {client}");
            get(
                &server.client,
                &server.url("/webhook/zoho-desk"),
                &[("x-forwarded-for", &chain)],
            )
            .await
            .status
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(from("198.51.100.1").await);
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(from("198.51.100.2").await, 200);
    assert_eq!(from("203.0.113.9").await, 403, "outside the allowlist");
    assert_eq!(rejections(&server, "source_not_allowed").await, 1.0);

    let log = get(
        &server.client,
        &server.url("/webhook/rejections?reason=source_not_allowed"),
        &[
            ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
            ("x-forwarded-for", "198.51.100.3"),
        ],
    )
    .await;
    assert_eq!(log.status, 200, "{}", log.text);
    assert_eq!(log.json["rejections"][0]["client"], "203.0.113.9");
    assert_eq!(log.json["rejections"][0]["status"], 403);
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_timeout_while_others_are_served() {
    let server = Intake::new()
        .spec(|spec| spec.limits.header_read_timeout_seconds = 1)
        .start()
        .await;
    let mut slow = TcpStream::connect(server.running.addr)
        .await
        .expect("the listener accepts");
    slow.write_all(b"POST /webhook/zoho-desk HTTP/1.1\r\nhost: deskhook\r\n")
        .await
        .expect("the first line is sent");
    let trickle = async {
        // One header line every 200 ms, never the blank line that ends the headers.
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow
                .write_all(format!("x-slow-{n}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let served = async {
        for n in 0..5 {
            let reply = server.deliver(&delivery(&format!("40{n}"))).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (_, ()) = tokio::time::timeout(WAIT, async { tokio::join!(trickle, served) })
        .await
        .expect("the slow connection was cut and the others were served");
    eventually("the header timeout to be counted", || async {
        (rejections(&server, "header_timeout").await == 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_answered_408() {
    let server = Intake::new()
        .spec(|spec| spec.limits.body_read_timeout_seconds = 1)
        .start()
        .await;
    let mut stream = TcpStream::connect(server.running.addr)
        .await
        .expect("the listener accepts");
    stream
        .write_all(
            b"POST /webhook/zoho-desk HTTP/1.1\r\nhost: deskhook\r\ncontent-length: 100\r\n\
              content-type: application/json\r\n\r\n[{\"event",
        )
        .await
        .expect("the head is sent");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer}");
    assert_eq!(rejections(&server, "body_timeout").await, 1.0);
    assert_eq!(server.deliver(&delivery("50")).await.status, 200);
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_and_counted() {
    let server = Intake::new()
        .spec(|spec| spec.limits.max_header_bytes = 2048)
        .start()
        .await;
    let mut stream = TcpStream::connect(server.running.addr)
        .await
        .expect("the listener accepts");
    let huge = "a".repeat(4096);
    let request =
        format!("GET /webhook/zoho-desk HTTP/1.1\r\nhost: deskhook\r\nx-big: {huge}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "answer: {answer}");
    eventually("the oversized headers to be counted", || async {
        (rejections(&server, "headers_too_large").await == 1.0).then_some(())
    })
    .await;

    let big_body = vec![b' '; 1024 * 1024 + 1];
    let reply = server.deliver(&big_body).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(rejections(&server, "too_large").await, 1.0);
    // Ordinary requests still fit.
    assert_eq!(server.deliver(&delivery("60")).await.status, 200);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let server = Intake::new()
        .spec(|spec| spec.limits.max_connections = 2)
        .start()
        .await;
    let held: Vec<TcpStream> =
        futures::future::join_all((0..2).map(|_| TcpStream::connect(server.running.addr)))
            .await
            .into_iter()
            .map(|s| s.expect("the listener accepts"))
            .collect();
    eventually("two connections to be open", || async {
        (server.metric("deskhook_connections_open").await == 2.0).then_some(())
    })
    .await;
    let mut third = TcpStream::connect(server.running.addr)
        .await
        .expect("the kernel accepts");
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nhost: deskhook\r\n\r\n")
        .await;
    assert_eq!(
        read_until_closed(&mut third).await,
        "",
        "answered over the limit"
    );
    assert_eq!(rejections(&server, "connection_limit").await, 1.0);
    drop(held);
    eventually("a connection slot to free up", || async {
        let reply = server.client.get(server.url("/health")).send().await.ok()?;
        (reply.status() == 200).then_some(())
    })
    .await;
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Standard Webhooks headers for `body`, signed with `key` at `timestamp`.
fn standard_headers(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let signed = [
        id.as_bytes(),
        b".",
        timestamp.to_string().as_bytes(),
        b".",
        body,
    ]
    .concat();
    let signature = STANDARD.encode(hmac_raw_bytes(key, &signed));
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}

/// HMAC-SHA256 with a binary key, computed independently of the library.
fn hmac_raw_bytes(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

async fn deliver_standard(server: &Server, body: &[u8], headers: &[(String, String)]) -> Reply {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    server.deliver_with(body, &headers).await
}

#[tokio::test]
async fn standard_webhooks_deliveries_verify_once_within_the_tolerance() {
    let logs = CapturedLogs::default();
    let _capture = logs.install();
    let server = Intake::new()
        .hmac_keys(None)
        .standard_webhooks_keys(&format!("whsec_{},{}", STANDARD.encode(b"old"), whsec()))
        .start()
        .await;
    let body = delivery("70");
    let headers = standard_headers(WHSEC_KEY, "msg_70", unix_now(), &body);
    let first = deliver_standard(&server, &body, &headers).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        server
            .metric(r#"deskhook_signature_verified_total{key="1",scheme="standard_webhooks"}"#)
            .await,
        1.0
    );
    let replay = deliver_standard(&server, &body, &headers).await;
    assert_eq!(replay.status, 401, "{}", replay.text);
    assert_eq!(rejections(&server, "replayed").await, 1.0);

    let late = standard_headers(WHSEC_KEY, "msg_71", unix_now() - 600, &body);
    assert_eq!(deliver_standard(&server, &body, &late).await.status, 401);
    assert_eq!(rejections(&server, "expired").await, 1.0);

    let forged = standard_headers(b"guessed", "msg_72", unix_now(), &body);
    assert_eq!(deliver_standard(&server, &body, &forged).await.status, 401);
    assert_eq!(rejections(&server, "mismatch").await, 1.0);

    let changed = delivery("73");
    let moved = deliver_standard(&server, &changed, &headers).await;
    assert_eq!(
        moved.status, 401,
        "a signature moved to another body passed"
    );
    let signatures: Vec<&str> = [&headers, &forged]
        .iter()
        .map(|h| h[2].1.trim_start_matches("v1,"))
        .collect();
    assert_no_secret(&logs, &[&first, &replay, &moved], &signatures);
}

#[tokio::test]
async fn stats_count_standard_webhooks_failures_among_signature_failures() {
    let server = Intake::new()
        .hmac_keys(None)
        .standard_webhooks_keys(&whsec())
        .start()
        .await;
    let body = delivery("74");
    let forged = standard_headers(b"guessed", "msg_74", unix_now(), &body);
    assert_eq!(deliver_standard(&server, &body, &forged).await.status, 401);
    let counted = server
        .metric(r#"deskhook_signature_failures_total{scheme="standard_webhooks"}"#)
        .await;
    assert_eq!(counted, 1.0);
    let counters = server.stats().await["counters"].clone();
    assert_eq!(counters["signature_failures"], 1, "{counters}");
}

#[tokio::test]
async fn the_rejection_log_explains_failures_without_leaking_them() {
    let logs = CapturedLogs::default();
    let _capture = logs.install();
    let server = Intake::new().admin_token(ADMIN_TOKEN).start().await;
    let body = br#"[{"eventType":"Ticket_Add","payload":{"id":"80","email":"jane@example.com"}}]"#;
    let wrong = hmac_hex("wrong-secret", body);
    let refused = server
        .deliver_with(body, &[(SIGNATURE_HEADER, &wrong), ("user-agent", "Zoho")])
        .await;
    assert_eq!(refused.status, 401);
    let garbled = server.deliver_with(body, &[(SIGNATURE_HEADER, "zz")]).await;
    assert_eq!(garbled.status, 401);

    let unauthorized = server.get("/webhook/rejections").await;
    assert_eq!(unauthorized.status, 401);
    let listing = get(
        &server.client,
        &server.url("/webhook/rejections?limit=10"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    assert_eq!(listing.status, 200, "{}", listing.text);
    let entries = listing.json["rejections"].as_array().expect("a list");
    let reasons: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["admin_unauthorized", "bad_encoding", "mismatch"]);
    let mismatch = &entries[2];
    assert_eq!(mismatch["scheme"], "hmac");
    assert_eq!(mismatch["status"], 401);
    assert_eq!(mismatch["route"], "/webhook/zoho-desk");
    assert_eq!(mismatch["client"], "127.0.0.1");
    assert_eq!(mismatch["user_agent"], "Zoho");
    assert_eq!(mismatch["body_bytes"], body.len());
    assert!(
        mismatch["headers"]
            .as_array()
            .expect("header names")
            .iter()
            .any(|h| h == "x-zoho-signature")
    );
    for leak in [wrong.as_str(), "jane@example.com", "Ticket_Add", SECRET] {
        assert!(!listing.text.contains(leak), "the listing shows {leak}");
    }
    assert_eq!(rejections(&server, "admin_unauthorized").await, 1.0);
    let expected = hmac_raw(SECRET, body);
    assert_no_secret(
        &logs,
        &[&refused, &garbled, &unauthorized, &listing],
        &[&wrong, &hex::encode(expected)],
    );
}
