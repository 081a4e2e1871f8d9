//! The watcher, the status writer and the election against a scripted API server.
//!
//! kube's `Client` runs over a tower-test mock service; [`ApiServer`] plays the API server's
//! part one request at a time, checking each request and answering it, in the order the
//! scenario expects (the `ApiServerVerifier` pattern). Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch as channel;
use tower_test::mock::{self, Handle, SendResponse};

use super::lease::{LeaderElector, leases_api, member_reports};
use super::resource::automation_api;
use super::status::StatusWriter;
use super::watch::{self, KubeMetrics, SettingsWatcher};
use super::*;
use crate::config::SettingsSource;
use crate::crd::AutomationFlags;

const WAIT: Duration = Duration::from_secs(10);
const NS: &str = "desk";
const RESOURCE_PATH: &str = "/apis/deskhook.dev/v1alpha1/namespaces/desk/webhookautomations";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/desk/leases";
const EVENT_PATH: &str = "/apis/events.k8s.io/v1/namespaces/desk/events";

/// One request as the scripted API server sees it.
struct Call {
    method: String,
    path: String,
    query: String,
    body: Value,
    reply: SendResponse<Response<Body>>,
}

impl Call {
    fn respond(self, code: u16, body: Value) {
        let response = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.reply.send_response(response);
    }

    fn ok(self, body: Value) {
        self.respond(200, body);
    }

    /// A watch answer: the events, one JSON document per line, then the end of the stream.
    fn stream(self, events: &[Value]) {
        let mut body = Vec::new();
        for event in events {
            body.extend(serde_json::to_vec(event).unwrap());
            body.push(b'\n');
        }
        let response = Response::builder()
            .status(200)
            .body(Body::from(body))
            .unwrap();
        self.reply.send_response(response);
    }

    fn is_watch(&self) -> bool {
        self.query.contains("watch=true")
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": reason, "reason": reason, "code": code
    })
}

/// The API server's side of the mock.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, NS), ApiServer(handle))
}

impl ApiServer {
    /// The next request, which must be `method` on a path starting with `path`.
    async fn expect(&mut self, method: &str, path: &str) -> Call {
        let (request, reply) = tokio::time::timeout(WAIT, self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no {method} {path} within {WAIT:?}"))
            .expect("the client is alive");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let call = Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            reply,
        };
        assert_eq!(
            (call.method.as_str(), call.path.starts_with(path)),
            (method, true),
            "expected {method} {path}, got {} {}?{}",
            call.method,
            call.path,
            call.query
        );
        call
    }
}

fn automation(generation: i64, version: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "deskhook.dev/v1alpha1",
        "kind": "WebhookAutomation",
        "metadata": {
            "name": "support", "namespace": NS, "uid": "0f3e-77aa-91",
            "generation": generation, "resourceVersion": version
        },
        "spec": spec
    })
}

fn list(items: &[Value], version: &str) -> Value {
    json!({
        "apiVersion": "deskhook.dev/v1alpha1", "kind": "WebhookAutomationList",
        "metadata": {"resourceVersion": version}, "items": items
    })
}

fn respond_on() -> Value {
    json!({"automation": {"respond": true}})
}

/// A watcher task on the mock, with what it drives.
struct Watching {
    api: ApiServer,
    settings: SettingsHandle,
    metrics: Arc<Metrics>,
    observed: channel::Receiver<Option<Arc<Observed>>>,
    listed: channel::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_watching() -> Watching {
    let (client, api) = mock_client();
    let settings = SettingsHandle::new(initial_settings(|_| None));
    let metrics = Arc::new(Metrics::new());
    let (observed_tx, observed) = channel::channel(None);
    let (listed_tx, listed) = channel::channel(false);
    let watcher = SettingsWatcher::new(
        "desk/support".into(),
        settings.clone(),
        metrics.clone(),
        observed_tx,
        listed_tx,
    );
    let task = tokio::spawn(watch::run(
        automation_api(client, NS),
        "support".into(),
        watcher,
        KubeMetrics::register(&metrics),
    ));
    Watching {
        api,
        settings,
        metrics,
        observed,
        listed,
        task,
    }
}

impl Watching {
    /// Answers the initial list with `items` and waits until it is applied.
    async fn listed_with(&mut self, items: &[Value], version: &str) {
        let call = self.api.expect("GET", RESOURCE_PATH).await;
        assert!(!call.is_watch(), "the watcher lists first");
        assert!(
            call.query.contains("fieldSelector=metadata.name%3Dsupport"),
            "only the named resource is listed: {}",
            call.query
        );
        call.ok(list(items, version));
        tokio::time::timeout(WAIT, self.listed.wait_for(|l| *l))
            .await
            .expect("the first list completes")
            .unwrap();
    }

