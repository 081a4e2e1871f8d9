//! `deskhook serve --kube` as a real process against an in-process fake Kubernetes API.
//!
//! One scenario, in the order an operator lives it: start, flip `respond` with kubectl (or,
//! where kubectl is not installed, which CI does not allow, with the same GET-then-PUT kubectl
//! performs), lose the watch
//! history (410), make a bad edit, delete the resource, shut down. At each step the pod's own
//! metrics, the resource's status, the events and the logs must agree, and the pod must never
//! restart.

mod kube_fake;
mod support;

use std::path::Path;
use std::process::Stdio;

use kube_fake::FakeApi;
use serde_json::{Value, json};
use support::intake::{self, SECRET, eventually};
use support::process::{Deskhook, TempDir};
use tokio::process::Command;

const NS: &str = "desk";
const AUTOMATIONS: &str = "webhookautomations";
/// The test's own requests to the fake carry this agent, so RBAC checks can leave them out.
const EDITOR_AGENT: &str = "deskhook-test-editor";

fn serve_kube(kubeconfig: &Path) -> Command {
    let mut command = support::process::serve_command(None);
    command
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "deskhook-0")
        .env("ZOHO_WEBHOOK_SECRET", SECRET)
        .args(["--kube", "--resource", "support"]);
    command
}

fn automation() -> Value {
    json!({
        "apiVersion": "deskhook.dev/v1alpha1",
        "kind": "WebhookAutomation",
        "metadata": {"name": "support"},
        "spec": {
            "automation": {"dispatch": true, "link": true, "respond": false},
            "departments": ["DOC", "Contact"]
        }
    })
}

