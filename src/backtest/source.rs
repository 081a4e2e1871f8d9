//! Where recorded decisions come from: a running deskhook's admin API, Redis, or archive
//! files; and which of them a backtest replays.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde::Deserialize;

use crate::archive;
use crate::config::Secret;
use crate::decisions::RedisDecisions;
use crate::store::{Redis, Topology};
use crate::workflow::DecisionReport;

/// Decisions `/webhook/decisions` returns at most in one answer.
pub const ADMIN_API_MAX: usize = 200;
/// Decisions read from Redis at most (the retention is smaller in practice).
const REDIS_MAX: usize = 100_000;

/// A store of recorded decisions.
pub enum Source {
    /// `GET <url>/webhook/decisions` with the admin token.
    Admin { url: String, token: Secret },
    /// The shared decision list of the Redis backend.
    Redis {
        url: Secret,
        key_prefix: String,
        topology: Topology,
    },
    /// A directory of archive files, or one file.
    Archive(PathBuf),
}

/// Recorded decisions that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    HttpClient(#[from] crate::outbound::ClientError),
    #[error("failed to read decisions from the admin API: {0}")]
    Admin(String),
    #[error("failed to read decisions from the admin API: it answered {0}")]
    AdminStatus(StatusCode),
    #[error("failed to connect to Redis")]
    RedisSetup(#[source] crate::store::RedisSetupError),
    #[error("failed to read decisions from Redis")]
    Redis(#[source] crate::store::RedisError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
}

#[derive(Deserialize)]
struct AdminAnswer {
    decisions: Vec<DecisionReport>,
}

impl Source {
    /// Every decision the store holds (the admin API: its most recent ones).
    pub async fn load(&self) -> Result<Vec<DecisionReport>, SourceError> {
        match self {
            Source::Admin { url, token } => {
                let http = crate::outbound::http_client()?;
                let url = format!("{}/webhook/decisions", url.trim_end_matches('/'));
                let answer = http
                    .get(url)
                    .query(&[("limit", ADMIN_API_MAX)])
                    .bearer_auth(token.expose())
                    .send()
                    .await
                    .map_err(|e| SourceError::Admin(e.without_url().to_string()))?;
                if !answer.status().is_success() {
                    return Err(SourceError::AdminStatus(answer.status()));
                }
                let answer: AdminAnswer = answer
                    .json()
                    .await
                    .map_err(|e| SourceError::Admin(e.without_url().to_string()))?;
                Ok(answer.decisions)
            }
            Source::Redis {
                url,
                key_prefix,
                topology,
            } => {
                let redis = Redis::connect_to(url, key_prefix, *topology)
                    .map_err(SourceError::RedisSetup)?;
                let entries = RedisDecisions::new(redis, REDIS_MAX)
                    .list()
                    .await
                    .map_err(SourceError::Redis)?;
                Ok(entries.into_iter().map(|(_, report)| report).collect())
            }
            Source::Archive(path) => Ok(archive::read(path)?.reports),
        }
    }
}

/// The decisions a backtest replays: made within `since` of `now`, newest first, at most
/// `limit`. Ties are broken by ticket, job and attempt so the order never depends on the
/// store's.
pub fn select(
    mut decisions: Vec<DecisionReport>,
    now: SystemTime,
    since: Option<Duration>,
    limit: Option<usize>,
) -> Vec<DecisionReport> {
    if let Some(since) = since {
        let oldest = now.checked_sub(since).unwrap_or(SystemTime::UNIX_EPOCH);
        decisions.retain(|d| d.started_at >= oldest);
    }
    decisions.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| a.ticket_id.cmp(&b.ticket_id))
            .then_with(|| a.job_id.cmp(&b.job_id))
            .then_with(|| a.attempt.cmp(&b.attempt))
    });
    if let Some(limit) = limit {
        decisions.truncate(limit);
    }
    decisions
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::{Settings, SettingsSource};
    use crate::event::TicketEvent;
    use crate::workflow::Run;

    fn decided(ticket: &str, at: SystemTime) -> DecisionReport {
        let settings =
            Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap();
        let job = Run {
            id: 0,
            event: TicketEvent::manual(ticket.to_owned()),
            attempt: 1,
            enqueued_at: Instant::now(),
        };
        let mut report = DecisionReport::start(&job, &settings);
        report.started_at = at;
        report
    }

    #[test]
    fn the_newest_within_the_window_come_first() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let decisions = vec![
            decided("old", now - 10 * 24 * hour),
            decided("b", now - hour),
            decided("a", now - hour),
            decided("new", now),
        ];
        let kept = select(decisions.clone(), now, Some(7 * 24 * hour), None);
        let tickets: Vec<&str> = kept.iter().map(|d| d.ticket_id.as_str()).collect();
        assert_eq!(tickets, ["new", "a", "b"]);
        let kept = select(decisions, now, None, Some(2));
        let tickets: Vec<&str> = kept.iter().map(|d| d.ticket_id.as_str()).collect();
        assert_eq!(tickets, ["new", "a"]);
    }
}