    /// Waits until the settings in force satisfy `check`.
    async fn settle(&self, what: &str, check: impl Fn(&Settings) -> bool) {
        let mut changes = self.settings.subscribe();
        tokio::time::timeout(WAIT, changes.wait_for(|s| check(s)))
            .await
            .unwrap_or_else(|_| panic!("settings never became {what}"))
            .unwrap();
    }
}

#[tokio::test]
async fn the_initial_list_puts_the_resource_in_force() {
    let mut watching = start_watching();
    watching
        .listed_with(&[automation(3, "10", respond_on())], "10")
        .await;
    let settings = watching.settings.current();
    assert_eq!(settings.generation, 3);
    assert!(settings.flags().respond);
    assert_eq!(
        settings.source,
        SettingsSource::Kubernetes("desk/support".into())
    );
    assert_eq!(watching.metrics.config_generation.get(), 3);
    let call = watching.api.expect("GET", RESOURCE_PATH).await;
    assert!(call.is_watch(), "then it watches: {}", call.query);
    assert!(call.query.contains("resourceVersion=10"), "{}", call.query);
}

#[tokio::test]
async fn a_missing_resource_means_read_only_not_a_crash() {
    let mut watching = start_watching();
    watching.listed_with(&[], "10").await;
    let settings = watching.settings.current();
    assert_eq!(*settings.flags(), AutomationFlags::READ_ONLY);
    assert!(matches!(settings.source, SettingsSource::ReadOnly(_)));
    assert!(watching.observed.borrow().is_none());
}

#[tokio::test]
async fn a_modification_is_applied_once_and_a_status_write_changes_nothing() {
    let mut watching = start_watching();
    watching
        .listed_with(&[automation(1, "10", json!({}))], "10")
        .await;
    assert!(!watching.settings.current().flags().respond);

    let mut with_status = automation(2, "12", respond_on());
    with_status["status"] = json!({"observedGeneration": 2});
    watching
        .api
        .expect("GET", RESOURCE_PATH)
        .await
        .stream(&[json!({
            "type": "MODIFIED", "object": automation(2, "11", respond_on())
        })]);
    watching
        .settle("generation 2", |s| s.generation == 2 && s.flags().respond)
        .await;
    let applied = watching.settings.current();

    let call = watching.api.expect("GET", RESOURCE_PATH).await;
    assert!(
        call.query.contains("resourceVersion=11"),
        "the watch resumes where it stopped: {}",
        call.query
    );
    call.stream(&[json!({"type": "MODIFIED", "object": with_status})]);
    let mut observed = watching.observed.clone();
    tokio::time::timeout(
        WAIT,
        observed.wait_for(|o| {
            o.as_ref()
                .is_some_and(|o| o.status.observed_generation == Some(2))
        }),
    )
    .await
    .expect("the status write is observed")
    .unwrap();
    assert!(
        Arc::ptr_eq(&applied, &watching.settings.current()),
        "the same generation is not applied twice"
    );
}

#[tokio::test]
async fn an_invalid_spec_keeps_the_last_good_settings_and_is_counted() {
    let mut watching = start_watching();
    watching
        .listed_with(&[automation(4, "10", respond_on())], "10")
        .await;
    watching.api.expect("GET", RESOURCE_PATH).await.stream(&[json!({
        "type": "MODIFIED",
        "object": automation(5, "11", json!({"automation": {"respond": false}, "queue": {"workers": 0}}))
    })]);
    let mut observed = watching.observed.clone();
    let seen = tokio::time::timeout(
        WAIT,
        observed.wait_for(|o| o.as_ref().is_some_and(|o| o.generation == 5)),
    )
    .await
    .expect("the invalid generation is observed")
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(
        seen.settings.as_ref().unwrap_err(),
        "queue.workers must be between 1 and 256, got 0"
    );
    let settings = watching.settings.current();
    assert_eq!(settings.generation, 4, "the last good generation stays");
    assert!(settings.flags().respond);
    assert_eq!(watching.metrics.config_reload_errors.get(), 1);
}

#[tokio::test]
async fn deleting_the_resource_turns_every_writing_flag_off() {
    let mut watching = start_watching();
    watching
        .listed_with(&[automation(4, "10", respond_on())], "10")
        .await;
    watching
        .api
        .expect("GET", RESOURCE_PATH)
        .await
        .stream(&[json!({
            "type": "DELETED", "object": automation(4, "11", respond_on())
        })]);
    watching
        .settle("read-only", |s| {
            matches!(s.source, SettingsSource::ReadOnly(_))
        })
        .await;
    assert_eq!(
        *watching.settings.current().flags(),
        AutomationFlags::READ_ONLY
    );
    assert_eq!(watching.metrics.config_generation.get(), 0);
}

#[tokio::test]
async fn a_410_gone_in_the_watch_stream_relists_and_picks_up_the_change() {
    let mut watching = start_watching();
    watching
        .listed_with(&[automation(1, "10", json!({}))], "10")
        .await;
    // What an API server does when the resourceVersion is too old: HTTP 200, then an ERROR
    // event carrying a 410 Status.
    watching
        .api
        .expect("GET", RESOURCE_PATH)
        .await
        .stream(&[json!({
            "type": "ERROR", "object": status(410, "Expired")
        })]);
    let relist = watching.api.expect("GET", RESOURCE_PATH).await;
    assert!(!relist.is_watch(), "a 410 relists: {}", relist.query);
    relist.ok(list(&[automation(7, "40", respond_on())], "40"));
    watching
        .settle("generation 7", |s| s.generation == 7 && s.flags().respond)
        .await;
}

fn member_lease(pod: &str, generation: i64, health: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": format!("deskhook-support-pod-{pod}"), "namespace": NS,
            "labels": {"deskhook.dev/automation": "support", "deskhook.dev/role": "pod-report"},
            "annotations": {
                "deskhook.dev/applied-generation": generation.to_string(),
                "deskhook.dev/health": health
            }
        },
        "spec": {"holderIdentity": pod, "leaseDurationSeconds": 30, "renewTime": renewed}
    })
}

