//! Reconciliation: Zoho does not redeliver a webhook it failed to deliver, so one elected pod
//! periodically lists the tickets modified recently in the handled departments and queues
//! any whose latest change came after the last run deskhook finished for that ticket, unless
//! a job of the ticket is waiting or running (its run reads the ticket as it is then).
//! Level-triggered, like a Kubernetes controller: it compares the state it sees with what was
//! processed, whatever events were lost on the way.
//!
//! The queue records, per ticket, when a run last finished (`ticket:<id>`) and which tickets
//! have a job (`queued`). A run finishes after its own writes, so the changes deskhook
//! made itself are never newer than that mark (beyond [`CLOCK_MARGIN`] of clock skew) and
//! never start a run (DESIGN invariant 4). Changes younger than [`SETTLE`] are left alone:
//! their webhook may still be on its way.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::config::{Settings, SettingsHandle};
use crate::event::TicketEvent;
use crate::queue::redis::Keys;
use crate::queue::{AcceptPolicy, Accepted, Queue, QueueError};
use crate::store::{Context, Redis, RedisError, now_ms};
use crate::workflow::connection::{ConnectError, ZohoConnector};
use crate::zoho::{ZohoClients, ZohoError};

/// Allowed difference between Zoho's clocks and ours.
const CLOCK_MARGIN: Duration = Duration::from_secs(30);
/// A change this recent is left to its webhook.
const SETTLE: Duration = Duration::from_secs(30);
/// Tickets listed per department and round.
const PER_DEPARTMENT: usize = 200;

/// Gives the election up, if this pod holds it.
const RESIGN: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"#;

