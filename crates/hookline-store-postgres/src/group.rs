//! Group commit of message creates. Concurrent [`create_message`] calls are gathered into
//! one transaction: their statements are pipelined on one connection (each create's own
//! statements run in order, the creates side by side), and one commit, one WAL flush and
//! one notification serve them all. Durability is unchanged: each create is answered only
//! after the commit that holds it.
//!
//! A conflict (an `eventId` or idempotency key taken) is an answer, not an error: the
//! statements are written so that it aborts nothing ([`insert_message`]), and the other
//! creates of the batch commit. A batch that fails otherwise (a statement error) is
//! carried out again one create per transaction, so that one bad create fails alone.
//!
//! [`create_message`]: hookline_core::store::MessageStore::create_message
//! [`insert_message`]: crate::queries::messages::insert_message

use std::sync::Arc;

use deadpool_postgres::Pool;
use futures_util::future::join_all;
use hookline_core::store::{CreatedMessage, NewMessage};
use hookline_core::{Error, Result};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error;
use crate::queries::messages::insert_message;
use crate::queries::notify_due;

/// The most creates one transaction holds.
const MAX_BATCH: usize = 256;
/// Transactions gathering and committing at once: while one waits for its commit, the
/// next gathers what arrived meanwhile.
const WORKERS: usize = 2;
/// Creates waiting to be gathered; more wait for room (back-pressure on the API).
const QUEUE: usize = 4096;

struct Job {
    new: NewMessage,
    reply: oneshot::Sender<Result<CreatedMessage>>,
}

/// Gathers message creates into group commits.
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the workers that commit on `pool`'s connections.
    pub(crate) fn start(pool: Pool) -> Self {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WORKERS {
            tokio::spawn(worker(pool.clone(), Arc::clone(&receiver)));
        }
        Committer { jobs }
    }

    /// Stores `new` in the next group commit; answers once it is committed.
    pub(crate) async fn create(&self, new: NewMessage) -> Result<CreatedMessage> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { new, reply })
            .await
            .map_err(|_| Error::Unavailable)?;
        answer.await.map_err(|_| Error::Unavailable)?
    }
}

async fn worker(pool: Pool, receiver: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let gathered = receiver.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if gathered == 0 {
            return;
        }
        // A create whose caller has gone (its request cut off) is not carried out, as a
        // transaction of its own would have been rolled back.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // The same order in every batch, so that two batches inserting the same event
        // ids or keys take their locks in one order instead of deadlocking.
        batch.sort_by(|a, b| order(&a.new).cmp(&order(&b.new)));
        hookline_core::metrics::metrics().record_commit_batch(batch.len());
        let news: Vec<&NewMessage> = batch.iter().map(|job| &job.new).collect();
        match commit(&pool, &news).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            // The database could not be reached: every create is told so at once (503,
            // retried by the client), not tried again one by one.
            Err(Error::Unavailable) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(Error::Unavailable));
                }
            }
            Err(error) if batch.len() == 1 => {
                let job = batch.pop().expect("one job");
                let _ = job.reply.send(Err(error));
            }
            Err(error) => {
                tracing::warn!(%error, creates = batch.len(), "a group commit failed; its creates are carried out one by one");
                let mut reachable = true;
                for job in batch.drain(..) {
                    let outcome = if reachable {
                        commit(&pool, &[&job.new])
                            .await
                            .and_then(|mut outcomes| outcomes.pop().expect("one outcome"))
                    } else {
                        Err(Error::Unavailable)
                    };
                    reachable &= !matches!(outcome, Err(Error::Unavailable));
                    let _ = job.reply.send(outcome);
                }
            }
        }
    }
}

/// The order creates take their locks in: idempotency key, then event id.
fn order(new: &NewMessage) -> (Option<&str>, &str, Option<&str>) {
    (
        new.idempotency.as_ref().map(|record| record.key.as_str()),
        new.message.app_id.as_str(),
        new.message.event_id.as_deref(),
    )
}

/// Stores `news` in one transaction; answers each create's outcome (a conflict is an
/// outcome), or the error that failed the transaction.
async fn commit(pool: &Pool, news: &[&NewMessage]) -> Result<Vec<Result<CreatedMessage>>> {
    let mut db = pool.get().await.map_err(error::pool)?;
    let tx = db.transaction().await.map_err(error::storage)?;
    let inserted = join_all(news.iter().map(|new| insert_message(&tx, new))).await;
    let mut outcomes = Vec::with_capacity(news.len());
    let mut queued = false;
    for result in inserted {
        match result? {
            Ok(targets) => {
                queued |= !targets.is_empty();
                outcomes.push(Ok(CreatedMessage { endpoints: targets }));
            }
            Err(conflict) => outcomes.push(Err(conflict)),
        }
    }
    if queued {
        notify_due(&tx).await?;
    }
    tx.commit().await.map_err(error::storage)?;
    Ok(outcomes)
}
