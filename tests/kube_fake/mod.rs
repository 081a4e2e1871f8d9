//! An in-process fake of the parts of the Kubernetes API that deskhook and kubectl use.
//!
//! It keeps objects in memory with a global `resourceVersion` counter and bumps
//! `metadata.generation` on spec changes only, as the API server does for a resource with a
//! status subresource. Watches of `webhookautomations` stream `ADDED`/`MODIFIED`/`DELETED`
//! events from a given resourceVersion; after [`FakeApi::expire_watches`] a watch from an older
//! version gets what a real API server sends: HTTP 200 and a single `ERROR` event carrying a
//! `410 Expired` Status. Every request is logged with the verb it amounts to, for RBAC checks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

const AUTOMATIONS: &str = "webhookautomations";

/// One request, as RBAC sees it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub user_agent: String,
    pub method: String,
    pub path: String,
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub status: u16,
}

#[derive(Default)]
struct Store {
    version: u64,
    /// Objects by (resource, namespace, name).
    objects: BTreeMap<(String, String, String), Value>,
    /// Watch events of the automations: (resourceVersion, event).
    history: Vec<(u64, Value)>,
    /// Watches from a resourceVersion below this get `410 Expired`.
    expired_below: u64,
    log: Vec<Logged>,
}

struct Shared {
    store: Mutex<Store>,
    bus: broadcast::Sender<(u64, Value)>,
    cuts: watch::Sender<u64>,
}

/// A running fake API server.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn json_response(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let object = target.as_object_mut().expect("an object");
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(key);
                } else {
                    merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality selectors only (`a=b,c=d`), which is all deskhook and the tests use.
fn matches_selector(object: &Value, field: &str, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let Some((key, want)) = term.split_once('=') else {
            return true;
        };
        let key = key.trim_end_matches('=');
        let want = want.trim_start_matches('=');
        if field == "fields" {
            match key {
                "metadata.name" => object["metadata"]["name"] == want,
                "metadata.namespace" => object["metadata"]["namespace"] == want,
                _ => true,
            }
        } else {
            object["metadata"]["labels"][key] == want
        }
    })
}

impl FakeApi {
    pub async fn start() -> Self {
        let (bus, _) = broadcast::channel(1024);
        let (cuts, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            bus,
            cuts,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server, with `namespace` as the default.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: not-a-secret\n",
            self.url()
        )
    }

    /// Creates an object directly, as an administrator would with `kubectl apply`.
    pub fn create(&self, resource: &str, namespace: &str, mut object: Value) {
        let mut store = self.shared.store.lock().expect("not poisoned");
        store.version += 1;
        let version = store.version;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        object["metadata"]["uid"] = json!(format!("uid-{name}-{version}"));
        object["metadata"]["generation"] = json!(1);
        object["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
        store.objects.insert(
            (resource.to_owned(), namespace.to_owned(), name),
            object.clone(),
        );
        if resource == AUTOMATIONS {
            self.publish(&mut store, "ADDED", object);
        }
    }

    /// Deletes an object directly.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        let mut store = self.shared.store.lock().expect("not poisoned");
        if let Some(object) = remove(&mut store, resource, namespace, name)
            && resource == AUTOMATIONS
        {
            self.publish(&mut store, "DELETED", object);
        }
    }

    /// The stored object, if any.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().expect("not poisoned");
        store
            .objects
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of a resource.
    pub fn all(&self, resource: &str) -> Vec<Value> {
        let store = self.shared.store.lock().expect("not poisoned");
        store
            .objects
            .iter()
            .filter(|((r, _, _), _)| r == resource)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The requests served so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.store.lock().expect("not poisoned").log.clone()
    }

    /// Compacts the history, as etcd does: every open watch ends, and a watch resumed from
    /// any version seen so far gets `410 Expired` and must relist.
    pub fn expire_watches(&self) {
        {
            let mut store = self.shared.store.lock().expect("not poisoned");
            store.version += 1;
            store.expired_below = store.version;
            store.history.clear();
        }
        self.shared.cuts.send_modify(|c| *c += 1);
    }

