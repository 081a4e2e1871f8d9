//! The real `deskhook` binary: live settings edits, SIGTERM, secrets kept out of the logs,
//! `deskhook sign`, and refusing to start unverified.

mod support;

use std::process::Stdio;

use serde_json::json;
use support::intake::{self, WAIT, hmac_hex};
use support::process::{BIN, Deskhook, TempDir, serve_command};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const SECRET: &str = "process-test-secret-5b9e";

/// A settings file with `respond` as given and everything else at the seed's Level 1.
fn settings(respond: bool) -> String {
    format!(
        "apiVersion: deskhook.dev/v1alpha1\n\
         kind: WebhookAutomation\n\
         metadata:\n  name: test\n\
         spec:\n\
         \x20 automation:\n    dispatch: true\n    link: true\n    respond: {respond}\n\
         \x20 events: [Ticket_Add, Ticket_Update, Ticket_Thread_Add]\n\
         \x20 queue:\n    capacity: 100\n    workers: 2\n    dedupeWindowSeconds: 3600\n\
         \x20 zoho:\n    region: eu\n"
    )
}

fn event(ticket: &str) -> Vec<u8> {
    json!([{"eventType": "Ticket_Add", "eventTime": "1714560000000", "orgId": "700000001",
            "payload": {"id": ticket, "departmentName": "DOC"}}])
    .to_string()
    .into_bytes()
}

/// Runs `deskhook sign` with `secrets` in ZOHO_WEBHOOK_SECRET and `body` on standard input.
async fn sign(secrets: Option<&str>, args: &[&str], body: &[u8]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.env_clear().arg("sign").args(args);
    if let Some(secrets) = secrets {
        command.env("ZOHO_WEBHOOK_SECRET", secrets);
    }
    pipe_through(command, body).await
}

async fn pipe_through(mut command: Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the command starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input).await.expect("stdin takes the body");
    drop(stdin);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the command ends in time")
        .expect("the output is readable")
}

#[tokio::test]
async fn a_settings_file_edit_flips_a_flag_without_a_restart() {
    let dir = TempDir::new("flip");
    let config = dir.write("settings.yaml", &settings(false));
    let server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command.env("ZOHO_WEBHOOK_SECRET", SECRET);
        command
    })
    .await;
    let respond = r#"deskhook_automation_enabled{flag="respond"}"#;
    assert_eq!(server.stats().await["configuration"]["auto_respond"], false);
    assert_eq!(server.metric(respond).await, 0.0);
    assert_eq!(server.get("/metrics").await.status, 404);

    // The edit takes effect by itself: the wait is the suite's generous bound, not a claim
    // about how fast a loaded machine polls the file.
    dir.write("settings.yaml", &settings(true));
    let stats = intake::eventually("the edit to be in force", || async {
        let stats = server.stats().await;
        let applied =
            stats["configuration"]["auto_respond"] == true && server.metric(respond).await == 1.0;
        applied.then_some(stats)
    })
    .await;
    assert_eq!(stats["configuration"]["generation"], 2);
    assert_eq!(
        server.metric("deskhook_config_reload_errors_total").await,
        0.0
    );
    let reloaded = server
        .output
        .wait_for("the reload log line", |e| {
            e["message"] == "settings reloaded"
        })
        .await;
    assert_eq!(reloaded["generation"], 2);
}

