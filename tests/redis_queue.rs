//! The Redis queue backend with a real `redis-server` and two or more real `deskhook serve`
//! processes against the fake Zoho: exactly one run per distinct event, no job lost when a
//! process is killed, no acknowledged event lost when Redis crashes, dead letters and their
//! replay, and one token refresh for the whole deployment.
//!
//! Skipped (with a message) where `redis-server` is not installed, except in CI.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::fake_zoho::{self, FakeZoho, Fault};
use support::intake::{SECRET, hmac_hex};
use support::process::{BIN, Deskhook, TempDir, serve_command};
use support::redis::RedisServer;

/// Longest wait for the processes to work through a test's events.
const DRAIN: Duration = Duration::from_secs(120);

/// Builds a configuration from the reference one, on the Redis backend.
fn config(dir: &TempDir, flags: Value, redis: Value) -> PathBuf {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhookautomation.yaml");
    let mut document: Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = &mut document["spec"];
    spec["automation"] = flags;
    spec["queue"]["backend"] = json!("redis");
    spec["queue"]["redis"] = redis;
    spec["zoho"]["orgId"] = json!(fake_zoho::ORG_ID);
    // The bursts come from one address; the per-client rate limit is not under test here.
    spec["limits"] = json!({"rateLimit": {"enabled": false, "requestsPerSecond": 1, "burst": 1}});
    dir.write(
        "automation.yaml",
        &serde_yaml::to_string(&document).unwrap(),
    )
}

fn read_only() -> Value {
    json!({"dispatch": false, "link": false})
}

/// `deskhook serve` as pod `pod`, with Zoho at the fake and the queue in `redis`.
fn pod(
    config: &std::path::Path,
    fake: &FakeZoho,
    redis: &RedisServer,
    pod: &str,
) -> tokio::process::Command {
    let mut command = serve_command(Some(config));
    command
        .env("ZOHO_WEBHOOK_SECRET", SECRET)
        .env("ZOHO_CLIENT_ID", fake_zoho::CLIENT_ID)
        .env("ZOHO_CLIENT_SECRET", fake_zoho::CLIENT_SECRET)
        .env("ZOHO_REFRESH_TOKEN", fake_zoho::REFRESH_TOKEN)
        .env("DESKHOOK_ZOHO_ACCOUNTS_URL", fake.url())
        .env("DESKHOOK_ZOHO_DESK_URL", fake.url())
        .env("DESKHOOK_ZOHO_CRM_URL", fake.url())
        .env("DESKHOOK_REDIS_URL", redis.url())
        .env("POD_NAME", pod)
        .env("NO_PROXY", "127.0.0.1,localhost")
        // The console without a token, on the loopback admin listener the tests use.
        .arg("--console-open");
    command
}

/// A fake with `count` tickets (ids `9000000000000001`…) of the reference scenario: in
/// Contact, from a candidate whose deal's documents the CMA refused, so the `refus-cma` rule
/// moves each to "Refus CMA" and links the deal.
async fn fake_with_tickets(count: usize) -> (FakeZoho, Vec<String>) {
    let fake = FakeZoho::start().await;
    fake.seed_reference_portal();
    let ids: Vec<String> = (1..=count)
        .map(|n| format!("{}", 9_000_000_000_000_000u64 + n as u64))
        .collect();
    for id in &ids {
        fake.add_ticket(json!({
            "id": id,
            "ticketNumber": id[12..],
            "subject": "Mon dossier d'inscription",
            "status": "Open",
            "statusType": "Open",
            "departmentId": "1",
            "email": "zoe.martin@example.fr",
            "modifiedTime": "2026-11-20T10:00:00.000Z",
            "cf": {"cf_opportunite": null}
        }));
        fake.add_thread(
            id,
            json!({
                "id": format!("{id}1"),
                "direction": "in",
                "channel": "EMAIL",
                "fromEmailAddress": "Zoé Martin <zoe.martin@example.fr>",
                "content": "<div>Bonjour, où en est mon dossier ? Merci</div>",
                "contentType": "html",
                "createdTime": "2026-11-20T10:00:00.000Z",
                "author": {"name": "Zoé Martin", "email": "zoe.martin@example.fr", "type": "END_USER"}
            }),
        );
    }
    (fake, ids)
}

/// The delivery of one event for `ticket`: the same ticket gives the same bytes.
fn delivery(ticket: &str) -> Vec<u8> {
    format!(
        r#"[{{"eventType":"Ticket_Update","eventTime":"1764000000000","orgId":"{org}","payload":{{"id":"{ticket}","departmentId":"1"}}}}]"#,
        org = fake_zoho::ORG_ID
    )
    .into_bytes()
}

/// Delivers `bodies` to the processes in turn, 32 at a time; returns each answer's status
/// and JSON, in order.
async fn deliver_all(pods: &[&Deskhook], bodies: Vec<Vec<u8>>) -> Vec<(u16, Value)> {
    let client = support::intake::client();
    let targets: Vec<String> = pods.iter().map(|p| p.url("/webhook/zoho-desk")).collect();
    futures::stream::iter(bodies.into_iter().enumerate())
        .map(|(i, body)| {
            let client = client.clone();
            let url = targets[i % targets.len()].clone();
            async move {
                let signature = hmac_hex(SECRET, &body);
                let reply = support::intake::post(
                    &client,
                    &url,
                    body,
                    &[(support::intake::SIGNATURE_HEADER, &signature)],
                )
                .await;
                (reply.status, reply.json)
            }
        })
        .buffered(32)
        .collect()
        .await
}

