//! The real binary against each actor of the trust model: a resource editor who names a host
//! of their own, an anonymous sender of large unsigned bodies, and an operator who would open
//! the console to the cluster.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use support::intake::{self, SECRET, SIGNATURE_HEADER, WAIT};
use support::process::{Deskhook, TempDir, serve_command};

/// A stand-in for a host a resource editor controls: it counts every connection it gets.
struct Catcher {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Catcher {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let addr = listener.local_addr().expect("bound");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn resource(spec: &str) -> String {
    format!(
        "apiVersion: deskhook.dev/v1alpha1\nkind: WebhookAutomation\nmetadata:\n  name: t\nspec:\n{spec}"
    )
}

/// Level 3 with a reply for every ticket in DOC, and Zoho's JWT scheme beside HMAC.
const GOOD: &str = "  automation: {dispatch: true, link: true, respond: true}
  zoho: {region: eu}
  verification:
    zohoJwt: {orgId: '700000001', webhookIds: ['42']}
  routing:
    - name: all
      when: {text: {any: [facture]}}
      then: {replyTemplate: ack}
  replies:
    from: {default: support@example.fr}
    templates: {ack: 'Bonjour, votre demande est bien reçue.'}
    llm: {model: m}
";

/// [`GOOD`] plus where a resource editor would like the key, the replies and the keys to come
/// from.
fn hijacked(catcher: &Catcher) -> String {
    GOOD.replace(
        "llm: {model: m}",
        &format!("llm: {{model: m, url: 'http://{}/v1'}}", catcher.addr),
    )
    .replace(
        "webhookIds: ['42']}",
        &format!(
            "webhookIds: ['42'], jwksUrl: 'http://{}/jwks'}}",
            catcher.addr
        ),
    )
}

fn delivery(ticket: &str) -> Vec<u8> {
    json!([{"eventType": "Ticket_Add", "eventTime": "1714560000000", "orgId": "700000001",
            "payload": {"id": ticket, "subject": "Ma facture", "departmentName": "DOC",
                        "email": "client@example.fr"}}])
    .to_string()
    .into_bytes()
}

/// A JWT whose header names a key id the pod has never seen: verifying it needs the JWKS.
const UNKNOWN_KID_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImF0dGFja2VyLWtleSJ9.eyJpc3MiOiJvcmdJZDo3MDAwMDAwMDEiLCJhdWQiOiJ3ZWJob29rSWQ6NDIifQ.c2ln";

#[tokio::test]
async fn a_resource_naming_its_own_llm_or_jwks_host_is_refused_and_that_host_gets_nothing() {
    let catcher = Catcher::start().await;
    let dir = TempDir::new("hijack");

    // Refused at start: the process says which field and why, and exits.
    let config = dir.write("settings.yaml", &resource(&hijacked(&catcher)));
    let stderr = refused_at_start(
        serve_command(Some(&config))
            .env("ZOHO_WEBHOOK_SECRET", SECRET)
            .env("DESKHOOK_LLM_API_KEY", "llm-key-the-editor-wants"),
    )
    .await;
    assert!(
        stderr.contains("replies.llm.url is not accepted in the resource"),
        "{stderr}"
    );

    // Refused as a live edit: the last good settings stay, and every delivery runs with them.
    let config = dir.write("settings.yaml", &resource(GOOD));
    let server = Deskhook::start({
        let mut command = serve_command(Some(&config));
        command
            .env("ZOHO_WEBHOOK_SECRET", SECRET)
            .env("DESKHOOK_LLM_API_KEY", "llm-key-the-editor-wants");
        command
    })
    .await;
    dir.write("settings.yaml", &resource(&hijacked(&catcher)));
    intake::eventually("the edit to be refused", || async {
        let errors = server.metric("deskhook_config_reload_errors_total").await;
        (errors >= 1.0).then_some(())
    })
    .await;
    for n in 0..5 {
        let reply = server
            .deliver_signed(SECRET, &delivery(&format!("18920000000490{n:02}")))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let forged = intake::post(
        &server.client,
        &server.url("/webhook/zoho-desk"),
        delivery("1892000000049100"),
        &[("X-ZDesk-JWT", UNKNOWN_KID_TOKEN)],
    )
    .await;
    assert_eq!(forged.status, 401, "{}", forged.text);
    intake::eventually("every delivery to be run", || async {
        let runs = server
            .metric(r#"deskhook_workflow_runs_total{result="success"}"#)
            .await;
        (runs >= 5.0).then_some(())
    })
    .await;
    assert_eq!(
        catcher.connections(),
        0,
        "the editor's host was reached: no key, no reply, no request may go there"
    );
}

/// Runs `command`, which must stop before serving, and returns what it wrote to standard error.
async fn refused_at_start(command: &mut tokio::process::Command) -> String {
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("exits in time")
        .expect("runs");
    assert!(!output.status.success(), "the process started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Resident and peak memory of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    };
    (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024)
}

#[tokio::test]
async fn two_hundred_unsigned_megabyte_bodies_cost_little_memory_while_signed_deliveries_pass() {
    // The embedded defaults, and every sender on one address (as behind an ingress that is
    // not a trusted proxy): the forger shares Zoho's address and its failure budget.
    let server = Deskhook::start({
        let mut command = serve_command(None);
        command.env("ZOHO_WEBHOOK_SECRET", SECRET);
        command
    })
    .await;
    // Warm up, so the baseline holds what one delivery needs.
    let reply = server
        .deliver_signed(SECRET, &delivery("1892000000050000"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (baseline, _) = memory(server.pid());

    let junk = vec![b'['; 1024 * 1024];
    let url = server.url("/webhook/zoho-desk");
    let mut floods = Vec::new();
    for _ in 0..200 {
        let client = intake::client();
        let (url, junk) = (url.clone(), junk.clone());
        floods.push(tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(junk)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut signed = Vec::new();
    for n in 0..20 {
        let body = delivery(&format!("18920000000501{n:02}"));
        let signature = intake::hmac_hex(SECRET, &body);
        let client = server.client.clone();
        let url = url.clone();
        signed.push(tokio::spawn(async move {
            intake::post(&client, &url, body, &[(SIGNATURE_HEADER, &signature)])
                .await
                .status
        }));
    }
    for flood in floods {
        let status = flood.await.expect("joined").expect("answered, not reset");
        assert!(matches!(status, 401 | 413), "an unsigned body got {status}");
    }
    for delivery in signed {
        assert_eq!(delivery.await.expect("joined"), 200);
    }
    let (_, peak) = memory(server.pid());
    let grown = peak.saturating_sub(baseline);
    eprintln!("peak RSS grew by {} KiB", grown / 1024);
    assert!(
        grown < 64 * 1024 * 1024,
        "200 unsigned bodies of 1 MiB raised the peak RSS by {} MiB",
        grown / (1024 * 1024)
    );
    assert_eq!(
        server
            .metric(r#"deskhook_webhook_rejections_total{reason="missing_header"}"#)
            .await,
        200.0
    );
}

#[tokio::test]
async fn the_console_is_never_opened_on_an_address_other_pods_reach() {
    let stderr = refused_at_start(
        tokio::process::Command::new(support::process::BIN)
            .env_clear()
            .env("ZOHO_WEBHOOK_SECRET", SECRET)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "0.0.0.0:0",
                "--console-open",
            ]),
    )
    .await;
    assert!(
        stderr.contains("--console-open") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_admin_token_shorter_than_32_characters_is_refused_at_start() {
    let stderr = refused_at_start(
        serve_command(None)
            .env("ZOHO_WEBHOOK_SECRET", SECRET)
            .env("DESKHOOK_ADMIN_TOKEN", "short-admin-token"),
    )
    .await;
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(
        !stderr.contains("short-admin-token"),
        "the token is never printed"
    );
}