fn now_micro() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn observed(generation: i64, spec: Value, status: Value) -> Observed {
    let mut object = automation(generation, "20", spec);
    object["status"] = status;
    Observed::read(&serde_json::from_value(object).unwrap(), "desk/support")
}

fn writer(client: Client) -> StatusWriter {
    let metrics = Metrics::new();
    StatusWriter::new(
        client,
        NS,
        &KubeOptions::new("support", "deskhook-0"),
        KubeMetrics::register(&metrics),
    )
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
}

#[tokio::test]
async fn the_status_patch_reports_generation_flags_pods_and_conditions() {
    let (client, mut api) = mock_client();
    let mut writer = writer(client);
    let previous = json!({
        "observedGeneration": 3, "generationInForce": 3, "pods": 2, "updatedPods": 2,
        "flags": AutomationFlags::default(),
    });
    let observed = observed(4, respond_on(), previous);
    let server = async {
        let call = api.expect("GET", LEASE_PATH).await;
        assert!(
            call.query
                .contains("labelSelector=deskhook.dev%2Fautomation%3Dsupport"),
            "{}",
            call.query
        );
        let stale = "2020-01-01T00:00:00.000000Z";
        call.ok(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "30"},
            "items": [
                member_lease("deskhook-0", 4, "ok", &now_micro()),
                member_lease("deskhook-1", 3, "25 signature failures in 300 s (threshold 20)", &now_micro()),
                member_lease("deskhook-gone", 2, "ok", stale),
            ]
        }));
        let prune = api.expect("DELETE", LEASE_PATH).await;
        assert!(prune.path.ends_with("/deskhook-support-pod-deskhook-gone"));
        prune.ok(status(200, "Success"));

        let event = api.expect("POST", EVENT_PATH).await;
        assert_eq!(event.body["reason"], "FlagChanged");
        assert_eq!(event.body["note"], "respond false → true");
        assert_eq!(event.body["regarding"]["name"], "support");
        assert_eq!(
            event.body["metadata"]["name"],
            "support.0f3e77aa.g4.respond"
        );
        let created = event.body.clone();
        event.respond(201, created);

        let patch = api
            .expect("PATCH", &format!("{RESOURCE_PATH}/support/status"))
            .await;
        let status = patch.body["status"].clone();
        patch.ok(json!({}));
        status
    };
    let (written, status) = tokio::join!(
        async { tokio::time::timeout(WAIT, writer.sync(&observed)).await },
        server
    );
    written.expect("bounded").expect("the sync succeeds");
    assert_eq!(status["observedGeneration"], 4);
    assert_eq!(status["generationInForce"], 4);
    assert_eq!(status["flags"]["respond"], true);
    assert_eq!(status["pods"], 2);
    assert_eq!(status["updatedPods"], 1);
    let ready = condition(&status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"], &ready["message"]),
        (
            &json!("False"),
            &json!("RollingOut"),
            &json!("1 of 2 pods run generation 4")
        )
    );
    assert_eq!(condition(&status, "Valid")["status"], "True");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(
        degraded["message"],
        "deskhook-1: 25 signature failures in 300 s (threshold 20)"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_as_not_valid_with_the_message_and_one_warning() {
    let (client, mut api) = mock_client();
    let mut writer = writer(client);
    let previous = json!({
        "observedGeneration": 4, "generationInForce": 4, "pods": 1, "updatedPods": 1,
        "flags": {"respond": true},
    });
    let observed = observed(5, json!({"queue": {"workers": 0}}), previous);
    let server = async {
        api.expect("GET", LEASE_PATH).await.ok(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "30"},
            "items": [member_lease("deskhook-0", 4, "ok", &now_micro())]
        }));
        let event = api.expect("POST", EVENT_PATH).await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "InvalidSpec");
        // Another writer recorded it first: the API server refuses the duplicate.
        event.respond(409, status(409, "AlreadyExists"));
        let patch = api
            .expect("PATCH", &format!("{RESOURCE_PATH}/support/status"))
            .await;
        let status = patch.body["status"].clone();
        patch.ok(json!({}));
        status
    };
    let (written, status) = tokio::join!(
        async { tokio::time::timeout(WAIT, writer.sync(&observed)).await },
        server
    );
    written
        .expect("bounded")
        .expect("a duplicate event is not an error");
    assert_eq!(status["observedGeneration"], 5);
    assert_eq!(
        status["generationInForce"], 4,
        "pods keep the last good one"
    );
    assert_eq!(status["flags"]["respond"], true);
    let valid = condition(&status, "Valid");
    assert_eq!(valid["status"], "False");
    assert_eq!(
        valid["message"],
        "queue.workers must be between 1 and 256, got 0"
    );
    assert_eq!(condition(&status, "Ready")["reason"], "InvalidSpec");
}