/// Calls of `op` per ticket id (the path's fourth segment), counting only answered ones.
fn per_ticket(fake: &FakeZoho, op: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for call in fake.calls_to(op) {
        if call.status == 0 {
            continue;
        }
        if let Some(id) = call.path.split('/').nth(4) {
            *counts.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits, at most [`DRAIN`], until `done` holds.
async fn until(what: &str, done: impl FnMut() -> bool) {
    assert!(drained(done).await, "timed out waiting for {what}");
}

/// Whether `done` came to hold within [`DRAIN`].
async fn drained(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + DRAIN;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Waits, at most [`DRAIN`], until no job waits or runs in `redis`.
async fn until_idle(redis: &RedisServer) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    loop {
        let stats = queue_cli(redis, &["stats"]).await;
        if stats["waiting"] == 0 && stats["running"] == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never became idle: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `deskhook queue …` against `redis`, parsed as JSON.
async fn queue_cli(redis: &RedisServer, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(BIN)
        .env_clear()
        .env("DESKHOOK_REDIS_URL", redis.url())
        .arg("queue")
        .args(args)
        .arg("--json")
        .output()
        .await
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "deskhook queue {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_with_duplicates_runs_each_distinct_event_exactly_once() {
    let Some(redis) =
        RedisServer::start("a_burst_with_duplicates_runs_each_distinct_event_exactly_once")
    else {
        return;
    };
    let (fake, ids) = fake_with_tickets(800).await;
    let dir = TempDir::new("redis-burst");
    let config = config(&dir, read_only(), json!({"claimIdleSeconds": 5}));
    let a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let b = Deskhook::start(pod(&config, &fake, &redis, "pod-b")).await;

    // 1,000 deliveries: 800 distinct events and 200 repeats (20 %), interleaved.
    let mut order: Vec<usize> = (0..1000).collect();
    order.sort_by_key(|i| (i * 7919) % 1000);
    let bodies: Vec<Vec<u8>> = order.iter().map(|i| delivery(&ids[i % 800])).collect();
    let answers = deliver_all(&[&a, &b], bodies).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        refused.is_empty(),
        "every delivery is stored: {} refused, first {:?}",
        refused.len(),
        refused.first()
    );
    let duplicates = answers
        .iter()
        .filter(|(_, json)| json["events"][0]["status"] == "duplicate")
        .count();
    assert_eq!(
        duplicates, 200,
        "each repeat is recognised whichever pod it reaches"
    );

    until("one run per distinct event", || {
        per_ticket(&fake, "get_ticket").len() == 800
    })
    .await;
    // Once nothing waits or runs, nothing more can run: anything run twice shows up now.
    until_idle(&redis).await;
    let runs = per_ticket(&fake, "get_ticket");
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "runs repeated: {repeated:?}");
    let stats = queue_cli(&redis, &["stats"]).await;
    assert_eq!(stats["waiting"], 0, "{stats}");
    assert_eq!(stats["dead_letters"], 0, "{stats}");
    let ran_on = |p: &Deskhook| p.output.events_with("workflow finished").len();
    assert!(ran_on(&a) > 0 && ran_on(&b) > 0, "both pods worked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_process_loses_no_job_and_repeats_no_write() {
    let Some(redis) = RedisServer::start("a_killed_process_loses_no_job_and_repeats_no_write")
    else {
        return;
    };
    let (fake, ids) = fake_with_tickets(24).await;
    // Slow calls, so the kill lands while jobs are half done.
    fake.set_latency(Duration::from_millis(150));
    let dir = TempDir::new("redis-kill");
    let config = config(
        &dir,
        json!({"dispatch": true, "link": true}),
        json!({"claimIdleSeconds": 2}),
    );
    // Pod-a alone takes the first jobs (a read takes as many entries as it has workers, so
    // with a second pod reading too, pod-a might hold none when it is killed).
    let mut a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let answers = deliver_all(&[&a], ids.iter().map(|id| delivery(id)).collect()).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));

    until("the first writes", || {
        fake.calls_to("move_ticket").len() >= 4
    })
    .await;
    let b = Deskhook::start(pod(&config, &fake, &redis, "pod-b")).await;
    // Each job takes several 150 ms calls: those pod-a holds now are still running.
    assert!(held_by(&redis, "pod-a").await > 0, "pod-a holds jobs");
    a.kill().await;

    every_ticket_moved_and_linked_once(&fake, &redis, &ids, &b).await;
    assert!(
        !b.output
            .events_with("took over a job its pod stopped renewing")
            .is_empty(),
        "the surviving pod took the killed pod's jobs over:\n{}",
        b.output.text()
    );
}

/// `deskhook serve` as pod `pod` without Zoho credentials: the offline workflow decides from
/// the event alone, so the queue alone sets the pace.
fn offline_pod(
    config: &std::path::Path,
    redis: &RedisServer,
    pod: &str,
) -> tokio::process::Command {
    let mut command = serve_command(Some(config));
    command
        .env("ZOHO_WEBHOOK_SECRET", SECRET)
        .env("DESKHOOK_REDIS_URL", redis.url())
        .env("POD_NAME", pod)
        .env("NO_PROXY", "127.0.0.1,localhost");
    command
}

/// Deliveries in flight at once, each on a connection that is reused, as a busy sender keeps
/// them.
const CONNECTIONS: usize = 64;

/// Delivers one event for each of `tickets` to `url`, [`CONNECTIONS`] at a time, counting
/// each 200 in `acknowledged` as it arrives; returns each ticket with its answer's status, 0
/// when no answer came (the connection failed or was cut).
async fn deliver_each(
    url: &str,
    tickets: &[String],
    acknowledged: &AtomicUsize,
) -> Vec<(String, u16)> {
    let client = support::intake::client();
    futures::stream::iter(tickets)
        .map(|ticket| {
            let client = client.clone();
            async move {
                let body = delivery(ticket);
                let signature = hmac_hex(SECRET, &body);
                let sent = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header(support::intake::SIGNATURE_HEADER, signature)
                    .body(body)
                    .send()
                    .await;
                let status = match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // Read to the end, so the connection is reused.
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                if status == 200 {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                (ticket.clone(), status)
            }
        })
        .buffer_unordered(CONNECTIONS)
        .collect()
        .await
}

/// How many answers had each status.
fn status_counts(answers: &[(String, u16)]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for (_, status) in answers {
        *counts.entry(*status).or_insert(0) += 1;
    }
    counts
}

/// Runs per ticket, from the `workflow finished` lines of `pods`.
fn finished_runs(pods: &[&Deskhook]) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for pod in pods {
        for event in pod.output.events_with("workflow finished") {
            let ticket = event["ticket_id"].as_str().expect("a run names its ticket");
            *runs.entry(ticket.to_owned()).or_insert(0) += 1;
        }
    }
    runs
}

/// Tickets an admin's bulk update touches at once; Zoho sends one delivery for each.
const BULK_TICKETS: u64 = 100_000;
/// Longest wait for the bulk update to be worked through.
const BULK_DRAIN: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_update_of_100000_tickets_is_taken_whole_and_each_ticket_runs_once() {
    let Some(redis) = RedisServer::start(
        "a_bulk_update_of_100000_tickets_is_taken_whole_and_each_ticket_runs_once",
    ) else {
        return;
    };
    let dir = TempDir::new("redis-bulk");
    // The default capacity: the queue's settings are left as installed.
    let config = config(&dir, read_only(), json!({}));
    let a = Deskhook::start(offline_pod(&config, &redis, "pod-a")).await;
    let before = redis.memory();
    let tickets: Vec<String> = (1..=BULK_TICKETS)
        .map(|n| (8_000_000_000_000_000 + n).to_string())
        .collect();

    let started = std::time::Instant::now();
    let answers = deliver_each(&a.url("/webhook/zoho-desk"), &tickets, &AtomicUsize::new(0)).await;
    let intake = started.elapsed();
    let waiting_after_intake = queue_cli(&redis, &["stats"]).await["waiting"].clone();
    let statuses = status_counts(&answers);
    assert_eq!(
        statuses.get(&200),
        Some(&tickets.len()),
        "every delivery of the bulk update is stored and acknowledged: answers by status {statuses:?}"
    );

    let success = "deskhook_workflow_runs_total{result=\"success\"}";
    let deadline = tokio::time::Instant::now() + BULK_DRAIN;
    while a.metric(success).await < BULK_TICKETS as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {BULK_TICKETS} runs finished in {BULK_DRAIN:?}; queue {}",
            a.metric(success).await,
            queue_cli(&redis, &["stats"]).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    until_idle(&redis).await;
    let drained = started.elapsed();

    // Once nothing waits or runs, nothing more can run: a repeat or a miss shows up now.
    let runs = finished_runs(&[&a]);
    let missing: Vec<&String> = tickets.iter().filter(|t| !runs.contains_key(*t)).collect();
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        missing.is_empty() && repeated.is_empty(),
        "each ticket runs exactly once: {} never ran (first {:?}), {} ran more than once (first {:?})",
        missing.len(),
        missing.first(),
        repeated.len(),
        repeated.first()
    );
    assert_eq!(runs.len(), tickets.len(), "no run of a ticket never sent");
    assert_eq!(a.metric(success).await, BULK_TICKETS as f64);
    for result in ["failed", "retried"] {
        let series = format!("deskhook_workflow_runs_total{{result=\"{result}\"}}");
        assert_eq!(a.metric(&series).await, 0.0, "{series}");
    }
    let stats = queue_cli(&redis, &["stats"]).await;
    assert_eq!(stats["dead_letters"], 0, "{stats}");

    let after = redis.memory();
    let mut report = format!(
        "{BULK_TICKETS} deliveries over {CONNECTIONS} connections: all answered in {:.1} s \
         ({:.0}/s), {waiting_after_intake} jobs waiting then, all run in {:.1} s\n",
        intake.as_secs_f64(),
        BULK_TICKETS as f64 / intake.as_secs_f64(),
        drained.as_secs_f64(),
    );
    let holder = redis.url_of_node_holding("{deskhook}:stream");
    for (start, end) in before.iter().zip(&after) {
        if !holder.contains(&format!(":{}/", end.port)) {
            report += &format!(
                "Redis on port {} (none of the deployment's keys): used_memory {} B, \
                 used_memory_peak {} B\n",
                end.port, end.used, end.peak
            );
            continue;
        }
        report += &format!(
            "Redis on port {}: used_memory {} B before, {} B after (the dedupe window keeps a \
             key per delivery), used_memory_peak {} B ({:.0} B per ticket above the start)\n",
            end.port,
            start.used,
            end.used,
            end.peak,
            end.peak.saturating_sub(start.used) as f64 / BULK_TICKETS as f64
        );
    }
    // Straight to the stream: the test harness hides what a passing test prints.
    let _ = std::io::stderr().write_all(report.as_bytes());
}

/// Deliveries of the burst a pod is killed in.
const KILLED_BURST: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_killed_amid_a_burst_of_group_commits_loses_no_acknowledged_delivery() {
    let Some(redis) = RedisServer::start(
        "a_pod_killed_amid_a_burst_of_group_commits_loses_no_acknowledged_delivery",
    ) else {
        return;
    };
    let (fake, ids) = fake_with_tickets(KILLED_BURST).await;
    let dir = TempDir::new("redis-kill-commit");
    let config = config(
        &dir,
        json!({"dispatch": true, "link": true}),
        json!({"claimIdleSeconds": 2}),
    );
    let mut a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let url = a.url("/webhook/zoho-desk");

    // Many deliveries in flight at once, so the pod stores them in groups; SIGKILL lands while
    // some are answered and others are on their way into Redis.
    let acknowledged = AtomicUsize::new(0);
    let (answers, ()) = tokio::join!(deliver_each(&url, &ids, &acknowledged), async {
        let deadline = tokio::time::Instant::now() + DRAIN;
        while acknowledged.load(Ordering::Relaxed) < KILLED_BURST / 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the burst is never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        a.kill().await;
    });
    let statuses = status_counts(&answers);
    assert!(
        statuses.keys().all(|status| [0, 200].contains(status)),
        "a delivery is acknowledged or unanswered, never refused: {statuses:?}"
    );
    assert!(
        statuses.get(&0).is_some_and(|n| *n >= CONNECTIONS),
        "the pod was killed mid-burst: {statuses:?}"
    );
    let acknowledged: Vec<&String> = answers
        .iter()
        .filter(|(_, status)| *status == 200)
        .map(|(ticket, _)| ticket)
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "killed amid the burst: {} deliveries acknowledged, {} unanswered",
        acknowledged.len(),
        statuses.get(&0).unwrap_or(&0)
    );

    // The killed pod's Zoho call slots free themselves only when their leases expire: the
    // second pod's first calls may wait that long.
    let b = Deskhook::start(pod(&config, &fake, &redis, "pod-b")).await;
    // Every delivery that reached Redis runs, acknowledged or not; none writes twice.
    let acknowledged: Vec<String> = acknowledged.into_iter().cloned().collect();
    every_ticket_moved_and_linked_once(&fake, &redis, &acknowledged, &b).await;
}

