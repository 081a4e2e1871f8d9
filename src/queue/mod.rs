//! The queue between the webhook endpoint and the workers.
//!
//! Zoho never redelivers, so the contract is strict: [`Queue::accept`] returns only once the
//! event is stored (or recognised as a duplicate), and an event that cannot be stored is an
//! error the HTTP layer turns into a 503, never a 200. Events for one ticket never run
//! concurrently; events arriving while their ticket runs coalesce into exactly one re-run,
//! which reads the ticket's latest state anyway.

mod memory;
pub mod redis;
pub mod render;

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::event::TicketEvent;

pub use memory::MemoryQueue;
pub use redis::{RedisQueue, RedisQueueOptions};

/// Runs of one job at most, the first included, where the backend has no setting of its own.
pub const MAX_ATTEMPTS: u32 = 5;

/// One unit of work: an event and how many times it was tried.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: u64,
    pub event: TicketEvent,
    /// 1 on the first run.
    pub attempt: u32,
    pub enqueued_at: Instant,
}

/// What became of an accepted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored; it will run.
    Queued,
    /// Its ticket already had an event waiting: the two coalesce into one run.
    Coalesced,
    /// The same delivery was accepted within the deduplication window.
    Duplicate,
}

/// An event the queue could not store.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("queue is full")]
    Full,
    #[error("queue is closed for shutdown")]
    Closed,
    #[error("queue backend is unavailable")]
    Unavailable,
}

/// The limits in force when an event is accepted (read from the settings snapshot).
#[derive(Clone, Copy, Debug)]
pub struct AcceptPolicy {
    pub capacity: usize,
    pub dedupe_window: Duration,
}

/// Accept, claim, ack and retry, whatever the backend.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Stores an event, or says why it cannot.
    async fn accept(
        &self,
        event: TicketEvent,
        policy: AcceptPolicy,
    ) -> Result<Accepted, QueueError>;
    /// Waits for the next job whose ticket is not running; `None` once closed and drained.
    async fn claim(&self) -> Option<Job>;
    /// Takes the ticket of `event` for a run started outside the queue (a manual run), as a
    /// claim of its job would: the job gets an id of its own, and no other job of the ticket
    /// runs until it is acknowledged with [`Queue::ack`]. `Ok(None)` when a job of the ticket
    /// is running or waiting: the caller runs nothing rather than overtake it.
    async fn take_ticket(&self, event: TicketEvent) -> Result<Option<Job>, QueueError>;
    /// Marks a claimed job done, releasing its ticket (and scheduling its coalesced re-run).
    async fn ack(&self, job: &Job);
    /// Releases a failed job's ticket and runs the job again after `delay`.
    async fn retry(&self, job: Job, delay: Duration);
    /// Ends a job that failed for good, keeping it with `error` where the backend can (the
    /// Redis dead-letter stream) so it can be replayed; the memory backend only logs it.
    async fn dead_letter(&self, job: &Job, error: &str) {
        let _ = error;
        self.ack(job).await;
    }
    /// Runs of one job at most, the first included.
    fn max_attempts(&self) -> u32 {
        MAX_ATTEMPTS
    }
    /// Events waiting (not counting running ones).
    fn depth(&self) -> usize;
    /// Whether new events are accepted.
    fn is_accepting(&self) -> bool;
    /// Stops accepting; claims continue until the queue is drained.
    fn close(&self);
    /// Ticket ids of waiting and running jobs, to log what a shutdown left unfinished.
    fn unfinished(&self) -> Vec<String>;
}
