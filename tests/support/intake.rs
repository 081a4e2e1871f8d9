//! An intake server started in-process on ephemeral ports, and what the tests need around it:
//! signed deliveries, answers read as JSON, metric samples, a workflow the test controls and
//! captured log lines.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deskhook::config::{Settings, SettingsSource, WatchedSecrets};
use deskhook::crd::WebhookAutomationSpec;
use deskhook::server::{self, RunningServer, ServeOptions};
use deskhook::workflow::Run as WorkflowRun;
use deskhook::workflow::{DecisionReport, StepReport, StepStatus, Workflow};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};

/// The HMAC key deliveries are signed with unless a test says otherwise.
pub const SECRET: &str = "intake-test-secret-7f3a";
/// The admin token of servers started with one.
pub const ADMIN_TOKEN: &str = "intake-test-admin-token-c41d-5e9a0b7f";
/// The header the HMAC signature travels in by default.
pub const SIGNATURE_HEADER: &str = "X-Zoho-Signature";
/// Upper bound on every single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often a condition is polled while waiting for it.
pub const POLL: Duration = Duration::from_millis(20);

/// Hex HMAC-SHA256 of `body` under `key`, computed independently of the library.
pub fn hmac_hex(key: &str, body: &[u8]) -> String {
    hex::encode(hmac_raw(key, body))
}

/// Raw HMAC-SHA256 of `body` under `key`.
pub fn hmac_raw(key: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// A client for the test's own requests: no proxy, every request bounded by [`WAIT`].
pub fn client() -> reqwest::Client {
    // reqwest is built without a bundled TLS provider and refuses to build a client, even a
    // plain-HTTP one, until one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("the test HTTP client builds")
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub text: String,
    /// The body as JSON, `Null` when it is not JSON.
    pub json: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("the answer body is readable");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            retry_after,
            text,
            json,
        }
    }

    /// `(ticket_id, event_type, status)` of every event in a webhook answer.
    pub fn events(&self) -> Vec<(Option<String>, String, String)> {
        self.json["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events in {}", self.text))
            .iter()
            .map(|e| {
                (
                    e["ticket_id"].as_str().map(str::to_owned),
                    e["event_type"].as_str().unwrap_or_default().to_owned(),
                    e["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

pub async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.expect("GET is answered")).await
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.expect("POST is answered")).await
}

/// The value of one series in a Prometheus exposition (`name{label="v"}`), 0 when absent.
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a sample value is a number"))
        })
        .unwrap_or(0.0)
}

/// Polls `check` until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// How to start an in-process server.
pub struct Intake {
    spec: WebhookAutomationSpec,
    hmac_keys: Option<String>,
    standard_webhooks_keys: Option<String>,
    admin_token: Option<String>,
    console_open: bool,
    jwks_url: Option<reqwest::Url>,
    decisions_retained: usize,
    insecure: bool,
    workflow: Arc<dyn Workflow>,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

impl Default for Intake {
    fn default() -> Self {
        Self {
            // What a settings file with an empty spec gives.
            spec: serde_json::from_value(serde_json::json!({}))
                .expect("an empty spec takes every default"),
            hmac_keys: Some(SECRET.to_owned()),
            standard_webhooks_keys: None,
            admin_token: None,
            console_open: false,
            jwks_url: None,
            decisions_retained: deskhook::decisions::DEFAULT_RETAINED,
            insecure: false,
            workflow: Arc::new(RecordingWorkflow),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: WAIT,
        }
    }
}

impl Intake {
    /// Default settings, HMAC with [`SECRET`], the recording workflow, no admin token.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn spec(mut self, edit: impl FnOnce(&mut WebhookAutomationSpec)) -> Self {
        edit(&mut self.spec);
        self
    }

    /// HMAC keys as `ZOHO_WEBHOOK_SECRET` holds them (comma-separated); `None` for no HMAC.
    pub fn hmac_keys(mut self, keys: Option<&str>) -> Self {
        self.hmac_keys = keys.map(str::to_owned);
        self
    }

    /// Standard Webhooks secrets as `DESKHOOK_STANDARD_WEBHOOKS_SECRET` holds them.
    pub fn standard_webhooks_keys(mut self, keys: &str) -> Self {
        self.standard_webhooks_keys = Some(keys.to_owned());
        self
    }

    /// How many decision reports the server keeps.
    pub fn decisions_retained(mut self, count: usize) -> Self {
        self.decisions_retained = count;
        self
    }

    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// `--console-open`: the console without a token (the test listeners are loopback).
    pub fn console_open(mut self) -> Self {
        self.console_open = true;
        self
    }

    /// `DESKHOOK_JWKS_URL`: where Zoho's signing keys are fetched.
    pub fn jwks_url(mut self, url: &str) -> Self {
        self.jwks_url = Some(url.parse().expect("a URL"));
        self
    }

    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    pub fn workflow(mut self, workflow: Arc<dyn Workflow>) -> Self {
        self.workflow = workflow;
        self
    }

    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    pub async fn start(self) -> Server {
        self.try_start().await.expect("the server starts")
    }