fn status_of(fake: &FakeApi) -> Value {
    fake.get(AUTOMATIONS, NS, "support")
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition(status: &Value, kind: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or(Value::Null)
}

fn events(fake: &FakeApi, reason: &str) -> Vec<Value> {
    fake.all("events")
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

/// `kubectl edit` with an editor that flips `respond: false` to `respond: true`, pointed at
/// the fake by a kubeconfig as an operator's kubectl is at a cluster.
async fn kubectl_edit(kubectl: &Path, kubeconfig: &Path, dir: &TempDir) -> Result<String, String> {
    let editor = dir.write(
        "editor.sh",
        // Only the first occurrence: the spec comes before the status in kubectl's YAML.
        "#!/bin/sh\nsed -i '0,/respond: false/s//respond: true/' \"$1\"\n",
    );
    let mut permissions = std::fs::metadata(&editor).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&editor, permissions).unwrap();
    let home = dir.path("kubectl-home");
    std::fs::create_dir_all(&home).unwrap();
    let output = tokio::time::timeout(
        intake::WAIT,
        Command::new(kubectl)
            .env_clear()
            .env("HOME", &home)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBE_EDITOR", &editor)
            .env("KUBECONFIG", kubeconfig)
            .args([
                "edit",
                "webhookautomation",
                "support",
                "--validate=false",
                "--output-patch",
            ])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .map_err(|_| "kubectl edit timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// What kubectl edit does, over plain HTTP: GET the object, change it, PUT it back with the
/// resourceVersion it was read at (so a concurrent edit would be refused, not overwritten).
async fn http_edit(fake: &FakeApi, change: impl Fn(&mut Value)) {
    let client = reqwest::Client::builder()
        .user_agent(EDITOR_AGENT)
        .timeout(intake::WAIT)
        .build()
        .unwrap();
    let url = format!(
        "{}/apis/deskhook.dev/v1alpha1/namespaces/{NS}/webhookautomations/support",
        fake.url()
    );
    let mut object: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert!(object["metadata"]["resourceVersion"].is_string());
    change(&mut object);
    let reply = client.put(&url).json(&object).send().await.unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
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

async fn metric_becomes(pod: &Deskhook, series: &str, value: f64) {
    eventually(&format!("{series} = {value}"), || async {
        (pod.metric(series).await == value).then_some(())
    })
    .await;
}

async fn status_becomes(fake: &FakeApi, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let status = status_of(fake);
        check(&status).then_some(status)
    })
    .await
}

#[tokio::test]
async fn a_kubectl_edit_reaches_the_running_pod_and_the_resource_says_so() {
    let fake = FakeApi::start().await;
    fake.create(AUTOMATIONS, NS, automation());
    let dir = TempDir::new("kube-serve");
    let kubeconfig = dir.write("kubeconfig", &fake.kubeconfig(NS));
    let mut pod = Deskhook::start(serve_kube(&kubeconfig)).await;

    // Generation 1 is in force from the start, and the status says so.
    assert_eq!(pod.metric("deskhook_config_generation").await, 1.0);
    assert_eq!(
        pod.metric(r#"deskhook_automation_enabled{flag="respond"}"#)
            .await,
        0.0
    );
    let status = status_becomes(&fake, "Ready for generation 1", |s| {
        s["observedGeneration"] == 1 && condition(s, "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(
        (status["pods"].clone(), status["updatedPods"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(condition(&status, "Valid")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["status"], "False");

    // Flip respond with kubectl; where it is not installed (never in CI), as kubectl would.
    let kubectl = support::tools::require(
        "a_kubectl_edit_reaches_the_running_pod_and_the_resource_says_so (kubectl edit step)",
        &["kubectl"],
        "kubernetes-client",
    );
    let edited_by = match kubectl {
        Some(kubectl) => match kubectl_edit(&kubectl, &kubeconfig, &dir).await {
            Ok(output) => format!("kubectl edit ({})", output.trim()),
            Err(output) => panic!("kubectl edit failed against the fake API:\n{output}"),
        },
        None => {
            http_edit(&fake, |o| o["spec"]["automation"]["respond"] = json!(true)).await;
            "plain HTTP GET then PUT with resourceVersion (kubectl is not installed)".to_owned()
        }
    };
    // Written past the test harness's capture so every run shows which path it took.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("kube_serve: the edit was made with {edited_by}\n").as_bytes(),
    );

    metric_becomes(&pod, r#"deskhook_automation_enabled{flag="respond"}"#, 1.0).await;
    assert_eq!(pod.metric("deskhook_config_generation").await, 2.0);
    let status = status_becomes(&fake, "Ready for generation 2", |s| {
        s["observedGeneration"] == 2
            && s["updatedPods"] == 1
            && condition(s, "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(status["generationInForce"], 2);
    assert_eq!(status["flags"]["respond"], true);
    let flips = eventually("one FlagChanged event", || async {
        let flips = events(&fake, "FlagChanged");
        (!flips.is_empty()).then_some(flips)
    })
    .await;
    assert_eq!(flips.len(), 1, "{flips:?}");
    assert_eq!(flips[0]["note"], "respond false → true");
    assert_eq!(flips[0]["regarding"]["name"], "support");
    assert_eq!(pod.output.events_with("automation flag changed").len(), 1);

    // The API server compacts its history: the watch gets 410 and relists, and an edit made
    // meanwhile still arrives.
    fake.expire_watches();
    http_patch(&fake, json!({"spec": {"automation": {"dispatch": false}}})).await;
    metric_becomes(&pod, r#"deskhook_automation_enabled{flag="dispatch"}"#, 0.0).await;
    assert_eq!(pod.metric("deskhook_config_generation").await, 3.0);
    assert!(pod.metric("deskhook_kube_watch_errors_total").await >= 1.0);
    eventually("the dispatch flip recorded", || async {
        (events(&fake, "FlagChanged").len() == 2).then_some(())
    })
    .await;

    // A network cut (or an API-server restart) ends the watch; it resumes where it stopped.
    fake.cut_watches();

    // A bad edit: refused, counted, reported; the last good settings stay.
    http_patch(&fake, json!({"spec": {"queue": {"workers": 0}}})).await;
    let status = status_becomes(&fake, "Valid=False for generation 4", |s| {
        s["observedGeneration"] == 4 && condition(s, "Valid")["status"] == "False"
    })
    .await;
    assert_eq!(
        condition(&status, "Valid")["message"],
        "queue.workers must be between 1 and 256, got 0"
    );
    assert_eq!(condition(&status, "Ready")["reason"], "InvalidSpec");
    assert_eq!(status["generationInForce"], 3);
    assert_eq!(pod.metric("deskhook_config_generation").await, 3.0);
    assert_eq!(pod.metric("deskhook_config_reload_errors_total").await, 1.0);
    eventually("one InvalidSpec event", || async {
        (events(&fake, "InvalidSpec").len() == 1).then_some(())
    })
    .await;

    // Deleting the resource: read-only, loudly, and still running.
    fake.delete(AUTOMATIONS, NS, "support");
    metric_becomes(&pod, r#"deskhook_automation_enabled{flag="link"}"#, 0.0).await;
    assert_eq!(pod.metric("deskhook_config_generation").await, 0.0);
    pod.output
        .wait_for("the read-only error", |e| {
            e["level"] == "ERROR"
                && e["fields"]["message"]
                    .as_str()
                    .or(e["message"].as_str())
                    .is_some_and(|m| m.contains("read-only"))
        })
        .await;

    // Never restarted: one start-up, one process.
    assert_eq!(pod.output.events_with("deskhook ready").len(), 1);

    // Shutdown hands the writer Lease over and withdraws the pod's report.
    pod.terminate().await;
    let exit = pod.wait_exit().await;
    assert!(exit.success(), "{exit}");
    let leader = fake
        .get("leases", NS, "deskhook-support-status-writer")
        .expect("the writer Lease exists");
    assert!(
        leader["spec"]["holderIdentity"].is_null(),
        "released: {leader}"
    );
    assert!(
        fake.get("leases", NS, "deskhook-support-pod-deskhook-0")
            .is_none(),
        "the pod's report is withdrawn"
    );

    // RBAC: the pod used exactly the access manifests/rbac.yaml grants.
    let used: std::collections::BTreeSet<(String, String, String)> = fake
        .log()
        .into_iter()
        .filter(|r| !r.user_agent.starts_with("kubectl") && r.user_agent != EDITOR_AGENT)
        .map(|r| (r.group, r.resource, r.verb))
        .collect();
    let granted: std::collections::BTreeSet<(String, String, String)> = deskhook::kube::ACCESS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(used, granted, "calls made vs access granted");
}