#[tokio::test]
async fn an_invalid_settings_edit_keeps_the_last_good_settings_and_is_counted() {
    let dir = TempDir::new("invalid-edit");
    let config = dir.write("settings.yaml", &settings(false));
    let server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command.env("ZOHO_WEBHOOK_SECRET", SECRET);
        command
    })
    .await;

    let misspelt = settings(true).replace("respond: true", "respnd: true");
    dir.write("settings.yaml", &misspelt);
    intake::eventually("the reload error to be counted", || async {
        (server.metric("deskhook_config_reload_errors_total").await == 1.0).then_some(())
    })
    .await;
    let stats = server.stats().await;
    assert_eq!(stats["configuration"]["auto_respond"], false);
    assert_eq!(stats["configuration"]["generation"], 1);
    assert_eq!(stats["counters"]["config_reload_errors"], 1);
    let failed = server
        .output
        .wait_for("the reload failure line", |e| {
            e["message"] == "settings reload failed; the last good settings stay in force"
        })
        .await;
    assert_eq!(failed["level"], "ERROR");
    let reply = server
        .deliver_signed(SECRET, &event("1892000000042301"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // A later valid edit still applies.
    dir.write("settings.yaml", &settings(true));
    intake::eventually("the corrected edit to apply", || async {
        (server.stats().await["configuration"]["auto_respond"] == true).then_some(())
    })
    .await;
    assert_eq!(
        server.metric("deskhook_config_reload_errors_total").await,
        1.0
    );
}

#[tokio::test]
async fn sigterm_turns_readiness_off_finishes_queued_work_and_exits_cleanly() {
    let dir = TempDir::new("sigterm");
    let config = dir.write("settings.yaml", &settings(false));
    let mut server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command
            .env("ZOHO_WEBHOOK_SECRET", SECRET)
            .args(["--shutdown-delay", "1"]);
        command
    })
    .await;
    assert_eq!(server.admin_get("/ready").await.status, 200);
    let reply = server
        .deliver_signed(SECRET, &event("1892000000042401"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    server.terminate().await;
    let ready = intake::eventually("readiness to turn false", || async {
        let reply = server.admin_get("/ready").await;
        (reply.status == 503).then_some(reply.json)
    })
    .await;
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["draining"], true);

    let status = server.wait_exit().await;
    assert!(status.success(), "exit status {status}");
    let output = &server.output;
    let finished = output.events_with("workflow finished");
    assert!(
        finished
            .iter()
            .any(|e| e["ticket_id"] == "1892000000042401"),
        "{}",
        output.text()
    );
    assert_eq!(
        output
            .events_with("shutdown requested: readiness is now false")
            .len(),
        1
    );
    assert_eq!(
        output
            .events_with("shutdown complete: every queued event was processed")
            .len(),
        1,
        "{}",
        output.text()
    );
}

#[tokio::test]
async fn no_secret_appears_in_the_logs() {
    const ADMIN: &str = "admin-token-process-93e1-7c2f0d5ab8e4";
    const OLD: &str = "retiring-secret-d20a";
    let dir = TempDir::new("secrets");
    let config = dir.write("settings.yaml", &settings(false));
    let mut server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command
            .env("RUST_LOG", "debug")
            .env("ZOHO_WEBHOOK_SECRET", format!("{SECRET},{OLD}"))
            .env("DESKHOOK_ADMIN_TOKEN", ADMIN);
        command
    })
    .await;

    let good = event("1892000000042501");
    let good_signature = hmac_hex(SECRET, &good);
    assert_eq!(server.deliver_signed(SECRET, &good).await.status, 200);
    assert_eq!(
        server
            .deliver_signed(OLD, &event("1892000000042502"))
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .deliver_signed("guessed-secret", &event("1892000000042503"))
            .await
            .status,
        401
    );
    assert_eq!(server.deliver_signed(SECRET, b"{broken").await.status, 400);
    let url = server.url("/webhook/test");
    for token in ["wrong-token", ADMIN] {
        let bearer = format!("Bearer {token}");
        intake::post(
            &server.client,
            &url,
            json!({"ticket_id": "1892000000042504"}).to_string(),
            &[("authorization", &bearer)],
        )
        .await;
    }
    server.terminate().await;
    assert!(server.wait_exit().await.success());

    let output = server.output.text();
    assert!(
        output.contains("Webhook signature verification failed")
            && output.contains("manual run finished"),
        "the logs were not captured:\n{output}"
    );
    for secret in [SECRET, OLD, ADMIN, good_signature.as_str()] {
        assert!(
            !output.contains(secret),
            "{secret} appears in the logs:\n{output}"
        );
    }
}