    /// Ends every open watch (an API-server restart or a network cut).
    pub fn cut_watches(&self) {
        self.shared.cuts.send_modify(|c| *c += 1);
    }

    fn publish(&self, store: &mut Store, kind: &str, object: Value) {
        publish(&self.shared, store, kind, object);
    }
}

fn publish(shared: &Shared, store: &mut Store, kind: &str, object: Value) {
    let version = store.version;
    let event = json!({"type": kind, "object": object});
    store.history.push((version, event.clone()));
    let _ = shared.bus.send((version, event));
}

fn remove(store: &mut Store, resource: &str, namespace: &str, name: &str) -> Option<Value> {
    let mut object =
        store
            .objects
            .remove(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))?;
    store.version += 1;
    object["metadata"]["resourceVersion"] = json!(store.version.to_string());
    Some(object)
}

fn discovery(segments: &[&str]) -> Option<Value> {
    let resource = |name: &str, kind: &str, short: &[&str], verbs: &[&str]| {
        json!({
            "name": name, "singularName": "", "namespaced": true, "kind": kind,
            "verbs": verbs, "shortNames": short
        })
    };
    let all = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    let group = |name: &str, version: &str| {
        json!({
            "name": name,
            "versions": [{"groupVersion": format!("{name}/{version}"), "version": version}],
            "preferredVersion": {"groupVersion": format!("{name}/{version}"), "version": version}
        })
    };
    match segments {
        ["version"] => Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"
        })),
        ["api"] => Some(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
        })),
        ["api", "v1"] => Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []
        })),
        ["apis"] => Some(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [
                group("deskhook.dev", "v1alpha1"),
                group("coordination.k8s.io", "v1"),
                group("events.k8s.io", "v1"),
            ]
        })),
        ["apis", "deskhook.dev", "v1alpha1"] => Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "deskhook.dev/v1alpha1",
            "resources": [
                {
                    "name": "webhookautomations", "singularName": "webhookautomation",
                    "namespaced": true, "kind": "WebhookAutomation", "verbs": all,
                    "shortNames": ["wha"], "categories": ["deskhook"]
                },
                resource("webhookautomations/status", "WebhookAutomation", &[], &["get", "patch", "update"]),
            ]
        })),
        ["apis", "coordination.k8s.io", "v1"] => Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "coordination.k8s.io/v1",
            "resources": [resource("leases", "Lease", &[], &all)]
        })),
        ["apis", "events.k8s.io", "v1"] => Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "events.k8s.io/v1",
            "resources": [resource("events", "Event", &["ev"], &all)]
        })),
        _ => None,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == Method::GET
        && let Some(document) = discovery(&segments)
    {
        return json_response(200, document);
    }
    // /apis/{group}/{version}/namespaces/{ns}/{resource}[/{name}[/status]]
    let (group, namespace, resource, name, subresource) = match segments.as_slice() {
        ["apis", group, _, "namespaces", ns, resource] => (*group, *ns, *resource, None, None),
        ["apis", group, _, "namespaces", ns, resource, name] => {
            (*group, *ns, *resource, Some(*name), None)
        }
        ["apis", group, _, "namespaces", ns, resource, name, sub] => {
            (*group, *ns, *resource, Some(*name), Some(*sub))
        }
        _ => return status(404, "NotFound", &format!("{path} is not served here")),
    };
    let watching = query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, name, watching) {
        (&Method::GET, None, true) => "watch",
        (&Method::GET, None, false) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, _, _) => "delete",
        _ => "unknown",
    };
    let full_resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(e) => return status(400, "BadRequest", &format!("body is not JSON: {e}")),
        }
    };
    let response = if verb == "watch" && resource == AUTOMATIONS {
        watch_automations(&shared, namespace, &query)
    } else {
        let mut store = shared.store.lock().expect("not poisoned");
        serve(
            &shared,
            &mut store,
            Request {
                verb,
                namespace,
                resource,
                name,
                subresource,
                query: &query,
                content_type: &content_type,
                body,
            },
        )
    };
    let mut store = shared.store.lock().expect("not poisoned");
    store.log.push(Logged {
        user_agent,
        method: method.to_string(),
        path: path.clone(),
        group: group.to_owned(),
        resource: full_resource,
        verb: verb.to_owned(),
        status: response.status().as_u16(),
    });
    response
}

