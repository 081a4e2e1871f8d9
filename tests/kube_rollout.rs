//! Guarded rollout across two pods against the fake Kubernetes API and the fake Zoho: the
//! elected writer advances dispatch's steps from the counts both pods report, rolls it back
//! when moves fail past the guard (percent 0 on both pods, `RolledBack=True`, the
//! `RolloutAborted` Event, the abort metric, then zero moves), and a bumped `restartedAt`
//! resumes it.

mod kube_fake;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskhook::config::{Settings, SettingsHandle, load_spec_file};
use deskhook::event::TicketEvent;
use deskhook::kube::{KubeOptions, KubeRuntime, Timings, automation_api, initial_settings};
use deskhook::metrics::Metrics;
use deskhook::workflow::Run;
use deskhook::workflow::ledger::MemoryLedger;
use deskhook::workflow::{AutomationWorkflow, StepStatus, Workflow};
use kube::api::{Patch, PatchParams};
use kube_fake::FakeApi;
use serde_json::{Value, json};
use support::fake_zoho::{FakeZoho, Fault};
use support::intake::eventually;

const NS: &str = "desk";
const TICKETS: u64 = 260;

fn ticket_id(n: u64) -> String {
    format!("{}", 198_709_000_438_366_101u64 + n * 7919)
}

/// A portal whose every ticket the `refus-cma` rule moves to another department.
async fn portal() -> FakeZoho {
    let fake = FakeZoho::start().await;
    fake.seed_reference_portal();
    for n in 0..TICKETS {
        let id = ticket_id(n);
        fake.add_ticket(json!({
            "id": id, "ticketNumber": format!("{}", 100 + n),
            "subject": "Mon dossier d'inscription", "status": "Open", "statusType": "Open",
            "departmentId": "1", "email": "zoe.martin@example.fr",
            "cf": {"cf_opportunite": null}
        }));
        fake.add_thread(
            &id,
            json!({
                "id": format!("1892000000099{n:03}"), "direction": "in", "channel": "EMAIL",
                "fromEmailAddress": "Zoé Martin <zoe.martin@example.fr>",
                "content": "<div>Bonjour, où en est mon dossier ? Merci</div>",
                "contentType": "html", "createdTime": "2026-11-20T10:00:00.000Z",
                "author": {"name": "Zoé Martin", "email": "zoe.martin@example.fr", "type": "END_USER"}
            }),
        );
    }
    fake
}

/// The reference configuration, dispatch alone on, rolled out in steps of 1 s.
fn automation() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhookautomation.yaml");
    let mut spec = serde_json::to_value(load_spec_file(&path).unwrap()).unwrap();
    spec["automation"] = json!({"dispatch": true, "link": false});
    spec["zoho"]["orgId"] = json!(support::fake_zoho::ORG_ID);
    spec["rollout"] = json!({"dispatch": {
        "steps": [20, 60, 100], "stepInterval": "1s", "minDecisionsPerStep": 3,
        "guard": {"maxFailureRatio": 0.2, "minSamples": 10}
    }});
    json!({
        "apiVersion": "deskhook.dev/v1alpha1", "kind": "WebhookAutomation",
        "metadata": {"name": "support"}, "spec": spec
    })
}

struct Pod {
    settings: SettingsHandle,
    metrics: Arc<Metrics>,
    options: KubeOptions,
    workflow: AutomationWorkflow,
    runtime: KubeRuntime,
}