    pub async fn try_start(self) -> Result<Server, server::ServeError> {
        let settings = Settings::from_spec(self.spec, SettingsSource::Environment, 1)
            .expect("the test settings are valid");
        let options = ServeOptions {
            hmac_secrets: WatchedSecrets::load(self.hmac_keys.as_deref(), None)
                .expect("no file to read"),
            standard_webhooks_secrets: WatchedSecrets::load(
                self.standard_webhooks_keys.as_deref(),
                None,
            )
            .expect("no file to read"),
            admin_tokens: WatchedSecrets::load(self.admin_token.as_deref(), None)
                .expect("no file to read"),
            console_open: self.console_open,
            jwks_url: self.jwks_url,
            insecure_no_verification: self.insecure,
            shutdown_delay: self.shutdown_delay,
            shutdown_grace: self.shutdown_grace,
            decisions_retained: self.decisions_retained,
            ..ServeOptions::default()
        };
        let running = server::start_with(options, settings, self.workflow).await?;
        Ok(Server {
            running,
            client: client(),
        })
    }
}

/// A server running in this process.
pub struct Server {
    pub running: RunningServer,
    pub client: reqwest::Client,
}

impl Server {
    /// A URL on the webhook listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    /// A URL on the metrics (admin) listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.metrics_addr)
    }

    /// Posts `body` to the webhook, signed (hex) with [`SECRET`].
    pub async fn deliver(&self, body: &[u8]) -> Reply {
        let signature = hmac_hex(SECRET, body);
        self.deliver_with(body, &[(SIGNATURE_HEADER, &signature)])
            .await
    }

    /// Posts `body` to the webhook with the given headers only.
    pub async fn deliver_with(&self, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        post(
            &self.client,
            &self.url("/webhook/zoho-desk"),
            body.to_vec(),
            headers,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        get(&self.client, &self.url(path), &[]).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        get(&self.client, &self.admin_url(path), &[]).await
    }

    pub async fn stats(&self) -> Value {
        let reply = self.get("/webhook/stats").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }

    /// One series from `/metrics` on the metrics listener.
    pub async fn metric(&self, series: &str) -> f64 {
        let reply = self.admin_get("/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        sample(&reply.text, series)
    }

    /// Starts the shutdown sequence, as SIGTERM does, without waiting for it.
    pub fn begin_shutdown(&self) {
        let _ = self.running.stopper().send(true);
    }

    /// Waits, at most [`WAIT`], for the server to stop.
    pub async fn wait_stopped(self) {
        tokio::time::timeout(WAIT, self.running.wait())
            .await
            .expect("the server stops in time");
    }
}

/// One run of a [`GatedWorkflow`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub ticket_id: String,
    pub event_type: String,
    pub event_time_ms: Option<i64>,
}

#[derive(Default)]
struct Concurrency {
    started: usize,
    per_ticket: HashMap<String, usize>,
    most_per_ticket: usize,
    overall: usize,
    most_overall: usize,
    finished: Vec<Run>,
    /// Job id and deduplication key of every run started, in order.
    jobs: Vec<(u64, deskhook::event::DedupeKey)>,
}

/// A workflow whose runs wait at a gate the test opens, recording which runs overlapped.
pub struct GatedWorkflow {
    gate: Semaphore,
    started_tx: mpsc::UnboundedSender<Run>,
    started_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Run>>,
    state: Mutex<Concurrency>,
}

impl GatedWorkflow {
    /// Every run waits for [`GatedWorkflow::release`].
    pub fn closed() -> Arc<Self> {
        Self::with_permits(0)
    }

    /// Runs finish at once; starts are still recorded.
    pub fn open() -> Arc<Self> {
        Self::with_permits(Semaphore::MAX_PERMITS)
    }