struct Request<'a> {
    verb: &'a str,
    namespace: &'a str,
    resource: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
    query: &'a str,
    content_type: &'a str,
    body: Value,
}

fn serve(shared: &Shared, store: &mut Store, request: Request<'_>) -> Response {
    let Request {
        verb,
        namespace,
        resource,
        name,
        subresource,
        query,
        content_type,
        mut body,
    } = request;
    let key = |name: &str| (resource.to_owned(), namespace.to_owned(), name.to_owned());
    let not_found =
        |name: &str| status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
    match (verb, name) {
        ("list", None) => {
            let labels = query_param(query, "labelSelector");
            let fields = query_param(query, "fieldSelector");
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|((r, ns, _), _)| r == resource && ns == namespace)
                .map(|(_, object)| object)
                .filter(|o| matches_selector(o, "labels", labels.as_deref()))
                .filter(|o| matches_selector(o, "fields", fields.as_deref()))
                .cloned()
                .collect();
            json_response(
                200,
                json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": store.version.to_string()},
                    "items": items
                }),
            )
        }
        ("get", Some(name)) => match store.objects.get(&key(name)) {
            Some(object) => json_response(200, object.clone()),
            None => not_found(name),
        },
        ("create", None) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if name.is_empty() {
                return status(422, "Invalid", "metadata.name is required");
            }
            if store.objects.contains_key(&key(&name)) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{resource} \"{name}\" already exists"),
                );
            }
            store.version += 1;
            body["metadata"]["namespace"] = json!(namespace);
            body["metadata"]["resourceVersion"] = json!(store.version.to_string());
            body["metadata"]["uid"] = json!(format!("uid-{name}-{}", store.version));
            body["metadata"]["generation"] = json!(1);
            store.objects.insert(key(&name), body.clone());
            if resource == AUTOMATIONS {
                publish(shared, store, "ADDED", body.clone());
            }
            json_response(201, body)
        }
        ("update", Some(name)) => {
            let Some(current) = store.objects.get(&key(name)).cloned() else {
                return not_found(name);
            };
            if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled: the object has been modified; please apply \
                     your changes to the latest version and try again",
                );
            }
            let mut next = current.clone();
            if resource == AUTOMATIONS {
                // The status subresource: a write of the main resource ignores the status.
                next["spec"] = body["spec"].clone();
                next["metadata"]["labels"] = body["metadata"]["labels"].clone();
                next["metadata"]["annotations"] = body["metadata"]["annotations"].clone();
            } else {
                next = body;
                next["metadata"]["uid"] = current["metadata"]["uid"].clone();
                next["metadata"]["namespace"] = json!(namespace);
            }
            store_write(
                shared,
                store,
                resource,
                key(name),
                &current,
                next,
                subresource,
            )
        }
        ("patch", Some(name)) => {
            let current = store.objects.get(&key(name)).cloned();
            let apply = content_type.starts_with("application/apply-patch");
            let Some(current) = current else {
                if apply {
                    body["metadata"]["name"] = json!(name);
                    return serve(
                        shared,
                        store,
                        Request {
                            verb: "create",
                            namespace,
                            resource,
                            name: None,
                            subresource: None,
                            query,
                            content_type,
                            body,
                        },
                    );
                }
                return not_found(name);
            };
            if !apply && !content_type.starts_with("application/merge-patch+json") {
                return status(
                    415,
                    "UnsupportedMediaType",
                    &format!("this fake takes merge or apply patches, not {content_type}"),
                );
            }
            if let Some(version) = body["metadata"]["resourceVersion"].as_str()
                && Some(version) != current["metadata"]["resourceVersion"].as_str()
            {
                return status(409, "Conflict", "the object has been modified");
            }
            let mut next = current.clone();
            match (resource, subresource) {
                (AUTOMATIONS, Some("status")) => {
                    let mut status = current["status"].clone();
                    merge_patch(&mut status, &body["status"]);
                    next["status"] = status;
                }
                (AUTOMATIONS, _) => {
                    let mut patched = current.clone();
                    merge_patch(&mut patched, &body);
                    next["spec"] = patched["spec"].clone();
                    next["metadata"]["labels"] = patched["metadata"]["labels"].clone();
                    next["metadata"]["annotations"] = patched["metadata"]["annotations"].clone();
                }
                _ => merge_patch(&mut next, &body),
            }
            store_write(
                shared,
                store,
                resource,
                key(name),
                &current,
                next,
                subresource,
            )
        }
        ("delete", Some(name)) => match remove(store, resource, namespace, name) {
            Some(object) => {
                if resource == AUTOMATIONS {
                    publish(shared, store, "DELETED", object.clone());
                }
                json_response(200, object)
            }
            None => not_found(name),
        },
        _ => status(
            405,
            "MethodNotAllowed",
            &format!("{verb} is not served here"),
        ),
    }
}

