//! The in-process queue: bounded, deduplicating, serialised per ticket.
//!
//! One `std::sync::Mutex` guards all state; it is held only for a few map operations and never
//! across an `.await`, which is cheaper than an async lock on this hot path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{AcceptPolicy, Accepted, Job, Queue, QueueError};
use crate::event::{DedupeKey, TicketEvent};

/// Deduplication keys remembered at most; the oldest are forgotten first, so memory stays
/// bounded whatever the window. Below 7/8 of 32,768, the set's table never grows past 32,768
/// slots: about 1.6 MB for the set and the arrival order together, full. A repeated delivery
/// comes seconds after the first, and 20,000 keys is more than a day of a busy desk's events;
/// only a burst larger than that shortens the window, never the bound.
const DEDUPE_MAX_KEYS: usize = 20_000;

#[derive(Default)]
struct TicketSlot {
    pending: Option<Job>,
    running: bool,
}

#[derive(Default)]
struct Inner {
    /// Tickets with a pending job and nothing running, in arrival order.
    ready: VecDeque<String>,
    tickets: HashMap<String, TicketSlot>,
    /// Keys seen within the window: exactly those in `seen_order`.
    seen: HashSet<DedupeKey>,
    seen_order: VecDeque<(DedupeKey, Instant)>,
    /// Workers parked in `claim` (counted from before they sleep until after they wake).
    /// While it is zero every worker is busy and will look at `ready` before sleeping, so a
    /// burst is accepted without one wake-up per event. A cancelled `claim` leaves it too
    /// high, which costs at most a spurious wake-up, never a lost one.
    idle: usize,
}

impl Inner {
    /// Forgets the keys out of the window, and the oldest beyond room for one more.
    fn forget_expired(&mut self, window: Duration, now: Instant) {
        while let Some(&(key, at)) = self.seen_order.front() {
            let expired = now.duration_since(at) >= window;
            if !expired && self.seen_order.len() < DEDUPE_MAX_KEYS {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&key);
        }
    }

    fn is_duplicate(&mut self, key: &DedupeKey, window: Duration, now: Instant) -> bool {
        if window.is_zero() {
            return false;
        }
        self.forget_expired(window, now);
        self.seen.contains(key)
    }

    /// Call right after [`Inner::is_duplicate`] said no: the key is not in the set.
    fn remember(&mut self, key: &DedupeKey, window: Duration, now: Instant) {
        if !window.is_zero() {
            self.seen.insert(*key);
            self.seen_order.push_back((*key, now));
        }
    }

    /// Puts `job` as its ticket's pending job; returns true when it replaced an older one.
    fn put(&mut self, job: Job) -> bool {
        let ticket = job.event.ticket_id.clone();
        let slot = self.tickets.entry(ticket.clone()).or_default();
        let replaced = slot.pending.replace(job).is_some();
        if !replaced && !slot.running {
            self.ready.push_back(ticket);
        }
        replaced
    }

    fn take_ready(&mut self) -> Option<Job> {
        while let Some(ticket) = self.ready.pop_front() {
            if let Some(slot) = self.tickets.get_mut(&ticket)
                && let Some(job) = slot.pending.take()
            {
                slot.running = true;
                return Some(job);
            }
        }
        None
    }

    /// Ends the run of a ticket; a job that arrived meanwhile becomes ready.
    fn release(&mut self, ticket: &str) {
        let Some(slot) = self.tickets.get_mut(ticket) else {
            return;
        };
        slot.running = false;
        if slot.pending.is_some() {
            self.ready.push_back(ticket.to_owned());
        } else {
            self.tickets.remove(ticket);
        }
    }
}

