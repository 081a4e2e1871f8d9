//! `deskhook serve --kube` against the fake Kubernetes API: a routing edit is backtested on
//! the decisions the pod retains, and the resource says what it would change
//! (`status.lastChange` and a `RoutingChanged` Event); an edit of flags only is not.

mod kube_fake;
mod support;

use std::path::Path;

use kube_fake::FakeApi;
use serde_json::{Value, json};
use support::intake::{self, ADMIN_TOKEN, SECRET, eventually};
use support::process::{Deskhook, TempDir};
use tokio::process::Command;

const NS: &str = "desk";
const AUTOMATIONS: &str = "webhookautomations";
const EDITOR_AGENT: &str = "deskhook-test-editor";
const TICKETS: usize = 20;

fn serve_kube(kubeconfig: &Path) -> Command {
    let mut command = support::process::serve_command(None);
    command
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "deskhook-0")
        .env("ZOHO_WEBHOOK_SECRET", SECRET)
        .env("DESKHOOK_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["--kube", "--resource", "support"]);
    command
}

fn routing(billing_keywords: &[&str], accounting_keywords: &[&str]) -> Value {
    json!([
        {"name": "facturation", "priority": 0,
         "when": {"text": {"any": billing_keywords}},
         "then": {"department": "FACTURATION"}},
        {"name": "comptabilite", "priority": 10,
         "when": {"text": {"any": accounting_keywords}},
         "then": {"department": "Contact"}},
    ])
}

fn automation() -> Value {
    json!({
        "apiVersion": "deskhook.dev/v1alpha1",
        "kind": "WebhookAutomation",
        "metadata": {"name": "support"},
        "spec": {
            "automation": {"dispatch": false, "link": false, "respond": false},
            "departments": ["DOC", "Contact", "FACTURATION"],
            "events": ["Ticket_Add"],
            "routing": routing(&["facture*", "paiement"], &["bilan"]),
        }
    })
}

/// Ticket `n`'s subject, and whether it mentions a form of `facture`.
fn subject(n: usize) -> (&'static str, bool) {
    [
        ("Ma FACTURÉ de mars", true),
        ("Bilan annuel", false),
        ("factures impayées", true),
        ("Paiement refusé", false),
        ("Facturation groupée", false),
    ][n % 5]
}

fn status_of(fake: &FakeApi) -> Value {
    fake.get(AUTOMATIONS, NS, "support")
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

fn events(fake: &FakeApi, reason: &str) -> Vec<Value> {
    fake.all("events")
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

async fn status_becomes(fake: &FakeApi, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let status = status_of(fake);
        check(&status).then_some(status)
    })
    .await
}