#[tokio::test]
async fn switching_replay_refusal_off_is_recorded_as_a_warning_event() {
    let (client, mut api) = mock_client();
    let mut writer = writer(client);
    let before = crate::config::security::security_settings(&Default::default());
    let previous = json!({
        "observedGeneration": 6, "generationInForce": 6, "pods": 1, "updatedPods": 1,
        "flags": AutomationFlags::default(), "security": before,
    });
    let observed = observed(
        7,
        json!({"limits": {"rejectReplayedTokens": false}}),
        previous,
    );
    let server = async {
        api.expect("GET", LEASE_PATH).await.ok(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "30"},
            "items": [member_lease("deskhook-0", 7, "ok", &now_micro())]
        }));
        let event = api.expect("POST", EVENT_PATH).await;
        let body = event.body.clone();
        event.respond(201, body.clone());
        let patch = api
            .expect("PATCH", &format!("{RESOURCE_PATH}/support/status"))
            .await;
        let status = patch.body["status"].clone();
        patch.ok(json!({}));
        (body, status)
    };
    let (written, (event, status)) = tokio::join!(
        async { tokio::time::timeout(WAIT, writer.sync(&observed)).await },
        server
    );
    written.expect("bounded").expect("the sync succeeds");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "SecuritySettingChanged");
    assert_eq!(event["note"], "limits.rejectReplayedTokens true → false");
    assert_eq!(status["security"]["limits.rejectReplayedTokens"], "false");
}

#[test]
fn a_resource_naming_where_keys_or_replies_go_is_not_valid() {
    for spec in [
        json!({"replies": {"llm": {"url": "https://llm.evil.example/v1", "model": "m"}}}),
        json!({"verification": {"zohoJwt": {"orgId": "1", "webhookIds": ["2"],
                                            "jwksUrl": "https://keys.evil.example/jwks"}}}),
        json!({"queue": {"redis": {"keyPrefix": "another-deployment"}}}),
    ] {
        let observed = observed(2, spec.clone(), json!({}));
        let message = observed.settings.expect_err("refused");
        assert!(
            message.contains("is not accepted in the resource"),
            "{spec}: {message}"
        );
    }
}