    fn with_permits(permits: usize) -> Arc<Self> {
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            gate: Semaphore::new(permits),
            started_tx,
            started_rx: tokio::sync::Mutex::new(started_rx),
            state: Mutex::default(),
        })
    }

    /// Lets `runs` more runs finish.
    pub fn release(&self, runs: usize) {
        self.gate.add_permits(runs);
    }

    /// The next run to start, waiting at most [`WAIT`].
    pub async fn next_start(&self) -> Run {
        let mut started = self.started_rx.lock().await;
        tokio::time::timeout(WAIT, started.recv())
            .await
            .expect("a run starts in time")
            .expect("the workflow is alive")
    }

    /// Asserts that exactly `count` runs have started in all, once `server`'s queue holds
    /// nothing that could still start one: every ticket it has work for is running here (so
    /// its waiting job, if any, is held back). A job being claimed right now keeps the wait
    /// going until it has started, and is then counted.
    pub async fn assert_started(&self, server: &Server, count: usize) {
        let queue = server.running.state.queue.clone();
        eventually("the queue to hold nothing that could start", || async {
            let state = self.state.lock().expect("not poisoned");
            let running = |ticket: &String| state.per_ticket.get(ticket).is_some_and(|n| *n > 0);
            queue.unfinished().iter().all(running).then_some(())
        })
        .await;
        let started = self.state.lock().expect("not poisoned").started;
        assert_eq!(started, count, "runs started");
    }

    /// Waits, at most [`WAIT`], until `count` runs have finished; returns them in order.
    pub async fn finished(&self, count: usize) -> Vec<Run> {
        eventually(&format!("{count} finished runs"), || async {
            let state = self.state.lock().expect("not poisoned");
            (state.finished.len() >= count).then(|| state.finished.clone())
        })
        .await
    }

    /// Job id and deduplication key of every run started so far, in order.
    pub fn started_jobs(&self) -> Vec<(u64, deskhook::event::DedupeKey)> {
        self.state.lock().expect("not poisoned").jobs.clone()
    }

    /// The most runs of a single ticket seen at the same time.
    pub fn most_concurrent_runs_of_one_ticket(&self) -> usize {
        self.state.lock().expect("not poisoned").most_per_ticket
    }

    /// The most runs seen at the same time, across tickets.
    pub fn most_concurrent_runs(&self) -> usize {
        self.state.lock().expect("not poisoned").most_overall
    }
}

#[async_trait]
impl Workflow for GatedWorkflow {
    async fn run(&self, job: &WorkflowRun, settings: &Settings) -> DecisionReport {
        let report = DecisionReport::start(job, settings);
        let run = Run {
            ticket_id: job.event.ticket_id.clone(),
            event_type: job.event.event_type.clone(),
            event_time_ms: job.event.event_time_ms,
        };
        {
            let mut state = self.state.lock().expect("not poisoned");
            state.started += 1;
            state.jobs.push((job.id, job.event.dedupe_key));
            let running = state.per_ticket.entry(run.ticket_id.clone()).or_default();
            *running += 1;
            let running = *running;
            state.most_per_ticket = state.most_per_ticket.max(running);
            state.overall += 1;
            state.most_overall = state.most_overall.max(state.overall);
        }
        let _ = self.started_tx.send(run.clone());
        self.gate
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
        {
            let mut state = self.state.lock().expect("not poisoned");
            if let Some(running) = state.per_ticket.get_mut(&run.ticket_id) {
                *running -= 1;
            }
            state.overall -= 1;
            state.finished.push(run);
        }
        report.finish()
    }
}

/// Log events of the current thread, captured as JSON lines.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

pub struct CapturedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CapturedWriter(self.0.clone())
    }
}

impl CapturedLogs {
    /// Captures this thread's log events until the guard is dropped. Tests that use it run on
    /// a current-thread runtime, so the server's tasks log on this thread too.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(self.clone())
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }

    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The first captured line whose `message` is `message`.
    pub fn find(&self, message: &str) -> Option<Value> {
        self.lines()
            .into_iter()
            .find(|line| line["message"] == message)
    }
}

/// A workflow that writes nothing and records, per writing step, whether its flag was on: the
/// intake tests watch events reach a worker without any Zoho API.
#[derive(Debug, Default)]
pub struct RecordingWorkflow;

#[async_trait]
impl Workflow for RecordingWorkflow {
    async fn run(&self, job: &WorkflowRun, settings: &Settings) -> DecisionReport {
        let mut report = DecisionReport::start(job, settings);
        for (name, on) in settings.flags().named() {
            let status = if on {
                StepStatus::NotNeeded
            } else {
                StepStatus::SkippedFlagOff
            };
            report.record(StepReport::new(
                name,
                status,
                format!("{name} is {}", if on { "on" } else { "off" }),
            ));
        }
        report.finish()
    }
}

/// A workflow whose first run of each ticket panics and whose later runs succeed: a bug in
/// the run, where supervision has to keep the worker and the ticket alive.
#[derive(Default)]
pub struct PanicsOnce {
    runs: Mutex<HashMap<String, u32>>,
}

impl PanicsOnce {
    /// Runs of `ticket` so far, the panicking one included.
    pub fn runs_of(&self, ticket: &str) -> u32 {
        let runs = self.runs.lock().expect("not poisoned");
        runs.get(ticket).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Workflow for PanicsOnce {
    async fn run(&self, job: &WorkflowRun, settings: &Settings) -> DecisionReport {
        let first = {
            let mut runs = self.runs.lock().expect("not poisoned");
            let count = runs.entry(job.event.ticket_id.clone()).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            panic!(
                "injected panic in the first run of ticket {}",
                job.event.ticket_id
            );
        }
        DecisionReport::start(job, settings).finish()
    }
}