impl Pod {
    async fn start(name: &str, api: &FakeApi, zoho: &FakeZoho) -> Self {
        let config = kube::Config::new(api.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let mut options = KubeOptions::new("support", name);
        options.namespace = Some(NS.into());
        options.timings = Timings {
            leader_lease: Duration::from_secs(3),
            leader_retry: Duration::from_millis(100),
            member_lease: Duration::from_secs(5),
            member_renew: Duration::from_millis(100),
            first_list: Duration::from_secs(10),
        };
        let settings = SettingsHandle::new(initial_settings(|_| None));
        let metrics = Arc::new(Metrics::new());
        let runtime = deskhook::kube::start_with_client(
            client,
            options.clone(),
            settings.clone(),
            metrics.clone(),
        )
        .await
        .expect("the pod starts");
        let workflow = AutomationWorkflow::new(
            Some(zoho.clients_with(FakeZoho::fast_options(), &metrics)),
            Arc::new(MemoryLedger::default()),
            None,
        )
        .with_rollouts(options.rollouts.clone());
        Self {
            settings,
            metrics,
            options,
            workflow,
            runtime,
        }
    }

    fn percent(&self) -> u32 {
        self.options
            .rollouts
            .percent(&self.settings.current(), "dispatch")
    }

    async fn run(&self, n: u64) -> StepStatus {
        let id = ticket_id(n);
        let job = Run {
            id: n + 1,
            event: TicketEvent::new(
                id.clone(),
                "Ticket_Add".into(),
                None,
                Some(1),
                json!({ "id": id }),
            ),
            attempt: 1,
            enqueued_at: Instant::now(),
        };
        let settings: Arc<Settings> = self.settings.current();
        let report =
            tokio::time::timeout(Duration::from_secs(20), self.workflow.run(&job, &settings))
                .await
                .expect("the workflow finishes");
        report
            .steps
            .iter()
            .find(|s| s.step == "dispatch")
            .map(|s| s.status)
            .unwrap_or_else(|| panic!("no dispatch step: {report:?}"))
    }
}

fn rollout_of(api: &FakeApi) -> Value {
    api.get("webhookautomations", NS, "support")
        .map(|o| o["status"]["rollout"]["dispatch"].clone())
        .unwrap_or(Value::Null)
}

async fn rollout_becomes(api: &FakeApi, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let rollout = rollout_of(api);
        check(&rollout).then_some(rollout)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_advance_a_failing_action_rolls_back_on_both_pods_and_a_spec_bump_resumes_it() {
    let api = FakeApi::start().await;
    api.create("webhookautomations", NS, automation());
    let zoho = portal().await;
    let pods = [
        Pod::start("deskhook-0", &api, &zoho).await,
        Pod::start("deskhook-1", &api, &zoho).await,
    ];

    let first = rollout_becomes(&api, "dispatch at its first step", |r| r["percent"] == 20).await;
    assert_eq!(first["state"], "Progressing");
    assert!(first["nextStepAt"].is_string(), "{first}");
    eventually("both pods at 20 %", || async {
        pods.iter().all(|p| p.percent() == 20).then_some(())
    })
    .await;

    // Healthy moves on both pods: the step widens once a second passed with 3 decisions.
    let mut next = 0;
    let mut moved = 0;
    while moved < 6 {
        if pods[(next % 2) as usize].run(next).await == StepStatus::Done {
            moved += 1;
        }
        next += 1;
    }
    let second = rollout_becomes(&api, "dispatch at its second step", |r| r["step"] == 1).await;
    assert_eq!(second["percent"], 60);
    let summary =
        api.get("webhookautomations", NS, "support").unwrap()["status"]["rolloutSummary"].clone();
    assert_eq!(summary, "dispatch=Progressing 60%");

    // Every move fails now: past 20 % of at least 10 decisions, dispatch is rolled back.
    zoho.fail_next("move_ticket", 100_000, Fault::ServerError);
    let mut failed = 0;
    while failed < 12 {
        if pods[(next % 2) as usize].run(next).await == StepStatus::Failed {
            failed += 1;
        }
        next += 1;
    }
    let rolled =
        rollout_becomes(&api, "dispatch rolled back", |r| r["state"] == "RolledBack").await;
    assert_eq!(rolled["percent"], 0);
    eventually("both pods at 0 %", || async {
        pods.iter().all(|p| p.percent() == 0).then_some(())
    })
    .await;
    let status = api.get("webhookautomations", NS, "support").unwrap()["status"].clone();
    let condition = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "RolledBack")
        .cloned()
        .expect("a RolledBack condition");
    assert_eq!(condition["status"], "True");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("dispatch")
            && message.contains("failure ratio")
            && message.contains("0.200"),
        "{message}"
    );
    let aborted: Vec<Value> = api
        .all("events")
        .into_iter()
        .filter(|e| e["reason"] == "RolloutAborted")
        .collect();
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    assert_eq!(aborted[0]["type"], "Warning");
    let series = r#"deskhook_rollout_aborts_total{action="dispatch",reason="failure_ratio"} 1"#;
    assert!(
        pods.iter().any(|p| p.metrics.render().contains(series)),
        "no pod counts the abort"
    );
    for pod in &pods {
        assert!(
            pod.metrics
                .render()
                .contains(r#"deskhook_rollout_percent{action="dispatch"} 0"#)
        );
    }

    // The next 100 tickets produce zero moves.
    let before = zoho.calls_to("move_ticket").len();
    for n in next..next + 100 {
        assert_eq!(
            pods[(n % 2) as usize].run(n).await,
            StepStatus::SkippedFlagOff
        );
    }
    next += 100;
    assert_eq!(zoho.calls_to("move_ticket").len(), before);

    // A bumped restartedAt resumes the rollout at its first step.
    let config = kube::Config::new(api.url().parse().unwrap());
    let editor = automation_api(kube::Client::try_from(config).unwrap(), NS);
    editor
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"rollout": {"dispatch": {"restartedAt": "2026-12-04T22:00:00Z"}}}}),
            ),
        )
        .await
        .unwrap();
    let resumed = rollout_becomes(&api, "dispatch resumed", |r| r["state"] == "Progressing").await;
    assert_eq!(resumed["percent"], 20);
    eventually("both pods at 20 % again", || async {
        pods.iter().all(|p| p.percent() == 20).then_some(())
    })
    .await;
    assert!(next < TICKETS);
    for pod in pods {
        pod.runtime.shutdown().await;
    }
}