// Paused time: the wait below ends only once nothing is left to run, so a request that
// was going to be made has been made by then.
#[tokio::test(start_paused = true)]
async fn an_unchanged_status_is_not_written_again() {
    let (client, mut api) = mock_client();
    let mut writer = writer(client);
    let members = vec![MemberReport {
        pod: "deskhook-0".into(),
        generation: 4,
        degraded: None,
        rollout: Default::default(),
    }];
    let first = observed(4, respond_on(), json!({}));
    let current = desired_status(&first, &members, k8s_openapi::jiff::Timestamp::now());
    let observed = observed(4, respond_on(), serde_json::to_value(&current).unwrap());
    let server = async {
        api.expect("GET", LEASE_PATH).await.ok(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "30"},
            "items": [member_lease("deskhook-0", 4, "ok", &now_micro())]
        }));
    };
    let (written, ()) = tokio::join!(
        async { tokio::time::timeout(WAIT, writer.sync(&observed)).await },
        server
    );
    written.expect("bounded").expect("the sync succeeds");
    // No further request: a PATCH would be waiting in the mock now.
    let extra = tokio::time::timeout(Duration::from_millis(200), api.0.next_request()).await;
    assert!(extra.is_err(), "nothing else was requested");
}

fn leader_lease(holder: Option<&str>, version: &str, transitions: i32) -> Value {
    let mut spec = json!({
        "leaseDurationSeconds": 15, "renewTime": now_micro(), "leaseTransitions": transitions
    });
    if let Some(holder) = holder {
        spec["holderIdentity"] = json!(holder);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": "deskhook-support-status-writer", "namespace": NS, "resourceVersion": version
        },
        "spec": spec
    })
}

fn elector(client: Client, pod: &str, lease: Duration) -> LeaderElector {
    let timings = Timings {
        leader_lease: lease,
        ..Timings::default()
    };
    LeaderElector::new(
        leases_api(client, NS),
        lease::leader_lease_name("support"),
        pod.into(),
        timings,
    )
}

const LEADER_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/desk/leases/deskhook-support-status-writer";

#[tokio::test]
async fn the_first_pod_creates_the_lease_and_a_racing_pod_loses() {
    let (client, mut api) = mock_client();
    let mut a = elector(client.clone(), "pod-a", Duration::from_secs(15));
    let mut b = elector(client, "pod-b", Duration::from_secs(15));
    let server = async {
        api.expect("GET", LEADER_PATH)
            .await
            .respond(404, status(404, "NotFound"));
        let create = api.expect("POST", LEASE_PATH).await;
        assert_eq!(create.body["spec"]["holderIdentity"], "pod-a");
        let created = create.body.clone();
        create.respond(201, created);
        api.expect("GET", LEADER_PATH)
            .await
            .respond(404, status(404, "NotFound"));
        api.expect("POST", LEASE_PATH)
            .await
            .respond(409, status(409, "AlreadyExists"));
    };
    let (leading, ()) = tokio::join!(
        async {
            let a = a.try_acquire_or_renew().await;
            let b = b.try_acquire_or_renew().await;
            (a, b)
        },
        server
    );
    assert_eq!(leading, (true, false));
}