#[tokio::test]
async fn a_rotated_hmac_secret_file_takes_effect_without_a_restart() {
    let dir = TempDir::new("secret-file");
    let config = dir.write("settings.yaml", &settings(false));
    let secrets = dir.write("hmac", "key-before-rotation\n");
    let server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command.arg("--hmac-secret-file").arg(&secrets);
        command
    })
    .await;
    let reply = server
        .deliver_signed("key-before-rotation", &event("1892000000042601"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    dir.write("hmac", "key-after-rotation\n");
    let mut n = 0;
    intake::eventually("the rotated key to verify", || {
        n += 1;
        let body = event(&format!("18920000000426{n:02}"));
        let server = &server;
        async move {
            let reply = server.deliver_signed("key-after-rotation", &body).await;
            (reply.status == 200).then_some(())
        }
    })
    .await;
    let reply = server
        .deliver_signed("key-before-rotation", &event("1892000000042699"))
        .await;
    // Refused: 401, or 429 when the failed polls above spent this client's failure budget.
    assert!(
        matches!(reply.status, 401 | 429),
        "the retired key still verifies: {} {}",
        reply.status,
        reply.text
    );
}

#[tokio::test]
async fn the_seed_environment_variables_configure_the_server_without_a_settings_file() {
    let server = Deskhook::start({
        let mut command = serve_command(None);
        command
            .env("ZOHO_WEBHOOK_SECRET", SECRET)
            .env("WEBHOOK_AUTO_RESPOND", "true")
            .env("WEBHOOK_DEPARTMENTS", "DOC,Contact");
        command
    })
    .await;
    let stats = server.stats().await;
    assert_eq!(stats["configuration"]["auto_respond"], true);
    assert_eq!(stats["configuration"]["source"], "environment");
    assert_eq!(
        stats["configuration"]["departments"],
        json!(["DOC", "Contact"])
    );
    let reply = server
        .deliver_signed(SECRET, &event("1892000000042701"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json["events"][0]["status"], "queued",
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn the_server_refuses_to_start_without_verification() {
    let dir = TempDir::new("unverified");
    let config = dir.write("settings.yaml", &settings(false));
    let output = tokio::time::timeout(WAIT, serve_command(Some(&config)).output())
        .await
        .expect("the refusal comes in time")
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started without verification");
    assert!(
        stderr.contains("no delivery verification is configured"),
        "{stderr}"
    );
}

#[tokio::test]
async fn insecure_no_verification_starts_with_a_warning_and_accepts_unsigned_deliveries() {
    let dir = TempDir::new("insecure");
    let config = dir.write("settings.yaml", &settings(false));
    let server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command.arg("--insecure-no-verification");
        command
    })
    .await;
    let warning = server
        .output
        .wait_for("the insecure warning", |e| {
            e["level"] == "WARN"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("NOT verified"))
        })
        .await;
    assert!(warning["message"].is_string());
    let reply = intake::post(
        &server.client,
        &server.url("/webhook/zoho-desk"),
        event("1892000000042801"),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(server.stats().await["insecure_no_verification"], true);
}

#[tokio::test]
async fn sign_prints_the_same_hex_hmac_as_openssl() {
    let body = br#"[{"eventType":"Ticket_Add","payload":{"id":"198709000438366101"}}]"#;
    let ours = sign(Some(" first-key , second-key"), &[], body).await;
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let ours = String::from_utf8(ours.stdout).expect("hex is UTF-8");

    let mut openssl = Command::new("openssl");
    openssl.args(["dgst", "-sha256", "-hmac", "first-key"]);
    let theirs = pipe_through(openssl, body).await;
    assert!(theirs.status.success(), "openssl failed");
    // `SHA2-256(stdin)= <hex>` (or `(stdin)= <hex>` in older versions).
    let theirs = String::from_utf8(theirs.stdout).expect("openssl prints text");
    let theirs = theirs
        .split_whitespace()
        .last()
        .expect("openssl printed a digest");

    assert_eq!(ours.trim(), theirs);
    assert_eq!(ours, format!("{}\n", hmac_hex("first-key", body)));
}

#[tokio::test]
async fn sign_matches_the_rfc_4231_vector_in_hex_and_base64() {
    let body = b"what do ya want for nothing?";
    let hex = sign(Some("Jefe"), &[], body).await;
    assert_eq!(
        String::from_utf8_lossy(&hex.stdout),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843\n"
    );
    let base64 = sign(Some("Jefe"), &["--base64"], body).await;
    assert_eq!(
        String::from_utf8_lossy(&base64.stdout),
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=\n"
    );
}

#[tokio::test]
async fn sign_without_a_secret_fails_and_says_why() {
    let output = sign(None, &[], b"{}").await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ZOHO_WEBHOOK_SECRET is not set"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn an_admin_token_file_rotated_to_a_short_token_keeps_the_token_in_force() {
    const LONG: &str = "admin-token-before-rotation-4f81c07d2a";
    const SHORT: &str = "too-short-token";
    let dir = TempDir::new("admin-token-file");
    let config = dir.write("settings.yaml", &settings(false));
    let tokens = dir.write("admin-token", &format!("{LONG}\n"));
    let server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command
            .env("ZOHO_WEBHOOK_SECRET", SECRET)
            .arg("--admin-token-file")
            .arg(&tokens);
        command
    })
    .await;
    let decisions = |token: &'static str| {
        let server = &server;
        async move {
            intake::get(
                &server.client,
                &server.url("/webhook/decisions"),
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
            .status
        }
    };
    assert_eq!(decisions(LONG).await, 200);

    dir.write("admin-token", &format!("{SHORT}\n"));
    server
        .output
        .wait_for("the short token to be refused", |e| {
            e["message"] == "secret file holds a key too short to use; the keys in force stay"
        })
        .await;
    assert_eq!(decisions(SHORT).await, 401);
    assert_eq!(decisions(LONG).await, 200);
    assert!(
        !server.output.text().contains(SHORT),
        "the token is never logged"
    );
}
