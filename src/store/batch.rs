//! Group commit: requests that arrive together share one script call.
//!
//! Each caller hands its request to one task, which takes whatever else is waiting (up to
//! [`MAX_BATCH`]) and commits the lot with one `EVALSHA`. Each caller is answered with its
//! own request's outcome once Redis has answered for the batch, so an accept's 200 still
//! means "stored". A lone request is sent at once: batches form only while earlier ones are
//! in flight, which is when there is load to share a round trip.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::RedisError;

/// Requests committed by one script call at most.
pub(crate) const MAX_BATCH: usize = 64;
/// Batches sent before the first is answered: one being committed while the next one fills.
const IN_FLIGHT: usize = 2;
/// Requests handed over and not yet taken into a batch; past it a caller waits its turn.
const WAITING: usize = 4096;

/// Commits one batch: one outcome per request, in order.
pub(crate) type Commit<I, O> =
    Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Result<Vec<O>, RedisError>> + Send + Sync>;

type Answer<O> = oneshot::Sender<Result<O, RedisError>>;

/// The handle callers submit their requests through.
pub(crate) struct Batcher<I, O> {
    sender: mpsc::Sender<(I, Answer<O>)>,
    action: &'static str,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the committing task; it ends when the handle is dropped. `action` names what
    /// a batch does, for errors.
    pub fn start(action: &'static str, commit: Commit<I, O>) -> Self {
        let (sender, receiver) = mpsc::channel(WAITING);
        tokio::spawn(run(receiver, commit, action));
        Self { sender, action }
    }

    /// Commits `item` with whatever else is waiting; answers once Redis has.
    pub async fn submit(&self, item: I) -> Result<O, RedisError> {
        let stopped = || RedisError {
            action: self.action,
            kind: "stopped".to_owned(),
        };
        let (answer, outcome) = oneshot::channel();
        self.sender
            .send((item, answer))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run<I: Send + 'static, O: Send + 'static>(
    mut receiver: mpsc::Receiver<(I, Answer<O>)>,
    commit: Commit<I, O>,
    action: &'static str,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Waiting for a free slot first lets the next batch fill meanwhile.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (items, answers): (Vec<I>, Vec<Answer<O>>) = batch.into_iter().unzip();
        let committed = commit(items);
        tokio::spawn(async move {
            match committed.await {
                Ok(outcomes) if outcomes.len() == answers.len() => {
                    for (answer, outcome) in answers.into_iter().zip(outcomes) {
                        let _ = answer.send(Ok(outcome));
                    }
                }
                Ok(_) => {
                    let error = RedisError {
                        action,
                        kind: "unexpected reply".to_owned(),
                    };
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}