/// A reconciliation round that stopped; the next round starts afresh.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to connect to Zoho: {0}")]
    Connect(#[from] ConnectError),
    #[error("failed to list the departments: {0}")]
    Departments(#[source] ZohoError),
    #[error("failed to list recently modified tickets: {0}")]
    Tickets(#[source] ZohoError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("failed to queue a missed change: {0}")]
    Queue(#[source] QueueError),
}

/// The elected reconciler of one deployment.
pub struct Reconciler {
    redis: Redis,
    keys: Keys,
    queue: Arc<dyn Queue>,
    settings: SettingsHandle,
    zoho: ZohoConnector,
    /// This pod's name, the election's owner value.
    consumer: String,
}

impl Reconciler {
    pub fn new(
        redis: Redis,
        queue: Arc<dyn Queue>,
        settings: SettingsHandle,
        zoho: ZohoConnector,
        consumer: String,
    ) -> Self {
        Self {
            keys: Keys::new(&redis),
            redis,
            queue,
            settings,
            zoho,
            consumer,
        }
    }

    /// Runs rounds every `spec.queue.redis.reconcileIntervalSeconds` (re-read each round, so
    /// turning it on or off needs no restart) until `stop` turns true at shutdown; then gives
    /// the election up, so another pod reconciles without waiting for this one's term to end.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::select! {
                () = self.rounds() => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
            let resigned: Result<i64, RedisError> = redis::Script::new(RESIGN)
                .key(self.redis.key("reconciler"))
                .arg(&self.consumer)
                .invoke_async(&mut self.redis.connection())
                .await
                .doing("give the reconciler election up");
            if let Err(error) = resigned {
                tracing::warn!(error = %error, "the reconciler term ends by itself");
            }
            tracing::debug!("reconciler stopped");
        })
    }

    async fn rounds(&self) {
        loop {
            let interval = self
                .settings
                .current()
                .queue()
                .redis
                .reconcile_interval_seconds;
            if interval == 0 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            let interval = Duration::from_secs(interval);
            tokio::time::sleep(interval).await;
            match self.elected(interval * 3).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(error = %error, "reconciliation skipped");
                    continue;
                }
            }
            let settings = self.settings.current();
            match self.round(&settings).await {
                Ok(0) => tracing::debug!("reconciliation found nothing missed"),
                Ok(queued) => {
                    tracing::warn!(
                        queued,
                        "reconciliation queued ticket changes whose webhook never arrived"
                    );
                }
                Err(error) => tracing::warn!(error = %error, "reconciliation round failed"),
            }
        }
    }

    /// Whether this pod is the reconciler, renewing its term for `term`.
    async fn elected(&self, term: Duration) -> Result<bool, RedisError> {
        let won: i64 = redis::Script::new(RENEW)
            .key(self.redis.key("reconciler"))
            .arg(&self.consumer)
            .arg(term.as_millis() as u64)
            .invoke_async(&mut self.redis.connection())
            .await
            .doing("elect the reconciler")?;
        Ok(won == 1)
    }

    /// One pass over the handled departments; returns how many tickets were queued.
    pub async fn round(&self, settings: &Settings) -> Result<usize, ReconcileError> {
        let zoho = self.zoho.clients(settings)?;
        let departments = department_ids(&zoho, settings).await?;
        let now = now_ms();
        let lookback = settings.queue().redis.reconcile_lookback_seconds * 1000;
        let policy = AcceptPolicy {
            capacity: settings.queue_capacity() as usize,
            dedupe_window: Duration::from_secs(settings.queue().dedupe_window_seconds),
        };
        let mut queued = 0;
        for department in departments {
            let tickets = zoho
                .desk
                .list_recent_tickets(&department, PER_DEPARTMENT)
                .await
                .map_err(ReconcileError::Tickets)?;
            for ticket in tickets {
                let Some(modified) = ticket.modified_time.as_deref().and_then(epoch_ms) else {
                    continue;
                };
                if modified + lookback < now {
                    break; // sorted newest first: the rest are older still
                }
                if modified + SETTLE.as_millis() as u64 > now {
                    continue;
                }
                let (seen, has_job): (Option<u64>, bool) = redis::pipe()
                    .cmd("GET")
                    .arg(self.keys.touched(&ticket.id))
                    .cmd("SISMEMBER")
                    .arg(&self.keys.queued)
                    .arg(&ticket.id)
                    .query_async(&mut self.redis.connection())
                    .await
                    .doing("read when a ticket was last processed")?;
                let processed =
                    seen.is_some_and(|seen| modified <= seen + CLOCK_MARGIN.as_millis() as u64);
                if processed || has_job {
                    continue;
                }
                let event = TicketEvent::new(
                    ticket.id.clone(),
                    "Ticket_Update".into(),
                    settings.zoho().org_id.clone(),
                    Some(modified as i64),
                    json!({"id": ticket.id, "departmentId": department, "reconciled": true}),
                );
                match self.queue.accept(event, policy).await {
                    Ok(Accepted::Queued | Accepted::Coalesced) => {
                        tracing::info!(ticket_id = %ticket.id, "reconciliation queued a missed change");
                        queued += 1;
                    }
                    Ok(Accepted::Duplicate) => {}
                    Err(error) => return Err(ReconcileError::Queue(error)),
                }
            }
        }
        Ok(queued)
    }
}

/// Ids of the handled departments (every department when the list is empty).
async fn department_ids(
    zoho: &ZohoClients,
    settings: &Settings,
) -> Result<Vec<String>, ReconcileError> {
    let all = zoho
        .desk
        .departments()
        .await
        .map_err(ReconcileError::Departments)?;
    Ok(all
        .into_iter()
        .filter(|d| settings.handles_department(&d.name))
        .map(|d| d.id)
        .collect())
}

/// Zoho's time fields: ISO-8601 (`2026-11-20T10:00:00.000Z`) or epoch milliseconds.
fn epoch_ms(text: &str) -> Option<u64> {
    if let Ok(ms) = text.trim().parse::<u64>() {
        return Some(ms);
    }
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoho_times_are_read_in_both_forms() {
        assert_eq!(epoch_ms("1714560000000"), Some(1_714_560_000_000));
        assert_eq!(
            epoch_ms("2024-05-01T10:40:00.000Z"),
            Some(1_714_560_000_000)
        );
        assert_eq!(epoch_ms("yesterday"), None);
    }
}