/// A bounded in-process queue with a worker-facing claim API.
#[derive(Default)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    /// Pending jobs (ready or waiting for their ticket), kept outside the lock for `depth`.
    depth: AtomicUsize,
    next_id: AtomicU64,
    closed: AtomicBool,
    wake: Notify,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn accept(
        &self,
        event: TicketEvent,
        policy: AcceptPolicy,
    ) -> Result<Accepted, QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let now = Instant::now();
        let accepted = {
            let mut inner = self.lock();
            if inner.is_duplicate(&event.dedupe_key, policy.dedupe_window, now) {
                return Ok(Accepted::Duplicate);
            }
            let has_pending = inner
                .tickets
                .get(&event.ticket_id)
                .is_some_and(|slot| slot.pending.is_some());
            if !has_pending && self.depth.load(Ordering::Relaxed) >= policy.capacity {
                return Err(QueueError::Full);
            }
            inner.remember(&event.dedupe_key, policy.dedupe_window, now);
            let job = Job {
                id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
                event,
                attempt: 1,
                enqueued_at: now,
            };
            let accepted = if inner.put(job) {
                Accepted::Coalesced
            } else {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Accepted::Queued
            };
            (accepted, inner.idle > 0)
        };
        let (accepted, someone_idle) = accepted;
        if someone_idle {
            self.wake.notify_one();
        }
        Ok(accepted)
    }

    async fn claim(&self) -> Option<Job> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if let Some(job) = inner.take_ready() {
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                    return Some(job);
                }
                if self.closed.load(Ordering::Acquire) && inner.tickets.is_empty() {
                    drop(inner);
                    self.wake.notify_waiters();
                    return None;
                }
                // Counted under the lock, after `enable`: an `accept` that sees this count
                // notifies, and the notification reaches this (already registered) waiter.
                inner.idle += 1;
            }
            notified.await;
            self.lock().idle -= 1;
        }
    }

    async fn take_ticket(&self, event: TicketEvent) -> Result<Option<Job>, QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let mut inner = self.lock();
        if inner.tickets.contains_key(&event.ticket_id) {
            return Ok(None);
        }
        // Marked running with nothing pending: events arriving meanwhile wait for the ack,
        // and a draining queue waits for it too.
        let slot = TicketSlot {
            pending: None,
            running: true,
        };
        inner.tickets.insert(event.ticket_id.clone(), slot);
        Ok(Some(Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            event,
            attempt: 1,
            enqueued_at: Instant::now(),
        }))
    }

    async fn ack(&self, job: &Job) {
        self.lock().release(&job.event.ticket_id);
        self.wake.notify_one();
    }

    async fn retry(&self, job: Job, delay: Duration) {
        let ticket = job.event.ticket_id.clone();
        // The ticket stays marked running until the retry is due, so no other event for it
        // overtakes the failed one; a newer event still coalesces into the retry.
        let mut job = job;
        job.attempt += 1;
        tokio::time::sleep(delay).await;
        let mut inner = self.lock();
        if let Some(slot) = inner.tickets.get_mut(&ticket) {
            slot.running = false;
            if slot.pending.is_none() {
                slot.pending = Some(job);
                self.depth.fetch_add(1, Ordering::Relaxed);
            }
            inner.ready.push_back(ticket);
        }
        drop(inner);
        self.wake.notify_one();
    }

    fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn is_accepting(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn unfinished(&self) -> Vec<String> {
        let inner = self.lock();
        let mut ids: Vec<String> = inner.tickets.keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ticket: &str, n: u64) -> TicketEvent {
        TicketEvent::new(
            ticket.into(),
            "Ticket_Update".into(),
            None,
            Some(n as i64),
            json!({"n": n}),
        )
    }

    fn policy(capacity: usize) -> AcceptPolicy {
        AcceptPolicy {
            capacity,
            dedupe_window: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_duplicate_delivery_is_recognised() {
        let queue = MemoryQueue::new();
        assert_eq!(
            queue.accept(event("1", 1), policy(10)).await,
            Ok(Accepted::Queued)
        );
        assert_eq!(
            queue.accept(event("1", 1), policy(10)).await,
            Ok(Accepted::Duplicate)
        );
        assert_eq!(queue.depth(), 1);
    }

    #[test]
    fn the_oldest_keys_are_forgotten_and_memory_stays_bounded() {
        let window = Duration::from_secs(600);
        let now = Instant::now();
        let key = |n: usize| {
            let mut key = DedupeKey::default();
            key[..8].copy_from_slice(&(n as u64).to_le_bytes());
            key
        };
        let mut inner = Inner::default();
        for n in 0..DEDUPE_MAX_KEYS + 10 {
            assert!(!inner.is_duplicate(&key(n), window, now));
            inner.remember(&key(n), window, now);
        }
        assert_eq!(inner.seen.len(), DEDUPE_MAX_KEYS);
        assert_eq!(inner.seen_order.len(), DEDUPE_MAX_KEYS);
        assert!(inner.seen.capacity() < 32_768, "{}", inner.seen.capacity());
        assert!(inner.seen_order.capacity() <= 32_768);
        // The ten oldest made room; every later key is still known.
        assert!(!inner.is_duplicate(&key(9), window, now));
        assert!(inner.is_duplicate(&key(DEDUPE_MAX_KEYS + 9), window, now));
        assert!(inner.is_duplicate(&key(11), window, now));
    }

    #[test]
    fn keys_out_of_the_window_are_forgotten() {
        let now = Instant::now();
        let mut inner = Inner::default();
        inner.remember(&[1; 16], Duration::from_secs(60), now);
        let later = now + Duration::from_secs(61);
        assert!(!inner.is_duplicate(&[1; 16], Duration::from_secs(60), later));
        assert!(inner.seen.is_empty() && inner.seen_order.is_empty());
    }

    #[tokio::test]
    async fn a_zero_window_turns_deduplication_off() {
        let queue = MemoryQueue::new();
        let off = AcceptPolicy {
            capacity: 10,
            dedupe_window: Duration::ZERO,
        };
        queue.accept(event("1", 1), off).await.unwrap();
        let job = queue.claim().await.unwrap();
        queue.ack(&job).await;
        assert_eq!(queue.accept(event("1", 1), off).await, Ok(Accepted::Queued));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_new_tickets() {
        let queue = MemoryQueue::new();
        queue.accept(event("1", 1), policy(1)).await.unwrap();
        assert_eq!(
            queue.accept(event("2", 2), policy(1)).await,
            Err(QueueError::Full)
        );
    }

    // Paused time: the short wait for a claim ends only once nothing else can run.
    #[tokio::test(start_paused = true)]
    async fn events_for_a_running_ticket_coalesce_into_one_rerun() {
        let queue = MemoryQueue::new();
        queue.accept(event("1", 1), policy(10)).await.unwrap();
        let first = queue.claim().await.unwrap();
        assert_eq!(
            queue.accept(event("1", 2), policy(10)).await,
            Ok(Accepted::Queued)
        );
        assert_eq!(
            queue.accept(event("1", 3), policy(10)).await,
            Ok(Accepted::Coalesced)
        );
        // Nothing for ticket 1 may be claimed while it runs.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), queue.claim())
                .await
                .is_err()
        );
        queue.ack(&first).await;
        let rerun = queue.claim().await.unwrap();
        assert_eq!(rerun.event.event_time_ms, Some(3));
        queue.ack(&rerun).await;
        queue.close();
        assert!(queue.claim().await.is_none());
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_and_drains() {
        let queue = MemoryQueue::new();
        queue.accept(event("1", 1), policy(10)).await.unwrap();
        queue.close();
        assert_eq!(
            queue.accept(event("2", 2), policy(10)).await,
            Err(QueueError::Closed)
        );
        let job = queue.claim().await.unwrap();
        assert_eq!(queue.unfinished(), ["1"]);
        queue.ack(&job).await;
        assert!(queue.claim().await.is_none());
    }

    // Paused time: the short wait for a claim ends only once nothing else can run.
    #[tokio::test(start_paused = true)]
    async fn a_taken_ticket_holds_back_its_events_until_acknowledged() {
        let queue = MemoryQueue::new();
        let manual = queue.take_ticket(event("1", 1)).await.unwrap().unwrap();
        assert!(queue.take_ticket(event("1", 2)).await.unwrap().is_none());
        queue.accept(event("1", 3), policy(10)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), queue.claim())
                .await
                .is_err(),
            "an event overtook the manual run"
        );
        let other = queue.take_ticket(event("2", 4)).await.unwrap().unwrap();
        assert_ne!(manual.id, other.id);
        queue.ack(&manual).await;
        assert_eq!(queue.claim().await.unwrap().event.event_time_ms, Some(3));
    }

    #[tokio::test]
    async fn a_retried_job_runs_again_with_its_attempt_counted() {
        let queue = MemoryQueue::new();
        queue.accept(event("1", 1), policy(10)).await.unwrap();
        let job = queue.claim().await.unwrap();
        queue.retry(job, Duration::from_millis(1)).await;
        let again = queue.claim().await.unwrap();
        assert_eq!(again.attempt, 2);
    }
}
