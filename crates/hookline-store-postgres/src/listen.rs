//! Wake-ups: a write that queues due work wakes this node's claim loops at once and has
//! the [`Announcer`] tell the other nodes with `pg_notify('hookline_due',
//! current_schema())`; one dedicated connection per store runs `LISTEN hookline_due` and
//! turns each notification into a message on the same broadcast channel.
//!
//! The notification is sent after the write has committed, in a transaction of its own
//! that does not wait for the disk (`synchronous_commit = off`), not inside the write's
//! transaction: PostgreSQL takes one lock for the whole cluster to commit a transaction
//! that notifies, and holds it until the commit is flushed, so writes that notified in
//! their own transactions committed one at a time, each waiting out another's flush (with
//! three nodes, the commits of creates and outcomes queued on it). A notification lost
//! in a crash loses nothing: the work it announced is committed, and a woken node looks
//! for everything due, not for what one notification said. Announcements made within
//! 5 ms of each other, or while one is being sent, become one notification.
//!
//! The payload names the schema, so stores sharing a database in different schemas (the
//! tests do) wake only their own workers; an empty payload, as from a hand-typed `NOTIFY
//! hookline_due`, wakes everyone.
//!
//! Notifications sent while the connection is down are lost, so after every (re)connect
//! the listener sends one wake-up of its own: a woken worker looks for due work anyway.

use std::future::poll_fn;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

/// The notification channel for "due work was committed".
pub const CHANNEL: &str = "hookline_due";

/// Wake-ups a receiver may fall behind by; a receiver that lags more just sees
/// `RecvError::Lagged`, which means "wake up" as well.
const CAPACITY: usize = 16;
/// How long announcements gather into one notification. The other nodes claim at most
/// once per 5 ms each anyway, and this node's workers are woken at once; a notification
/// for every group commit was a transaction each: with three nodes, 6,220 of the 20,700
/// transactions of 20,000 messages.
const NOTIFY_SPACING: Duration = Duration::from_millis(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The wake-ups of this node's workers: [`Announcer::announce`] and the [`Listener`] feed
/// it.
pub fn channel() -> broadcast::Sender<()> {
    broadcast::channel(CAPACITY).0
}

/// Says that due work was committed: to this node's workers at once, and to the other
/// nodes by a notification. Cheap to clone; the notifying task stops once every clone is
/// gone.
#[derive(Clone, Debug)]
pub struct Announcer {
    local: broadcast::Sender<()>,
    /// Holds at most one announcement waiting to be sent: more made meanwhile are the same.
    others: mpsc::Sender<()>,
}

impl Announcer {
    /// Starts the task that notifies on `pool`'s connections, whose commits should not
    /// wait for the WAL flush (`synchronous_commit = off`).
    pub fn start(pool: Pool, local: broadcast::Sender<()>) -> Self {
        let (others, wanted) = mpsc::channel(1);
        tokio::spawn(notify_others(pool, wanted));
        Self { local, others }
    }

    /// Call once the work is committed, never before: a worker woken earlier would not
    /// see it.
    pub fn announce(&self) {
        let _ = self.local.send(());
        let _ = self.others.try_send(());
    }
}

/// Sends one notification per announcement taken, at most one every [`NOTIFY_SPACING`],
/// until every [`Announcer`] is gone.
async fn notify_others(pool: Pool, mut wanted: mpsc::Receiver<()>) {
    while wanted.recv().await.is_some() {
        let sent = match pool.get().await {
            Ok(db) => db
                .batch_execute("SELECT pg_notify('hookline_due', current_schema())")
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        // The other nodes still find the work when their own timers wake them.
        if let Err(error) = sent {
            tracing::warn!(%error, "cannot notify the other nodes of due work");
        }
        // What is announced meanwhile waits in the channel's one place.
        tokio::time::sleep(NOTIFY_SPACING).await;
    }
}

/// The running listener of one store; the task stops when this is dropped.
#[derive(Debug)]
pub struct Listener {
    task: JoinHandle<()>,
}

impl Listener {
    /// Starts listening on a connection of its own, made from `config`, for
    /// notifications about `schema`, which it passes on to `sender`.
    pub fn spawn(
        config: tokio_postgres::Config,
        schema: String,
        sender: broadcast::Sender<()>,
    ) -> Self {
        let task = tokio::spawn(run(config, schema, sender));
        Self { task }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens for as long as the store lives, reconnecting with exponential backoff.
async fn run(config: tokio_postgres::Config, schema: String, sender: broadcast::Sender<()>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match listen(&config, &schema, &sender, &mut backoff).await {
            Ok(()) => tracing::warn!(
                ?backoff,
                "postgres listen connection closed by the server; reconnecting"
            ),
            Err(error) => tracing::warn!(
                %error,
                ?backoff,
                "postgres listen connection failed; reconnecting"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: connect, `LISTEN`, forward notifications until it ends.
async fn listen(
    config: &tokio_postgres::Config,
    schema: &str,
    sender: &broadcast::Sender<()>,
    backoff: &mut Duration,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    // The connection only makes progress while polled, so the `LISTEN` request and the
    // incoming messages are driven together.
    let subscribe = client.batch_execute("LISTEN hookline_due");
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            done = &mut subscribe, if !subscribed => {
                done?;
                subscribed = true;
                *backoff = FIRST_BACKOFF;
                tracing::debug!(schema, "listening for due work");
                // Whatever was committed while nobody listened is due now.
                let _ = sender.send(());
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    if note.channel() == CHANNEL
                        && (note.payload().is_empty() || note.payload() == schema)
                    {
                        let _ = sender.send(());
                    }
                }
                Some(Ok(_notice)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
        }
    }
}
