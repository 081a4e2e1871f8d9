//! Spans leave the process over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and the
//! last ones are flushed at shutdown.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use support::intake::{ADMIN_TOKEN, SECRET, eventually, post as http_post};
use support::process::{Deskhook, TempDir, serve_command};

/// A stand-in OpenTelemetry collector that keeps every body posted to `/v1/traces`.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(received): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                    received.lock().unwrap().push(body);
                    ""
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn workflow_spans_are_exported_and_flushed_at_shutdown() {
    let (endpoint, received) = collector().await;
    let dir = TempDir::new("otlp");
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhookautomation.yaml");
    let config = dir.write("settings.yaml", &std::fs::read_to_string(config).unwrap());
    let mut command = serve_command(Some(&config));
    command
        .env("ZOHO_WEBHOOK_SECRET", SECRET)
        .env("DESKHOOK_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "deskhook");
    let mut deskhook = Deskhook::start(command).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let answer = http_post(
        &deskhook.client,
        &deskhook.url("/webhook/test"),
        r#"{"ticket_id": "198709000438366101"}"#,
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    deskhook.terminate().await;
    let status = tokio::time::timeout(Duration::from_secs(20), deskhook.wait_exit())
        .await
        .expect("exits in time");
    assert!(status.success(), "{status}");
    let bodies = eventually("exported spans", || {
        let received = received.clone();
        async move {
            let bodies = received.lock().unwrap().clone();
            (!bodies.is_empty()).then_some(bodies)
        }
    })
    .await;
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.iter().copied()).collect();
    for span in [b"workflow".as_slice(), b"deskhook"] {
        assert!(
            contains(&all, span),
            "no {:?} in the exported spans",
            String::from_utf8_lossy(span)
        );
    }
}
