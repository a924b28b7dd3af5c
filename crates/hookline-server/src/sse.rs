//! Live streams as server-sent events: a [`Feed`] says what is new, [`stream`] sends it
//! to the client as it comes, and stops when the client goes away.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::Notify;

/// How often a stream looks for news when nothing woke it (another node wrote them).
const POLL: Duration = Duration::from_millis(500);
/// Events buffered for a slow client.
const BUFFER: usize = 100;

/// The source of a stream's events.
pub trait Feed: Send + 'static {
    /// Events after those already fed, oldest first. Answering exactly `BATCH` or more
    /// means more may be waiting; fewer means the feed is caught up.
    fn next(&mut self) -> impl Future<Output = Result<Vec<Event>, hookline_core::Error>> + Send;
}

/// Events read per call of [`Feed::next`].
pub const BATCH: usize = 100;

/// A stream of `feed`'s events. `news` is notified when something new may be there.
pub fn stream<F: Feed>(
    feed: F,
    news: Arc<Notify>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Event>(BUFFER);
    tokio::spawn(follow(feed, news, sender));
    let events = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx).map(|e| e.map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn follow<F: Feed>(mut feed: F, news: Arc<Notify>, sender: tokio::sync::mpsc::Sender<Event>) {
    loop {
        // Registered before reading, so news arriving in between is not missed.
        let notified = news.notified();
        let events = match feed.next().await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "stream: reading failed; retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let caught_up = events.len() < BATCH;
        for event in events {
            if sender.send(event).await.is_err() {
                return;
            }
        }
        if caught_up {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(POLL) => {}
                () = sender.closed() => return,
            }
        }
    }
}