/// Waits until each of `tickets` is moved to "Refus CMA" and linked, then checks that no
/// move or link was sent twice for any ticket. Moved is read from the ticket: a move a killed
/// pod sent may have taken effect with its answer lost, and the job that sent it must still
/// link the ticket it moved.
async fn every_ticket_moved_and_linked_once(
    fake: &FakeZoho,
    redis: &RedisServer,
    tickets: &[String],
    survivor: &Deskhook,
) {
    let unfinished = || {
        let linked = per_ticket(fake, "update_ticket");
        tickets
            .iter()
            .filter(|id| {
                let moved = fake.ticket(id).is_some_and(|t| t["departmentId"] == "4");
                !(moved && linked.contains_key(*id))
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    if !drained(|| unfinished().is_empty()).await {
        let stats = queue_cli(redis, &["stats"]).await;
        panic!(
            "timed out waiting for every ticket moved and linked: {} are not (first {:?}); \
             queue {stats}\nthe surviving pod's log:\n{}",
            unfinished().len(),
            unfinished().first(),
            survivor.output.text()
        );
    }
    until_idle(redis).await;
    for op in ["move_ticket", "update_ticket"] {
        let repeated: Vec<_> = per_ticket(fake, op)
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect();
        assert!(repeated.is_empty(), "{op} repeated: {repeated:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_crash_loses_no_acknowledged_event() {
    let Some(mut redis) = RedisServer::start("a_redis_crash_loses_no_acknowledged_event") else {
        return;
    };
    let (fake, ids) = fake_with_tickets(120).await;
    let dir = TempDir::new("redis-restart");
    let config = config(&dir, read_only(), json!({"claimIdleSeconds": 2}));
    let a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let b = Deskhook::start(pod(&config, &fake, &redis, "pod-b")).await;

    let first = deliver_all(&[&a, &b], ids[..60].iter().map(|id| delivery(id)).collect()).await;
    // SIGKILL: nothing is flushed on the way down; only what was fsynced survives.
    redis.kill();
    let during = deliver_all(
        &[&a, &b],
        ids[60..90].iter().map(|id| delivery(id)).collect(),
    )
    .await;
    assert!(
        during.iter().all(|(status, _)| *status == 503),
        "with Redis down every delivery is refused, never acknowledged: {during:?}"
    );
    redis.start_again();
    let ready = |p: &Deskhook| {
        let p = p.addr;
        async move {
            support::intake::get(
                &support::intake::client(),
                &format!("http://{p}/ready"),
                &[],
            )
            .await
            .status
                == 200
        }
    };
    let deadline = tokio::time::Instant::now() + DRAIN;
    while !(ready(&a).await && ready(&b).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods ready again after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = deliver_all(&[&a, &b], ids[90..].iter().map(|id| delivery(id)).collect()).await;

    let acknowledged: Vec<&String> = ids[..60]
        .iter()
        .zip(&first)
        .chain(ids[90..].iter().zip(&after))
        .filter(|(_, (status, _))| *status == 200)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(acknowledged.len(), 90, "Redis was up for these");
    until("a run for every acknowledged event", || {
        let runs = per_ticket(&fake, "get_ticket");
        acknowledged.iter().all(|id| runs.contains_key(*id))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanently_failing_job_is_dead_lettered_and_replay_runs_it() {
    let Some(redis) =
        RedisServer::start("a_permanently_failing_job_is_dead_lettered_and_replay_runs_it")
    else {
        return;
    };
    let (fake, ids) = fake_with_tickets(1).await;
    let dir = TempDir::new("redis-dead");
    let config = config(
        &dir,
        read_only(),
        json!({"claimIdleSeconds": 5, "maxAttempts": 2}),
    );
    // Two attempts of three tries each, all refused.
    fake.fail_next("get_ticket", 6, Fault::ServerError);
    let a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let answers = deliver_all(&[&a], vec![delivery(&ids[0])]).await;
    assert_eq!(answers[0].0, 200);

    let deadline = tokio::time::Instant::now() + DRAIN;
    let letters = loop {
        let letters = queue_cli(&redis, &["dead-letters"]).await;
        if letters.as_array().is_some_and(|l| !l.is_empty()) {
            break letters;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let letter = &letters[0];
    assert_eq!(letter["ticket_id"], ids[0].as_str());
    assert_eq!(letter["attempts"], 2);
    assert!(
        letter["error"].as_str().unwrap().contains("fetch"),
        "{letter}"
    );
    assert!(
        !letter["error"]
            .as_str()
            .unwrap()
            .contains(fake_zoho::REFRESH_TOKEN)
    );

    let replayed = queue_cli(&redis, &["replay", letter["id"].as_str().unwrap()]).await;
    assert_eq!(replayed[0]["outcome"], "queued", "{replayed}");
    until("the replayed job to run", || {
        fake.calls_to("get_ticket").iter().any(|c| c.status == 200)
    })
    .await;
    let letters = queue_cli(&redis, &["dead-letters"]).await;
    assert_eq!(letters, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_jobs_across_two_processes_cause_one_token_refresh() {
    let Some(redis) =
        RedisServer::start("fifty_concurrent_jobs_across_two_processes_cause_one_token_refresh")
    else {
        return;
    };
    let (fake, ids) = fake_with_tickets(50).await;
    // A slow token endpoint, so both processes want a token while the first refresh runs.
    fake.set_token_latency(Duration::from_millis(500));
    let dir = TempDir::new("redis-token");
    let config = config(&dir, read_only(), json!({"claimIdleSeconds": 5}));
    let a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let b = Deskhook::start(pod(&config, &fake, &redis, "pod-b")).await;
    let answers = deliver_all(&[&a, &b], ids.iter().map(|id| delivery(id)).collect()).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    until("every job to run", || {
        per_ticket(&fake, "get_ticket").len() == 50
    })
    .await;
    assert_eq!(
        fake.token_refreshes(),
        1,
        "one refresh for the whole deployment"
    );
}

#[tokio::test]
async fn every_pods_console_shows_every_pods_decisions() {
    let Some(redis) = RedisServer::start("every_pods_console_shows_every_pods_decisions") else {
        return;
    };
    let (fake, ids) = fake_with_tickets(2).await;
    let dir = TempDir::new("redis-console");
    let config = config(&dir, read_only(), json!({}));
    let a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let b = Deskhook::start(pod(&config, &fake, &redis, "pod-b")).await;
    // One event reaches each pod.
    let answers = deliver_all(&[&a, &b], ids.iter().map(|id| delivery(id)).collect()).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    for console in [&a, &b] {
        let seen = support::intake::eventually("both decisions in this pod's console", || async {
            let reply = support::intake::get(
                &console.client,
                &console.admin_url("/console/export.json"),
                &[],
            )
            .await;
            let tickets: Vec<String> = reply.json["decisions"]
                .as_array()?
                .iter()
                .filter_map(|d| d["report"]["ticket_id"].as_str().map(str::to_owned))
                .collect();
            ids.iter().all(|id| tickets.contains(id)).then_some(tickets)
        })
        .await;
        assert_eq!(seen.len(), 2, "{seen:?}");
    }
}

/// An ISO-8601 time `seconds_ago` before now, as Zoho writes `modifiedTime`.
fn iso_ago(seconds_ago: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::seconds(seconds_ago);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn reconciliation_runs_a_change_whose_webhook_never_arrived_and_nothing_else() {
    let Some(redis) = RedisServer::start(
        "reconciliation_runs_a_change_whose_webhook_never_arrived_and_nothing_else",
    ) else {
        return;
    };
    let (fake, ids) = fake_with_tickets(1).await;
    let delivered = ids[0].clone();
    // Changed two minutes ago, and its webhook was lost.
    let missed = "9100000000000001";
    // Changed a moment ago: its webhook may still be on its way.
    let settling = "9100000000000002";
    for (id, ago) in [(missed, 120), (settling, 2)] {
        fake.add_ticket(json!({
            "id": id, "subject": "Question", "status": "Open", "departmentId": "1",
            "modifiedTime": iso_ago(ago), "cf": {"cf_opportunite": null}
        }));
    }
    // The delivered ticket changed two minutes ago too, and its webhook did arrive.
    let mut ticket = fake.ticket(&delivered).unwrap();
    ticket["modifiedTime"] = json!(iso_ago(120));
    fake.add_ticket(ticket);

    let dir = TempDir::new("redis-reconcile");
    let config = config(
        &dir,
        read_only(),
        json!({"reconcileIntervalSeconds": 1, "reconcileLookbackSeconds": 3600}),
    );
    let a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    let answers = deliver_all(&[&a], vec![delivery(&delivered)]).await;
    assert_eq!(answers[0].0, 200);

    support::intake::eventually("the missed change to be run", || async {
        fake.calls_to("get_ticket")
            .iter()
            .any(|c| c.path.ends_with(missed))
            .then_some(())
    })
    .await;
    // Two more full rounds (a round lists each of the three handled departments at most),
    // then an idle queue: nothing else is run, and the missed change runs once.
    let listed = fake.calls_to("list_tickets").len();
    until("two more reconciliation rounds", || {
        fake.calls_to("list_tickets").len() >= listed + 6
    })
    .await;
    until_idle(&redis).await;
    let runs = |id: &str| {
        fake.calls_to("get_ticket")
            .iter()
            .filter(|c| c.path.ends_with(id))
            .count()
    };
    assert_eq!(runs(missed), 1, "the missed change runs exactly once");
    assert_eq!(
        runs(&delivered),
        1,
        "a change whose webhook arrived is not run again"
    );
    assert_eq!(
        runs(settling),
        0,
        "a change still settling is left to its webhook"
    );
}

#[tokio::test]
async fn the_dead_letter_stream_stops_at_its_cap_and_counts_what_it_drops() {
    let Some(redis) =
        RedisServer::start("the_dead_letter_stream_stops_at_its_cap_and_counts_what_it_drops")
    else {
        return;
    };
    let (fake, ids) = fake_with_tickets(5).await;
    let dir = TempDir::new("redis-dead-cap");
    let config = config(
        &dir,
        read_only(),
        json!({"claimIdleSeconds": 5, "maxAttempts": 1}),
    );
    // One attempt of three tries for each of the five tickets, all refused.
    fake.fail_next("get_ticket", 15, Fault::ServerError);
    let a = Deskhook::start({
        let mut command = pod(&config, &fake, &redis, "pod-a");
        command.args(["--dead-letter-max", "2"]);
        command
    })
    .await;
    let answers = deliver_all(&[&a], ids.iter().map(|id| delivery(id)).collect()).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    support::intake::eventually("five dead letters, three of them dropped", || async {
        let trimmed = a.metric("deskhook_queue_dead_letters_trimmed_total").await;
        (trimmed >= 3.0).then_some(())
    })
    .await;
    let letters = queue_cli(&redis, &["dead-letters"]).await;
    let kept: Vec<&str> = letters
        .as_array()
        .expect("a list")
        .iter()
        .map(|l| l["ticket_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "{letters}");
    assert_eq!(
        a.metric("deskhook_queue_dead_letters_trimmed_total").await,
        3.0
    );
}

/// One pod's queue on `redis`, as `serve` builds it, with a one-second lease.
fn queue_of(redis: &RedisServer, consumer: &str) -> std::sync::Arc<deskhook::queue::RedisQueue> {
    let url = deskhook::config::Secret::new(redis.url());
    let shared = deskhook::store::Redis::connect(&url, "deskhook").expect("a valid URL");
    let options = deskhook::queue::RedisQueueOptions {
        consumer: consumer.to_owned(),
        claim_idle: Duration::from_secs(1),
        max_attempts: 3,
        dead_letter_max: deskhook::queue::redis::DEFAULT_DEAD_LETTER_MAX,
        payload_fields: None,
        read_batch: 16,
    };
    let metrics = deskhook::metrics::Metrics::new();
    deskhook::queue::RedisQueue::start(&shared, options, &metrics).expect("the queue starts")
}

/// Stream entries `consumer` holds: jobs it runs or has read and not yet acknowledged.
async fn held_by(redis: &RedisServer, consumer: &str) -> usize {
    let key = "{deskhook}:stream";
    let client = redis::Client::open(redis.url_of_node_holding(key)).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let held: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(key)
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg(consumer)
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    held.len()
}

/// Entries on the shared stream: tickets with a job that may be claimed.
async fn stream_length(redis: &RedisServer) -> usize {
    let key = "{deskhook}:stream";
    let client = redis::Client::open(redis.url_of_node_holding(key)).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_holds_its_ticket_across_pods_and_an_abandoned_hold_ends() {
    use deskhook::queue::{AcceptPolicy, Queue};
    let Some(redis) =
        RedisServer::start("a_manual_run_holds_its_ticket_across_pods_and_an_abandoned_hold_ends")
    else {
        return;
    };
    let policy = AcceptPolicy {
        capacity: 100,
        dedupe_window: Duration::from_secs(60),
    };
    let event = |ticket: &str, n: i64| {
        deskhook::event::TicketEvent::new(
            ticket.to_owned(),
            "Ticket_Update".to_owned(),
            None,
            Some(n),
            json!({"n": n}),
        )
    };
    let first = queue_of(&redis, "pod-a");
    let second = queue_of(&redis, "pod-b");
    let manual = deskhook::event::TicketEvent::manual;

    let held = first.take_ticket(manual("1".into())).await.unwrap();
    let held = held.expect("a free ticket is taken");
    assert!(
        second
            .take_ticket(manual("1".into()))
            .await
            .unwrap()
            .is_none()
    );
    second.accept(event("1", 1), policy).await.unwrap();
    assert_eq!(
        stream_length(&redis).await,
        0,
        "an event was put beside the manual run"
    );
    first.ack(&held).await;
    let job = tokio::time::timeout(Duration::from_secs(20), second.claim())
        .await
        .expect("the waiting event runs once the manual run ends")
        .unwrap();
    assert_eq!(job.event.event_time_ms, Some(1));
    second.ack(&job).await;

    // A pod that dies holding a ticket stops renewing the hold; another pod ends it.
    let abandoned = first.take_ticket(manual("2".into())).await.unwrap();
    assert!(abandoned.is_some());
    drop(first);
    second.accept(event("2", 2), policy).await.unwrap();
    let job = tokio::time::timeout(DRAIN, second.claim())
        .await
        .expect("the abandoned hold ends and the event runs")
        .unwrap();
    assert_eq!(job.event.ticket_id, "2");
    assert_ne!(job.id, abandoned.unwrap().id);
}

/// A decision report of a manual run of `ticket`.
fn report_of(ticket: &str) -> deskhook::workflow::DecisionReport {
    use deskhook::config::{Settings, SettingsSource};
    let settings = Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap();
    let job = deskhook::workflow::Run {
        id: 1,
        event: deskhook::event::TicketEvent::manual(ticket.to_owned()),
        attempt: 1,
        enqueued_at: std::time::Instant::now(),
    };
    deskhook::workflow::DecisionReport::start(&job, &settings).finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_link_never_opens_another_tickets_decision() {
    use deskhook::decisions::DecisionLog;
    use deskhook::decisions::RedisDecisions;
    let Some(mut redis) =
        RedisServer::start("a_decision_link_never_opens_another_tickets_decision")
    else {
        return;
    };
    let url = deskhook::config::Secret::new(redis.url());
    let log_of_pod = || {
        let shared = deskhook::store::Redis::connect(&url, "deskhook").expect("a valid URL");
        DecisionLog::new(10).with_shared(RedisDecisions::new(shared, 10))
    };
    let (first, second) = (log_of_pod(), log_of_pod());
    second.push(report_of("7001"));
    until_listed(|| listed(&second, "7001")).await;
    first.push(report_of("7002"));
    until_listed(|| listed(&first, "7002")).await;
    let other = listed(&first, "7001")
        .await
        .expect("every pod's decisions are listed");

    // Redis goes away: the console falls back to this pod's own reports.
    redis.kill();
    let found = first.get(&other.id).await;
    assert!(
        found.as_ref().is_none_or(|d| d.report.ticket_id == "7001"),
        "link {} opened ticket {}'s decision",
        other.id,
        found.unwrap().report.ticket_id
    );
    let own = first.list().await;
    assert_eq!(own.len(), 1, "only this pod's report is left to show");
    assert_eq!(
        first.get(&own[0].id).await.unwrap().report.ticket_id,
        "7002"
    );
}

/// The decision of `ticket` among those `log` lists.
async fn listed(
    log: &deskhook::decisions::DecisionLog,
    ticket: &str,
) -> Option<deskhook::decisions::StoredDecision> {
    let all = log.list().await;
    all.into_iter().find(|d| d.report.ticket_id == ticket)
}

/// Waits, at most [`DRAIN`], until `found` finds a decision.
async fn until_listed<F, Fut>(mut found: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<deskhook::decisions::StoredDecision>>,
{
    let deadline = tokio::time::Instant::now() + DRAIN;
    while found().await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the decision is never listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pod elected to reconcile, as Redis holds it.
async fn reconciler_of(redis: &RedisServer) -> Option<String> {
    let key = "{deskhook}:reconciler";
    let client = redis::Client::open(redis.url_of_node_holding(key)).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stopping_pod_stops_reconciling_and_gives_the_election_up() {
    let Some(redis) =
        RedisServer::start("a_stopping_pod_stops_reconciling_and_gives_the_election_up")
    else {
        return;
    };
    let (fake, _) = fake_with_tickets(1).await;
    let dir = TempDir::new("redis-reconcile-stop");
    let config = config(
        &dir,
        read_only(),
        json!({"reconcileIntervalSeconds": 1, "reconcileLookbackSeconds": 3600}),
    );
    let mut a = Deskhook::start(pod(&config, &fake, &redis, "pod-a")).await;
    until_async("pod-a to be elected", || async {
        reconciler_of(&redis).await.as_deref() == Some("pod-a")
    })
    .await;
    a.terminate().await;
    assert!(a.wait_exit().await.success());
    assert_eq!(
        reconciler_of(&redis).await,
        None,
        "the stopped pod still holds the election, so no other pod reconciles for a term"
    );
}

/// Waits, at most [`DRAIN`], until `done` resolves to true.
async fn until_async<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DRAIN;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A workflow whose every run panics.
struct AlwaysPanics;

#[async_trait::async_trait]
impl deskhook::workflow::Workflow for AlwaysPanics {
    async fn run(
        &self,
        job: &deskhook::workflow::Run,
        _settings: &deskhook::config::Settings,
    ) -> deskhook::workflow::DecisionReport {
        panic!(
            "injected panic in the run of ticket {}",
            job.event.ticket_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_runs_panic_is_dead_lettered_and_frees_its_ticket() {
    use deskhook::queue::{AcceptPolicy, Queue};
    let Some(redis) =
        RedisServer::start("a_job_whose_runs_panic_is_dead_lettered_and_frees_its_ticket")
    else {
        return;
    };
    let queue = queue_of(&redis, "pod-a");
    let settings = deskhook::config::Settings::from_spec(
        Default::default(),
        deskhook::config::SettingsSource::Environment,
        1,
    )
    .unwrap();
    let context = deskhook::worker::WorkerContext {
        queue: queue.clone(),
        workflow: std::sync::Arc::new(AlwaysPanics),
        settings: deskhook::config::SettingsHandle::new(settings),
        metrics: std::sync::Arc::new(deskhook::metrics::Metrics::new()),
        decisions: std::sync::Arc::new(deskhook::decisions::DecisionLog::new(10)),
    };
    let workers = deskhook::worker::spawn_workers(&context, 1);
    let event = deskhook::event::TicketEvent::new(
        "31".to_owned(),
        "Ticket_Update".to_owned(),
        None,
        Some(1),
        json!({}),
    );
    let policy = AcceptPolicy {
        capacity: 10,
        dedupe_window: Duration::from_secs(60),
    };
    queue.accept(event, policy).await.unwrap();

    let url = deskhook::config::Secret::new(redis.url());
    let admin = deskhook::queue::redis::QueueAdmin::new(
        &deskhook::store::Redis::connect(&url, "deskhook").unwrap(),
    );
    // Three attempts (the queue's limit), each a panic, then the dead-letter stream; the
    // lease is no longer renewed once the job is there.
    until_async("the panicking job to be dead-lettered", || async {
        let stats = admin.stats().await.unwrap();
        stats.dead_letters == 1 && stats.running == 0 && stats.waiting == 0
    })
    .await;
    let panics = context
        .metrics
        .workflow_errors
        .with_label_values(&["panic"])
        .get();
    assert_eq!(panics, 3, "one failed step per attempt");
    // The only worker lives on: the ticket's next event runs (and panics) too.
    let next = deskhook::event::TicketEvent::new(
        "31".to_owned(),
        "Ticket_Update".to_owned(),
        None,
        Some(2),
        json!({}),
    );
    queue.accept(next, policy).await.unwrap();
    until_async("the next event to run", || async {
        context
            .metrics
            .workflow_errors
            .with_label_values(&["panic"])
            .get()
            > 3
    })
    .await;
    queue.close();
    for worker in workers {
        worker.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upkeep_trims_acknowledged_entries_and_keeps_unread_ones() {
    use deskhook::queue::{AcceptPolicy, Queue};
    let Some(redis) =
        RedisServer::start("the_upkeep_trims_acknowledged_entries_and_keeps_unread_ones")
    else {
        return;
    };
    let policy = AcceptPolicy {
        capacity: 10_000,
        dedupe_window: Duration::from_secs(60),
    };
    let event = |ticket: usize| {
        deskhook::event::TicketEvent::new(
            ticket.to_string(),
            "Ticket_Add".to_owned(),
            None,
            None,
            json!({"id": ticket.to_string()}),
        )
    };
    let queue = queue_of(&redis, "pod-a");
    for ticket in 1..=500 {
        queue.accept(event(ticket), policy).await.unwrap();
    }
    for _ in 0..500 {
        let job = tokio::time::timeout(DRAIN, queue.claim())
            .await
            .expect("every job runs")
            .unwrap();
        queue.ack(&job).await;
    }
    // Trimming goes by whole stream nodes (100 entries): at most one node of done entries stays.
    until_async("the acknowledged entries are trimmed", || async {
        stream_length(&redis).await <= 100
    })
    .await;
    queue.accept(event(501), policy).await.unwrap();
    let job = tokio::time::timeout(DRAIN, queue.claim())
        .await
        .expect("an entry queued after a trim runs")
        .unwrap();
    assert_eq!(job.event.ticket_id, "501");
}

#[tokio::test]
async fn a_cluster_reached_without_the_cluster_setting_says_so_instead_of_unreachable() {
    let Some(redis) = RedisServer::start_cluster(
        "a_cluster_reached_without_the_cluster_setting_says_so_instead_of_unreachable",
    ) else {
        return;
    };
    let (fake, ids) = fake_with_tickets(1).await;
    let dir = TempDir::new("redis-moved");
    let config = config(&dir, read_only(), json!({}));
    let mut command = pod(&config, &fake, &redis, "pod-a");
    // A plain URL to a node that does not serve the deployment's slot.
    command.env(
        "DESKHOOK_REDIS_URL",
        redis.url_of_node_not_holding("{deskhook}:pending"),
    );
    let pod = Deskhook::start(command).await;
    let reply = pod.deliver_signed(SECRET, &delivery(&ids[0])).await;
    assert_eq!(
        reply.status, 503,
        "an event the cluster refused is not acknowledged"
    );
    let logged = pod
        .output
        .wait_for("the cluster's diagnosis", |event| {
            // MOVED from a command, or CROSSSLOT from the rename of the old key names, which
            // a pod that believes it has a single server tries at start.
            event["message"].as_str().is_some_and(|m| {
                m.starts_with("Redis answered MOVED")
                    || m.starts_with("Redis refused keys of different slots")
            })
        })
        .await;
    assert!(
        logged["message"]
            .as_str()
            .is_some_and(|m| m.contains("DESKHOOK_REDIS_CLUSTER")),
        "{logged}"
    );
    assert!(
        pod.output
            .events_with("Redis is unreachable: deliveries get 503")
            .is_empty()
    );
}