// Paused time: the lease's clock (tokio's) moves past the expiry at once, with no real wait.
#[tokio::test(start_paused = true)]
async fn leadership_is_handed_over_on_release_and_taken_over_after_expiry() {
    let (client, mut api) = mock_client();
    let mut a = elector(client.clone(), "pod-a", Duration::from_secs(15));
    let mut b = elector(client, "pod-b", Duration::from_secs(15));
    let script = async {
        // pod-a renews the Lease it holds; the write carries the version it read.
        api.expect("GET", LEADER_PATH)
            .await
            .ok(leader_lease(Some("pod-a"), "1", 0));
        let renew = api.expect("PUT", LEADER_PATH).await;
        assert_eq!(renew.body["metadata"]["resourceVersion"], "1");
        renew.ok(leader_lease(Some("pod-a"), "2", 0));
        // pod-b sees it held and stays a follower.
        api.expect("GET", LEADER_PATH)
            .await
            .ok(leader_lease(Some("pod-a"), "2", 0));
        // pod-a shuts down and releases it.
        api.expect("GET", LEADER_PATH)
            .await
            .ok(leader_lease(Some("pod-a"), "2", 0));
        let release = api.expect("PUT", LEADER_PATH).await;
        assert!(
            release.body["spec"]["holderIdentity"].is_null(),
            "{}",
            release.body
        );
        release.ok(leader_lease(None, "3", 0));
        // pod-b takes it at its next retry, without waiting for expiry.
        api.expect("GET", LEADER_PATH)
            .await
            .ok(leader_lease(None, "3", 0));
        let take = api.expect("PUT", LEADER_PATH).await;
        assert_eq!(take.body["spec"]["holderIdentity"], "pod-b");
        assert_eq!(take.body["spec"]["leaseTransitions"], 1);
        take.ok(leader_lease(Some("pod-b"), "4", 1));
        // pod-b stops renewing (killed); pod-a, back, waits a whole lease duration on an
        // unchanged record before taking over.
        let mut short = leader_lease(Some("pod-b"), "4", 1);
        short["spec"]["leaseDurationSeconds"] = json!(1);
        api.expect("GET", LEADER_PATH).await.ok(short.clone());
        api.expect("GET", LEADER_PATH).await.ok(short.clone());
        api.expect("GET", LEADER_PATH).await.ok(short);
        let take = api.expect("PUT", LEADER_PATH).await;
        assert_eq!(take.body["spec"]["holderIdentity"], "pod-a");
        take.ok(leader_lease(Some("pod-a"), "5", 2));
    };
    let pods = async {
        assert!(a.try_acquire_or_renew().await, "pod-a holds the Lease");
        assert!(!b.try_acquire_or_renew().await, "pod-b follows");
        a.release().await;
        assert!(b.try_acquire_or_renew().await, "pod-b took over");
        assert!(!a.try_acquire_or_renew().await, "the Lease is fresh");
        // The record's own duration (1 s) counts, on pod-a's clock: still held just before,
        // expired just after.
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(!a.try_acquire_or_renew().await, "the Lease is still fresh");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(a.try_acquire_or_renew().await, "the Lease expired");
    };
    tokio::time::timeout(WAIT, async { tokio::join!(script, pods) })
        .await
        .expect("bounded");
}

#[tokio::test]
async fn a_writer_that_lost_the_race_for_the_lease_stays_a_follower() {
    let (client, mut api) = mock_client();
    let mut b = elector(client, "pod-b", Duration::from_secs(15));
    let script = async {
        api.expect("GET", LEADER_PATH)
            .await
            .ok(leader_lease(None, "3", 0));
        api.expect("PUT", LEADER_PATH)
            .await
            .respond(409, status(409, "Conflict"));
    };
    let (leading, ()) = tokio::join!(b.try_acquire_or_renew(), script);
    assert!(!leading);
}

#[tokio::test]
async fn expired_member_reports_do_not_count() {
    let (client, mut api) = mock_client();
    let leases = leases_api(client, NS);
    let script = async {
        api.expect("GET", LEASE_PATH).await.ok(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "30"},
            "items": [
                member_lease("b", 2, "ok", &now_micro()),
                member_lease("a", 3, "ok", &now_micro()),
                member_lease("old", 1, "ok", &k8s_openapi::jiff::Timestamp::now()
                    .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(60))
                    .unwrap()
                    .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string()),
            ]
        }));
    };
    let timings = Timings::default();
    let (reports, ()) = tokio::join!(member_reports(&leases, "support", &timings), script);
    let pods: Vec<(String, i64)> = reports
        .unwrap()
        .into_iter()
        .map(|r| (r.pod, r.generation))
        .collect();
    assert_eq!(pods, [("a".to_owned(), 3), ("b".to_owned(), 2)]);
}

#[test]
fn rbac_grants_exactly_what_the_code_calls() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    let mut kinds = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let document = Value::deserialize(document).unwrap();
        kinds.push(document["kind"].as_str().unwrap_or_default().to_owned());
        if document["kind"] != "Role" {
            continue;
        }
        for rule in document["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        granted.insert((
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                            verb.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
    let called: std::collections::BTreeSet<_> = ACCESS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(granted, called);
    assert!(
        !granted.iter().any(|(_, resource, _)| resource == "secrets"),
        "no Secret is read through the API"
    );
}