/// A JSON merge patch, as `kubectl patch --type merge` sends.
async fn http_patch(fake: &FakeApi, patch: Value) {
    let client = reqwest::Client::builder()
        .user_agent(EDITOR_AGENT)
        .timeout(intake::WAIT)
        .build()
        .unwrap();
    let url = format!(
        "{}/apis/deskhook.dev/v1alpha1/namespaces/{NS}/webhookautomations/support",
        fake.url()
    );
    let reply = client
        .patch(&url)
        .header("content-type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
}

/// Every ticket's `Ticket_Add` in one signed delivery, then waits until each is decided.
async fn decide_tickets(pod: &Deskhook) {
    let events: Vec<Value> = (0..TICKETS)
        .map(|n| {
            json!({
                "eventType": "Ticket_Add",
                "payload": {
                    "id": format!("1987090004383{n:05}"),
                    "subject": subject(n).0,
                    "description": "Bonjour",
                    "departmentName": "DOC",
                    "email": format!("client{n}@example.fr"),
                },
            })
        })
        .collect();
    let body = serde_json::to_vec(&events).unwrap();
    let answer = pod.deliver_signed(SECRET, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    eventually("every ticket decided", || async {
        let reply = intake::get(
            &pod.client,
            &pod.url("/webhook/decisions?limit=100"),
            &[("Authorization", &auth)],
        )
        .await;
        let count = reply.json["decisions"].as_array().map_or(0, Vec::len);
        (count == TICKETS).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_routing_edit_says_how_many_recent_tickets_would_route_differently() {
    let fake = FakeApi::start().await;
    fake.create(AUTOMATIONS, NS, automation());
    let dir = TempDir::new("kube-backtest");
    let kubeconfig = dir.write("kubeconfig", &fake.kubeconfig(NS));
    let pod = Deskhook::start(serve_kube(&kubeconfig)).await;

    // The first generation is backtested on nothing yet.
    let status = status_becomes(&fake, "lastChange for generation 1", |s| {
        s["lastChange"]["generation"] == 1
    })
    .await;
    assert_eq!(
        (
            status["lastChange"]["compared"].clone(),
            status["lastChange"]["changed"].clone()
        ),
        (json!(0), json!(0))
    );
    decide_tickets(&pod).await;

    // Move `facture*` from the billing rule to the accounting rule.
    http_patch(
        &fake,
        json!({"spec": {"routing": routing(&["paiement"], &["bilan", "facture*"])}}),
    )
    .await;
    let moved = (0..TICKETS).filter(|n| subject(*n).1).count();
    let status = status_becomes(&fake, "lastChange for generation 2", |s| {
        s["lastChange"]["generation"] == 2
    })
    .await;
    let change = &status["lastChange"];
    assert_eq!(change["compared"], TICKETS);
    assert_eq!(change["changed"], moved);
    assert_eq!(
        change["byKind"],
        json!({"department": moved, "rule": moved})
    );
    let routed = eventually("a RoutingChanged event", || async {
        let found = events(&fake, "RoutingChanged");
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(routed.len(), 1, "{routed:?}");
    assert_eq!(
        routed[0]["note"],
        format!("{moved} of {TICKETS} recent tickets would route differently (rule {moved})")
    );
    assert_eq!(routed[0]["type"], "Normal");
    assert_eq!(routed[0]["regarding"]["name"], "support");

    // Flags decide nothing about routing: the last change stays that of generation 2.
    http_patch(&fake, json!({"spec": {"automation": {"respond": true}}})).await;
    let status = status_becomes(&fake, "generation 3 observed", |s| {
        s["observedGeneration"] == 3 && s["flags"]["respond"] == true
    })
    .await;
    assert_eq!(status["lastChange"]["generation"], 2);
    assert_eq!(events(&fake, "RoutingChanged").len(), 1);
    pod.terminate().await;
}

/// A decision made offline from an event carrying `subject`, under `spec`, as the workflow
/// records it.
async fn recorded(n: usize, spec: &Value) -> deskhook::workflow::DecisionReport {
    use deskhook::config::{Settings, SettingsSource};
    use deskhook::workflow::Workflow;
    let spec = serde_json::from_value(spec.clone()).unwrap();
    let settings = Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap();
    let workflow = deskhook::workflow::AutomationWorkflow::new(
        None,
        std::sync::Arc::new(deskhook::workflow::ledger::MemoryLedger::default()),
        None,
    );
    let job = deskhook::workflow::Run {
        id: n as u64,
        event: deskhook::event::TicketEvent::new(
            format!("1987090004383{n:05}"),
            "Ticket_Add".into(),
            None,
            None,
            json!({"subject": subject(n).0, "description": "Bonjour", "departmentName": "DOC"}),
        ),
        attempt: 1,
        enqueued_at: std::time::Instant::now(),
    };
    workflow.run(&job, &settings).await
}

#[tokio::test]
async fn the_cli_backtest_compares_with_the_live_resource() {
    let fake = FakeApi::start().await;
    fake.create(AUTOMATIONS, NS, automation());
    let dir = TempDir::new("kube-backtest-cli");
    let kubeconfig = dir.write("kubeconfig", &fake.kubeconfig(NS));
    // Decisions made long ago under settings with no rule at all: compared with what they
    // recorded, every billing or accounting ticket would change.
    let mut bare = automation()["spec"].clone();
    bare["routing"] = json!([]);
    let mut lines = String::new();
    for n in 0..TICKETS {
        let report = recorded(n, &bare).await;
        assert!(report.facts.is_some());
        lines.push_str(&serde_json::to_string(&report).unwrap());
        lines.push('\n');
    }
    let archive = dir.write("decisions.jsonl", &lines);
    let mut edited = automation();
    edited["spec"]["routing"] = routing(&["paiement"], &["bilan", "facture*"]);
    let edited = dir.write("edited.yaml", &serde_yaml::to_string(&edited).unwrap());

    let run = |baseline: &[&str]| {
        let mut command = Command::new(support::process::BIN);
        command
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .args(["backtest", "--format", "json", "--archive"])
            .arg(&archive)
            .arg("--settings")
            .arg(&edited)
            .args(baseline);
        async move {
            let output = tokio::time::timeout(intake::WAIT, command.output())
                .await
                .expect("the backtest finishes")
                .expect("the binary runs");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice::<Value>(&output.stdout).expect("JSON")
        }
    };
    let against_live = run(&["--kube", "support", "--namespace", NS]).await;
    let moved = (0..TICKETS).filter(|n| subject(*n).1).count();
    assert_eq!(against_live["compared"], TICKETS);
    assert_eq!(against_live["changed"], moved, "{against_live}");
    let against_recorded = run(&[]).await;
    let routed = (0..TICKETS)
        .filter(|n| subject(*n).0 != "Facturation groupée")
        .count();
    assert_eq!(against_recorded["changed"], routed, "{against_recorded}");

    let missing = Command::new(support::process::BIN)
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .args(["backtest", "--archive"])
        .arg(&archive)
        .arg("--settings")
        .arg(&edited)
        .args(["--kube", "absent", "--namespace", NS])
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("WebhookAutomation desk/absent does not exist"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
