//! Wake-ups: one dedicated connection per store runs `LISTEN hookline_due` and turns each
//! notification into a message on a broadcast channel.
//!
//! Every write that queues due work sends `pg_notify('hookline_due', current_schema())`
//! inside its own transaction, so PostgreSQL delivers the notification only once the
//! work is committed and visible. The payload names the schema, so stores sharing a
//! database in different schemas (the tests do) wake only their own workers; an empty
//! payload, as from a hand-typed `NOTIFY hookline_due`, wakes everyone.
//!
//! Notifications sent while the connection is down are lost, so after every (re)connect
//! the listener sends one wake-up of its own: a woken worker looks for due work anyway.

use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

/// The notification channel for "due work was committed".
pub const CHANNEL: &str = "hookline_due";

/// Wake-ups a receiver may fall behind by; a receiver that lags more just sees
/// `RecvError::Lagged`, which means "wake up" as well.
const CAPACITY: usize = 16;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The running listener of one store; the task stops when this is dropped.
#[derive(Debug)]
pub struct Listener {
    sender: broadcast::Sender<()>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Starts listening on a connection of its own, made from `config`, for
    /// notifications about `schema`.
    pub fn spawn(config: tokio_postgres::Config, schema: String) -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        let task = tokio::spawn(run(config, schema, sender.clone()));
        Self { sender, task }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.sender.subscribe()
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
