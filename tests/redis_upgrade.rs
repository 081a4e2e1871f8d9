//! An upgrade from the version whose Redis keys had no hash tag (`deskhook:pending`, now
//! `{deskhook}:pending`) against a real `redis-server`: the jobs the previous version left
//! waiting, the job of its pod that died mid-run, and a job one of its pods queues after the
//! upgrade began all run, each once.
//!
//! Skipped (with a message) where `redis-server` is not installed, except in CI.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use deskhook::queue::Queue;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use support::redis::RedisServer;

/// A job as the previous version stored it.
fn old_job(id: u64, ticket: &str) -> String {
    json!({
        "id": id,
        "ticket_id": ticket,
        "event_type": "Ticket_Update",
        "payload": {"id": ticket},
        "dedupe_key": format!("{id:032x}"),
        "enqueued_at_ms": 1_700_000_000_000u64,
    })
    .to_string()
}

/// What the previous version's accept script did with one event.
async fn old_accept(connection: &mut MultiplexedConnection, id: u64, ticket: &str) {
    let _: () = redis::cmd("HSET")
        .arg("deskhook:pending")
        .arg(ticket)
        .arg(old_job(id, ticket))
        .query_async(connection)
        .await
        .unwrap();
    let added: i64 = redis::cmd("SADD")
        .arg("deskhook:queued")
        .arg(ticket)
        .query_async(connection)
        .await
        .unwrap();
    if added == 1 {
        let _: String = redis::cmd("XADD")
            .arg("deskhook:stream")
            .arg("*")
            .arg("ticket")
            .arg(ticket)
            .query_async(connection)
            .await
            .unwrap();
    }
}

/// What a pod of the previous version did when it took the next entry: the job moves from
/// `pending` to `running`, under the entry's id.
async fn old_take(connection: &mut MultiplexedConnection, consumer: &str) -> String {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("deskhook:stream")
        .arg(">")
        .query_async(connection)
        .await
        .unwrap();
    let entry = &reply.keys[0].ids[0];
    let ticket: String = entry.get("ticket").unwrap();
    let job: String = redis::cmd("HGET")
        .arg("deskhook:pending")
        .arg(&ticket)
        .query_async(connection)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .cmd("HDEL")
        .arg("deskhook:pending")
        .arg(&ticket)
        .cmd("HSET")
        .arg("deskhook:running")
        .arg(&entry.id)
        .arg(job)
        .arg(format!("{}:attempts", entry.id))
        .arg(1)
        .query_async(connection)
        .await
        .unwrap();
    ticket
}

/// Claims (and acknowledges) jobs until `count` ran or nothing more comes.
async fn run_jobs(queue: &deskhook::queue::RedisQueue, count: usize) -> BTreeMap<String, u64> {
    let mut ran = BTreeMap::new();
    while ran.len() < count {
        let Ok(Some(job)) = tokio::time::timeout(Duration::from_secs(30), queue.claim()).await
        else {
            break;
        };
        assert!(
            ran.insert(job.event.ticket_id.clone(), job.id).is_none(),
            "ticket {} ran twice",
            job.event.ticket_id
        );
        queue.ack(&job).await;
    }
    ran
}

async fn exists(connection: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(connection)
        .await
        .unwrap()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_runs_every_job_the_previous_version_queued() {
    // A single server: a Redis Cluster refused the previous version's scripts, so it never
    // holds such keys.
    let Some(redis) =
        RedisServer::start_single("an_upgrade_runs_every_job_the_previous_version_queued")
    else {
        return;
    };
    let url = redis.url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut old = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("deskhook:stream")
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut old)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("deskhook:job-seq")
        .arg(3)
        .query_async(&mut old)
        .await
        .unwrap();
    // A pod of the previous version took ticket 2 and died; tickets 1 and 3 wait.
    old_accept(&mut old, 1, "2").await;
    assert_eq!(old_take(&mut old, "old-pod").await, "2");
    old_accept(&mut old, 2, "1").await;
    old_accept(&mut old, 3, "3").await;

    let shared = deskhook::store::Redis::connect(&deskhook::config::Secret::new(url), "deskhook")
        .expect("a valid URL");
    let options = deskhook::queue::RedisQueueOptions {
        consumer: "new-pod".to_owned(),
        claim_idle: Duration::from_secs(1),
        max_attempts: 3,
        dead_letter_max: deskhook::queue::redis::DEFAULT_DEAD_LETTER_MAX,
        payload_fields: None,
        read_batch: 4,
    };
    let metrics = deskhook::metrics::Metrics::new();
    let queue = deskhook::queue::RedisQueue::start(&shared, options, &metrics).unwrap();

    let ran = run_jobs(&queue, 3).await;
    assert_eq!(
        ran.keys().collect::<Vec<_>>(),
        ["1", "2", "3"],
        "the waiting jobs and the dead pod's job run"
    );
    assert_eq!(
        ran["2"], 1,
        "the dead pod's job keeps its id (and so its ledger)"
    );
    assert!(!exists(&mut old, "deskhook:pending").await);
    assert!(exists(&mut old, "{deskhook}:job-seq").await);

    // A pod of the previous version, still running, queues another event the old way.
    old_accept(&mut old, 4, "4").await;
    let ran = run_jobs(&queue, 1).await;
    assert_eq!(ran.keys().collect::<Vec<_>>(), ["4"]);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), queue.claim())
            .await
            .is_err(),
        "a job ran twice"
    );
}