/// Stores `next`, bumping the resourceVersion, and the generation when the spec changed.
fn store_write(
    shared: &Shared,
    store: &mut Store,
    resource: &str,
    key: (String, String, String),
    current: &Value,
    mut next: Value,
    subresource: Option<&str>,
) -> Response {
    store.version += 1;
    next["metadata"]["resourceVersion"] = json!(store.version.to_string());
    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
    let spec_changed = subresource.is_none() && next["spec"] != current["spec"];
    next["metadata"]["generation"] = json!(if spec_changed {
        generation + 1
    } else {
        generation
    });
    store.objects.insert(key, next.clone());
    if resource == AUTOMATIONS && next != *current {
        publish(shared, store, "MODIFIED", next.clone());
    }
    json_response(200, next)
}

/// A watch of the automations from `resourceVersion`, open until the next cut.
fn watch_automations(shared: &Arc<Shared>, namespace: &str, query: &str) -> Response {
    let since: u64 = query_param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fields = query_param(query, "fieldSelector");
    let namespace = namespace.to_owned();
    let (tx, rx) = mpsc::channel::<Value>(256);
    let mut bus = shared.bus.subscribe();
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let (backlog, expired) = {
        let store = shared.store.lock().expect("not poisoned");
        let expired = since > 0 && since < store.expired_below;
        let backlog: Vec<(u64, Value)> = store
            .history
            .iter()
            .filter(|(version, _)| *version > since)
            .cloned()
            .collect();
        (backlog, expired)
    };
    let relevant = move |event: &Value| {
        event["object"]["metadata"]["namespace"] == namespace.as_str()
            && matches_selector(&event["object"], "fields", fields.as_deref())
    };
    tokio::spawn(async move {
        if expired {
            let gone = json!({
                "type": "ERROR",
                "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "too old resource version", "reason": "Expired", "code": 410
                }
            });
            let _ = tx.send(gone).await;
            return;
        }
        let mut last = since;
        for (version, event) in backlog {
            if relevant(&event) {
                let _ = tx.send(event).await;
            }
            last = last.max(version);
        }
        loop {
            tokio::select! {
                received = bus.recv() => match received {
                    Ok((version, event)) if version > last => {
                        last = version;
                        if relevant(&event) && tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = cuts.changed() => return,
            }
        }
    });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| status(500, "InternalError", "response"))
}
